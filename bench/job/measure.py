"""The main job's measurement: each cell's speed-up over numpy and fraction of the GEMM rate, measured paired.

Timed one after another, two cells carry whatever the machine did between them: two runs of
`make bench` on a shared VM disagreed on one speed-up by 176x. So every relative figure comes
from blocks measured side by side, with the regression gate's machinery (bench.gate):

- a *group* per problem: one block of each selected implementation's step, one of numpy's
  (the reference) and one of matrix products of the problem's dtype (the GEMM rate), timed back
  to back in a random order in one worker process (bench.gate.worker). A drift of the machine's
  speed slows a group's blocks alike; each ratio (step over numpy, step over GEMM) is taken
  within a group, so it cancels. Blocks are sized once (at least `block_s`), in the first round;
- a *round* is a fresh worker process that creates every step again (its memory layout is
  another draw) and times `passes` groups of each problem, the problems in random order;
- each ratio's interval is the gate's (bench.gate.paired.estimate: a two-level bootstrap over
  rounds and groups, never narrower than Student's t over the rounds). A cell whose speed-up
  interval is wider than +-`width` after the first `rounds` gets more rounds (only its problem is
  set up again) until it is narrower, it has `max_rounds`, or the next round would pass
  `max_time_s`; then it is *undecided*, and printed with its interval;
- the threads: the budget on a quiet machine; beside other work, as many as the CPUs it leaves
  free, pinned there (bench.gate.rounds.free_cpus: on the 2-core VM, two-thread blocks stalled
  when another job held a core). Every pool sleeps between blocks (SHORT_WAITS and SETTLE_S).

The first round checks every step against the float64 oracle before it is timed (in the worker,
on the step that is then timed); a step that disagrees or diverges is reported and not timed.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
import sys
import time

import numpy as np

import impls
from bench.gate import paired
from bench.gate.worker import GEMM
from bench.harness import grid, peak

REFERENCE = grid.REFERENCE
# How long each thread pool may spin after its last call before it sleeps: long enough to bridge the
# gaps between the calls of one step (a step that had to wake its threads for every product would be
# timed at up to 20x its speed: torch:cpu at seed read 1,259 us with OMP_WAIT_POLICY=PASSIVE, 104 us
# with these), short against the pause before each block, so that no pool of the block before is still
# spinning on a core this block needs (OpenBLAS's default is 2^28 cycles, about 0.1 s: torch:cpu
# at seed read 293 us beside numpy's blocks with it). OpenBLAS: 2^22 cycles, about 1.5 ms; GNU
# OpenMP (torch's pool and numba's "omp" threading layer): 3000 spins, tens of microseconds; Intel's
# OpenMP, where a library brings it: 1 ms. jax's XLA pool (Eigen's) has no such setting and spins
# for microseconds.
SHORT_WAITS = {"OPENBLAS_THREAD_TIMEOUT": "22", "GOMP_SPINCOUNT": "3000", "KMP_BLOCKTIME": "1"}
SETTLE_S = 0.003  # the pause before each block: every pool above is asleep by its end


@dataclasses.dataclass
class Settings:
    rounds: int = 3  # processes for every cell
    passes: int = 8  # groups of each problem per round
    block_s: float = 0.01  # the shortest block; a slower call is a block by itself
    settle_s: float = SETTLE_S
    width: float = 0.05  # a speed-up interval within +-5% of its value is narrow enough
    max_rounds: int = 16
    max_time_s: float = 420.0  # the whole measurement: undecided cells get rounds while the next one fits
    seed: int = 0
    threads: int | None = None  # per worker: the budget, or the CPUs other work leaves free
    cpus: list[int] | None = None  # pinned to these beside other work
    why_threads: str = ""
    other_work_before: float | None = None
    other_work_during: float | None = None


@dataclasses.dataclass
class Cell:
    """One implementation on one problem (or a hidden block: the reference where numpy is not selected, the GEMM)."""

    name: str
    problem: impls.Problem
    label: str  # the preset, or the sweep id
    kind: str  # "preset" or "sweep"
    device: str = "cpu"
    shown: bool = True  # a row of the report; the hidden reference and the GEMM blocks are not
    status: str = "ok"  # ok | skipped | disagrees | diverged | error
    reason: str = ""
    worst_ratio: float | None = None
    create_s: float | None = None
    check_s: float | None = None
    details: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)  # impls.create's: the checked step's plan, for later rounds
    flops: int = 0
    number: int = 1  # calls per block
    times: list = dataclasses.field(default_factory=list)  # per round: seconds per call of each block
    vs_reference: list = dataclasses.field(default_factory=list)  # per round: (reference_s, own_s) per group
    vs_gemm: list = dataclasses.field(default_factory=list)  # per round: (gemm_s, own_s) per group
    stopped: str | None = None  # decided | round limit | time budget spent

    @property
    def id(self) -> str:
        p = self.problem
        where = self.device if self.name == GEMM else f"{self.kind}-{self.label}-{p.optimizer}"
        return f"{self.name}|{where}|{p.dtype}"

    @property
    def key(self) -> tuple:
        return self.kind, self.label, self.problem.dtype, self.problem.optimizer

    def payload(self) -> dict:
        out = {"id": self.id, "name": self.name, "problem": dataclasses.asdict(self.problem)}
        if self.name == GEMM:
            out |= {"device": self.device, "n": peak.QUICK_SIZES[self.device]}
        if self.options:
            out["options"] = self.options
        return out

    def fail(self, status: str, reason: str) -> None:
        if self.status == "ok":
            self.status, self.reason = status, reason


@dataclasses.dataclass
class Group:
    """A problem's blocks: its cells, the reference and a GEMM block per device, timed together."""

    reference: Cell
    cells: list[Cell]  # the selected implementations (the reference among them where numpy is selected)
    gemm: dict[str, Cell]  # device -> GEMM block of the problem's dtype
    round_s: list = dataclasses.field(default_factory=list)  # its share of each later round's wall time

    @property
    def members(self) -> list[Cell]:
        """Every block of the group once: the cells, the reference, the GEMM blocks."""
        return self.blocks(self.cells)

    def blocks(self, cells: list[Cell]) -> list[Cell]:
        """These cells' blocks with the reference's and the GEMM's, each once."""
        return list({c.id: c for c in [self.reference, *cells, *self.gemm.values()]}.values())

    def undecided(self) -> bool:
        return any(c.status == "ok" and c.stopped is None for c in self.cells)


@dataclasses.dataclass(frozen=True)
class Figures:
    """A cell's paired figures: point and interval of its speed-up and of its fraction of the GEMM rate."""

    speedup: float | None
    speedup_low: float | None
    speedup_high: float | None
    gemm_fraction: float | None
    gemm_fraction_low: float | None
    gemm_fraction_high: float | None
    rounds: int
    groups: int


def build_groups(cells: list[Cell]) -> list[Group]:
    """Cells grouped by problem, in the order given, each with its reference and GEMM blocks."""
    by_key: dict[tuple, list[Cell]] = {}
    for cell in cells:
        by_key.setdefault(cell.key, []).append(cell)
    gemm: dict[tuple, Cell] = {}  # one GEMM block per device and dtype serves every problem of that dtype
    groups = []
    for members in by_key.values():
        first = members[0]
        reference = next((c for c in members if c.name == REFERENCE), None)
        if reference is None:
            reference = Cell(REFERENCE, first.problem, first.label, first.kind, shown=False)
        blocks = {}
        for device in dict.fromkeys(c.device for c in members):
            k = (device, first.problem.dtype)
            if k not in gemm:
                gemm[k] = Cell(GEMM, first.problem, "gemm", "gemm", device=device, shown=False)
            blocks[device] = gemm[k]
        groups.append(Group(reference, members, blocks))
    return groups


class Log:
    """Progress on stderr: a line per stage of a round, with the time spent and what is left."""

    def __init__(self, clock, stream=None):
        self.clock, self.start, self.stream = clock, clock(), stream or sys.stderr

    def __call__(self, text: str) -> None:
        print(f"[{self.clock() - self.start:5.0f} s] {text}", file=self.stream, flush=True)


def run(groups: list[Group], settings: Settings, open_worker, clock=time.perf_counter, log=None) -> float:
    """Measure every group: `settings.rounds` rounds, then more for groups with an undecided cell.

    open_worker(seed, threads, cpus) -> a worker with setup(payloads, check), group(blocks),
    finish() and close() (bench.job.workers). Returns the wall time in seconds.
    """
    log = log or Log(clock)
    rng = random.Random(settings.seed)
    start = clock()
    r, start_up_s = 0, []
    while True:
        first_rounds = r < settings.rounds
        wanted = [g for g in groups if any(c.status == "ok" for c in g.cells) and (first_rounds or g.undecided())]
        if not wanted:
            break
        if r >= 2:  # two rounds measured: does the next one fit in the time left?
            left = settings.max_time_s - (clock() - start)
            if _round_s(wanted, start_up_s) > left:
                for g in wanted:
                    for c in g.cells:
                        if c.status == "ok" and c.stopped is None:
                            c.stopped = "time budget spent"
                log(f"round {r + 1}: not started, it would pass --max-time {settings.max_time_s:.0f} s")
                break
        round_start = clock()
        started_s = _round(wanted, r, settings, open_worker, rng, log)
        if r > 0:  # the first round's checks and compilation say nothing of later rounds
            start_up_s.append(started_s - round_start)
            for g in wanted:
                g.round_s.append((clock() - started_s) / len(wanted))
        r += 1
        if r >= settings.rounds:
            for g in wanted:
                for c in g.cells:
                    if c.status == "ok" and c.stopped is None:
                        if narrow(c, settings):
                            c.stopped = "decided"
                        elif len(c.times) >= settings.max_rounds:
                            c.stopped = "round limit"
    return clock() - start


def _round_s(groups: list[Group], start_up_s: list[float]) -> float:
    """One more round of these groups: starting the process, then each group's share of the rounds so far."""
    return statistics.median(start_up_s) + sum(statistics.median(g.round_s) for g in groups if g.round_s)


def _round(groups: list[Group], r: int, settings: Settings, open_worker, rng: random.Random, log) -> float:
    """One round: a fresh worker, every block of these groups set up (and checked, in the first), then the passes.

    Returns the clock's time once the worker had started."""
    # The first rounds time every cell; a later one only the undecided, beside their reference and GEMM blocks.
    first_rounds = r < settings.rounds
    chosen = {id(g): g.members if first_rounds else g.blocks([c for c in g.cells if c.stopped is None]) for g in groups}
    blocks = list({c.id: c for g in groups for c in chosen[id(g)]}.values())
    name = f"round {r + 1}" + (f"/{settings.rounds}" if first_rounds else f", {len(groups)} problems undecided")
    worker = open_worker(rng.randrange(2**31), settings.threads, settings.cpus)
    try:
        started_s = log.clock()
        todo = [c for c in blocks if c.status == "ok"]
        what = "set up and check" if r == 0 else "set up"
        log(f"{name}: {what} {len(todo)} steps and GEMM blocks")
        # Later rounds warm each step up with three calls: its compilation is cached by then, and each block
        # starts with an untimed call; 0.1 s per step would be a sixth of such a round's set-up.
        prepared = worker.setup([c.payload() for c in todo], check=r == 0, warm_up_s=None if r == 0 else 0.0)
        for cell, got in zip(todo, prepared, strict=True):
            _prepared(cell, got, first=r == 0, block_s=settings.block_s)
        timed = {c.id for c in todo if c.status == "ok"}
        for c in todo:
            if c.id in timed:
                c.times.append([])
                c.vs_reference.append([])
                c.vs_gemm.append([])
        live = [g for g in groups if any(c.id in timed for c in g.cells)]
        for j in range(settings.passes):
            order = live[:]
            rng.shuffle(order)
            for g in order:
                _time_group(worker, g, [c for c in chosen[id(g)] if c.id in timed], rng, settings.settle_s)
            if j == settings.passes - 1 or (j + 1) % max(1, settings.passes // 3) == 0:
                log(f"{name}: pass {j + 1}/{settings.passes} of {len(live)} problems")
        for cell_id in worker.finish():
            cell = next(c for c in blocks if c.id == cell_id)
            cell.fail("diverged", "weights no longer finite after timing")
    finally:
        worker.close()
    return started_s


def _prepared(cell: Cell, got: dict, first: bool, block_s: float) -> None:
    if first:
        cell.worst_ratio = got.get("worst_ratio")
        cell.create_s, cell.check_s = got.get("create_s"), got.get("check_s")
        cell.details = got.get("details") or {}
        cell.options = got.get("create_options") or {}  # later rounds create the step that was checked
        cell.flops = got.get("flops") or impls.flops(cell.problem)
    if got["status"] != "ok":
        cell.fail(got["status"], got["reason"] if first else f"in a later process: {got['reason']}")
    elif first:
        cell.number = max(1, math.ceil(block_s / got["call_s"]))


def _time_group(worker, group: Group, blocks: list[Cell], rng: random.Random, settle_s: float) -> None:
    """One block of each of `blocks` (this round's of the group), in random order; each cell's ratios
    to the reference and the GEMM block of the same group."""
    blocks = blocks[:]
    rng.shuffle(blocks)
    # A block of one call that lasts a block by itself is timed cold, as in the gate.
    requests = [[c.id, c.number, c.number > 1] for c in blocks]
    seconds = dict(zip((c.id for c in blocks), worker.group(requests, settle_s), strict=True))
    ref = seconds.get(group.reference.id)
    for cell in group.cells:
        own = seconds.get(cell.id)
        if own is None:  # not timed in this round (decided, or failed)
            continue
        cell.times[-1].append(own)
        if ref is not None and cell is not group.reference:
            cell.vs_reference[-1].append((ref, own))
        gemm = seconds.get(group.gemm[cell.device].id)
        if gemm is not None:
            cell.vs_gemm[-1].append((gemm, own))
    if group.reference not in group.cells and ref is not None:  # hidden: kept for the record
        group.reference.times[-1].append(ref)


def _looks(cell: Cell, settings: Settings) -> int:
    """Verdicts asked of this cell's growing sample: after the first rounds, then after each extra round."""
    return 1 + max(0, len(cell.times) - settings.rounds)


def _speedup(cell: Cell, settings: Settings) -> tuple[float | None, float | None, float | None]:
    """(speed-up, low, high) over the reference: 1 for the reference by definition, None where it did not run."""
    if cell.name == REFERENCE:
        return 1.0, 1.0, 1.0
    if not any(cell.vs_reference):
        return None, None, None
    est = paired.estimate([r for r in cell.vs_reference if r], seed=settings.seed, looks=_looks(cell, settings))
    return 1 / est.ratio, 1 / est.high, 1 / est.low  # time ratio -> speed-up


def figures(cell: Cell, settings: Settings, gemm_flops: float) -> Figures:
    """The cell's speed-up over the reference and fraction of the GEMM rate, each with its interval."""
    speedup, low, high = _speedup(cell, settings)
    fraction = f_low = f_high = None
    if any(cell.vs_gemm):
        est = paired.estimate([r for r in cell.vs_gemm if r], seed=settings.seed, looks=_looks(cell, settings))
        scale = cell.flops / gemm_flops  # the step's FLOPs over a product's: at equal rates, this time ratio
        fraction, f_low, f_high = scale / est.ratio, scale / est.high, scale / est.low
    groups = sum(map(len, cell.times))
    return Figures(speedup, low, high, fraction, f_low, f_high, sum(1 for t in cell.times if t), groups)


def wide(speedup: float | None, low: float | None, high: float | None, width: float) -> bool:
    """Whether a speed-up's interval is wider than +-width of its value (undecided). The reference's is
    exact, and a cell without a speed-up (its problem's reference failed) has nothing to narrow."""
    if speedup is None:
        return False
    return high > speedup * (1 + width) or low < speedup / (1 + width)


def narrow(cell: Cell, settings: Settings) -> bool:
    """Whether the cell's speed-up interval is within +-width: it needs no more rounds."""
    return not wide(*_speedup(cell, settings), settings.width)


def seconds_summary(cell: Cell) -> tuple[list[float], float, float]:
    """(every block's seconds per call, their median, IQR/median) over all rounds: the absolute time."""
    samples = [t for r in cell.times for t in r]
    median = float(np.median(samples))
    q25, q75 = np.percentile(samples, [25, 75])
    return samples, median, float((q75 - q25) / median)


class ProcessWorker:
    """A round's worker: a fresh process of this checkout (bench/gate/worker.py), its pools asleep between blocks."""

    def __init__(self, seed: int, threads: int | None, cpus: list[int] | None):
        from bench.gate.sides import Side
        from bench.gate.workers import WorkerProcess
        from bench.harness import environment
        from impls import threads as thread_budget

        side = Side("head", "working tree", None, None, sys.executable, environment.REPO)
        self.process = WorkerProcess(side, seed, threads or thread_budget.budget(), cpus, waits=SHORT_WAITS)

    def setup(self, payloads: list[dict], check: bool, warm_up_s: float | None = None) -> list[dict]:
        return self.process.ask(op="setup", cells=payloads, check=check, warm_up_s=warm_up_s)["cells"]

    def group(self, blocks: list, settle_s: float) -> list[float]:
        return self.process.ask(op="group", blocks=blocks, settle_s=settle_s)["t"]

    def finish(self) -> list[str]:
        return self.process.ask(op="finish")["diverged"]

    def environment(self) -> dict:
        return self.process.ask(op="environment")["environment"]

    def close(self) -> None:
        self.process.close()
