"""The reference step in plain NumPy: run in float64 it is the oracle every backend is checked against.

Written to be read, not to be fast. Gradients are taken at the pre-update weights (w2 is
used in `ga` before it is updated) and relu'(0) = 0, as in torch.relu.
"""

from __future__ import annotations

import numpy as np

from . import threads
from .problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS
from .step import Step


def forward(x, y, w1, w2):
    """Loss and what the backward pass needs."""
    h = x @ w1  # N,H
    a = np.maximum(h, 0)  # N,H
    y_pred = a @ w2  # N,O
    diff = y_pred - y  # N,O
    loss = np.sum(diff * diff)  # scalar, MSE with reduction='sum'
    return loss, (h, a, diff)


def backward(x, w2, cache):
    """Gradients of the loss with respect to w1 and w2, both at the weights forward() saw."""
    h, a, diff = cache
    g = 2 * diff  # N,O   dloss/dy_pred
    gw2 = a.T @ g  # H,O
    ga = g @ w2.T  # N,H   with w2 before its update
    gh = ga * (h > 0)  # N,H   relu'(0) = 0
    gw1 = x.T @ gh  # D,H
    return gw1, gw2


def sgd_update(w, g, lr):
    w -= lr * g


class Adam:
    """torch.optim.Adam (no weight decay, no amsgrad): bias-corrected moments, step count from 1."""

    def __init__(self, weights, lr):
        self.lr = lr
        self.t = 0
        self.m = [np.zeros_like(w) for w in weights]
        self.v = [np.zeros_like(w) for w in weights]

    def update(self, weights, grads):
        self.t += 1
        for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
            self.update_one(i, w, g)

    def update_one(self, i, w, g):
        """Update parameter i (0: w1, 1: w2) at the current step count."""
        m, v = self.m[i], self.v[i]
        m *= ADAM_BETA1
        m += (1 - ADAM_BETA1) * g
        v *= ADAM_BETA2
        v += (1 - ADAM_BETA2) * g * g
        step_size = self.lr / (1 - ADAM_BETA1**self.t)
        denom = np.sqrt(v) / np.sqrt(1 - ADAM_BETA2**self.t) + ADAM_EPS  # torch's order of operations
        w -= step_size * m / denom


class NumpyStep(Step):
    """The step as written in the equations, in the problem's dtype."""

    # Class attributes so that the negative controls (impls.negative_controls) can swap one piece.
    forward = staticmethod(forward)
    backward = staticmethod(backward)

    def __init__(self, problem, arrays):
        super().__init__(problem, arrays)
        threads.apply()  # BLAS runs under the suite's thread budget
        self.x, self.y = arrays.x, arrays.y
        self.w1, self.w2 = arrays.w1.copy(), arrays.w2.copy()  # updated in place
        self.adam = Adam((self.w1, self.w2), problem.lr) if problem.optimizer == "adam" else None

    def loss_and_grads(self):
        loss, cache = self.forward(self.x, self.y, self.w1, self.w2)
        gw1, gw2 = self.backward(self.x, self.w2, cache)
        return float(loss), gw1, gw2

    def _step(self):
        loss, gw1, gw2 = self.loss_and_grads()
        self._update((self.w1, self.w2), (gw1, gw2))
        return loss

    def _update(self, weights, grads):
        if self.adam is not None:
            self.adam.update(weights, grads)
        else:
            for w, g in zip(weights, grads, strict=True):
                sgd_update(w, g, self.problem.lr)

    def weights(self):
        return self.w1.copy(), self.w2.copy()
