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
- Feature-major, where oneMKL is installed (impls.numba_blas_jit): each product by BLAS gets a
  kernel MKL generates for its one shape, tried against OpenBLAS's gemm in the step's order;
  the kernel is kept when JIT_MARGIN faster. Where MKL generates no code for the shape or
  the CPU (MKL_NO_JIT: on the AMD CPUs measured, every shape) nothing is tried and OpenBLAS
  stays. The kernels are created here, at create, never by a call of the step.

`plan=` fixes the plan instead, for a reproducible comparison: "blas", "loops", "jit",
"layout=batch-major", or product=blas|loops|jit pairs such as "h=loops,gw1=jit" (the rest
by OpenBLAS, feature-major; jit: MKL's kernel, or its standard gemm where it generates none).
`describe()` records the plan, the trials, each product's threads and each kernel's provider.

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
from numba import types
from numba.extending import overload

from . import numba_blas_jit, threads, timing
from .numba_arena import (
    ALL_PRODUCTS,
    NO_PRODUCTS,
    PRODUCTS,
    Products,
    arena_shapes,
    arena_views,
    layout_of,
    padded_shape,
)
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
JIT_MARGIN = 0.03  # a JIT kernel replaces OpenBLAS for a product only if the step is at least this much faster
TRIAL_PAIRS = (3, 7)  # pairs of blocks per trial (fewer where a call is long), each pair in random order
TRIAL_BLOCK_S = 1e-3  # a block is at least one call and at least this long
TRIAL_S = 1.0  # a trial's pairs stop at 3 once they would take longer than this
# OpenBLAS's interface/gemm.c: SMP_THRESHOLD_MIN (65536) x GEMM_MULTITHREAD_THRESHOLD (4 by default)
# multiply-adds per thread; at or below it a product runs on one thread.
OPENBLAS_ONE_THREAD_MACS = 65536 * 4
PLAN_CHOICES = ("blas", "loops", "jit")  # jit: oneMKL's kernel for the one product (impls.numba_blas_jit)
NO_KERNELS = None  # the compiled step's kernels argument where no product goes to a JIT kernel
LAYOUTS = ("feature-major", "batch-major")


def unavailable_reason() -> str | None:
    return GEMM_UNAVAILABLE


def product_macs(n, d, h, o) -> dict[str, int]:
    """Multiply-adds of each product, in PRODUCTS order."""
    return dict(zip(PRODUCTS, (n * d * h, n * h * o, n * h * o, n * h * o, n * d * h), strict=True))


def parse_plan(plan) -> tuple[Products, Products, bool] | None:
    """(the products by BLAS; those of them by oneMKL's JIT kernels; batch-major or not), or None for "auto"."""
    usage = (
        "plan must be 'auto', 'blas', 'loops', 'jit', or comma-separated product=blas|loops|jit pairs (products: "
        f"{', '.join(PRODUCTS)}; the rest by BLAS) and layout={'|'.join(LAYOUTS)} (batch-major: every "
        f"product by OpenBLAS); got {plan!r}"
    )
    if not isinstance(plan, str):
        raise ValueError(usage)
    if plan == "auto":
        return None
    if plan in PLAN_CHOICES:
        return (
            (NO_PRODUCTS if plan == "loops" else ALL_PRODUCTS),
            (ALL_PRODUCTS if plan == "jit" else NO_PRODUCTS),
            False,
        )
    by_blas, by_jit, layout = ALL_PRODUCTS, NO_PRODUCTS, LAYOUTS[0]
    for item in plan.split(","):
        key, _, value = item.strip().partition("=")
        if key == "layout" and value in LAYOUTS:
            layout = value
        elif key in PRODUCTS and value in PLAN_CHOICES:
            if value == "loops":  # a product named twice goes to the loops if either says so
                by_blas = by_blas._replace(**{key: False})
            elif value == "jit":
                by_jit = by_jit._replace(**{key: True})
        else:
            raise ValueError(usage)
    by_jit = Products(*(j and b for j, b in zip(by_jit, by_blas, strict=True)))
    batch_major = layout == "batch-major"
    if batch_major and (by_blas != ALL_PRODUCTS or by_jit != NO_PRODUCTS):
        raise ValueError(usage)
    return by_blas, by_jit, batch_major


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


def _kernel(kernels, i):
    """(kernel, jitter) addresses of product i's JIT kernel in the compiled step; (0, 0): OpenBLAS's gemm."""


@overload(_kernel, inline="always")
def _kernel_overload(kernels, i):
    if isinstance(kernels, types.NoneType):  # no kernel anywhere: a constant, and the branch folds away
        return lambda kernels, i: (0, 0)
    return lambda kernels, i: (kernels[2 * i], kernels[2 * i + 1])


@jit(inline="always")
def _blas(kernels, i, a, trans_a, b, trans_b, c, m, n, k):
    """c[:m, :n] = op(a) @ op(b) by product i's JIT kernel where it has one, else by OpenBLAS's gemm."""
    kernel, jitter = _kernel(kernels, i)
    if kernel != 0:
        numba_blas_jit.call(kernel, jitter, a, b, c)  # its sizes, transposes and leading dimensions are in its code
    else:
        gemm(a, trans_a, b, trans_b, c, m, n, k)


@jit()
def grads_by_plan(views, layout, by_blas, kernels):
    """Loss and gradients on feature-major buffers, each product by BLAS where by_blas says (by its JIT
    kernel where `kernels` holds one: see NumbaBlasStep._keep_kernels), else by the loops on one thread; returns the loss."""
    n, d, h, o = layout.n, layout.d, layout.h, layout.o
    if by_blas.h:
        _blas(kernels, 0, views.w1_t, False, views.x, True, views.a_t, h, n, d)  # H,N   h.T = w1.T @ x.T
    else:
        h_by_loops(views, layout, False)
    relu(views.a_t)  # H,N   a.T
    if by_blas.y_pred:
        _blas(kernels, 1, views.w2, True, views.a_t, False, views.g_t, o, n, h)  # O,N   y_pred.T = w2.T @ a.T
    else:
        y_pred_by_loops(views, layout, False)
    loss = loss_and_output_grad(views.g_t, views.y_t)  # O,N   g.T = 2 (y_pred - y).T
    if by_blas.gw2:
        _blas(kernels, 2, views.a_t, False, views.g_t, True, views.gw2, h, o, n)  # H,O   gw2 = a.T @ g
    else:
        gw2_by_loops(views, layout, False)
    if by_blas.ga:
        # H,N   ga.T = w2 @ g.T, w2 before its update
        _blas(kernels, 3, views.w2, False, views.g_t, False, views.gh_t, h, n, o)
    else:
        ga_by_loops(views, layout, False)
    relu_grad(views.gh_t, views.a_t)  # H,N   gh.T
    if by_blas.gw1:
        _blas(kernels, 4, views.gh_t, False, views.x, False, views.gw1_t, h, d, n)  # H,D   gw1.T = gh.T @ x
    else:
        gw1_by_loops(views, layout, False)
    return loss


def kernel_shapes(layout) -> dict[str, numba_blas_jit.GemmShape]:
    """Each product of grads_by_plan as a JIT kernel sees it: sizes, transposes, the buffers' row lengths."""
    b = arena_shapes(layout)
    n, d, h, o = layout.n, layout.d, layout.h, layout.o
    shape = numba_blas_jit.GemmShape
    return {
        "h": shape(h, n, d, False, True, b.w1_t[1], b.x[1], b.a_t[1]),
        "y_pred": shape(o, n, h, True, False, b.w2[1], b.a_t[1], b.g_t[1]),
        "gw2": shape(h, o, n, False, True, b.a_t[1], b.g_t[1], b.gw2[1]),
        "ga": shape(h, n, o, False, False, b.w2[1], b.g_t[1], b.gh_t[1]),
        "gw1": shape(h, d, n, False, False, b.gh_t[1], b.x[1], b.gw1_t[1]),
    }


@jit()
def train_step(buf, layout_argument, update_argument, by_blas_argument, kernels):
    """numba_step.train_step with each product by BLAS where by_blas_argument (a plain tuple of
    Products' flags) says, in either layout; kernels: None, or each product's JIT kernel and jitter
    addresses, 0 where OpenBLAS's gemm computes it (feature-major only).

    BLAS is given the unpadded sizes and reads the padded buffers in place; what it leaves
    unwritten is padding, zero from the start.
    """
    layout = layout_of(layout_argument)
    update = Update(*update_argument)
    views, stretches = arena_views(buf, layout)
    if layout.batch_major:
        loss = grads_batch_major(views, layout)
    else:
        loss = grads_by_plan(views, layout, Products(*by_blas_argument), kernels)
    update_weights(views, stretches, layout, update)
    return loss


def _kernels_argument(kernels: dict) -> tuple | None:
    """The compiled step's kernels argument for {product: Kernel}: None where there are none."""
    if not kernels:
        return NO_KERNELS
    pairs = [(kernels[p].address, kernels[p].jitter) if p in kernels else (0, 0) for p in PRODUCTS]
    return tuple(address for pair in pairs for address in pair)


def _no_kernels_yet() -> tuple:
    """A kernels argument of the type a step with JIT kernels passes, naming none: compiles that variant."""
    return (0,) * (2 * len(PRODUCTS))


_STEP_KERNELS = object()  # NumbaBlasStep._call's default: the step's own kernels


class NumbaBlasStep(NumbaStep):
    """The Numba step with each product by BLAS (OpenBLAS, or a JIT kernel of oneMKL's) or by the loops, in
    one of two layouts, as the plan says (see the module)."""

    def __init__(self, problem, arrays, plan: str = "auto"):
        self._given = parse_plan(plan)  # before the arena is laid out: it depends on which products may loop
        if max(padded_shape(*problem.shape)) >= BLAS_INT_LIMIT:
            raise ValueError(
                f"numba:blas takes sizes below 2^31 - 8 (SciPy's BLAS takes 32-bit integers); got {problem.shape}"
            )
        if self._given is not None and any(self._given[1]) and numba_blas_jit.unavailable_reason() is not None:
            raise ValueError(f"plan {plan!r} asks for JIT kernels: {numba_blas_jit.unavailable_reason()}")
        super().__init__(problem, arrays, parallel=False)
        self.trials: dict[str, float] = {}
        self.jit_tried: dict[str, str] = {}  # product: what became of its JIT kernel (auto plans)
        self._keep_kernels({})  # none yet: the trials below, or the given plan, set them
        if self._given is None:
            by_blas = self._choose_products()
            by_loops = _others(by_blas)
            if self._arena.layout.may_loop != by_loops:  # the loops' buffers for the products kept by the loops only
                self._arena = self._lay_out(by_loops, batch_major=False)  # (no update has run yet)
            self._keep_plan(by_blas)
            if by_blas == ALL_PRODUCTS:
                self._choose_layout()
            if not self._arena.layout.batch_major and numba_blas_jit.unavailable_reason() is None:
                self._choose_kernels()
        else:
            self._keep_plan(self._given[0])
            shapes = kernel_shapes(self._arena.layout)
            dtype = problem.dtype
            self._keep_kernels(
                {p: numba_blas_jit.create(shapes[p], dtype, self) for p in PRODUCTS if getattr(self._given[1], p)}
            )
        if self._kernels is not NO_KERNELS:
            compile_once(train_step, self._arena.buf.dtype, tuple(NO_PRODUCTS), _no_kernels_yet())

    def _keep_plan(self, by_blas: Products) -> None:
        self._by_blas = by_blas
        self._by_blas_argument = tuple(by_blas)  # made once: the form every call passes (see ArenaLayout.argument)

    def _keep_kernels(self, kernels: dict) -> None:
        """The JIT kernels the step runs, by product; the compiled step's argument: None where there are none
        (the step compiled without them, as before they existed), else every product's two addresses."""
        self._jit: dict[str, numba_blas_jit.Kernel] = dict(kernels)
        self._kernels = _kernels_argument(self._jit)

    def _first_layout(self) -> tuple[Products, bool]:
        if self._given is not None:  # the given plan's own layout
            by_blas, _, batch_major = self._given
            return _others(by_blas), batch_major
        macs = product_macs(*self.problem.shape).values()  # every candidate for the loops' trials
        return Products(*(m <= LOOPS_MAX_MACS for m in macs)), False

    @staticmethod
    def _compile(dtype) -> None:
        compile_once(train_step, dtype, tuple(NO_PRODUCTS), NO_KERNELS)

    def _call(self, kind: int, t: int = 0, arena=None, by_blas_argument: tuple | None = None, kernels=_STEP_KERNELS):
        a = self._arena if arena is None else arena
        by_blas = self._by_blas_argument if by_blas_argument is None else by_blas_argument
        return train_step(
            a.buf, a.argument, (kind, self._lr, t), by_blas, self._kernels if kernels is _STEP_KERNELS else kernels
        )

    def _grads(self, by_blas: Products, arena=None, kernels=NO_KERNELS):
        argument = tuple(by_blas)
        return lambda: self._call(GRADS_ONLY, 0, arena, argument, kernels)

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

    def _choose_kernels(self) -> None:
        """Each product by BLAS given a JIT kernel of oneMKL's, tried against OpenBLAS's gemm in the step's
        order, the others as decided so far; trials[product + ":jit"]: the time ratio (JIT / OpenBLAS) of
        loss_and_grads. Where MKL generates no code for a product (MKL_NO_JIT) nothing is tried."""
        shapes = kernel_shapes(self._arena.layout)
        kept: dict[str, numba_blas_jit.Kernel] = {}
        for product in PRODUCTS:
            if not getattr(self._by_blas, product):
                continue
            kernel = numba_blas_jit.create(shapes[product], self.problem.dtype, self)
            if kernel.provider != "mkl-jit":
                self.jit_tried[product] = "no JIT kernel (MKL_NO_JIT): OpenBLAS, untried"
                kernel.destroy()
                continue
            with_it = _kernels_argument(kept | {product: kernel})
            ratio = trial(
                self._grads(self._by_blas, kernels=with_it), self._grads(self._by_blas, kernels=_kernels_argument(kept))
            )
            self.trials[f"{product}:jit"] = round(ratio, 3)
            if ratio < 1 - JIT_MARGIN:
                kept[product] = kernel
                self.jit_tried[product] = "JIT kernel kept"
            else:
                self.jit_tried[product] = "JIT kernel tried, OpenBLAS kept"
                kernel.destroy()
        self._keep_kernels(kept)

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
        """{product: "blas" (OpenBLAS), "jit" (oneMKL's kernel) or "loops"}, in the order the step computes
        them, and the layout."""
        products = {
            p: ("jit" if p in self._jit else "blas") if blas else "loops"
            for p, blas in zip(PRODUCTS, self._by_blas, strict=True)
        }
        return products | {"layout": LAYOUTS[self._arena.layout.batch_major]}

    def describe(self) -> dict:
        blas = _scipy_blas()
        limit = threads.budget() if blas is None else blas["num_threads"]
        openblas = blas is not None and blas.get("internal_api") == "openblas"
        product_threads = {}
        plan = self.plan
        for product, macs in product_macs(*self.problem.shape).items():
            by_openblas = plan[product] == "blas"
            product_threads[product] = (openblas_threads(macs, limit) if openblas else limit) if by_openblas else 1
        return {
            "numba": numba.__version__,
            "plan": plan,
            "plan_chosen": "measured at create" if self._given is None else "given",
            # time ratios: loops / BLAS per product tried; batch- / feature-major; JIT / OpenBLAS ("h:jit")
            "trials": self.trials,
            "threads": product_threads,  # JIT kernels and the loops: one thread
            "blas": None if blas is None else {k: blas.get(k) for k in ("internal_api", "version", "architecture")},
            "jit": self._jit_record(),
        }

    def _jit_record(self) -> dict:
        """oneMKL's JIT: its version or why it is not used, each kernel's provider ("mkl-jit", or "mkl-gemm"
        where MKL generated none and its standard gemm runs), what became of each product's trial."""
        reason = numba_blas_jit.unavailable_reason()
        record = {"mkl": numba_blas_jit.version() if reason is None else None}
        if reason is not None:
            record["unused"] = reason
        elif self._arena.layout.batch_major:
            record["unused"] = "batch-major layout: every product by OpenBLAS"
        record["kernels"] = {p: k.provider for p, k in self._jit.items()}
        if self.jit_tried:
            record["tried"] = dict(self.jit_tried)
        return record
