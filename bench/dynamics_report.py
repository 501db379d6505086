"""`make dynamics`: the training-dynamics study, written to results/latest/dynamics.md and dynamics.png.

Every available implementation and the notebook's negative controls run impls.dynamics'
grid (preset x dtype x init x optimizer x lr, 50 steps); each trajectory is compared with
the float64 oracle's. The report answers the notebook's question — why its NumPy SGD
explodes or stalls while its torch/Adam cell converges — with the numbers of this run.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np

import impls
from impls import agreement, dynamics, threads

from . import cli

OUT = pathlib.Path("results/latest")
BOUND_STEPS = (1, 10, dynamics.STEPS - 1)  # where the report gives the oracle's bound / loss
NOTEBOOK_LR = 1e-4  # the notebook's first NumPy run and its torch/Adam run
ROBUSTNESS_SEEDS = range(20)  # input seeds for the update-order check beyond seed 0
CONTROL_SHOWN = "notebook"  # the control drawn in the figure: the notebook's step as written


@dataclasses.dataclass
class ConfigResult:
    """One configuration: the oracle's trajectory and every run against it."""

    problem: impls.Problem
    oracle: dynamics.OracleTrajectory
    runs: dict[str, dynamics.Trajectory]  # by label: implementations, then the negative controls
    comparisons: dict[str, dynamics.TrajectoryComparison]
    errors: dict[str, str]  # implementations that raised instead of returning a trajectory

    @property
    def implementations(self) -> list[dynamics.Trajectory]:
        return [t for t in self.runs.values() if not t.control]

    @property
    def controls(self) -> list[dynamics.Trajectory]:
        return [t for t in self.runs.values() if t.control]

    @property
    def spread(self) -> int:
        """Steps between the earliest and latest divergence among the implementations and the oracle."""
        divergences = [self.oracle.divergence] + [t.divergence for t in self.implementations]
        return dynamics.divergence_spread(divergences, self.oracle.steps)

    @property
    def ok(self) -> bool:
        """Every implementation ran and agrees with the oracle, and all diverge within one step of each other."""
        return not self.errors and self.spread <= 1 and all(self.comparisons[t.label].ok for t in self.implementations)


def run_config(problem: impls.Problem, names: list[str]) -> ConfigResult:
    oracle = dynamics.oracle_trajectory(problem)
    runs, errors = {}, {}
    for name in names:
        try:
            runs[name] = dynamics.run_implementation(name, problem)
        except Exception as exc:  # one broken backend must not end the study: it is reported as failing
            errors[name] = f"{type(exc).__name__}: {exc}"
    for variant in dynamics.CONTROLS:
        trajectory = dynamics.run_control(variant, problem)
        runs[trajectory.label] = trajectory
    comparisons = {label: dynamics.compare(t, oracle) for label, t in runs.items()}
    return ConfigResult(problem, oracle, runs, comparisons, errors)


def config_id(p: impls.Problem) -> str:
    return f"{preset_of(p)} {p.dtype} {p.init} {p.optimizer} lr={p.lr:g}"


def preset_of(p: impls.Problem) -> str:
    return next(name for name, shape in impls.SIZES.items() if shape == p.shape)


def study(problems: list[impls.Problem], names: list[str]) -> list[ConfigResult]:
    results = []
    for i, p in enumerate(problems, 1):
        print(f"[{i}/{len(problems)}] {config_id(p)}", file=sys.stderr, flush=True)
        results.append(run_config(p, names))
    return results


# ---------------------------------------------------------------- formatting


def fmt_loss(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else str(x)


def fmt_div(d: int | None) -> str:
    return "none" if d is None else str(d)


def fmt_divs(trajectories) -> str:
    """The divergence steps of several runs: one value when they agree, else each distinct one."""
    seen = sorted({t.divergence for t in trajectories}, key=lambda d: dynamics.STEPS if d is None else d)
    return "/".join(fmt_div(d) for d in seen) or "-"


def fmt_ratio(x: float) -> str:
    return f"{x:.2g}" if np.isfinite(x) else "inf"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def find(results, preset, dtype, init, optimizer, lr) -> ConfigResult | None:
    for r in results:
        p = r.problem
        if (preset_of(p), p.dtype, p.init, p.optimizer, p.lr) == (preset, dtype, init, optimizer, lr):
            return r
    return None


def environment(names, reasons) -> list[str]:
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    versions = [f"numpy {np.__version__}"] + [
        f"{lib} {sys.modules[lib].__version__}" for lib in ("numba", "torch") if lib in sys.modules
    ]
    skipped = [f"`{n}` ({reasons[n]})" for n in reasons if reasons[n] is not None]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Generated by `make dynamics` on {when}; commit {commit}; {platform.platform()}, "
        f"Python {platform.python_version()}, {', '.join(versions)}; thread budget {threads.budget()}.",
        "",
        f"Implementations run: {', '.join(f'`{n}`' for n in names)}."
        + (f" Not available here: {', '.join(skipped)}." if skipped else ""),
        "Negative controls (deliberately wrong, never registered, labelled as such everywhere): "
        "`notebook` — the notebook's step as written (w2 updated before its gradient is propagated, "
        "relu'(0) = 1); `notebook-order` — its update order alone.",
        "",
        f"Each run takes {dynamics.STEPS} steps (the notebook's count). Step i is the loss after i updates "
        f"(step 0 is the initial loss), numbered as the notebook prints them. A run *diverges* at the first "
        f"step whose loss is non-finite or above {dynamics.DIVERGENCE_FACTOR:g} x its initial loss.",
    ]


# ---------------------------------------------------------------- report sections


def summary(results, reference: str, seeds: dict) -> list[str]:
    lines = ["## Answer", ""]
    presets = list(dict.fromkeys(preset_of(r.problem) for r in results))
    for preset in presets:
        rows = [r for r in results if preset_of(r.problem) == preset]
        diverging = {}
        for r in rows:
            if any(t.divergence is not None for t in r.implementations):
                p = r.problem
                diverging.setdefault((p.init, p.optimizer, p.lr), []).append(
                    f"{p.dtype} step {fmt_divs(r.implementations)}"
                )
        configs = {(r.problem.init, r.problem.optimizer, r.problem.lr) for r in rows}
        listed = "; ".join(f"{i} {o} lr={lr:g} ({', '.join(v)})" for (i, o, lr), v in diverging.items()) or "none"
        lines.append(
            f"- **{preset}**: {len(diverging)} of {len(configs)} (init, optimizer, lr) diverge: {listed}. "
            f"Every other run stays below the divergence threshold for all {dynamics.STEPS} steps."
        )
    for preset in presets:
        r_randn = find(results, preset, "float64", "randn", "sgd", 1e-6)
        r_torch = find(results, preset, "float64", "torch", "sgd", 1e-6)
        if r_randn and r_torch and reference in r_randn.runs and reference in r_torch.runs:
            a, b = r_randn.runs[reference].initial, r_torch.runs[reference].initial
            lines.append(
                f"- Initialisation, {preset}: the notebook's randn weights start at loss {fmt_loss(a)}, "
                f"nn.Linear's default at {fmt_loss(b)}, {a / b:.3g}x lower."
            )
    counts = {}
    for r in results:
        if r.problem.dtype == "float64" and reference in r.runs:
            total, hits = counts.get(r.problem.optimizer, (0, 0))
            counts[r.problem.optimizer] = (total + 1, hits + (r.runs[reference].divergence is not None))
    lines.append(
        "- Optimizer (float64, all presets and inits): "
        + "; ".join(f"{o} diverges in {hits} of {total} runs" for o, (total, hits) in counts.items())
        + f". SGD moves each weight by lr x its gradient; Adam by at most "
        f"{agreement.adam_ratio_bound(dynamics.STEPS):.3g} x lr per step over {dynamics.STEPS} steps, whatever the "
        f"gradient's size (agreement.adam_ratio_bound)."
    )
    stalled = find(results, "seed", "float64", "randn", "sgd", 1e-6)
    if stalled and reference in stalled.runs:
        t = stalled.runs[reference]
        lines.append(
            f"- Stalling: at seed, randn, SGD lr=1e-6 (the notebook's third run) the loss only falls from "
            f"{fmt_loss(t.initial)} to {fmt_loss(t.final)} ({t.final / t.initial:.0%} of the start) in "
            f"{dynamics.STEPS} steps: too small a learning rate, not a fault of the step."
        )
    lines += notebook_sentences(results, reference, seeds)
    impl_results = [r for r in results if r.implementations or r.errors]
    agree = sum(r.ok for r in impl_results)
    worst = max((r.comparisons[t.label].worst.ratio for r in results for t in r.implementations), default=float("nan"))
    lines.append(
        f"- Agreement: the implementations agree with the float64 oracle in {agree} of {len(impl_results)} "
        f"configurations (divergence within one step, every compared loss within its bound; worst "
        f"error/bound {fmt_ratio(worst)}). See the last two sections for how far the bound can see."
    )
    for variant in dynamics.CONTROLS:
        passed = [r for r in results for t in r.controls if t.name == variant and r.comparisons[t.label].ok]
        both_diverge = sum(r.oracle.divergence is not None for r in passed)
        within = [r for r in passed if r.oracle.divergence is None]
        lines.append(
            f"- The `{variant}` negative control is rejected by the same trajectory check in "
            f"{len(results) - len(passed)} of {len(results)} configurations. Of the {len(passed)} it passes, "
            f"{both_diverge} are runs where it diverges within one step of the correct one, and "
            f"{len(within)} are runs where its losses stay within the oracle's bound "
            f"({sum(r.problem.dtype == 'float32' for r in within)} of them in float32): the bound is too "
            f"loose there to see a change of order lr^2 per step."
        )
    return lines + [""]


def notebook_sentences(results, reference: str, seeds: dict) -> list[str]:
    r = find(results, "seed", "float64", "randn", "sgd", NOTEBOOK_LR)
    if r is None or reference not in r.runs:
        return []
    right = r.runs[reference]
    order = next(t for t in r.controls if t.name == "notebook-order")
    at = f"loss {fmt_loss(order.losses[order.divergence])} there, " if order.divergence is not None else ""
    line = (
        f"- The notebook's update order, at seed, randn, SGD lr=1e-4 (the notebook's first NumPy run): the "
        f"correct step goes from {fmt_loss(right.initial)} to {fmt_loss(right.final)} (best {fmt_loss(right.best)}, "
        f"divergence {fmt_div(right.divergence)}); with w2 updated before its gradient is propagated the run's "
        f"divergence is {fmt_div(order.divergence)} ({at}final loss {fmt_loss(order.final)})."
    )
    if right.divergence is None and order.divergence is not None:
        line += " At the notebook's size and init, the explosion at lr=1e-4 comes from the update order, not the learning rate."
    counts = seeds.get(NOTEBOOK_LR)
    if counts:
        n = len(counts[reference])
        line += (
            f" Over input seeds 0-{n - 1}: the correct step diverges in {_diverged(counts[reference])} of {n}, "
            f"the notebook's order in {_diverged(counts['notebook-order'])} of {n}."
        )
    return [line, f"- relu'(0) = 1 on top of that order: {control_difference(r)}"]


def _diverged(divergences) -> int:
    return sum(d is not None for d in divergences)


def across_seeds(reference: str, seeds=ROBUSTNESS_SEEDS) -> dict:
    """{lr: {run: [divergence per input seed]}} at seed, randn, SGD, float64: is one draw's verdict typical?"""
    out = {}
    for lr in dynamics.LEARNING_RATES["sgd"]:
        runs = {reference: [], **{v: [] for v in dynamics.CONTROLS}}
        for seed in seeds:
            p = impls.Problem.preset("seed", init="randn", optimizer="sgd", lr=lr, seed=seed)
            runs[reference].append(dynamics.run_implementation(reference, p).divergence)
            for v in dynamics.CONTROLS:
                runs[v].append(dynamics.run_control(v, p).divergence)
        out[lr] = runs
    return out


def seeds_table(seeds: dict) -> list[str]:
    if not seeds:
        return []
    lines = [
        "## Across input seeds (seed preset, randn init, SGD, float64)",
        "",
        "The study above uses input seed 0. Here the reference and the notebook's controls rerun with seeds "
        f"{ROBUSTNESS_SEEDS.start}-{ROBUSTNESS_SEEDS.stop - 1} (new x, y and weights each time): how many runs "
        "diverge, and at which steps.",
        "",
    ]
    labels = list(next(iter(seeds.values())))
    rows = []
    for lr, runs in seeds.items():
        row = [f"{lr:g}"]
        for label in labels:
            steps = sorted({d for d in runs[label] if d is not None})
            where = f" (steps {', '.join(map(str, steps))})" if steps else ""
            row.append(f"{_diverged(runs[label])} of {len(runs[label])}{where}")
        rows.append(row)
    header = ["lr", *(f"`{label}`" if i == 0 else f"{label} (control)" for i, label in enumerate(labels))]
    return lines + table(header, rows) + [""]


def control_difference(r: ConfigResult) -> str:
    """How far the notebook's step departs from its update order alone: the effect of relu'(0) = 1."""
    labels = {t.name: t for t in r.controls}
    a, b = labels["notebook"].losses, labels["notebook-order"].losses
    if np.array_equal(a, b, equal_nan=True):
        return "the two controls' curves are bit-identical (no h is exactly 0 on random inputs)."
    with np.errstate(all="ignore"):
        rel = np.nanmax(np.abs(a - b) / np.abs(b))
    return f"the curves differ by up to {rel:.3g} relative."


def growth_per_step(
    oracle: dynamics.OracleTrajectory, first: int = BOUND_STEPS[0], last: int = BOUND_STEPS[1]
) -> float:
    """Geometric mean factor by which bound/loss grows per step between two steps (inf where not finite)."""
    a, b = oracle.relative_bound(first), oracle.relative_bound(last)
    if not (np.isfinite(a) and np.isfinite(b) and a > 0):
        return float("inf")
    return (b / a) ** (1 / (last - first))


def preset_tables(results, reference: str) -> list[str]:
    lines = [
        "## Divergence and losses by preset",
        "",
        f"Losses are `{reference}`'s in float64 (the float64 oracle's values). `diverges` lists the divergence "
        f"step of every implementation (one value when they all agree). The controls are the notebook's "
        f"step and its update order alone, in float64.",
        "",
    ]
    for preset in dict.fromkeys(preset_of(r.problem) for r in results):
        header = ["init", "optimizer", "lr", "initial", "final", "best", "diverges f64", "diverges f32"]
        header += [f"{v} (control): diverges / final" for v in dynamics.CONTROLS]
        rows = []
        for init in dynamics.STUDY_INITS:
            for optimizer, lrs in dynamics.LEARNING_RATES.items():
                for lr in lrs:
                    r64 = find(results, preset, "float64", init, optimizer, lr)
                    r32 = find(results, preset, "float32", init, optimizer, lr)
                    if r64 is None:
                        continue
                    t = r64.runs.get(reference)
                    row = [init, optimizer, f"{lr:g}"]
                    row += [fmt_loss(t.initial), fmt_loss(t.final), fmt_loss(t.best)] if t else ["-"] * 3
                    row += [fmt_divs(r64.implementations), fmt_divs(r32.implementations) if r32 else "-"]
                    controls = {c.name: c for c in r64.controls}
                    row += [
                        f"{fmt_div(controls[v].divergence)} / {fmt_loss(controls[v].final)}" for v in dynamics.CONTROLS
                    ]
                    rows.append(row)
        lines += [f"### {preset} {impls.SIZES[preset]}", "", *table(header, rows), ""]
    return lines


def notebook_table(results, reference: str) -> list[str]:
    lines = [
        f"## What the notebook's update order changes (seed, lr = {NOTEBOOK_LR:g})",
        "",
        "Divergence step / final loss / best loss of the correct step, the notebook's update order alone, and "
        "the notebook's step as written (order and relu'(0) = 1); the last column isolates relu'(0) = 1.",
        "",
    ]
    header = [
        "init",
        "optimizer",
        "dtype",
        f"`{reference}`",
        "notebook-order (control)",
        "notebook (control)",
        "relu'(0) = 1 adds",
    ]
    rows = []
    for init in dynamics.STUDY_INITS:
        for optimizer in dynamics.LEARNING_RATES:
            for dtype in dynamics.STUDY_DTYPES:
                r = find(results, "seed", dtype, init, optimizer, NOTEBOOK_LR)
                if r is None or reference not in r.runs:
                    continue
                controls = {c.name: c for c in r.controls}
                cells = [
                    f"{fmt_div(t.divergence)} / {fmt_loss(t.final)} / {fmt_loss(t.best)}"
                    for t in (r.runs[reference], controls["notebook-order"], controls["notebook"])
                ]
                rows.append([init, optimizer, dtype, *cells, control_difference(r).split(" (")[0]])
    return lines + table(header, rows) + [""]


def agreement_table(results) -> list[str]:
    labels = list(dict.fromkeys(label for r in results for label in r.runs))
    lines = [
        "## Trajectory agreement",
        "",
        "Each trajectory against the float64 oracle (`agreement.oracle(problem, arrays, steps=50)`: the reference "
        "run in float64 on the same rounded inputs, with the one-step checker's error bound carried through "
        "every step). A cell gives the divergence step and the worst |loss - oracle| / bound over the steps "
        "both runs reach finite and the bound is finite; `ok` needs the divergence within one step of the "
        "oracle's and every ratio <= 1. `horizon` is how many leading steps have a bound below the loss itself; "
        "past it the loss comparison cannot fail and only the divergence step is informative. Columns "
        "`bound/loss @k` give the oracle's bound relative to its loss at step k. `spread`: steps between the "
        "earliest and latest divergence of the implementations and the oracle (must be <= 1).",
        "",
    ]
    header = ["config", "oracle diverges", "horizon", *(f"bound/loss @{k}" for k in BOUND_STEPS), "spread"]
    header += [f"`{label}`" for label in labels] + ["implementations"]
    rows = []
    for r in results:
        row = [config_id(r.problem), fmt_div(r.oracle.divergence), str(r.oracle.horizon)]
        row += [fmt_ratio(r.oracle.relative_bound(k)) for k in BOUND_STEPS if k < r.oracle.steps]
        row.append(str(r.spread))
        for label in labels:
            if label in r.errors:
                row.append(f"ERROR {r.errors[label]}")
            elif label in r.comparisons:
                c = r.comparisons[label]
                verdict = "ok" if c.ok else ("FAIL" if not r.runs[label].control else "rejected")
                row.append(f"{verdict} {fmt_div(c.divergence)} {fmt_ratio(c.worst.ratio)}")
            else:
                row.append("-")
        row.append("agree" if r.ok else "DISAGREE")
        rows.append(row)
    return lines + table(header, rows) + [""]


def bound_growth(results) -> list[str]:
    lines = [
        "## How the bound grows with steps",
        "",
        "The oracle's bound is a worst case: the weights' error is carried as a hard bound and propagated "
        "through absolute values, so with SGD each step multiplies it by about 1 + lr x (the loss's curvature "
        "computed on absolute values), while a converging run's true sensitivity stays near 1. Adam divides "
        "each gradient entry by its own root mean square, so an entry within rounding of 0 has no determined "
        "sign and its weight may move by about +-lr either way: the bound takes the whole step there, from the "
        "first update on (two correct float32 Adam runs can really differ by 2 lr in such a weight). The growth is "
        "geometric until the weights' bound reaches |h| for some entries; those relu mask entries then count at "
        "the full size of their gradient and the bound runs away to inf. Median bound/loss over the "
        "configurations that do not diverge:",
        "",
    ]
    header = ["dtype", "optimizer", "configs", *(f"step {k}" for k in BOUND_STEPS)]
    header += [f"x per step, {BOUND_STEPS[0]} to {BOUND_STEPS[1]}", "full 50-step horizon"]
    rows = []
    for dtype in dynamics.STUDY_DTYPES:
        for optimizer in dynamics.LEARNING_RATES:
            group = [
                r
                for r in results
                if (r.problem.dtype, r.problem.optimizer) == (dtype, optimizer) and r.oracle.divergence is None
            ]
            if not group:
                continue
            medians = [np.median([r.oracle.relative_bound(k) for r in group]) for k in BOUND_STEPS]
            growth = np.median([growth_per_step(r.oracle) for r in group])
            full = sum(r.oracle.horizon == r.oracle.steps for r in group)
            rows.append(
                [
                    dtype,
                    optimizer,
                    str(len(group)),
                    *(fmt_ratio(m) for m in medians),
                    f"{growth:.3g}",
                    f"{full} of {len(group)}",
                ]
            )
    lines += table(header, rows)
    lines += [
        "",
        "At step 0 the bound is the forward pass's rounding alone. Smaller learning rates keep it small for "
        "longer. Where it reaches the loss itself (float32 and Adam at the larger rates, within a few steps) "
        "the final-loss comparison can no longer fail and only the divergence step is checked; the "
        "per-configuration `horizon` in the table above says for how many steps the losses were checked "
        "meaningfully.",
        "",
    ]
    return lines


def write_report(results, names, reasons, reference, figure_name, seeds: dict) -> str:
    lines = ["# Training dynamics", "", *environment(names, reasons), ""]
    lines += summary(results, reference, seeds)
    lines += [f"![Loss curves per learning rate]({figure_name})", ""]
    lines += preset_tables(results, reference)
    lines += notebook_table(results, reference)
    lines += seeds_table(seeds)
    lines += agreement_table(results)
    lines += bound_growth(results)
    return "\n".join(lines)


# ---------------------------------------------------------------- figure


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
    parser = cli.Parser(prog="python -m bench.dynamics_report", description=__doc__.splitlines()[0])
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
    sys.exit(cli.run("python -m bench.dynamics_report", main))
