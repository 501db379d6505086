"""The NumPy reference against first principles: finite differences, a hand-worked case, relu'(0)."""

import numpy as np
import pytest

import impls
from impls import numpy_ref


def loss_at(x, y, w1, w2) -> float:
    return float(numpy_ref.forward(x, y, w1, w2)[0])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (7, 13, 5, 3), (4, 6, 5, 3), (16, 9, 12, 2)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_match_central_differences(shape, seed):
    n, d, h, o = shape
    p = impls.Problem(n=n, d=d, h=h, o=o, init="randn", seed=seed)
    x, y, w1, w2 = (a.copy() for a in impls.make_arrays(p))
    hidden = x @ w1
    eps = 1e-4
    # Central differences of a quadratic are exact, and the loss is quadratic in each weight
    # as long as no h crosses 0; with |dh| <= eps * max|x| per perturbed w1 entry, this keeps it so.
    assert np.min(np.abs(hidden)) > eps * np.max(np.abs(x)), "pick another seed: h too close to a kink"
    loss, gw1, gw2 = impls.create("numpy", p).loss_and_grads()
    # What is left is rounding: each loss evaluation errs by at most (D + H + N*O) u times the
    # loss carried out on absolute values; a difference of two, divided by 2 eps.
    abs_loss = loss_at(np.abs(x), -np.abs(y), np.abs(w1), np.abs(w2))
    tol = 2 * (d + h + n * o) * np.finfo(np.float64).eps / 2 * abs_loss / (2 * eps)
    for w, grad in ((w1, gw1), (w2, gw2)):
        numeric = np.empty_like(w)
        for idx in np.ndindex(w.shape):
            saved = w[idx]
            w[idx] = saved + eps
            up = loss_at(x, y, w1, w2)
            w[idx] = saved - eps
            down = loss_at(x, y, w1, w2)
            w[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=0, atol=tol)


def test_hand_worked_step():
    # x = [1, 2]; h = x @ w1 = [2, -3] -> a = [2, 0]; y_pred = a @ w2 = 2; loss = (2 - 1)^2 = 1
    # g = 2; gw2 = a.T g = [4, 0]; ga = g w2.T = [2, -4]; gh = [2, 0]; gw1 = x.T gh = [[2, 0], [4, 0]]
    # SGD with lr = 1/4 (every number exact in binary): w1 -> [[.5, -1], [-.5, -1]], w2 -> [0, -2]
    p = impls.Problem(n=1, d=2, h=2, o=1, lr=0.25)
    arrays = impls.Arrays(
        x=np.array([[1.0, 2.0]]),
        y=np.array([[1.0]]),
        w1=np.array([[1.0, -1.0], [0.5, -1.0]]),
        w2=np.array([[1.0], [-2.0]]),
    )
    step = impls.create("numpy", p, arrays)
    loss, gw1, gw2 = step.loss_and_grads()
    assert loss == 1.0
    np.testing.assert_array_equal(gw1, [[2.0, 0.0], [4.0, 0.0]])
    np.testing.assert_array_equal(gw2, [[4.0], [0.0]])
    # After the update h = [-0.5, -3], every unit is off, y_pred = 0 and the loss stays 1.
    np.testing.assert_array_equal(step.run(2), [1.0, 1.0])
    w1, w2 = step.weights()
    np.testing.assert_array_equal(w1, [[0.5, -1.0], [-0.5, -1.0]])
    np.testing.assert_array_equal(w2, [[0.0], [-2.0]])


def test_update_uses_w2_before_its_update():
    # Weights after one SGD step are exactly w - lr * grads at the starting weights.
    p = impls.Problem.preset("seed", lr=1e-3, init="randn")
    step = impls.create("numpy", p)
    _, gw1, gw2 = step.loss_and_grads()
    step.step()
    w1, w2 = step.weights()
    x, y, w1_0, w2_0 = impls.make_arrays(p)
    np.testing.assert_array_equal(w1, w1_0 - p.lr * gw1)
    np.testing.assert_array_equal(w2, w2_0 - p.lr * gw2)
