"""numba:blas: the Numba step (impls.numba_step) with its products by BLAS where BLAS is faster.

One compiled call per step, as for `numba`: the products call SciPy's s/dgemm
(scipy.linalg.cython_blas) with transposes as flags on the buffers in place, and the rest
is the same fused passes (relu; loss and 2 (y_pred - y); the relu mask; one update of both
weights) on buffers allocated at create.

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

from . import numba_step, threads, timing
from .numba_step import ALL_PRODUCTS, GRADS_ONLY, PRODUCTS

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
    return numba_step.GEMM_UNAVAILABLE


def product_macs(n, d, h, o) -> dict[str, int]:
    """Multiply-adds of each product, in PRODUCTS order."""
    return dict(zip(PRODUCTS, (n * d * h, n * h * o, n * h * o, n * h * o, n * d * h), strict=True))


def parse_plan(plan) -> tuple[int, bool] | None:
    """(the products by BLAS, as bits of numba_step's plan; batch-major or not), or None for "auto"."""
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
        return (ALL_PRODUCTS if plan == "blas" else 0), False
    bits, layout = ALL_PRODUCTS, LAYOUTS[0]
    for item in plan.split(","):
        key, _, value = item.strip().partition("=")
        if key == "layout" and value in LAYOUTS:
            layout = value
        elif key in PRODUCTS and value in PLAN_CHOICES:
            bits &= ~(1 << PRODUCTS.index(key)) if value == "loops" else ALL_PRODUCTS
        else:
            raise ValueError(usage)
    batch_major = layout == "batch-major"
    if batch_major and bits != ALL_PRODUCTS:
        raise ValueError(usage)
    return bits, batch_major


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


def trial(first, second) -> float:
    """Median over alternated pairs of blocks of first's time per call over second's."""
    start = time.perf_counter()
    first(), second()  # each once, warm: also how long a pair will take
    pair_s = time.perf_counter() - start
    low, high = TRIAL_PAIRS
    pairs = max(low, min(high, int(TRIAL_S / max(pair_s, 1e-9))))
    return timing.median_ratio(timing.alternate(first, second, pairs=pairs, block_s=TRIAL_BLOCK_S))


class NumbaBlasStep(numba_step.NumbaStep):
    """The Numba step with each product by BLAS or by the loops, in one of two layouts, as the plan says
    (see the module)."""

    def __init__(self, problem, arrays, plan: str = "auto"):
        self._given = parse_plan(plan)  # before the arena is laid out: it depends on which products may loop
        if max(numba_step.padded_shape(*problem.shape)) >= numba_step.BLAS_INT_LIMIT:
            raise ValueError(
                f"numba:blas takes sizes below 2^31 - 8 (SciPy's BLAS takes 32-bit integers); got {problem.shape}"
            )
        super().__init__(problem, arrays, parallel=False)
        self.trials: dict[str, float] = {}
        if self._given is None:
            self._plan = self._choose_products()
            loops = ALL_PRODUCTS & ~self._plan
            if self._arena.may_loop != loops:  # the loops' buffers for the products kept by the loops only
                self._arena = self._lay_out(loops, batch_major=False)  # (no update has run yet)
            if self._plan == ALL_PRODUCTS:
                self._choose_layout()
        else:
            self._plan = self._given[0]

    def _first_layout(self) -> tuple[int, bool]:
        if self._given is not None:  # the given plan's own layout
            bits, batch_major = self._given
            return ALL_PRODUCTS & ~bits, batch_major
        macs = product_macs(*self.problem.shape).values()  # every candidate for the loops' trials
        return sum(1 << i for i, m in enumerate(macs) if m <= LOOPS_MAX_MACS), False

    def _grads(self, plan: int, arena=None):
        return lambda: self._call(GRADS_ONLY, 0, plan, arena)

    def _choose_products(self) -> int:
        """Each candidate product tried by the loops against BLAS, in the step's order, the others
        as decided so far; trials[product]: the time ratio (loops / BLAS) of loss_and_grads."""
        plan = ALL_PRODUCTS
        for i, product in enumerate(PRODUCTS):
            bit = 1 << i
            if not self._arena.may_loop & bit:
                continue
            ratio = trial(self._grads(plan & ~bit), self._grads(plan))
            self.trials[product] = round(ratio, 3)
            if ratio < 1 - LOOPS_MARGIN:
                plan &= ~bit
        return plan

    def _choose_layout(self) -> None:
        """Batch-major tried against feature-major, every product by BLAS; trials["layout"]: the time
        ratio (batch-major / feature-major) of loss_and_grads. The arena not kept is dropped."""
        batch_major = self._lay_out(0, batch_major=True)
        ratio = trial(self._grads(ALL_PRODUCTS, batch_major), self._grads(ALL_PRODUCTS))
        self.trials["layout"] = round(ratio, 3)
        if ratio < 1 - LAYOUT_MARGIN:
            self._arena = batch_major

    @property
    def plan(self) -> dict[str, str]:
        """{product: "blas" or "loops"}, in the order the step computes them, and the layout."""
        products = {p: "blas" if self._plan >> i & 1 else "loops" for i, p in enumerate(PRODUCTS)}
        return products | {"layout": LAYOUTS[self._arena.batch_major]}

    def describe(self) -> dict:
        blas = _scipy_blas()
        limit = threads.budget() if blas is None else blas["num_threads"]
        openblas = blas is not None and blas.get("internal_api") == "openblas"
        product_threads = {}
        for product, macs in product_macs(*self.problem.shape).items():
            by_blas = self.plan[product] == "blas"
            product_threads[product] = (openblas_threads(macs, limit) if openblas else limit) if by_blas else 1
        return {
            "numba": numba_step.numba.__version__,
            "plan": self.plan,
            "plan_chosen": "measured at create" if self._given is None else "given",
            "trials": self.trials,  # time ratios: loops / BLAS per product tried; batch- / feature-major
            "threads": product_threads,
            "blas": None if blas is None else {k: blas.get(k) for k in ("internal_api", "version", "architecture")},
        }
