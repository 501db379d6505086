"""How far two `make bench` runs agree: each speed-up of one against the other's, and against its interval.

    python -m bench.job.two_runs FIRST/results.json SECOND/results.json

One line per cell both runs timed (numpy's own, 1 by definition, left out), the worst first: the two
speed-ups, how far apart, the second run's interval and whether it holds the first run's value, and
whether each run left it undecided. Then the counts the README quotes. Two runs at different thread
counts measure different things: the line before the cells says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys


@dataclasses.dataclass(frozen=True)
class Agreement:
    cell: tuple  # (implementation, label, dtype, optimizer)
    first: float
    second: float
    low: float  # the second run's interval
    high: float
    undecided: tuple[bool, bool]

    @property
    def apart(self) -> float:
        """The second speed-up relative to the first, in log terms made symmetric: 0.05 is 5% either way."""
        return max(self.second / self.first, self.first / self.second) - 1

    @property
    def contains(self) -> bool:
        return self.low <= self.first <= self.high


def agreements(first: dict, second: dict) -> list[Agreement]:
    def key(r):
        return r["implementation"], r["label"], r["problem"]["dtype"], r["problem"]["optimizer"]

    reference = first["settings"]["reference"]
    earlier = {key(r): r for r in first["results"] if r["status"] == "ok" and r.get("speedup") is not None}
    out = []
    for r in second["results"]:
        a = earlier.get(key(r))
        if a is None or r["status"] != "ok" or r.get("speedup") is None or r["implementation"] == reference:
            continue
        out.append(
            Agreement(key(r), a["speedup"], r["speedup"], r["speedup_low"], r["speedup_high"],
                      (a["undecided"], r["undecided"]))
        )  # fmt: skip
    return sorted(out, key=lambda x: -x.apart)


def text(first: dict, second: dict, within: float = 0.05) -> str:
    found = agreements(first, second)
    threads = [run.get("measurement", {}).get("threads") for run in (first, second)]
    lines = [f"threads: {threads[0]} in the first run, {threads[1]} in the second"]
    if threads[0] != threads[1]:
        lines[0] += " (different thread counts: the speed-ups are of different configurations)"
    for a in found:
        name = " ".join(a.cell)
        marks = "/".join("undecided" if u else "decided" for u in a.undecided)
        lines.append(
            f"{name:<36} {a.first:7.3f}x {a.second:7.3f}x {a.apart:6.1%} apart; second interval "
            f"{a.low:.3f}-{a.high:.3f} {'holds' if a.contains else 'misses'} the first; {marks}"
        )
    close = sum(a.apart <= within for a in found)
    held = sum(a.contains for a in found)
    lines.append(
        f"within {within:.0%}: {close} of {len(found)}; second interval holds the first: {held} of {len(found)}"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.job.two_runs", description=__doc__.splitlines()[0])
    parser.add_argument("first", type=pathlib.Path, help="a results.json of make bench")
    parser.add_argument("second", type=pathlib.Path)
    args = parser.parse_args(argv)
    runs = []
    for path in (args.first, args.second):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            parser.error(f"{path}: {error}")
        if "measurement" not in runs[-1]:
            parser.error(f"{path}: a results.json without paired speed-ups (written before they were measured paired)")
    print(text(*runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
