"""The data-parallel step measured for `make bench`: each rank count against numpy, and the all-reduce's share.

In `make bench` (bench.job.main), `figures()` times each data-parallel entry at W = 1 ... the thread
budget against numpy on the same problem, in alternated blocks (bench.harness.timing.alternate, so a
machine's drift cancels in the ratio), profiles the all-reduce's share of the step, and
measures strong scaling (N fixed) and weak scaling (N per rank fixed) for ddp_scaling.png.
The torchrun entry point for clusters is bench.ddp.torchrun.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import time

import impls
from bench.harness import grid, prepare, timing
from impls import registry, threads

PAIRS = 15  # alternated block pairs per ratio, as the asv ratio tracks
PROFILED_STEPS = 20
WEAK_ROWS_PER_RANK = (1024, 4096)  # weak scaling: N = this x W, at the sweep's D, H, O


def data_parallel_names(names) -> list[str]:
    """The names among `names` whose steps take a rank count, and can run here."""
    return [n for n in names if prepare.skip_reason(n) is None and "ranks" in registry.open_options(n)]


def rank_counts(budget: int) -> list[int]:
    """1, 2, 4, ... up to the thread budget, and the budget itself."""
    counts, w = [], 1
    while w < budget:
        counts.append(w)
        w *= 2
    return [*counts, budget]


PROFILER_NOTICE = "USDT:"  # torch's profiler (kineto) writes one such line at each start and stop


@contextlib.contextmanager
def without_profiler_notices():
    """Native stderr (file descriptor 2) through a file while torch's profiler runs: its start and stop
    notices, two lines a cell, are dropped; anything else written meanwhile is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith(PROFILER_NOTICE):
                    sys.stderr.write(line)
            sys.stderr.flush()


def collective_shares(step: impls.Step, steps: int = PROFILED_STEPS) -> dict[str, float]:
    """The fraction of rank 0's time per step spent in each collective, from torch's profiler.

    A collective's span runs from its start on rank 0 to its completion, so it includes waiting
    for the slowest rank to arrive: for the all-reduce, the other ranks' compute beyond rank 0's.
    "control" is the broadcast that tells the workers what to do.
    """
    from torch.profiler import ProfilerActivity, profile

    with without_profiler_notices(), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step.step()
            step.sync()
        wall_us = (time.perf_counter() - start) * 1e6
    totals = {"all_reduce": 0.0, "control": 0.0}
    for event in prof.key_averages():
        if event.key.endswith(":all_reduce"):
            totals["all_reduce"] += event.cpu_time_total
        elif event.key.endswith(":broadcast"):
            totals["control"] += event.cpu_time_total
    return {k: v / wall_us for k, v in totals.items()}


@dataclasses.dataclass
class Cell:
    """One data-parallel entry at one rank count on one problem, against numpy on the same problem."""

    implementation: str
    ranks: int
    label: str  # preset, sweep id, or weak-<rows per rank>
    kind: str  # preset | sweep | weak
    problem: dict
    status: str  # ok | skipped | disagrees | diverged
    reason: str = ""
    agreement_worst_ratio: float | None = None
    step_s: float | None = None  # median of the step's blocks
    reference_s: float | None = None  # median of numpy's blocks, alternated with them
    ratio: float | None = None  # median over pairs of step / numpy: below 1 is faster than numpy
    all_reduce_share: float | None = None
    control_share: float | None = None


def _cell(name, ranks, label, kind, problem, preset) -> Cell:
    cell = Cell(name, ranks, label, kind, dataclasses.asdict(problem), "ok")
    try:
        prepared = prepare.prepare(name, problem, preset, ranks=ranks)
        reference = prepare.prepare(grid.REFERENCE, problem, preset)
    except (prepare.Skip, prepare.Disagrees, prepare.Diverged) as why:
        cell.status = {prepare.Skip: "skipped", prepare.Disagrees: "disagrees"}.get(type(why), "diverged")
        cell.reason = str(why)
        return cell
    cell.agreement_worst_ratio = prepared.verdict.worst_ratio
    pairs = timing.alternate(prepare.synced(prepared.step), prepare.synced(reference.step), pairs=PAIRS)
    cell.step_s = timing.Timing([a for a, _ in pairs], 1).median
    cell.reference_s = timing.Timing([b for _, b in pairs], 1).median
    cell.ratio = timing.median_ratio(pairs)
    shares = collective_shares(prepared.step)
    cell.all_reduce_share, cell.control_share = shares["all_reduce"], shares["control"]
    prepare.assert_finite(prepared.step)
    return cell


def figures(names, presets, dtypes, optimizers, sweep, progress=None) -> dict:
    """Every data-parallel entry in `names` at each rank count, on the presets, the sweep and the weak-scaling sizes."""
    from impls import torch_ddp

    selected = data_parallel_names(names)
    counts = rank_counts(threads.budget())
    problems = [(p, "preset", p, grid.preset_problem(p, d, o)) for p in presets for d in dtypes for o in optimizers]
    if sweep:
        problems += [
            (n_id, "sweep", None, grid.sweep_problem(n_id, d)) for n_id in grid.sweep_selection(sweep) for d in dtypes
        ]
    cells = []
    for name in selected:
        with torch_ddp.shared_ranks():  # one set of workers per rank count for all of this entry's cells
            for ranks in counts:
                todo = list(problems)
                if sweep:
                    d, h, o = grid.SWEEP_SHAPE
                    for rows in WEAK_ROWS_PER_RANK:
                        for dtype in dtypes:
                            base = grid.sweep_problem(grid.SWEEP_IDS[0], dtype)
                            todo.append((f"weak-{rows}", "weak", None, base.replace(n=rows * ranks)))
                for label, kind, preset, problem in todo:
                    cell = _cell(name, ranks, label, kind, problem, preset)
                    cells.append(cell)
                    if progress:
                        progress(cell)
    return {
        "implementations": selected,
        "ranks": counts,
        "reference": grid.REFERENCE,
        "reference_threads": threads.budget(),
        "pairs": PAIRS,
        "profiled_steps": PROFILED_STEPS,
        "weak_rows_per_rank": list(WEAK_ROWS_PER_RANK),
        "cells": [dataclasses.asdict(c) for c in cells],
    }


def progress_line(cell: Cell) -> str:
    if cell.status != "ok":
        return f"{cell.implementation} W={cell.ranks} {cell.label}: {cell.status}: {cell.reason.splitlines()[0]}"
    return (
        f"{cell.implementation} W={cell.ranks} {cell.label:<11} {cell.problem['dtype']}: "
        f"{cell.step_s * 1e6:10.1f} us/step, {cell.ratio:5.2f}x numpy's time, "
        f"all-reduce {cell.all_reduce_share:4.0%} of the step"
    )
