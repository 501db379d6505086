"""The main job's reports: the console output and report.md, from results.json data.

The tables come from one model (bench.job.tables); this module adds what surrounds them: the
environment, warnings, the plans chosen at create, the data-parallel figures, and what failed.
"""

from __future__ import annotations

from bench.harness import grid
from bench.job import tables
from bench.job.tables import BEST, NOISY, UNDECIDED

OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}


def console(data: dict) -> str:
    """One table per dtype (and optimizer): rows implementations, columns presets; then the batch sweep."""
    settings = data["settings"]
    skipped = tables.unavailable(data)
    lines = []
    for table in tables.tables(data, "preset") + tables.tables(data, "sweep"):
        lines += tables.console(table, settings["reference"])
    lines += _data_parallel_lines(data, markdown=False)
    lines += ["", _legend(data)]
    measured = _measurement_text(data)
    if measured:
        lines.append(measured)
    noisy = [r for r in data["results"] if r["status"] == "ok" and r["iqr_ratio"] > settings["noisy_iqr_ratio"]]
    if noisy:
        lines.append(
            f"warning: {len(noisy)} of the timings are noisy (IQR/median > "
            f"{settings['noisy_iqr_ratio']:.0%}); rerun on a quieter machine before trusting them"
        )
    above_peak = [r for r in data["results"] if r["status"] == "ok" and r["peak_fraction"] > 1]
    if above_peak:
        lines.append(
            f"warning: {len(above_peak)} timings exceed the cached GEMM peak; it was measured under load: "
            f"delete the gemm-peak-* files in {data.get('gemm_peak_cache', 'the peak cache (bench/harness/peak.py)')} "
            "and run again"
        )
    lines += [f"warning: {text}" for text in data.get("warnings", [])]  # older results.json have none
    for name, reason in skipped.items():
        lines.append(f"skipped {name}: {reason}")
    for r in data["results"]:
        if r["status"] in ("disagrees", "diverged"):
            lines.append(
                f"{r['status'].upper()}: {r['implementation']} at {r['label']} {r['problem']['dtype']} "
                f"(full report in report.md)"
            )
    return "\n".join(lines)


def _legend(data: dict) -> str:
    settings, m = data["settings"], data.get("measurement")
    text = f"{BEST} highest speed-up in its column   {NOISY} noisy: IQR/median above {settings['noisy_iqr_ratio']:.0%}"
    if m:
        text += f"   {UNDECIDED} undecided: the speed-up's 95% interval is wider than ±{m['width']:.0%}"
        fewer = _fewer_threads(data)
        if fewer:
            text += f", or {fewer}"
    return text


def _fewer_threads(data: dict) -> str | None:
    """Why every speed-up of a run beside other work is undecided (main.undecided_why), or None."""
    return next(
        (r["undecided_why"] for r in data["results"] if (r.get("undecided_why") or "").startswith("measured on")),
        None,
    )


def _measurement_text(data: dict) -> str | None:
    """How the run was measured: rounds, threads and why (older results.json have no such record)."""
    m = data.get("measurement")
    if not m:
        return None
    pinned = f", pinned to CPUs {','.join(map(str, m['cpus']))}" if m.get("cpus") else ""
    other = m.get("other_work_during")
    during = "" if other is None else f"; other work during the run: {other:.1f} cores"
    return (
        f"measured in paired groups per problem (each step's block beside numpy's and a GEMM block's, random "
        f"order): {m['rounds']} rounds of a fresh process, {m['passes']} groups each, more for undecided cells up "
        f"to {m['max_rounds']} rounds or {m['max_time_s']:.0f} s; {m['threads']} thread(s){pinned}: "
        f"{m['why_threads']}{during}"
    )


def markdown(data: dict, plot: str | None = None, ranks_plot: str | None = None) -> str:
    """report.md: environment, GEMM peaks, the tables, skipped and failed implementations, the plot."""
    env, settings = data["environment"], data["settings"]
    ref_name = settings["reference"]
    skipped = tables.unavailable(data)
    blas = ", ".join(
        f"{b['internal_api']} {b['version']} ({b['num_threads']} threads)" for b in env["threads"].get("blas", [])
    )
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    git = env["git"]
    fewer = _fewer_threads(data)
    out = [
        "# stepbench: one training step, every implementation",
        "",
        "Each cell: median time per step, achieved GFLOP/s (matmul FLOPs of the step, `impls.flops`), "
        "the fraction of the rate of a matrix product of the same dtype timed alongside it, the speed-up over "
        f"`{ref_name}` with its 95% interval, and the setup seconds paid once per process before the first timed "
        "step (creating the step, with any JIT or graph compilation, and the agreement check's first calls). "
        "The two ratios are paired: per problem, one block of every step, of numpy's and of the product run back "
        "to back in random order, so that the machine's drift cancels (bench/job/measure.py). "
        f"**Bold**: the highest speed-up in its column; (!): IQR/median above "
        f"{settings['noisy_iqr_ratio']:.0%}; undecided: the interval is wider than ±5%"
        + (f", or {fewer}" if fewer else "")
        + ". Every timed implementation passed the agreement check first.",
        "",
        f"- machine: {env['machine']}, {env['cpu']}, {env['cores']} cores, {env['system']}",
        f"- thread budget: {env['threads']['budget']}; BLAS: {blas or 'unknown'}",
        f"- versions: {versions}",
        f"- commit: {git['commit']}{' (dirty)' if git['dirty'] else ''}",
        "- GEMM peak: "
        + "; ".join(
            f"{d}: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in p.items())
            for d, p in data["gemm_peak_gflops"].items()
        ),
        f"- run: {data['wall_s']:.0f} s",
    ]
    measured = _measurement_text(data)
    if measured:
        out.append(f"- {measured}")
    warnings = data.get("warnings", [])  # older results.json have none
    if warnings:
        out += ["", "## Warnings: signs of a busy machine", ""] + [f"- {w}" for w in warnings]
    for table in tables.tables(data, "preset"):
        out += tables.markdown(table, f"## {table.dtype}, {table.optimizer}")
    sweep = tables.tables(data, "sweep")
    if sweep:
        d, h, o = grid.SWEEP_SHAPE
        optimizers = ", ".join(dict.fromkeys(OPTIMIZER_NAMES.get(t.optimizer, t.optimizer) for t in sweep))
        out += ["", f"## Batch sweep (D={d}, H={h}, O={o}, {optimizers}): us/step, speed-up over `{ref_name}`"]
        for table in sweep:
            out += tables.markdown(table, f"{table.dtype}:")
        if plot:
            out += ["", f"![time per step against FLOPs per step]({plot})"]
    out += _plan_lines(data)
    out += _data_parallel_lines(data, markdown=True)
    if ranks_plot:
        out += ["", f"![time per step against the number of ranks, strong and weak scaling]({ranks_plot})"]
    if skipped:
        out += ["", "## Not run here", ""] + [f"- `{n}`: {reason}" for n, reason in skipped.items()]
    cells = (data.get("data_parallel") or {}).get("cells", [])
    failed = [r for r in [*data["results"], *cells] if r["status"] in ("disagrees", "diverged")]
    if failed:
        out += ["", "## Failed, not timed"]
        for r in failed:
            ranks = f" with {r['ranks']} ranks" if "ranks" in r else ""
            out += [
                "",
                f"`{r['implementation']}`{ranks} at {r['label']} {r['problem']['dtype']} {r['problem']['optimizer']}: "
                f"{r['status']}",
                "",
                "```",
                r["reason"],
                "```",
            ]
    return "\n".join(out) + "\n"


def _plan_lines(data: dict) -> list[str]:
    """report.md's table of the plans chosen at create (numba:blas: each product by BLAS or the loops,
    on how many threads, and the layout), with the trials behind each choice."""
    rows = [r for r in data["results"] if r["status"] == "ok" and (r.get("details") or {}).get("plan")]
    if not rows:
        return []
    columns = list(rows[0]["details"]["plan"])
    out = [
        "",
        "## Plans chosen at create",
        "",
        "Each product by BLAS (OpenBLAS; jit: a kernel oneMKL generated for the shape) or by the loops, with "
        "its threads; the layout of the buffers. In brackets, the trial behind a choice: time with the loops "
        "over time with BLAS, with the JIT kernel over OpenBLAS (jit), or batch-major over feature-major "
        "(only what was tried). Each product's own FLOP rate against the GEMM rate, at seed and tutorial, and "
        "against other providers' kernels: `make small-gemm` (small-gemm.md beside this report).",
        "",
        "| implementation | problem | " + " | ".join(columns) + " | chosen |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for r in rows:
        d = r["details"]
        cells = []
        for column in columns:
            threads = d["threads"].get(column)
            trial = d.get("trials", {}).get(column)
            jit_trial = d.get("trials", {}).get(f"{column}:jit")
            provider = (d.get("jit") or {}).get("kernels", {}).get(column)
            how = str(d["plan"].get(column, ""))
            cells.append(
                (f"{how}: MKL's gemm, no JIT kernel" if provider == "mkl-gemm" else how)
                + (f" ({threads})" if threads is not None else "")
                + (f" [{trial:.2f}]" if trial is not None else "")
                + (f" [jit {jit_trial:.2f}]" if jit_trial is not None else "")
            )
        problem = f"{r['label']} {r['problem']['dtype']} {r['problem']['optimizer']}"
        out.append(f"| `{r['implementation']}` | {problem} | " + " | ".join(cells) + f" | {d['plan_chosen']} |")
    return out


def _data_parallel_lines(data: dict, markdown: bool) -> list[str]:
    """Each data-parallel entry at each rank count: its time over numpy's (alternated blocks), and the
    all-reduce's share of its step (torch's profiler); a table per entry and dtype."""
    figures = data.get("data_parallel")  # older results.json have none
    if not figures or not figures["cells"]:
        return []
    counts, ref = figures["ranks"], figures["reference"]
    lines = []
    if markdown:
        lines += [
            "",
            "## Data-parallel entries at each rank count",
            "",
            f"Each cell: the step's time over `{ref}`'s ({figures['reference_threads']} threads) on the same "
            f"problem, the median over {figures['pairs']} pairs of blocks alternated in one process (so the "
            "machine's drift cancels; below 1x is faster), the step's median time, and the all-reduce's share "
            f"of rank 0's time per step in torch's profiler ({figures['profiled_steps']} steps; the span "
            "includes waiting for the slowest rank). W ranks run one thread each. `weak-R`: N = R x W rows.",
        ]
    for name in figures["implementations"]:
        for dtype in sorted({c["problem"]["dtype"] for c in figures["cells"] if c["implementation"] == name}):
            cells = {
                (c["label"], c["ranks"]): c
                for c in figures["cells"]
                if c["implementation"] == name and c["problem"]["dtype"] == dtype
            }
            labels = list(dict.fromkeys(label for label, _ in cells))
            if markdown:
                head = [f"W={w}: x {ref}, us/step" for w in counts] + [f"all-reduce, W={w}" for w in counts]
                lines += ["", f"`{name}`, {dtype}:", "", "| problem | " + " | ".join(head) + " |"]
                lines.append("|---|" + "---:|" * len(head))
            else:
                lines += ["", f"{name}, {dtype}: time over {ref}'s (alternated), us/step, all-reduce share"]
                lines.append(f"{'problem':<12}" + "".join(f"{f'W={w}':>30}" for w in counts))
            for label in labels:
                row = [cells.get((label, w)) for w in counts]
                times = [_ratio_text(c, markdown) for c in row]
                shares = [f"{c['all_reduce_share']:.0%}" if c and c["status"] == "ok" else "-" for c in row]
                if markdown:
                    lines.append(f"| {label} | " + " | ".join(times + shares) + " |")
                else:
                    lines.append(
                        f"{label:<12}" + "".join(f"{t:>24}{sh:>6}" for t, sh in zip(times, shares, strict=True))
                    )
    return lines


def _ratio_text(cell: dict | None, markdown: bool) -> str:
    if cell is None:
        return "-"
    if cell["status"] != "ok":
        return tables.FAILED_TEXT[cell["status"]]
    return f"{cell['ratio']:.2f}x{'<br>' if markdown else ' '}{cell['step_s'] * 1e6:,.1f} us"
