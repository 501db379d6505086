"""Every backend's Adam update, one call of the kernel: constants formed in float64, eps outside the root.

Agreement checks barely see Adam's constants and eps in float32: 1 - beta2 rounded from
float32(0.999) is off by 1.3e-5 relative, and eps moved inside the square root or before the
bias correction changes nothing while sqrt(v_hat) >> eps. Here the inputs are chosen so that
each shows: a gradient of 1 makes m and v the constants themselves, and a gradient equal to
eps makes sqrt(v_hat) = eps, so where eps is added decides the size of the step.
"""

import numpy as np
import pytest

from impls import numpy_ref
from impls.problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS


def _numpy(w, g, lr):
    adam = numpy_ref.Adam([w], lr)
    adam.update([w], [g])
    return w, adam.m[0], adam.v[0]


def _numba(w, g, lr):
    ns = pytest.importorskip("impls.numba_step")
    m, v = np.zeros_like(w), np.zeros_like(w)
    ns.adam_update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), lr, 1)  # flat, as the step's stretches
    return w, m, v


def _torch(counter_on_device):
    def update(w, g, lr):
        pytest.importorskip("torch", reason="torch not installed")
        ts = pytest.importorskip("impls.torch_step")
        w_t, g_t = ts.torch.from_numpy(w), ts.torch.from_numpy(g)  # shared: w is updated in place
        adam = ts._Adam([w_t], lr, counter_on_device)
        adam.update([w_t], [g_t])
        return w, adam.m[0].numpy(), adam.v[0].numpy()

    return update


# torch:cuda:graph keeps the step count and bias corrections in device tensors: that arithmetic runs on the CPU too.
KERNELS = {"numpy": _numpy, "numba": _numba, "torch": _torch(False), "torch-device-counter": _torch(True)}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_moments_of_a_unit_gradient_are_the_constants_formed_in_float64(kernel):
    w, g = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    _, m, v = KERNELS[kernel](w, g, 1e-3)
    assert m.dtype == v.dtype == np.float32
    np.testing.assert_array_equal(m, np.float32(1 - ADAM_BETA1))
    np.testing.assert_array_equal(v, np.float32(1 - ADAM_BETA2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_eps_is_added_to_the_bias_corrected_root(kernel, dtype):
    # At step 1, m_hat = g and sqrt(v_hat) = |g|; with g = eps the update is lr * g / (|g| + eps) = lr / 2.
    # eps inside the root would make it about 3e-6 lr, eps before the bias correction about 0.03 lr.
    lr = 1e-3
    w, g = np.zeros((2, 3), dtype), np.full((2, 3), ADAM_EPS, dtype)
    w, _, _ = KERNELS[kernel](w, g, lr)
    # A dozen roundings in the dtype, each relative; their sum bounds the error.
    np.testing.assert_allclose(w, -lr / 2, rtol=12 * np.finfo(dtype).eps / 2, atol=0)
