"""torch specifics the shared tests do not reach: clamp vs relu, the graph's Adam, host copies, threads, CUDA."""

import subprocess
import sys

import numpy as np
import pytest

import impls
from impls import agreement, threads
from impls.problem import validate_arrays

from .conftest import AVAILABLE, require

torch = pytest.importorskip("torch", reason="torch not installed")
torch_step = pytest.importorskip("impls.torch_step")

TORCH_NAMES = [name for name in impls.names() if name.startswith("torch:")]
CUDA_NAMES = [name for name in TORCH_NAMES if name.startswith("torch:cuda")]


class ClampNet(torch_step.TwoLayerNet):
    """The notebook's activation: clamp(min=0)."""

    activation = staticmethod(lambda h: h.clamp(min=0))


class ClampAutogradStep(torch_step.TorchAutogradStep):
    network = ClampNet


class DeviceCounterStep(torch_step.TorchStep):
    """TorchStep with the CUDA graph's Adam: step count and bias corrections in device tensors."""

    ADAM_COUNTER_ON_DEVICE = True


def _zero_column_problem(dtype="float64"):
    p = impls.Problem(n=7, d=13, h=5, o=3, dtype=dtype, init="randn")
    x, y, w1, w2 = (a.copy() for a in impls.make_arrays(p))
    w1[:, 2] = 0  # h[:, 2] is exactly 0
    return p, validate_arrays(p, impls.Arrays(x, y, w1, w2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clamp_in_place_of_relu_is_caught(dtype):
    h = torch.zeros(1, requires_grad=True)
    h.clamp(min=0).sum().backward()
    if h.grad.item() == 0:
        pytest.skip(f"torch {torch.__version__}: clamp(min=0) has gradient 0 at 0, like relu; nothing to catch")
    p, arrays = _zero_column_problem(dtype)
    _, gw1, _ = ClampAutogradStep(p, arrays).loss_and_grads()
    assert np.any(gw1[:, 2] != 0), "clamp passed no gradient at h == 0; the relu-at-zero test would not see it"
    assert not agreement.check(ClampAutogradStep(p, arrays)).ok
    assert agreement.check(torch_step.TorchAutogradStep(p, arrays)).ok  # same inputs, torch.relu: agrees


@pytest.mark.parametrize("preset", ["seed", "tutorial"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_device_counter_adam_agrees(preset, dtype):
    # The CUDA graph's Adam arithmetic, checked on the CPU where no graph can run.
    p = agreement.check_problem(preset, dtype, "adam")
    step = DeviceCounterStep(p, validate_arrays(p, impls.make_arrays(p)))
    agreement.assert_agrees(step, steps=5)
    assert step.adam.t.item() == 5  # loss_and_grads does not count a step


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_host_arrays_are_copies(name):
    require(name)
    p = impls.Problem.preset("seed", lr=1e-3)
    step = impls.create(name, p)
    loss, gw1, gw2 = step.loss_and_grads()
    w1, w2 = step.weights()
    kept = [a.copy() for a in (gw1, gw2, w1, w2)]
    step.run(2)
    for got, was in zip((gw1, gw2, w1, w2), kept, strict=True):
        np.testing.assert_array_equal(got, was)  # nothing returned earlier moved with the step
    w1[...] = 0
    assert not np.array_equal(step.weights()[0], w1) and not np.array_equal(step.weights()[0], kept[2])
    assert all(a.flags.c_contiguous for a in (*step.loss_and_grads()[1:], *step.weights()))


@pytest.mark.parametrize("name", ["torch:cpu", "torch:cpu:autograd"])
def test_torch_threads_follow_the_budget(name, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setenv(threads.ENV, "1")
    impls.create(name, impls.Problem.preset("seed"))
    assert torch.get_num_threads() == 1
    monkeypatch.delenv(threads.ENV)
    threads.apply()


def test_bad_device_names_field_and_value():
    p = impls.Problem.preset("seed")
    arrays = validate_arrays(p, impls.make_arrays(p))
    with pytest.raises(ValueError, match="^device must be one of cpu, cuda; got 'tpu'"):
        torch_step.TorchStep(p, arrays, device="tpu")
    with pytest.raises(ValueError, match="^device must be cuda for a CUDA graph; got 'cpu'"):
        torch_step.TorchGraphStep(p, arrays, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("name", CUDA_NAMES)
def test_cuda_entries_say_why_they_cannot_run(name):
    assert AVAILABLE[name].startswith("CUDA not available")
    with pytest.raises(RuntimeError, match=f"^{name} cannot run here: CUDA not available"):
        impls.create(name, impls.Problem.preset("seed"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to be initialised")
def test_available_does_not_initialise_cuda():
    code = "import impls, torch; impls.available(); print(torch.cuda.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_float32_matmuls_are_full_precision(name):
    require(name)
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # as a user's earlier code might have left it
        torch.backends.mkldnn.matmul.fp32_precision = "bf16"
        step = impls.create(name, impls.Problem.preset("seed", dtype="float32"))
        assert step.describe()["tf32"] is False and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
    finally:
        torch.set_float32_matmul_precision("highest")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_graph_replays_count_adam_steps(dtype):
    require("torch:cuda:graph")
    step = impls.create("torch:cuda:graph", agreement.check_problem("tutorial", dtype, "adam"))
    agreement.assert_agrees(step, steps=5)  # a count frozen at capture would miss the bias corrections
    assert step.adam.t.item() == 5


@pytest.mark.parametrize("name", CUDA_NAMES)
def test_sync_waits_for_queued_device_work(name):
    require(name)
    step = impls.create(name, impls.Problem.preset("seed"))
    torch.cuda._sleep(200_000_000)  # a kernel that spins for some 0.1 s: still queued when sync is called
    step.step()
    step.sync()
    assert torch.cuda.current_stream().query(), "sync returned with device work still queued"
