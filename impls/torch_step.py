"""torch on CPU or CUDA: the step written out by hand, through autograd, or replayed as one CUDA graph.

The registry picks a class and passes `device` ("cpu" or "cuda"):

    TorchStep          forward and backward written out under no_grad, every result in a tensor
                       allocated once, updates in place
    TorchAutogradStep  the notebook's second cell done right: nn.Module of two bias-free nn.Linear
                       with torch.relu, MSELoss(reduction="sum"), loss.backward(), torch.optim
    TorchGraphStep     TorchStep's whole step (forward, backward, update) captured once as a CUDA
                       graph and replayed per step
    TorchCompileStep   the same manual step as one function through torch.compile (inductor),
                       compiled in the constructor

Importing this module does not initialise CUDA; creating a CUDA step does.
"""

from __future__ import annotations

import functools
import math
import types

import numpy as np
import torch
from torch import nn

from . import threads
from .problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from .step import Step, _check_steps, require_device

DEVICES = ("cpu", "cuda")
# Eager steps run on a side stream before capture, so that cuBLAS handles and workspaces
# exist before the graph records (creating them during capture is illegal).
GRAPH_WARMUP_STEPS = 3


def unavailable_reason(device: str = "cpu", compiled: bool = False) -> str | None:
    """Why steps on `device` cannot run here, or None; asks without creating a CUDA context.

    `compiled`: the step goes through torch.compile, whose CPU code is C++ that inductor
    compiles with the first of torch._inductor.config.cpp.cxx it finds on PATH.
    """
    if device == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None and torch.version.hip is None:
            return f"CUDA not available: torch {torch.__version__} is built without CUDA"
        return "CUDA not available: no CUDA device found"
    if compiled and device == "cpu":
        from torch._inductor import config as inductor_config
        from torch._inductor import cpp_builder, exc

        try:
            cpp_builder.get_cpp_compiler()
        except exc.InvalidCxxCompiler:
            wanted = [c for c in inductor_config.cpp.cxx if c is not None]
            return f"torch.compile on the CPU needs a C++ compiler: none of {', '.join(wanted)} found on PATH"
    return None


def _full_precision_float32_matmul() -> bool:
    """Float32 matmuls in IEEE float32: no TF32 in cuBLAS, no bfloat16 in oneDNN; True if TF32 is still on.

    set_float32_matmul_precision("highest") leaves torch's legacy flags and its per-backend
    fp32_precision settings consistent whatever was set before; setting only one of them can
    leave the two disagreeing, which torch (>= 2.9) refuses to read.
    """
    torch.set_float32_matmul_precision("highest")
    return bool(torch.backends.cuda.matmul.allow_tf32)


class _TorchStep(Step):
    """What the torch steps share: device, dtype, thread budget, host copies, device-side losses."""

    def __init__(self, problem, arrays, device: str = "cpu"):
        super().__init__(problem, arrays)
        require_device(device, DEVICES, unavailable_reason)
        threads.apply()  # torch.set_num_threads follows the suite's budget
        self.device = torch.device(device)
        self.dtype = getattr(torch, problem.dtype)
        self.tf32 = _full_precision_float32_matmul()  # recorded with results; process-wide
        self.x, self.y = self._tensor(arrays.x), self._tensor(arrays.y)  # N,D ; N,O

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A private copy of `array` on the step's device."""
        return torch.tensor(array, device=self.device)

    @staticmethod
    def _host(t: torch.Tensor) -> np.ndarray:
        """One copy to a C-contiguous host array, never a view into the step's tensors."""
        return t.detach().to("cpu", copy=True, memory_format=torch.contiguous_format).numpy()

    def run(self, k):
        k = _check_steps(k)
        losses = torch.empty(k, dtype=self.dtype, device=self.device)  # filled on the device, copied once
        for i in range(k):
            losses[i] = self._step()
        return self._host(losses).astype(np.float64)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> dict:
        """What results record about how this step ran."""
        record = {
            "device": str(self.device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "tf32": self.tf32,
        }
        if self.device.type == "cuda":
            record.update(device_name=torch.cuda.get_device_name(self.device), cuda=torch.version.cuda)
        return record


class _Adam:
    """torch.optim.Adam's update in place, with torch's operations (lerp_, addcmul_, addcdiv_).

    The step count lives on the host, or, for a CUDA graph, in a device tensor that the
    graph itself advances: a host count would be baked into the graph at capture. The
    device count and bias corrections are float64 whatever the weights' dtype:
    1 - 0.999**t in float32 is 1.3e-5 off at t = 1 (torch.optim.Adam(capturable=True)
    keeps its count in float32, which is why it is not used here).
    """

    def __init__(self, weights, lr: float, counter_on_device: bool):
        self.lr = lr
        self.m = [torch.zeros_like(w) for w in weights]
        self.v = [torch.zeros_like(w) for w in weights]
        self.denom = [torch.empty_like(w) for w in weights]
        self.counter_on_device = counter_on_device
        if counter_on_device:
            scalar = functools.partial(torch.zeros, (), dtype=torch.float64, device=weights[0].device)
            self.t, self.step_size, self.correction2_sqrt = scalar(), scalar(), scalar()
        else:
            self.t = 0

    def state(self) -> list[torch.Tensor]:
        return [*self.m, *self.v] + ([self.t] if self.counter_on_device else [])

    def _advance(self):
        """Count one more step; return lr / (1 - b1^t) and sqrt(1 - b2^t)."""
        if not self.counter_on_device:
            self.t += 1
            return self.lr / (1 - ADAM_BETA1**self.t), math.sqrt(1 - ADAM_BETA2**self.t)
        self.t.add_(1)  # inside a graph this runs at every replay
        torch.pow(ADAM_BETA1, self.t, out=self.step_size)
        self.step_size.neg_().add_(1).reciprocal_().mul_(self.lr)
        torch.pow(ADAM_BETA2, self.t, out=self.correction2_sqrt)
        self.correction2_sqrt.neg_().add_(1).sqrt_()
        return self.step_size, self.correction2_sqrt

    def update(self, weights, grads):
        step_size, correction2_sqrt = self._advance()
        for w, g, m, v, denom in zip(weights, grads, self.m, self.v, self.denom, strict=True):
            m.lerp_(g, 1 - ADAM_BETA1)  # m = b1 m + (1 - b1) g
            v.mul_(ADAM_BETA2).addcmul_(g, g, value=1 - ADAM_BETA2)  # v = b2 v + (1 - b2) g^2
            torch.sqrt(v, out=denom).div_(correction2_sqrt).add_(ADAM_EPS)
            if self.counter_on_device:
                denom.div_(step_size)  # addcdiv_ takes its factor from the host only
                w.addcdiv_(m, denom, value=-1)
            else:
                w.addcdiv_(m, denom, value=-step_size)


class TorchStep(_TorchStep):
    """The step written out under no_grad: no autograd graph, no allocation after construction."""

    ADAM_COUNTER_ON_DEVICE = False

    def __init__(self, problem, arrays, device: str = "cpu"):
        super().__init__(problem, arrays, device)
        _, d, h, o = problem.shape
        n = self.x.shape[0]  # the batch's rows this step holds: all of them, or a data-parallel rank's share
        empty = functools.partial(torch.empty, dtype=self.dtype, device=self.device)
        self.w1, self.w2 = self._tensor(arrays.w1), self._tensor(arrays.w2)  # D,H ; H,O   updated in place
        self.h = empty(n, h)  # N,H
        self.a = empty(n, h)  # N,H
        self.live = torch.empty(n, h, dtype=torch.bool, device=self.device)  # N,H   h > 0
        self.g = empty(n, o)  # N,O   y_pred - y, then 2 (y_pred - y)
        self.gh = empty(n, h)  # N,H   ga, then masked in place
        # Gradients and loss are views of one buffer, so that a data-parallel rank sums all three
        # with a single all_reduce (impls.torch_ddp).
        self.reduced = empty(d * h + h * o + 1)  # D*H + H*O + 1
        self.gw1 = self.reduced[: d * h].view(d, h)  # D,H
        self.gw2 = self.reduced[d * h : -1].view(h, o)  # H,O
        self.loss = self.reduced[-1]  # ()
        self.adam = None
        if problem.optimizer == "adam":
            self.adam = _Adam((self.w1, self.w2), problem.lr, self.ADAM_COUNTER_ON_DEVICE)

    @torch.no_grad()
    def _forward_backward(self):
        """Loss into self.loss, gradients into self.gw1 and self.gw2, at the current weights."""
        torch.mm(self.x, self.w1, out=self.h)  # N,H
        torch.clamp(self.h, min=0, out=self.a)  # N,H   relu; its gradient is masked by h > 0 below
        torch.mm(self.a, self.w2, out=self.g)  # N,O   y_pred
        self.g.sub_(self.y)  # N,O   y_pred - y
        flat = self.g.view(-1)
        torch.dot(flat, flat, out=self.loss)  # sum((y_pred - y)^2)
        self.g.mul_(2)  # N,O   dloss/dy_pred
        torch.mm(self.a.t(), self.g, out=self.gw2)  # H,O
        torch.mm(self.g, self.w2.t(), out=self.gh)  # N,H   ga, with w2 before its update
        torch.gt(self.h, 0, out=self.live)  # N,H
        self.gh.mul_(self.live)  # N,H   relu'(0) = 0
        torch.mm(self.x.t(), self.gh, out=self.gw1)  # D,H

    @torch.no_grad()
    def _update(self):
        """SGD or Adam on w1 and w2 in place, from self.gw1 and self.gw2."""
        weights, grads = (self.w1, self.w2), (self.gw1, self.gw2)
        if self.adam is not None:
            self.adam.update(weights, grads)
        else:
            for w, g in zip(weights, grads, strict=True):
                w.add_(g, alpha=-self.problem.lr)

    @torch.no_grad()
    def _eager_step(self):
        self._forward_backward()
        self._update()
        return self.loss

    _step = _eager_step

    def loss_and_grads(self):
        self._forward_backward()
        return float(self.loss), self._host(self.gw1), self._host(self.gw2)

    def weights(self):
        return self._host(self.w1), self._host(self.w2)


class TorchGraphStep(TorchStep):
    """TorchStep's forward, backward and update captured once as a CUDA graph, replayed per step."""

    ADAM_COUNTER_ON_DEVICE = True

    def __init__(self, problem, arrays, device: str = "cuda"):
        if device != "cuda":
            raise ValueError(f"device must be cuda for a CUDA graph; got {device!r}")
        super().__init__(problem, arrays, device)
        self.graph = self._capture()

    def _state(self) -> list[torch.Tensor]:
        """Every tensor a step updates."""
        return [self.w1, self.w2] + (self.adam.state() if self.adam is not None else [])

    def _capture(self) -> torch.cuda.CUDAGraph:
        saved = [t.clone() for t in self._state()]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_STEPS):
                self._eager_step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for t, start in zip(self._state(), saved, strict=True):
            t.copy_(start)  # undo the warm-up: the first replay is the first step
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._eager_step()  # recorded, not run: the weights are still the starting ones
        return graph

    def _step(self):
        self.graph.replay()
        return self.loss  # overwritten by the next replay; run() copies it on the device first


def manual_grads(x, y, w1, w2):
    """TorchStep._forward_backward as a function of its inputs, for torch.compile: loss, gw1, gw2."""
    h = torch.mm(x, w1)  # N,H
    a = torch.clamp(h, min=0)  # N,H   relu; its gradient is masked by h > 0 below
    diff = torch.mm(a, w2) - y  # N,O   y_pred - y
    loss = torch.sum(diff * diff)
    g = 2 * diff  # N,O   dloss/dy_pred
    gw2 = torch.mm(a.t(), g)  # H,O
    gh = torch.mm(g, w2.t()) * (h > 0)  # N,H   ga with w2 before its update; relu'(0) = 0
    gw1 = torch.mm(x.t(), gh)  # D,H
    return loss, gw1, gw2


def manual_sgd_step(x, y, w1, w2, *, lr):
    """One SGD step on w1 and w2 in place; the pre-update loss."""
    loss, gw1, gw2 = manual_grads(x, y, w1, w2)
    # Not w.add_(g, alpha=-lr): inductor (torch 2.13, CPU) rewrites add(w, mm(a, b), alpha) into
    # addmm and back into add + mm, losing alpha, so the weights move by g, not lr * g
    # (pytorch/pytorch#167313). The agreement check caught it.
    w1.sub_(lr * gw1)
    w2.sub_(lr * gw2)
    return loss


def manual_adam_step(x, y, w1, w2, m1, m2, v1, v2, t, *, lr):
    """One Adam step in place, _Adam's device-counter arithmetic: t is a float64 tensor the step advances.

    t has shape (1,), not (): torch 2.13's torch.compile silently drops an in-place update of a
    0-dim float64 CPU tensor argument (t.add_(1) neither reaches the caller nor the rest of
    the graph), so the count would stay at 0 and 1 - b1^t would be 0.
    """
    loss, gw1, gw2 = manual_grads(x, y, w1, w2)
    t.add_(1)
    # Bias corrections in float64 (1 - 0.999^t in float32 is 1.3e-5 off at t = 1), then rounded
    # once to the weights' dtype: a (1,)-shaped float64 operand would otherwise promote the update.
    step_size = (lr / (1 - ADAM_BETA1**t)).to(w1.dtype)
    correction2_sqrt = torch.sqrt(1 - ADAM_BETA2**t).to(w1.dtype)
    for w, g, m, v in ((w1, gw1, m1, v1), (w2, gw2, m2, v2)):
        m.lerp_(g, 1 - ADAM_BETA1)
        v.mul_(ADAM_BETA2).addcmul_(g, g, value=1 - ADAM_BETA2)
        denom = (torch.sqrt(v) / correction2_sqrt + ADAM_EPS) / step_size
        w.addcdiv_(m, denom, value=-1)
    return loss


# torch.compile's mode. On a shared 2-core VM, float32 SGD, alternating blocks of the two steps
# in one process (bench.paired's interval): "max-autotune-no-cudagraphs" against "default" read
# 1.007 [0.990, 1.020] at seed and was unsure (intervals over 0.5-2x, the machine loaded) at
# tutorial and medium: no gain seen, so the default. "reduce-overhead" differs only on CUDA
# (CUDA graphs), not measured here: torch:cuda:compile uses the default as well.
COMPILE_MODE = "default"


def _own_code(fn, **keywords):
    """A copy of `fn` with a code object of its own, its keyword-only arguments bound to `keywords`.

    Dynamo keeps compiled graphs per code object, with a limit (recompile_limit, 8) past which
    it stops compiling (an error under fullgraph=True); every step object compiles its own copy,
    so no number of shapes, dtypes or optimizers in one process can reach the limit or make
    one step's graph generic over another's shape. Not functools.partial: dynamo compiles
    partials through one shared wrapper, whose graphs all count against one limit.
    """
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = keywords or None
    return copy


class TorchCompileStep(_TorchStep):
    """The manual step (forward, backward, update) as one torch.compile'd function, compiled in the constructor.

    Static shapes (dynamic=False) and one graph (fullgraph=True, so a graph break is an error,
    not a silent fallback). lr is a constant of the graph; Adam's count is a device tensor the
    graph advances, as in TorchGraphStep. loss_and_grads is a second compiled function.
    """

    def __init__(self, problem, arrays, device: str = "cpu", compiled: bool = True, mode: str | None = None):
        super().__init__(problem, arrays, device)
        reason = unavailable_reason(device, compiled=True)  # `compiled` is the registry's option for it
        if reason is not None:
            raise RuntimeError(reason)
        self.mode = COMPILE_MODE if mode is None else mode
        self.w1, self.w2 = self._tensor(arrays.w1), self._tensor(arrays.w2)  # D,H ; H,O   updated in place
        compile_ = functools.partial(torch.compile, fullgraph=True, dynamic=False, mode=self.mode)
        self.grads_fn = compile_(_own_code(manual_grads))
        lr = problem.lr
        if problem.optimizer == "adam":
            self.state = [torch.zeros_like(w) for w in (self.w1, self.w2, self.w1, self.w2)]  # m1, m2, v1, v2
            self.state.append(torch.zeros(1, dtype=torch.float64, device=self.device))  # t (see manual_adam_step)
            self.step_fn = compile_(_own_code(manual_adam_step, lr=lr))
        else:
            self.state = []
            self.step_fn = compile_(_own_code(manual_sgd_step, lr=lr))
        self._compile()

    def _compile(self):
        """Run both functions once on throwaway copies, so that inductor compiles here, not in a timed call."""
        with torch.no_grad():
            scratch = [t.clone() for t in (self.w1, self.w2, *self.state)]
            self.grads_fn(self.x, self.y, *scratch[:2])
            self.step_fn(self.x, self.y, *scratch)
            self.sync()

    @torch.no_grad()
    def _step(self):
        return self.step_fn(self.x, self.y, self.w1, self.w2, *self.state)

    @torch.no_grad()
    def loss_and_grads(self):
        loss, gw1, gw2 = self.grads_fn(self.x, self.y, self.w1, self.w2)
        return float(loss), self._host(gw1), self._host(gw2)

    def weights(self):
        return self._host(self.w1), self._host(self.w2)

    def describe(self) -> dict:
        return super().describe() | {"compile_mode": self.mode}


class TwoLayerNet(nn.Module):
    """The notebook's TwoLayerNet, with torch.relu where it has clamp(min=0)."""

    # relu'(0) = 0. clamp(min=0) passes gradient at exactly 0 up to torch 2.13.
    activation = staticmethod(torch.relu)

    def __init__(self, d: int, h: int, o: int, **factory):
        super().__init__()
        # nn.Linear stores weight as (out, in): linear1.weight is w1.T, linear2.weight is w2.T.
        self.linear1 = nn.utils.skip_init(nn.Linear, d, h, bias=False, **factory)  # H,D
        self.linear2 = nn.utils.skip_init(nn.Linear, h, o, bias=False, **factory)  # O,H

    def forward(self, x):
        return self.linear2(self.activation(self.linear1(x)))  # N,O


class TorchAutogradStep(_TorchStep):
    """nn.Module, MSELoss(reduction="sum"), loss.backward() and torch.optim.SGD / Adam."""

    network = TwoLayerNet

    def __init__(self, problem, arrays, device: str = "cpu"):
        super().__init__(problem, arrays, device)
        n, d, h, o = problem.shape
        self.model = self.network(d, h, o, device=self.device, dtype=self.dtype)
        with torch.no_grad():
            self.model.linear1.weight.copy_(self._tensor(arrays.w1).t())  # H,D
            self.model.linear2.weight.copy_(self._tensor(arrays.w2).t())  # O,H
        self.loss_fn = nn.MSELoss(reduction="sum")
        optimizer = torch.optim.Adam if problem.optimizer == "adam" else torch.optim.SGD
        self.optimizer = optimizer(self.model.parameters(), lr=problem.lr)

    def _loss_backward(self) -> torch.Tensor:
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()
        return loss.detach()

    def _step(self):
        loss = self._loss_backward()
        self.optimizer.step()
        return loss

    def loss_and_grads(self):
        loss = self._loss_backward()
        gw1 = self._host(self.model.linear1.weight.grad.t())  # D,H
        gw2 = self._host(self.model.linear2.weight.grad.t())  # H,O
        return float(loss), gw1, gw2

    def weights(self):
        return self._host(self.model.linear1.weight.t()), self._host(self.model.linear2.weight.t())
