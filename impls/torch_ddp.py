"""The step data-parallel over torch.distributed: W ranks, each with the full weights and a share of the rows.

Every rank computes the loss and gradients of its rows (a torch_step.TorchStep on those rows),
the ranks sum loss and gradients with one all_reduce, and each applies the same SGD or Adam
update. The loss is a sum over rows, so the sums are the full batch's: the result is the
one-process step up to the order of the additions, and the agreement check applies unchanged.

    torch:cpu:ddp   gloo, W = the thread budget, one thread per rank
    torch:cuda:ddp  NCCL for the gradients, one rank per visible GPU; needs at least two

Rank 0 is the Step object, in the calling process; the other ranks, how they start, follow it
in lockstep, fail and end are impls.torch_ddp_ranks.
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np
import torch
import torch.distributed as dist

from . import threads
from .step import Step, _check_steps
from .torch_ddp_ranks import (
    GRADS,
    SHUTDOWN,
    STEP,
    WEIGHTS,
    ExternalRanks,
    RanksFailed,
    World,
    env_timeout_s,
    ranks_for,
    release,
    send_problem,
    serve,
    shared_ranks,
)
from .torch_step import TorchStep, _full_precision_float32_matmul
from .torch_step import unavailable_reason as _device_reason

# The step, and the names of its ranks that its callers use: shared_ranks() to share workers
# across steps, RanksFailed to catch, and what bench.ddp runs the ranks with under torchrun.
__all__ = [
    "SHUTDOWN",
    "RanksFailed",
    "TorchDDPStep",
    "World",
    "default_ranks",
    "env_timeout_s",
    "serve",
    "shared_ranks",
    "unavailable_reason",
]


def unavailable_reason(device: str = "cpu") -> str | None:
    """Why the data-parallel step cannot run on `device` here, or None; creates no CUDA context."""
    if not dist.is_available():
        return f"torch {torch.__version__} is built without torch.distributed"
    reason = _device_reason(device)
    if reason is not None:
        return reason
    if device == "cpu":
        return None if dist.is_gloo_available() else f"torch {torch.__version__} is built without gloo"
    if not dist.is_nccl_available():
        return f"torch {torch.__version__} is built without NCCL"
    count = torch.cuda.device_count()
    if count < 2:
        return f"needs at least 2 CUDA devices (one rank per GPU), found {count}"
    return None


def default_ranks(device: str) -> int:
    """W: the thread budget on the CPU (one thread per rank), the visible GPUs on CUDA."""
    return threads.budget() if device == "cpu" else torch.cuda.device_count()


@contextlib.contextmanager
def _one_thread():
    """torch in this process with one thread while rank 0 computes; the caller's setting after."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


class TorchDDPStep(Step):
    """Rank 0 of W data-parallel ranks; the workers follow every call."""

    def __init__(
        self,
        problem,
        arrays,
        device: str = "cpu",
        ranks: int | None = None,
        timeout_s: float | None = None,
        own_ranks: bool = False,
        world: World | None = None,
    ):
        super().__init__(problem, arrays)
        reason = unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(reason)
        size = default_ranks(device) if ranks is None else ranks
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"ranks must be a positive integer, got {size!r}")
        if device == "cuda" and size > torch.cuda.device_count():
            raise ValueError(f"ranks must be at most the {torch.cuda.device_count()} visible GPUs, got {size}")
        seconds = env_timeout_s() if timeout_s is None else float(timeout_s)
        self.device = device
        self.tf32 = _full_precision_float32_matmul()
        if world is not None:  # torchrun's ranks (bench.ddp): they outlive the step, the caller ends them
            self.ranks = ExternalRanks(world)
            owned = False
        else:
            self.ranks, owned = ranks_for(device, size, seconds, own_ranks)
        self.step_id = self.ranks.new_id()
        with _one_thread(), self.ranks.exchange() as w:
            self.replica = send_problem(w, self.step_id, problem, arrays)
        self._finalizer = weakref.finalize(self, release, self.ranks, owned, self.step_id)

    @property
    def world_size(self) -> int:
        return self.ranks.size

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.ranks.workers]

    def close(self) -> None:
        """End the workers now (or, when shared, drop this step's state there)."""
        self._finalizer()

    def _step(self):
        with _one_thread(), self.ranks.exchange() as w:
            w.message(STEP, self.step_id, 1)
            return self.replica.step()

    def run(self, k):
        k = _check_steps(k)
        losses = torch.empty(k, dtype=self.replica.local.dtype, device=self.replica.local.device)  # k
        with _one_thread(), self.ranks.exchange() as w:
            w.message(STEP, self.step_id, k)
            for i in range(k):
                losses[i] = self.replica.step()
        return TorchStep._host(losses).astype(np.float64)

    def loss_and_grads(self):
        with _one_thread(), self.ranks.exchange() as w:
            w.message(GRADS, self.step_id)
            self.replica.forward_backward_reduce()
        local = self.replica.local
        return float(local.loss), local._host(local.gw1), local._host(local.gw2)

    def weights(self):
        with _one_thread(), self.ranks.exchange() as w:
            w.message(WEIGHTS, self.step_id)
            self.replica.weights_match()
        local = self.replica.local
        return local._host(local.w1), local._host(local.w2)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize(self.replica.local.device)

    def describe(self) -> dict:
        record = self.replica.local.describe()
        if self.device == "cpu":  # the calling process's setting outside the step's calls is not the step's
            record["threads"] = 1
        record.update(ranks=self.world_size, threads_per_rank=1 if self.device == "cpu" else None, tf32=self.tf32)
        return record
