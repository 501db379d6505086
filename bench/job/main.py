"""`make bench`: check, then time every available implementation; print the tables, write results/latest/.

    python -m bench [--presets seed tutorial medium] [--dtypes float32 float64] [--optimizers sgd]
                    [--implementations ...] [--sweep-sizes n00064 ...] [--no-sweep] [--no-data-parallel]
                    [--budget S] [--out DIR]

Progress goes to stderr, the tables to stdout. results/latest/ (or --out) gets results.json
(every measurement and the environment), report.md, scaling.png and, where a data-parallel
entry can run, ddp_scaling.png (bench.ddp: each rank count against numpy); it is written under a
temporary name and swapped in at the end, so an interrupted run leaves the previous one.
Settings are checked before anything is timed (bench.harness.cli). Signs that the machine was busy
(the load average, a cached GEMM peak a quick product disagrees with, the first timed cell
timed again at the end and differing) are warnings: on stderr, in results.json and report.md.
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

import impls
from bench.ddp import scaling as ddp
from bench.harness import cli, environment, grid, load, peak, prepare, timing
from bench.job import plots, report
from impls import threads

DEFAULT_OUT = environment.REPO / "results" / "latest"
DEFAULT_PRESETS = ("seed", "tutorial", "medium")
REPEAT_SPREAD = 1.25  # the first timed cell, timed again at the end: a ratio beyond this says the machine changed


@dataclasses.dataclass
class Result:
    """One implementation on one problem: timed, or why not."""

    implementation: str
    label: str  # the preset, or the batch-sweep id
    kind: str  # "preset" or "sweep"
    problem: dict
    flops: int
    status: str  # ok | skipped | disagrees | diverged
    reason: str = ""  # why skipped, or the checker's report
    agreement_worst_ratio: float | None = None
    samples_s: list[float] = dataclasses.field(default_factory=list)  # seconds per step, one per block
    number: int = 0  # steps per block
    median_s: float | None = None
    iqr_ratio: float | None = None
    gflops: float | None = None
    peak_fraction: float | None = None
    # Seconds paid once before timing (bench.harness.prepare.Prepared): create (compilation included), the
    # agreement check's calls, and their sum; None where this process had checked the problem already.
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


def measure(name: str, problem: impls.Problem, label: str, kind: str, preset: str | None, budget_s: float) -> Result:
    result = Result(name, label, kind, dataclasses.asdict(problem), impls.flops(problem), "ok")
    try:
        prepared = prepare.prepare(name, problem, preset)
    except prepare.Skip as why:
        result.status, result.reason = "skipped", str(why)
        return result
    except prepare.Disagrees as report_text:
        result.status, result.reason = "disagrees", str(report_text)
        return result
    except prepare.Diverged as why:
        result.status, result.reason = "diverged", str(why)
        return result
    result.agreement_worst_ratio = prepared.verdict.worst_ratio
    result.create_s, result.check_s, result.setup_s = prepared.create_s, prepared.check_s, prepared.setup_s
    result.details = prepared.step.describe()
    t = timing.measure(prepare.synced(prepared.step), budget_s=budget_s)
    try:
        prepare.assert_finite(prepared.step)
    except prepare.Diverged as why:
        result.status, result.reason = "diverged", str(why)
        return result
    result.samples_s, result.number, result.median_s, result.iqr_ratio = t.samples, t.number, t.median, t.iqr_ratio
    result.gflops = result.flops / t.median / 1e9
    result.peak_fraction = result.gflops / peak.gemm_peak_gflops(problem.dtype, grid.device(name))
    return result


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


def repeat_first(case, first: Result, budget_s: float, warnings: list[str]) -> dict | None:
    """Time the run's first timed cell again: one cell at the start and the end of a run should agree."""
    again = measure(*case, budget_s)
    if again.status != "ok":
        return None
    name, problem, label = case[:3]
    ratio = again.median_s / first.median_s
    if max(ratio, 1 / ratio) > REPEAT_SPREAD:
        warn(
            warnings,
            f"the machine's speed changed during the run: {name} {label} {problem.dtype} {problem.optimizer} took "
            f"{first.median_s * 1e6:,.1f} us/step at the start and {again.median_s * 1e6:,.1f} us/step at the end; "
            "rerun on a quieter machine before trusting the timings",
        )
    return {"implementation": name, "label": label, "median_s": [first.median_s, again.median_s]}


def run(names, presets, dtypes, optimizers, sweep, budget_s, data_parallel=True) -> dict:
    todo = list(cases(names, presets, dtypes, optimizers, sweep))
    warnings: list[str] = []
    budget = threads.budget()
    warn(warnings, _when("before the run", load.busy_warning(budget)))
    devices = sorted({grid.device(n) for n in names if prepare.skip_reason(n) is None})
    peaks = gemm_peaks(devices, dtypes, warnings)
    results = []
    start = time.perf_counter()
    width = max(map(len, names))
    for i, (name, problem, label, kind, preset) in enumerate(todo, 1):
        r = measure(name, problem, label, kind, preset, budget_s)
        results.append(r)
        if r.status == "ok":
            outcome = f"{r.median_s * 1e6:12.1f} us/step  IQR/median {r.iqr_ratio:4.0%}  setup {_seconds(r.setup_s)}"
        else:
            outcome = f"{r.status}: {r.reason.splitlines()[0]}"
        print(
            f"[{i:3d}/{len(todo)} {time.perf_counter() - start:5.0f} s] {name:<{width}} {label:<8} "
            f"{problem.dtype} {problem.optimizer:<4} {outcome}",
            file=sys.stderr,
            flush=True,
        )
    first = next((i for i, r in enumerate(results) if r.status == "ok"), None)
    repeat = None if first is None else repeat_first(todo[first], results[first], budget_s, warnings)
    figures = None
    if data_parallel and ddp.data_parallel_names(names):
        print("data-parallel entries at each rank count, alternated with numpy:", file=sys.stderr, flush=True)
        progress = lambda cell: print(f"  {ddp.progress_line(cell)}", file=sys.stderr, flush=True)  # noqa: E731
        figures = ddp.figures(names, presets, dtypes, optimizers, sweep, progress)
    warn(warnings, _when("after the run", load.busy_warning(budget, own_threads=budget)))
    return {
        "environment": environment.record(),  # after the run, so the loaded backends' threads are in it
        "gemm_peak_gflops": peaks,
        "gemm_peak_cache": str(peak.cache_dir()),
        "warnings": warnings,
        "repeat": repeat,
        "settings": {
            "presets": list(presets),
            "dtypes": list(dtypes),
            "optimizers": list(optimizers),
            "sweep": list(grid.sweep_selection(sweep)),
            "budget_s": budget_s,
            "noisy_iqr_ratio": timing.NOISY,
            "reference": grid.REFERENCE,
        },
        "wall_s": time.perf_counter() - start,
        "results": [dataclasses.asdict(r) for r in results],
        "data_parallel": figures,
    }


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
        "--budget",
        type=cli.non_negative_seconds,
        default=0.5,
        metavar="S",
        help="seconds of timing per configuration (default: 0.5)",
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
    data = run(names, args.presets, args.dtypes, args.optimizers, args.sweep, args.budget, args.data_parallel)
    print(report.console(data))
    write(data, args.out)
    written = ", ".join(name for name in OUTPUTS if (args.out / name).exists())
    print(f"\nwrote {args.out}/ ({written}) in {data['wall_s']:.0f} s", file=sys.stderr)
    cells = (data["data_parallel"] or {}).get("cells", [])
    failed = any(r["status"] in ("disagrees", "diverged") for r in [*data["results"], *cells])
    return 1 if failed else 0
