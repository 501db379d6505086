"""The estimate of a full asv run: its sample stands for every parameter set of the suite, and its sum.

Nothing is run or timed here: the sample is matched against the committed benchmarks.json
by asv's own selection, and the estimate is computed from given seconds.
"""

import itertools

import pytest

from bench.asvtools import run_estimate
from bench.harness import environment

asv = pytest.importorskip("asv", reason="the sample is asv's -b selections")


def _selected(expressions) -> int:
    """Parameter sets that `asv run -b E1 -b E2 ...` runs, by asv's own selection."""
    from asv import benchmarks as asv_benchmarks
    from asv import util

    listed = util.load_json(str(environment.REPO / "results" / "asv" / "benchmarks.json"), api_version=2)
    conf = type("Config", (), {"benchmark_dir": "bench/benchmarks"})()
    chosen = asv_benchmarks.Benchmarks(conf, [b for k, b in listed.items() if k != "version"], regex=list(expressions))
    return sum(
        1 if chosen.benchmark_selection[name] is None else len(chosen.benchmark_selection[name]) for name in chosen
    )


def _all_parameter_sets() -> int:
    from asv import util

    listed = util.load_json(str(environment.REPO / "results" / "asv" / "benchmarks.json"), api_version=2)
    return sum(
        len(list(itertools.product(*b["params"]))) if b["params"] else 1 for k, b in listed.items() if k != "version"
    )


def test_the_sample_stands_for_every_parameter_set_of_a_full_run_once():
    sample = run_estimate.parts()
    counts = {part.name: _selected(part.selection) for part in sample}
    assert all(counts.values()), counts  # every expression selects what it means to
    assert sum(part.stands_for * counts[part.name] for part in sample) == _all_parameter_sets()


def test_the_estimate_counts_asvs_start_once_and_each_part_as_often_as_it_stands_for():
    sample = [
        run_estimate.Part(run_estimate.START, ("a",), 1),
        run_estimate.Part("four of these", ("b",), 4),
        run_estimate.Part("two of these", ("c",), 2),
    ]
    seconds = {run_estimate.START: 10.0, "four of these": 40.0, "two of these": 110.0}
    assert run_estimate.estimate(seconds, sample) == 10.0 + 4 * 30.0 + 2 * 100.0
