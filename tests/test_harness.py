"""The timing harnesses' logic: the static grid, setup discipline, new registry entries, reports.

Nothing here is timed: where the main job would time, bench.timing.measure is replaced by
fixed samples, the GEMM peak and its quick recheck by constants, and the load average too;
the timing code itself runs on fake clocks.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import impls
import impls.timing
from bench import (
    agreement_worker,
    asv_results,
    ddp,
    environment,
    grid,
    load,
    main,
    peak,
    prepare,
    report,
    timing,
    training_step,
    verdicts,
)
from impls import registry, threads

from .conftest import require

TWIN = "numpy:twin"  # a second, correct implementation, as a new backend would register itself
GHOST = "ghost:cpu"  # registered, but unavailable here
WRONG = "numpy:wrong"  # registered, available, and wrong: the checker must stop it before timing


@pytest.fixture
def new_entries(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, TWIN, registry.Entry("numpy_ref", "NumpyStep"))
    monkeypatch.setitem(
        registry._REGISTRY, GHOST, registry.Entry("numpy_ref", "NumpyStep", requires=("no_such_package_for_stepbench",))
    )
    monkeypatch.setitem(registry._REGISTRY, WRONG, registry.Entry("negative_controls", "W2NotTransposed"))


@pytest.fixture
def quiet_machine(monkeypatch, tmp_path_factory):
    """The GEMM peak cached at 100 GFLOP/s and confirmed by its recheck, an idle load average, a private cache."""
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setattr(peak, "gemm_peak_gflops", lambda dtype, device="cpu": 100.0)
    monkeypatch.setattr(peak, "cached_gflops", lambda dtype, device="cpu": 100.0)
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 100.0)
    monkeypatch.setattr(load, "load_average", lambda: 0.0)


@pytest.fixture
def fake_timing(monkeypatch, quiet_machine):
    """measure() returns fixed samples (numpy 100 us, the twin 50 us, with one noisy config); records its calls."""
    calls = []

    def measure(call, **kwargs):
        step = call.step  # prepare.synced's call knows its step
        calls.append(step.name)
        base = 50e-6 if step.name == TWIN else 100e-6
        spread = 0.5 if step.problem.dtype == "float64" else 0.01  # float64 reads as noisy
        return timing.Timing([base * (1 - spread)] * 2 + [base] + [base * (1 + spread)] * 2, 1)

    def alternate(first, second, **kwargs):
        """The step of `first` against numpy's: W ranks take 100/W us (the twin's 50), numpy 100 us."""
        step = first.step
        calls.append(step.name)
        base = 100e-6 / getattr(step, "world_size", 1) if step.name != TWIN else 50e-6
        return [(base, 100e-6)] * 5

    monkeypatch.setattr(timing, "measure", measure)
    monkeypatch.setattr(timing, "alternate", alternate)
    monkeypatch.setattr(ddp, "collective_shares", lambda step: {"all_reduce": 0.25, "control": 0.05})
    return calls


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
    """perf_counter for bench.timing that moves only when the timed call runs: 1/1024 s a call, exact in binary."""

    PER_CALL = 2**-10

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def call(self):
        self.now += self.PER_CALL


def test_measure_reports_seconds_per_call_not_per_block(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(timing, "time", clock)  # these modules' clock only: bench.timing's budget,
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


def test_asv_setup_skips_with_not_implemented_error(new_entries):
    bench = training_step.Presets()
    with pytest.raises(NotImplementedError, match="accelerators only"):
        bench.setup("run", "numpy", "xlarge", "float64", "sgd")
    with pytest.raises(NotImplementedError, match="not installed"):
        bench.setup("run", GHOST, "seed", "float64", "sgd")


def test_asv_verdicts_are_checked_once_per_problem_in_a_child(monkeypatch, tmp_path):
    monkeypatch.setattr(verdicts, "ROOT", tmp_path)
    run = verdicts.new_run()
    problem = grid.preset_problem("seed", "float32", "sgd")
    verdict = verdicts.lookup(run, "seed")
    found = verdict("numpy", problem)
    assert found.ok and "numpy agrees with" in found.report
    (written,) = (tmp_path / run).glob("*.json")
    assert set(json.loads(written.read_text())) == set(grid.IMPLEMENTATIONS)

    def no_second_check(*args):
        raise AssertionError("checked twice")

    monkeypatch.setattr(verdicts, "_check_in_child", no_second_check)
    assert verdict("numpy", problem) == found


def test_agreement_worker_reports_each_implementation(new_entries):
    problem = grid.preset_problem("seed", "float64", "sgd")
    found = agreement_worker.main({"problem": dataclasses.asdict(problem), "names": ["numpy", GHOST, WRONG]})
    assert found["numpy"]["ok"] and found["numpy"]["worst_ratio"] <= 1
    assert found[GHOST] == {"unavailable": "no_such_package_for_stepbench not installed"}
    assert not found[WRONG]["ok"] and "DISAGREES" in found[WRONG]["report"]


def test_main_job_covers_new_entries_and_times_only_what_agrees(new_entries, fake_timing):
    data = main.run(impls.names(), ("seed",), ("float32", "float64"), ("sgd",), sweep=False, budget_s=0)
    status = {(r["implementation"], r["problem"]["dtype"]): r["status"] for r in data["results"]}
    assert status[TWIN, "float32"] == status["numpy", "float64"] == "ok"
    assert status[GHOST, "float32"] == "skipped" and status[WRONG, "float64"] == "disagrees"
    assert WRONG not in fake_timing and GHOST not in fake_timing  # neither was timed
    text = report.console(data)
    assert f"skipped {GHOST}: {GHOST} unavailable: no_such_package_for_stepbench not installed" in text
    assert f"DISAGREES: {WRONG} at seed float64" in text
    twin_f32, twin_f64 = (line for line in text.splitlines() if line.startswith(TWIN))
    numpy_f32, numpy_f64 = (line for line in text.splitlines() if line.startswith("numpy "))
    # The twin takes half numpy's time: marked fastest, 2x; float64 is flagged noisy, float32 not.
    # After the speed-up: the setup seconds (create and the agreement check's calls).
    assert re.search(r" 2\.00x +\d+\.\d\d\* $", twin_f32) and re.search(r" 2\.00x +\d+\.\d\d\*!$", twin_f64)
    assert re.search(r" 1\.00x +\d+\.\d\d  $", numpy_f32) and re.search(r" 1\.00x +\d+\.\d\d !$", numpy_f64)
    noisy = sum(r["status"] == "ok" and r["problem"]["dtype"] == "float64" for r in data["results"])
    assert noisy >= 2 and f"warning: {noisy} of the timings are noisy" in text  # every timed float64 cell
    ok = next(r for r in data["results"] if r["implementation"] == TWIN and r["status"] == "ok")
    assert ok["gflops"] == pytest.approx(impls.flops(impls.Problem.preset("seed")) / 50e-6 / 1e9)
    assert ok["peak_fraction"] == pytest.approx(ok["gflops"] / 100.0)
    assert 0 < ok["create_s"] < ok["setup_s"] and ok["setup_s"] == pytest.approx(ok["create_s"] + ok["check_s"])
    md = report.markdown(data)
    assert f"`{WRONG}` at seed float64 sgd: disagrees" in md and f"- `{GHOST}`:" in md


def test_main_job_writes_all_or_nothing(fake_timing, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "SWEEP_N", (64, 128))  # a short sweep: its agreement checks are real
    monkeypatch.setattr(grid, "SWEEP_IDS", ("n00064", "n00128"))
    out = tmp_path / "latest"
    out.mkdir()
    (out / "dynamics.md").write_text("another job's report")  # make dynamics writes beside make bench
    # Without the data-parallel runs (their own test below), so the set of files is the same everywhere.
    main.main(["--presets", "seed", "--dtypes", "float32", "--out", str(out), "--budget", "0", "--no-data-parallel"])
    written = {p.name for p in out.iterdir()}
    assert written == {"results.json", "report.md", "scaling.png", "dynamics.md"}
    assert (out / "dynamics.md").read_text() == "another job's report"
    data = json.loads((out / "results.json").read_text())
    assert data["environment"]["threads"]["budget"] >= 1 and "commit" in data["environment"]["git"]
    assert {r["label"] for r in data["results"]} == {"seed", *grid.SWEEP_IDS}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "markdown", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main.main(["--presets", "seed", "--dtypes", "float32", "--no-sweep", "--out", str(out), "--budget", "0"])
    assert json.loads((out / "results.json").read_text()) == data  # the previous run is intact
    assert {p.name for p in out.iterdir()} == written
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # and no half-written folder beside it


def test_a_run_without_the_sweep_writes_no_plot_and_drops_the_old_one(fake_timing, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "SWEEP_N", (64,))
    monkeypatch.setattr(grid, "SWEEP_IDS", ("n00064",))
    out = tmp_path / "latest"
    args = ["--presets", "seed", "--dtypes", "float32", "--out", str(out), "--budget", "0", "--no-data-parallel"]
    main.main(args)
    assert (out / "scaling.png").exists() and "scaling.png" in (out / "report.md").read_text()
    main.main([*args, "--no-sweep"])
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md"}
    assert "scaling.png" not in (out / "report.md").read_text()


def test_environment_record_has_what_results_need():
    record = environment.record()
    assert {"machine", "cpu", "cores", "threads", "versions", "git"} <= set(record)
    assert record["threads"]["budget"] >= 1 and record["versions"]["numpy"] == np.__version__
    assert set(record["git"]) == {"commit", "dirty"}


def test_environment_saved_beside_asv_results_names_blas_and_dirty_flag(tmp_path):
    # As make asv-run runs it: a fresh process, which must load every backend itself and
    # so put each pool on the budget (1 thread here, not the CPUs' count every pool starts at).
    command = [sys.executable, "-m", "bench.environment", "--save", str(tmp_path)]
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


def test_asv_results_keep_no_interpreter_path(tmp_path):
    machine = tmp_path / "vm"
    machine.mkdir()
    python = "/home/someone/checkout/.venv/bin/python3.12"
    env_name = "existing-py" + python.replace("/", "_")
    result = {"commit_hash": "0123456789abcdef", "env_name": env_name, "python": python}
    result["params"] = {"machine": "vm", "python": python}
    (machine / f"01234567-{env_name}.json").write_text(json.dumps(result))
    built = {"commit_hash": "0123456789abcdef", "env_name": "virtualenv-py3.11-numpy2.4.6", "python": "3.11"}
    built["params"] = {"python": "3.11"}
    (machine / "01234567-virtualenv-py3.11-numpy2.4.6.json").write_text(json.dumps(built))
    (machine / "machine.json").write_text(json.dumps({"machine": "vm"}))

    assert asv_results.main([str(tmp_path)]) == 0
    names = sorted(p.name for p in machine.iterdir())
    assert names == ["01234567-existing-py3.12.json", "01234567-virtualenv-py3.11-numpy2.4.6.json", "machine.json"]
    for path in machine.iterdir():
        assert "/home/" not in path.read_text()
    renamed = json.loads((machine / "01234567-existing-py3.12.json").read_text())
    assert renamed["python"] == renamed["params"]["python"] == "3.12" and renamed["env_name"] == "existing-py3.12"
    assert json.loads((machine / "01234567-virtualenv-py3.11-numpy2.4.6.json").read_text()) == built


def _asv_result(commit: str, env_name: str, python: str, results: dict) -> dict:
    """A result file as asv writes it, cut down to what bench.asv_results reads and merges."""
    return {
        "commit_hash": commit,
        "env_name": env_name,
        "python": python,
        "params": {"machine": "vm", "python": python},
        "result_columns": ["result", "params"],
        "results": results,
        "durations": {name: 1.0 for name in results},
    }


def test_asv_results_merge_a_second_run_of_one_commit(tmp_path):
    # make asv-run twice on one commit: asv writes a path-named file again beside the renamed first one.
    machine = tmp_path / "vm"
    machine.mkdir()
    python = "/home/someone/checkout/.venv/bin/python3.11"
    env_name = "existing-py" + python.replace("/", "_")
    path_named = machine / f"01234567-{env_name}.json"
    first = {"a.time_x": [[1.0], []], "a.time_y": [[2.0], []]}
    path_named.write_text(json.dumps(_asv_result("0123456789abcdef", env_name, python, first)))
    assert asv_results.main([str(tmp_path)]) == 0
    second = {"a.time_y": [[3.0], []], "a.time_z": [[4.0], []]}  # a rerun of y, and a benchmark new to this run
    path_named.write_text(json.dumps(_asv_result("0123456789abcdef", env_name, python, second)))

    assert asv_results.main([str(tmp_path)]) == 0
    assert [p.name for p in machine.iterdir()] == ["01234567-existing-py3.11.json"]
    merged = json.loads((machine / "01234567-existing-py3.11.json").read_text())
    assert merged["results"] == {"a.time_x": [[1.0], []], "a.time_y": [[3.0], []], "a.time_z": [[4.0], []]}
    assert set(merged["durations"]) == {"a.time_x", "a.time_y", "a.time_z"}
    assert merged["python"] == "3.11" and "/home/" not in json.dumps(merged)


def test_a_busy_machine_is_warned_about_in_every_output(fake_timing, monkeypatch, capsys):
    monkeypatch.setattr(load, "load_average", lambda: load.cores() + 2.0)  # two more runnable processes than cores
    data = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=False, budget_s=0)
    before, after = data["warnings"]
    assert before.startswith("before the run, the machine is busy: load average")
    assert after.startswith("after the run, the machine is busy: load average")
    stderr = capsys.readouterr().err
    assert f"warning: {before}" in stderr and f"warning: {after}" in stderr
    assert f"warning: {before}" in report.console(data)
    assert "## Warnings" in report.markdown(data) and f"- {after}" in report.markdown(data)


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


def test_the_main_job_rechecks_the_cached_peak_and_reports_it(fake_timing, monkeypatch):
    monkeypatch.setattr(
        peak, "quick_gflops", lambda dtype, device="cpu": 200.0
    )  # the cached 100 was measured under load
    data = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=False, budget_s=0)
    (warning,) = data["warnings"]
    assert "cached GEMM peak (float32 on cpu, 100.0 GFLOP/s) is below a quick product" in warning
    assert f"- {warning}" in report.markdown(data)


def test_a_run_whose_speed_changes_is_flagged_by_its_first_cell_timed_again(fake_timing, monkeypatch):
    calls = []

    def slower_later(call, **kwargs):  # steady within each timing (low IQR), three times slower at the end
        calls.append(call.step.name)
        return timing.Timing([100e-6 if len(calls) == 1 else 300e-6] * 5, 1)

    monkeypatch.setattr(timing, "measure", slower_later)
    data = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=False, budget_s=0)
    assert calls == ["numpy", "numpy"] and data["repeat"]["median_s"] == pytest.approx([100e-6, 300e-6])
    (warning,) = data["warnings"]
    assert warning.startswith("the machine's speed changed during the run: numpy seed float32 sgd took 100.0 us/step")
    assert f"warning: {warning}" in report.console(data)


def test_the_quick_product_runs():
    assert peak.quick_gflops("float64") > 0  # the code path only: nothing here depends on how fast


def test_every_bench_module_imports_where_asv_builds_its_environment():
    # asv imports every module of bench/ to discover benchmarks, in environments with the pins
    # of asv.conf.json and without asv itself: a module-level `import asv` breaks `asv run`.
    modules = sorted(p.stem for p in (environment.REPO / "bench").glob("*.py") if p.stem != "__main__")
    code = "import sys; sys.modules['asv'] = None\n" + "".join(f"import bench.{m}\n" for m in modules)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=environment.REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


def test_the_asv_scratch_configuration_points_at_this_checkout_from_its_own_folder(tmp_path):
    # asv changes into the folder of the configuration it is given, so every path in the copy
    # must lead from there back to this checkout's benchmarks, and its results must stay in .asv/.
    from bench import asv_scratch

    target = tmp_path / "scratch" / "smoke.conf.json"
    assert asv_scratch.main([str(environment.REPO / "asv.conf.json"), str(target)]) == 0
    config = json.loads(target.read_text())

    def resolved(key):
        return (target.parent / config[key]).resolve()

    assert resolved("repo") == environment.REPO.resolve()
    assert resolved("benchmark_dir") == (environment.REPO / "bench").resolve()
    assert resolved("results_dir") == (environment.REPO / ".asv" / "smoke" / "results").resolve()
    assert resolved("env_dir") == (environment.REPO / ".asv" / "env").resolve()
    assert not any(os.path.isabs(config[key]) for key in asv_scratch.PATH_KEYS)


def test_the_main_job_runs_data_parallel_entries_at_each_rank_count(fake_timing, tmp_path, monkeypatch):
    if impls.available(["torch:cpu:ddp"])["torch:cpu:ddp"] is not None:
        pytest.skip("torch:cpu:ddp cannot run here")
    monkeypatch.setattr(grid, "SWEEP_N", (64, 128))  # a short sweep: its agreement checks are real
    monkeypatch.setattr(grid, "SWEEP_IDS", tuple(grid.sweep_id(n) for n in grid.SWEEP_N))
    monkeypatch.setattr(ddp, "WEAK_ROWS_PER_RANK", (16,))
    monkeypatch.setenv(threads.ENV, "2")
    data = main.run(["numpy", "torch:cpu:ddp"], ("seed",), ("float32",), ("sgd",), sweep=True, budget_s=0)
    figures = data["data_parallel"]
    assert figures["ranks"] == [1, 2] and figures["implementations"] == ["torch:cpu:ddp"]
    cells = {(c["label"], c["ranks"]): c for c in figures["cells"]}
    assert set(cells) == {(label, w) for label in ("seed", "n00064", "n00128", "weak-16") for w in (1, 2)}
    assert all(c["status"] == "ok" and c["agreement_worst_ratio"] <= 1 for c in cells.values())
    assert cells["weak-16", 2]["problem"]["n"] == 32 and cells["seed", 2]["ratio"] == pytest.approx(0.5)
    text = report.console(data)
    assert "torch:cpu:ddp, float32: time over numpy's (alternated)" in text
    seed_row = next(line for line in text.splitlines() if line.startswith("seed "))
    assert "1.00x" in seed_row and "0.50x" in seed_row and "25%" in seed_row
    out = tmp_path / "latest"
    main.write(data, out)
    assert (out / "ddp_scaling.png").stat().st_size > 0
    md = (out / "report.md").read_text()
    assert "## Data-parallel entries at each rank count" in md and "](ddp_scaling.png)" in md
    data_no_ddp = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=True, budget_s=0)
    assert data_no_ddp["data_parallel"] is None
    main.write(data_no_ddp, out)
    assert not (out / "ddp_scaling.png").exists()  # no stale plot beside results it does not show
    monkeypatch.delenv(threads.ENV)
