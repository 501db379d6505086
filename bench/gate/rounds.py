"""The measurement: rounds of worker processes per side, each timing every cell in paired blocks.

A pair is a block of calls of BASE's step and a block of HEAD's, back to back in a random
order (interleave) or at once on separate CPUs (duet), each cell's pairs spread over the
whole window. Each round starts fresh processes, whose memory layouts are randomised.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import statistics
import sys
import time

from bench.gate import Refused, paired
from bench.gate.cells import Cell
from bench.gate.sides import Side
from bench.gate.workers import WorkerProcess
from impls import threads


@dataclasses.dataclass
class Settings:
    procedure: str = (
        "auto"  # duet on a quiet machine, interleave beside other work: chosen by measurement, docs/gate.md
    )
    rounds: int = 4  # processes per side, for every cell
    pairs: int = 12  # pairs of blocks per cell and round
    block_s: float = 0.02  # the shortest block; a slower call is a block by itself
    passive: bool = True  # PASSIVE_WAITS in both sides' processes
    threshold: float = 0.05
    seed: int = 0
    max_time_s: float = 840.0  # undecided cells get more rounds while the next one fits in this (the whole run's wall)
    max_rounds: int = 16  # and never more rounds than this for any cell
    # A cell's pairs in one round stop once its blocks (both sides') have taken this long, after at least
    # MIN_PAIRS: where one call is a block by itself and lasts seconds (the large preset), 12 pairs of
    # every such cell made a round last minutes. Stopping depends on both sides' times alike, not their ratio.
    pairs_budget_s: float = 4.0
    thread_budget: int | None = None  # each side's, set when the run starts (a duet gives each side half the CPUs)
    other_work_before: float | None = None  # cores other processes kept busy, measured before the first round
    other_work_during: float | None = None  # ... and on average over the whole run
    cpus: list[int] | None = None  # interleave: both sides pinned to these (the CPUs other work left free)
    why_procedure: str = ""


def extra_rounds(settings: Settings) -> int:
    """Rounds added at a time: two in a duet, so that every cell keeps its sides on each half equally often."""
    return 2 if settings.procedure == "duet" else 1


QUIET = 0.25  # cores of other work below which the machine counts as quiet
MIN_PAIRS = 3  # per cell and round, however long its blocks: a median that one disturbed pair cannot move


class Progress:
    """One line on stderr: rewritten in place on a terminal, a new line every 10% otherwise."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def advance(self, what: str, n: int = 1) -> None:
        self.done += n
        fraction = self.done / self.total
        elapsed = time.perf_counter() - self.start
        line = f"compare: {fraction:4.0%} {what:<36} {elapsed:5.0f} s elapsed"
        if fraction >= 0.1:  # set-up dominates the start; an estimate from it would mislead
            line += f", about {elapsed / fraction - elapsed:4.0f} s left"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif int(fraction * 10) > self.shown:
            self.shown = int(fraction * 10)
            print(line, file=sys.stderr, flush=True)

    def extend(self, n: int) -> None:
        """More work than planned (extra rounds): the fraction done drops back, and the estimate with it."""
        self.total += n

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _setup(workers: dict[str, WorkerProcess], cells: list[Cell], check: bool) -> dict[str, list[dict]]:
    """Both sides set up at once (the agreement check and numba's compilation are most of a first round).

    After the first round each side creates the step it checked: a create that chose how to run
    (numba:blas's plan, by timing trials) is given that side's choice, and makes no other."""
    for role, w in workers.items():
        w.send(op="setup", cells=[_payload(c, c.options.get(role)) for c in cells], check=check)
    return {role: w.read()["cells"] for role, w in workers.items()}


def _payload(cell: Cell, options: dict | None) -> dict:
    """A cell as a worker's set-up takes it, created with these impls.create options (none: its create chooses)."""
    return (
        {"id": cell.id, "name": cell.name, "problem": dataclasses.asdict(cell.problem)}
        | ({"options": options} if options else {})
        | ({"call": cell.call} if cell.call != "step" else {})
    )


def _first_round_verdicts(cells: list[Cell], prepared: dict[str, list[dict]], block_s: float) -> None:
    """Agreement and availability on both sides decide which cells are timed; BASE's call time sizes the blocks."""
    for i, cell in enumerate(cells):
        base, head = prepared["base"][i], prepared["head"][i]
        for role, got in (("base", base), ("head", head)):
            if "worst_ratio" in got:
                cell.worst_ratio[role] = got["worst_ratio"]
            cell.options[role] = got.get("create_options") or {}
        for role, got in (("head", head), ("base", base)):  # HEAD's failure is the one that matters
            if got["status"] != "ok":
                cell.fail(got["status"], role, got["reason"])
        if cell.status == "ok":
            cell.number = max(1, math.ceil(block_s / base["call_s"]))


def _one_plan(head: WorkerProcess, cells: list[Cell]) -> None:
    """Both sides timed with BASE's plan, where their creates chose how to run and chose differently.

    numba:blas chooses its plan by timing trials, and two ways a few per cent apart are decided
    by noise. Each side would otherwise keep its own draw for the whole run (later rounds are
    given it): on identical code, with one core held by another process, the two sides chose
    differently at seed float32 and the gate called numba:blas 1.168 [1.157, 1.178] slower, every
    round alike. HEAD's step is created again with BASE's plan and checked; where HEAD cannot make
    it (its plans differ), it keeps its own, and the record says which plan each side ran.
    """
    differ = [c for c in cells if c.status == "ok" and c.options.get("base") and c.options["base"] != c.options["head"]]
    if not differ:
        return
    payload = [_payload(c, c.options["base"]) for c in differ]
    for cell, got in zip(differ, head.ask(op="setup", cells=payload, check=True)["cells"], strict=True):
        if got["status"] == "ok":
            cell.head_chose, cell.options["head"] = cell.options["head"], dict(cell.options["base"])
            cell.worst_ratio["head"] = got.get("worst_ratio", cell.worst_ratio.get("head"))


def _later_round_check(cells: list[Cell], prepared: dict[str, list[dict]]) -> None:
    for i, cell in enumerate(cells):
        for role in ("base", "head"):
            got = prepared[role][i]
            if got["status"] != "ok":
                cell.fail(got["status"], role, f"in a later process: {got['reason']}")


def choose_procedure(settings: Settings, other: float | None, per_cpu: dict[int, float] | None = None) -> None:
    """ "auto": duet when the machine is quiet; otherwise interleave, pinned to the CPUs left free.

    With a core held by another process, a duet pins one side beside it, and that side's blocks
    take up to twice as long: measured on the 2-core VM, A/A cells were called 1.55x slower with
    confident intervals. Interleaved, both sides' blocks run on the same free CPUs, one after the
    other, with as many threads as there are such CPUs; pinned there, they leave the other work
    its own CPUs rather than sharing them in turn (docs/gate.md).
    """
    settings.other_work_before = other
    if settings.procedure != "auto":
        settings.why_procedure = "chosen on the command line"
        return
    quiet = quiet_reason(other)
    if quiet:
        settings.procedure, settings.why_procedure = "duet", quiet
        return
    settings.procedure = "interleave"
    settings.thread_budget, settings.cpus, settings.why_procedure = free_cpus(other, per_cpu)


def quiet_reason(other: float | None) -> str | None:
    """Why the machine counts as quiet beside `other` cores of other work (None: unmeasured), or None where it is busy."""
    if other is None:
        return "no measure of other work here"
    return "the machine is quiet" if other < QUIET else None


def threads_beside(other: float | None, per_cpu: dict[int, float] | None) -> tuple[int, list[int] | None, str]:
    """(threads, CPUs to pin to or None, why): the budget on a quiet machine, else free_cpus()."""
    quiet = quiet_reason(other)
    return (threads.budget(), None, quiet) if quiet else free_cpus(other, per_cpu)


def free_cpus(other: float, per_cpu: dict[int, float] | None) -> tuple[int, list[int] | None, str]:
    """(threads, CPUs to pin to or None, why) beside `other` cores of other work: as many threads as
    CPUs it leaves free (at most the thread budget), on the least busy CPUs where /proc/stat says which."""
    mine = sorted(os.sched_getaffinity(0))
    free = max(1, min(threads.budget(), math.floor(len(mine) - other + QUIET)))
    busy = per_cpu or {}
    cpus = sorted(sorted(mine, key=lambda c: (busy.get(c, 0.0), c))[:free]) if busy else None
    where = f" (CPUs {','.join(map(str, cpus))})" if cpus else ""
    return free, cpus, f"other work holds {other:.1f} cores: blocks one after the other on the free ones{where}"


def looks(cell: Cell, settings: Settings) -> int:
    """How many verdicts this cell's sample has been asked for: after the first rounds, then after each extra group."""
    return 1 + max(0, len(cell.pairs) - settings.rounds) // extra_rounds(settings)


def judge(cell: Cell, settings: Settings) -> tuple[paired.Estimate, str, str]:
    """(estimate, verdict, why) of a measured cell, its interval allowing for every look taken so far."""
    est = paired.estimate(cell.pairs, looks=looks(cell, settings))
    return (est, *paired.verdict(est, settings.threshold))


def run(base: Side, head: Side, cells: list[Cell], settings: Settings, clock=time.perf_counter) -> float:
    """Measure every cell, filling cell.pairs; returns the wall time in seconds.

    `settings.rounds` rounds for every cell, then groups of extra_rounds() for the cells still
    undecided, until none is, or a cell has `max_rounds`, or the next rounds would not fit in
    `max_time_s`. Each cell records how many rounds it got and why it stopped.
    """
    if settings.procedure not in ("duet", "interleave"):
        raise ValueError(f"procedure {settings.procedure!r}: choose_procedure() decides 'auto' before the run")
    rng = random.Random(settings.seed)
    if settings.procedure == "duet":
        settings.thread_budget, halves = duet_split()
    else:
        settings.thread_budget, halves = settings.thread_budget or threads.budget(), [settings.cpus, settings.cpus]
    start = clock()
    progress = Progress(settings.rounds * (1 + settings.pairs * len(cells)))
    group = extra_rounds(settings)
    r, start_up_s = 0, []
    while True:
        first_rounds = r < settings.rounds
        wanted = [c for c in cells if c.status == "ok" and (first_rounds or c.stopped is None)]
        if not wanted:
            break
        # At the start of each group of rounds, once there are two rounds to make an interval
        # from: does the next group fit in the time left?
        if r >= 2 and (r - settings.rounds) % group == 0:
            left = settings.max_time_s - (clock() - start)
            if _round_s(wanted, start_up_s) * group > left:
                for c in wanted:
                    c.stopped = "time budget spent"
                break
            if not first_rounds:
                progress.extend(group * (1 + settings.pairs * len(wanted)))
        round_start = clock()
        started_s = _round(base, head, cells if r == 0 else wanted, r, settings, halves, rng, progress, clock)
        if r > 0:  # the first round's agreement checks and compilation say nothing of later rounds
            start_up_s.append(started_s - round_start)
            for c in wanted:
                c.round_s.append((clock() - started_s) / len(wanted))
        r += 1
        if r >= settings.rounds and (r - settings.rounds) % group == 0:
            for c in cells:
                if c.status != "ok" or c.stopped is not None:
                    continue
                if judge(c, settings)[1] != paired.UNSURE:
                    c.stopped = "decided"
                elif len(c.pairs) >= settings.max_rounds:
                    c.stopped = "round limit"
    progress.close()
    return clock() - start


def _round_s(cells: list[Cell], start_up_s: list[float]) -> float:
    """What one more round of these cells will take: starting the two processes, then each cell's
    share of the rest (its set-up and pairs) in the rounds so far."""
    return statistics.median(start_up_s) + sum(statistics.median(c.round_s) for c in cells if c.round_s)


def _round(
    base: Side, head: Side, cells: list[Cell], r: int, settings: Settings, halves, rng, progress, clock
) -> float:
    """One round: a fresh process per side, the cells set up (and checked, in the first), then the pairs.

    Returns the clock's time once both processes had started (their interpreters and imports)."""
    duet = settings.procedure == "duet"
    # In a duet the sides start on alternate halves every round and cross over within each pair (_crossover).
    cpu = {"base": halves[r % 2], "head": halves[(r + 1) % 2]}
    label = f"round {r + 1}" + (f"/{settings.rounds}" if r < settings.rounds else f", {len(cells)} undecided")
    workers = {}
    try:
        for side in (base, head):
            workers[side.role] = WorkerProcess(
                side, rng.randrange(2**31), settings.thread_budget, cpu[side.role], settings.passive
            )
        cpu = dict(cpu)  # where each process is now: a duet's crossovers move them
        started_s = clock()
        if r == 0:
            for side in (base, head):
                side.environment = workers[side.role].ask(op="environment")["environment"]
        prepared = _setup(workers, cells, check=r == 0)
        if r == 0:
            _first_round_verdicts(cells, prepared, settings.block_s)
            _one_plan(workers["head"], cells)
        else:
            _later_round_check(cells, prepared)
        progress.advance(f"{label}: set up")
        live = [c for c in cells if c.status == "ok"]
        for c in live:
            c.pairs.append([])
            c.first.append([])
        spent = {c.id: 0.0 for c in live}  # seconds of blocks this round, both sides
        for j in range(settings.pairs):
            order = [c for c in live if len(c.pairs[-1]) < MIN_PAIRS or spent[c.id] < settings.pairs_budget_s]
            rng.shuffle(order)
            for cell in order:
                base_s, head_s, first = _pair(workers, cell, duet, rng, cpu)
                cell.pairs[-1].append((base_s, head_s))
                cell.first[-1].append(first)
                spent[cell.id] += (base_s + head_s) * cell.number * (2 if duet else 1)
            progress.advance(f"{label}: pair {j + 1}/{settings.pairs}", len(cells))
        for role, w in workers.items():
            for cell_id in w.ask(op="finish")["diverged"]:
                cell = next(c for c in cells if c.id == cell_id)
                cell.fail("diverged", role, "weights no longer finite after timing")
    finally:
        for w in workers.values():
            w.close()
    return started_s


def duet_split() -> tuple[int, list[list[int]]]:
    """(threads per side, the two sides' CPUs): half the CPUs each, at most the thread budget."""
    cpus = sorted(os.sched_getaffinity(0))
    per_side = min(threads.budget(), len(cpus) // 2)
    if per_side < 1:
        raise Refused("--procedure duet needs two CPUs, one per side; use --procedure interleave")
    return per_side, [cpus[:per_side], cpus[len(cpus) // 2 : len(cpus) // 2 + per_side]]


def _pair(workers, cell: Cell, duet: bool, rng: random.Random, where=None) -> tuple[float, float, str]:
    """(base seconds per call, head seconds per call, which ran first) from one block each (a duet: two, crossed).

    where: in a duet, {role: CPUs} where each side's process is now; the crossover moves them and updates it."""
    # A block of one call that lasts a block by itself is timed cold: both sides alike, at half the cost.
    request = {"op": "time", "cell": cell.id, "number": cell.number, "warm": cell.number > 1}
    if duet:
        return (*_crossover(workers, request, where), "both")
    roles = ["base", "head"]
    if rng.random() < 0.5:
        roles.reverse()
    got = {role: workers[role].ask(**request)["t"] for role in roles}
    return got["base"], got["head"], roles[0]


def _crossover(workers, request: dict, where: dict) -> tuple[float, float]:
    """Two duets, the sides on each other's CPUs in the second; each side's geometric mean of its two blocks.

    Both blocks of a duet run at once, each side on its own CPUs, so whatever slows the machine
    slows both; but on a VM one virtual CPU is often slower than the other for seconds at a time
    (its host core busy with another guest). In one duet that slows one side only: measured on the
    2-core VM, the gate's A/A rounds then read 1.05-1.25 for a few seconds, the next round (sides
    swapped) 0.85-0.95. With the sides crossed over within the pair, a CPU's factor c enters
    HEAD's one block and BASE's other: sqrt(h*c*h / (b*b*c)) = h/b, whatever c is, so long as it
    holds for the two duets (tens of ms). Each side's process is moved whole (every thread) before
    its block; the untimed call before the block brings its data into the new core's cache.
    """
    times = {"base": [], "head": []}
    for crossed in (False, True):
        if crossed:
            where["base"], where["head"] = where["head"], where["base"]
        for role, w in workers.items():
            w.send(**request, **({"cpus": where[role]} if crossed else {}))
        for role, w in workers.items():
            times[role].append(w.read()["t"])
    return math.sqrt(times["base"][0] * times["base"][1]), math.sqrt(times["head"][0] * times["head"][1])
