"""The regression gate's decisions, driven by scripted block times: which side runs where and when, how
many calls a block holds, which pairs land in which round, and which verdict and exit status follow.

The two sides' worker processes (bench.gate.workers.WorkerProcess) are replaced by ScriptedWorkers,
which answer every request from a script instead of running a step, and log what the gate asked
and in which order. Everything the gate decides is then observable, and every expected value
exact: nothing here reads a real clock.
"""

import collections
import io
import json
import math
import os
import sys
import threading

import pytest

from bench.gate import cells as gate_cells
from bench.gate import compare, rounds, sides, workers
from bench.harness import environment

CELL = "numpy and seed and float32 and sgd"
CPUS = {0, 1, 2, 3}  # the machine the duet splits in these tests: [0, 1] and [2, 3]


def wobble(r: int, k: int) -> float:
    """A small, fixed, uneven spread (within 0.6%) so that every interval has a width."""
    return 1 + 0.003 * ((7 * k + 3 * r) % 5 - 2)


def ratio_script(*ratio_by_round, base_s=100e-6):
    """Seconds per call: BASE base_s, HEAD base_s x the round's ratio, each with a wobble of its own."""

    def per_call(role, r, cell_id, k):
        if role == "base":
            return base_s * wobble(r, k)
        return base_s * ratio_by_round[r % len(ratio_by_round)] * wobble(r + 1, k)

    return per_call


class ScriptedWorkers:
    """Stands in for WorkerProcess (called with its arguments); each instance is one side's process of one round.

    per_call(role, round, cell_id, k): the seconds per call that the k-th block of that side, cell and
    round reports. call_s: each side's seconds per call in the warm-up (which sizes the blocks).
    setup_status: {(role, cell_id): status} for a side that fails a cell at setup (disagrees, error).
    cpu_factor: {cpu: factor} a block is slowed by where it runs (the first of its CPUs): a slow core.
    """

    def __init__(self, per_call, call_s=None, setup_status=None, cpu_factor=None):
        self.per_call = per_call
        self.cpu_factor = cpu_factor or {}
        self.call_s = call_s or {"base": 1e-4, "head": 1e-4}
        self.setup_status = setup_status or {}
        self.create_options = {}  # (role, cell_id) -> what that side's create chose, as its first round reports
        self.refused = set()  # (role, plan) that side's create refuses when given (its plans differ)
        self.started = []  # (role, round, seed, budget, cpus, passive)
        self.log = []  # (event, role, round, request or reply), in the order the gate caused them
        self.blocks = collections.Counter()  # (role, round, cell_id) -> blocks answered

    def __call__(self, side, seed, budget, cpus=None, passive=True):
        r = sum(1 for s in self.started if s[0] == side.role)
        self.started.append((side.role, r, seed, budget, None if cpus is None else list(cpus), passive))
        return _Process(self, side.role, r, cpus)

    def time_requests(self):
        """(role, round, cell_id, number) of each block asked for, in the order asked."""
        return [
            (role, r, req["cell"], req["number"])
            for ev, role, r, req in self.log
            if ev == "send" and req["op"] == "time"
        ]


class _Process:
    def __init__(self, script: ScriptedWorkers, role: str, r: int, cpus=None):
        self.script, self.role, self.round = script, role, r
        self.cpus = None if cpus is None else list(cpus)  # where the process runs: a time request may move it
        self.replies = collections.deque()

    def _answer(self, request: dict) -> dict:
        op = request["op"]
        if op == "environment":
            return {"environment": {"impls": f"scripted {self.role}", "threads": None}}
        if op == "setup":
            out = []
            for cell in request["cells"]:
                status = self.script.setup_status.get((self.role, cell["id"]), "ok")
                if (self.role, cell.get("options", {}).get("plan")) in self.script.refused:
                    status = "error"
                got = {"status": status, "reason": f"scripted {status}"}
                if status == "ok":
                    got["call_s"] = self.script.call_s[self.role]
                if request["check"]:
                    got["worst_ratio"] = 0.1 if status == "ok" else 3.0
                    got["create_options"] = self.script.create_options.get((self.role, cell["id"]), {})
                out.append(got)
            return {"cells": out}
        if op == "time":
            self.cpus = request.get("cpus", self.cpus)
            key = (self.role, self.round, request["cell"])
            k = self.script.blocks[key]
            self.script.blocks[key] += 1
            slow = self.script.cpu_factor.get(self.cpus[0], 1.0) if self.cpus else 1.0
            return {"t": self.script.per_call(self.role, self.round, request["cell"], k) * slow}
        if op == "finish":
            return {"diverged": []}
        raise AssertionError(f"the gate asked a worker for {op!r}")

    def send(self, **request) -> None:
        self.script.log.append(("send", self.role, self.round, request))
        self.replies.append(self._answer(request))

    def read(self) -> dict:
        reply = self.replies.popleft()
        self.script.log.append(("read", self.role, self.round, reply))
        return reply

    def ask(self, **request) -> dict:
        self.send(**request)
        return self.read()

    def close(self) -> None:
        self.script.log.append(("close", self.role, self.round, {}))


@pytest.fixture
def machine(monkeypatch):
    """Four CPUs and no thread budget set: a duet gives each side two; the export of a revision is skipped."""
    monkeypatch.setattr(rounds.os, "sched_getaffinity", lambda pid: set(CPUS))
    monkeypatch.delenv("STEPBENCH_THREADS", raising=False)
    monkeypatch.setattr(compare, "export", lambda commit: environment.REPO)  # scripted workers import nothing


def install(monkeypatch, script: ScriptedWorkers) -> ScriptedWorkers:
    monkeypatch.setattr(rounds, "WorkerProcess", script)
    return script


def _sides():
    return (
        sides.Side("base", "BASE", "b" * 40, False, sys.executable, environment.REPO),
        sides.Side("head", "HEAD", "h" * 40, False, sys.executable, environment.REPO),
    )


def _run(script, procedure, select=CELL, **settings):
    settings.setdefault("max_rounds", settings.get("rounds", rounds.Settings.rounds))  # no extra rounds unless asked
    cells = gate_cells.select(gate_cells.all_cells(), select)
    rounds.run(*_sides(), cells, rounds.Settings(procedure=procedure, **settings))
    return cells


def _pairs_of_blocks(log):
    """The time requests and their replies, grouped in pairs of blocks (one per side), as (event, role) lists."""
    timed = [(ev, role) for ev, role, _, msg in log if (ev == "send" and msg.get("op") == "time") or "t" in msg]
    return [timed[i : i + 4] for i in range(0, len(timed), 4)]


# --- where and when each side's blocks run ----------------------------------------------------


def test_a_duet_runs_both_blocks_at_once_and_crosses_the_sides_over_within_each_pair(monkeypatch, machine):
    script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0)))
    (cell,) = _run(script, "duet", rounds=3, pairs=4)
    halves = [[0, 1], [2, 3]]
    for role, r, _, budget, cpus, _ in script.started:
        assert budget == 2  # half the CPUs each, as many threads as CPUs
        assert cpus == halves[(r + (role == "head")) % 2], (role, r)  # base starts on [0,1], [2,3], [0,1]
    # Both blocks are asked for before either is read: they run at the same time; a pair is two such duets.
    duets = _pairs_of_blocks(script.log)
    assert len(duets) == 3 * 4 * 2
    assert all(p == [("send", "base"), ("send", "head"), ("read", "base"), ("read", "head")] for p in duets)
    # The second duet of each pair moves each side onto the other's CPUs; the next pair starts where it left off.
    moves = [(role, r, req.get("cpus")) for ev, role, r, req in script.log if ev == "send" and req.get("op") == "time"]
    for r in range(3):
        start = {"base": halves[r % 2], "head": halves[(r + 1) % 2]}
        got = [m for m in moves if m[1] == r]
        for j in range(4):
            assert got[4 * j : 4 * j + 2] == [("base", r, None), ("head", r, None)]  # stays where it is
            crossed = {"base": start["head"], "head": start["base"]} if j % 2 == 0 else start
            assert got[4 * j + 2 : 4 * j + 4] == [("base", r, crossed["base"]), ("head", r, crossed["head"])]
    assert cell.first == [["both"] * 4] * 3


@pytest.mark.parametrize("slow_cpu", [0, 2])
def test_a_slow_core_cancels_in_a_crossed_duet_pair(monkeypatch, machine, slow_cpu):
    """One half of the machine 30% slower for the whole run (a VM whose host core another guest keeps busy):
    with the sides swapped only between rounds every round would read 1.3 or 1/1.3 and the cell stay unsure.
    Each pair is the geometric mean of a side's blocks on both halves, so the factor cancels exactly."""
    script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0), cpu_factor={slow_cpu: 1.3}))
    (cell,) = _run(script, "duet", rounds=4, pairs=6)
    for per_round in cell.pairs:
        for base_s, head_s in per_round:
            assert head_s / base_s == pytest.approx(1.0, abs=0.007)  # the wobble only (within 0.6% each side)
    est, verdict, _ = rounds.judge(cell, rounds.Settings(procedure="duet", rounds=4))
    assert (verdict, est.ratio) == ("same", pytest.approx(1.0, abs=0.007))


def test_interleave_runs_the_blocks_one_after_the_other_in_a_random_order_per_pair(monkeypatch, machine):
    orders = {}
    for seed in (0, 1):
        script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0)))
        (cell,) = _run(script, "interleave", rounds=2, pairs=16, seed=seed)
        # Every side has the whole machine: no CPUs of its own, the full thread budget.
        assert [(cpus, budget) for _, _, _, budget, cpus, _ in script.started] == [(None, len(CPUS))] * 4
        pairs = _pairs_of_blocks(script.log)
        firsts = []
        for p in pairs:
            (first, a), (read_first, b), (second, c), (read_second, d) = p
            assert (first, read_first, second, read_second) == ("send", "read", "send", "read")  # one block at a time
            assert a == b != c == d
            firsts.append(a)
        assert [f for per_round in cell.first for f in per_round] == firsts  # the record says what ran first
        assert set(firsts) == {"base", "head"}  # both orders occur ...
        assert any(x == y for x, y in zip(firsts, firsts[1:], strict=False))  # ... not by simple alternation
        orders[seed] = firsts
    assert orders[0] != orders[1]  # ... and the seed decides them


@pytest.mark.parametrize("procedure", ["duet", "interleave"])
def test_both_sides_blocks_hold_the_same_number_of_calls_sized_from_bases_call(monkeypatch, machine, procedure):
    # HEAD's call is 3x BASE's: a block of 20 ms holds ceil(0.02 / 3e-3) = 7 of BASE's calls, on both sides.
    script = install(monkeypatch, ScriptedWorkers(ratio_script(3.0), call_s={"base": 3e-3, "head": 9e-3}))
    (cell,) = _run(script, procedure, rounds=2, pairs=3, block_s=0.02)
    requests = script.time_requests()
    assert len(requests) == 2 * 2 * 3 * (2 if procedure == "duet" else 1)  # a duet's pair is two crossed duets
    assert {(role, number) for role, _, _, number in requests} == {("base", 7), ("head", 7)}
    assert cell.number == 7


def test_each_round_is_a_fresh_process_per_side_and_keeps_its_own_pairs_as_base_head(monkeypatch, machine):
    def per_call(role, r, cell_id, k):  # the value says where it came from: side, round, block
        return (1 + r) * 1e-3 + k * 1e-6 + (5e-4 if role == "head" else 0.0)

    script = install(monkeypatch, ScriptedWorkers(per_call))
    (cell,) = _run(script, "interleave", rounds=3, pairs=4)
    assert [(role, r) for role, r, *_ in script.started] == [(role, r) for r in range(3) for role in ("base", "head")]
    assert len({seed for _, _, seed, *_ in script.started}) == 6  # every process its own memory layout
    closed = [(role, r) for ev, role, r, _ in script.log if ev == "close"]
    assert sorted(closed) == sorted((role, r) for r in range(3) for role in ("base", "head"))
    assert cell.pairs == [[(per_call("base", r, 0, k), per_call("head", r, 0, k)) for k in range(4)] for r in range(3)]


def _setups(script):
    return [
        (role, r, [c.get("options") for c in msg["cells"]], msg["check"])
        for ev, role, r, msg in script.log
        if ev == "send" and msg["op"] == "setup"
    ]


def test_both_sides_are_timed_with_bases_plan_where_their_creates_chose_differently(monkeypatch, machine, tmp_path):
    """numba:blas chooses its plan by trials; each side's own draw would hold for the whole run and decide
    the verdict (identical code was called 1.17x slower under load). HEAD is created again with BASE's plan
    in its first process, checked, and every later round gives both sides that plan; the record keeps
    what HEAD's own trials chose."""
    script = ScriptedWorkers(ratio_script(1.0))
    cell_id = gate_cells.select(gate_cells.all_cells(), CELL)[0].id
    base_plan, head_plan = {"plan": "l1=blas"}, {"plan": "l1=loops"}
    script.create_options = {("base", cell_id): base_plan, ("head", cell_id): head_plan}
    status, data = _compare(monkeypatch, tmp_path, script)
    assert _setups(script) == [
        ("base", 0, [None], True),
        ("head", 0, [None], True),
        ("head", 0, [base_plan], True),  # HEAD again, with BASE's plan, checked before it is timed
        *[(role, r, [base_plan], False) for r in (1, 2, 3) for role in ("base", "head")],
    ]
    (row,) = data["cells"]
    assert row["plans"] == {"base": base_plan, "head": base_plan, "head_chose": head_plan}
    # HEAD's first process times the step created with BASE's plan: its blocks come after the second set-up.
    log = [(ev, role, r, msg.get("op")) for ev, role, r, msg in script.log if ev == "send" and r == 0]
    assert log.index(("send", "head", 0, "setup"), 2) < log.index(("send", "head", 0, "time"))


def test_a_head_that_cannot_make_bases_plan_keeps_its_own_and_says_so(monkeypatch, machine, tmp_path):
    script = ScriptedWorkers(ratio_script(1.0))
    cell_id = gate_cells.select(gate_cells.all_cells(), CELL)[0].id
    base_plan, head_plan = {"plan": "l1=blas"}, {"plan": "l1=loops"}
    script.create_options = {("base", cell_id): base_plan, ("head", cell_id): head_plan}
    script.refused = {("head", "l1=blas")}
    status, data = _compare(monkeypatch, tmp_path, script)
    assert [s[2] for s in _setups(script)[3:]] == [[base_plan], [head_plan]] * 3  # each side's own, later
    assert data["cells"][0]["plans"] == {"base": base_plan, "head": head_plan, "head_chose": None}
    assert status == 0  # the cell was timed (same): the refused plan is not a failure of HEAD


def test_sides_that_chose_the_same_plan_are_set_up_once(monkeypatch, machine, tmp_path):
    script = ScriptedWorkers(ratio_script(1.0))
    cell_id = gate_cells.select(gate_cells.all_cells(), CELL)[0].id
    script.create_options = {("base", cell_id): {"plan": "blas"}, ("head", cell_id): {"plan": "blas"}}
    _compare(monkeypatch, tmp_path, script)
    assert [s[:2] for s in _setups(script)][:3] == [("base", 0), ("head", 0), ("base", 1)]


def test_every_cell_gets_one_pair_per_sweep_in_a_new_order(monkeypatch, machine):
    script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0)))
    cells = _run(script, "duet", select="numpy and seed", rounds=2, pairs=6)
    assert len(cells) == 4 and all([len(p) for p in c.pairs] == [6, 6] for c in cells)
    order = [cell for role, _, cell, _ in script.time_requests() if role == "base"][::2]  # a pair: two duets
    sweeps = [tuple(order[i : i + 4]) for i in range(0, len(order), 4)]
    assert all(sorted(s) == sorted(c.id for c in cells) for s in sweeps)  # each cell once per sweep ...
    assert len(set(sweeps)) > 1  # ... shuffled anew


@pytest.mark.parametrize("pair_s, pairs", [(1e-4 * 2 * 200, 12), (0.45, 9), (30.0, rounds.MIN_PAIRS)])
def test_a_cells_pairs_in_a_round_stop_once_its_blocks_took_the_pairs_budget_never_below_three(
    monkeypatch, machine, pair_s, pairs
):
    """Blocks of 200 calls (sized from a 100 us warm-up call); a pair of the slow cell lasts pair_s seconds."""

    def per_call(role, r, cell_id, k):
        return pair_s / 2 / 200 if "tutorial" in cell_id else 100e-6

    script = install(monkeypatch, ScriptedWorkers(per_call))
    cells = _run(script, "interleave", select="numpy and (seed or tutorial) and float32 and sgd", rounds=2, pairs=12)
    by_id = {c.id: [len(p) for p in c.pairs] for c in cells}
    assert by_id == {"numpy-seed-float32-sgd": [12, 12], "numpy-tutorial-float32-sgd": [pairs, pairs]}


# --- from intervals to verdicts and exit statuses, through the command line ------------------


def _compare(monkeypatch, tmp_path, script, *args):
    install(monkeypatch, script)
    out = tmp_path / "c.json"
    fixed = ["--rounds", "4", "--pairs", "8", "--max-rounds", "4", "--procedure", "duet"]
    status = compare.main(["HEAD", "HEAD", "-k", CELL, *fixed, "--json", str(out), *args])
    return status, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize(
    ("ratios", "args", "verdict", "status"),
    [
        ((1.5,), (), "slower", 1),
        ((1.0,), (), "same", 0),
        ((0.6,), (), "faster", 0),
        # Two rounds 12% slower, two the same: the median is 6% slower, but the rounds disagree.
        ((1.12, 1.0), (), "unsure", 3),
        # 8% slower: beyond a threshold of 5%, within one of 10%.
        ((1.08,), ("--threshold", "0.05"), "slower", 1),
        ((1.08,), ("--threshold", "0.10"), "same", 0),
        ((1 / 1.08,), ("--threshold", "0.10"), "same", 0),
        ((1 / 1.08,), ("--threshold", "0.05"), "faster", 0),
    ],
)
def test_the_verdict_and_exit_status_follow_from_the_interval_and_the_threshold(
    monkeypatch, machine, tmp_path, ratios, args, verdict, status
):
    got, data = _compare(monkeypatch, tmp_path, ScriptedWorkers(ratio_script(*ratios)), *args)
    (row,) = data["cells"]
    assert (row["verdict"], got) == (verdict, status), row["why"]
    if len(ratios) == 2:
        assert row["ratio"] > 1.05  # the point estimate alone would have called it slower
    threshold = float(args[1]) if args else 0.05
    assert data["settings"]["threshold"] == threshold and data["settings"]["confidence"] == 0.95
    # The record keeps every pair as (BASE, HEAD) seconds per call, per round: in a duet, each side's
    # geometric mean over the pair's two crossed blocks.
    script = ratio_script(*ratios)
    assert row["pairs"] == [
        [
            [pytest.approx(math.sqrt(script(role, r, CELL, 2 * k) * script(role, r, CELL, 2 * k + 1)), rel=1e-12)
             for role in ("base", "head")]
            for k in range(8)
        ]
        for r in range(4)
    ]  # fmt: skip


def test_the_ratio_is_heads_time_over_bases(monkeypatch, machine, tmp_path):
    status, data = _compare(monkeypatch, tmp_path, ScriptedWorkers(ratio_script(2.0)))
    (row,) = data["cells"]
    assert row["ratio"] == pytest.approx(2.0, rel=0.01) and row["low"] > 1.9 and row["high"] < 2.1
    assert row["head_median_s"] == pytest.approx(2 * row["base_median_s"], rel=0.01)
    assert status == 1


@pytest.mark.parametrize(("role", "verdict", "status"), [("head", "disagrees", 1), ("base", "skipped", 0)])
def test_a_side_that_disagrees_fails_the_gate_only_when_it_is_head(
    monkeypatch, machine, tmp_path, role, verdict, status
):
    cell_id = "numpy-seed-float32-sgd"
    script = ScriptedWorkers(ratio_script(1.0), setup_status={(role, cell_id): "disagrees"})
    got, data = _compare(monkeypatch, tmp_path, script)
    (row,) = data["cells"]
    assert (row["verdict"], got) == (verdict, status)
    assert script.time_requests() == []  # never timed


@pytest.mark.parametrize(
    "args", [["HEAD", "--rounds", "1"], ["HEAD", "--pairs", "1"], ["HEAD", "--threshold", "1.5"], ["no-such-rev-xyz"]]
)
def test_bad_arguments_exit_2_before_any_worker_starts(monkeypatch, machine, args):
    script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0)))
    assert compare.main([*args, "-k", CELL]) == 2
    assert script.started == []


def test_a_duet_without_two_cpus_exits_2(monkeypatch, machine):
    monkeypatch.setattr(rounds.os, "sched_getaffinity", lambda pid: {0})
    script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0)))
    assert compare.main(["HEAD", "HEAD", "-k", CELL, "--procedure", "duet"]) == 2
    assert script.started == []


# --- what a worker process is started with -------------------------------------------------------


def test_a_worker_runs_its_sides_checkout_and_interpreter_pinned_with_the_budget_and_sleeping_pools(monkeypatch):
    started = []

    class Popen:  # records the command and answers the worker's first line
        def __init__(self, command, env, **kwargs):
            started.append((command, env))
            self.stdout = io.StringIO('{"ready": true}\n')

    monkeypatch.setattr(workers.subprocess, "Popen", Popen)
    base, _ = _sides()
    base.python, base.checkout = "/envs/py-base/bin/python", environment.REPO / "some-export"
    workers.WorkerProcess(base, seed=11, budget=2, cpus=[2, 3], passive=True)
    workers.WorkerProcess(base, seed=12, budget=4, cpus=None, passive=False)
    (pinned, pinned_env), (free, free_env) = started
    assert pinned == [
        base.python,
        str(workers.WORKER),
        "--checkout",
        str(base.checkout),
        "--seed",
        "11",
        "--cpus",
        "2,3",
    ]
    assert free == [base.python, str(workers.WORKER), "--checkout", str(base.checkout), "--seed", "12"]
    assert pinned_env["STEPBENCH_THREADS"] == "2" and free_env["STEPBENCH_THREADS"] == "4"
    assert {k: pinned_env[k] for k in workers.PASSIVE_WAITS} == {
        "OPENBLAS_THREAD_TIMEOUT": "4",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    assert all(free_env.get(k) == os.environ.get(k) for k in workers.PASSIVE_WAITS)  # --no-passive: as they were


def test_a_worker_moves_every_thread_of_its_process_for_a_crossed_block():
    """A duet's crossover moves a side's process onto the other side's CPUs; its thread pools move with it.
    (os.sched_setaffinity(0) would move the calling thread alone.)"""
    from bench.gate import worker

    mine = sorted(os.sched_getaffinity(0))
    target = {mine[-1]}
    started, stop = threading.Event(), threading.Event()

    def pool_thread():
        started.set()
        stop.wait(10)

    thread = threading.Thread(target=pool_thread)
    thread.start()
    started.wait(10)
    try:
        worker.pin(target)
        tasks = [int(t) for t in os.listdir("/proc/self/task")]
        assert thread.native_id in tasks and len(tasks) >= 2
        assert {t: os.sched_getaffinity(t) for t in tasks} == {t: target for t in tasks}
    finally:
        stop.set()
        thread.join()
        worker.pin(mine)


# --- more rounds for the undecided cells only, within the time budget ----------------------------

SEED_CELLS = "numpy and seed and float32"  # numpy-seed-float32-adam and numpy-seed-float32-sgd
UNDECIDED_CELL = "numpy-seed-float32-sgd"


def split_script(base_s=100e-6):
    """The adam cell is the same on both sides in every round; the sgd cell's rounds alternate 12% slower
    and the same, so its interval stays wide however many rounds it gets."""

    def per_call(role, r, cell_id, k):
        if role == "base":
            return base_s * wobble(r, k)
        ratio = (1.12 if r % 2 == 0 else 1.0) if cell_id == UNDECIDED_CELL else 1.0
        return base_s * ratio * wobble(r + 1, k)

    return per_call


class BlockClock:
    """A clock that only the scripted blocks move: each block lasts its calls x its seconds per call."""

    def __init__(self, script: ScriptedWorkers, setup_s: float = 1.0, first_setup_s: float = 1.0):
        self.script, self.setup_s, self.first_setup_s = script, setup_s, first_setup_s

    def __call__(self) -> float:
        timed = sum(req["number"] * reply["t"] for req, reply in self._blocks())
        closed = [r for ev, _, r, _ in self.script.log if ev == "close"]
        return timed + sum(self.first_setup_s if r == 0 else self.setup_s for r in closed)

    def _blocks(self):
        sent = [msg for ev, _, _, msg in self.script.log if ev == "send" and msg.get("op") == "time"]
        read = [msg for ev, _, _, msg in self.script.log if ev == "read" and "t" in msg]
        return zip(sent, read, strict=False)


def _rounds_of(script, cell_id):
    return sorted({r for role, r, cell, _ in script.time_requests() if cell == cell_id and role == "base"})


def test_cells_still_undecided_get_more_rounds_in_twos_and_decided_ones_none(monkeypatch, machine):
    script = install(monkeypatch, ScriptedWorkers(split_script()))
    adam, sgd = sorted(_run(script, "duet", select=SEED_CELLS, rounds=4, pairs=6, max_rounds=10), key=lambda c: c.id)
    assert (len(adam.pairs), adam.stopped) == (4, "decided")
    assert (len(sgd.pairs), sgd.stopped) == (10, "round limit")
    assert _rounds_of(script, adam.id) == [0, 1, 2, 3]
    assert _rounds_of(script, sgd.id) == list(range(10))
    # The extra rounds' processes set up only the undecided cell, and a duet still swaps their CPUs.
    setups = [
        (r, [c["id"] for c in msg["cells"]])
        for ev, role, r, msg in script.log
        if ev == "send" and role == "base" and msg["op"] == "setup"
    ]
    assert [ids for r, ids in setups if r >= 4] == [[UNDECIDED_CELL]] * 6
    base_cpus = [cpus for role, r, _, _, cpus, _ in script.started if role == "base"]
    assert base_cpus == [[0, 1], [2, 3]] * 5


def test_extra_rounds_stop_when_the_next_ones_would_not_fit_in_the_time_budget(monkeypatch, machine):
    # A round of both cells: 2 cells x 6 pairs x 2 blocks x 20 ms + 2 processes x 1 s = 2.48 s; four
    # rounds 9.92 s, leaving 5.08 s of 15. Two more rounds, estimated at 2 x 2.48 s, fit: 6 x 2 x 20 ms
    # + 2 s = 2.24 s each, 14.4 s in all. Two more after that would need about 4.5 s with 0.6 s left.
    script = ScriptedWorkers(split_script())
    install(monkeypatch, script)
    cells = gate_cells.select(gate_cells.all_cells(), SEED_CELLS)
    settings = rounds.Settings(procedure="interleave", rounds=4, pairs=6, max_rounds=16, max_time_s=15.0)
    clock = BlockClock(script)
    wall = rounds.run(*_sides(), cells, settings, clock=clock)
    adam, sgd = sorted(cells, key=lambda c: c.id)
    assert adam.stopped == "decided" and len(adam.pairs) == 4
    assert sgd.stopped == "time budget spent"
    assert len(sgd.pairs) == 6
    assert wall == pytest.approx(4 * 2.48 + 2 * 2.24, rel=0.01)


@pytest.mark.parametrize(
    ("verdicts", "status"),
    [
        (["same", "faster", "skipped"], 0),
        (["same", "unsure"], 3),
        (["unsure", "slower"], 1),
        (["same", "disagrees"], 1),
        (["failed", "unsure"], 1),
    ],
)
def test_exit_status_one_for_a_slower_cell_three_for_an_undecided_one_zero_only_when_all_are_decided(verdicts, status):
    assert compare.exit_status([{"verdict": v} for v in verdicts]) == status


@pytest.mark.parametrize(
    ("asked", "other", "procedure", "budget"),
    [
        ("auto", 0.05, "duet", None),
        ("auto", 1.0, "interleave", 1),
        ("auto", 2.6, "interleave", 1),
        ("duet", 1.0, "duet", None),
    ],
)
def test_auto_chooses_the_duet_on_a_quiet_machine_and_interleaves_on_the_free_cores_beside_other_work(
    monkeypatch, asked, other, procedure, budget
):
    monkeypatch.setattr(rounds.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("STEPBENCH_THREADS", raising=False)
    settings = rounds.Settings(procedure=asked)
    rounds.choose_procedure(settings, other)
    assert (settings.procedure, settings.thread_budget, settings.other_work_before) == (procedure, budget, other)


def test_a_busy_machine_is_said_and_recorded_and_the_record_says_why_each_cell_stopped(
    monkeypatch, machine, tmp_path, capsys
):
    held = {0: 0.02, 1: 1.0, 2: 0.0, 3: 0.98}  # two of four CPUs held, 1 and 3
    monkeypatch.setattr(compare.load, "probe", lambda window_s=1.0: (2.0, held))
    script = install(monkeypatch, ScriptedWorkers(split_script()))
    out = tmp_path / "c.json"
    status = compare.main(["HEAD", "HEAD", "-k", SEED_CELLS, "--pairs", "6", "--max-rounds", "6", "--json", str(out)])
    data = json.loads(out.read_text())
    err = capsys.readouterr().err
    assert "the machine is busy before the run: other processes kept 2.0 of" in err
    assert data["settings"]["procedure"] == "interleave" and data["settings"]["thread_budget"] == 2
    assert data["settings"]["other_work_before"] == 2.0 and "other_work_during" in data["settings"]
    # Both sides' processes are pinned to the two CPUs the other work left free, with a thread each.
    assert data["settings"]["cpus"] == [0, 2]
    assert {(tuple(cpus), budget) for _, _, _, budget, cpus, _ in script.started} == {((0, 2), 2)}
    by_cell = {row["cell"]: row for row in data["cells"]}
    assert (by_cell["numpy-seed-float32-adam"]["rounds"], by_cell["numpy-seed-float32-adam"]["stopped"]) == (
        4,
        "decided",
    )
    assert (by_cell[UNDECIDED_CELL]["rounds"], by_cell[UNDECIDED_CELL]["stopped"]) == (6, "round limit")
    assert (by_cell[UNDECIDED_CELL]["verdict"], status) == ("unsure", 3)


def test_a_budget_too_short_for_the_first_rounds_stops_every_cell_after_two(monkeypatch, machine):
    # Rounds of 2.48 s (as above): after two, 4.96 s of 8 are spent and two more would need 4.96 s.
    script = install(monkeypatch, ScriptedWorkers(split_script()))
    cells = gate_cells.select(gate_cells.all_cells(), SEED_CELLS)
    settings = rounds.Settings(procedure="duet", rounds=4, pairs=6, max_time_s=8.0)
    rounds.run(*_sides(), cells, settings, clock=BlockClock(script))
    assert [(len(c.pairs), c.stopped) for c in cells] == [(2, "time budget spent")] * 2


@pytest.mark.parametrize(("base_call_s", "number", "warm"), [(1e-4, 200, True), (0.05, 1, False)])
def test_a_block_gets_an_untimed_call_first_unless_one_call_is_a_block_by_itself(
    monkeypatch, machine, base_call_s, number, warm
):
    script = install(monkeypatch, ScriptedWorkers(ratio_script(1.0), call_s={"base": base_call_s, "head": base_call_s}))
    _run(script, "interleave", rounds=2, pairs=3)
    requests = [msg for ev, _, _, msg in script.log if ev == "send" and msg["op"] == "time"]
    assert {(msg["number"], msg["warm"]) for msg in requests} == {(number, warm)}


def test_the_first_rounds_checks_and_compilation_do_not_count_against_later_rounds(monkeypatch, machine):
    # The first round's processes take 15 s each (agreement checks, compilation): 30.48 s; later rounds
    # 2.48 s. After two rounds 7.04 s of 40 are left, enough for two more (4.96 s); after four, 2.08 s.
    script = install(monkeypatch, ScriptedWorkers(split_script()))
    cells = gate_cells.select(gate_cells.all_cells(), SEED_CELLS)
    settings = rounds.Settings(procedure="duet", rounds=4, pairs=6, max_time_s=40.0)
    rounds.run(*_sides(), cells, settings, clock=BlockClock(script, first_setup_s=15.0))
    assert sorted((c.id, len(c.pairs), c.stopped) for c in cells) == [
        ("numpy-seed-float32-adam", 4, "decided"),
        (UNDECIDED_CELL, 4, "time budget spent"),
    ]
