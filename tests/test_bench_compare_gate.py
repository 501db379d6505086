"""`make bench-compare`, the pytest-benchmark gate: like with like, one clear line when it cannot compare or fails.

Each test saves a real baseline of one cheap configuration into a temporary storage, edits
what the case is about (the machine, a timing made 100x faster, the selection), and runs the
gate as `make bench-compare` does. The verdicts do not depend on this machine's speed.
"""

import json
import subprocess
import sys

import pytest

from bench.harness import environment

from .conftest import own_pytest_env

CELL = "numpy and seed and float32 and sgd and test_step and not batch"
QUICK = ["--benchmark-min-rounds=1", "--benchmark-max-time=0.001", "--benchmark-warmup=off"]


def _pytest_bench(storage, *args):
    command = [
        sys.executable,
        "-m",
        "pytest",
        "bench/pytest_suite",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--benchmark-storage=file://{storage}",
    ]
    return subprocess.run(
        [*command, *QUICK, *args],
        cwd=environment.REPO,
        env=own_pytest_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def baseline(tmp_path):
    saved = _pytest_bench(tmp_path, "-k", CELL, "--benchmark-autosave")
    assert saved.returncode == 0, saved.stdout + saved.stderr
    (path,) = tmp_path.glob("*/*.json")
    return tmp_path, path


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_same_machine_compares_without_the_machine_info_dump(baseline):
    storage, path = baseline
    # A per-run detail: a pool loaded in one run and not the other, as when the backends load late.
    _edit(path, lambda d: d["machine_info"]["stepbench"]["threads"].update(numba=99))
    done = _pytest_bench(storage, "-k", CELL, "--benchmark-compare", "--benchmark-compare-fail=median:100000%")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "machine_info is different" not in done.stdout + done.stderr


def test_a_baseline_from_other_hardware_is_refused_in_one_line(baseline):
    storage, path = baseline
    _edit(path, lambda d: d["machine_info"]["stepbench"].update(machine_name="elsewhere-other-cpu-64cpu"))
    done = _pytest_bench(storage, "-k", CELL, "--benchmark-compare")
    assert done.returncode not in (0, 1)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "elsewhere-other-cpu-64cpu" in line]
    assert len(errors) == 1 and "save one here first" in errors[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_other_library_versions_are_refused(baseline):
    storage, path = baseline
    _edit(path, lambda d: d["machine_info"]["stepbench"]["versions"].update(numpy="1.0.0"))
    done = _pytest_bench(storage, "-k", CELL, "--benchmark-compare")
    assert done.returncode not in (0, 1)
    assert "numpy 1.0.0 ->" in done.stdout + done.stderr


def test_a_selection_the_baseline_lacks_fails_instead_of_passing(baseline):
    storage, _ = baseline
    done = _pytest_bench(storage, "-k", "numpy and seed and float64 and sgd and test_step", "--benchmark-compare")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "not in the baseline" in done.stdout


def test_no_baseline_at_all_fails(tmp_path):
    done = _pytest_bench(tmp_path, "-k", CELL, "--benchmark-compare")
    assert done.returncode == 2 and "no saved baseline" in done.stdout


def test_a_regression_is_one_line_and_status_1(baseline):
    storage, path = baseline

    def hundred_times_faster(data):
        for bench in data["benchmarks"]:
            for key in ("min", "max", "mean", "median", "q1", "q3", "ld15iqr", "hd15iqr"):
                bench["stats"][key] /= 100

    _edit(path, hundred_times_faster)
    done = _pytest_bench(storage, "-k", CELL, "--benchmark-compare", "--benchmark-compare-fail=median:25%")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "bench-compare: performance has regressed" in out and "Traceback" not in out
