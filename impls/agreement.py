"""The agreement checker: an implementation against the float64 oracle, within a derived error bound.

The oracle is the NumPy reference run in float64 on the implementation's own (already
rounded) inputs. Beside every oracle value we carry a bound `err` on how far a correct
implementation in the problem's dtype may land from it. A value passes when
|got - expected| <= err, element by element; the report gives the worst element as a
ratio to its bound.

How `err` is built. Rounding errors are modelled as independent and mean-zero, as in
Higham & Mary, "A new approach to probabilistic rounding error analysis" (SIAM J. Sci.
Comput. 41(5), 2019). Each value carries two parts, err = LAMBDA * sd + lin:

- `sd`, the scale of its independent rounding errors. An inner product of length K in
  unit roundoff u errs by a sum of K bounded mean-zero terms, so by Hoeffding its scale is
  u * sqrt(K) * sum|a_i b_i|: unit roundoff x sqrt(inner dimension) x the same product
  carried out on absolute values (their Thm 3.1). Errors already in the operands add in
  quadrature: sd_C^2 += sd_A^2 @ |B|^2 + |A|^2 @ sd_B^2. Single roundings (a subtraction,
  a square root) add u |value|.
- `lin`, a hard bound, propagated linearly (|A| @ lin_B): for what is not a sum of
  independent roundings. Where |h| lies within its bound of 0 the relu mask is ambiguous
  and gh there counts at the full magnitude of ga; an update's error enters the weights
  here, since the errors of one gradient column are correlated and all of them reach the
  next step's h through the same row of x.
- LAMBDA = 10 applies once, at the end: a sub-Gaussian error exceeds 10 sd with
  probability below 2 exp(-50) ~ 4e-22, so even a 10^8-element output breaks its bound by
  chance with odds below 1e-13. Errors of one row of g are correlated through the shared
  row of a; that raises the variance of ga's error by at most a factor 1 + O/H (2 on the
  presets), which this margin absorbs. Wrong steps change values by many times the bound:
  the tests feed some and check each is rejected.

u is the dtype's unit roundoff plus float64's, since the oracle rounds too. All terms are
of first order in u; magnitudes are |value| + err so the cross terms are covered.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from . import numpy_ref
from .problem import ADAM_BETA1, ADAM_BETA2, ADAM_EPS, Arrays, Problem, make_arrays, validate_arrays
from .step import Step

LAMBDA = 10.0  # how many scales of independent rounding error a correct value may be off
DEFAULT_STEPS = 3
# Learning rates the agreement tests and benchmark setups check with: small enough that no
# preset diverges in a few steps, large enough that a wrong update shows in the weights.
CHECK_LR = {"sgd": 1e-6, "adam": 1e-3}


def check_problem(preset: str, dtype: str, optimizer: str) -> Problem:
    """The problem an implementation is checked on at a size preset ("torch" init, seed 0)."""
    return Problem.preset(preset, dtype=dtype, optimizer=optimizer, lr=CHECK_LR[optimizer], init="torch")


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


@dataclasses.dataclass
class Bounded:
    """An oracle value with the error a correct implementation may carry: LAMBDA * sd + lin."""

    val: np.ndarray
    sd: np.ndarray  # scale of independent rounding errors
    lin: np.ndarray  # hard bound of everything else

    @classmethod
    def exact(cls, val):
        return cls(val, np.zeros_like(val), np.zeros_like(val))

    @property
    def err(self):
        return LAMBDA * self.sd + self.lin

    @property
    def mag(self):
        """Bounds the magnitude of both the oracle's and the implementation's value."""
        return np.abs(self.val) + self.err

    @property
    def T(self):
        return Bounded(self.val.T, self.sd.T, self.lin.T)


def adam_ratio_bound(t: int) -> float:
    """Largest |m_hat / sqrt(v_hat)| Adam can reach at step t, whatever the gradients.

    m_hat = sum w_i g_i and v_hat = sum z_i g_i^2 with weights that sum to 1; by
    Cauchy-Schwarz |m_hat| <= sqrt(sum w_i^2 / z_i) sqrt(v_hat).
    """
    i = np.arange(t)  # age of the gradient
    w = (1 - ADAM_BETA1) * ADAM_BETA1**i / (1 - ADAM_BETA1**t)
    z = (1 - ADAM_BETA2) * ADAM_BETA2**i / (1 - ADAM_BETA2**t)
    return float(np.sqrt(np.sum(w**2 / z)))


class _BoundedStep:
    """The reference step in float64, with its error bounds propagated alongside the values."""

    def __init__(self, problem: Problem, arrays: Arrays):
        self.p = problem
        self.u = unit_roundoff(problem.dtype) + unit_roundoff(np.float64)
        self.x, self.y, w1, w2 = (np.asarray(a, dtype=np.float64) for a in arrays)
        self.w = [Bounded.exact(w1.copy()), Bounded.exact(w2.copy())]
        self.t = 0
        self.m = [Bounded.exact(np.zeros_like(b.val)) for b in self.w]
        self.v = [Bounded.exact(np.zeros_like(b.val)) for b in self.w]

    def matmul(self, a: Bounded, b: Bounded, k: int) -> Bounded:
        a_mag, b_mag = a.mag, b.mag
        var = (self.u * np.sqrt(k) * (a_mag @ b_mag)) ** 2
        lin = np.zeros(())
        if a.sd.any():
            var += a.sd**2 @ b_mag**2
        if b.sd.any():
            var += a_mag**2 @ b.sd**2
        if a.lin.any():
            lin = lin + a.lin @ b_mag
        if b.lin.any():
            lin = lin + a_mag @ b.lin
        val = a.val @ b.val
        return Bounded(val, np.sqrt(var), np.broadcast_to(lin, val.shape))

    def loss_and_grads(self):
        n, d, h_, o = self.p.shape
        u = self.u
        x = Bounded.exact(self.x)
        w1, w2 = self.w
        loss, (h_val, a_val, diff_val) = numpy_ref.forward(self.x, self.y, w1.val, w2.val)
        h = self.matmul(x, w1, d)  # N,H
        maybe_live = h_val > -h.err  # relu is 1-Lipschitz: a carries h's error where h may be positive
        a = Bounded(a_val, np.where(maybe_live, h.sd, 0.0), np.where(maybe_live, h.lin, 0.0))  # N,H
        y_pred = self.matmul(a, w2, h_)  # N,O
        diff_sd = np.hypot(y_pred.sd, u * np.abs(diff_val))
        diff = Bounded(diff_val, diff_sd, y_pred.lin)  # N,O
        loss_sd = np.hypot(u * np.sqrt(n * o) * np.sum(diff.mag**2), np.sqrt(np.sum(4 * diff.mag**2 * diff.sd**2)))
        loss_lin = np.sum(2 * diff.mag * diff.lin)
        g = Bounded(2 * diff.val, 2 * diff.sd, 2 * diff.lin)  # N,O   scaling by 2 is exact
        gw2 = self.matmul(a.T, g, n)  # H,O
        ga = self.matmul(g, w2.T, o)  # N,H
        ambiguous = (np.abs(h_val) <= h.err) & (h.err > 0)
        live = (h_val > 0) & ~ambiguous
        # A flipped mask costs all of ga: a hard bound, where the mask is in doubt.
        gh_lin = np.where(ambiguous, ga.mag, np.where(live, ga.lin, 0.0))
        gh = Bounded(ga.val * (h_val > 0), np.where(live, ga.sd, 0.0), gh_lin)  # N,H
        gw1 = self.matmul(x.T, gh, n)  # D,H
        return Bounded(np.float64(loss), loss_sd, loss_lin), gw1, gw2

    def step(self, grads: tuple[Bounded, Bounded, Bounded] | None = None) -> Bounded:
        """One update; `grads`: loss_and_grads() at the current weights, where the caller has them already."""
        loss, gw1, gw2 = self.loss_and_grads() if grads is None else grads
        if self.p.optimizer == "adam":
            self.t += 1
            self.w = [self._adam(i, w, g) for i, (w, g) in enumerate(zip(self.w, (gw1, gw2), strict=True))]
        else:
            self.w = [self._sgd(w, g) for w, g in zip(self.w, (gw1, gw2), strict=True)]
        return loss

    def _updated(self, w: Bounded, delta: np.ndarray, delta_err: np.ndarray) -> Bounded:
        """w - delta, where delta is computed with error delta_err; the update's error is a hard bound."""
        val = w.val - delta
        rounding = 2 * self.u * (np.abs(w.val) + np.abs(delta))  # forming delta, then subtracting it
        return Bounded(val, np.hypot(w.sd, rounding), w.lin + delta_err)

    def _sgd(self, w: Bounded, g: Bounded) -> Bounded:
        lr = self.p.lr
        return self._updated(w, lr * g.val, lr * g.err)

    def _adam(self, i: int, w: Bounded, g: Bounded) -> Bounded:
        """torch.optim.Adam's update; the rounding terms cover either order of operations."""
        u, b1, b2, eps = self.u, ADAM_BETA1, ADAM_BETA2, ADAM_EPS
        m, v = self.m[i], self.v[i]
        m_val = b1 * m.val + (1 - b1) * g.val
        v_val = b2 * v.val + (1 - b2) * g.val**2
        m_err = b1 * m.err + (1 - b1) * g.err + 3 * u * (m.mag + g.mag)
        v_err = b2 * v.err + (1 - b2) * 2 * g.mag * g.err + 3 * u * (v.mag + g.mag**2)
        self.m[i] = m = Bounded(m_val, np.zeros_like(m_val), m_err)
        self.v[i] = v = Bounded(v_val, np.zeros_like(v_val), v_err)
        step_size = self.p.lr / (1 - b1**self.t)
        correction2_sqrt = np.sqrt(1 - b2**self.t)
        root = np.sqrt(v.val)
        # |sqrt(a) - sqrt(b)| <= min(sqrt|a-b|, |a-b| / sqrt(a)); then the root's own rounding.
        with np.errstate(divide="ignore", invalid="ignore"):
            root_err = np.minimum(np.sqrt(v.err), np.where(root > 0, v.err / root, np.inf))
        root_err += 2 * u * np.sqrt(v.mag)
        den = root / correction2_sqrt + eps
        den_err = root_err / correction2_sqrt + 2 * u * den
        den_min = np.maximum(den - den_err, eps * (1 - u))  # a computed sqrt(v) is never negative
        q = m.val / den
        q_err = (m.err + np.abs(q) * den_err) / den_min + 2 * u * np.abs(q)
        # Near a sign change the linear bound above blows up; no update exceeds Adam's ratio bound.
        # q is m / den, not the bias-corrected m_hat / den: it is smaller by (1 - beta1^t).
        q_max = (1 - b1**self.t) * adam_ratio_bound(self.t) * (1 + 8 * u)
        q_err = np.minimum(q_err, np.abs(q) + q_max)
        return self._updated(w, step_size * q, step_size * q_err)


@dataclasses.dataclass
class Expected:
    """What a correct implementation returns, with per-element error bounds."""

    values: dict[str, np.ndarray]
    bounds: dict[str, np.ndarray]


def oracle(problem: Problem, arrays: Arrays | None = None, steps: int = DEFAULT_STEPS) -> Expected:
    """The float64 oracle's loss_and_grads, k losses and weights after k steps, with their bounds.

    Recent results are cached by problem and input digest: every implementation of one
    configuration is checked against the same oracle run.
    """
    arrays = validate_arrays(problem, make_arrays(problem) if arrays is None else arrays)
    key = (problem, steps, _digest(arrays))
    if key not in _ORACLE_CACHE:
        while len(_ORACLE_CACHE) >= _ORACLE_CACHE_SIZE:
            _ORACLE_CACHE.pop(next(iter(_ORACLE_CACHE)))
        _ORACLE_CACHE[key] = _oracle(problem, arrays, steps)
    return _ORACLE_CACHE[key]


_ORACLE_CACHE: dict[tuple, Expected] = {}
_ORACLE_CACHE_SIZE = 4


def inputs_digest(problem: Problem, arrays: Arrays) -> str:
    """What identifies the inputs of an oracle run (with the problem and the steps): a digest of their bytes."""
    return _digest(validate_arrays(problem, arrays))


def _digest(arrays: Arrays) -> str:
    return hashlib.blake2b(b"".join(a.tobytes() for a in arrays), digest_size=16).hexdigest()


def _oracle(problem: Problem, arrays: Arrays, steps: int) -> Expected:
    run = _BoundedStep(problem, arrays)
    loss, gw1, gw2 = first = run.loss_and_grads()
    # The first update starts from the weights just evaluated: its gradients are these (a quarter of the
    # oracle's products at 3 steps, evaluated twice before).
    losses = [run.step(first if i == 0 else None) for i in range(steps)]
    w1, w2 = run.w
    named = {
        "loss": loss,
        "gw1": gw1,
        "gw2": gw2,
        "losses": Bounded(
            np.array([b.val for b in losses]), np.array([b.sd for b in losses]), np.array([b.lin for b in losses])
        ),
        "w1": w1,
        "w2": w2,
    }
    return Expected({k: np.asarray(b.val) for k, b in named.items()}, {k: np.asarray(b.err) for k, b in named.items()})


@dataclasses.dataclass
class Comparison:
    quantity: str
    ratio: float  # worst |got - expected| / bound; inf for a wrong shape, dtype or non-finite value
    index: tuple = ()
    got: float = float("nan")
    expected: float = float("nan")
    bound: float = float("nan")
    problem: str = ""  # set when the value could not be compared at all

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0

    def __str__(self):
        status = "ok  " if self.ok else "FAIL"
        if self.problem:
            return f"{status} {self.quantity:<7} {self.problem}"
        return (
            f"{status} {self.quantity:<7} worst error/bound {self.ratio:9.3g} at {self.index}: "
            f"got {self.got:.17g}, expected {self.expected:.17g}, bound {self.bound:.3g}"
        )


def compare(quantity: str, got, expected: np.ndarray, bound: np.ndarray, dtype=None) -> Comparison:
    """Element-wise |got - expected| <= bound; where the bound is 0 only an exact match passes."""
    got_arr = np.asarray(got)
    if got_arr.shape != expected.shape:
        return Comparison(quantity, np.inf, problem=f"shape {got_arr.shape}, expected {expected.shape}")
    if dtype is not None and got_arr.dtype != np.dtype(dtype):
        return Comparison(quantity, np.inf, problem=f"dtype {got_arr.dtype}, expected {np.dtype(dtype)}")
    error = np.abs(got_arr.astype(np.float64) - expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(error == 0, 0.0, error / bound)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)  # a NaN never agrees
    if ratio.size == 0:
        return Comparison(quantity, 0.0)
    index = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return Comparison(
        quantity,
        float(ratio[index]),
        tuple(int(i) for i in index),
        float(got_arr[index]),
        float(expected[index]),
        float(bound[index]),
    )


@dataclasses.dataclass
class Report:
    name: str
    problem: Problem
    steps: int
    comparisons: list[Comparison]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    @property
    def worst(self) -> Comparison:
        return max(self.comparisons, key=lambda c: c.ratio)

    @property
    def worst_ratio(self) -> float:
        return self.worst.ratio

    def __str__(self):
        verdict = "agrees with" if self.ok else "DISAGREES with"
        head = f"{self.name} {verdict} the float64 oracle ({self.problem}, {self.steps} steps)"
        return "\n".join([head, *(f"  {c}" for c in self.comparisons)])


class AgreementError(AssertionError):
    def __init__(self, report: Report):
        super().__init__(str(report))
        self.report = report


def check(
    step: Step, steps: int = DEFAULT_STEPS, arrays: Arrays | None = None, expected: Expected | None = None
) -> Report:
    """Compare a freshly created step with the oracle: loss_and_grads, then run(steps) and weights.

    The step is advanced by `steps` updates. `arrays` are the inputs it was created from
    (default: the step's own validated inputs). `expected` is the oracle's output for those
    inputs and `steps`, where another process has computed it already (default: computed here).
    """
    p = step.problem
    if expected is None:
        expected = oracle(p, step.arrays if arrays is None else arrays, steps)
    ev, eb = expected.values, expected.bounds
    loss, gw1, gw2 = step.loss_and_grads()
    comparisons = [
        compare("loss", float(loss), ev["loss"], eb["loss"]),
        compare("gw1", gw1, ev["gw1"], eb["gw1"], p.dtype),
        compare("gw2", gw2, ev["gw2"], eb["gw2"], p.dtype),
    ]
    losses = step.run(steps)
    w1, w2 = step.weights()
    comparisons += [
        compare("losses", losses, ev["losses"], eb["losses"]),
        compare("w1", w1, ev["w1"], eb["w1"], p.dtype),
        compare("w2", w2, ev["w2"], eb["w2"], p.dtype),
    ]
    return Report(getattr(step, "name", type(step).__name__), p, steps, comparisons)


def assert_agrees(step: Step, steps: int = DEFAULT_STEPS, arrays: Arrays | None = None) -> Report:
    """check(), raising AgreementError (an AssertionError) with the full report if any value disagrees."""
    report = check(step, steps, arrays)
    if not report.ok:
        raise AgreementError(report)
    return report
