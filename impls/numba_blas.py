"""numba:blas: the Numba step (impls.numba_step) with its products by BLAS where BLAS is faster.

One compiled call per step, as for `numba`: the products call SciPy's s/dgemm
(scipy.linalg.cython_blas, through impls.numba_blas_bridge) with transposes as flags on the
buffers in place, and the rest is the same fused passes (relu; loss and 2 (y_pred - y); the
relu mask; one update of both weights) on buffers allocated at create. The compiled call is
this module's train_step: numba_step's passes and products by the loops, with gemm where
the plan says.

How the step runs is its plan, chosen when the step is created, by trials: the step's
loss_and_grads one way alternated with the same call the other way, in pairs of short
blocks (impls.timing.alternate), the median ratio deciding.

- Each product small enough that the loops might win (at most LOOPS_MAX_MACS multiply-adds)
  is tried by the loops against BLAS, in the step's order; the loops keep it only when
  LOOPS_MARGIN faster. Larger products go to BLAS untried.
- Where every product goes to BLAS, the layout is tried too: feature-major (h.T, the loops'
  layout) against batch-major (h, the notebook's). BLAS runs the same product at different
  speeds in the two (at N = 1024, D = 1000, H = 100 in float32: ga 119 us against 20 us);
  batch-major is kept when LAYOUT_MARGIN faster.

`plan=` fixes the plan instead, for a reproducible comparison: "blas", "loops",
"layout=batch-major", or product=blas|loops pairs such as "h=loops,gw1=loops" (the rest
by BLAS, feature-major). `describe()` records the plan, the trials and each product's threads.

Threads: BLAS runs on the suite's budget (threadpoolctl limits SciPy's pool), and OpenBLAS
runs a product of at most OPENBLAS_ONE_THREAD_MACS multiply-adds on one thread whatever the
limit. Products by the loops run on one thread: they are the small ones, and a parallel
loop next to OpenBLAS's threads, which spin for about 0.1 s after each call, would compete
with them for the cores.
"""

from __future__ import annotations

import os
import time

import numba

from . import threads, timing
from .numba_arena import ALL_PRODUCTS, NO_PRODUCTS, PRODUCTS, Products, arena_views, layout_of, padded_shape
from .numba_blas_bridge import BLAS_INT_LIMIT, GEMM_UNAVAILABLE, gemm
from .numba_jit import jit
from .numba_step import (
    GRADS_ONLY,
    NumbaStep,
    Update,
    compile_once,
    ga_by_loops,
    gw1_by_loops,
    gw2_by_loops,
    h_by_loops,
    loss_and_output_grad,
    relu,
    relu_grad,
    update_weights,
    y_pred_by_loops,
)

LOOPS_MAX_MACS = 1 << 23  # bounds the trials' cost (about 1 ms a call at this size); see the module docstring
LOOPS_MARGIN = 0.05  # the loops take a product only if at least this much faster: ties go to BLAS
LAYOUT_MARGIN = 0.03  # batch-major only if at least this much faster: ties keep the loops' layout
TRIAL_PAIRS = (3, 7)  # pairs of blocks per trial (fewer where a call is long), each pair in random order
TRIAL_BLOCK_S = 1e-3  # a block is at least one call and at least this long
TRIAL_S = 1.0  # a trial's pairs stop at 3 once they would take longer than this
# OpenBLAS's interface/gemm.c: SMP_THRESHOLD_MIN (65536) x GEMM_MULTITHREAD_THRESHOLD (4 by default)
# multiply-adds per thread; at or below it a product runs on one thread.
OPENBLAS_ONE_THREAD_MACS = 65536 * 4
PLAN_CHOICES = ("blas", "loops")
LAYOUTS = ("feature-major", "batch-major")


def unavailable_reason() -> str | None:
    return GEMM_UNAVAILABLE


def product_macs(n, d, h, o) -> dict[str, int]:
    """Multiply-adds of each product, in PRODUCTS order."""
    return dict(zip(PRODUCTS, (n * d * h, n * h * o, n * h * o, n * h * o, n * d * h), strict=True))


def parse_plan(plan) -> tuple[Products, bool] | None:
    """(the products by BLAS; batch-major or not), or None for "auto"."""
    usage = (
        "plan must be 'auto', 'blas', 'loops', or comma-separated product=blas|loops pairs (products: "
        f"{', '.join(PRODUCTS)}; the rest by BLAS) and layout={'|'.join(LAYOUTS)} (batch-major: every "
        f"product by BLAS); got {plan!r}"
    )
    if not isinstance(plan, str):
        raise ValueError(usage)
    if plan == "auto":
        return None
    if plan in PLAN_CHOICES:
        return (ALL_PRODUCTS if plan == "blas" else NO_PRODUCTS), False
    by_blas, layout = ALL_PRODUCTS, LAYOUTS[0]
    for item in plan.split(","):
        key, _, value = item.strip().partition("=")
        if key == "layout" and value in LAYOUTS:
            layout = value
        elif key in PRODUCTS and value in PLAN_CHOICES:
            if value == "loops":  # a product named twice goes to the loops if either says so
                by_blas = by_blas._replace(**{key: False})
        else:
            raise ValueError(usage)
    batch_major = layout == "batch-major"
    if batch_major and by_blas != ALL_PRODUCTS:
        raise ValueError(usage)
    return by_blas, batch_major


def openblas_threads(macs: int, limit: int) -> int:
    """Threads OpenBLAS's gemm uses for a product of `macs` multiply-adds under a limit of `limit`."""
    return max(1, min(limit, macs // OPENBLAS_ONE_THREAD_MACS))


def _scipy_blas() -> dict | None:
    """threadpoolctl's record of the BLAS that SciPy (and so cython_blas) is linked with."""
    try:
        import scipy
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    home = os.path.dirname(os.path.dirname(scipy.__file__))  # site-packages: scipy/ and scipy.libs/ lie in it
    for info in threadpool_info():
        if info.get("user_api") == "blas" and os.path.relpath(info["filepath"], home).startswith("scipy"):
            return info
    return None


def _others(products: Products) -> Products:
    """The products not in `products`: those by the loops where `products` are BLAS's."""
    return Products(*(not p for p in products))


def trial(first, second) -> float:
    """Median over alternated pairs of blocks of first's time per call over second's."""
    start = time.perf_counter()
    first(), second()  # each once, warm: also how long a pair will take
    pair_s = time.perf_counter() - start
    low, high = TRIAL_PAIRS
    pairs = max(low, min(high, int(TRIAL_S / max(pair_s, 1e-9))))
    return timing.median_ratio(timing.alternate(first, second, pairs=pairs, block_s=TRIAL_BLOCK_S))


# ---------------------------------------------------------------------------------------
# The compiled step


@jit()
def grads_batch_major(views, layout):
    """Loss and gradients by BLAS on batch-major buffers (the notebook's layout); returns the loss.

    The slots named for the feature-major layout (numba_arena.Buffers) hold batch x features here.
    """
    n, d, h, o = layout.n, layout.d, layout.h, layout.o
    x, x_t, y, w1, w2 = views.x, views.x_t, views.y_t, views.w1_t, views.w2
    a, g, gh, gw1, gw2 = views.a_t, views.g_t, views.gh_t, views.gw1_t, views.gw2
    gemm(x, False, w1, False, a, n, h, d)  # N,H   h = x @ w1
    relu(a)  # N,H   a
    gemm(a, False, w2, False, g, n, o, h)  # N,O   y_pred = a @ w2
    loss = loss_and_output_grad(g, y)  # N,O   g = 2 (y_pred - y)
    gemm(a, True, g, False, gw2, h, o, n)  # H,O   gw2 = a.T @ g
    gemm(g, False, w2, True, gh, n, h, o)  # N,H   ga = g @ w2.T, with w2 before its update
    relu_grad(gh, a)  # N,H   gh
    gemm(x_t, False, gh, False, gw1, d, h, n)  # D,H   gw1 = x.T @ gh
    return loss


@jit()
def grads_by_plan(views, layout, by_blas):
    """Loss and gradients on feature-major buffers, each product by BLAS where by_blas says, else by
    the loops on one thread; returns the loss."""
    n, d, h, o = layout.n, layout.d, layout.h, layout.o
    if by_blas.h:
        gemm(views.w1_t, False, views.x, True, views.a_t, h, n, d)  # H,N   h.T = w1.T @ x.T
    else:
        h_by_loops(views, layout, False)
    relu(views.a_t)  # H,N   a.T
    if by_blas.y_pred:
        gemm(views.w2, True, views.a_t, False, views.g_t, o, n, h)  # O,N   y_pred.T = w2.T @ a.T
    else:
        y_pred_by_loops(views, layout, False)
    loss = loss_and_output_grad(views.g_t, views.y_t)  # O,N   g.T = 2 (y_pred - y).T
    if by_blas.gw2:
        gemm(views.a_t, False, views.g_t, True, views.gw2, h, o, n)  # H,O   gw2 = a.T @ g
    else:
        gw2_by_loops(views, layout, False)
    if by_blas.ga:
        gemm(views.w2, False, views.g_t, False, views.gh_t, h, n, o)  # H,N   ga.T = w2 @ g.T, w2 before its update
    else:
        ga_by_loops(views, layout, False)
    relu_grad(views.gh_t, views.a_t)  # H,N   gh.T
    if by_blas.gw1:
        gemm(views.gh_t, False, views.x, False, views.gw1_t, h, d, n)  # H,D   gw1.T = gh.T @ x
    else:
        gw1_by_loops(views, layout, False)
    return loss


@jit()
def train_step(buf, layout_argument, update_argument, by_blas_argument):
    """numba_step.train_step with each product by BLAS where by_blas_argument (a plain tuple of
    Products' flags) says, in either layout.

    BLAS is given the unpadded sizes and reads the padded buffers in place; what it leaves
    unwritten is padding, zero from the start.
    """
    layout = layout_of(layout_argument)
    update = Update(*update_argument)
    views, stretches = arena_views(buf, layout)
    if layout.batch_major:
        loss = grads_batch_major(views, layout)
    else:
        loss = grads_by_plan(views, layout, Products(*by_blas_argument))
    update_weights(views, stretches, layout, update)
    return loss


class NumbaBlasStep(NumbaStep):
    """The Numba step with each product by BLAS or by the loops, in one of two layouts, as the plan says
    (see the module)."""

    def __init__(self, problem, arrays, plan: str = "auto"):
        self._given = parse_plan(plan)  # before the arena is laid out: it depends on which products may loop
        if max(padded_shape(*problem.shape)) >= BLAS_INT_LIMIT:
            raise ValueError(
                f"numba:blas takes sizes below 2^31 - 8 (SciPy's BLAS takes 32-bit integers); got {problem.shape}"
            )
        super().__init__(problem, arrays, parallel=False)
        self.trials: dict[str, float] = {}
        if self._given is None:
            by_blas = self._choose_products()
            by_loops = _others(by_blas)
            if self._arena.layout.may_loop != by_loops:  # the loops' buffers for the products kept by the loops only
                self._arena = self._lay_out(by_loops, batch_major=False)  # (no update has run yet)
            self._keep_plan(by_blas)
            if by_blas == ALL_PRODUCTS:
                self._choose_layout()
        else:
            self._keep_plan(self._given[0])

    def _keep_plan(self, by_blas: Products) -> None:
        self._by_blas = by_blas
        self._by_blas_argument = tuple(by_blas)  # made once: the form every call passes (see ArenaLayout.argument)

    def _first_layout(self) -> tuple[Products, bool]:
        if self._given is not None:  # the given plan's own layout
            by_blas, batch_major = self._given
            return _others(by_blas), batch_major
        macs = product_macs(*self.problem.shape).values()  # every candidate for the loops' trials
        return Products(*(m <= LOOPS_MAX_MACS for m in macs)), False

    @staticmethod
    def _compile(dtype) -> None:
        compile_once(train_step, dtype, tuple(NO_PRODUCTS))

    def _call(self, kind: int, t: int = 0, arena=None, by_blas_argument: tuple | None = None):
        a = self._arena if arena is None else arena
        by_blas = self._by_blas_argument if by_blas_argument is None else by_blas_argument
        return train_step(a.buf, a.argument, (kind, self._lr, t), by_blas)

    def _grads(self, by_blas: Products, arena=None):
        argument = tuple(by_blas)
        return lambda: self._call(GRADS_ONLY, 0, arena, argument)

    def _choose_products(self) -> Products:
        """Each candidate product tried by the loops against BLAS, in the step's order, the others
        as decided so far; trials[product]: the time ratio (loops / BLAS) of loss_and_grads."""
        by_blas = ALL_PRODUCTS
        for product in PRODUCTS:
            if not getattr(self._arena.layout.may_loop, product):
                continue
            by_loops = by_blas._replace(**{product: False})
            ratio = trial(self._grads(by_loops), self._grads(by_blas))
            self.trials[product] = round(ratio, 3)
            if ratio < 1 - LOOPS_MARGIN:
                by_blas = by_loops
        return by_blas

    def _choose_layout(self) -> None:
        """Batch-major tried against feature-major, every product by BLAS; trials["layout"]: the time
        ratio (batch-major / feature-major) of loss_and_grads. The arena not kept is dropped."""
        batch_major = self._lay_out(NO_PRODUCTS, batch_major=True)
        ratio = trial(self._grads(ALL_PRODUCTS, batch_major), self._grads(ALL_PRODUCTS))
        self.trials["layout"] = round(ratio, 3)
        if ratio < 1 - LAYOUT_MARGIN:
            self._arena = batch_major

    @property
    def plan(self) -> dict[str, str]:
        """{product: "blas" or "loops"}, in the order the step computes them, and the layout."""
        products = {p: "blas" if blas else "loops" for p, blas in zip(PRODUCTS, self._by_blas, strict=True)}
        return products | {"layout": LAYOUTS[self._arena.layout.batch_major]}

    def describe(self) -> dict:
        blas = _scipy_blas()
        limit = threads.budget() if blas is None else blas["num_threads"]
        openblas = blas is not None and blas.get("internal_api") == "openblas"
        product_threads = {}
        for product, macs in product_macs(*self.problem.shape).items():
            by_blas = self.plan[product] == "blas"
            product_threads[product] = (openblas_threads(macs, limit) if openblas else limit) if by_blas else 1
        return {
            "numba": numba.__version__,
            "plan": self.plan,
            "plan_chosen": "measured at create" if self._given is None else "given",
            "trials": self.trials,  # time ratios: loops / BLAS per product tried; batch- / feature-major
            "threads": product_threads,
            "blas": None if blas is None else {k: blas.get(k) for k in ("internal_api", "version", "architecture")},
        }
