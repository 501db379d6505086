"""`make bench`: check, then time every available implementation at the seed and tutorial presets."""

from __future__ import annotations

import statistics
import sys
import timeit

import impls
from impls import agreement

PRESETS = ("seed", "tutorial")
DTYPES = ("float32", "float64")
REPEATS = 7


def time_per_step(step) -> float:
    """Median seconds per step over REPEATS runs of an autoranged loop (at least 0.2 s each)."""
    timer = timeit.Timer(lambda: (step.step(), step.sync()))
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(REPEATS, number))


def measure(name: str, problem: impls.Problem) -> str | float:
    """Seconds per step, or why it was not timed."""
    report = agreement.check(impls.create(name, problem))
    if not report.ok:
        print(report, file=sys.stderr)
        return "disagrees"
    return time_per_step(impls.create(name, problem))


def main() -> None:
    reasons = impls.available()
    runnable = [n for n, r in reasons.items() if r is None]
    for name, reason in reasons.items():
        if reason is not None:
            print(f"skipping {name}: {reason}", file=sys.stderr)
    columns = [(preset, dtype) for dtype in DTYPES for preset in PRESETS]
    cells: dict[tuple, str | float] = {}
    total = len(runnable) * len(columns)
    for i, (name, (preset, dtype)) in enumerate(((n, c) for n in runnable for c in columns), 1):
        print(f"[{i}/{total}] {name} {preset} {dtype}", file=sys.stderr, flush=True)
        cells[name, preset, dtype] = measure(name, impls.Problem.preset(preset, dtype=dtype))
    width = max(len(n) for n in runnable)
    header = " ".join(f"{p + ' ' + d:>22}" for p, d in columns)
    print(f"\nus/step (median of {REPEATS}); x = speed-up over numpy\n{'':<{width}} {header}")
    for name in runnable:
        row = []
        for preset, dtype in columns:
            cell, ref = cells[name, preset, dtype], cells.get(("numpy", preset, dtype))
            if isinstance(cell, str):
                row.append(f"{cell:>22}")
            else:
                speedup = f"{ref / cell:6.2f}x" if isinstance(ref, float) else "    n/a"
                row.append(f"{cell * 1e6:13.1f} {speedup:>8}")
        print(f"{name:<{width}} {' '.join(row)}")


if __name__ == "__main__":
    main()
