"""What the gate reports: a verdict per cell, the console table, and the JSON record (--json, --save)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import statistics

from bench.gate import paired, rounds
from bench.gate.cells import Cell
from bench.gate.rounds import Settings
from bench.gate.sides import Side
from bench.harness import environment, load, peak


def verdicts(cells: list[Cell], settings: Settings) -> list[dict]:
    rows = []
    for cell in cells:
        row = {"cell": cell.id, "implementation": cell.name, "problem": dataclasses.asdict(cell.problem)}
        row["agreement_worst_ratio"] = cell.worst_ratio
        if cell.status != "ok":
            # What went wrong on HEAD fails the gate; on BASE alone it only leaves the cell unmeasured.
            on_head = cell.failed_side == "head"
            verdict = "skipped" if cell.status == "skipped" or not on_head else cell.status
            row.update(verdict="failed" if verdict in ("diverged", "error") else verdict, why=cell.why)
        else:
            est, verdict, why = rounds.judge(cell, settings)
            flat = [p for pairs in cell.pairs for p in pairs]
            row.update(
                verdict=verdict,
                why=why,
                ratio=est.ratio,
                low=est.low,
                high=est.high,
                base_median_s=statistics.median([b for b, _ in flat]),
                head_median_s=statistics.median([h for _, h in flat]),
                calls_per_block=cell.number,
                rounds=len(cell.pairs),
                stopped=cell.stopped,
                pairs=cell.pairs,
                first=cell.first,
            )
            if any(cell.options.values()) or cell.head_chose:  # a step that chose how to run at create
                row["plans"] = {"base": cell.options.get("base"), "head": cell.options.get("head")}
                row["plans"]["head_chose"] = cell.head_chose
        rows.append(row)
    rank = {v: i for i, v in enumerate(paired.ORDER)}
    rows.sort(key=lambda r: (rank[r["verdict"]], -r.get("ratio", 0)))
    return rows


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def table(rows: list[dict], base: Side, head: Side, settings: Settings, wall_s: float) -> str:
    width = max(len(r["cell"]) for r in rows)
    lines = [
        f"HEAD {head.label} against BASE {base.label}: median us per step, HEAD/BASE with its "
        f"{paired.CONFIDENCE:.0%} interval; threshold {settings.threshold:.0%}",
        "",
        f"{'cell':<{width}}  {'BASE us':>12}  {'HEAD us':>12}  {'HEAD/BASE':>9}  {'interval':>15}  {'rounds':>6}  verdict",
    ]
    for r in rows:
        if "ratio" in r:
            interval = f"[{r['low']:.3f}, {r['high']:.3f}]"
            lines.append(
                f"{r['cell']:<{width}}  {_us(r['base_median_s']):>12}  {_us(r['head_median_s']):>12}  "
                f"{r['ratio']:9.3f}  {interval:>15}  {r['rounds']:>6}  {r['verdict']}"
            )
        else:
            lines.append(
                f"{r['cell']:<{width}}  {'':>12}  {'':>12}  {'':>9}  {'':>15}  {'':>6}  {r['verdict']}: {r['why']}"
            )
    counts = {v: sum(r["verdict"] == v for r in rows) for v in paired.ORDER}
    lines += [
        "",
        ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + f"; {settings.procedure} ({settings.why_procedure}), {settings.thread_budget} thread(s) per side,"
        + f" {settings.rounds} processes per side and more for undecided cells (up to {settings.max_rounds}),"
        + f" {settings.pairs} pairs per cell and process, {wall_s:.0f} s",
    ]
    undecided = [r for r in rows if r["verdict"] == paired.UNSURE]
    if undecided:
        stops = sorted({r["stopped"] for r in undecided})
        lines.append(
            f"unsure: {undecided[0]['why']}" if len({r["why"] for r in undecided}) == 1 else "unsure: see why per cell"
        )
        lines.append(f"unsure cells stopped: {', '.join(stops)} (--max-time, --max-rounds give them more)")
    return "\n".join(lines)


def portable(value):
    """`value` with this machine's paths (the checkout, the cache, the home folder) as <repo>, <cache>, ~.

    A record may be committed (--save) or shared: where the interpreter or the export lay on
    this machine is kept only relative to those places.
    """
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if not isinstance(value, str):
        return value
    for prefix, name in ((peak.cache_dir(), "<cache>"), (environment.REPO, "<repo>"), (pathlib.Path.home(), "~")):
        prefix = str(pathlib.Path(prefix).resolve())
        if value == prefix or value.startswith(prefix + os.sep):
            return name + value[len(prefix) :]
    if os.path.isabs(value):  # elsewhere: the last parts say what it was (.venv/bin/python), not where
        return os.path.join("...", *pathlib.PurePath(value).parts[-3:])
    return value


def record(rows, base: Side, head: Side, settings: Settings, wall_s: float, argv) -> dict:
    def side(s: Side) -> dict:
        return {
            "role": s.role,
            "spec": s.spec,
            "commit": s.commit,
            "dirty": s.dirty,
            "python": portable(s.python),
            "checkout": "working tree" if s.commit is None else "export",
            "environment": portable(s.environment),
        }

    return {
        "command": ["python", "-m", "bench", "compare", *argv],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": environment.machine(),
        "machine_name": environment.machine_name(),
        "settings": dataclasses.asdict(settings) | {"confidence": paired.CONFIDENCE},
        "load_average_at_end": load.load_average(),
        "wall_s": wall_s,
        "base": side(base),
        "head": side(head),
        "cells": rows,
    }
