"""Triage of alerts: each re-measured with paired verdicts, each confirmed one bisected, three-way.

What measures is passed in (`Measure`: BASE and HEAD commits and cells -> a verdict per cell),
so that the decisions here are tested with scripted verdicts and run with the gate
(bench.triage.remeasure).

1. Confirmation: every alert's cell is measured with the commit before the step as BASE and
   the one after as HEAD. Slower -> confirmed; same or faster -> refuted; unsure -> undecided
   (the gate has already given it more rounds); a cell the gate cannot run here -> not
   re-measured, with the reason.
2. Bisection of each confirmed alert over the commits between (first-parent line, as asv
   numbers its revisions): the midpoint against the commit before the step. Slower -> the
   step is at or before it; same (or faster) -> after it; undecided -> the bisection stops
   and reports the range it has narrowed to, never a guess. The first slower commit is named
   once the range is one commit.

Alerts whose cells meet at the same pair of commits share one gate run: a history's alerts
mostly fall between the same two measured commits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bench.gate.cells import Cell
from bench.triage.alerts import Alert

CONFIRMED, REFUTED, UNDECIDED, NOT_MEASURED = "confirmed", "refuted", "undecided", "not re-measured"
FOUND, NARROWED, NOT_BISECTED = "found", "undecided", "not bisected"
OUTCOMES = (CONFIRMED, UNDECIDED, REFUTED, NOT_MEASURED)  # the record's order


@dataclasses.dataclass
class Measured:
    """One cell's paired verdict between two commits (bench.gate.output.verdicts' row, in short)."""

    base: str
    head: str
    verdict: str  # slower | faster | same | unsure | skipped | failed | disagrees
    ratio: float | None = None  # HEAD/BASE
    low: float | None = None
    high: float | None = None
    rounds: int = 0
    why: str = ""

    @property
    def slower(self) -> bool:
        return self.verdict == "slower"

    @property
    def not_slower(self) -> bool:
        return self.verdict in ("same", "faster")


# BASE commit, HEAD commit, cells -> {cell id: Measured}
Measure = Callable[[str, str, list[Cell]], dict[str, Measured]]


@dataclasses.dataclass
class Entry:
    alert: Alert
    outcome: str = ""
    why: str = ""
    confirmation: Measured | None = None
    commits: list[str] = dataclasses.field(default_factory=list)  # after `before`, oldest first, ending at `after`
    low: int = -1  # the last index known not slower (-1: `before`)
    high: int = 0  # the first index known slower
    steps: list[Measured] = dataclasses.field(default_factory=list)  # the bisection's midpoints, in order
    bisection: str = NOT_BISECTED
    culprit: str | None = None
    gate_runs: int = 0  # gate runs this alert's cell took part in

    @property
    def narrowed_to(self) -> tuple[str, str]:
        """(last commit known not slower, first known slower)."""
        return (self.commits[self.low] if self.low >= 0 else self.alert.before), self.commits[self.high]


def _measure_groups(
    wanted: list[tuple[Entry, str, str]],
    measure: Measure,
    apply: Callable[[Entry, Measured], None],
    done: Callable[[], None],
) -> None:
    """Each (entry, base, head) measured and its verdict applied; one gate run per pair of commits, each
    distinct cell once in it, and `done` after each run."""
    groups: dict[tuple[str, str], list[tuple[Entry, Cell]]] = {}
    for entry, base, head in wanted:
        groups.setdefault((base, head), []).append((entry, entry.alert.cell()[0]))
    for (base, head), members in groups.items():
        cells = {}
        for _, cell in members:
            cells.setdefault(cell.id, cell)
        got = measure(base, head, list(cells.values()))
        for entry, cell in members:
            entry.gate_runs += 1
            apply(entry, got[cell.id])
        done()


def _confirm(entry: Entry, got: Measured) -> None:
    entry.confirmation = got
    if got.slower:
        entry.outcome = CONFIRMED
    elif got.not_slower:
        entry.outcome = REFUTED
    elif got.verdict == "unsure":
        entry.outcome, entry.why = UNDECIDED, got.why
    else:
        entry.outcome, entry.why = NOT_MEASURED, f"{got.verdict}: {got.why}"


def _halve(entry: Entry, got: Measured) -> None:
    middle = (entry.low + entry.high) // 2
    entry.steps.append(got)
    if got.slower:
        entry.high = middle
    elif got.not_slower:
        entry.low = middle
    else:  # undecided (after the gate's extra rounds) or not measurable there: never guessed
        entry.bisection = NARROWED
        entry.why = f"bisection stopped at {got.head[:8]}: {got.verdict}" + (f" ({got.why})" if got.why else "")


def triage(
    alerts: list[Alert],
    measure: Measure,
    commits_between: Callable[[str, str], list[str]],
    done: Callable[[list[Entry]], None] = lambda entries: None,
) -> list[Entry]:
    """Every alert confirmed, refuted, undecided or not re-measured; each confirmed one bisected.
    `done(entries)` is called after every gate run (the record is written there: an interrupted
    triage keeps what it measured)."""
    entries = [Entry(a) for a in alerts]
    after_each = lambda: done(entries)  # noqa: E731
    wanted = []
    for entry in entries:
        cell, why = entry.alert.cell()
        if cell is None:
            entry.outcome, entry.why = NOT_MEASURED, why
        else:
            wanted.append((entry, entry.alert.before, entry.alert.after))
    _measure_groups(wanted, measure, _confirm, after_each)
    for entry in entries:
        if entry.outcome == CONFIRMED:
            entry.commits = commits_between(entry.alert.before, entry.alert.after)
            entry.low, entry.high = -1, len(entry.commits) - 1
    while True:
        bisecting = [e for e in entries if e.outcome == CONFIRMED and e.bisection == NOT_BISECTED]
        for entry in bisecting:
            if entry.high - entry.low == 1:
                entry.bisection, entry.culprit = FOUND, entry.commits[entry.high]
        wanted = [
            (e, e.alert.before, e.commits[(e.low + e.high) // 2]) for e in bisecting if e.bisection == NOT_BISECTED
        ]
        if not wanted:
            break
        _measure_groups(wanted, measure, _halve, after_each)
    after_each()
    return entries
