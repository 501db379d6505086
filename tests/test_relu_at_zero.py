"""relu'(0) = 0 in every implementation: an exactly-zero column of h gets exactly zero gradient."""

import numpy as np
import pytest

import impls

from .conftest import require


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", impls.names())
def test_zero_column_of_w1_gets_zero_gradient(name, dtype):
    require(name)
    p = impls.Problem(n=7, d=13, h=5, o=3, dtype=dtype, init="randn")
    x, y, w1, w2 = (a.copy() for a in impls.make_arrays(p))
    w1[:, 2] = 0  # h[:, 2] = x @ 0 is exactly 0 in any order of summation
    loss, gw1, gw2 = impls.create(name, p, impls.Arrays(x, y, w1, w2)).loss_and_grads()
    assert np.all(gw1[:, 2] == 0), f"relu'(0) must be 0; got gw1[:, 2] = {gw1[:, 2]}"
    assert np.all(gw1[:, [0, 1, 3, 4]] != 0), "the live columns must still get gradient"
    assert np.all(gw2[2] == 0), "a unit that is off everywhere gives w2's row no gradient"
