"""The dynamics report states its findings from the run's numbers, and an interrupted write keeps the old files."""

import pytest

import impls
from bench.studies import dynamics as report
from bench.studies.dynamics_runs import run_config
from bench.studies.dynamics_text import write_report

NOTEBOOK_RUN = impls.Problem.preset("seed", init="randn", optimizer="sgd", lr=1e-4)


def test_report_states_divergence_and_the_update_orders_effect(tmp_path):
    results = [run_config(p, ["numpy"]) for p in (NOTEBOOK_RUN, NOTEBOOK_RUN.replace(lr=1e-3))]
    text = write_report(results, ["numpy"], {"numpy": None}, "numpy", "dynamics.png", {})
    assert "**seed**: 1 of 2 (init, optimizer, lr) diverge: randn sgd lr=0.001 (float64 step 2)" in text
    assert "the run's divergence is 3" in text and "comes from the update order, not the learning rate" in text
    assert "`notebook [negative control]`" in text and "`notebook-order [negative control]`" in text
    report.plot(results, "numpy", tmp_path / "dynamics.png")
    assert (tmp_path / "dynamics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "dynamics.md"
    path.write_text("previous")

    def interrupted(tmp):
        tmp.write_text("half written")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        report.replace_atomically(path, interrupted)
    assert path.read_text() == "previous" and list(tmp_path.iterdir()) == [path]
    report.replace_atomically(path, lambda tmp: tmp.write_text("new"))
    assert path.read_text() == "new" and list(tmp_path.iterdir()) == [path]
