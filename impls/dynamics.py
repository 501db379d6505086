"""Training dynamics: a run's loss curve, where it diverges, and whether implementations agree on it.

Step i of a run is the i-th loss it reports, the loss after i updates (step 0 is the
initial loss), numbered as the notebook prints them. A run diverges at the first step whose
loss is non-finite or above DIVERGENCE_FACTOR x the initial loss; a run that never does has
divergence None. Divergence is a result: NumPy's overflow warnings are silenced for the
duration of the run only.

Agreement of trajectories reuses the one-step checker's oracle (`agreement.oracle(...,
steps=k)`): the float64 reference run k steps on the implementation's own rounded inputs,
with the rounding-error bound carried through every step. That bound is a worst-case
linear propagation, so it grows with the steps, by orders of magnitude over 50 steps and
faster in float32 and with Adam; where it reaches the loss itself the comparison can no
longer fail, and `OracleTrajectory.horizon` says how many leading steps it still means
something. Once a run diverges the bound is inf or NaN and nothing after it is compared;
what is compared then is the divergence step, which must agree within one step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import numpy as np

from . import agreement, negative_controls
from .problem import Arrays, Problem, make_arrays, validate_arrays
from .registry import create
from .step import Step

STEPS = 50  # the notebook's iteration count
DIVERGENCE_FACTOR = 1e6  # a loss this many times the initial one counts as diverged

# The study's grid. Append only: ids built from it are recorded in results.
STUDY_PRESETS = ("seed", "tutorial")
STUDY_DTYPES = ("float64", "float32")
STUDY_INITS = ("randn", "torch")  # "randn": the notebook's NumPy cell; "torch": nn.Linear's default
LEARNING_RATES = {"sgd": (1e-3, 1e-4, 1e-5, 1e-6), "adam": (1e-2, 1e-3, 1e-4)}

# Negative controls run through the study beside the implementations (keys of
# negative_controls.VARIANTS): the notebook's step as written, and its update order alone,
# so the order's effect can be told apart from relu'(0) = 1.
CONTROLS = ("notebook", "notebook-order")


def study_problems(presets=STUDY_PRESETS, dtypes=STUDY_DTYPES) -> list[Problem]:
    """Every (preset, dtype, init, optimizer, lr) of the study, in report order."""
    return [
        Problem.preset(preset, dtype=dtype, init=init, optimizer=optimizer, lr=lr)
        for preset in presets
        for dtype in dtypes
        for init in STUDY_INITS
        for optimizer, lrs in LEARNING_RATES.items()
        for lr in lrs
    ]


@contextlib.contextmanager
def quiet_overflow():
    """Silence NumPy's floating-point warnings inside the block only: a diverging run is expected here."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def divergence_step(losses, factor: float = DIVERGENCE_FACTOR) -> int | None:
    """Index of the first loss that is non-finite or above factor x losses[0]; None if there is none."""
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"losses must be a non-empty 1-d array, got shape {losses.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        diverged = ~np.isfinite(losses) | (losses > factor * losses[0])
    hits = np.flatnonzero(diverged)
    return int(hits[0]) if hits.size else None


def _check_run_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """The loss curve of one run of one implementation (or negative control) on one problem."""

    name: str
    problem: Problem
    losses: np.ndarray  # float64, one per step
    control: bool = False  # a deliberately wrong step, never a registered implementation

    @property
    def label(self) -> str:
        return f"{self.name} [negative control]" if self.control else self.name

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def initial(self) -> float:
        return float(self.losses[0])

    @property
    def final(self) -> float:
        return float(self.losses[-1])

    @property
    def best(self) -> float:
        """Smallest finite loss of the run (NaN if none is finite)."""
        finite = self.losses[np.isfinite(self.losses)]
        return float(finite.min()) if finite.size else float("nan")

    @property
    def divergence(self) -> int | None:
        return divergence_step(self.losses)


def run(step: Step, steps: int = STEPS, *, control: bool = False) -> Trajectory:
    """Advance a fresh step `steps` times and keep its losses; a diverging run is a result, not an error."""
    steps = _check_run_steps(steps)
    with quiet_overflow():
        losses = np.asarray(step.run(steps), dtype=np.float64)
        step.sync()
    name = getattr(step, "name", type(step).__name__)
    return Trajectory(name, step.problem, losses, control)


def run_implementation(name: str, problem: Problem, arrays: Arrays | None = None, steps: int = STEPS) -> Trajectory:
    """The trajectory of registered implementation `name` (RuntimeError where it cannot run here)."""
    return run(create(name, problem, arrays), steps)


def create_control(variant: str, problem: Problem, arrays: Arrays | None = None) -> Step:
    """A negative control from impls.negative_controls, built directly: controls are never registered."""
    if variant not in negative_controls.VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(negative_controls.VARIANTS)}; got {variant!r}")
    arrays = validate_arrays(problem, make_arrays(problem) if arrays is None else arrays)
    step = negative_controls.VARIANTS[variant](problem, arrays)
    step.name = variant
    return step


def run_control(variant: str, problem: Problem, arrays: Arrays | None = None, steps: int = STEPS) -> Trajectory:
    """The trajectory of negative control `variant`, labelled as one."""
    return run(create_control(variant, problem, arrays), steps, control=True)


@dataclasses.dataclass(frozen=True)
class OracleTrajectory:
    """The float64 oracle's losses over a run, each with the error bound a correct implementation may carry."""

    problem: Problem
    losses: np.ndarray  # float64, one per step
    bounds: np.ndarray  # inf or NaN once the run has grown past what the bound can follow

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def divergence(self) -> int | None:
        return divergence_step(self.losses)

    def relative_bound(self, step: int) -> float:
        """bound / |loss| at `step`; inf where either is not finite. At 1 or more the check cannot fail."""
        loss, bound = abs(float(self.losses[step])), float(self.bounds[step])
        if not (np.isfinite(loss) and np.isfinite(bound)):
            return float("inf")
        return bound / loss if loss > 0 else (0.0 if bound == 0 else float("inf"))

    @property
    def horizon(self) -> int:
        """How many leading steps have a bound below the loss itself: where a wrong trajectory can be caught."""
        for i in range(self.steps):
            if not self.relative_bound(i) < 1:
                return i
        return self.steps


def oracle_trajectory(problem: Problem, arrays: Arrays | None = None, steps: int = STEPS) -> OracleTrajectory:
    """agreement.oracle's loss curve and its bounds for `steps` steps, on `arrays` (default make_arrays)."""
    steps = _check_run_steps(steps)
    with quiet_overflow():
        expected = agreement.oracle(problem, arrays, steps)
    return OracleTrajectory(problem, expected.values["losses"], expected.bounds["losses"])


def _step_or_end(divergence: int | None, steps: int) -> int:
    """A divergence step, counting "none" as the step after the last one."""
    return steps if divergence is None else divergence


@dataclasses.dataclass(frozen=True)
class TrajectoryComparison:
    """One trajectory against the oracle's: divergence step, and every loss both runs reach finite."""

    label: str
    divergence: int | None
    expected_divergence: int | None
    steps: int
    compared: int  # losses compared with their bound: before either run diverges, where the bound is finite
    worst: agreement.Comparison  # the worst of them (ratio 0 if none was compared)
    worst_step: int | None

    @property
    def divergence_ok(self) -> bool:
        """Both diverge within one step of each other, or neither does (a divergence at the last step counts as within one)."""
        got, want = (_step_or_end(d, self.steps) for d in (self.divergence, self.expected_divergence))
        return abs(got - want) <= 1

    @property
    def ok(self) -> bool:
        return self.divergence_ok and self.worst.ok

    def __str__(self):
        status = "ok  " if self.ok else "FAIL"
        div = f"divergence {_fmt_div(self.divergence)} (oracle {_fmt_div(self.expected_divergence)})"
        worst = f"worst loss error/bound {self.worst.ratio:.3g} at step {self.worst_step} over {self.compared} steps"
        return f"{status} {self.label}: {div}; {worst}"


def _fmt_div(divergence: int | None) -> str:
    return "none" if divergence is None else f"step {divergence}"


def compare(trajectory: Trajectory, expected: OracleTrajectory) -> TrajectoryComparison:
    """Compare a trajectory with the oracle's, loss by loss within its propagated bound."""
    if trajectory.problem != expected.problem or trajectory.steps != expected.steps:
        raise ValueError(
            f"trajectory must be of the oracle's problem and length, got {trajectory.problem} x {trajectory.steps} "
            f"against {expected.problem} x {expected.steps}"
        )
    div, want = trajectory.divergence, expected.divergence
    last = min(_step_or_end(div, trajectory.steps), _step_or_end(want, expected.steps))
    steps = np.arange(last)
    steps = steps[np.isfinite(expected.bounds[:last])]
    if steps.size:
        worst = agreement.compare("losses", trajectory.losses[steps], expected.losses[steps], expected.bounds[steps])
        worst_step = int(steps[worst.index[0]])
    else:
        worst, worst_step = agreement.Comparison("losses", 0.0), None
    return TrajectoryComparison(trajectory.label, div, want, trajectory.steps, int(steps.size), worst, worst_step)


def divergence_spread(divergences, steps: int = STEPS) -> int:
    """Steps between the earliest and latest divergence of several runs ("none" counts as `steps`)."""
    at = [_step_or_end(d, steps) for d in divergences]
    return max(at) - min(at) if at else 0
