"""pytest-benchmark suite over the grid of bench.harness.grid: one group per problem, implementations compared within it.

Setup (skip, agreement check, warm-up, thread budget) is bench.harness.prepare's, as for asv; the
timed bodies are one call. `pytest bench --benchmark-disable` runs each body once, as a smoke test.
"""

import pytest

import impls
from bench.harness import grid, peak, prepare
from impls import threads

PRESET_CASES = grid.preset_cases()
SWEEP_CASES = grid.sweep_cases()


def _prepared(name, problem, preset=None) -> prepare.Prepared:
    try:
        return prepare.prepare(name, problem, preset)
    except prepare.Skip as why:  # the grid stays whole: what cannot run here is skipped with the reason
        pytest.skip(str(why))


@pytest.fixture
def preset_case(request):
    name, preset, dtype, optimizer = request.param
    prepared = _prepared(name, grid.preset_problem(preset, dtype, optimizer), preset)
    yield prepared, f"{preset} {dtype} {optimizer}"
    prepare.assert_finite(prepared.step)  # timings of inf/NaN arithmetic would be worthless


@pytest.fixture
def sweep_case(request):
    name, n_id, dtype = request.param
    prepared = _prepared(name, grid.sweep_problem(n_id, dtype))
    yield prepared, f"{n_id} {dtype} {grid.SWEEP_OPTIMIZER}"
    prepare.assert_finite(prepared.step)


def _record(benchmark, prepared: prepare.Prepared) -> None:
    """extra_info: FLOPs, GFLOP/s and fraction of this machine's GEMM peak, thread budget, agreement, the step's details."""
    step = prepared.step
    flops = impls.flops(step.problem)
    benchmark.extra_info.update(
        implementation=step.name,
        shape=step.problem.shape,
        flops=flops,
        thread_budget=threads.budget(),
        agreement_worst_ratio=prepared.verdict.worst_ratio,
        details=step.describe(),  # device, threads, choices made at create (numba:blas's plan)
    )
    if benchmark.stats is not None:  # None with --benchmark-disable
        gflops = flops / benchmark.stats.stats.median / 1e9
        peak_gflops = peak.gemm_peak_gflops(step.problem.dtype, grid.device(step.name))
        benchmark.extra_info.update(gflops=gflops, gemm_peak_gflops=peak_gflops, peak_fraction=gflops / peak_gflops)


@pytest.mark.parametrize("preset_case", PRESET_CASES, ids=["-".join(c) for c in PRESET_CASES], indirect=True)
def test_step(benchmark, preset_case):
    prepared, group = preset_case
    benchmark.group = f"step {group}"
    benchmark(prepare.synced(prepared.step))
    _record(benchmark, prepared)


@pytest.mark.parametrize("preset_case", PRESET_CASES, ids=["-".join(c) for c in PRESET_CASES], indirect=True)
def test_loss_and_grads(benchmark, preset_case):
    prepared, group = preset_case
    benchmark.group = f"loss_and_grads {group}"
    benchmark(prepare.synced(prepared.step, "loss_and_grads"))
    _record(benchmark, prepared)


@pytest.mark.parametrize("sweep_case", SWEEP_CASES, ids=["-".join(c) for c in SWEEP_CASES], indirect=True)
def test_step_batch_sweep(benchmark, sweep_case):
    prepared, group = sweep_case
    benchmark.group = f"step {group}"
    benchmark(prepare.synced(prepared.step))
    _record(benchmark, prepared)
