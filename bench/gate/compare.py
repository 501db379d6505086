"""`python -m bench compare BASE [HEAD]`: is HEAD's step slower than BASE's, measured here and now?

    python -m bench compare BASE [HEAD] [-k SELECT] [--threshold 0.05] [--json FILE] [--save]
                            [--base-env ENV] [--head-env ENV] [--procedure interleave|duet]

BASE and HEAD are git revisions; HEAD defaults to the working tree. Each side runs from its
own checkout (a clean export of the revision's `impls`, or the working tree) in processes
of its own, started with the side's interpreter (--base-env/--head-env: a tox env name or
the path of a Python; default this one), so two library versions at one revision compare
the same way as two revisions. Both sides pass the agreement check before anything is timed.

The two sides are measured in one time window, paired: a block of calls of BASE's step and
a block of HEAD's, at once on separate CPUs (duet, on a quiet machine) or one after the other
in a random order (interleave, chosen when other work holds a core), each cell's pairs spread
over the whole window, across several processes per side (rounds) whose memory layouts are
randomised. A cell is called slower or faster only when the whole confidence interval of
HEAD/BASE lies beyond the threshold (bench.gate.paired); cells still undecided after the first
rounds get more, until decided or --max-time is spent.

Exit status: 1 when a cell is confidently slower (or HEAD disagrees with the oracle), 3 when
none is but some remain undecided, 0 only when every cell is decided same or faster, 2 on bad
arguments. Nothing is written under results/ unless --save is given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys

from bench.gate import Refused, paired
from bench.gate.cells import all_cells, select
from bench.gate.output import record, table, verdicts
from bench.gate.rounds import QUIET, Settings, choose_procedure, run
from bench.gate.sides import export, make_side
from bench.harness import cli, environment, load
from impls import threads

UNDECIDED_EXIT = 3  # CI can retry or fail on it, as its owner chooses


def parser() -> cli.Parser:
    p = cli.Parser(prog="python -m bench compare", description=__doc__.split("\n\n")[0])
    p.add_argument("base", metavar="BASE", help="git revision to compare against")
    p.add_argument("head", metavar="HEAD", nargs="?", default=None, help="git revision (default: the working tree)")
    p.add_argument("-k", dest="select", default=None, metavar="SELECT", help="pytest -k expression over cell ids")
    p.add_argument("--threshold", type=float, default=0.05, help="relative change to call (default 0.05)")
    p.add_argument(
        "--json", type=pathlib.Path, default=None, metavar="FILE", help="every paired sample, both environments"
    )
    p.add_argument("--save", action="store_true", help="also write the record under results/compare/<machine>/")
    p.add_argument(
        "--base-env", default=None, metavar="ENV", help="tox env name or Python for BASE (default: this one)"
    )
    p.add_argument(
        "--head-env", default=None, metavar="ENV", help="tox env name or Python for HEAD (default: this one)"
    )
    p.add_argument(
        "--procedure",
        choices=("auto", "duet", "interleave"),
        default=Settings.procedure,
        help="auto: duet on a quiet machine, interleave on the free cores beside other work (default)",
    )
    p.add_argument("--rounds", type=cli.positive_int, default=Settings.rounds, help="processes per side for every cell")
    p.add_argument(
        "--max-time",
        type=float,
        default=Settings.max_time_s,
        metavar="S",
        help="undecided cells get more rounds while the run stays within S seconds (default %(default).0f)",
    )
    p.add_argument(
        "--max-rounds", type=cli.positive_int, default=Settings.max_rounds, help="at most this many rounds for any cell"
    )
    p.add_argument(
        "--pairs", type=cli.positive_int, default=Settings.pairs, help="pairs of blocks per cell and process"
    )
    p.add_argument("--block", type=float, default=Settings.block_s, metavar="S", help="shortest block, seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of the random order and layouts")
    p.add_argument(
        "--passive",
        action=argparse.BooleanOptionalAction,
        default=Settings.passive,
        help="thread pools sleep when idle",
    )
    p.add_argument("--list", action="store_true", help="print the selected cells and exit")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        return _main(args, argv)
    except Refused as why:
        print(f"python -m bench compare: error: {why}", file=sys.stderr)
        return cli.USAGE_ERROR
    except KeyboardInterrupt:  # the workers got the same SIGINT and are gone; nothing was written
        print("\npython -m bench compare: interrupted; nothing written", file=sys.stderr)
        return cli.INTERRUPTED


def _main(args, argv) -> int:
    if not 0 < args.threshold < 1:
        raise Refused(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.rounds < 2 or args.pairs < 2 or args.block <= 0:
        raise Refused("--rounds and --pairs must be at least 2 (the interval needs a spread), --block positive")
    if args.max_rounds < args.rounds or args.max_time <= 0:
        raise Refused(f"--max-rounds must be at least --rounds ({args.rounds}), --max-time positive")
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise Refused(f"--json {args.json}: not a file in an existing folder")
    threads.budget()  # a bad STEPBENCH_THREADS is refused now, not in the workers
    cells = select(all_cells(), args.select)
    if args.list:
        print("\n".join(c.id for c in cells))
        return 0
    settings = Settings(
        args.procedure, args.rounds, args.pairs, args.block, args.passive, args.threshold, args.seed,
        max_time_s=args.max_time, max_rounds=args.max_rounds,
    )  # fmt: skip
    base, head = make_side("base", args.base, args.base_env), make_side("head", args.head, args.head_env)
    for side in (base, head):
        if side.checkout is None:
            side.checkout = export(side.commit)
    during = load.OtherWork()
    choose_procedure(settings, *load.probe())
    _warn_if_busy("before the run", settings.other_work_before)
    print(
        f"compare: {len(cells)} cells, BASE {base.label}, HEAD {head.label}, {settings.procedure} "
        f"({settings.why_procedure}), {settings.rounds} processes per side, up to {settings.max_time_s:.0f} s",
        file=sys.stderr,
    )
    wall_s = run(base, head, cells, settings)
    settings.other_work_during = during.cores_busy()
    _warn_if_busy("during the run", settings.other_work_during)
    rows = verdicts(cells, settings)
    print(table(rows, base, head, settings, wall_s))
    data = record(rows, base, head, settings, wall_s, argv)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"compare: wrote {args.json}", file=sys.stderr)
    if args.save:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{(base.commit or 'worktree')[:8]}-{(head.commit or 'worktree')[:8]}.json"
        path = environment.REPO / "results" / "compare" / environment.machine_name() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(f"compare: saved {path.relative_to(environment.REPO)}", file=sys.stderr)
    return exit_status(rows)


def exit_status(rows: list[dict]) -> int:
    """1 when a cell is slower (or HEAD fails), else 3 when a cell is undecided, else 0."""
    if any(r["verdict"] in paired.FAILING for r in rows):
        return 1
    return UNDECIDED_EXIT if any(r["verdict"] == paired.UNSURE for r in rows) else 0


def _warn_if_busy(when: str, other: float | None) -> None:
    if other is not None and other >= QUIET:
        print(
            f"compare: warning: the machine is busy {when}: other processes kept {other:.1f} of "
            f"{load.cores()} cores busy; the verdicts allow for it (more rounds, wider intervals), "
            "and the record keeps the figure",
            file=sys.stderr,
        )
