"""The main job (`make bench`): what it times, what it writes, what it warns of, and its reports.

Nothing here is timed: bench.harness.timing.measure and alternate are replaced by fixed samples
(conftest.fake_timing), the GEMM peak and the load average by constants.
"""

import json
import re

import pytest

import impls
import impls.timing
from bench.ddp import scaling as ddp
from bench.harness import grid, load, peak
from bench.job import main, measure, report
from impls import threads

from .conftest import GHOST, PEAKS, SHORT, TWIN, WRONG, ScriptedTimesWorker, short_settings


def test_main_job_covers_new_entries_and_times_only_what_agrees(new_entries, fake_timing):
    data = main.run(impls.names(), ("seed",), ("float32", "float64"), ("sgd",), sweep=False, settings=short_settings())
    status = {(r["implementation"], r["problem"]["dtype"]): r["status"] for r in data["results"]}
    assert status[TWIN, "float32"] == status["numpy", "float64"] == "ok"
    assert status[GHOST, "float32"] == "skipped" and status[WRONG, "float64"] == "disagrees"
    assert WRONG not in fake_timing and GHOST not in fake_timing  # neither was timed
    text = report.console(data)
    assert f"skipped {GHOST}: {GHOST} unavailable: no_such_package_for_stepbench not installed" in text
    assert f"DISAGREES: {WRONG} at seed float64" in text
    twin_f32, twin_f64 = (line for line in text.splitlines() if line.startswith(TWIN))
    numpy_f32, numpy_f64 = (line for line in text.splitlines() if line.startswith("numpy "))
    # The twin takes half numpy's time: marked fastest, 2x; float64 is flagged noisy, float32 not. The
    # marks follow the time they mark; after the speed-up: the setup seconds (create and the check's calls).
    assert re.search(r" 50\.0\*  .* 2\.00x +\d+\.\d\d$", twin_f32) and re.search(
        r" 50\.0\*! .* 2\.00x +\d+\.\d\d$", twin_f64
    )
    assert re.search(r" 100\.0   .* 1\.00x +\d+\.\d\d$", numpy_f32) and re.search(
        r" 100\.0 ! .* 1\.00x +\d+\.\d\d$", numpy_f64
    )
    noisy = sum(r["status"] == "ok" and r["problem"]["dtype"] == "float64" for r in data["results"])
    assert noisy >= 2 and f"warning: {noisy} of the timings are noisy" in text  # every timed float64 cell
    for ok in (r for r in data["results"] if r["implementation"] == TWIN and r["status"] == "ok"):
        assert ok["gflops"] == pytest.approx(impls.flops(impls.Problem.preset("seed")) / 50e-6 / 1e9)
        assert ok["peak_fraction"] == pytest.approx(ok["gflops"] / PEAKS[ok["problem"]["dtype"]])  # its dtype's peak
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
    # numpy alone: what is written, and when, does not depend on the entries (every entry's checks took 20 s).
    args = ["--implementations", "numpy", "--presets", "seed", "--dtypes", "float32", "--out", str(out), *SHORT]
    main.main([*args, "--no-data-parallel"])
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
        main.main([*args, "--no-sweep"])
    assert json.loads((out / "results.json").read_text()) == data  # the previous run is intact
    assert {p.name for p in out.iterdir()} == written
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]  # and no half-written folder beside it


def test_a_run_without_the_sweep_writes_no_plot_and_drops_the_old_one(fake_timing, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "SWEEP_N", (64,))
    monkeypatch.setattr(grid, "SWEEP_IDS", ("n00064",))
    out = tmp_path / "latest"
    args = ["--implementations", "numpy", "--presets", "seed", "--dtypes", "float32", "--out", str(out), *SHORT]
    args += ["--no-data-parallel"]
    main.main(args)
    assert (out / "scaling.png").exists() and "scaling.png" in (out / "report.md").read_text()
    main.main([*args, "--no-sweep"])
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md"}
    assert "scaling.png" not in (out / "report.md").read_text()


def test_a_busy_machine_is_warned_about_in_every_output(fake_timing, monkeypatch, capsys):
    monkeypatch.setattr(load, "load_average", lambda: load.cores() + 2.0)  # two more runnable processes than cores
    data = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=False, settings=short_settings())
    before, after = data["warnings"]
    assert before.startswith("before the run, the machine is busy: load average")
    assert after.startswith("after the run, the machine is busy: load average")
    stderr = capsys.readouterr().err
    assert f"warning: {before}" in stderr and f"warning: {after}" in stderr
    assert f"warning: {before}" in report.console(data)
    assert "## Warnings" in report.markdown(data) and f"- {after}" in report.markdown(data)


def test_the_main_job_rechecks_the_cached_peak_and_reports_it(fake_timing, monkeypatch):
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": 300.0)  # the cached 200 was under load
    data = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=False, settings=short_settings())
    (warning,) = data["warnings"]
    assert "cached GEMM peak (float32 on cpu, 200.0 GFLOP/s) is below a quick product just now (300.0" in warning
    assert warning.endswith("measured again: 300.0 GFLOP/s, cached in its place")
    assert data["gemm_peak_gflops"] == {"cpu": {"float32": 300.0}}  # the timings are judged against the new one
    assert f"- {warning}" in report.markdown(data)


def test_a_run_whose_speed_changes_is_flagged_by_numpys_blocks_round_by_round(new_entries, fake_timing, monkeypatch):
    opened = []

    class SlowerLater(ScriptedTimesWorker):  # steady within each round, three times slower in the second
        def __call__(self, seed, threads, cpus):
            opened.append(seed)
            return super().__call__(seed, threads, cpus)

        @staticmethod
        def per_call(step, group):
            return ScriptedTimesWorker.per_call(step, group) * (3 if len(opened) == 2 else 1)

    monkeypatch.setattr(measure, "ProcessWorker", SlowerLater([]))
    data = main.run(["numpy", TWIN], ("seed",), ("float32",), ("sgd",), sweep=False, settings=short_settings())
    (warning,) = data["warnings"]
    assert warning.startswith(
        "the machine's speed changed during the run: numpy seed float32 sgd took 100.0 us/step in its fastest round "
        "and 300.0 in its slowest"
    )
    assert f"warning: {warning}" in report.console(data)
    twin = next(r for r in data["results"] if r["implementation"] == TWIN)
    assert twin["speedup"] == pytest.approx(2.0) and not twin["undecided"]  # paired: the drift cancels


def test_the_main_job_runs_data_parallel_entries_at_each_rank_count(fake_timing, tmp_path, monkeypatch):
    if impls.available(["torch:cpu:ddp"])["torch:cpu:ddp"] is not None:
        pytest.skip("torch:cpu:ddp cannot run here")
    monkeypatch.setattr(grid, "SWEEP_N", (64, 128))  # a short sweep: its agreement checks are real
    monkeypatch.setattr(grid, "SWEEP_IDS", tuple(grid.sweep_id(n) for n in grid.SWEEP_N))
    monkeypatch.setattr(ddp, "WEAK_ROWS_PER_RANK", (16,))
    monkeypatch.setenv(threads.ENV, "2")
    data = main.run(
        ["numpy", "torch:cpu:ddp"], ("seed",), ("float32",), ("sgd",), sweep=True, settings=short_settings()
    )
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
    data_no_ddp = main.run(["numpy"], ("seed",), ("float32",), ("sgd",), sweep=True, settings=short_settings())
    assert data_no_ddp["data_parallel"] is None
    main.write(data_no_ddp, out)
    assert not (out / "ddp_scaling.png").exists()  # no stale plot beside results it does not show
    monkeypatch.delenv(threads.ENV)


def test_the_sweep_heading_names_the_sweeps_optimizer_when_the_presets_ran_adam(fake_timing, monkeypatch):
    # The sweep always runs SGD (grid.SWEEP_OPTIMIZER); with Adam presets its heading once named Adam.
    monkeypatch.setattr(grid, "SWEEP_N", (64,))
    monkeypatch.setattr(grid, "SWEEP_IDS", ("n00064",))
    data = main.run(["numpy"], ["seed"], ["float32"], ["adam"], True, short_settings(), data_parallel=False)
    text, md = report.console(data), report.markdown(data)
    assert "float32, adam: median us/step" in text
    assert "batch sweep, float32, sgd (D=" in text and "batch sweep, float32, adam" not in text
    assert "## float32, adam" in md and "## Batch sweep (D=1000, H=100, O=10, SGD)" in md


def test_the_console_and_markdown_tables_show_the_same_cells(new_entries, fake_timing):
    """One model, two renderings: every timed cell's time, speed-up and marks appear in both."""
    data = main.run(
        ["numpy", TWIN], ["seed"], ["float32", "float64"], ["sgd"], False, short_settings(), data_parallel=False
    )
    text, md = report.console(data), report.markdown(data)
    for dtype, twin_mark in (("float32", "* "), ("float64", "*!")):
        row = next(line for line in text.split(f"{dtype}, sgd:")[1].splitlines() if line.startswith(TWIN))
        assert f" 50.0{twin_mark}" in row and " 2.00x " in row
        md_row = next(line for line in md.split(f"## {dtype}, sgd")[1].splitlines() if line.startswith(f"| `{TWIN}`"))
        noisy = " (!)" if dtype == "float64" else ""
        assert f"**50.0 us**{noisy}<br>" in md_row and " · 2.00x · " in md_row


def test_the_sweep_runs_only_the_sizes_asked_for(fake_timing, tmp_path):
    out = tmp_path / "latest"
    main.main(
        ["--presets", "seed", "--dtypes", "float32", "--out", str(out), *SHORT, "--no-data-parallel"]
        + ["--implementations", "numpy", "--sweep-sizes", "n00064"]
    )
    data = json.loads((out / "results.json").read_text())
    assert {r["label"] for r in data["results"]} == {"seed", "n00064"} and data["settings"]["sweep"] == ["n00064"]


def test_the_plan_table_shows_each_products_provider_and_trials():
    # numba:blas's describe() of a step whose h went to a JIT kernel by trial, and of a given plan whose
    # "jit" product ran MKL's standard gemm (MKL generated no code for it).
    plan = {"h": "jit", "y_pred": "blas", "gw2": "loops", "ga": "blas", "gw1": "blas", "layout": "feature-major"}
    measured = {
        "plan": plan,
        "plan_chosen": "measured at create",
        "trials": {"gw2": 0.9, "h:jit": 0.81, "y_pred:jit": 1.02},
        "threads": {"h": 1, "y_pred": 1, "gw2": 1, "ga": 1, "gw1": 2},
        "jit": {"mkl": "oneMKL", "kernels": {"h": "mkl-jit"}},
    }
    given = measured | {"plan_chosen": "given", "trials": {}, "jit": {"mkl": "oneMKL", "kernels": {"h": "mkl-gemm"}}}
    problem = {"dtype": "float32", "optimizer": "sgd"}
    rows = [
        {"status": "ok", "implementation": "numba:blas", "label": "seed", "problem": problem, "details": d}
        for d in (measured, given)
    ]
    lines = report._plan_lines({"results": rows})
    assert lines[-2] == (
        "| `numba:blas` | seed float32 sgd | jit (1) [jit 0.81] | blas (1) [jit 1.02] | loops (1) [0.90] | blas (1) "
        "| blas (2) | feature-major | measured at create |"
    )
    assert lines[-1].startswith("| `numba:blas` | seed float32 sgd | jit: MKL's gemm, no JIT kernel (1) | blas (1) |")
