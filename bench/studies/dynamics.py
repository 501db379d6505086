"""`make dynamics`: the training-dynamics study, written to results/latest/dynamics.md and dynamics.png.

Every available implementation and the notebook's negative controls run impls.dynamics'
grid (preset x dtype x init x optimizer x lr, 50 steps); each trajectory is compared with
the float64 oracle's. The report answers the notebook's question — why its NumPy SGD
explodes or stalls while its torch/Adam cell converges — with the numbers of this run.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np

import impls
from bench.harness import cli
from bench.studies.dynamics_runs import (
    CONTROL_SHOWN,
    OUT,
    ROBUSTNESS_SEEDS,
    across_seeds,
    config_id,
    preset_of,
    study,
)
from bench.studies.dynamics_text import find, write_report
from impls import dynamics


def plot(results, reference: str, path: pathlib.Path) -> None:
    """Loss curves per lr, float64: one row per preset, one panel per init x optimizer, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(preset_of(r.problem) for r in results))
    panels = [(init, optimizer) for init in dynamics.STUDY_INITS for optimizer in dynamics.LEARNING_RATES]
    fig, axes = plt.subplots(
        len(presets), len(panels), figsize=(4.2 * len(panels), 3.6 * len(presets)), squeeze=False, sharex=True
    )
    steps = np.arange(dynamics.STEPS)
    for row, preset in enumerate(presets):
        for col, (init, optimizer) in enumerate(panels):
            ax = axes[row][col]
            lrs = dynamics.LEARNING_RATES[optimizer]
            colors = plt.cm.viridis(np.linspace(0, 0.85, len(lrs)))
            runs = {}
            for lr in lrs:
                r = find(results, preset, "float64", init, optimizer, lr)
                if r is not None and reference in r.runs:
                    runs[lr] = (r.runs[reference], next(t for t in r.controls if t.name == CONTROL_SHOWN))
            pairs = [t for pair in runs.values() for t in pair]
            # Diverging runs leave the chart at its top edge, 1e3 x the initial loss, where they are marked.
            top = 1e3 * max((t.initial for t in pairs), default=1.0)
            for (lr, (right, control)), color in zip(runs.items(), colors, strict=False):
                label = f"lr={lr:g}" + ("" if right.divergence is None else f", diverges at {right.divergence}")
                if control.divergence is not None:
                    label += f" (notebook: {control.divergence})"
                for t, style, width, marker in ((right, "-", 1.8, "x"), (control, "--", 1.2, "+")):
                    d = t.divergence
                    shown = t.losses[: t.steps if d is None else d + 1]
                    shown = np.where(np.isfinite(shown), np.minimum(shown, top), top)
                    ax.plot(
                        steps[: len(shown)], shown, style, color=color, lw=width, label=label if t is right else None
                    )
                    if d is not None:
                        ax.plot([d], [shown[-1]], marker, color=color, ms=10, mew=2, clip_on=False)
            ax.set_yscale("log")
            if any(t.divergence is not None for t in pairs):
                ax.set_ylim(top=top)
            ax.set_title(f"{preset}: init={init}, {optimizer}", fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
            if runs:
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            if row == len(presets) - 1:
                ax.set_xlabel("step")
            if col == 0:
                ax.set_ylabel("loss")
    fig.suptitle(
        f"Loss per step, float64. Solid: `{reference}` (correct step). Dashed: the notebook's step "
        f"(negative control). x / +: divergence (loss non-finite or > {dynamics.DIVERGENCE_FACTOR:g} x initial).",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


def replace_atomically(path: pathlib.Path, write) -> None:
    """write(tmp) then rename over `path`: an interrupted run leaves the previous file intact."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv=None) -> None:
    parser = cli.Parser(prog="python -m bench.studies.dynamics", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help="directory for dynamics.md and dynamics.png")
    parser.add_argument("--presets", nargs="+", default=list(dynamics.STUDY_PRESETS), choices=list(impls.SIZES))
    args = parser.parse_args(argv)
    cli.check_thread_budget()
    cli.check_out_dir(args.out)

    reasons = impls.available()
    names = [n for n, reason in reasons.items() if reason is None]
    for n, reason in reasons.items():
        if reason is not None:
            print(f"skipping {n}: {reason}", file=sys.stderr)
    reference = impls.names()[0]
    results = study(dynamics.study_problems(args.presets), names)
    print(f"update order across input seeds {ROBUSTNESS_SEEDS.start}-{ROBUSTNESS_SEEDS.stop - 1}", file=sys.stderr)
    seeds = across_seeds(reference) if "seed" in args.presets else {}

    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "dynamics.png"
    report = write_report(results, names, reasons, reference, figure.name, seeds)
    replace_atomically(figure, lambda tmp: plot(results, reference, tmp))
    replace_atomically(args.out / "dynamics.md", lambda tmp: tmp.write_text(report + "\n"))
    bad = [config_id(r.problem) for r in results if not r.ok]
    print(f"wrote {args.out / 'dynamics.md'} and {figure}", file=sys.stderr)
    if bad:
        print(f"implementations disagree in {len(bad)} configurations: {', '.join(bad)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.studies.dynamics", main))
