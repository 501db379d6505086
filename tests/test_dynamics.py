"""Training dynamics: divergence detection, trajectories against the oracle, the notebook's negative control."""

import functools
import warnings

import numpy as np
import pytest

import impls
from impls import dynamics, negative_controls, registry
from impls.step import Step

from .conftest import AVAILABLE, require

SEED_PROBLEMS = dynamics.study_problems(presets=("seed",))
# The notebook's first NumPy run: converges with the right update order, explodes with its own.
NOTEBOOK_RUN = impls.Problem.preset("seed", init="randn", optimizer="sgd", lr=1e-4)


@functools.cache
def seed_oracle(p):
    return dynamics.oracle_trajectory(p)


@functools.cache
def seed_trajectory(name, p):
    return dynamics.run_implementation(name, p)


# ---------------------------------------------------------------- divergence detection


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([1.0, 2.0, 3.0], None),
        ([5.0, 4.0, 5e6, 5.000001e6], 3),  # exactly 1e6 x the initial loss is not above it
        ([1.0, np.inf, 1.0], 1),
        ([1.0, 0.5, np.nan], 2),
        ([np.nan, 1.0], 0),
    ],
)
def test_divergence_step_rule(losses, expected):
    assert dynamics.divergence_step(losses) == expected


class ExplodingStep(Step):
    """A constructed run: the loss grows 10x per update from 3, then overflows to inf and NaN."""

    def __init__(self, problem):
        super().__init__(problem, None)
        self.loss = np.float64(3.0)

    def loss_and_grads(self):
        raise NotImplementedError

    def _step(self):
        loss = self.loss
        # Past 1e8, square repeatedly: float64 overflows to inf, then inf - inf is NaN, each with a NumPy warning.
        self.loss = loss * 10 if loss < 1e8 else (loss**8 - loss**8 if np.isinf(loss) else loss**8)
        return loss

    def weights(self):
        raise NotImplementedError


def test_exploding_run_is_a_result_without_warnings():
    p = impls.Problem(n=1, d=1, h=1, o=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping the run fails the test
        trajectory = dynamics.run(ExplodingStep(p), 12)
    losses = trajectory.losses
    # 3e6 = 1e6 x 3 is not above the threshold; 3e7 at step 7 is.
    assert losses[6] == 3e6 and losses[7] == 3e7
    assert trajectory.divergence == 7
    assert np.isinf(losses[10]) and np.isnan(losses[11])
    assert trajectory.initial == 3.0 and np.isnan(trajectory.final) and trajectory.best == 3.0
    # The silencing was scoped to the run: NumPy warns again outside it.
    with pytest.warns(RuntimeWarning, match="overflow"):
        np.float64(1e300) * np.float64(1e300)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_real_exploding_run_diverges_quietly(dtype):
    p = impls.Problem.preset("seed", dtype=dtype, init="randn", optimizer="sgd", lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trajectory = dynamics.run_implementation("numpy", p)
    d = trajectory.divergence
    assert d is not None and d >= 1
    before = trajectory.losses[:d]
    assert np.isfinite(before).all() and (before <= 1e6 * trajectory.initial).all()
    at = trajectory.losses[d]
    assert not np.isfinite(at) or at > 1e6 * trajectory.initial
    assert not np.isfinite(trajectory.final)


def test_run_that_does_not_diverge_reports_none():
    trajectory = dynamics.run_implementation("numpy", NOTEBOOK_RUN)
    assert trajectory.divergence is None
    assert np.isfinite(trajectory.losses).all() and trajectory.steps == dynamics.STEPS
    assert trajectory.best <= trajectory.final < trajectory.initial


def test_bad_input_names_field():
    with pytest.raises(ValueError, match="^losses must be a non-empty 1-d array"):
        dynamics.divergence_step([])
    with pytest.raises(ValueError, match="^steps must be a positive integer, got 0"):
        dynamics.run_implementation("numpy", NOTEBOOK_RUN, steps=0)
    with pytest.raises(ValueError, match="^variant must be one of .*'bogus'"):
        dynamics.create_control("bogus", NOTEBOOK_RUN)


# ---------------------------------------------------------------- the trajectory check itself


def _oracle(losses, bounds):
    return dynamics.OracleTrajectory(NOTEBOOK_RUN, np.array(losses, float), np.array(bounds, float))


def _trajectory(losses):
    return dynamics.Trajectory("fake", NOTEBOOK_RUN, np.array(losses, float))


def test_compare_divergence_within_one_step_only():
    inf, nan = np.inf, np.nan
    expected = _oracle([1, 2, 1e7, nan, nan], [0.1, 0.1, inf, nan, nan])  # diverges at 2
    assert dynamics.compare(_trajectory([1, 2, 1e7, nan, nan]), expected).ok
    assert dynamics.compare(_trajectory([1, 2, 3, 1e7, nan]), expected).ok  # one step later
    assert dynamics.compare(_trajectory([1, inf, nan, nan, nan]), expected).ok  # one step earlier
    assert not dynamics.compare(_trajectory([1, 2, 3, 4, 1e7]), expected).ok  # two steps later
    assert not dynamics.compare(_trajectory([1, 2, 3, 4, 5]), expected).ok  # never
    assert not dynamics.compare(_trajectory([inf, nan, nan, nan, nan]), expected).ok  # two steps earlier


def test_compare_losses_within_their_bound_where_it_is_finite():
    expected = _oracle([4, 3, 2, 1], [0.1, 0.1, np.inf, np.inf])
    near = dynamics.compare(_trajectory([4, 3.05, 2, 1]), expected)
    assert near.ok and near.compared == 2 and near.worst.ratio == pytest.approx(0.5) and near.worst_step == 1
    assert not dynamics.compare(_trajectory([4, 3.2, 2, 1]), expected).ok
    # Where the bound is infinite nothing can be checked: a far-off loss there is not counted either way.
    assert dynamics.compare(_trajectory([4, 3, 50, 60]), expected).ok
    assert expected.horizon == 2


def test_divergence_spread_counts_none_as_the_run_length():
    assert dynamics.divergence_spread([None, None], 50) == 0
    assert dynamics.divergence_spread([49, None], 50) == 1
    assert dynamics.divergence_spread([2, 3, 2], 50) == 1
    assert dynamics.divergence_spread([2, None], 50) == 48


# ---------------------------------------------------------------- implementations against the oracle


@pytest.mark.parametrize("name", impls.names())
def test_trajectories_agree_with_oracle_at_seed(name):
    require(name)
    failures = []
    for p in SEED_PROBLEMS:
        comparison = dynamics.compare(seed_trajectory(name, p), seed_oracle(p))
        if not comparison.ok:
            failures.append(f"{p}: {comparison}")
    assert not failures, "\n".join(failures)


def test_implementations_diverge_within_one_step_of_each_other_at_seed():
    names = [n for n, reason in AVAILABLE.items() if reason is None]
    for p in SEED_PROBLEMS:
        divergences = {n: seed_trajectory(n, p).divergence for n in names}
        divergences["oracle"] = seed_oracle(p).divergence
        assert dynamics.divergence_spread(divergences.values()) <= 1, f"{p}: {divergences}"


def test_seed_grid_contains_diverging_and_converging_runs():
    # Otherwise the agreement tests above would not exercise the divergence comparison.
    divergences = [seed_oracle(p).divergence for p in SEED_PROBLEMS]
    assert any(d is None for d in divergences) and any(d is not None for d in divergences)


# ---------------------------------------------------------------- the notebook's negative control


def test_notebook_control_is_labelled_and_never_registered():
    assert not set(dynamics.CONTROLS) & set(impls.names())
    registered = {(e.module, e.cls) for e in registry._REGISTRY.values()}
    for cls in negative_controls.VARIANTS.values():
        assert ("negative_controls", cls.__name__) not in registered
    with pytest.raises(ValueError, match="^name must be one of"):
        impls.create("notebook", NOTEBOOK_RUN)
    control = dynamics.run_control("notebook", NOTEBOOK_RUN, steps=2)
    assert control.control and control.label == "notebook [negative control]"
    assert isinstance(dynamics.create_control("notebook", NOTEBOOK_RUN), negative_controls.NotebookStep)
    right = dynamics.run_implementation("numpy", NOTEBOOK_RUN, steps=2)
    assert not right.control and right.label == "numpy"


@pytest.mark.parametrize("variant", dynamics.CONTROLS)
def test_trajectory_check_rejects_the_notebook_order(variant):
    # Through the divergence step: the right order converges, the notebook's explodes.
    expected = seed_oracle(NOTEBOOK_RUN)
    control = dynamics.run_control(variant, NOTEBOOK_RUN)
    assert expected.divergence is None and control.divergence is not None
    assert not dynamics.compare(control, expected).ok
    # Through the losses alone, where neither run diverges.
    p = impls.Problem.preset("seed", init="torch", optimizer="adam", lr=1e-2)
    comparison = dynamics.compare(dynamics.run_control(variant, p), seed_oracle(p))
    assert comparison.divergence is None and comparison.divergence_ok and not comparison.worst.ok
