"""The gate's records read back (bench.studies.gate_records): counts, A/A against detection, and the page's table."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from bench.harness import cli
from bench.studies import gate_records

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORDS = REPO / "results" / "compare" / "vm-amd-epyc-2cpu"


def _cell(impl: str, verdict: str, ratio: float, half: float = 0.01, rounds: int = 4) -> dict:
    return {
        "cell": f"{impl}-seed-float32-sgd",
        "implementation": impl,
        "verdict": verdict,
        "ratio": ratio,
        "low": ratio * (1 - half),
        "high": ratio * (1 + half),
        "rounds": rounds,
    }


def _record(cells: list[dict], head_commit: str = "a" * 40, head_dirty: bool = False) -> dict:
    side = {"commit": "a" * 40, "dirty": False, "python": ".../python"}
    return {
        "base": side,
        "head": {**side, "commit": head_commit, "dirty": head_dirty},
        "settings": {"procedure": "interleave", "thread_budget": 1, "cpus": [0], "other_work_during": 1.02},
        "wall_s": 512.4,
        "cells": cells,
    }


def test_an_a_a_record_counts_every_cell_as_unchanged_whatever_the_names():
    cells = [
        _cell("numpy", "same", 1.0),
        _cell("numba", "faster", 0.9),
        _cell("torch:cpu", "unsure", 1.04, rounds=9),
        _cell("jax:cpu", "slower", 1.2),
    ]
    s = gate_records.summary(_record(cells))
    assert s["a_a"]
    assert s["unchanged"] == {"slower": 1, "faster": 1, "same": 1, "unsure": 1, "failed": 0}
    assert s["slowed_ratios"] == []
    assert s["rounds"] == (4, 9)
    assert s["exit"] == 1  # a slower cell fails the run, as the gate's own exit status does
    line = gate_records.row("`r.json`", s)
    assert "| 1 / 1 / 1 / 1 | none (A/A) |" in line
    assert "interleave on CPUs 0, 1 thread(s) a side | 1.0 |" in line
    assert line.endswith("| 4-9 | 512 s | 1 |")


def test_a_detection_record_counts_the_named_implementations_apart_with_their_ratios():
    cells = [
        _cell("numpy", "slower", 1.12),
        _cell("numba:blas", "slower", 1.094),
        _cell("numba", "unsure", 1.07),
        _cell("torch:cpu", "same", 1.0),
        _cell("jax:cpu", "same", 0.99),
    ]
    s = gate_records.summary(_record(cells, head_commit="b" * 40), slowed=("numpy", "numba"))
    assert not s["a_a"]
    assert s["slowed"] == {"slower": 2, "faster": 0, "same": 0, "unsure": 1, "failed": 0}
    assert s["unchanged"] == {"slower": 0, "faster": 0, "same": 2, "unsure": 0, "failed": 0}
    assert "| 0 / 0 / 2 / 0 | 2 of 3 / 0 / 1 (1.070-1.120) |" in gate_records.row("r", s)


def test_an_undecided_run_exits_3_and_a_decided_one_0():
    assert gate_records.summary(_record([_cell("numpy", "same", 1.0), _cell("numba", "unsure", 1.0)]))["exit"] == 3
    assert gate_records.summary(_record([_cell("numpy", "same", 1.0), _cell("numba", "faster", 0.9)]))["exit"] == 0


def test_the_half_width_is_half_the_interval_over_the_ratio():
    cells = [_cell("numpy", "same", 1.0, half=0.01), _cell("numba", "same", 2.0, half=0.03)]
    median, _, widest = gate_records.summary(_record(cells))["half_width_pct"]
    assert median == pytest.approx(2.0)
    assert widest == pytest.approx(3.0)


@pytest.mark.parametrize("change", [{"head_commit": "b" * 40}, {"head_dirty": True}])
def test_a_record_is_a_a_only_for_the_same_clean_commit(change):
    assert not gate_records.is_a_a(_record([_cell("numpy", "same", 1.0)], **change))


def test_a_failed_cell_is_counted_as_such_not_dropped():
    s = gate_records.summary(_record([_cell("numpy", "disagrees", 1.0), _cell("numba", "same", 1.0)]))
    assert s["unchanged"]["failed"] == 1
    assert "(1 failed)" in gate_records.row("r", s)


def test_a_record_of_the_fixed_rounds_gate_takes_its_rounds_from_the_settings():
    record = _record([{k: v for k, v in _cell("numpy", "same", 1.0).items() if k != "rounds"}])
    record["settings"]["rounds"] = 4
    assert gate_records.summary(record)["rounds"] == (4, 4)


def test_every_committed_record_reads():
    paths = sorted(RECORDS.glob("*.json"))
    assert len(paths) >= 6
    assert len(gate_records.table(paths).splitlines()) == len(paths) + 2


def test_the_measured_table_of_the_gate_page_is_what_the_records_say():
    page = (REPO / "docs" / "gate.md").read_text()
    names = re.findall(r"^\| `([\w-]+\.json)` \|", page, flags=re.M)
    assert len(names) >= 6, "the measured table lists its records by file name"
    expected = gate_records.table([RECORDS / n for n in names])
    assert expected in page


def test_a_missing_or_foreign_file_is_a_one_line_error(tmp_path, capsys):
    run = lambda *a: cli.run("gate_records", gate_records.main, [str(x) for x in a])  # noqa: E731
    assert run(tmp_path / "none.json") == 2
    assert "no such record" in capsys.readouterr().err
    (tmp_path / "other.json").write_text(json.dumps({"cells": []}))
    assert run(tmp_path / "other.json") == 2
    assert "not a compare record" in capsys.readouterr().err
