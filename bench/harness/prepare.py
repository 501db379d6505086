"""The setup of every timed configuration, shared by all harnesses.

In order: skip what cannot run here (with the reason), apply the thread budget, create the
step, check it against the float64 oracle (a disagreeing implementation is reported and not
timed), warm it up (JIT, CUDA init, graph capture happen in create or the first steps) and
make sure the weights are finite. Only then is anything timed.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

import impls
from impls import agreement, threads

from . import grid

WARM_UP_S = 0.1  # at least one step, more until this much time has passed


class Skip(NotImplementedError):
    """This configuration cannot run here; the message says why (asv skips on NotImplementedError)."""


class Disagrees(AssertionError):
    """The implementation failed the agreement check; the message is the checker's report."""


class Diverged(AssertionError):
    """The weights of a timed step stopped being finite: its timings would be of inf/NaN arithmetic."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of an agreement check, small enough to pass between processes."""

    ok: bool
    worst_ratio: float  # worst |got - expected| / bound over all checked values
    report: str
    # impls.create options that make again the step that was checked, where its create chose how
    # to run (numba:blas's plan, by timing trials): the timed step is then the one checked.
    create_options: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, report: agreement.Report) -> Verdict:
        return cls(report.ok, report.worst_ratio, str(report))


@dataclasses.dataclass
class Prepared:
    step: impls.Step
    verdict: Verdict
    create_s: float | None = None  # impls.create: copies, JIT or torch.compile/jax.jit compilation, CUDA init
    check_s: float | None = None  # the agreement check's calls (first-call costs, a few steps), oracle excluded;
    # None when the verdict came from elsewhere or from an earlier check in this process

    @property
    def setup_s(self) -> float | None:
        """What a user pays once per process before the first timed step: create and the first calls."""
        return None if self.create_s is None or self.check_s is None else self.create_s + self.check_s


def skip_reason(name: str, preset: str | None = None) -> str | None:
    """Why `name` cannot be timed here at this preset, or None. Imports only `name`'s backend."""
    reason = grid.size_skip_reason(name, preset)
    if reason is None:
        unavailable = impls.available([name])[name]
        reason = None if unavailable is None else f"{name} unavailable: {unavailable}"
    return reason


def prepare(name: str, problem: impls.Problem, preset: str | None = None, verdict=None, **options) -> Prepared:
    """A checked, warmed-up step ready to time; Skip, Disagrees or Diverged otherwise.

    By default the step itself is checked (agreement.check advances it by a few steps), once
    per implementation, problem and options in this process;
    `verdict(name, problem) -> Verdict` supplies the outcome of a check made elsewhere on the
    same problem and inputs (asv checks each implementation once per problem and run, in a child
    process: bench.harness.verdicts).
    `options` go to impls.create (`ranks=` of a data-parallel entry).
    """
    reason = skip_reason(name, preset)
    if reason is not None:
        raise Skip(reason)
    # A verdict made elsewhere comes first: its check may run in a process forked from this one,
    # which must not have started a backend's thread pools yet, and it may say how to create the
    # step it checked.
    found = None if verdict is None else verdict(name, problem)
    if found is not None and not found.ok:
        raise Disagrees(found.report)
    threads.apply()
    start = time.perf_counter()
    step = impls.create(name, problem, **(({} if found is None else found.create_options) | options))
    create_s = time.perf_counter() - start
    threads.apply()  # again, for a backend whose library was first imported by create
    check_s = None
    if found is None:
        found, check_s = _check_once(step, options)
        if not found.ok:
            raise Disagrees(found.report)
    warm_up(step)
    assert_finite(step)
    return Prepared(step, found, create_s, check_s)


_checked: dict[tuple, Verdict] = {}


def _check_once(step: impls.Step, options: dict | None = None) -> tuple[Verdict, float | None]:
    """Check a fresh step, unless this process has already checked the same implementation with
    the same options on the same problem (its inputs follow from the problem): the code and
    inputs are the same.

    Also the seconds the check took, the oracle's run excluded (it is computed first, untimed,
    and cached for the check): the step's first calls, where lazy initialisation shows.
    """
    key = (step.name, step.problem, tuple(sorted((options or {}).items())))
    if key in _checked:
        return _checked[key], None
    agreement.oracle(step.problem, step.arrays)
    start = time.perf_counter()
    _checked[key] = Verdict.of(agreement.check(step))
    return _checked[key], time.perf_counter() - start


def warm_up(step: impls.Step, seconds: float = WARM_UP_S) -> None:
    start = time.perf_counter()
    while True:
        step.step()
        step.sync()
        if time.perf_counter() - start >= seconds:
            return


def assert_finite(step: impls.Step) -> None:
    w1, w2 = step.weights()
    if not (np.isfinite(w1).all() and np.isfinite(w2).all()):
        raise Diverged(f"{getattr(step, 'name', step)}: weights are no longer finite ({step.problem})")


def synced(step: impls.Step, method: str = "step"):
    """A call of step.<method>() that returns only when the work is done (a device step is queued)."""
    call, sync = getattr(step, method), step.sync

    def timed():
        call()
        sync()

    timed.step = step
    return timed
