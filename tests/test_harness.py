"""The shared harness: the static grid, setup discipline, new registry entries, timing, the GEMM peak, the environment.

Nothing here is timed: the timing code runs on fake clocks, the GEMM peak and its quick
recheck are constants, and so is the load average.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import impls
import impls.timing
from bench.harness import environment, grid, load, peak, prepare, timing
from impls import registry, threads

from .conftest import GHOST, TWIN, WRONG, require


def test_grid_ids_are_static_and_readable():
    assert grid.PRESETS == tuple(impls.SIZES)
    assert grid.SWEEP_IDS == ("n00064", "n00256", "n01024", "n04096", "n16384")
    assert grid.IMPLEMENTATIONS[0] == grid.REFERENCE == "numpy"
    cases = grid.preset_cases()
    assert len(cases) == len(impls.names()) * len(impls.SIZES) * 2 * 2
    assert cases[: len(impls.names())] == [(n, "seed", "float32", "sgd") for n in impls.names()]  # problem-major


def test_grid_problems_are_the_checked_ones():
    assert grid.preset_problem("medium", "float32", "adam") == impls.agreement.check_problem(
        "medium", "float32", "adam"
    )
    p = grid.sweep_problem("n04096", "float64")
    assert p.shape == (4096, 1000, 100, 10) and (p.optimizer, p.init) == ("sgd", "torch")
    assert p.lr == impls.agreement.CHECK_LR["sgd"]


def test_accelerator_presets_skip_cpu_implementations_only():
    assert grid.device("numpy") == grid.device("numba:parallel") == grid.device("torch:cpu:autograd") == "cpu"
    assert grid.device("torch:cuda") == grid.device("torch:cuda:graph") == "cuda"
    assert "accelerators only" in grid.size_skip_reason("torch:cpu", "xlarge")
    assert grid.size_skip_reason("torch:cuda:graph", "xlarge") is None
    assert grid.size_skip_reason("numpy", "large") is None


def test_new_registry_entries_join_the_grid(new_entries):
    names = {c[0] for c in grid.preset_cases()} | {c[0] for c in grid.sweep_cases()}
    assert {TWIN, GHOST, WRONG} <= names


def test_prepare_skips_unavailable_with_the_reason(new_entries):
    with pytest.raises(prepare.Skip, match="no_such_package_for_stepbench not installed"):
        prepare.prepare(GHOST, grid.preset_problem("seed", "float32", "sgd"), "seed")
    with pytest.raises(prepare.Skip, match="accelerators only"):
        prepare.prepare("numpy", grid.preset_problem("xlarge", "float32", "sgd"), "xlarge")


def test_prepare_refuses_to_time_a_wrong_implementation(new_entries):
    with pytest.raises(prepare.Disagrees, match=f"{WRONG} DISAGREES"):
        prepare.prepare(WRONG, grid.preset_problem("seed", "float64", "sgd"), "seed")


def test_prepare_refuses_a_failing_verdict_made_elsewhere():
    # asv checks each problem once, in another process, and hands prepare the verdict.
    failing = prepare.Verdict(False, 3.5, "numpy DISAGREES (a verdict from another process)")
    asked = []
    problem = grid.preset_problem("seed", "float64", "sgd")
    with pytest.raises(prepare.Disagrees, match="a verdict from another process"):
        prepare.prepare("numpy", problem, "seed", verdict=lambda *args: asked.append(args) or failing)
    assert asked == [("numpy", problem)]


class _QueuingStep:
    """A stand-in device step: records each call, so a missing sync shows."""

    def __init__(self):
        self.calls = []

    def step(self):
        self.calls.append("step")

    def sync(self):
        self.calls.append("sync")


def test_a_synced_call_waits_for_the_work_it_queued():
    stub = _QueuingStep()
    timed = prepare.synced(stub)
    timed()
    timed()
    assert stub.calls == ["step", "sync", "step", "sync"] and timed.step is stub


class _FakeClock:
    """perf_counter for bench.harness.timing that moves only when the timed call runs: 1/1024 s a call, exact in binary."""

    PER_CALL = 2**-10

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def call(self):
        self.now += self.PER_CALL


def test_measure_reports_seconds_per_call_not_per_block(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(timing, "time", clock)  # these modules' clock only: bench.harness.timing's budget,
    monkeypatch.setattr(impls.timing, "time", clock)  # and impls.timing's blocks
    result = timing.measure(clock.call)
    assert result.number > 1  # calls were grouped in blocks, so a block's time is not a call's
    assert result.median == clock.PER_CALL and set(result.samples) == {clock.PER_CALL}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_gemm_rates_count_two_flops_per_multiply_add(device, monkeypatch):
    if device == "cuda":
        require("torch:cuda")
    monkeypatch.setattr(peak, "GEMM_SIZES", {**peak.GEMM_SIZES, device: (8, 16)})
    monkeypatch.setattr(peak, "QUICK_SIZES", {**peak.QUICK_SIZES, device: 16})
    monkeypatch.setattr(peak, "GEMM_REPEATS", 2)
    products = []

    def half_a_second(call):  # the product runs; the clock says it took 0.5 s
        call()
        products.append(call)
        return 0.5

    monkeypatch.setattr(peak, "_timed", half_a_second)
    measure = peak._measure_cuda if device == "cuda" else peak._measure_cpu
    # An n x n by n x n product is n^3 multiply-adds, 2 n^3 FLOPs; the best rate is the larger size's.
    assert measure("float32") == 2 * 16**3 / 0.5 / 1e9
    assert peak.quick_gflops("float32", device) == 2 * 16**3 / 0.5 / 1e9
    assert len(products) == 2 * 2 + peak.QUICK_REPEATS


def test_the_gpu_script_runs_the_tests_of_every_cuda_only_path():
    # No CPU machine runs CUDA-only code: bench/cuda_check.sh is where its tests run, so what it
    # selects is checked here, through its own --collect-only.
    script = environment.REPO / "bench" / "cuda_check.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(script), "--collect-only"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    listing, _, collected = done.stdout.partition("== agreement and CUDA-specific tests")
    named = {line.split()[-1] for line in listing.splitlines()[1:]}
    assert "test_graph_replays_count_adam_steps" in named
    selected = {line.split("::")[-1].split("[")[0] for line in collected.splitlines() if "::" in line}
    assert named <= selected, f"named but not run: {sorted(named - selected)}"


def test_prepare_returns_a_checked_warm_step():
    prepared = prepare.prepare("numpy", grid.preset_problem("seed", "float32", "adam"), "seed")
    assert prepared.verdict.ok and 0 <= prepared.verdict.worst_ratio <= 1
    assert prepared.step.name == "numpy" and prepared.step.problem.optimizer == "adam"
    w1_before = prepared.step.weights()[0]
    prepare.synced(prepared.step)()
    assert not np.array_equal(prepared.step.weights()[0], w1_before)  # the timed call does a step


def test_non_finite_weights_are_caught():
    step = impls.create("numpy", impls.Problem.preset("seed"))
    prepare.assert_finite(step)
    step.w1[0, 0] = np.nan
    with pytest.raises(prepare.Diverged, match="no longer finite"):
        prepare.assert_finite(step)


def test_environment_record_has_what_results_need():
    record = environment.record()
    assert {"machine", "cpu", "cores", "threads", "versions", "git"} <= set(record)
    assert record["threads"]["budget"] >= 1 and record["versions"]["numpy"] == np.__version__
    assert set(record["git"]) == {"commit", "dirty"}


def test_environment_saved_beside_asv_results_names_blas_and_dirty_flag(tmp_path):
    # As make asv-run runs it: a fresh process, which must load every backend itself and
    # so put each pool on the budget (1 thread here, not the CPUs' count every pool starts at).
    command = [sys.executable, "-m", "bench.harness.environment", "--save", str(tmp_path)]
    env = {**os.environ, threads.ENV: "1"}
    subprocess.run(command, cwd=environment.REPO, env=env, check=True, capture_output=True, timeout=600)
    (saved,) = tmp_path.iterdir()
    info = json.loads(saved.read_text())
    assert saved.name == f"{info['machine_name']}-{info['git']['commit'][:8]}.json"  # hostname, CPU, cores, GPU
    assert info["implementations"] == [name for name, reason in impls.available().items() if reason is None]
    for package in registry.required_packages():  # each loaded backend's threads are in the record
        if any(name.startswith(package) for name in info["implementations"]):
            assert info["threads"][package] == 1
    assert any(pool["internal_api"] == "openblas" for pool in info["threads"]["blas"])
    assert {pool["num_threads"] for pool in info["threads"]["blas"]} == {1}
    assert isinstance(info["git"]["dirty"], bool)


def test_gemm_peak_is_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path))
    measured = []
    monkeypatch.setattr(peak, "_measure_cpu", lambda dtype: measured.append(dtype) or 42.0)
    assert peak.gemm_peak_gflops("float32") == 42.0
    assert peak.gemm_peak_gflops("float32") == 42.0
    assert peak.gemm_peak_gflops("float64") == 42.0
    assert measured == ["float32", "float64"]


def test_available_for_some_names_imports_only_their_backends():
    code = (
        "import sys, impls; from impls import registry;"
        "registry._REGISTRY['other'] = registry.Entry('negative_controls', 'W2NotTransposed');"
        "print(impls.available(['numpy']), 'impls.negative_controls' in sys.modules);"
        "impls.available(); print('impls.negative_controls' in sys.modules)"
    )
    root = environment.REPO
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.split("\n")[:2] == ["{'numpy': None} False", "True"]
    with pytest.raises(ValueError, match="^name must be one of"):
        impls.available(["nonesuch"])


def test_the_load_average_counts_only_other_work(monkeypatch):
    monkeypatch.setattr(load, "cores", lambda: 2)
    monkeypatch.setattr(load, "load_average", lambda: 0.3)
    assert load.busy_warning(budget=2) is None  # an idle machine
    monkeypatch.setattr(load, "load_average", lambda: 2.0)
    assert "load average 2.00 over the last minute on 2 cores" in load.busy_warning(budget=2)
    assert load.busy_warning(budget=2, own_threads=2) is None  # the run's own two threads


def test_a_cached_peak_is_checked_by_a_quick_product(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "_measure_cpu", lambda dtype: 100.0)
    assert peak.gemm_peak_gflops("float32") == 100.0  # measured (here: the constant) and cached
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 90.0)
    assert peak.recheck("float32", "cpu", 100.0) is None  # a single smaller product comes close
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 200.0)
    low = peak.recheck("float32", "cpu", 100.0)
    assert "measured under load" in low and str(peak.cache_path("float32")) in low
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 30.0)
    assert "the machine is busy now" in peak.recheck("float32", "cpu", 100.0)


def test_a_cached_peak_beaten_by_a_quick_product_is_measured_again_and_replaced(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(peak, "_measure_cpu", lambda dtype: 100.0)  # measured while another job ran
    assert peak.checked_peak("float32") == (100.0, None)  # nothing cached: measured and cached
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 150.0)
    monkeypatch.setattr(peak, "_measure_cpu", lambda dtype: 180.0)  # the machine is quiet again
    gflops, warning = peak.checked_peak("float32")
    assert gflops == 180.0 and "measured again: 180.0 GFLOP/s, cached in its place" in warning
    assert peak.cached_gflops("float32") == 180.0  # not cached for good
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 170.0)
    assert peak.checked_peak("float32") == (180.0, None)  # within 20%: the cache stands


def test_a_float32_peak_not_above_float64_is_warned_about_with_the_files(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path))
    assert peak.dtype_warning({"float32": 210.0, "float64": 108.0}) is None
    warning = peak.dtype_warning({"float32": 134.0, "float64": 120.0})
    assert "a ratio of 1.12 where about 2 is expected" in warning
    assert str(peak.cache_path("float32")) in warning and str(peak.cache_path("float64")) in warning
    assert peak.dtype_warning({"float32": 134.0, "float64": 120.0}, "cuda") is None  # GPUs differ
    assert peak.dtype_warning({"float32": 134.0}) is None


def test_the_quick_product_runs():
    assert peak.quick_gflops("float64") > 0  # the code path only: nothing here depends on how fast
