"""asv benchmarks of the training step over the grid: time, peak memory, and ratios that survive drift.

Every parameter set runs in its own process. setup() skips what cannot run here
(NotImplementedError, so the grid stays the same on every machine), reads the agreement
verdict for the problem (a disagreeing implementation fails its benchmarks with the
checker's report and is not timed), creates and warms up the step under the thread
budget. asv re-runs setup() before every sample; the prepared step is kept, so a re-run
only checks that the weights are still finite.

Every track_ value is one where lower is better, as asv assumes for every benchmark
(it has no way to mark a track as higher-is-better): a rate is tracked as its reciprocal,
time per GFLOP, and a speed-up as the time relative to numpy's. Otherwise a step that got
faster would be listed among the regressions.

Two tracks are measured so that a machine's drift cancels: each is a ratio of two blocks of
calls alternated inside one process (bench.harness.timing.alternate), the step against numpy's step
on the same problem, and the step against a matrix product of this dtype on this device.
Between runs of unchanged code, time_step moves with the machine; these move far less.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np

import impls
from bench.harness import grid, peak, prepare, timing, verdicts
from impls import registry, threads

# The backends' libraries (registry.required_packages(): torch, numba), imported here, once:
# asv.conf.json launches every benchmark process by forking one that has imported this
# suite, so the children start with these libraries loaded. Importing starts no thread
# pool (a pool started before a fork is unusable after it): nothing here runs a step,
# loads numba's kernels (which launches its OpenMP threads) or applies the thread budget.
# peakmem_step therefore counts these imports for every implementation alike.
PRELOADED = tuple(package for package in registry.required_packages() if importlib.util.find_spec(package) is not None)
for _module in PRELOADED:
    importlib.import_module(_module)

# This process's one parameter set: its (run, problem, preset), its step and numpy's step on it.
# setup() passes nothing else on: asv versions a benchmark by the source of its setup, and a
# changed setup would cut the committed history off the dashboard.
_parameter_set: tuple = (None, None, None)
_prepared: dict[tuple, prepare.Prepared] = {}


def _prepare(
    run: str, name: str, problem: impls.Problem, preset: str | None = None, role: str = "timed"
) -> prepare.Prepared:
    global _parameter_set
    key = (run, role, name, problem)
    if role == "timed":
        _parameter_set = (run, problem, preset)
    if key in _prepared:
        prepare.assert_finite(_prepared[key].step)
    else:
        if any(other[0] != run or other[3] != problem for other in _prepared):
            _prepared.clear()  # another parameter set: a process keeps only one set's steps
        _prepared[key] = prepare.prepare(name, problem, preset, verdict=verdicts.lookup(run))
    return _prepared[key]


class _StepBenchmarks:
    """Timing settings and the benchmarks shared by the preset grid and the batch sweep."""

    timeout = 900  # the first setup of a large problem also runs its agreement check
    rounds = 1  # one process per parameter set: the grid is large and setup (check, warm-up) is not cheap
    number = 1  # setup re-runs before every sample anyway, so a sample is one call
    repeat = (3, 200, 0.5)  # at least 3 samples; up to 200 within 0.5 s
    warmup_time = 0.0  # setup has warmed up already

    def _ready(self, prepared: prepare.Prepared) -> None:
        self.prepared = prepared
        self.one_step = prepare.synced(prepared.step)
        self.one_loss_and_grads = prepare.synced(prepared.step, "loss_and_grads")

    def time_step(self, run, *params):
        self.one_step()

    def track_ms_per_gflop(self, run, *params):
        """Time per GFLOP of the step's matrix products: 1/(GFLOP/s), so that lower is faster."""
        seconds = timing.measure(self.one_step, min_blocks=3, budget_s=0.3).median
        return 1e3 * seconds / (impls.flops(self.prepared.step.problem) / 1e9)

    track_ms_per_gflop.unit = "ms/GFLOP (lower is faster)"


# The ratio tracks: up to 12 pairs of blocks of at least 20 ms (bench.harness.timing.alternate), on
# one thread per library: on a shared machine whose other jobs hold a core, a step on two threads
# waits at every parallel region for the thread that lost its core, and runs 2x to 1000x slower from
# one moment to the next (three runs of unchanged code, docs/measurements.md); a single thread only
# shares its core, and both sides of a pair share alike.
#
# Each block follows a 0.12 s pause where the step runs threads the budget does not limit, which may
# spin after a call and hold a core the other side's block needs (OpenBLAS's spin for about 0.1 s):
# jax's XLA pool, fixed when jax starts, a data-parallel step's other ranks, and any library not
# known to be limited (an implementation from outside). With the budget's one thread for BLAS,
# torch and numba nothing spins, and the pause only added noise: numpy against numpy at tutorial,
# q25-q75 of the pair ratios 0.85-1.09 with it and 0.97-1.01 without, medians alike for
# numba:blas, torch:cpu and numba:parallel; torch:cpu:ddp read 6.1-8.4 with it and 7.5-11.3
# without (three runs each). The pauses were 2.9 s of each track's 3.5 s.
#
# Where one call is a block by itself and lasts seconds (the large preset, on one thread), 12 pairs
# took a minute per track and cell: pairs stop once 4 s have passed, after at least 3 (a median that
# one disturbed pair cannot move).
PAIRS, MIN_PAIRS, PAIRS_BUDGET_S, BLOCK_S, SETTLE_S, RATIO_THREADS = 12, 3, 4.0, 0.02, 0.12, 1
if os.environ.get("STEPBENCH_SMOKE"):  # make test's asv run checks that the tracks run, not what they read
    PAIRS, MIN_PAIRS, PAIRS_BUDGET_S, BLOCK_S, SETTLE_S = 1, 1, 0.0, 0.0, 0.0
# Libraries whose every thread impls.threads.apply limits, when the step runs on the CPU in this process.
LIMITED_LIBRARIES = ("numpy", "numba", "torch")


def runs_only_limited_threads(call) -> bool:
    """Whether the step behind `call` (prepare.synced's) runs no thread the budget does not limit.

    Of calls that are no step's, peak.product's matrix product (it knows its FLOPs) runs NumPy's
    BLAS under the budget on the CPU (on a GPU, the step it is alternated with keeps the pause);
    any other call is not known to, and keeps the pause."""
    step = getattr(call, "step", None)
    if step is None:
        return hasattr(call, "flops")
    name = getattr(step, "name", "")
    return (
        name.split(":")[0] in LIMITED_LIBRARIES
        and grid.device(name) == "cpu"
        and getattr(step, "world_size", 1) == 1  # no ranks in other processes
    )


def _alternate(first, second) -> list[tuple[float, float]]:
    settle_s = 0.0 if runs_only_limited_threads(first) and runs_only_limited_threads(second) else SETTLE_S
    threads.apply(RATIO_THREADS)
    try:
        return timing.alternate(
            first,
            second,
            pairs=PAIRS,
            min_pairs=MIN_PAIRS,
            budget_s=PAIRS_BUDGET_S,
            block_s=BLOCK_S,
            settle_s=settle_s,
        )
    finally:
        threads.apply()  # the budget again, for whatever this process times next


class Presets(_StepBenchmarks):
    """implementation x size preset x dtype x optimizer: time, peak memory, time per GFLOP, and two ratios
    that survive drift: the time relative to numpy's and to a GEMM's rate, each measured alongside."""

    params = [list(grid.IMPLEMENTATIONS), list(grid.PRESETS), list(grid.DTYPES), list(grid.OPTIMIZERS)]
    param_names = ["implementation", "preset", "dtype", "optimizer"]

    def setup_cache(self):
        return verdicts.new_run()

    def setup(self, run, name, preset, dtype, optimizer):
        self._ready(_prepare(run, name, grid.preset_problem(preset, dtype, optimizer), preset))

    def track_time_vs_numpy(self, run, *params):
        """The step's time over numpy's on the same problem, one thread each, blocks of each alternated
        in one process: 1/speed-up, so that lower is faster. Drift between runs cancels in the ratio."""
        # numpy's own row compares two numpy steps: the method's bias and noise floor.
        run, problem, preset = _parameter_set
        reference = _prepare(run, grid.REFERENCE, problem, preset, role="reference")
        return timing.median_ratio(_alternate(self.one_step, prepare.synced(reference.step)))

    track_time_vs_numpy.unit = "x numpy's time (lower is faster)"

    def track_time_over_gemm(self, run, *params):
        """The step's time over the time its FLOPs take at the rate of a matrix product (1024^3 on the
        CPU) alternated with it in one process, one thread each: 1/(fraction of GEMM rate), so that
        lower is faster."""
        step = self.prepared.step
        product = peak.product(step.problem.dtype, grid.device(step.name))
        samples = _alternate(self.one_step, product)
        # step seconds / the seconds its FLOPs would take at the product's rate in the same pair
        return float(np.median([s * product.flops / (impls.flops(step.problem) * g) for s, g in samples]))

    track_time_over_gemm.unit = "x the time at the GEMM rate (lower is faster)"

    def time_loss_and_grads(self, run, *params):
        self.one_loss_and_grads()

    def peakmem_step(self, run, *params):
        self.one_step()


class BatchSweep(_StepBenchmarks):
    """implementation x batch size N (D, H, O = grid.SWEEP_SHAPE) x dtype, with SGD: how the cost grows with N.

    Time and time per GFLOP; loss_and_grads, peak memory and the ratios are the preset grid's.
    """

    params = [list(grid.IMPLEMENTATIONS), list(grid.SWEEP_IDS), list(grid.DTYPES)]
    param_names = ["implementation", "batch", "dtype"]

    def setup_cache(self):
        return verdicts.new_run()

    def setup(self, run, name, n_id, dtype):
        self._ready(_prepare(run, name, grid.sweep_problem(n_id, dtype)))


def track_thread_budget():
    """Threads each CPU backend may use (STEPBENCH_THREADS, else this process's CPUs)."""
    return threads.budget()


track_thread_budget.unit = "threads"


class GemmPeak:
    """This machine's measured GEMM peak (the best rate, cached: bench.harness.peak), the yardstick of `make bench`."""

    params = [list(grid.DTYPES)]
    param_names = ["dtype"]

    def track_ms_per_gflop(self, dtype):
        """1/(GFLOP/s) of the cached peak, so that lower is faster."""
        return 1e3 / peak.gemm_peak_gflops(dtype, "cpu")

    track_ms_per_gflop.unit = "ms/GFLOP (lower is faster)"
