"""The regression gate's logic: which cells, how a verdict follows from paired samples, refusals, exit status.

Nothing here asserts on a measured time: the statistics are fed fixed samples, and the runs
end to end check what they report and write, not how fast anything was.
"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import impls
from bench.gate import Refused, compare, output, paired, rounds
from bench.gate import cells as gate_cells
from bench.harness import environment, grid, machine

from .conftest import as_from_a_terminal, own_pytest_env

REPO = environment.REPO


# --- selection ------------------------------------------------------------------------------


def _pytest_selected(expression: str) -> list[str]:
    """The test_step / test_step_batch_sweep ids that pytest itself selects with -k in the pytest-benchmark suite."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "bench/pytest_suite/test_step.py",
            "--collect-only",
            "-q",
            "-k",
            expression,
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        env=own_pytest_env(),
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    ids = []
    for line in out.splitlines():
        if line.startswith("bench/pytest_suite/test_step.py::test_step") and "[" in line:
            test, rest = line.split("::", 1)[1].split("[", 1)
            if test in ("test_step", "test_step_batch_sweep"):
                ids.append(rest.rstrip("]"))
    return ids


@pytest.mark.parametrize(
    "expression",
    ["seed and float32", "numba and not numba:parallel and tutorial", "n01024 or (medium and adam and torch)", "SEED"],
)
def test_selection_is_pytest_benchmark_s(expression):
    ours = [c.id for c in gate_cells.select(gate_cells.all_cells(), expression)]
    theirs = [i for i in _pytest_selected(expression) if i.split("-")[1] not in grid.ACCELERATOR_PRESETS or "cuda" in i]
    assert sorted(ours) == sorted(theirs) and ours


def test_default_selection_is_the_cpu_presets_seed_to_medium():
    cells = gate_cells.select(gate_cells.all_cells(), None)
    cpu_names = [n for n in impls.names() if grid.device(n) == "cpu"]
    expected = {
        f"{n}-{p}-{d}-{o}"
        for n in cpu_names
        for p in ("seed", "tutorial", "medium")
        for d in grid.DTYPES
        for o in grid.OPTIMIZERS
    }
    assert {c.id for c in cells} == expected
    assert all(c.problem == grid.preset_problem(*c.id.split("-")[-3:]) for c in cells if c.id.count("-") == 3)


def test_selection_refuses_nothing_and_nonsense():
    with pytest.raises(Refused, match="selects no cell"):
        gate_cells.select(gate_cells.all_cells(), "no_such_thing")
    with pytest.raises(Refused, match="not a valid selection"):
        gate_cells.select(gate_cells.all_cells(), "seed and (")


# --- statistics and verdicts ----------------------------------------------------------------


def _pairs(ratio_per_round, noise=0.01, per_round=12, seed=1):
    rng = np.random.default_rng(seed)
    rounds = []
    for ratio in ratio_per_round:
        base = 100e-6 * np.exp(rng.normal(0, noise, per_round))
        head = base * ratio * np.exp(rng.normal(0, noise, per_round))
        rounds.append(list(zip(base.tolist(), head.tolist(), strict=True)))
    return rounds


def test_a_clear_slowdown_is_slower_and_its_mirror_faster():
    est = paired.estimate(_pairs([1.10, 1.11, 1.09, 1.10]))
    assert est.low > 1.05 and math.isclose(est.ratio, 1.10, rel_tol=0.02)
    assert paired.verdict(est, 0.05)[0] == "slower"
    mirror = paired.estimate(_pairs([1 / 1.10, 1 / 1.11, 1 / 1.09, 1 / 1.10]))
    assert paired.verdict(mirror, 0.05)[0] == "faster"


def test_no_change_is_same():
    est = paired.estimate(_pairs([1.0, 1.01, 0.99, 1.0]))
    assert paired.verdict(est, 0.05)[0] == "same"


def test_rounds_that_disagree_make_it_unsure_not_slower():
    # Every pair within a round agrees, but the processes do not: one layout's bias is not a change.
    est = paired.estimate(_pairs([1.12, 0.97, 1.10, 0.98], noise=0.002))
    verdict, why = paired.verdict(est, 0.05)
    assert verdict == "unsure" and "interval" in why
    assert est.low < 1.0 < est.high


def test_verdict_boundaries():
    assert paired.verdict(paired.Estimate(1.2, 1.06, 1.3, 10, 2), 0.05)[0] == "slower"
    assert paired.verdict(paired.Estimate(1.04, 1.0, 1.06, 10, 2), 0.05)[0] == "unsure"
    assert paired.verdict(paired.Estimate(1.0, 0.96, 1.04, 10, 2), 0.05)[0] == "same"
    assert paired.verdict(paired.Estimate(0.8, 0.7, 0.94, 10, 2), 0.05)[0] == "faster"
    assert "wider" in paired.verdict(paired.Estimate(1.0, 0.8, 1.3, 10, 2), 0.05)[1]


# --- refusals: one line, exit status 2 ------------------------------------------------------


def _run_compare(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "bench", "compare", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-revision-xyz"], "unknown revision 'no-such-revision-xyz'"),
        (["HEAD", "-k", "nothing_matches_this"], "selects no cell"),
        (["HEAD", "--base-env", "no-such-env"], "environment 'no-such-env'"),
        (["HEAD", "--threshold", "-0.1"], "--threshold"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message):
    done = _run_compare(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_an_environment_without_the_suite_is_refused(tmp_path):
    # A Python that cannot import NumPy cannot import the suite: said in one line, status 2.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    python.chmod(0o755)
    done = _run_compare("HEAD", "HEAD", "--base-env", str(python), "-k", "numpy and seed and float32 and sgd")
    assert done.returncode == 2, done.stderr
    # The announcement and the error; a busy machine (other tests beside this one) adds its warning before them.
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("compare: warning: the machine")]
    assert "cannot import the suite" in done.stderr and len(lines) == 2, done.stderr


# --- end to end on a temporary clone --------------------------------------------------------


@pytest.fixture(scope="module")
def clone_with_a_wrong_step(tmp_path_factory):
    """A clone of this repository with one more commit whose `numpy` entry uses w2 untransposed in the backward pass.

    The oracle (impls.agreement) is the NumPy reference module itself, untouched here: the
    wrong step must be caught by it, in the side's own process, before anything is timed.
    """
    where = tmp_path_factory.mktemp("clone") / "repo"
    subprocess.run(["git", "clone", "--quiet", "--local", "--no-hardlinks", str(REPO), str(where)], check=True)
    registry = where / "impls" / "registry.py"
    text = registry.read_text()
    entry = '"numpy": Entry("numpy_ref", "NumpyStep")'
    assert entry in text, "the registry changed: update this fixture"
    registry.write_text(text.replace(entry, '"numpy": Entry("negative_controls", "W2NotTransposed")'))
    git = ["git", "-C", str(where), "-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run([*git, "commit", "--quiet", "-am", "wrong"], check=True)
    return where


def test_a_disagreeing_head_fails_before_it_is_timed(clone_with_a_wrong_step, tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "REPO", clone_with_a_wrong_step)
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "c.json"
    status = compare.main(
        [
            "HEAD~1",
            "HEAD",
            "-k",
            "numpy and seed and float32 and sgd",
            "--rounds",
            "2",
            "--pairs",
            "2",
            "--json",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    (row,) = data["cells"]
    assert status == 1
    assert row["verdict"] == "disagrees" and row["why"].startswith("head:")
    assert "pairs" not in row  # never timed
    assert data["base"]["commit"] != data["head"]["commit"]


def test_a_run_records_every_pair_and_both_environments_and_writes_nothing_under_results(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path / "cache"))
    before = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout
    out = tmp_path / "c.json"
    status = compare.main(
        ["HEAD", "HEAD", "-k", "numpy and seed and float32", "--rounds", "2", "--pairs", "3", "--max-rounds", "2"]
        + ["--json", str(out)]
    )
    data = json.loads(out.read_text())
    assert status in (0, 1, 3)  # an A/A verdict on a shared machine is not this test's business
    assert status == compare.exit_status(data["cells"])
    assert len(data["cells"]) == 2
    for row in data["cells"]:
        assert row["verdict"] in ("same", "unsure", "slower", "faster")
        assert [len(r) for r in row["pairs"]] == [3, 3]
        assert row["agreement_worst_ratio"]["base"] < 1 and row["agreement_worst_ratio"]["head"] < 1
    for side in ("base", "head"):
        env = data[side]["environment"]
        assert env["impls"] == f"<cache>/compare-checkouts/{data[side]['commit']}/impls"  # each side's own export
        assert env["threads"]["budget"] == data["settings"]["thread_budget"]
    after = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout
    assert after == before


# --- machine identity -----------------------------------------------------------------------


def test_machine_name_changes_with_the_hardware_not_only_the_host():
    one = machine.name("vm", "Intel(R) Xeon(R) Processor", 2, [])
    assert one == "vm-intel-xeon-2cpu"
    assert machine.name("vm", "AMD EPYC 7B13", 2, []) != one
    assert machine.name("vm", "Intel(R) Xeon(R) Processor", 4, []) != one
    assert machine.name("vm", "Intel(R) Xeon(R) Processor", 2, ["NVIDIA H200"]) == "vm-intel-xeon-2cpu-nvidia-h200"


def test_committed_results_sit_under_the_name_of_the_cpu_that_made_them():
    folders = [p for p in (REPO / "results" / "asv").iterdir() if p.is_dir()]
    assert folders
    for folder in folders:
        described = json.loads((folder / "machine.json").read_text())
        assert folder.name == described["machine"]
        for result in folder.glob("*.json"):
            if result.name == "machine.json":
                continue
            params = json.loads(result.read_text())["params"]
            assert params["machine"] == folder.name
            assert machine.name(folder.name.split("-")[0], params["cpu"], int(params["num_cpu"]), []) == folder.name
    for record in (REPO / "results" / "asv-environment").glob("*.json"):
        data = json.loads(record.read_text())
        assert record.name.startswith(machine.name(data["machine"], data["cpu"], data["cores"], []) + "-")
    for run in (REPO / "results" / "pytest-benchmark").glob("*/*/*.json"):
        info = json.loads(run.read_text())["machine_info"]
        assert run.parent.parent.name == machine.name(
            info["node"], info["stepbench"]["cpu"], info["stepbench"]["cores"], []
        )


def test_a_duet_gives_each_side_half_the_cpus_within_the_budget(monkeypatch):
    monkeypatch.setattr(rounds.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setenv("STEPBENCH_THREADS", "8")
    assert rounds.duet_split() == (4, [[0, 1, 2, 3], [4, 5, 6, 7]])
    monkeypatch.setenv("STEPBENCH_THREADS", "2")
    assert rounds.duet_split() == (2, [[0, 1], [4, 5]])
    monkeypatch.setattr(rounds.os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setenv("STEPBENCH_THREADS", "1")  # a budget of 2 on one CPU is refused by the budget itself
    with pytest.raises(Refused, match="two CPUs"):
        rounds.duet_split()


def test_ctrl_c_ends_in_one_line_and_leaves_no_worker(tmp_path):
    import os
    import signal
    import time

    env = {**os.environ, "STEPBENCH_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "bench", "compare", "HEAD", "HEAD", "-k", "numpy and seed", "--pairs", "500"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline:
        workers = subprocess.run(
            ["pgrep", "-f", str(tmp_path / "cache")], capture_output=True, text=True
        ).stdout.split()
        if len(workers) >= 2:
            break
        time.sleep(0.2)
    assert len(workers) >= 2, "the workers never started"
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "python -m bench compare: interrupted; nothing written"
    assert "Traceback" not in err and out == ""
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "cache")], capture_output=True, text=True).stdout.split()
    assert left == []


def test_every_committed_asv_result_is_on_mains_first_parent_line():
    # asv publish places results along `git rev-list --first-parent` of the configured branch
    # and drops any other ("Couldn't find ... in branches"): a result of a merged side
    # branch's commit never reaches the dashboard.
    line = subprocess.run(
        ["git", "-C", str(REPO), "rev-list", "--first-parent", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.split()
    for result in (REPO / "results" / "asv").glob("*/*.json"):
        if result.name != "machine.json":
            commit = json.loads(result.read_text())["commit_hash"]
            assert commit in line, f"{result.name}: {commit[:8]} is not on the first-parent line of HEAD"


def test_records_carry_no_path_of_this_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path / "cache"))
    record = {
        "python": str(REPO / ".venv" / "bin" / "python"),
        "impls": [str(tmp_path / "cache" / "compare-checkouts" / "abc" / "impls")],
        "elsewhere": "/opt/somewhere/envs/py311/bin/python",
        "count": 3,
        "spec": "HEAD~1",
    }
    assert output.portable(record) == {
        "python": "<repo>/.venv/bin/python",
        "impls": ["<cache>/compare-checkouts/abc/impls"],
        "elsewhere": ".../py311/bin/python",
        "count": 3,
        "spec": "HEAD~1",
    }
