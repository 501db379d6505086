"""The main job's tables as one model: what each cell holds is decided once, then rendered to console or markdown.

A preset table has a row per implementation and a column per preset; a sweep table a column per
batch size. The renderers only format what the model holds, so the console table and report.md
cannot tell different stories.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from bench.harness import grid

BEST, NOISY, UNDECIDED = "*", "!", "?"
FAILED_TEXT = {"skipped": "skipped", "disagrees": "DISAGREES", "diverged": "DIVERGED"}


@dataclasses.dataclass
class Entry:
    """One cell: a timing, or why there is none."""

    status: str  # ok | skipped | disagrees | diverged | missing
    us: float = 0.0  # median per step
    gflops: float = 0.0
    gemm_percent: float | None = None  # of the GEMM block's rate alongside (paired); None in older results.json
    speedup: float | None = None  # over the reference, paired; None where the reference has no time
    speedup_low: float | None = None  # its 95% interval
    speedup_high: float | None = None
    undecided: bool = False  # the speed-up's interval is wider than the run's +-width
    setup_s: float | None = None  # None in results.json files older than setup seconds
    best: bool = False  # the highest speed-up in its column
    noisy: bool = False  # IQR/median of its blocks above the run's threshold

    @property
    def failed_text(self) -> str:
        return "-" if self.status == "missing" else FAILED_TEXT[self.status]


@dataclasses.dataclass
class Table:
    kind: str  # "preset" or "sweep"
    dtype: str
    optimizer: str
    labels: list[str]  # the columns: presets, or sweep ids
    rows: list[tuple[str, list[Entry]]]  # (implementation, one entry per label)


def groups(data: dict, kind: str):
    """{(dtype, optimizer): {implementation: {label: result}}} for one kind of result."""
    tables: dict = defaultdict(lambda: defaultdict(dict))
    for r in data["results"]:
        if r["kind"] == kind:
            tables[r["problem"]["dtype"], r["problem"]["optimizer"]][r["implementation"]][r["label"]] = r
    return tables


def unavailable(data: dict) -> dict[str, str]:
    """Implementations skipped everywhere, with the reason (they get no row)."""
    by_name = defaultdict(list)
    for r in data["results"]:
        by_name[r["implementation"]].append(r)
    return {n: rs[0]["reason"] for n, rs in by_name.items() if all(r["status"] == "skipped" for r in rs)}


def _best(rows: dict, label: str) -> str | None:
    """The highest speed-up in the column: the ranking comes from the paired ratios, not from the times."""
    timed = {
        n: cells[label]["speedup"]
        for n, cells in rows.items()
        if cells.get(label, {}).get("status") == "ok" and cells[label].get("speedup") is not None
    }
    return max(timed, key=timed.get) if timed else None


def _entry(r: dict | None, best: bool, noisy_iqr_ratio: float) -> Entry:
    if r is None:
        return Entry("missing")
    if r["status"] != "ok":
        return Entry(r["status"])
    fraction = r.get("gemm_fraction")
    return Entry(
        "ok",
        us=r["median_s"] * 1e6,
        gflops=r["gflops"],
        gemm_percent=None if fraction is None else 100 * fraction,
        speedup=r.get("speedup"),
        speedup_low=r.get("speedup_low"),
        speedup_high=r.get("speedup_high"),
        undecided=r.get("undecided", False),
        setup_s=r.get("setup_s"),
        best=best,
        noisy=r["iqr_ratio"] > noisy_iqr_ratio,
    )


def tables(data: dict, kind: str) -> list[Table]:
    """The tables of one kind of result, one per (dtype, optimizer), implementations skipped everywhere left out."""
    settings = data["settings"]
    skipped = unavailable(data)
    labels = settings["presets"] if kind == "preset" else settings["sweep"]
    out = []
    for (dtype, optimizer), by_name in sorted(groups(data, kind).items()):
        by_name = {n: c for n, c in by_name.items() if n not in skipped}
        if not by_name:
            continue
        best = {label: _best(by_name, label) for label in labels}
        rows = [
            (
                name,
                [_entry(cells.get(label), best.get(label) == name, settings["noisy_iqr_ratio"]) for label in labels],
            )
            for name, cells in by_name.items()
        ]
        out.append(Table(kind, dtype, optimizer, list(labels), rows))
    return out


def _setup_text(e: Entry) -> str:
    return "n/a" if e.setup_s is None else f"{e.setup_s:.2f}"


def _speedup_text(e: Entry) -> str:
    """1.29x+-3%: the speed-up and the half-width of its interval (the larger side); ? where undecided."""
    if e.speedup is None:
        return "n/a"
    if e.speedup_low is None or e.speedup_low == e.speedup_high:  # the reference: 1 by definition
        return f"{e.speedup:.2f}x"
    half = max(e.speedup_high / e.speedup - 1, 1 - e.speedup_low / e.speedup)
    return f"{e.speedup:.2f}x±{half:.0%}" + (UNDECIDED if e.undecided else "")


def _interval_text(e: Entry) -> str:
    if e.speedup is None:
        return "n/a"
    if e.speedup_low is None or e.speedup_low == e.speedup_high:
        return f"{e.speedup:.2f}x"
    text = f"{e.speedup:.2f}x ({e.speedup_low:.2f}-{e.speedup_high:.2f})"
    return text + (" undecided" if e.undecided else "")


def _gemm_text(e: Entry) -> str:
    return "n/a" if e.gemm_percent is None else f"{e.gemm_percent:.1f}%"


# --- console ---------------------------------------------------------------------------------

PRESET_CELL_W = 51  # 12 + 2 marks + 8 + 7 + 14 + 8
SWEEP_CELL_W = 27


def _name_width(table: Table) -> int:
    return max(14, *(len(name) for name, _ in table.rows))


def console(table: Table, reference: str) -> list[str]:
    name_w = _name_width(table)
    if table.kind == "preset":
        lines = [
            "",
            f"{table.dtype}, {table.optimizer}: median us/step, GFLOP/s, % of the GEMM rate (a {table.dtype} "
            f"product timed alongside), speed-up over {reference} (paired) +- its 95% interval, setup seconds "
            "(create with any compilation, and the first calls; paid once per process)",
            f"{'':<{name_w}}" + "".join(f"{label:>{PRESET_CELL_W - 2}}  " for label in table.labels),
            f"{'implementation':<{name_w}}"
            + f"{'us/step':>14}{'GFLOP/s':>8}{'GEMM':>7}{'speed-up':>14}{'setup s':>8}" * len(table.labels),
        ]
    else:
        d, h, o = grid.SWEEP_SHAPE
        lines = [
            "",
            f"batch sweep, {table.dtype}, {table.optimizer} (D={d}, H={h}, O={o}): median us/step, speed-up over "
            f"{reference} (paired) +- its 95% interval",
            f"{'implementation':<{name_w}}" + "".join(f"{label:>{SWEEP_CELL_W - 1}} " for label in table.labels),
        ]
    for name, entries in table.rows:
        lines.append(f"{name:<{name_w}}" + "".join(_console_entry(table.kind, e) for e in entries))
    return lines


def _console_entry(kind: str, e: Entry) -> str:
    width = PRESET_CELL_W if kind == "preset" else SWEEP_CELL_W
    if e.status != "ok":
        return f"{e.failed_text:>{width - 2}}  " if kind == "preset" else f"{e.failed_text:>{width - 1}} "
    # The marks belong to the time, so they follow it: after the setup seconds they read as theirs.
    mark = (BEST if e.best else " ") + (NOISY if e.noisy else " ")
    if kind == "sweep":
        return f"{e.us:>12,.1f}{mark}{_speedup_text(e):>12} "
    return f"{e.us:>12,.1f}{mark}{e.gflops:>8.2f}{_gemm_text(e):>7}{_speedup_text(e):>14}{_setup_text(e):>8}"


# --- markdown --------------------------------------------------------------------------------


def markdown(table: Table, title: str) -> list[str]:
    """A markdown table under `title`: implementation, then one right-aligned column per label."""
    lines = ["", title, "", "| implementation | " + " | ".join(table.labels) + " |"]
    lines.append("|---|" + "---:|" * len(table.labels))
    for name, entries in table.rows:
        lines.append(f"| `{name}` | " + " | ".join(_markdown_entry(table.kind, e) for e in entries) + " |")
    return lines


def _markdown_entry(kind: str, e: Entry) -> str:
    if e.status != "ok":
        return e.failed_text
    noisy = " (!)" if e.noisy else ""
    time_text = f"**{e.us:,.1f} us**" if e.best else f"{e.us:,.1f} us"
    if kind == "sweep":
        return f"{time_text}{noisy}<br>{_interval_text(e)}"
    return (
        f"{time_text}{noisy}<br>{e.gflops:.2f} GFLOP/s · {_gemm_text(e)} · {_interval_text(e)} · "
        f"setup {_setup_text(e)} s"
    )
