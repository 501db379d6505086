"""The main job's output: comparison tables (console and markdown) and the scaling plot, from results.json data."""

from __future__ import annotations

from collections import defaultdict

from . import grid

BEST, NOISY = "*", "!"
MARKERS = "os^Dv<>pX*"  # one per implementation, so lines stay apart in grey too


def _groups(data: dict, kind: str):
    """{(dtype, optimizer): {implementation: {label: result}}} for one kind of result."""
    tables: dict = defaultdict(lambda: defaultdict(dict))
    for r in data["results"]:
        if r["kind"] == kind:
            tables[r["problem"]["dtype"], r["problem"]["optimizer"]][r["implementation"]][r["label"]] = r
    return tables


def _labels(data: dict, kind: str) -> list[str]:
    return data["settings"]["presets"] if kind == "preset" else data["settings"]["sweep"]


def _unavailable(data: dict) -> dict[str, str]:
    """Implementations skipped everywhere, with the reason (they get no row)."""
    by_name = defaultdict(list)
    for r in data["results"]:
        by_name[r["implementation"]].append(r)
    return {n: rs[0]["reason"] for n, rs in by_name.items() if all(r["status"] == "skipped" for r in rs)}


def _best(rows: dict, label: str) -> str | None:
    timed = {n: cells[label]["median_s"] for n, cells in rows.items() if cells.get(label, {}).get("status") == "ok"}
    return min(timed, key=timed.get) if timed else None


def _table_head(title: str, labels) -> list[str]:
    """A markdown table's title and header rows: implementation, then one right-aligned column per label."""
    return ["", title, "", "| implementation | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]


def _failed_cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return {"skipped": "skipped", "disagrees": "DISAGREES", "diverged": "DIVERGED"}[r["status"]]


def _cell_parts(r: dict, reference: dict | None):
    us = r["median_s"] * 1e6
    speedup = reference["median_s"] / r["median_s"] if reference and reference["status"] == "ok" else None
    return us, r["gflops"], 100 * r["peak_fraction"], speedup


def _setup(r: dict) -> str:
    """Setup seconds (create, compilation included, and the first calls); older results.json have none."""
    s = r.get("setup_s")
    return "n/a" if s is None else f"{s:.2f}"


def console(data: dict) -> str:
    """One table per dtype (and optimizer): rows implementations, columns presets; then the batch sweep."""
    ref_name = data["settings"]["reference"]
    skipped = _unavailable(data)
    lines = []
    cell_w = 46  # 12 + 8 + 7 + 9 + 8 + 2 marks
    for (dtype, optimizer), rows in sorted(_groups(data, "preset").items()):
        rows = {n: c for n, c in rows.items() if n not in skipped}
        if not rows:
            continue
        labels = _labels(data, "preset")
        name_w = max(14, *map(len, rows))
        peaks = ", ".join(f"{d} {p[dtype]:.1f}" for d, p in data["gemm_peak_gflops"].items())
        lines += [
            "",
            f"{dtype}, {optimizer}: median us/step, GFLOP/s, % of GEMM peak ({peaks} GFLOP/s), speed-up over {ref_name}, "
            "setup seconds (create with any compilation, and the first calls; paid once per process)",
            f"{'':<{name_w}}" + "".join(f"{label:>{cell_w - 2}}  " for label in labels),
            f"{'implementation':<{name_w}}"
            + f"{'us/step':>12}{'GFLOP/s':>8}{'peak':>7}{'speed-up':>9}{'setup s':>8}  " * len(labels),
        ]
        best = {label: _best(rows, label) for label in labels}
        for name, cells in rows.items():
            text = []
            for label in labels:
                r = cells.get(label)
                if r is None or r["status"] != "ok":
                    text.append(f"{_failed_cell(r):>{cell_w - 2}}  ")
                    continue
                us, gf, pct, x = _cell_parts(r, rows.get(ref_name, {}).get(label))
                mark = (BEST if best[label] == name else " ") + (
                    NOISY if r["iqr_ratio"] > data["settings"]["noisy_iqr_ratio"] else " "
                )
                xs = f"{x:.2f}x" if x is not None else "n/a"
                text.append(f"{us:>12,.1f}{gf:>8.2f}{pct:>6.1f}%{xs:>9}{_setup(r):>8}{mark}")
            lines.append(f"{name:<{name_w}}" + "".join(text))
    sweep = _groups(data, "sweep")
    if sweep:
        d, h, o = grid.SWEEP_SHAPE
        for (dtype, _optimizer), rows in sorted(sweep.items()):
            rows = {n: c for n, c in rows.items() if n not in skipped}
            labels = _labels(data, "sweep")
            name_w = max(14, *map(len, rows))
            lines += [
                "",
                f"batch sweep, {dtype}, {optimizer} (D={d}, H={h}, O={o}): median us/step (GFLOP/s)",
                f"{'implementation':<{name_w}}" + "".join(f"{label:>19} " for label in labels),
            ]
            for name, cells in rows.items():
                text = []
                for label in labels:
                    r = cells.get(label)
                    if r is None or r["status"] != "ok":
                        text.append(f"{_failed_cell(r):>19} ")
                    else:
                        mark = NOISY if r["iqr_ratio"] > data["settings"]["noisy_iqr_ratio"] else " "
                        text.append(f"{r['median_s'] * 1e6:>12,.1f} ({r['gflops']:>5.1f}){mark}")
                lines.append(f"{name:<{name_w}}" + "".join(text))
    lines += _data_parallel_lines(data, markdown=False)
    lines += [
        "",
        f"{BEST} fastest in its column   {NOISY} noisy: IQR/median above {data['settings']['noisy_iqr_ratio']:.0%}",
    ]
    noisy = [r for r in data["results"] if r["status"] == "ok" and r["iqr_ratio"] > data["settings"]["noisy_iqr_ratio"]]
    if noisy:
        lines.append(
            f"warning: {len(noisy)} of the timings are noisy (IQR/median > "
            f"{data['settings']['noisy_iqr_ratio']:.0%}); rerun on a quieter machine before trusting them"
        )
    above_peak = [r for r in data["results"] if r["status"] == "ok" and r["peak_fraction"] > 1]
    if above_peak:
        lines.append(
            f"warning: {len(above_peak)} timings exceed the cached GEMM peak; it was measured under load: "
            "delete it (bench/peak.py says where) and run again"
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


def markdown(data: dict, plot: str | None = None, ranks_plot: str | None = None) -> str:
    """report.md: environment, GEMM peaks, the tables, skipped and failed implementations, the plot."""
    env, settings = data["environment"], data["settings"]
    ref_name = settings["reference"]
    skipped = _unavailable(data)
    blas = ", ".join(
        f"{b['internal_api']} {b['version']} ({b['num_threads']} threads)" for b in env["threads"].get("blas", [])
    )
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    git = env["git"]
    out = [
        "# stepbench: one training step, every implementation",
        "",
        "Each cell: median time per step, achieved GFLOP/s (matmul FLOPs of the step, `impls.flops`), "
        "the fraction of this machine's measured GEMM peak, and the speed-up over "
        f"`{ref_name}` in the same run, and the setup seconds paid once per process before the first timed step "
        "(creating the step, with any JIT or graph compilation, and the agreement check's first calls). "
        f"**Bold**: fastest in its column; (!): IQR/median above "
        f"{settings['noisy_iqr_ratio']:.0%}. Every timed implementation passed the agreement check first.",
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
        f"- run: {data['wall_s']:.0f} s, {settings['budget_s']} s of timing per configuration",
    ]
    warnings = data.get("warnings", [])  # older results.json have none
    if warnings:
        out += ["", "## Warnings: signs of a busy machine", ""] + [f"- {w}" for w in warnings]
    for (dtype, optimizer), rows in sorted(_groups(data, "preset").items()):
        rows = {n: c for n, c in rows.items() if n not in skipped}
        labels = _labels(data, "preset")
        out += _table_head(f"## {dtype}, {optimizer}", labels)
        best = {label: _best(rows, label) for label in labels}
        for name, cells in rows.items():
            text = []
            for label in labels:
                r = cells.get(label)
                if r is None or r["status"] != "ok":
                    text.append(_failed_cell(r))
                    continue
                us, gf, pct, x = _cell_parts(r, rows.get(ref_name, {}).get(label))
                time_text = f"**{us:,.1f} us**" if best[label] == name else f"{us:,.1f} us"
                noisy = " (!)" if r["iqr_ratio"] > settings["noisy_iqr_ratio"] else ""
                xs = f"{x:.2f}x" if x is not None else "n/a"
                text.append(f"{time_text}{noisy}<br>{gf:.2f} GFLOP/s · {pct:.1f}% · {xs} · setup {_setup(r)} s")
            out.append(f"| `{name}` | " + " | ".join(text) + " |")
    sweep = _groups(data, "sweep")
    if sweep:
        d, h, o = grid.SWEEP_SHAPE
        out += ["", f"## Batch sweep (D={d}, H={h}, O={o}, SGD): us/step (GFLOP/s)"]
        for (dtype, _optimizer), rows in sorted(sweep.items()):
            rows = {n: c for n, c in rows.items() if n not in skipped}
            labels = _labels(data, "sweep")
            out += _table_head(f"{dtype}:", labels)
            for name, cells in rows.items():
                text = [
                    f"{r['median_s'] * 1e6:,.1f} ({r['gflops']:.1f}){' (!)' if r['iqr_ratio'] > settings['noisy_iqr_ratio'] else ''}"
                    if r and r["status"] == "ok"
                    else _failed_cell(r)
                    for r in (cells.get(label) for label in labels)
                ]
                out.append(f"| `{name}` | " + " | ".join(text) + " |")
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


def plot_scaling(data: dict, path) -> None:
    """scaling.png: log-log time per step against FLOPs per step over the batch sweep, a line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sweep = _groups(data, "sweep")
    dtypes = sorted({dtype for dtype, _ in sweep}) or data["settings"]["dtypes"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.4 * len(dtypes), 5.2), sharey=True, squeeze=False)
    d, h, o = grid.SWEEP_SHAPE
    flops_per_row = 4 * d * h + 6 * h * o  # impls.flops is linear in N: the top axis reads N off FLOPs
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        rows = sweep.get((dtype, grid.SWEEP_OPTIMIZER), {})
        for i, (name, cells) in enumerate(rows.items()):
            points = sorted((r["flops"], r["median_s"] * 1e6) for r in cells.values() if r["status"] == "ok")
            if points:
                ax.plot(*zip(*points, strict=True), marker=MARKERS[i % len(MARKERS)], label=name)
        flops = sorted({r["flops"] for cells in rows.values() for r in cells.values()})
        for device, peaks in data["gemm_peak_gflops"].items():
            if flops and dtype in peaks:
                gflops = peaks[dtype]
                ax.plot(
                    flops,
                    [f / gflops / 1e3 for f in flops],
                    "k--",
                    lw=1,
                    label=f"GEMM peak, {device} ({gflops:.0f} GFLOP/s)",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlabel("matmul FLOPs per step")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_flops_label))
        ax.set_title(f"{dtype}, {grid.SWEEP_OPTIMIZER}, D={d}, H={h}, O={o}", fontsize=10)
        top = ax.secondary_xaxis("top", functions=(lambda f: f / flops_per_row, lambda n: n * flops_per_row))
        top.set_xlabel("batch size N")
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("time per step, median")
    axes[0][0].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_duration_label))
    env = data["environment"]
    fig.suptitle(
        f"Time per training step over the batch sweep, {env['machine']} ({env['cpu']}, "
        f"{env['threads']['budget']} threads). Lower is faster; the vertical gap to the dashed "
        f"line is the shortfall from GEMM peak.",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _flops_label(flops: float, _pos=None) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:g} {unit}"
    return f"{flops:g}"


def _duration_label(us: float, _pos=None) -> str:
    """Tick label of a time in microseconds: 10 us, 1 ms, 2.5 s."""
    for unit, scale in (("s", 1e6), ("ms", 1e3), ("us", 1.0)):
        if us >= scale:
            return f"{us / scale:g} {unit}"
    return f"{us:g} us"


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
        "Each product by BLAS or by the loops, with its threads; the layout of the buffers. In brackets, "
        "the trial behind a choice: time with the loops over time with BLAS, or batch-major over "
        "feature-major (only what was tried).",
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
            cells.append(
                str(d["plan"].get(column, ""))
                + (f" ({threads})" if threads is not None else "")
                + (f" [{trial:.2f}]" if trial is not None else "")
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
        return _failed_cell(cell)
    return f"{cell['ratio']:.2f}x{'<br>' if markdown else ' '}{cell['step_s'] * 1e6:,.1f} us"


def has_rank_scaling(data: dict) -> bool:
    figures = data.get("data_parallel") or {}
    return any(c["status"] == "ok" and c["kind"] in ("sweep", "weak") for c in figures.get("cells", []))


def plot_rank_scaling(data: dict, path) -> None:
    """ddp_scaling.png: time per step against ranks W; strong scaling (N fixed, the batch sweep) and
    weak scaling (N = rows per rank x W), numpy's time on the same problems dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figures = data["data_parallel"]
    cells = [c for c in figures["cells"] if c["status"] == "ok" and c["kind"] in ("sweep", "weak")]
    name = figures["implementations"][0]
    dtypes = sorted({c["problem"]["dtype"] for c in cells})
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(12.8, 4.8 * len(dtypes)), squeeze=False)
    d, h, o = grid.SWEEP_SHAPE
    for row, dtype in zip(axes, dtypes, strict=True):
        for ax, kind, title in (
            (row[0], "sweep", "strong scaling: N fixed"),
            (row[1], "weak", "weak scaling: N per rank fixed"),
        ):
            mine = [
                c for c in cells if c["kind"] == kind and c["problem"]["dtype"] == dtype and c["implementation"] == name
            ]
            for i, label in enumerate(dict.fromkeys(c["label"] for c in mine)):
                points = sorted(
                    (c["ranks"], c["step_s"] * 1e6, c["reference_s"] * 1e6) for c in mine if c["label"] == label
                )
                w, step_us, ref_us = zip(*points, strict=True)
                text = f"N={int(label[1:])}" if kind == "sweep" else f"N={label.split('-')[1]} x W"
                line = ax.plot(w, step_us, marker=MARKERS[i % len(MARKERS)], label=f"{text}: {name}")[0]
                ax.plot(w, ref_us, ls="--", lw=1, color=line.get_color(), label=f"{text}: {figures['reference']}")
            ax.set_yscale("log")
            ax.set_xticks(figures["ranks"])
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
            ax.set_xlabel("ranks W (one thread each)")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{title}, {dtype}, D={d}, H={h}, O={o}", fontsize=10)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_duration_label))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # log minor ticks would read 6x10^4
            ax.legend(fontsize=7, loc="best")
        row[0].set_ylabel("time per step, median")
    env = data["environment"]
    fig.suptitle(
        f"{name} against the number of ranks, {env['machine']} ({env['cpu']}); dashed: "
        f"{figures['reference']} with {figures['reference_threads']} threads on the same problem, "
        "alternated with it. Lower is faster.",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
