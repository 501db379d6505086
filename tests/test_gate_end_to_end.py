"""The regression gate end to end, with real workers, on temporary clones of this repository.

One clone commits a step many times as slow as its parent: the gate must call it slower and exit 1.
Another carries an uncommitted edit: the working-tree side must run it. The slowdown is gross on
purpose, so that a busy machine still calls it; no time is asserted, only the verdict it leads to.
"""

import json
import os
import subprocess

import pytest

from bench.gate import compare
from bench.harness import environment

CELL = "numpy and seed and float32 and sgd"
SLEEP_S = 5e-4
GIT = ["-c", "user.name=t", "-c", "user.email=t@t.invalid"]


def _clone(where):
    subprocess.run(
        ["git", "clone", "--quiet", "--local", "--no-hardlinks", str(environment.REPO), str(where)], check=True
    )
    return where


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{path.name} changed: update this test's edit"
    path.write_text(text.replace(old, new, 1))


def _procedure() -> list[str]:
    # A duet needs a CPU per side; a one-CPU machine can still run the gate interleaved.
    return [] if len(os.sched_getaffinity(0)) >= 2 else ["--procedure", "interleave"]


@pytest.fixture
def private_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path / "cache"))


def test_a_markedly_slower_head_is_called_slower_and_fails_the_gate(tmp_path, monkeypatch, private_cache):
    clone = _clone(tmp_path / "slow")
    # Half a millisecond asleep in every step, about 20 us at the seed size: the same results, many times
    # the time. A sleep, not more arithmetic: a machine whose cores are busy stretches a computation
    # several times over, and could stretch BASE's as much as HEAD's extra work; it hardly shortens a sleep.
    numpy_ref = clone / "impls" / "numpy_ref.py"
    _edit(numpy_ref, "import numpy as np\n", "import time\n\nimport numpy as np\n")
    _edit(numpy_ref, "    def _step(self):\n", f"    def _step(self):\n        time.sleep({SLEEP_S})\n")
    subprocess.run(["git", "-C", str(clone), *GIT, "commit", "--quiet", "-am", "numpy: a slower step"], check=True)
    monkeypatch.setattr(environment, "REPO", clone)
    out = tmp_path / "c.json"
    # Blocks of 2 ms of BASE's calls: HEAD's blocks of as many calls last about 50 ms, and the run seconds.
    args = ["--rounds", "2", "--pairs", "6", "--block", "0.002", "--json", str(out), *_procedure()]
    status = compare.main(["HEAD~1", "HEAD", "-k", CELL, *args])
    data = json.loads(out.read_text())
    (row,) = data["cells"]
    assert row["verdict"] == "slower", row
    assert status == 1
    assert data["base"]["commit"] != data["head"]["commit"]


def test_the_working_tree_side_runs_its_uncommitted_edits(tmp_path, monkeypatch, private_cache):
    clone = _clone(tmp_path / "edited")
    # Uncommitted: numpy's entry becomes a step that uses w2 untransposed. Only the working tree has it.
    _edit(
        clone / "impls" / "registry.py",
        '"numpy": Entry("numpy_ref", "NumpyStep")',
        '"numpy": Entry("negative_controls", "W2NotTransposed")',
    )
    monkeypatch.setattr(environment, "REPO", clone)
    out = tmp_path / "c.json"
    status = compare.main(["HEAD", "-k", CELL, "--rounds", "2", "--pairs", "2", "--json", str(out), *_procedure()])
    data = json.loads(out.read_text())
    (row,) = data["cells"]
    assert data["head"]["checkout"] == "working tree" and data["head"]["commit"] is None
    assert data["head"]["environment"]["impls"] == "<repo>/impls"  # the clone's working tree, imported
    assert data["base"]["environment"]["impls"] == f"<cache>/compare-checkouts/{data['base']['commit']}/impls"
    assert row["verdict"] == "disagrees" and row["why"].startswith("head:")  # the edit ran, and was caught
    assert status == 1
