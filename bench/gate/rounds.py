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
import sys
import time

from bench.gate import Refused
from bench.gate.cells import Cell
from bench.gate.sides import Side
from bench.gate.workers import WorkerProcess
from impls import threads


@dataclasses.dataclass
class Settings:
    procedure: str = "duet"  # chosen by measurement: see docs/gate.md
    rounds: int = 4  # processes per side
    pairs: int = 12  # pairs of blocks per cell and round
    block_s: float = 0.02  # the shortest block; a slower call is a block by itself
    passive: bool = True  # PASSIVE_WAITS in both sides' processes
    threshold: float = 0.05
    seed: int = 0
    thread_budget: int | None = None  # each side's, set when the run starts (a duet gives each side half the CPUs)


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

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _setup(workers: dict[str, WorkerProcess], cells: list[Cell], check: bool) -> dict[str, list[dict]]:
    payload = [{"id": c.id, "name": c.name, "problem": dataclasses.asdict(c.problem)} for c in cells]
    return {role: w.ask(op="setup", cells=payload, check=check)["cells"] for role, w in workers.items()}


def _first_round_verdicts(cells: list[Cell], prepared: dict[str, list[dict]], block_s: float) -> None:
    """Agreement and availability on both sides decide which cells are timed; BASE's call time sizes the blocks."""
    for i, cell in enumerate(cells):
        base, head = prepared["base"][i], prepared["head"][i]
        for role, got in (("base", base), ("head", head)):
            if "worst_ratio" in got:
                cell.worst_ratio[role] = got["worst_ratio"]
        for role, got in (("head", head), ("base", base)):  # HEAD's failure is the one that matters
            if got["status"] != "ok":
                cell.fail(got["status"], role, got["reason"])
        if cell.status == "ok":
            cell.number = max(1, math.ceil(block_s / base["call_s"]))


def _later_round_check(cells: list[Cell], prepared: dict[str, list[dict]]) -> None:
    for i, cell in enumerate(cells):
        for role in ("base", "head"):
            got = prepared[role][i]
            if got["status"] != "ok":
                cell.fail(got["status"], role, f"in a later process: {got['reason']}")


def run(base: Side, head: Side, cells: list[Cell], settings: Settings) -> float:
    """Measure every cell, filling cell.pairs; returns the wall time in seconds."""
    rng = random.Random(settings.seed)
    duet = settings.procedure == "duet"
    budget, halves = duet_split() if duet else (threads.budget(), [None, None])
    settings.thread_budget = budget
    progress = Progress(settings.rounds * (1 + settings.pairs * len(cells)))
    start = time.perf_counter()
    for r in range(settings.rounds):
        # In a duet the sides swap cores every round, so neither keeps the better ones.
        cpu = {"base": halves[r % 2], "head": halves[(r + 1) % 2]}
        workers = {}
        try:
            for side in (base, head):
                workers[side.role] = WorkerProcess(side, rng.randrange(2**31), budget, cpu[side.role], settings.passive)
            if r == 0:
                for side in (base, head):
                    side.environment = workers[side.role].ask(op="environment")["environment"]
            prepared = _setup(workers, [c for c in cells if c.status == "ok"] if r else cells, check=r == 0)
            if r == 0:
                _first_round_verdicts(cells, prepared, settings.block_s)
            else:
                _later_round_check([c for c in cells if c.status == "ok"], prepared)
            progress.advance(f"round {r + 1}/{settings.rounds}: set up")
            live = [c for c in cells if c.status == "ok"]
            for c in live:
                c.pairs.append([])
                c.first.append([])
            for j in range(settings.pairs):
                order = live[:]
                rng.shuffle(order)
                for cell in order:
                    base_s, head_s, first = _pair(workers, cell, duet, rng)
                    cell.pairs[r].append((base_s, head_s))
                    cell.first[r].append(first)
                progress.advance(f"round {r + 1}/{settings.rounds}: pair {j + 1}/{settings.pairs}", len(cells))
            for role, w in workers.items():
                for cell_id in w.ask(op="finish")["diverged"]:
                    cell = next(c for c in cells if c.id == cell_id)
                    cell.fail("diverged", role, "weights no longer finite after timing")
        finally:
            for w in workers.values():
                w.close()
    progress.close()
    return time.perf_counter() - start


def duet_split() -> tuple[int, list[list[int]]]:
    """(threads per side, the two sides' CPUs): half the CPUs each, at most the thread budget."""
    cpus = sorted(os.sched_getaffinity(0))
    per_side = min(threads.budget(), len(cpus) // 2)
    if per_side < 1:
        raise Refused("--procedure duet needs two CPUs, one per side; use --procedure interleave")
    return per_side, [cpus[:per_side], cpus[len(cpus) // 2 : len(cpus) // 2 + per_side]]


def _pair(workers, cell: Cell, duet: bool, rng: random.Random) -> tuple[float, float, str]:
    """(base seconds per call, head seconds per call, which ran first) from one block each."""
    request = {"op": "time", "cell": cell.id, "number": cell.number}
    if duet:  # both blocks at once, each on its own cores
        for w in workers.values():
            w.send(**request)
        return workers["base"].read()["t"], workers["head"].read()["t"], "both"
    roles = ["base", "head"]
    if rng.random() < 0.5:
        roles.reverse()
    got = {role: workers[role].ask(**request)["t"] for role in roles}
    return got["base"], got["head"], roles[0]
