"""The main job's figures: scaling.png (time per step over the batch sweep) and ddp_scaling.png (over rank counts)."""

from __future__ import annotations

from bench.harness import grid
from bench.job.tables import groups

MARKERS = "os^Dv<>pX*"  # one per implementation, so lines stay apart in grey too


def plot_scaling(data: dict, path) -> None:
    """scaling.png: log-log time per step against FLOPs per step over the batch sweep, a line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sweep = groups(data, "sweep")
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
