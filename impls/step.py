"""The contract every implementation of the training step fulfils."""

from __future__ import annotations

import abc

import numpy as np

from .problem import Arrays, Problem


class Step(abc.ABC):
    """One network's weights and optimizer state on one backend.

    Subclasses implement `loss_and_grads`, `_step` and `weights`; a device backend also
    overrides `sync` and, to avoid a host round trip per step, `run`.
    """

    def __init__(self, problem: Problem, arrays: Arrays):
        self.problem = problem
        self.arrays = arrays  # validated read-only inputs; never updated

    @abc.abstractmethod
    def loss_and_grads(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss and the gradients (gw1 D,H; gw2 H,O) at the current weights, without updating."""

    @abc.abstractmethod
    def _step(self):
        """One update in place; returns the pre-update loss (anything float() accepts)."""

    @abc.abstractmethod
    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Host copies of w1 (D,H) and w2 (H,O)."""

    def step(self) -> None:
        """One update in place; may be asynchronous on a device."""
        self._step()

    def run(self, k: int) -> np.ndarray:
        """k updates; the k pre-update losses as a float64 array."""
        k = _check_steps(k)
        losses = np.empty(k, dtype=np.float64)
        for i in range(k):
            losses[i] = float(self._step())
        return losses

    def sync(self) -> None:
        """Wait for queued device work; host backends have none."""

    def describe(self) -> dict:
        """What results record about how this step runs (device, threads, choices made at create)."""
        return {}


def require_device(device: str, devices, unavailable_reason) -> None:
    """ValueError for a device the backend does not know, RuntimeError with the reason for one it
    cannot use here: what a device backend checks before it allocates anything."""
    if device not in devices:
        raise ValueError(f"device must be one of {', '.join(devices)}; got {device!r}")
    reason = unavailable_reason(device)
    if reason is not None:
        raise RuntimeError(reason)


def _check_steps(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    return int(k)
