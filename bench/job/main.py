"""`make bench`: check, then time every available implementation; print the tables, write results/latest/.

    python -m bench [--presets seed tutorial medium] [--dtypes float32 float64] [--optimizers sgd]
                    [--implementations ...] [--sweep-sizes n00064 ...] [--no-sweep] [--no-data-parallel]
                    [--rounds N] [--max-time S] [--out DIR]

Progress goes to stderr, the tables to stdout. results/latest/ (or --out) gets results.json
(every measurement and the environment), report.md, scaling.png and, where a data-parallel
entry can run, ddp_scaling.png (bench.ddp: each rank count against numpy); it is written under a
temporary name and swapped in at the end, so an interrupted run leaves the previous one.
The speed-ups and fractions of the GEMM rate are measured paired, in rounds of fresh processes
(bench.job.measure), with their intervals. Settings are checked before anything is timed
(bench.harness.cli). Signs that the machine was busy (the load average, other work measured
before and during the run, a cached GEMM peak a quick product disagrees with, numpy's blocks
slower in one round than another) are warnings: on stderr, in results.json and report.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

import impls
from bench.ddp import scaling as ddp
from bench.gate import rounds
from bench.harness import cli, environment, grid, load, peak, prepare, timing
from bench.job import measure, plans, plots, report
from impls import threads

DEFAULT_OUT = environment.REPO / "results" / "latest"
DEFAULT_PRESETS = ("seed", "tutorial", "medium")
REPEAT_SPREAD = 1.25  # numpy's blocks, fastest round against slowest: beyond this the machine changed speed


@dataclasses.dataclass
class Result:
    """One implementation on one problem: timed, or why not."""

    implementation: str
    label: str  # the preset, or the batch-sweep id
    kind: str  # "preset" or "sweep"
    problem: dict
    flops: int
    status: str  # ok | skipped | disagrees | diverged | error
    reason: str = ""  # why skipped, or the checker's report
    agreement_worst_ratio: float | None = None
    samples_s: list[float] = dataclasses.field(default_factory=list)  # seconds per step, one per block, all rounds
    number: int = 0  # steps per block
    median_s: float | None = None
    iqr_ratio: float | None = None
    gflops: float | None = None
    peak_fraction: float | None = None  # GFLOP/s over the cached GEMM peak: absolute, so it drifts with the machine
    # Paired (bench.job.measure): numpy's time over this step's in the same groups, and the step's rate over a
    # GEMM block's alongside it, each with its 95% interval; undecided: the speed-up's is wider than +-5%.
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    gemm_fraction: float | None = None
    gemm_fraction_low: float | None = None
    gemm_fraction_high: float | None = None
    rounds: int = 0  # processes it was timed in
    groups: int = 0  # paired groups over all rounds
    undecided: bool = False
    undecided_why: str | None = None  # the interval is too wide, or the threads were fewer than the budget's
    stopped: str | None = None  # decided | round limit | time budget spent
    # Seconds paid once before timing, in the first round's process: create (compilation included), the
    # agreement check's calls, and their sum.
    create_s: float | None = None
    check_s: float | None = None
    setup_s: float | None = None
    details: dict = dataclasses.field(default_factory=dict)  # step.describe(): device, threads, choices made at create

    @property
    def dtype(self) -> str:
        return self.problem["dtype"]

    @property
    def optimizer(self) -> str:
        return self.problem["optimizer"]


def cases(names, presets, dtypes, optimizers, sweep):
    """(name, problem, label, kind, preset), problem-major so one oracle run serves every implementation."""
    for name, preset, dtype, optimizer in grid.preset_cases(presets, dtypes, optimizers, names):
        yield name, grid.preset_problem(preset, dtype, optimizer), preset, "preset", preset
    if grid.sweep_selection(sweep):
        for name, n_id, dtype in grid.sweep_cases(grid.sweep_selection(sweep), dtypes, names):
            yield name, grid.sweep_problem(n_id, dtype), n_id, "sweep", None


def warn(warnings: list[str], text: str | None) -> None:
    """Print a warning as it arises and keep it for results.json and report.md."""
    if text:
        print(f"warning: {text}", file=sys.stderr, flush=True)
        warnings.append(text)


def gemm_peaks(devices, dtypes, warnings: list[str]) -> dict:
    """{device: {dtype: GFLOP/s}}: measured where not cached yet, else the cached value, checked by a quick product."""
    peaks = {}
    for d in devices:
        peaks[d] = {}
        for dtype in dtypes:
            if peak.cached_gflops(dtype, d) is None:
                print(f"measuring the GEMM peak ({dtype} on {d}); cached in {peak.cache_dir()}", file=sys.stderr)
            peaks[d][dtype], warning = peak.checked_peak(dtype, d)
            warn(warnings, warning)
        warn(warnings, peak.dtype_warning(peaks[d], d))
        print(f"GEMM peak ({d}): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks[d].items()), file=sys.stderr)
    return peaks


def choose_threads(settings: measure.Settings, warnings: list[str]) -> None:
    """The budget's threads on a quiet machine; beside other work, the CPUs it leaves free (measured, not assumed)."""
    other, per_cpu = load.probe()
    settings.other_work_before = other
    settings.threads, settings.cpus, settings.why_threads = rounds.threads_beside(other, per_cpu)
    if rounds.quiet_reason(other):
        return
    warn(
        warnings,
        f"before the run, {settings.why_threads}: each step runs on {settings.threads} thread(s), not the budget's "
        f"{threads.budget()}; the speed-ups are paired and hold, the absolute times are those of a shared machine",
    )


def drift_warning(groups: list[measure.Group]) -> str | None:
    """numpy's blocks, round by round: the machine's speed over the run (the ratios are paired and do not carry it)."""
    worst = None
    for g in groups:
        ref = g.reference
        per_round = [float(np.median(t)) for t in ref.times if t]
        if ref.status == "ok" and len(per_round) >= 2:
            spread = max(per_round) / min(per_round)
            if worst is None or spread > worst[0]:
                worst = (spread, ref, min(per_round), max(per_round))
    if worst is None or worst[0] <= REPEAT_SPREAD:
        return None
    spread, ref, fast, slow = worst
    return (
        f"the machine's speed changed during the run: {ref.name} {ref.label} {ref.problem.dtype} {ref.problem.optimizer}"
        f" took {fast * 1e6:,.1f} us/step in its fastest round and {slow * 1e6:,.1f} in its slowest; the speed-ups "
        "are paired and allow for it, the absolute times do not: rerun on a quieter machine before quoting them"
    )


def result(cell: measure.Cell, settings: measure.Settings, peaks: dict) -> Result:
    r = Result(cell.name, cell.label, cell.kind, dataclasses.asdict(cell.problem), impls.flops(cell.problem), "ok")
    r.agreement_worst_ratio, r.details = cell.worst_ratio, cell.details
    r.create_s, r.check_s = cell.create_s, cell.check_s
    r.setup_s = None if cell.create_s is None or cell.check_s is None else cell.create_s + cell.check_s
    if cell.status != "ok" or not any(cell.times):
        r.status = cell.status if cell.status != "ok" else "error"
        r.reason = cell.reason or "not timed: the run's time budget was spent first"
        return r
    r.samples_s, r.median_s, r.iqr_ratio = measure.seconds_summary(cell)
    r.number = cell.number
    r.gflops = r.flops / r.median_s / 1e9
    r.peak_fraction = r.gflops / peaks[cell.device][cell.problem.dtype]
    gemm_flops = 2 * peak.QUICK_SIZES[cell.device] ** 3
    f = measure.figures(cell, settings, gemm_flops)
    r.speedup, r.speedup_low, r.speedup_high = f.speedup, f.speedup_low, f.speedup_high
    r.gemm_fraction, r.gemm_fraction_low, r.gemm_fraction_high = (
        f.gemm_fraction,
        f.gemm_fraction_low,
        f.gemm_fraction_high,
    )
    r.rounds, r.groups, r.stopped = f.rounds, f.groups, cell.stopped
    r.undecided_why = undecided_why(f, settings)
    r.undecided = r.undecided_why is not None
    return r


def undecided_why(f: measure.Figures, settings: measure.Settings) -> str | None:
    """Why the speed-up at the thread budget is not decided by this run, or None.

    Beside other work the run measures as many threads as the CPUs left free (two-thread blocks
    stall beside a held core). Those speed-ups are measured and printed with their intervals, but
    they are not the budget's: on the 2-core VM numba at tutorial float64 is 0.84x numpy on two
    threads and 1.12x on one. A figure of another configuration that looked decided would pass
    for the budget's in the table and in results.json, so it is marked, with the reason.
    """
    if f.speedup is None or f.speedup_low == f.speedup_high:  # no speed-up, or the reference's own (1 by definition)
        return None
    budget = threads.budget()
    if settings.threads is not None and settings.threads < budget:
        return f"measured on {settings.threads} thread(s), not the budget's {budget}: other work held the rest"
    if measure.wide(f.speedup, f.speedup_low, f.speedup_high, settings.width):
        return f"95% interval wider than +-{settings.width:.0%}"
    return None


def run(
    names, presets, dtypes, optimizers, sweep, settings=None, data_parallel=True, open_worker=None, replan=False
) -> dict:
    """Check and time every selected cell (bench.job.measure), then the data-parallel figures; the run's record.

    open_worker(seed, threads, cpus): a round's worker (default: a fresh process, measure.ProcessWorker).
    replan: a step that chooses its plan at create (numba:blas) runs its trials again instead of the plan an
    earlier run on this machine chose (bench.job.plans).
    """
    settings = settings or measure.Settings()
    todo = list(cases(names, presets, dtypes, optimizers, sweep))
    warnings: list[str] = []
    budget = threads.budget()
    warn(warnings, _when("before the run", load.busy_warning(budget)))
    devices = sorted({grid.device(n) for n in names if prepare.skip_reason(n) is None})
    peaks = gemm_peaks(devices, dtypes, warnings)
    choose_threads(settings, warnings)
    start = time.perf_counter()
    by_case, cells = {}, []
    for name, problem, label, kind, preset in todo:
        reason = prepare.skip_reason(name, preset)
        if reason is not None:
            by_case[name, label, problem] = Result(
                name, label, kind, dataclasses.asdict(problem), impls.flops(problem), "skipped", reason
            )
        else:
            cells.append(measure.Cell(name, problem, label, kind, device=grid.device(name)))
    given = {} if replan else plans.give_remembered(cells, settings.threads)
    groups = measure.build_groups(cells)
    print(
        f"timing {len(cells)} cells of {len(groups)} problems in paired groups (each with numpy's step and a GEMM "
        f"block), {settings.rounds} rounds of a fresh process, {settings.threads} thread(s): {settings.why_threads}",
        file=sys.stderr,
        flush=True,
    )
    other = load.OtherWork()
    if cells:
        measure.run(groups, settings, open_worker or measure.ProcessWorker)
    settings.other_work_during = other.cores_busy()
    plans.keep_chosen(cells, settings.threads, given)
    for cell in cells:
        by_case[cell.name, cell.label, cell.problem] = result(cell, settings, peaks)
        if cell.id in given:
            by_case[cell.name, cell.label, cell.problem].details = plans.describe_given(cell.details, given[cell.id])
    results = [by_case[name, label, problem] for name, problem, label, _, _ in todo]
    for r in results:
        if r.status in ("disagrees", "diverged", "error"):
            print(f"{r.status}: {r.implementation} {r.label} {r.dtype} {r.optimizer}", file=sys.stderr, flush=True)
    warn(warnings, drift_warning(groups))
    undecided = [r for r in results if r.undecided]
    if undecided:
        of = sum(r.speedup_low is not None and r.implementation != grid.REFERENCE for r in results)
        wide = sum(1 for r in undecided if r.undecided_why.startswith("95%"))
        fewer = len(undecided) - wide
        warn(
            warnings,
            f"{len(undecided)} of {of} speed-ups are undecided: "
            + "; ".join(
                ([f"{wide} have a 95% interval wider than +-{settings.width:.0%} after the rounds the time allowed "
                  "(--max-time)"] if wide else [])
                + ([f"{fewer} were measured on {settings.threads} thread(s), not the budget's {budget}: compare "
                    f"them with a quiet run at STEPBENCH_THREADS={settings.threads}"] if fewer else [])
            )
            + "; they are printed with their intervals",
        )  # fmt: skip
    if settings.other_work_during is not None and settings.other_work_during >= rounds.QUIET:
        warn(warnings, f"during the run, other work kept {settings.other_work_during:.1f} cores busy on average")
    figures = None
    if data_parallel and ddp.data_parallel_names(names):
        print("data-parallel entries at each rank count, alternated with numpy:", file=sys.stderr, flush=True)
        progress = lambda cell: print(f"  {ddp.progress_line(cell)}", file=sys.stderr, flush=True)  # noqa: E731
        figures = ddp.figures(names, presets, dtypes, optimizers, sweep, progress)
    warn(warnings, _when("after the run", load.busy_warning(budget, own_threads=budget)))
    return {
        "environment": environment.record(),
        "gemm_peak_gflops": peaks,
        "gemm_peak_cache": _home_relative(peak.cache_dir()),
        "plans": {"remembered": len(given), "replan": replan},
        "warnings": warnings,
        "settings": {
            "presets": list(presets),
            "dtypes": list(dtypes),
            "optimizers": list(optimizers),
            "sweep": list(grid.sweep_selection(sweep)),
            "noisy_iqr_ratio": timing.NOISY,
            "reference": grid.REFERENCE,
            "gemm_n": dict(peak.QUICK_SIZES),
        },
        "measurement": dataclasses.asdict(settings),
        "wall_s": time.perf_counter() - start,
        "results": [dataclasses.asdict(r) for r in results],
        "data_parallel": figures,
    }


def _home_relative(path: pathlib.Path) -> str:
    """A path under the home folder as ~/...: results.json is committed, and the user's home is not the reader's."""
    try:
        return "~/" + path.resolve().relative_to(pathlib.Path.home().resolve()).as_posix()
    except ValueError:
        return str(path)


def _seconds(s: float | None) -> str:
    return "n/a" if s is None else f"{s:.2f} s"


def _when(moment: str, text: str | None) -> str | None:
    return text and f"{moment}, {text}"


OUTPUTS = ("results.json", "report.md", "scaling.png", "ddp_scaling.png")


def write(data: dict, out: pathlib.Path) -> None:
    """results.json, report.md and scaling.png into `out`, replacing them only once all are written; other files stay.

    Without a sweep there is nothing to plot: no scaling.png is written, and an earlier
    run's is removed with the rest of its output rather than left beside data it does not show.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        (tmp / "results.json").write_text(json.dumps(data, indent=1) + "\n")
        plot = "scaling.png" if data["settings"]["sweep"] else None
        if plot:
            plots.plot_scaling(data, tmp / plot)
        ranks_plot = "ddp_scaling.png" if plots.has_rank_scaling(data) else None
        if ranks_plot:
            plots.plot_rank_scaling(data, tmp / ranks_plot)
        (tmp / "report.md").write_text(report.markdown(data, plot=plot, ranks_plot=ranks_plot))
    except BaseException:  # Ctrl-C included: no half-written folder is left beside the results
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        # Other jobs write here too (make dynamics): their files move into the new folder untouched.
        for other in out.iterdir():
            if other.name not in OUTPUTS:
                other.rename(tmp / other.name)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def check_settings(names, args) -> None:
    """cli.Fatal for what would otherwise fail late or mean nothing: checked before anything is timed."""
    cli.check_thread_budget()
    cli.check_out_dir(args.out)
    problem = peak.cache_problem()
    if problem:
        raise cli.Fatal(problem)
    todo = cases(names, args.presets, args.dtypes, args.optimizers, args.sweep)
    reasons = {(name, preset): prepare.skip_reason(name, preset) for name, _, _, _, preset in todo}
    if all(reasons.values()):
        raise cli.Fatal("nothing selected can run here: " + "; ".join(sorted(set(reasons.values()))))


class Parser(cli.Parser):
    """The main job's parser: its help ends with the implementations and whether each runs here.

    Built when help is asked for only: finding out imports every backend, seconds a run need not pay
    before its settings are checked.
    """

    def format_help(self) -> str:
        names = impls.names()
        try:
            available = impls.available(names)
        except ValueError as problem:  # a bad setting (STEPBENCH_THREADS) stops a backend's import
            available = dict.fromkeys(names, f"unknown ({problem})")
        listing = "\n".join(
            f"  {name:<20} {'runs here' if available[name] is None else 'not here: ' + available[name]}"
            for name in names
        )
        return (
            super().format_help()
            + f"\nimplementations (registry order):\n{listing}\n\n"
            + "the regression gate: python -m bench compare BASE [HEAD] ... (python -m bench compare --help)\n"
        )


def parser() -> cli.Parser:
    p = Parser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--implementations", nargs="+", default=None, metavar="NAME", help="default: every one listed below")
    p.add_argument(
        "--presets",
        nargs="+",
        default=DEFAULT_PRESETS,
        choices=grid.PRESETS,
        help=f"problem sizes (default: {' '.join(DEFAULT_PRESETS)})",
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        default=grid.DTYPES,
        choices=grid.DTYPES,
        help=f"precisions (default: {' '.join(grid.DTYPES)})",
    )
    p.add_argument(
        "--optimizers", nargs="+", default=("sgd",), choices=grid.OPTIMIZERS, help="update rules (default: sgd)"
    )
    p.add_argument(
        "--sweep-sizes",
        nargs="+",
        default=grid.SWEEP_IDS,
        choices=grid.SWEEP_IDS,
        metavar="ID",
        help=f"the batch sweep's sizes (N at D={grid.SWEEP_SHAPE[0]}, H={grid.SWEEP_SHAPE[1]}, "
        f"O={grid.SWEEP_SHAPE[2]}, SGD; default: all of {' '.join(grid.SWEEP_IDS)}); --presets does not narrow it",
    )
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the batch sweep (and scaling.png)")
    p.add_argument(
        "--no-data-parallel",
        dest="data_parallel",
        action="store_false",
        help="skip the data-parallel entries' runs at each rank count (and ddp_scaling.png)",
    )
    p.add_argument(
        "--rounds",
        type=cli.positive_int,
        default=measure.Settings.rounds,
        metavar="N",
        help=f"fresh processes every cell is timed in (default: {measure.Settings.rounds}); cells whose speed-up "
        f"interval is wider than +-{100 * measure.Settings.width:.0f}%% get more, up to {measure.Settings.max_rounds}",
    )
    p.add_argument(
        "--max-time",
        type=cli.non_negative_seconds,
        default=measure.Settings.max_time_s,
        metavar="S",
        help="seconds the paired measurement may take before undecided cells stop getting rounds "
        f"(default: {measure.Settings.max_time_s:.0f})",
    )
    p.add_argument(
        "--replan",
        action="store_true",
        help="steps that choose how to run by trials at create (numba:blas) choose again, instead of using the "
        "plan an earlier run on this machine chose and kept (bench/job/plans.py)",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="folder for results.json, report.md and the plots, replaced whole at the end of the run "
        "(default: results/latest in this checkout)",
    )
    return p


def main(argv=None) -> int:
    parser_ = parser()
    args = parser_.parse_args(argv)
    args.sweep = tuple(args.sweep_sizes) if args.sweep else ()
    names = impls.names() if args.implementations is None else args.implementations
    for name in names:
        if name not in impls.names():
            parser_.error(f"implementation must be one of {', '.join(impls.names())}; got {name!r}")
    check_settings(names, args)
    settings = measure.Settings(rounds=args.rounds, max_time_s=args.max_time)
    data = run(
        names, args.presets, args.dtypes, args.optimizers, args.sweep, settings, args.data_parallel, replan=args.replan
    )
    print(report.console(data))
    write(data, args.out)
    written = ", ".join(name for name in OUTPUTS if (args.out / name).exists())
    print(f"\nwrote {args.out}/ ({written}) in {data['wall_s']:.0f} s", file=sys.stderr)
    cells = (data["data_parallel"] or {}).get("cells", [])
    failed = any(r["status"] in ("disagrees", "diverged") for r in [*data["results"], *cells])
    return 1 if failed else 0
