"""asv benchmarks of the training step over the grid: time, peak memory, GFLOP/s and fraction of GEMM peak.

Every parameter set runs in its own process. setup() skips what cannot run here
(NotImplementedError, so the grid stays the same on every machine), reads the agreement
verdict for the problem (a disagreeing implementation fails its benchmarks with the
checker's report and is not timed), creates and warms up the step under the thread
budget. asv re-runs setup() before every sample; the prepared step is kept, so a re-run
only checks that the weights are still finite.
"""

from __future__ import annotations

import importlib
import importlib.util

import impls
from impls import registry, threads

from . import grid, peak, prepare, timing, verdicts

# The backends' libraries (registry.required_packages(): torch, numba), imported here, once:
# asv.conf.json launches every benchmark process by forking one that has imported this
# suite, so the children start with these libraries loaded. Importing starts no thread
# pool (a pool started before a fork is unusable after it): nothing here runs a step,
# loads numba's kernels (which launches its OpenMP threads) or applies the thread budget.
# peakmem_step therefore counts these imports for every implementation alike.
PRELOADED = tuple(package for package in registry.required_packages() if importlib.util.find_spec(package) is not None)
for _module in PRELOADED:
    importlib.import_module(_module)

_prepared: dict[tuple, prepare.Prepared] = {}  # this process's one parameter set


def _prepare(run: str, name: str, problem: impls.Problem, preset: str | None = None) -> prepare.Prepared:
    key = (run, name, problem)
    if key in _prepared:
        prepare.assert_finite(_prepared[key].step)
    else:
        _prepared.clear()
        _prepared[key] = prepare.prepare(name, problem, preset, verdict=verdicts.lookup(run, preset))
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

    def track_gflops(self, run, *params):
        return self._gflops()

    track_gflops.unit = "GFLOP/s"

    def _gflops(self) -> float:
        seconds = timing.measure(self.one_step, min_blocks=3, budget_s=0.3).median
        return impls.flops(self.prepared.step.problem) / seconds / 1e9


class Presets(_StepBenchmarks):
    """implementation x size preset x dtype x optimizer: time, peak memory, GFLOP/s, fraction of peak."""

    params = [list(grid.IMPLEMENTATIONS), list(grid.PRESETS), list(grid.DTYPES), list(grid.OPTIMIZERS)]
    param_names = ["implementation", "preset", "dtype", "optimizer"]

    def setup_cache(self):
        return verdicts.new_run()

    def setup(self, run, name, preset, dtype, optimizer):
        self._ready(_prepare(run, name, grid.preset_problem(preset, dtype, optimizer), preset))

    def time_loss_and_grads(self, run, *params):
        self.one_loss_and_grads()

    def peakmem_step(self, run, *params):
        self.one_step()

    def track_peak_fraction(self, run, *params):
        step = self.prepared.step
        return self._gflops() / peak.gemm_peak_gflops(step.problem.dtype, grid.device(step.name))

    track_peak_fraction.unit = "fraction of GEMM peak"


class BatchSweep(_StepBenchmarks):
    """implementation x batch size N (D, H, O = grid.SWEEP_SHAPE) x dtype, with SGD: how the cost grows with N.

    Time and GFLOP/s only: the other measurements are the preset grid's.
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
    """This machine's measured GEMM peak, the yardstick of track_peak_fraction."""

    params = [list(grid.DTYPES)]
    param_names = ["dtype"]

    def track_gflops(self, dtype):
        return peak.gemm_peak_gflops(dtype, "cpu")

    track_gflops.unit = "GFLOP/s"
