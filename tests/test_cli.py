"""The command-line jobs: a bad setting or Ctrl-C ends in one line and a non-zero status, never a traceback,
and the previous results stay as they were.

Each job runs as a user starts it, in its own process, on the smallest selection; a run the
fix would stop early is bounded by a timeout, and every process is ended before the test ends.
"""

import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

import impls
from bench.harness import environment
from impls import threads

from .conftest import as_from_a_terminal

TINY = ["--implementations", "numpy", "--presets", "seed", "--dtypes", "float32", "--no-sweep"]
DEADLINE_S = 120  # far beyond what a stopped job needs; only a job that does not stop runs into it


@pytest.fixture
def workspace(tmp_path):
    """A previous run's output folder, a private GEMM peak cache and a one-thread budget."""
    out = tmp_path / "latest"
    out.mkdir()
    (out / "results.json").write_text("previous run")
    env = {**os.environ, "STEPBENCH_CACHE": str(tmp_path / "cache"), threads.ENV: "1"}
    return tmp_path, out, env


def assert_untouched(tmp_path, out):
    assert [p.name for p in out.iterdir()] == ["results.json"] and (out / "results.json").read_text() == "previous run"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def run_job(args, env, timeout=DEADLINE_S):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=environment.REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("value", ["0", "abc", "-2", "1.5"])
def test_a_bad_thread_budget_is_one_line(workspace, value):
    tmp_path, out, env = workspace
    done = run_job(["bench", *TINY, "--out", str(out)], {**env, threads.ENV: value})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"python -m bench: error: {threads.ENV} must be a positive integer, got {value!r}"
    ]
    assert_untouched(tmp_path, out)
    done = run_job(["bench.studies.dynamics", "--presets", "seed", "--out", str(out)], {**env, threads.ENV: value})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and threads.ENV in done.stderr
    assert_untouched(tmp_path, out)


def test_a_thread_budget_above_the_cpus_is_one_line(workspace):
    tmp_path, out, env = workspace
    done = run_job(["bench", *TINY, "--out", str(out)], {**env, threads.ENV: "999"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"python -m bench: error: {threads.ENV}=999 is more than the {threads.usable_cpus()} CPUs this process may run on"
    ]
    assert_untouched(tmp_path, out)


def test_an_empty_thread_budget_means_the_default(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    default = threads.budget()
    monkeypatch.setenv(threads.ENV, "")
    assert threads.budget() == default


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("out-is-a-file", "--out {file} is a file, not a folder"),
        ("out-below-a-file", "--out {file}/latest cannot be created: {file} is a file, not a folder"),
        ("negative-max-time", "argument --max-time: must be a number of seconds, 0 or more; got '-1'"),
        ("cache-not-writable", "the GEMM peak cache {file}/cache (STEPBENCH_CACHE) is not writable"),
        ("unavailable-here", "nothing selected can run here: torch:cuda unavailable: "),
        ("cpu-at-accelerator-size", "nothing selected can run here: preset xlarge is for accelerators only"),
    ],
)
def test_a_bad_setting_is_one_line_before_any_timing(workspace, case, expected):
    tmp_path, out, env = workspace
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    args = ["bench", *TINY, "--out", str(out)]
    if case == "out-is-a-file":
        args[-1] = str(file)
    elif case == "out-below-a-file":
        args[-1] = str(file / "latest")
    elif case == "negative-max-time":
        args += ["--max-time", "-1"]
    elif case == "cache-not-writable":
        env["STEPBENCH_CACHE"] = str(file / "cache")  # below a file: not writable, even for root
    elif case == "unavailable-here":
        if impls.available(["torch:cuda"])["torch:cuda"] is None:
            pytest.skip("torch:cuda can run here")
        args[args.index("numpy")] = "torch:cuda"
    else:
        args[args.index("seed")] = "xlarge"
    done = run_job(args, env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("python -m bench: error: " + expected.format(file=file))
    assert file.read_text() == "not a folder"
    assert_untouched(tmp_path, out)


def interrupt_after(args, env, first_line: str):
    """Start `python -m ARGS`, send SIGINT once a stderr line contains `first_line`; (status, stderr lines)."""
    job = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=environment.REPO,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    lines = []
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(job.stderr, selectors.EVENT_READ)
            deadline = time.monotonic() + DEADLINE_S
            while not any(first_line in line for line in lines):
                assert selector.select(timeout=deadline - time.monotonic()), f"no {first_line!r} in time: {lines}"
                line = job.stderr.readline()
                assert line, f"ended before {first_line!r}: {lines}"
                lines.append(line.rstrip("\n"))
        job.send_signal(signal.SIGINT)
        rest = job.communicate(timeout=DEADLINE_S)[1]
        return job.returncode, lines + rest.splitlines()
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()


def test_ctrl_c_during_the_main_job(workspace):
    tmp_path, out, env = workspace
    # The first GEMM peak measurement takes seconds and says so first: the signal lands inside the job.
    status, lines = interrupt_after(["bench", *TINY, "--out", str(out)], env, "measuring the GEMM peak")
    assert status == 130, lines
    assert lines[-1] == "python -m bench: interrupted; earlier results are left as they were"
    assert not any("Traceback" in line for line in lines)
    assert_untouched(tmp_path, out)


def test_ctrl_c_during_the_dynamics_study(workspace):
    tmp_path, out, env = workspace
    status, lines = interrupt_after(["bench.studies.dynamics", "--presets", "seed", "--out", str(out)], env, "[1/")
    assert status == 130, lines
    assert lines[-1] == "python -m bench.studies.dynamics: interrupted; earlier results are left as they were"
    assert not any("Traceback" in line for line in lines)
    assert_untouched(tmp_path, out)


def test_the_help_lists_implementations_the_gate_and_defaults():
    done = run_job(["bench", "--help"], dict(os.environ))
    assert done.returncode == 0
    listed = done.stdout.split("implementations (registry order):\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.startswith("  ")] == impls.names()
    assert "python -m bench compare BASE [HEAD]" in done.stdout
    assert "(default: seed tutorial medium)" in done.stdout and "(default: sgd)" in done.stdout
    out_help = done.stdout.split("\n  --out DIR", 1)[1].split("\n\n", 1)[0]
    assert "results.json" in " ".join(out_help.split())
