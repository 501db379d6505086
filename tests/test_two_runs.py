"""`python -m bench.job.two_runs`: how far two make bench runs agree, from their results.json."""

import json

import pytest

from bench.job import two_runs


def run(threads, *cells):
    """A results.json with these (implementation, speed-up, low, high, undecided) cells at seed, and numpy's."""
    results = [
        {"implementation": name, "label": "seed", "problem": {"dtype": "float32", "optimizer": "sgd"}, "status": "ok",
         "speedup": s, "speedup_low": lo, "speedup_high": hi, "undecided": u}
        for name, s, lo, hi, u in [("numpy", 1.0, 1.0, 1.0, False), *cells]
    ]  # fmt: skip
    return {"settings": {"reference": "numpy"}, "measurement": {"threads": threads}, "results": results}


def test_cells_are_listed_worst_first_and_counted(tmp_path, capsys):
    first = run(2, ("a", 2.0, 1.9, 2.1, False), ("b", 1.0, 0.9, 1.1, True), ("c", 3.0, 2.9, 3.1, False))
    second = run(2, ("a", 2.02, 1.95, 2.1, False), ("b", 0.8, 0.7, 0.95, True), ("gone", 1.0, 1.0, 1.0, False))
    found = two_runs.agreements(first, second)
    assert [a.cell[0] for a in found] == ["b", "a"]  # numpy and cells of one run only are left out
    assert found[0].apart == pytest.approx(0.25) and not found[0].contains  # 1.0 -> 0.8 is 25% apart either way
    assert found[1].apart == pytest.approx(0.01) and found[1].contains
    paths = []
    for i, data in enumerate((first, second)):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(data))
    assert two_runs.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "threads: 2 in the first run, 2 in the second"
    assert out.rstrip().endswith("within 5%: 1 of 2; second interval holds the first: 1 of 2")


def test_runs_at_different_thread_counts_are_said_to_measure_different_things():
    text = two_runs.text(run(2, ("a", 2.0, 1.9, 2.1, False)), run(1, ("a", 2.5, 2.4, 2.6, False)))
    assert "different thread counts" in text.splitlines()[0]


def test_a_results_file_from_before_paired_speed_ups_is_refused(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"settings": {}, "results": []}))
    with pytest.raises(SystemExit) as stopped:
        two_runs.main([str(old), str(old)])
    assert stopped.value.code == 2 and "without paired speed-ups" in capsys.readouterr().err
