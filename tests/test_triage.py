"""The triage of asv's alerts (bench.triage): which alerts, which cell re-measures each, the three-way bisection
driven by scripted verdicts, the gate run it asks for, and the record.

The verdicts here are scripted: a history of commits in which the step gets slower at one of
them (or never), and a measure that answers as the gate would on a quiet machine, or undecided
where told to. What a real gate run decides is the gate's tests' business (test_gate_*).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench.gate import rounds
from bench.harness import environment
from bench.triage import alerts as triage_alerts
from bench.triage import bisection, record, remeasure
from bench.triage.alerts import Alert
from bench.triage.bisection import Measured
from tests.test_gate_scripted import ScriptedWorkers, install, ratio_script

PRESET = "training_step.Presets.time_step('numpy', 'seed', 'float32', 'sgd')"
PARAMS = {"implementation": "numpy", "preset": "seed", "dtype": "float32", "optimizer": "sgd"}


def history(n: int) -> list[str]:
    """n commits, oldest first: c00..., c01..., as 40-character names."""
    return [f"c{i:02d}".ljust(40, "0") for i in range(n)]


def alert(commits, benchmark=PRESET, params=PARAMS, machine="m") -> Alert:
    return Alert(machine, benchmark, dict(params), commits[0], commits[-1], 1.0, 1.3)


class ScriptedHistory:
    """The gate's verdicts over a history whose step is 10% slower from commit `slow_from` on (None: never).

    undecided: commits whose comparison with any other is unsure. Every call is logged as (base, head, cell ids).
    """

    def __init__(self, commits, slow_from, undecided=()):
        self.commits, self.slow_from, self.undecided = commits, slow_from, set(undecided)
        self.calls = []

    def slow(self, commit) -> bool:
        return self.slow_from is not None and self.commits.index(commit) >= self.slow_from

    def __call__(self, base, head, cells):
        self.calls.append((base, head, [c.id for c in cells]))
        if head in self.undecided:
            return {c.id: Measured(base, head, "unsure", 1.06, 0.98, 1.15, 16, "straddles") for c in cells}
        ratio = 1.10 if self.slow(head) and not self.slow(base) else 1.0
        verdict = "slower" if ratio > 1.05 else "same"
        return {c.id: Measured(base, head, verdict, ratio, ratio * 0.98, ratio * 1.02, 4) for c in cells}

    def between(self, before, after):
        return self.commits[self.commits.index(before) + 1 : self.commits.index(after) + 1]


@pytest.mark.parametrize("k", range(1, 16))
def test_the_bisection_names_the_first_slower_commit_within_log2_plus_one_gate_runs(k):
    commits = history(16)
    gate = ScriptedHistory(commits, slow_from=k)
    (entry,) = bisection.triage([alert(commits)], gate, gate.between)
    assert entry.outcome == bisection.CONFIRMED
    assert entry.bisection == bisection.FOUND and entry.culprit == commits[k]
    assert entry.gate_runs == len(gate.calls) <= 1 + math.ceil(math.log2(15))
    assert all(base == commits[0] for base, _, _ in gate.calls)  # every midpoint against the commit before the step


def test_an_alert_the_gate_finds_same_is_refuted_and_not_bisected():
    commits = history(16)
    gate = ScriptedHistory(commits, slow_from=None)
    (entry,) = bisection.triage([alert(commits)], gate, gate.between)
    assert entry.outcome == bisection.REFUTED and entry.culprit is None and entry.bisection == bisection.NOT_BISECTED
    assert gate.calls == [(commits[0], commits[-1], ["numpy-seed-float32-sgd"])]


def test_an_undecided_midpoint_stops_the_bisection_at_the_range_it_had_narrowed_to_and_names_no_culprit():
    commits = history(16)
    gate = ScriptedHistory(commits, slow_from=11, undecided={commits[11]})
    (entry,) = bisection.triage([alert(commits)], gate, gate.between)
    assert entry.outcome == bisection.CONFIRMED and entry.bisection == bisection.NARROWED
    assert entry.culprit is None
    low, high = entry.narrowed_to  # the culprit is inside: never a wrong name
    assert commits.index(low) < 11 <= commits.index(high)
    assert "unsure" in entry.why and commits[11][:8] in entry.why


def test_an_undecided_confirmation_is_undecided_and_not_bisected():
    commits = history(4)
    gate = ScriptedHistory(commits, slow_from=2, undecided={commits[-1]})
    (entry,) = bisection.triage([alert(commits)], gate, gate.between)
    assert entry.outcome == bisection.UNDECIDED and entry.bisection == bisection.NOT_BISECTED
    assert len(gate.calls) == 1


def test_a_one_commit_range_is_its_own_culprit_without_a_bisection_run():
    commits = history(2)
    gate = ScriptedHistory(commits, slow_from=1)
    (entry,) = bisection.triage([alert(commits)], gate, gate.between)
    assert entry.culprit == commits[1] and entry.gate_runs == 1


def test_alerts_between_the_same_commits_share_each_gate_run_and_a_cell_is_measured_once_per_run():
    commits = history(9)
    gate = ScriptedHistory(commits, slow_from=5)
    tutorial = {**PARAMS, "preset": "tutorial"}
    twins = [
        alert(commits, machine="a"),
        alert(commits, machine="b"),  # the same cell on another machine's history
        alert(commits, PRESET.replace("seed", "tutorial"), tutorial),
    ]
    entries = bisection.triage(twins, gate, gate.between)
    assert [e.culprit for e in entries] == [commits[5]] * 3
    assert len(gate.calls) == 1 + 3  # confirmation, then 8 commits in 3 halvings, all three together
    assert all(sorted(ids) == ["numpy-seed-float32-sgd", "numpy-tutorial-float32-sgd"] for _, _, ids in gate.calls)


def test_an_alert_on_what_the_gate_cannot_time_is_not_re_measured_and_says_why():
    commits = history(3)
    gate = ScriptedHistory(commits, slow_from=1)
    peakmem = alert(commits, PRESET.replace("time_step", "peakmem_step"))
    (entry,) = bisection.triage([peakmem], gate, gate.between)
    assert entry.outcome == bisection.NOT_MEASURED and "peakmem_step" in entry.why
    assert gate.calls == []


def test_a_cell_the_gate_skips_is_not_re_measured_with_the_gates_reason():
    commits = history(3)

    def skipping(base, head, cells):
        return {c.id: Measured(base, head, "skipped", why="torch:cuda unavailable: no GPU") for c in cells}

    (entry,) = bisection.triage([alert(commits)], skipping, lambda a, b: commits[1:])
    assert entry.outcome == bisection.NOT_MEASURED and "no GPU" in entry.why


def test_the_record_is_handed_over_after_every_gate_run():
    commits = history(16)
    gate = ScriptedHistory(commits, slow_from=6)
    seen = []
    bisection.triage([alert(commits)], gate, gate.between, done=lambda entries: seen.append(entries[0].gate_runs))
    assert seen[: len(gate.calls)] == list(range(1, len(gate.calls) + 1))


# --- which cell re-measures an alert --------------------------------------------------------------


def test_each_step_timing_benchmark_maps_to_the_gate_cell_that_times_the_same_call():
    step, _ = alert(history(2)).cell()
    assert (step.id, step.call, step.problem.n, step.problem.dtype) == ("numpy-seed-float32-sgd", "step", 64, "float32")
    lag, _ = alert(history(2), PRESET.replace("time_step", "time_loss_and_grads")).cell()
    assert (lag.id, lag.call) == ("numpy-seed-float32-sgd:loss_and_grads", "loss_and_grads")
    sweep_params = {"implementation": "torch:cpu", "batch": "n01024", "dtype": "float64"}
    sweep, _ = alert(
        history(2), "training_step.BatchSweep.time_step('torch:cpu', 'n01024', 'float64')", sweep_params
    ).cell()
    assert (sweep.id, sweep.problem.n, sweep.problem.optimizer) == ("torch:cpu-n01024-float64", 1024, "sgd")
    ratio, why = alert(history(2), PRESET.replace("time_step", "track_time_vs_numpy")).cell()
    assert ratio is None and "track_time_vs_numpy" in why


def test_the_gate_worker_times_loss_and_grads_without_updating_the_weights():
    import impls
    from bench.gate import worker

    w = worker.Worker(impls, seed=0)
    problem = {"n": 8, "d": 6, "h": 5, "o": 3, "dtype": "float64", "optimizer": "sgd", "lr": 1e-2, "init": "torch"}
    cells = [
        {"id": "s", "name": "numpy", "problem": problem},
        {"id": "g", "name": "numpy", "problem": problem, "call": "loss_and_grads"},
    ]
    prepared = w.setup(cells, check=True, warm_up_s=0.0)
    assert [p["status"] for p in prepared] == ["ok", "ok"]
    before = {cid: [a.copy() for a in w.steps[cid].weights()] for cid in ("s", "g")}
    w.time("s", 3), w.time("g", 3)
    after = {cid: w.steps[cid].weights() for cid in ("s", "g")}
    assert all(np.array_equal(a, b) for a, b in zip(before["g"], after["g"], strict=True))
    assert not np.array_equal(before["s"][0], after["s"][0])


# --- the alerts asv publishes ----------------------------------------------------------------------


def _published(tmp_path, jumps, params=None):
    """regressions.json and index.json as asv publish writes them, with one benchmark's alerts."""
    html, results = tmp_path / "html", tmp_path / "results"
    html.mkdir()
    benchmark = {
        "params": [
            ["'numpy'", "'torch:cpu'"],
            ["'seed'", "'tutorial'"],
            ["'float32'", "'float64'"],
            ["'sgd'", "'adam'"],
        ],
        "param_names": ["implementation", "preset", "dtype", "optimizer"],
        "unit": "seconds",
    }
    head = _commits()[1]
    first = triage_alerts.parent(head)
    to_hash = {"1": first, "2": head}
    name = "training_step.Presets.time_step('torch:cpu', 'tutorial', 'float32', 'adam')"
    # one machine: asv leaves it out of the graph's parameters, its path still names it
    entry = [name, "graphs/branch-main/machine-m/numpy-2.4.6/x.json", {}, 0b1101, 2.0, 1.0, jumps]
    (html / "regressions.json").write_text(json.dumps({"regressions": [entry]}))
    index = {"revision_to_hash": to_hash, "benchmarks": {"training_step.Presets.time_step": benchmark}}
    (html / "index.json").write_text(json.dumps(index))
    for commit, p in zip((first, head), params or ({}, {}), strict=True):
        folder = results / "m"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{commit[:8]}-existing-py3.11.json").write_text(json.dumps({"params": {"machine": "m", **p}}))
    return html, results, first, head


def test_an_alert_is_one_jump_of_asvs_regressions_with_its_parameters_and_commits(tmp_path):
    html, results, first, head = _published(tmp_path, [[1, 2, 1.0e-3, 1.5e-3], [None, 2, 1.0e-3, 2.0e-3]])
    a, b = triage_alerts.from_published(html, results)
    assert b.params == {"implementation": "torch:cpu", "preset": "tutorial", "dtype": "float32", "optimizer": "adam"}
    assert (b.before, b.after, b.factor) == (first, head, 1.5)
    assert (a.before, a.after, a.factor) == (first, head, 2.0)  # one commit: asv names no first revision; its parent
    assert a.environment_change == {}


def test_an_alert_between_two_environments_says_which_parameters_differ(tmp_path):
    html, results, _, _ = _published(
        tmp_path, [[1, 2, 1.0, 1.2]], params=({"numpy": "2.3.0", "cpu": "X"}, {"numpy": "2.4.6", "cpu": "X"})
    )
    (a,) = triage_alerts.from_published(html, results)
    assert a.environment_change == {"numpy": ["2.3.0", "2.4.6"]}
    assert "numpy 2.3.0 -> 2.4.6" in record.environment_note(a.environment_change)


# --- one gate run per request, within the triage's time --------------------------------------------


@pytest.fixture
def scripted_gate(monkeypatch):
    monkeypatch.setattr(rounds.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("STEPBENCH_THREADS", raising=False)
    monkeypatch.setattr(remeasure, "export", lambda commit: environment.REPO)
    monkeypatch.setattr(remeasure.load, "probe", lambda window_s=1.0: (0.0, {}))


def _commits():
    head = subprocess.check_output(["git", "-C", str(environment.REPO), "rev-parse", "HEAD"], text=True).strip()
    return triage_alerts.parent(head), head


@pytest.mark.parametrize("ratio, verdict", [(1.12, "slower"), (1.0, "same")])
def test_a_gate_run_measures_the_alerts_cell_between_the_two_commits(monkeypatch, scripted_gate, ratio, verdict):
    script = install(monkeypatch, ScriptedWorkers(ratio_script(ratio)))
    base, head = _commits()
    cell, _ = alert([base, head], PRESET.replace("time_step", "time_loss_and_grads")).cell()
    got = remeasure.Gate()(base, head, [cell])[cell.id]
    assert (got.verdict, got.base, got.head) == (verdict, base, head)
    assert ratio / 1.006 < got.low <= got.ratio <= got.high < ratio * 1.006  # the script's ratio, within its wobble
    setups = [req for ev, _, _, req in script.log if ev == "send" and req["op"] == "setup"]
    assert setups and all(c["call"] == "loss_and_grads" for req in setups for c in req["cells"])


def test_a_gate_run_gets_at_most_what_is_left_of_the_triages_time_and_none_below_the_minimum(
    monkeypatch, scripted_gate
):
    now = [0.0]
    budgets = []
    monkeypatch.setattr(remeasure.rounds, "run", lambda b, h, cells, s: budgets.append(s.max_time_s) or 1.0)
    monkeypatch.setattr(remeasure.output, "verdicts", lambda cells, s: [])
    gate = remeasure.Gate(max_time_s=100.0, run_max_s=60.0, clock=lambda: now[0])
    base, head = _commits()
    cell, _ = alert([base, head]).cell()
    gate(base, head, [cell])
    now[0] = 70.0
    gate(base, head, [cell])
    now[0] = 100.0 - remeasure.MIN_RUN_S + 1
    skipped = gate(base, head, [cell])
    assert budgets == [60.0, 30.0]
    assert skipped[cell.id].verdict == "skipped" and "--max-time" in skipped[cell.id].why


# --- the record and the command ---------------------------------------------------------------------


def test_the_record_counts_each_outcome_names_the_culprit_and_its_table_shows_it(tmp_path):
    commits = history(8)
    gate = ScriptedHistory(commits, slow_from=3)
    entries = bisection.triage(
        [alert(commits), alert(commits, PRESET.replace("time_step", "peakmem_step"))], gate, gate.between
    )
    data = record.build(entries, "m", remeasure.Gate(), "complete", repo=tmp_path)
    assert data["counts"] == {"confirmed": 1, "undecided": 0, "refuted": 0, "not re-measured": 1}
    (confirmed,) = [a for a in data["alerts"] if a["outcome"] == "confirmed"]
    assert confirmed["culprit"] == commits[3] and len(confirmed["steps"]) == confirmed["gate_runs"] - 1
    target = record.path(tmp_path, "m")
    record.write(target, data)
    assert json.loads(target.read_text())["alerts"][0]["key"] == confirmed["key"]
    text = record.table(data)
    assert f"first slower commit {commits[3][:8]}" in text and "1 confirmed, 1 not re-measured" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threshold", "2"], "--threshold must be between 0 and 1"),
        (["--machine", "no-such-machine", "--list"], "--machine no-such-machine: no such machine"),
        (["--max-time", "-1"], "--max-time"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "triage", *args], capture_output=True, text=True, cwd=environment.REPO
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_list_names_every_alert_of_the_committed_history_and_its_cell():
    from bench.asvtools import dashboard

    done = subprocess.run(
        [sys.executable, "-m", "bench", "triage", "--list"], capture_output=True, text=True, cwd=environment.REPO
    )
    assert done.returncode == 0, done.stderr
    published = dashboard.publish(environment.REPO / "asv.conf.json", environment.REPO / ".asv" / "triage-list-html")
    _, rows = dashboard.regressions(published.html)
    assert done.stdout.count(" gate cell ") + done.stdout.count(" not re-measured: ") == rows


# --- the trials' scoring (bench.studies.triage_trials) ----------------------------------------------


def _record_alert(implementation, outcome, culprit=None):
    return {
        "params": {"implementation": implementation},
        "factor": 1.1,
        "outcome": outcome,
        "confirmation": {"ratio": 1.1, "low": 1.06, "high": 1.14},
        "bisection": "found" if culprit else None,
        "culprit": culprit,
        "gate_runs": 5,
        "why": "",
        "steps": [],
    }


def test_a_trial_counts_the_slowdowns_commit_named_and_a_wrong_culprit_or_a_confirmed_control_as_wrong():
    from bench.studies.triage_trials import score

    commits = history(16)
    alerts = [
        _record_alert("numpy", "confirmed", commits[7]),
        _record_alert("numba", "confirmed", commits[8]),
        _record_alert("numba", "undecided"),
    ]
    got = score({"alerts": alerts}, commits, slow_at=7)["alerts"]
    assert [(a["named_k"], a["wrong"]) for a in got] == [(True, False), (False, True), (False, False)]
    control = score({"alerts": [_record_alert("numpy", "confirmed", commits[3])]}, commits, slow_at=None)["alerts"]
    assert control[0]["wrong"] and not control[0]["named_k"]
