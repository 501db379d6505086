"""`python -m bench compare BASE [HEAD]`: is HEAD's step slower than BASE's, measured here and now?

    python -m bench compare BASE [HEAD] [-k SELECT] [--threshold 0.05] [--json FILE] [--save]
                            [--base-env ENV] [--head-env ENV] [--procedure interleave|duet]

BASE and HEAD are git revisions; HEAD defaults to the working tree. Each side runs from its
own checkout (a clean export of the revision's `impls`, or the working tree) in processes
of its own, started with the side's interpreter (--base-env/--head-env: a tox env name or
the path of a Python; default this one), so two library versions at one revision compare
the same way as two revisions. Both sides pass the agreement check before anything is timed.

The two sides are measured in one time window, paired: a block of calls of BASE's step, a
block of HEAD's, in a random order per pair, each cell's pairs spread over the whole
window, across several processes per side (rounds) whose memory layouts are randomised. A
cell is called slower or faster only when the whole confidence interval of HEAD/BASE lies
beyond the threshold (bench.gate.paired).

Exit status: 1 when a cell is confidently slower (or HEAD disagrees with the oracle), 0
otherwise, 2 on bad arguments. Nothing is written under results/ unless --save is given.
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
from bench.gate.rounds import Settings, run
from bench.gate.sides import export, make_side
from bench.harness import cli, environment
from impls import threads


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
    p.add_argument("--procedure", choices=("duet", "interleave"), default=Settings.procedure)
    p.add_argument("--rounds", type=int, default=Settings.rounds, help="processes per side")
    p.add_argument("--pairs", type=int, default=Settings.pairs, help="pairs of blocks per cell and process")
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
    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise Refused(f"--json {args.json}: not a file in an existing folder")
    threads.budget()  # a bad STEPBENCH_THREADS is refused now, not in the workers
    cells = select(all_cells(), args.select)
    if args.list:
        print("\n".join(c.id for c in cells))
        return 0
    settings = Settings(args.procedure, args.rounds, args.pairs, args.block, args.passive, args.threshold, args.seed)
    base, head = make_side("base", args.base, args.base_env), make_side("head", args.head, args.head_env)
    for side in (base, head):
        if side.checkout is None:
            side.checkout = export(side.commit)
    print(
        f"compare: {len(cells)} cells, BASE {base.label}, HEAD {head.label}, {settings.procedure}, "
        f"{settings.rounds} processes per side",
        file=sys.stderr,
    )
    wall_s = run(base, head, cells, settings)
    rows = verdicts(cells, settings.threshold)
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
    return 1 if any(r["verdict"] in paired.FAILING for r in rows) else 0
