"""`python -m bench triage` (`make triage`): are the alerts of the asv history true? Each re-measured paired, here and now.

    python -m bench triage [--machine NAME ...] [--threshold 0.05] [--max-time S] [--list]

The alerts are those asv's Regressions page lists for each machine of results/asv (asv's own
step detection, run by `asv publish`). Each is re-measured with the gate (python -m bench
compare) between the last commit before the step and the first after it: confirmed (slower),
refuted (same or faster) or undecided, with its interval. Each confirmed alert is bisected
over the commits between, three-way, and its first slower commit named (bench.triage.bisection).
The record goes to results/triage/<machine>.json, written after every gate run; `make dashboard`
shows it on the Triage page beside asv's Regressions.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile

from bench.asvtools import dashboard
from bench.harness import cli, environment
from bench.triage import record
from bench.triage.alerts import Alert
from bench.triage.bisection import triage
from bench.triage.remeasure import Gate


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m bench triage", description=__doc__.split("\n")[0])
    p.add_argument(
        "--machine", action="append", default=None, metavar="NAME",
        help="a machine of results/asv whose alerts to triage (repeatable; default: every machine)",
    )  # fmt: skip
    p.add_argument("--threshold", type=float, default=0.05, help="relative change the gate calls (default 0.05)")
    p.add_argument(
        "--max-time", type=cli.non_negative_seconds, default=1800.0, metavar="S",
        help="seconds for the whole triage, every gate run in it (default %(default).0f)",
    )  # fmt: skip
    p.add_argument(
        "--run-max-time", type=cli.non_negative_seconds, default=600.0, metavar="S",
        help="seconds for any one gate run, its extra rounds included (default %(default).0f)",
    )  # fmt: skip
    p.add_argument("--list", action="store_true", help="print the alerts and what would re-measure each; run nothing")
    return p


def commits_between(before: str, after: str, repo: pathlib.Path = environment.REPO) -> list[str]:
    """The commits after `before` up to `after`, oldest first, on the first-parent line (asv's revisions)."""
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--first-parent", "--reverse", f"{before}..{after}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not out or out[-1] != after:
        raise cli.Fatal(f"{after[:8]} does not follow {before[:8]} on the first-parent line: no range to bisect")
    return out


def alerts_by_machine(machines: list[str] | None) -> dict[str, list[Alert]]:
    results = environment.REPO / "results" / "asv"
    known = sorted(p.parent.name for p in results.glob("*/machine.json"))
    for name in machines or ():
        if name not in known:
            raise cli.Fatal(f"--machine {name}: no such machine in results/asv (there: {', '.join(known)})")
    with tempfile.TemporaryDirectory() as html:
        alerts = dashboard.publish(environment.REPO / "asv.conf.json", pathlib.Path(html)).alerts
    return {m: [a for a in alerts if a.machine == m] for m in (machines or known)}


def _list(by_machine: dict[str, list[Alert]]) -> None:
    for machine, alerts in by_machine.items():
        print(f"{machine}: {len(alerts)} alerts")
        for a in alerts:
            cell, why = a.cell()
            what = f"gate cell {cell.id}" if cell else f"not re-measured: {why}"
            span = len(commits_between(a.before, a.after))
            print(f"  {a.factor:5.2f}x {a.benchmark}  {a.before[:8]}..{a.after[:8]} ({span} commits)  {what}")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not 0 < args.threshold < 1:
        raise cli.Fatal(f"--threshold must be between 0 and 1, got {args.threshold}")
    by_machine = alerts_by_machine(args.machine)
    if args.list:
        _list(by_machine)
        return 0
    gate = Gate(threshold=args.threshold, max_time_s=args.max_time, run_max_s=args.run_max_time)
    results = environment.REPO / "results"
    for machine, alerts in by_machine.items():
        target = record.path(results, machine)
        print(
            f"triage: {machine}: {len(alerts)} alerts; record {target.relative_to(environment.REPO)}", file=sys.stderr
        )
        entries = []

        def measure(base, head, cells, machine=machine):
            print(
                f"triage: {machine}: gate run {len(gate.runs) + 1}: {len(cells)} cells, {base[:8]} -> {head[:8]}, "
                f"{max(0.0, gate.left_s()):.0f} s of --max-time left",
                file=sys.stderr,
            )
            return gate(base, head, cells)

        def done(so_far, machine=machine, target=target, entries=entries):
            entries[:] = so_far
            record.write(target, record.build(so_far, machine, gate, "in progress"))

        try:
            triage(alerts, measure, commits_between, done)
        except KeyboardInterrupt:
            if entries:
                record.write(target, record.build(entries, machine, gate, "interrupted"))
            raise
        final = record.build(entries or [], machine, gate, "complete")
        record.write(target, final)
        if final["alerts"]:
            print(record.table(final))
        else:
            print(f"{machine}: no alerts")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench triage", main))
