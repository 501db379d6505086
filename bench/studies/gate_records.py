"""What did gate runs decide? The rows of docs/gate.md's measured table, read from `compare --json` records.

    python -m bench.studies.gate_records RECORD.json... [--slowed numpy,numba]

One markdown row per record: the procedure the gate chose and how many cores other work held,
the verdicts, the intervals' half-widths (half the interval's width over the ratio), the rounds
per cell, the wall time and the exit status today's rule gives for the verdicts (a record of the gate
before exit status 3 ended with 0 where a cell was unsure). A record whose two sides are the
same commit and interpreter is an A/A run: every cell is unchanged code. In any other record the
cells of the implementations named by `--slowed` (prefixes, as the throwaway commit of
results/compare/*/detection-throwaway.diff names them) are the slowed ones, counted apart with
their ratios; the rest are unchanged. Reading the records rather than copying figures by hand
keeps the table and the records from drifting apart (tests/test_gate_records.py checks the page).
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from bench.gate import compare, paired
from bench.harness import cli
from bench.studies.triage_trials import SLOWED

HEADER = (
    "| record | procedure chosen | other work (cores) | unchanged cells: slower / faster / same / unsure "
    "| slowed cells: slower / same / unsure (ratios) | half-width median / p90 / max | rounds per cell | wall | exit |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def is_a_a(record: dict) -> bool:
    """Both sides ran the same commit, clean, with the same interpreter: no cell's code differs."""
    base, head = record["base"], record["head"]
    return (
        base["commit"] == head["commit"]
        and not base["dirty"]
        and not head["dirty"]
        and base["python"] == head["python"]
    )


def summary(record: dict, slowed: tuple[str, ...] = SLOWED) -> dict:
    """The figures of one record; `slowed` is ignored for an A/A record."""
    cells = record["cells"]
    if not cells:
        raise ValueError("the record has no cells")
    touched = () if is_a_a(record) else slowed
    slowed_cells, unchanged = [], []
    for c in cells:
        (slowed_cells if touched and c["implementation"].startswith(touched) else unchanged).append(c)
    half = [100 * (c["high"] - c["low"]) / 2 / c["ratio"] for c in cells if c.get("high") is not None]
    settings = record["settings"]
    # Records written before the gate added rounds for unsure cells name the fixed count in the settings only.
    rounds = [c["rounds"] if "rounds" in c else settings["rounds"] for c in cells]
    return {
        "cells": len(cells),
        "a_a": touched == (),
        "procedure": settings["procedure"],
        "threads": settings["thread_budget"],
        "cpus": settings.get("cpus"),
        "other_work": settings.get("other_work_during"),
        "unchanged": _count(unchanged),
        "slowed": _count(slowed_cells),
        "slowed_ratios": [c["ratio"] for c in slowed_cells],
        "half_width_pct": (np.median(half), np.percentile(half, 90), max(half)) if half else None,
        "rounds": (min(rounds), max(rounds)),
        "wall_s": record["wall_s"],
        "exit": compare.exit_status(cells),
    }


def _count(cells: list[dict]) -> dict:
    counts = {v: sum(c["verdict"] == v for c in cells) for v in ("slower", "faster", "same", paired.UNSURE)}
    counts["failed"] = len(cells) - sum(counts.values())  # disagreed, failed or skipped: no timing to judge
    return counts


def row(name: str, s: dict) -> str:
    """One markdown row of HEADER for the record called `name`."""
    where = f" on CPUs {','.join(map(str, s['cpus']))}" if s["procedure"] == "interleave" and s["cpus"] else ""
    procedure = f"{s['procedure']}{where}, {s['threads']} thread(s) a side"
    other = "-" if s["other_work"] is None else f"{s['other_work']:.1f}"
    u = s["unchanged"]
    unchanged = f"{u['slower']} / {u['faster']} / {u['same']} / {u['unsure']}" + (
        f" ({u['failed']} failed)" if u["failed"] else ""
    )
    if s["a_a"]:
        slowed = "none (A/A)"
    else:
        w = s["slowed"]
        ratios = s["slowed_ratios"]
        span = f" ({min(ratios):.3f}-{max(ratios):.3f})" if ratios else ""
        slowed = f"{w['slower']} of {len(ratios)} / {w['same']} / {w['unsure']}{span}"
    half = "-" if s["half_width_pct"] is None else " / ".join(f"{v:.1f}%" for v in s["half_width_pct"])
    low, high = s["rounds"]
    rounds = str(low) if low == high else f"{low}-{high}"
    return f"| {name} | {procedure} | {other} | {unchanged} | {slowed} | {half} | {rounds} | {s['wall_s']:.0f} s | {s['exit']} |"


def table(paths: list[pathlib.Path], slowed: tuple[str, ...] = SLOWED) -> str:
    rows = [row(f"`{p.name}`", summary(json.loads(p.read_text()), slowed)) for p in paths]
    return "\n".join([HEADER, *rows])


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m bench.studies.gate_records", description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="+", type=pathlib.Path, help="JSON records written by compare --json or --save")
    p.add_argument(
        "--slowed",
        default=",".join(SLOWED),
        help="implementation prefixes the HEAD of a non-A/A record slowed (default: %(default)s)",
    )
    args = p.parse_args(argv)
    slowed = tuple(x for x in args.slowed.split(",") if x)
    for path in args.records:
        if not path.is_file():
            raise cli.Fatal(f"no such record: {path}")
    try:
        print(table(args.records, slowed))
    except (ValueError, KeyError, json.JSONDecodeError) as problem:
        raise cli.Fatal(f"not a compare record ({type(problem).__name__}: {problem})") from problem
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.studies.gate_records", main))
