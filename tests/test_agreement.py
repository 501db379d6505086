"""Every implementation agrees with the float64 oracle, and the checker rejects wrong steps."""

import math

import numpy as np
import pytest

import impls
from impls import agreement, negative_controls

from .conftest import require

# The name varies fastest, so every implementation of one problem is checked against one cached oracle run;
# under pytest-xdist (make test's workers) a problem's cases form one group, run by one worker, so that no
# oracle runs twice. The large preset's cases are one group: each runs products of 2048 on every core, and
# two at once on two workers took twice as long as one after the other (4 cases: 75-85 s against 47 s).
#
# At the large preset SGD only. What large adds over medium (every dimension 256 or more: several tiles of
# every kernel) is the length of the inner products (2048) and the number of elements held to the bound,
# which SGD checks in both dtypes; Adam's update is elementwise, the same code at every size, checked at
# seed, tutorial and medium and at the odd shapes. Large with Adam took about 100 s of the 807 s the tests
# took in one process. Every configuration asv or make bench times is still checked in its setup, Adam at large too.
# Likewise two updates at large, not three: the second runs from the state the first left (the step after a
# step), and a third adds nothing a smaller preset does not check. The oracle's products at large took 12.6 s
# for three updates and 6.6 s for two (float64 SGD), each implementation's calls a quarter less.
LARGE_STEPS = 2
CASES = [
    pytest.param(name, preset, dtype, optimizer, id=f"{name}-{preset}-{dtype}-{optimizer}", marks=mark)
    for preset in impls.CPU_PRESETS
    for dtype in ("float32", "float64")
    for optimizer in ("sgd", "adam")
    if not (preset == "large" and optimizer == "adam")
    for mark in [pytest.mark.xdist_group("large" if preset == "large" else f"oracle-{preset}-{dtype}-{optimizer}")]
    for name in impls.names()
]


@pytest.mark.parametrize(("name", "preset", "dtype", "optimizer"), CASES)
def test_agrees_with_oracle(name, preset, dtype, optimizer):
    require(name)
    p = agreement.check_problem(preset, dtype, optimizer)
    steps = LARGE_STEPS if preset == "large" else agreement.DEFAULT_STEPS
    agreement.assert_agrees(impls.create(name, p), steps=steps)


# Numba pads H and O to 4 rows with zeros, so at H = 5 or O = 3 a product's last inner term is
# always a zero and a kernel that drops it still agrees. Below NT_MIN_K (32) y_pred and ga go
# through the NN kernel with inner dimension H and O: these shapes make H, O or both a whole
# number of tiles (N and D whole vectors, 16), so every inner term counts.
ODD_SHAPES = [(1, 1, 1, 1), (7, 13, 5, 3), (16, 16, 8, 5), (16, 16, 6, 4), (16, 16, 8, 4)]


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=["x".join(map(str, shape)) for shape in ODD_SHAPES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", impls.names())
def test_agrees_at_odd_shapes(name, shape, dtype, optimizer):
    require(name)
    n, d, h, o = shape
    p = impls.Problem(n=n, d=d, h=h, o=o, dtype=dtype, optimizer=optimizer, lr=agreement.CHECK_LR[optimizer])
    agreement.assert_agrees(impls.create(name, p))


def _zero_column_arrays(p):
    x, y, w1, w2 = (a.copy() for a in impls.make_arrays(p))
    w1[:, 1] = 0  # a column of h that is exactly 0: only relu'(0) decides its gradient
    return impls.Arrays(x, y, w1, w2)


# (variant, problem, inputs): each problem is one where the variant's fault shows.
WRONG = {
    "notebook-order sgd": ("notebook-order", impls.Problem.preset("seed", lr=1e-6), None),
    "notebook-order adam": ("notebook-order", impls.Problem.preset("seed", optimizer="adam", lr=1e-3), None),
    # In float32 the order's effect (of order lr^2 in w1) hides below rounding at lr = 1e-6; a larger one shows it.
    "notebook-order float32 sgd": ("notebook-order", impls.Problem.preset("seed", dtype="float32", lr=1e-4), None),
    "notebook-order float32 adam": (
        "notebook-order",
        impls.Problem.preset("seed", dtype="float32", optimizer="adam", lr=1e-3),
        None,
    ),
    "relu-grad-one-at-zero": ("relu-grad-one-at-zero", impls.Problem.preset("seed"), _zero_column_arrays),
    "relu-grad-one-at-zero float32": (
        "relu-grad-one-at-zero",
        impls.Problem.preset("seed", dtype="float32"),
        _zero_column_arrays,
    ),
    "w2-not-transposed": ("w2-not-transposed", impls.Problem.preset("seed"), None),
    "w2-not-transposed float32": ("w2-not-transposed", impls.Problem.preset("seed", dtype="float32"), None),
    "gw1-transposed": ("gw1-transposed", impls.Problem(n=8, d=6, h=6, o=3), None),
    "gw1-transposed float32": ("gw1-transposed", impls.Problem(n=8, d=6, h=6, o=3, dtype="float32"), None),
    "float32-accumulation": ("float32-accumulation", impls.Problem.preset("seed"), None),
    "float32-accumulation tutorial": ("float32-accumulation", impls.Problem.preset("tutorial"), None),
    "notebook": ("notebook", impls.Problem.preset("seed", lr=1e-4, init="randn"), None),
}


def _step(cls, p, make_inputs):
    arrays = impls.make_arrays(p) if make_inputs is None else make_inputs(p)
    return cls(p, impls.problem.validate_arrays(p, arrays))


@pytest.mark.parametrize("case", list(WRONG))
def test_checker_rejects_wrong_step(case):
    variant, p, make_inputs = WRONG[case]
    # The same problem passes with the right step, so the rejection is the variant's fault.
    assert agreement.check(_step(impls.numpy_ref.NumpyStep, p, make_inputs)).ok
    report = agreement.check(_step(negative_controls.VARIANTS[variant], p, make_inputs))
    assert not report.ok, f"{variant} passed the checker:\n{report}"


def test_report_names_the_worst_element():
    p = impls.Problem.preset("seed")
    report = agreement.check(_step(negative_controls.W2NotTransposed, p, None))
    worst = report.worst
    assert worst.quantity in {"gw1", "w1", "w2", "losses"}
    assert worst.ratio > 1 and worst.ratio == report.worst_ratio
    assert "DISAGREES" in str(report) and "FAIL" in str(report)
    with pytest.raises(agreement.AgreementError, match="DISAGREES"):
        agreement.assert_agrees(_step(negative_controls.W2NotTransposed, p, None))


def test_compare_flags_shape_dtype_and_nan():
    expected, bound = np.zeros((2, 2)), np.ones((2, 2))
    assert not agreement.compare("gw1", np.zeros((2, 3)), expected, bound).ok
    assert not agreement.compare("gw1", np.zeros((2, 2), np.float32), expected, bound, "float64").ok
    assert not agreement.compare("gw1", np.full((2, 2), np.nan), expected, bound).ok
    assert agreement.compare("gw1", np.full((2, 2), 0.5), expected, bound).ratio == 0.5
    # Where the bound is zero only an exact match passes.
    assert agreement.compare("gw1", np.zeros((2, 2)), expected, np.zeros((2, 2))).ok
    assert not agreement.compare("gw1", np.full((2, 2), 1e-300), expected, np.zeros((2, 2))).ok


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_oracle_runs_in_float64_on_the_rounded_inputs(optimizer):
    # An oracle run in the implementation's dtype would check float32 against float32 and agree trivially.
    p = agreement.check_problem("seed", "float32", optimizer)
    expected = agreement.oracle(p)
    assert {v.dtype for v in expected.values.values()} == {np.dtype(np.float64)}
    x, y, w1, w2 = (a.astype(np.float64) for a in impls.make_arrays(p))  # float32 numbers, widened exactly
    diff = np.maximum(x @ w1, 0) @ w2 - y  # N,O
    loss = math.fsum((diff * diff).ravel())
    # Two float64 evaluations of the same sums differ by at most (D + H + N*O) float64 roundings of
    # the loss carried out on absolute values; float32 arithmetic would be off by some 1e9 times more.
    abs_diff = np.abs(x) @ np.abs(w1) @ np.abs(w2) + np.abs(y)
    tol = (p.d + p.h + p.n * p.o) * np.finfo(np.float64).eps * np.sum(abs_diff * abs_diff)
    assert abs(expected.values["loss"] - loss) <= tol


@pytest.mark.parametrize(
    ("dtype", "u"), [("float32", 2**-24 + 2**-53), ("float64", 2**-53 + 2**-53)], ids=["float32", "float64"]
)
def test_the_bound_of_a_product_is_lambda_u_sqrt_k_times_its_absolute_value(dtype, u):
    # Pins the bound's size on exact inputs: ones(1, K) @ ones(K, 1) = K, every term 1. u is the
    # dtype's unit roundoff plus float64's (the oracle rounds too); LAMBDA = 10 scales of independent
    # rounding error; sqrt(K) because K independent errors add in quadrature.
    k = 64
    p = impls.Problem(n=1, d=k, h=1, o=1, dtype=dtype)
    run = agreement._BoundedStep(p, impls.make_arrays(p))
    assert run.u == u
    ones = agreement.Bounded.exact
    product = run.matmul(ones(np.ones((1, k))), ones(np.ones((k, 1))), k)
    assert product.val == k
    assert product.sd == pytest.approx(u * math.sqrt(k) * k, rel=4 * 2**-53, abs=0)  # a square and a square root
    assert product.err == 10 * product.sd


def test_adam_matches_torch_optim_adam():
    torch = pytest.importorskip("torch", reason="torch not installed")
    steps = 5
    p = impls.Problem.preset("seed", optimizer="adam", lr=1e-2)
    x, y, w1, w2 = (torch.from_numpy(a.copy()) for a in impls.make_arrays(p))
    w1.requires_grad_(True)
    w2.requires_grad_(True)
    opt = torch.optim.Adam([w1, w2], lr=p.lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((torch.relu(x @ w1) @ w2 - y) ** 2).sum()
        loss.backward()
        opt.step()
    expected = agreement.oracle(p, steps=steps)
    step = impls.create("numpy", p)
    step.run(steps)
    ours = step.weights()
    for name, theirs, mine in zip(("w1", "w2"), (w1.detach().numpy(), w2.detach().numpy()), ours, strict=True):
        # torch and the reference each land within the oracle's bound, hence near each other.
        assert agreement.compare(name, theirs, expected.values[name], expected.bounds[name]).ok
        assert agreement.compare(name, mine, expected.values[name], expected.bounds[name]).ok
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=2 * expected.bounds[name].max())


@pytest.mark.parametrize("t", [1, 2, 5, 50])
def test_adam_ratio_bound_holds_and_is_attained(t):
    from impls.problem import ADAM_BETA1, ADAM_BETA2

    def ratio(grads):  # m_hat / sqrt(v_hat) after t steps with these gradients, oldest first
        m = v = 0.0
        for g in grads:
            m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
            v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
        return (m / (1 - ADAM_BETA1**t)) / np.sqrt(v / (1 - ADAM_BETA2**t))

    bound = agreement.adam_ratio_bound(t) * (1 + 16 * np.finfo(float).eps)  # the test's own roundings
    rng = np.random.default_rng(t)
    assert all(abs(ratio(rng.standard_normal(t) * rng.uniform(0, 10, t))) <= bound for _ in range(200))
    # Cauchy-Schwarz is tight for g_i proportional to w_i / z_i (age 0 is the newest).
    age = np.arange(t)[::-1]
    worst = (ADAM_BETA1 / ADAM_BETA2) ** age
    assert ratio(worst) == pytest.approx(agreement.adam_ratio_bound(t), rel=16 * np.finfo(float).eps)
