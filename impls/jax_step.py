"""JAX on CPU or CUDA: the whole step (forward, jax.grad of the loss, SGD or Adam update) as one jax.jit function.

The registry passes `device` ("cpu" or "cuda"). The step function is compiled ahead of
time in the constructor (`jit(...).lower(...).compile()`), so no call is ever traced or
compiled while timed, and the weights and Adam state are donated to it: XLA updates them
in the buffers they arrived in instead of allocating new ones per step.

relu'(0): jax.nn.relu is a custom_jvp whose derivative at exactly 0 is 0 (its docstring:
"we take grad relu(0) = 0"), the suite's convention; a plain jnp.maximum(h, 0) would split
the gradient at the tie (0.5). tests/test_relu_at_zero.py checks it for every entry.

float64: JAX computes in float32 unless `jax_enable_x64` is on. Turning it on for the
process would change what every other user of jax in it gets (jnp.arange, literals and
NumPy float64 inputs would stay float64). A float64 step instead enters the scoped
`jax.enable_x64(True)` context around each of its calls, and a float32 step the
`jax.enable_x64(False)` one, so neither depends on nor changes the process's setting.

Threads: XLA's CPU client sizes its pools when its backend starts, from XLA_FLAGS. Where the
suite's budget is below this process's CPUs, XLA_FLAGS is unset and no backend has started
yet, the flags that limit it are set here; `describe()` records what applies.

Importing this module imports jax but does not start a backend; creating a step does.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

from . import threads
from .problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from .step import Step, _check_steps, require_device

DEVICES = ("cpu", "cuda")


def _limit_xla_threads() -> str | None:
    """XLA_FLAGS for the thread budget, set only before a backend starts and when the user set none."""
    budget = threads.budget()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if "XLA_FLAGS" not in os.environ and budget < cpus and not xla_bridge.backends_are_initialized():
        multi = "true" if budget > 1 else "false"
        os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={budget}"
    return os.environ.get("XLA_FLAGS")


XLA_FLAGS = _limit_xla_threads()


def unavailable_reason(device: str = "cpu") -> str | None:
    """Why steps on `device` cannot run here, or None."""
    if device == "cuda":
        try:
            jax.devices("cuda")
        except RuntimeError:  # jaxlib without the CUDA plugin, or no device
            return f"CUDA not available to jax {jax.__version__}: no CUDA backend or device"
    return None


def loss_fn(w1, w2, x, y):
    """sum((relu(x @ w1) @ w2 - y)^2): jax.grad of this is the backward pass."""
    h = x @ w1  # N,H
    a = jax.nn.relu(h)  # N,H   relu'(0) = 0 under differentiation
    diff = a @ w2 - y  # N,O
    return jnp.sum(diff * diff)


_loss_and_grads = jax.value_and_grad(loss_fn, argnums=(0, 1))


def _sgd_step(w1, w2, x, y, lr):
    """The loss at the current weights and the weights after w -= lr * g."""
    loss, (gw1, gw2) = _loss_and_grads(w1, w2, x, y)
    return loss, w1 - lr * gw1, w2 - lr * gw2


def _adam_step(w1, w2, m1, m2, v1, v2, x, y, step_size, correction2_sqrt):
    """torch.optim.Adam's update, with lr / (1 - b1^t) and sqrt(1 - b2^t) from the host.

    The bias corrections come in as arguments, computed in float64 on the host and rounded
    once to the dtype: a float32 count on the device would make 1 - 0.999^t 1.3e-5 off at t = 1.
    """
    loss, grads = _loss_and_grads(w1, w2, x, y)
    out = []
    for w, g, m, v in zip((w1, w2), grads, (m1, m2), (v1, v2), strict=True):
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
        denom = jnp.sqrt(v) / correction2_sqrt + ADAM_EPS  # torch's order of operations
        out.append((w - step_size * m / denom, m, v))
    (w1, m1, v1), (w2, m2, v2) = out
    return loss, w1, w2, m1, m2, v1, v2


class JaxStep(Step):
    """Weights (and Adam state) as device arrays, advanced by one AOT-compiled, donating step function."""

    def __init__(self, problem, arrays, device: str = "cpu"):
        super().__init__(problem, arrays)
        require_device(device, DEVICES, unavailable_reason)
        threads.apply()  # BLAS pools of the process; XLA's own are sized by XLA_FLAGS (see above)
        self.device = jax.devices(device)[0]
        # A fresh context per use: jax.enable_x64(flag) is a one-shot context manager.
        self.x64 = functools.partial(jax.enable_x64, problem.dtype == "float64")
        self.scalar = np.dtype(problem.dtype).type  # the dtype of the per-step Adam scalars
        with self.x64():
            put = functools.partial(jax.device_put, device=self.device)
            self.x, self.y = put(arrays.x), put(arrays.y)  # N,D ; N,O
            # device_put of a NumPy array may alias its memory on the CPU; the donated buffers must be jax's own.
            self.w1, self.w2 = put(arrays.w1.copy()), put(arrays.w2.copy())  # D,H ; H,O
            self.grads_fn = jax.jit(_loss_and_grads).lower(self.w1, self.w2, self.x, self.y).compile()
            if problem.optimizer == "adam":
                zeros = functools.partial(jnp.zeros, dtype=problem.dtype, device=self.device)
                self.state = [zeros(self.w1.shape), zeros(self.w2.shape), zeros(self.w1.shape), zeros(self.w2.shape)]
                self.t = 0  # Adam's step count, on the host
                fn, donated = _adam_step, tuple(range(6))  # w1, w2, m1, m2, v1, v2
                args = (self.w1, self.w2, *self.state, self.x, self.y, *self._adam_scalars(1))
            else:
                fn, donated = _sgd_step, (0, 1)
                self.lr = self.scalar(problem.lr)
                args = (self.w1, self.w2, self.x, self.y, self.lr)
            self.step_fn = jax.jit(fn, donate_argnums=donated).lower(*args).compile()

    def _adam_scalars(self, t: int):
        """lr / (1 - b1^t) and sqrt(1 - b2^t), in float64, then rounded once to the dtype."""
        lr = self.problem.lr
        return self.scalar(lr / (1 - ADAM_BETA1**t)), self.scalar(np.sqrt(1 - ADAM_BETA2**t))

    def loss_and_grads(self):
        with self.x64():
            loss, (gw1, gw2) = self.grads_fn(self.w1, self.w2, self.x, self.y)
            return float(loss), np.array(gw1), np.array(gw2)

    def _step(self):
        with self.x64():
            if self.problem.optimizer == "adam":
                self.t += 1
                loss, self.w1, self.w2, *self.state = self.step_fn(
                    self.w1, self.w2, *self.state, self.x, self.y, *self._adam_scalars(self.t)
                )
            else:
                loss, self.w1, self.w2 = self.step_fn(self.w1, self.w2, self.x, self.y, self.lr)
        return loss

    def run(self, k):
        k = _check_steps(k)
        losses = [self._step() for _ in range(k)]  # device scalars: one host copy at the end, not one per step
        with self.x64():
            return np.array([np.asarray(loss) for loss in losses], dtype=np.float64)

    def weights(self):
        with self.x64():
            return np.array(self.w1), np.array(self.w2)

    def sync(self):
        self.w1.block_until_ready()
        self.w2.block_until_ready()

    def describe(self) -> dict:
        """What results record about how this step ran."""
        return {
            "device": str(self.device),
            "jax": jax.__version__,
            "xla_flags": XLA_FLAGS,
            "x64": self.problem.dtype == "float64",
        }
