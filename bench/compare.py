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
beyond the threshold (bench.paired).

Exit status: 1 when a cell is confidently slower (or HEAD disagrees with the oracle), 0
otherwise, 2 on bad arguments. Nothing is written under results/ unless --save is given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import math
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import impls
from impls import threads

from . import cli, environment, grid, paired, peak

WORKER = pathlib.Path(__file__).resolve().parent / "compare_worker.py"
DEFAULT_SELECT = "(seed or tutorial or medium) and not n0"  # the preset cells; sweep ids start n0
EXPORTED = ("impls", "pyproject.toml")  # what a side's checkout needs: the package under comparison
# Thread pools that sleep as soon as their work is done. By default OpenBLAS's threads spin
# for about 2^28 cycles (0.1 s) after each call and OpenMP's for a while too: in an
# interleaved pair the side that has just finished would still be burning a core while the
# other side's block runs. Both sides run with the same settings.
PASSIVE_WAITS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}


class Refused(cli.Fatal):
    """Bad arguments or an environment that cannot run the suite: one line, exit status 2."""


@dataclasses.dataclass
class Side:
    role: str  # "base" or "head"
    spec: str  # what the user wrote: a revision, or "working tree"
    commit: str | None  # full sha; None for the working tree
    dirty: bool | None
    python: str
    checkout: pathlib.Path | None = None
    environment: dict | None = None

    @property
    def label(self) -> str:
        where = self.commit[:8] if self.commit else "working tree" + (" (dirty)" if self.dirty else "")
        return f"{self.spec} [{where}]" if self.spec not in ("working tree",) else where


@dataclasses.dataclass
class Cell:
    id: str  # the pytest-benchmark id: numpy-seed-float32-sgd, numpy-n01024-float32
    test: str  # test_step or test_step_batch_sweep
    name: str
    problem: impls.Problem
    status: str = "ok"  # ok | skipped | disagrees | diverged | error
    reason: str = ""
    worst_ratio: dict = dataclasses.field(default_factory=dict)  # per side
    number: int = 1  # calls per block, the same on both sides
    pairs: list = dataclasses.field(default_factory=list)  # per round: [(base_s, head_s), ...]
    first: list = dataclasses.field(default_factory=list)  # per round: which side's block ran first in each pair

    def keywords(self) -> list[str]:
        """The names pytest's -k matches for this cell in the pytest-benchmark suite."""
        return ["bench", "test_step.py", f"{self.test}[{self.id}]", "parametrize"]


# --- which cells ---------------------------------------------------------------------------


def all_cells() -> list[Cell]:
    """Every cell of the grid (bench.grid), with the ids of the pytest-benchmark suite."""
    cells = [
        Cell("-".join(case), "test_step", case[0], grid.preset_problem(*case[1:]))
        for case in grid.preset_cases()
        if grid.size_skip_reason(case[0], case[1]) is None
    ]
    cells += [
        Cell("-".join(case), "test_step_batch_sweep", case[0], grid.sweep_problem(*case[1:]))
        for case in grid.sweep_cases()
    ]
    return cells


def _keyword_matcher(cell: Cell):
    """pytest's -k rule: a word matches when it is a case-insensitive substring of one of the cell's names."""
    names = [n.lower() for n in cell.keywords()]
    return lambda word, **_: any(word.lower() in n for n in names)


def select(cells: list[Cell], expression: str | None) -> list[Cell]:
    """The cells a pytest -k expression selects; by default the preset cells of the CPU implementations."""
    from _pytest.mark.expression import Expression

    text = DEFAULT_SELECT if expression is None else expression
    try:
        compiled = Expression.compile(text)
    except Exception as error:  # pytest's ParseError
        raise Refused(f"-k {text!r} is not a valid selection: {error}") from None
    chosen = [cell for cell in cells if compiled.evaluate(_keyword_matcher(cell))]
    if expression is None:
        chosen = [c for c in chosen if grid.device(c.name) == "cpu"]
    if not chosen:
        raise Refused(f"-k {text!r} selects no cell of the grid (ids look like numpy-seed-float32-sgd)")
    return chosen


# --- the two sides -------------------------------------------------------------------------


def _git(*args) -> str:
    return subprocess.run(
        ["git", "-C", str(environment.REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def resolve_commit(spec: str) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except (OSError, subprocess.CalledProcessError):
        raise Refused(f"unknown revision {spec!r} (not a commit of this repository)") from None


def resolve_python(env: str | None) -> str:
    """A tox env name (.tox/ENV), the path of an interpreter, or None for this one."""
    if env is None:
        return sys.executable
    tox = environment.REPO / ".tox" / env / "bin" / "python"
    for candidate in (tox, pathlib.Path(env)):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise Refused(f"environment {env!r} is neither a tox env in .tox/ (run tox -e {env} first) nor a Python")


def export(commit: str) -> pathlib.Path:
    """A clean export of the revision's package, cached by commit (numba's compiled kernels stay beside it)."""
    target = peak.cache_dir() / "compare-checkouts" / commit
    if (target / "impls" / "__init__.py").is_file():
        return target
    archive = subprocess.run(
        ["git", "-C", str(environment.REPO), "archive", "--format=tar", commit, *EXPORTED],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise Refused(f"revision {commit[:8]} has no {' or '.join(EXPORTED)}: {archive.stderr.decode().strip()}")
    tmp = target.with_name(f".{commit}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    try:
        tmp.rename(target)  # whole or not at all: an interrupted export is never reused
    except OSError:  # another compare exported it meanwhile
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return target


def make_side(role: str, spec: str | None, env: str | None) -> Side:
    python = resolve_python(env)
    if spec is None:
        state = environment.git_state()
        return Side(role, "working tree", None, state["dirty"], python, environment.REPO)
    return Side(role, spec, resolve_commit(spec), False, python)


# --- worker processes ----------------------------------------------------------------------


class WorkerProcess:
    """One side's process; requests and replies are JSON lines (bench/compare_worker.py)."""

    def __init__(self, side: Side, seed: int, budget: int, cpus=None, passive: bool = True):
        self.side = side
        env = {**os.environ, threads.ENV: str(budget), **(PASSIVE_WAITS if passive else {})}
        command = [side.python, str(WORKER), "--checkout", str(side.checkout), "--seed", str(seed)]
        if cpus is not None:
            command += ["--cpus", ",".join(map(str, cpus))]
        # A file, not a pipe: a worker that prints much (numba's warnings) must never block on a full pipe.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
        )
        hello = self._read()
        if "error" in hello:
            raise Refused(f"{side.role} ({side.label}, {side.python}): {hello['error']}")

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            self.stderr.seek(0)
            tail = self.stderr.read().strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(
                f"{self.side.role} worker ({self.side.python}) exited with status {self.process.returncode}: {tail[0]}"
            )
        return json.loads(line)

    def send(self, **request) -> None:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()

    def ask(self, **request) -> dict:
        self.send(**request)
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send(op="quit")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            with contextlib.suppress(OSError):
                stream.close()


# --- the measurement -----------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    procedure: str = "duet"  # chosen by measurement: see the README
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
            if got["status"] != "ok" and cell.status == "ok":
                cell.status, cell.reason = got["status"], f"{role}: {got['reason']}"
        if cell.status == "ok":
            cell.number = max(1, math.ceil(block_s / base["call_s"]))


def _later_round_check(cells: list[Cell], prepared: dict[str, list[dict]]) -> None:
    for i, cell in enumerate(cells):
        for role in ("base", "head"):
            got = prepared[role][i]
            if cell.status == "ok" and got["status"] != "ok":
                cell.status, cell.reason = got["status"], f"{role}, in a later process: {got['reason']}"


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
                    cell.status, cell.reason = "diverged", f"{role}: weights no longer finite after timing"
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
        return workers["base"]._read()["t"], workers["head"]._read()["t"], "both"
    roles = ["base", "head"]
    if rng.random() < 0.5:
        roles.reverse()
    got = {role: workers[role].ask(**request)["t"] for role in roles}
    return got["base"], got["head"], roles[0]


# --- the verdicts and the report -----------------------------------------------------------


def verdicts(cells: list[Cell], threshold: float) -> list[dict]:
    rows = []
    for cell in cells:
        row = {"cell": cell.id, "implementation": cell.name, "problem": dataclasses.asdict(cell.problem)}
        row["agreement_worst_ratio"] = cell.worst_ratio
        if cell.status != "ok":
            # What went wrong on HEAD fails the gate; on BASE alone it only leaves the cell unmeasured.
            on_head = cell.reason.startswith("head")
            verdict = "skipped" if cell.status == "skipped" or not on_head else cell.status
            row.update(verdict="failed" if verdict in ("diverged", "error") else verdict, why=cell.reason)
        else:
            est = paired.estimate(cell.pairs)
            verdict, why = paired.verdict(est, threshold)
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
                pairs=cell.pairs,
                first=cell.first,
            )
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
        f"{'cell':<{width}}  {'BASE us':>12}  {'HEAD us':>12}  {'HEAD/BASE':>9}  {'interval':>15}  verdict",
    ]
    for r in rows:
        if "ratio" in r:
            interval = f"[{r['low']:.3f}, {r['high']:.3f}]"
            lines.append(
                f"{r['cell']:<{width}}  {_us(r['base_median_s']):>12}  {_us(r['head_median_s']):>12}  "
                f"{r['ratio']:9.3f}  {interval:>15}  {r['verdict']}"
            )
        else:
            lines.append(f"{r['cell']:<{width}}  {'':>12}  {'':>12}  {'':>9}  {'':>15}  {r['verdict']}: {r['why']}")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in paired.ORDER}
    lines += [
        "",
        ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + f"; {settings.procedure}, {settings.thread_budget} thread(s) per side, {settings.rounds} processes per side,"
        + f" {settings.pairs} pairs per cell and process,"
        + f" {wall_s:.0f} s",
    ]
    unsure = [r for r in rows if r["verdict"] == "unsure"]
    if unsure:
        lines.append(
            f"unsure: {unsure[0]['why']}" if len({r["why"] for r in unsure}) == 1 else "unsure: see why per cell"
        )
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
        "wall_s": wall_s,
        "base": side(base),
        "head": side(head),
        "cells": rows,
    }


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
