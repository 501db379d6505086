"""Which cells the gate compares: the grid's cells under the pytest-benchmark suite's ids, chosen with pytest's -k."""

from __future__ import annotations

import dataclasses

import impls
from bench.gate import Refused
from bench.harness import grid

DEFAULT_SELECT = "(seed or tutorial or medium) and not n0"  # the preset cells; sweep ids start n0


@dataclasses.dataclass
class Cell:
    id: str  # the pytest-benchmark id: numpy-seed-float32-sgd, numpy-n01024-float32
    test: str  # test_step or test_step_batch_sweep
    name: str
    problem: impls.Problem
    call: str = "step"  # what a timed call is: "step", or "loss_and_grads" (asv's time_loss_and_grads)
    status: str = "ok"  # ok | skipped | disagrees | diverged | error
    failed_side: str | None = None  # "base" or "head": the side whose failure set the status
    reason: str = ""
    worst_ratio: dict = dataclasses.field(default_factory=dict)  # per side
    options: dict = dataclasses.field(default_factory=dict)  # per side: impls.create options of the checked step
    head_chose: dict | None = None  # HEAD's own trials' plan, where both sides are timed with BASE's instead
    number: int = 1  # calls per block, the same on both sides
    pairs: list = dataclasses.field(default_factory=list)  # per round: [(base_s, head_s), ...]
    first: list = dataclasses.field(default_factory=list)  # per round: which side's block ran first in each pair
    round_s: list = dataclasses.field(
        default_factory=list
    )  # per round after the first: this cell's share of its wall time
    stopped: str | None = None  # why it got no more rounds: decided | round limit | time budget spent

    def keywords(self) -> list[str]:
        """The names pytest's -k matches for this cell in the pytest-benchmark suite."""
        return ["bench", "pytest_suite", "test_step.py", f"{self.test}[{self.id}]", "parametrize"]

    def fail(self, status: str, side: str, reason: str) -> None:
        """The first failure is kept: it is the one that stopped the cell."""
        if self.status == "ok":
            self.status, self.failed_side, self.reason = status, side, reason

    @property
    def why(self) -> str:
        return f"{self.failed_side}: {self.reason}" if self.failed_side else self.reason


def preset_cell(name: str, preset: str, dtype: str, optimizer: str) -> Cell:
    case = (name, preset, dtype, optimizer)
    return Cell("-".join(case), "test_step", name, grid.preset_problem(preset, dtype, optimizer))


def sweep_cell(name: str, n_id: str, dtype: str) -> Cell:
    return Cell("-".join((name, n_id, dtype)), "test_step_batch_sweep", name, grid.sweep_problem(n_id, dtype))


def all_cells() -> list[Cell]:
    """Every cell of the grid (bench.grid), with the ids of the pytest-benchmark suite."""
    cells = [preset_cell(*case) for case in grid.preset_cases() if grid.size_skip_reason(case[0], case[1]) is None]
    return cells + [sweep_cell(*case) for case in grid.sweep_cases()]


def _keyword_matcher(cell: Cell):
    """pytest's -k rule: a word matches when it is a case-insensitive substring of one of the cell's names."""
    names = [n.lower() for n in cell.keywords()]
    return lambda word, **_: any(word.lower() in n for n in names)


def select(cells: list[Cell], expression: str | None) -> list[Cell]:
    """The cells a pytest -k expression selects; by default the preset cells of the CPU implementations."""
    from _pytest.mark.expression import Expression

    text = DEFAULT_SELECT if expression is None else expression
    try:
        compiled = Expression.compile(text)
    except Exception as error:  # pytest's ParseError
        raise Refused(f"-k {text!r} is not a valid selection: {error}") from None
    chosen = [cell for cell in cells if compiled.evaluate(_keyword_matcher(cell))]
    if expression is None:
        chosen = [c for c in chosen if grid.device(c.name) == "cpu"]
    if not chosen:
        raise Refused(f"-k {text!r} selects no cell of the grid (ids look like numpy-seed-float32-sgd)")
    return chosen
