"""The main job's paired measurement (bench.job.measure), driven by scripted block times on a scripted clock.

A Script stands in for the round's worker process: it answers set-up with a status per cell and each
block with the seconds per call a function of (implementation, round, group) says, moving the clock
by what the block would have taken. Nothing here reads a real clock, except the one test that starts
the real worker process to see how its thread pools are told to wait.
"""

import math

import pytest

import impls
from bench.gate.worker import GEMM
from bench.harness import grid, load
from bench.job import main, measure, report, tables

from .conftest import FakeClock

TWIN_SPEEDUP = 2.0  # numpy's time over "fast"'s in these tests


def problem(preset="seed", dtype="float32"):
    return grid.preset_problem(preset, dtype, "sgd")


def cells_for(names, presets=("seed",)):
    return [measure.Cell(n, problem(p), p, "preset") for p in presets for n in names]


class Script:
    """The worker of each round: per_call(name, round, group) -> seconds per call of that block.

    Logs what each round set up (ids), every group's blocks as requested, and the pause asked before them.
    """

    def __init__(self, per_call, clock, call_s=None, status=None, start_s=1.0):
        self.per_call, self.clock = per_call, clock
        self.call_s = call_s or {}
        self.status = status or {}  # name -> status at set-up
        self.start_s = start_s  # what starting a process costs on the clock
        self.opened, self.set_up, self.requests, self.settles, self.warm_ups = [], [], [], [], []
        self.payloads = []  # per round: what set-up was given

    def __call__(self, seed, threads, cpus):
        self.clock.now += self.start_s
        self.opened.append((threads, None if cpus is None else tuple(cpus)))
        self.groups = 0
        return self

    def setup(self, payloads, check, warm_up_s=None):
        self.set_up.append(([p["id"] for p in payloads], check))
        self.payloads.append(payloads)
        self.warm_ups.append(warm_up_s)
        out = []
        for p in payloads:
            status = self.status.get(p["name"], "ok")
            got = {"status": status, "call_s": self.call_s.get(p["name"], 1e-4), "create_s": 0.5}
            if check and p["name"] != GEMM:
                got |= {"check_s": 0.25, "worst_ratio": 0.1}
            if status != "ok":
                got["reason"] = f"scripted {status}"
            if p["name"] == GEMM:
                got["flops"] = 2 * p["n"] ** 3
            out.append(got)
        return out

    def group(self, blocks, settle_s):
        self.requests.append((len(self.opened) - 1, blocks))
        self.settles.append(settle_s)
        self.groups += 1
        out = []
        for cell_id, number, _warm in blocks:
            seconds = self.per_call(cell_id.split("|")[0], len(self.opened) - 1, self.groups)
            self.clock.now += settle_s + seconds * number
            out.append(seconds)
        return out

    def finish(self):
        return []

    def close(self):
        pass


def steady(ratio_by_name, wobble=0.002):
    """numpy 100 us per call; each name `ratio` times faster; the GEMM 1 ms; every group a little uneven."""

    def per_call(name, r, g):
        base = 1e-3 if name == GEMM else 100e-6 / ratio_by_name.get(name, 1.0)
        return base * (1 + wobble * ((3 * g + 5 * r + len(name)) % 5 - 2))

    return per_call


def test_the_speed_up_is_numpys_time_over_the_steps_in_the_same_group_and_drift_cancels():
    clock = FakeClock()

    def drifting(name, r, g):  # the machine runs 1x, 3x, 1x, 3x ... as slow from one group to the next
        return steady({"fast": TWIN_SPEEDUP})(name, r, g) * (3 if g % 2 else 1)

    script = Script(drifting, clock)
    cells = cells_for(["numpy", "fast"])
    groups = measure.build_groups(cells)
    settings = measure.Settings()
    measure.run(groups, settings, script, clock=clock)
    numpy_cell, fast = cells
    f = measure.figures(fast, settings, gemm_flops=2 * 1024**3)
    assert f.speedup == pytest.approx(TWIN_SPEEDUP, rel=0.01)
    assert f.speedup_low < f.speedup < f.speedup_high and f.speedup_high / f.speedup_low < 1.02
    # The GEMM fraction: the step's FLOPs at its time over the product's at the product's time, same groups.
    expected = (impls.flops(fast.problem) / 50e-6) / (2 * 1024**3 / 1e-3)
    assert f.gemm_fraction == pytest.approx(expected, rel=0.01)
    assert f.rounds == settings.rounds and f.groups == settings.rounds * settings.passes
    assert fast.stopped == "decided" and measure.narrow(fast, settings)
    assert measure.figures(numpy_cell, settings, 1.0).speedup == 1.0  # the reference, by definition
    # Every group holds each step once, numpy's and the GEMM block, in an order that changes.
    orders = {tuple(b[0].split("|")[0] for b in blocks) for _, blocks in script.requests}
    assert all(sorted(o) == sorted(["numpy", "fast", GEMM]) for o in orders) and len(orders) > 1
    assert set(script.settles) == {measure.SETTLE_S}


def test_blocks_are_sized_once_in_the_first_round_and_checked_only_there():
    clock = FakeClock()
    script = Script(steady({"fast": 2.0}), clock, call_s={"numpy": 1e-4, "fast": 3e-3, GEMM: 0.02})
    cells = cells_for(["numpy", "fast"])
    measure.run(measure.build_groups(cells), measure.Settings(), script, clock=clock)
    numbers = {b[0].split("|")[0]: (b[1], b[2]) for _, blocks in script.requests for b in blocks}
    # numpy: 10 ms / 0.1 ms = 100 calls, warmed first; fast: 4 calls; the GEMM: one call, a block by itself, cold.
    assert numbers == {"numpy": (100, True), "fast": (4, True), GEMM: (1, False)}
    assert [check for _, check in script.set_up] == [True, False, False]
    assert script.warm_ups == [None, 0.0, 0.0]  # the worker's 0.1 s in the first round, three calls later
    assert cells[1].create_s == 0.5 and cells[1].check_s == 0.25  # the first round's set-up, kept


def test_a_wide_cell_gets_more_rounds_alone_until_the_round_limit_then_is_undecided():
    clock = FakeClock()
    ratios = {"steady": 2.0}

    def per_call(name, r, g):
        if name == "wobbly":  # its speed-up swings between rounds: 1.5x, then 2.5x
            return 100e-6 / (1.5 if r % 2 else 2.5) * (1 + 0.002 * (g % 3))
        return steady(ratios)(name, r, g)

    script = Script(per_call, clock)
    cells = cells_for(["numpy", "steady", "wobbly"], presets=("seed", "tutorial"))
    settings = measure.Settings(max_rounds=7)
    measure.run(measure.build_groups(cells), settings, script, clock=clock)
    by = {(c.name, c.label): c for c in cells}
    assert by["steady", "seed"].stopped == "decided" and len(by["steady", "seed"].times) == settings.rounds
    wobbly = by["wobbly", "seed"]
    assert wobbly.stopped == "round limit" and len(wobbly.times) == settings.max_rounds
    assert not measure.narrow(wobbly, settings)
    # The extra rounds set up only the wide cells, with their problems' reference and GEMM blocks.
    for ids, _check in script.set_up[settings.rounds :]:
        assert {i.split("|")[0] for i in ids} == {"numpy", "wobbly", GEMM}
    f = measure.figures(wobbly, settings, 1.0)
    assert f.speedup_low < 1.6 and f.speedup_high > 2.4  # its interval spans both speeds, honestly wide


def test_no_round_starts_that_would_pass_the_time_budget():
    clock = FakeClock()

    def per_call(name, r, g):  # wide: the speed-up swings between rounds
        return 100e-6 / (1.5 if r % 2 else 2.5) if name == "wobbly" else steady({})(name, r, g)

    script = Script(per_call, clock, call_s={GEMM: 1e-3}, start_s=10.0)
    cells = cells_for(["numpy", "wobbly"])
    # Each round: 10 s to start, about 0.3 s of blocks; the budget allows the first three and two more.
    settings = measure.Settings(max_time_s=55.0)
    measure.run(measure.build_groups(cells), settings, script, clock=clock)
    wobbly = cells[1]
    assert len(wobbly.times) == 5 and wobbly.stopped == "time budget spent" and clock.now <= 55.0


def test_a_step_that_disagrees_is_never_timed_and_the_hidden_reference_still_is():
    clock = FakeClock()
    script = Script(steady({"fast": 2.0}), clock, status={"wrong": "disagrees"})
    cells = cells_for(["fast", "wrong"])  # numpy not selected: its blocks run all the same, hidden
    groups = measure.build_groups(cells)
    measure.run(groups, measure.Settings(), script, clock=clock)
    timed = {b[0].split("|")[0] for _, blocks in script.requests for b in blocks}
    assert timed == {"numpy", "fast", GEMM}
    assert cells[1].status == "disagrees" and not any(cells[1].times)
    assert not groups[0].reference.shown
    assert measure.figures(cells[0], measure.Settings(), 1.0).speedup == pytest.approx(2.0, rel=0.01)


def test_undecided_speed_ups_are_printed_with_their_interval_and_marked():
    ok = {
        "status": "ok",
        "median_s": 1e-4,
        "gflops": 1.0,
        "iqr_ratio": 0.01,
        "gemm_fraction": 0.1,
        "setup_s": 0.1,
    }
    data = {
        "settings": {"presets": ["seed"], "sweep": [], "reference": "numpy", "noisy_iqr_ratio": 0.1},
        "measurement": dataclass_record(),
        "results": [
            dict(ok, implementation="numpy", speedup=1.0, speedup_low=1.0, speedup_high=1.0, undecided=False),
            dict(ok, implementation="sure", speedup=1.5, speedup_low=1.47, speedup_high=1.53, undecided=False),
            dict(ok, implementation="unsure", speedup=1.2, speedup_low=0.96, speedup_high=1.44, undecided=True),
        ],
    }
    for r in data["results"]:
        r |= {"kind": "preset", "label": "seed", "problem": {"dtype": "float32", "optimizer": "sgd"}}
    (table,) = tables.tables(data, "preset")
    text = "\n".join(tables.console(table, "numpy"))
    rows = {line.split()[0]: line for line in text.splitlines()[4:]}
    assert rows["sure"].split()[4] == "1.50x±2%" and "*" in rows["sure"]  # the highest speed-up, decided
    assert rows["unsure"].split()[4] == "1.20x±20%?"  # the wider side of its interval, and the mark
    md = "\n".join(tables.markdown(table, "## float32, sgd"))
    assert "1.20x (0.96-1.44) undecided" in md and "1.50x (1.47-1.53) ·" in md
    assert "? undecided" in report._legend(data)


def dataclass_record():
    import dataclasses

    return dataclasses.asdict(measure.Settings(threads=2, why_threads="the machine is quiet"))


def test_beside_other_work_the_run_uses_the_free_cpus_pinned_and_says_so(quiet_machine, monkeypatch):
    monkeypatch.setattr(load, "probe", lambda window_s=1.0: (1.0, {0: 0.98, 1: 0.03}))  # a core held on CPU 0
    monkeypatch.setattr(main.rounds.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(main.threads, "budget", lambda: 2)
    clock = FakeClock()
    script = Script(steady({"numba": 1.5}), clock)
    data = main.run(
        ["numpy", "numba"], ("seed",), ("float32",), ("sgd",), sweep=False, data_parallel=False, open_worker=script
    )
    assert set(script.opened) == {(1, (1,))}  # every round: one thread, on the free CPU
    # numba's one-thread speed-up is measured and narrow, but it is not the budget's: undecided, and why.
    numpy_row, numba_row = data["results"]
    assert numba_row["speedup"] == pytest.approx(1.5, rel=0.01) and numba_row["speedup_high"] < 1.5 * 1.05
    assert numba_row["undecided"] and numba_row["undecided_why"] == (
        "measured on 1 thread(s), not the budget's 2: other work held the rest"
    )
    assert not numpy_row["undecided"]  # the reference: 1 by definition
    assert any("1 were measured on 1 thread(s), not the budget's 2" in w for w in data["warnings"])
    assert "1.50x (1.50-1.50) undecided" in report.markdown(data)  # narrow, yet not the budget's
    assert "or measured on 1 thread(s), not the budget's 2" in report.console(data)
    m = data["measurement"]
    assert m["threads"] == 1 and m["cpus"] == [1] and m["other_work_before"] == 1.0
    assert any("other work holds 1.0 cores" in w and "1 thread(s), not the budget's 2" in w for w in data["warnings"])
    assert "1 thread(s), pinned to CPUs 1: other work holds 1.0 cores" in report.console(data)
    assert "pinned to CPUs 1" in report.markdown(data)


def test_on_a_quiet_machine_the_run_uses_the_thread_budget(quiet_machine, monkeypatch):
    monkeypatch.setattr(main.threads, "budget", lambda: 2)
    clock = FakeClock()
    script = Script(steady({}), clock)
    data = main.run(
        ["numpy", "numba"], ("seed",), ("float32",), ("sgd",), sweep=False, data_parallel=False, open_worker=script
    )
    assert set(script.opened) == {(2, None)} and data["measurement"]["why_threads"] == "the machine is quiet"
    assert [r["undecided"] for r in data["results"]] == [False, False]  # the budget's, and narrow


def test_the_main_jobs_worker_process_bounds_every_pools_spinning():
    """The real worker process: the pools' wait settings it runs with, as its own environment reports them."""
    worker = measure.ProcessWorker(seed=0, threads=1, cpus=None)
    try:
        waits = worker.environment()["waits"]
    finally:
        worker.close()
    assert waits["OPENBLAS_THREAD_TIMEOUT"] == measure.SHORT_WAITS["OPENBLAS_THREAD_TIMEOUT"]
    assert waits["GOMP_SPINCOUNT"] == measure.SHORT_WAITS["GOMP_SPINCOUNT"]  # torch's pool and numba's omp layer
    assert waits["OMP_WAIT_POLICY"] is None  # not PASSIVE: a step that woke its threads for every product would crawl
    # OpenBLAS spins 2^n cycles of the time-stamp counter: at 1.5 GHz or more, over before the next block's pause is.
    assert 2 ** int(waits["OPENBLAS_THREAD_TIMEOUT"]) / 1.5e9 < measure.SETTLE_S


def test_the_pause_before_each_block_happens_in_the_worker(monkeypatch):
    from bench.gate import worker as gate_worker

    log = []
    w = gate_worker.Worker(impls, seed=0)
    monkeypatch.setattr(w, "time", lambda cell_id, number, warm: log.append(("block", cell_id)) or 1.0)
    monkeypatch.setattr(gate_worker.time, "sleep", lambda s: log.append(("pause", s)))
    assert w.group([["a", 1, True], ["b", 2, False]], settle_s=0.003) == [1.0, 1.0]
    assert log == [("pause", 0.003), ("block", "a"), ("pause", 0.003), ("block", "b")]


def test_rounds_and_max_time_are_checked_on_the_command_line(capsys):
    for argv in (["--rounds", "0"], ["--max-time", "-1"], ["--rounds", "x"]):
        with pytest.raises(SystemExit) as stopped:
            main.parser().parse_args(argv)
        assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "must be a whole number, 1 or more; got '0'" in err and "got '-1'" in err
    assert math.isclose(main.parser().parse_args([]).max_time, measure.Settings.max_time_s)


def test_later_rounds_create_the_step_that_was_checked():
    """A step whose create chose a plan (numba:blas, by timing trials) is created with that plan in later rounds."""
    clock = FakeClock()
    script = Script(steady({"planned": 2.0}), clock)
    plan = {"plan": "l1=blas,l2=loops"}
    real_setup = script.setup

    def setup(payloads, check, warm_up_s=None):
        out = real_setup(payloads, check, warm_up_s)
        for p, got in zip(payloads, out, strict=True):
            if p["name"] == "planned" and check:
                got["create_options"] = plan
        return out

    script.setup = setup
    cells = cells_for(["numpy", "planned"])
    measure.run(measure.build_groups(cells), measure.Settings(), script, clock=clock)
    given = [{p["name"]: p.get("options") for p in payloads} for payloads in script.payloads]
    assert given[0]["planned"] is None  # the first round: its create chooses, and is checked
    assert all(g["planned"] == plan for g in given[1:]) and len(given) == measure.Settings.rounds
    assert all(g["numpy"] is None for g in given)  # numpy chose nothing


def test_results_json_names_a_cache_under_home_as_tilde(monkeypatch, tmp_path):
    """results.json is committed: the home folder of the machine that wrote it is nobody else's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main._home_relative(tmp_path / ".cache" / "stepbench") == "~/.cache/stepbench"
    assert main._home_relative(tmp_path.parent / "elsewhere") == str(tmp_path.parent / "elsewhere")
