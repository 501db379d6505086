"""Deliberately wrong steps, never registered: the agreement checker must reject every one.

Each changes one thing a real implementation could get wrong; `NotebookStep` is the
notebook's own step, with both of its differences, kept as a labelled negative control.
"""

from __future__ import annotations

import numpy as np

from . import numpy_ref
from .numpy_ref import NumpyStep


def _backward_relu_grad_one_at_zero(x, w2, cache):
    """relu'(0) = 1: gh is zeroed only where h < 0, as in the notebook and torch clamp(min=0) <= 2.13."""
    h, a, diff = cache
    g = 2 * diff  # N,O
    gw2 = a.T @ g  # H,O
    gh = g @ w2.T  # N,H
    gh[h < 0] = 0
    gw1 = x.T @ gh  # D,H
    return gw1, gw2


class ReluGradOneAtZero(NumpyStep):
    """Passes gradient where h == 0 exactly."""

    backward = staticmethod(_backward_relu_grad_one_at_zero)


class W2NotTransposed(NumpyStep):
    """ga = g @ w2 instead of g @ w2.T; shape-valid only where H == O (as at the seed size)."""

    @staticmethod
    def backward(x, w2, cache):
        return numpy_ref.backward(x, w2.T, cache)


class Gw1Transposed(NumpyStep):
    """Returns gw1 transposed (x.T @ gh).T, i.e. gh.T @ x; shape-valid only where D == H."""

    @staticmethod
    def backward(x, w2, cache):
        gw1, gw2 = numpy_ref.backward(x, w2, cache)
        return gw1.T, gw2


class Float32Accumulation(NumpyStep):
    """Computes in float32 and returns float64: single precision passed off as double."""

    @staticmethod
    def forward(x, y, w1, w2):
        loss, cache = numpy_ref.forward(*(a.astype(np.float32) for a in (x, y, w1, w2)))
        return np.float64(loss), cache

    @staticmethod
    def backward(x, w2, cache):
        gw1, gw2 = numpy_ref.backward(x.astype(np.float32), w2.astype(np.float32), cache)
        return gw1.astype(np.float64), gw2.astype(np.float64)


class NotebookOrder(NumpyStep):
    """Updates w2 before propagating the gradient through it, as the notebook's back_propagation does."""

    def _step(self):
        loss, (h, a, diff) = self.forward(self.x, self.y, self.w1, self.w2)
        g = 2 * diff  # N,O
        gw2 = a.T @ g  # H,O
        self._update_one(1, self.w2, gw2)
        cache = (h, a, diff)
        gw1, _ = self.backward(self.x, self.w2, cache)  # uses the already-updated w2
        self._update_one(0, self.w1, gw1)
        return loss

    def _update_one(self, i, w, g):
        if self.adam is None:
            numpy_ref.sgd_update(w, g, self.problem.lr)
            return
        if i == 1:  # the first update of the step advances Adam's step count
            self.adam.t += 1
        self.adam.update_one(i, w, g)


class NotebookStep(NotebookOrder):
    """The notebook's step as written: w2 updated before `ga`, and relu'(0) = 1."""

    backward = staticmethod(_backward_relu_grad_one_at_zero)


VARIANTS = {
    "notebook-order": NotebookOrder,
    "relu-grad-one-at-zero": ReluGradOneAtZero,
    "w2-not-transposed": W2NotTransposed,
    "gw1-transposed": Gw1Transposed,
    "float32-accumulation": Float32Accumulation,
    "notebook": NotebookStep,
}
