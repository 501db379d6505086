"""The step compiled by Numba: `numba` on one thread, `numba:parallel` with prange.

The step is one compiled call (train_step) on one arena of buffers (impls.numba_arena, which
says why one call and one array): the five products by the loops of impls.numba_gemm, the
rest in four fused passes: relu in place; the loss and g = 2 (y_pred - y) in one loop; the
relu mask on ga; one flat loop updating w1 and w2 together (SGD, or Adam with its moments).

numba:blas (impls.numba_blas) is the same step with its products by BLAS where its plan
says. It has a train_step of its own, made of the passes and the products by the loops
defined here, so that this one holds no call of BLAS: `numba` and `numba:parallel` never
load the bridge to SciPy's BLAS (impls.numba_blas_bridge), and run where SciPy is missing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from . import threads
from .numba_arena import ALL_PRODUCTS, Arena, ArenaLayout, arena_size, arena_views, lay_out, layout_of, round_up
from .numba_gemm import NT_MIN_K, by_nn, by_nt
from .numba_jit import SUM_FLAGS, jit
from .problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from .step import Step

# ---------------------------------------------------------------------------------------
# Element-wise passes

BLOCK = 32  # transposes go in 32x32 blocks, so both sides stay in L1 while a block is copied


@jit()
def transpose(src, dst):
    """dst = src.T; each block written a row of dst at a time (measured 2-3x faster than by columns)."""
    rows, cols = src.shape
    for i0 in range(0, rows, BLOCK):
        i1 = min(i0 + BLOCK, rows)
        for j0 in range(0, cols, BLOCK):
            for j in range(j0, min(j0 + BLOCK, cols)):
                for i in range(i0, i1):
                    dst[j, i] = src[i, j]


@jit()
def relu(a):
    """a = relu(a) in place. NaN passes through, as in np.maximum."""
    zero = a.dtype.type(0)
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            if a[i, j] <= zero:
                a[i, j] = zero


@jit(fastmath=SUM_FLAGS)
def loss_and_output_grad(y_pred, y):
    """y_pred becomes g = 2 (y_pred - y) in place; returns sum((y_pred - y)^2), summed in the dtype.

    Row sums first, then their sum: the error grows with sqrt(rows) + sqrt(cols), not
    sqrt(rows cols). A sum, so reassociation is allowed here too (the row sums vectorise).
    """
    loss = y_pred.dtype.type(0)
    rows, cols = y_pred.shape
    for i in range(rows):
        row = y_pred.dtype.type(0)
        for j in range(cols):
            diff = y_pred[i, j] - y[i, j]
            row += diff * diff
            y_pred[i, j] = diff + diff  # exactly 2 * diff
        loss += row
    return loss


@jit()
def relu_grad(ga_t, a_t):
    """gh = ga * relu'(h) in place, with relu'(0) = 0: a > 0 exactly where h > 0."""
    zero = ga_t.dtype.type(0)
    rows, cols = ga_t.shape
    for i in range(rows):
        for j in range(cols):
            if not a_t[i, j] > zero:
                ga_t[i, j] = zero


@jit()
def sgd_update(w, g, lr):
    """w -= lr g over flat arrays (both weights at once: see numba_arena.Stretches)."""
    lr_t = w.dtype.type(lr)  # rounded to the dtype once, as NumPy does with a Python float
    for i in range(w.size):
        w[i] -= lr_t * g[i]


@jit(error_model="numpy")
def adam_update(w, g, m, v, lr, t):
    """torch.optim.Adam at step t (from 1), in the dtype of w, over flat arrays (both weights at once).

    Constants are formed in float64 and rounded once to the dtype, as torch does: in
    float32, 1 - float32(0.999) would be off by 1.3e-5 relative, far beyond rounding.
    Division follows NumPy (x / 0 is inf or nan), not Python: Numba's default error
    model tests every divisor for zero to raise ZeroDivisionError, and that branch kept
    the loop from being vectorised (scalar vdivss/vsqrtss only, checked in the assembly).
    """
    dtype = w.dtype.type
    beta1, beta2, eps = dtype(ADAM_BETA1), dtype(ADAM_BETA2), dtype(ADAM_EPS)
    one_minus_beta1, one_minus_beta2 = dtype(1.0 - ADAM_BETA1), dtype(1.0 - ADAM_BETA2)
    step_size = dtype(lr / (1.0 - ADAM_BETA1**t))
    correction2_sqrt = dtype(math.sqrt(1.0 - ADAM_BETA2**t))
    for i in range(w.size):
        grad = g[i]
        m_i = beta1 * m[i] + one_minus_beta1 * grad
        v_i = beta2 * v[i] + one_minus_beta2 * grad * grad
        m[i] = m_i
        v[i] = v_i
        w[i] -= step_size * m_i / (math.sqrt(v_i) / correction2_sqrt + eps)


# ---------------------------------------------------------------------------------------
# The update

GRADS_ONLY, SGD, ADAM = 0, 1, 2


class Update(NamedTuple):
    """What a call of the step does after the gradients."""

    kind: int  # GRADS_ONLY, SGD or ADAM
    lr: float
    t: int  # Adam's step, from 1


@jit(inline="always")
def update_weights(views, stretches, layout, update):
    """The update of both weights in one flat loop, then w2.T for y_pred by the loops where the arena holds it."""
    if update.kind == SGD:
        sgd_update(stretches.weights, stretches.grads, update.lr)
    elif update.kind == ADAM:
        adam_update(stretches.weights, stretches.grads, stretches.moment1, stretches.moment2, update.lr, update.t)
    if update.kind != GRADS_ONLY and layout.may_loop.y_pred:
        transpose(views.w2, views.w2_t)  # O,H


# ---------------------------------------------------------------------------------------
# The products by the loops, on feature-major buffers (views: numba_arena.Buffers).
# The NT products over rows of H stop at the first even row count: the padding beyond
# stays zero, and at H = 10 a fifth of their work is saved.


@jit(inline="always")
def h_by_loops(views, layout, parallel):
    h2 = round_up(layout.h, 2)
    by_nt(views.w1_t[:h2], views.x, views.a_t[:h2], views.pack, parallel)  # H,N   h.T = w1.T @ x.T


@jit(inline="always")
def y_pred_by_loops(views, layout, parallel):
    if layout.h >= NT_MIN_K:
        transpose(views.a_t, views.a)  # N,H
        by_nt(views.w2_t, views.a, views.g_t, views.pack, parallel)  # O,N   y_pred.T = w2.T @ a.T
    else:
        by_nn(views.w2_t, views.a_t, views.g_t, parallel)  # O,N   y_pred.T = w2.T @ a.T


@jit(inline="always")
def gw2_by_loops(views, layout, parallel):
    h2 = round_up(layout.h, 2)
    by_nt(views.a_t[:h2], views.g_t, views.gw2[:h2], views.pack, parallel)  # H,O   gw2 = a.T @ g


@jit(inline="always")
def ga_by_loops(views, layout, parallel):
    """ga.T = w2 @ g.T, with w2 before its update."""
    if layout.o >= NT_MIN_K:
        h2 = round_up(layout.h, 2)
        transpose(views.g_t, views.g)  # N,O
        by_nt(views.w2[:h2], views.g, views.gh_t[:h2], views.pack, parallel)  # H,N   ga.T = w2 @ g.T
    else:
        by_nn(views.w2, views.g_t, views.gh_t, parallel)  # H,N   ga.T = w2 @ g.T


@jit(inline="always")
def gw1_by_loops(views, layout, parallel):
    h2 = round_up(layout.h, 2)
    by_nt(views.gh_t[:h2], views.x_t, views.gw1_t[:h2], views.pack, parallel)  # H,D   gw1.T = gh.T @ x


@jit()
def grads_by_loops(views, layout, parallel):
    """Loss and gradients, every product by the loops (spread over threads if parallel); returns the loss."""
    h_by_loops(views, layout, parallel)  # H,N   h.T
    relu(views.a_t)  # H,N   a.T
    y_pred_by_loops(views, layout, parallel)  # O,N   y_pred.T
    loss = loss_and_output_grad(views.g_t, views.y_t)  # O,N   g.T = 2 (y_pred - y).T
    gw2_by_loops(views, layout, parallel)  # H,O   gw2
    ga_by_loops(views, layout, parallel)  # H,N   ga.T
    relu_grad(views.gh_t, views.a_t)  # H,N   gh.T
    gw1_by_loops(views, layout, parallel)  # H,D   gw1.T
    return loss


# ---------------------------------------------------------------------------------------
# The step


@jit()
def train_step(buf, layout_argument, update_argument, parallel):
    """Loss and gradients (left in gw1_t, gw2) at the current weights, then the update; returns the pre-update loss.

    buf: the arena. layout_argument: its ArenaLayout.argument(); update_argument: an Update's
    fields (plain tuples, named here: see ArenaLayout.argument). parallel: the loops spread
    over threads.
    """
    layout = layout_of(layout_argument)
    update = Update(*update_argument)
    views, stretches = arena_views(buf, layout)
    loss = grads_by_loops(views, layout, parallel)
    update_weights(views, stretches, layout, update)
    return loss


_compiled: set = set()


def compile_once(step_function, dtype, *last_arguments) -> None:
    """Compile (or load from the cache) a step function for dtype now, so that no timed call does.

    Numba compiles by argument types, not sizes, and every branch at once: one call on
    the smallest problem covers every later one of this dtype. last_arguments: the function's
    own last arguments, of the types later calls pass (a function compiled for two sets of types,
    such as numba:blas's with and without JIT kernels, is compiled for each).
    """
    key = (step_function, dtype, tuple(type(a) for a in last_arguments))
    if key not in _compiled:
        layout = ArenaLayout(1, 1, 1, 1, adam=True, may_loop=ALL_PRODUCTS, batch_major=False)
        buf = np.zeros(arena_size(layout), dtype=dtype)
        step_function(buf, layout.argument(), (ADAM, 0.0, 1), *last_arguments)
        _compiled.add(key)


class NumbaStep(Step):
    """The step as jitted loops on buffers allocated here; `parallel` spreads the matmuls over threads."""

    def __init__(self, problem, arrays, parallel: bool = False):
        super().__init__(problem, arrays)
        self.parallel = bool(parallel)
        self._adam = problem.optimizer == "adam"
        self._update_kind = ADAM if self._adam else SGD
        self._t = 0  # Adam's step count
        self._lr = problem.lr  # read at every step
        self._arena = self._lay_out(*self._first_layout())
        self._compile(self._arena.buf.dtype)
        # The suite's thread budget, for numba.set_num_threads and for any pool that loading
        # the kernels brought in (SciPy's OpenBLAS, which numba:blas calls).
        threads.apply()

    def _lay_out(self, may_loop, batch_major: bool) -> Arena:
        """A new arena of this layout, holding the inputs (the weights as given at create)."""
        return lay_out(self.arrays, ArenaLayout(*self.problem.shape, self._adam, may_loop, batch_major))

    def _first_layout(self) -> tuple:
        """The arena laid out at create: (the products that may go through the loops, batch-major)."""
        return ALL_PRODUCTS, False

    @staticmethod
    def _compile(dtype) -> None:
        compile_once(train_step, dtype, False)

    def _call(self, kind: int, t: int = 0, arena: Arena | None = None):
        """One call of the compiled step on `arena` (default: the step's): gradients, then an update of `kind`."""
        a = self._arena if arena is None else arena
        return train_step(a.buf, a.argument, (kind, self._lr, t), self.parallel)

    def _d_by_h(self, view) -> np.ndarray:
        """A copy of w1 or gw1, (D, H), from its buffer in either layout."""
        d, h = self.problem.d, self.problem.h
        return view[:d, :h].copy() if self._arena.layout.batch_major else view[:h, :d].T.copy()

    def loss_and_grads(self):
        loss = self._call(GRADS_ONLY)
        h, o = self.problem.h, self.problem.o
        return float(loss), self._d_by_h(self._arena.gw1), self._arena.gw2[:h, :o].copy()

    def _step(self):
        if self._adam:
            self._t += 1
        return self._call(self._update_kind, self._t)

    def weights(self):
        h, o = self.problem.h, self.problem.o
        return self._d_by_h(self._arena.w1), self._arena.w2[:h, :o].copy()

    def describe(self) -> dict:
        """What results record about how this step ran."""
        return {"numba": numba.__version__, "threads": numba.get_num_threads() if self.parallel else 1}
