"""The triage's measure: one run of the gate (bench.gate) between two commits over a few cells, here and now.

Each run is the gate's own: both sides exported from the repository, agreement checked first,
the procedure chosen by measuring the machine, more rounds for unsure cells within the
run's share of the triage's time. The runs are kept (commits, cells, procedure, other work,
wall time) for the record.
"""

from __future__ import annotations

import dataclasses
import time

from bench.gate import output, rounds
from bench.gate.cells import Cell
from bench.gate.rounds import Settings
from bench.gate.sides import export, make_side
from bench.harness import load
from bench.triage.bisection import Measured

MIN_RUN_S = 20.0  # a gate run given less stops every cell after two rounds: too short to decide anything


@dataclasses.dataclass
class Gate:
    threshold: float = 0.05
    max_time_s: float = 1800.0  # the whole triage's
    run_max_s: float = 600.0  # any one gate run's, extra rounds included
    seed: int = 0
    runs: list[dict] = dataclasses.field(default_factory=list)
    clock: object = time.monotonic

    def __post_init__(self):
        self.start = self.clock()

    def left_s(self) -> float:
        return self.max_time_s - (self.clock() - self.start)

    def __call__(self, base: str, head: str, cells: list[Cell]) -> dict[str, Measured]:
        budget = min(self.run_max_s, self.left_s())
        if budget < MIN_RUN_S:  # not even the first rounds would fit: not run, and said so
            return {
                c.id: Measured(
                    base, head, "skipped", why=f"the triage's --max-time ({self.max_time_s:.0f} s) was spent"
                )
                for c in cells
            }
        settings = Settings(threshold=self.threshold, seed=self.seed + len(self.runs), max_time_s=budget)
        sides = make_side("base", base, None), make_side("head", head, None)
        for side in sides:
            side.checkout = export(side.commit)
        during = load.OtherWork()
        rounds.choose_procedure(settings, *load.probe())
        wall_s = rounds.run(*sides, cells, settings)
        rows = output.verdicts(cells, settings)
        self.runs.append(
            {
                "base": sides[0].commit,
                "head": sides[1].commit,
                "cells": [c.id for c in cells],
                "procedure": settings.procedure,
                "why_procedure": settings.why_procedure,
                "threads_per_side": settings.thread_budget,
                "other_work_before": settings.other_work_before,
                "other_work_during": during.cores_busy(),
                "wall_s": wall_s,
            }
        )
        return {
            r["cell"]: Measured(
                sides[0].commit,
                sides[1].commit,
                r["verdict"],
                r.get("ratio"),
                r.get("low"),
                r.get("high"),
                r.get("rounds", 0),
                r.get("why", ""),
            )  # fmt: skip
            for r in rows
        }
