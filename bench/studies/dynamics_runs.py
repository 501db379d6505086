"""The training-dynamics study's runs: every implementation and control against the oracle, per configuration."""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import impls
from impls import dynamics

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


def count_diverged(divergences) -> int:
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
