"""The data-parallel step: how the rows are split, lockstep and its checks, failures and the end of every process.

The shared agreement tests run torch:cpu:ddp like every entry, on the test run's shared workers
(conftest). The failure tests here start workers of their own (own_ranks=True), with a short
timeout, and end every process they start, also when they fail.
"""

import contextlib
import gc
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import impls
from bench.harness import environment
from impls import agreement, threads

from .conftest import AVAILABLE, as_from_a_terminal, require

torch = pytest.importorskip("torch", reason="torch not installed")
torch_ddp = pytest.importorskip("impls.torch_ddp")
ddp_ranks = pytest.importorskip("impls.torch_ddp_ranks")

NAME = "torch:cpu:ddp"
TIMEOUT_S = 3.0  # the collectives' timeout in the failure tests
DEADLINE_S = 120  # for a job or a worker that should have ended long before


def alive(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has ended)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids, seconds: float = 10.0) -> list[int]:
    """The pids still running after up to `seconds`."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def workers_of(parent: int, descendants: bool = False) -> list[int]:
    """The data-parallel workers `parent` started, from /proc; with descendants=True, those any process
    below `parent` started (a job's worker process starts them: they are its grandchildren)."""
    parents, workers = {}, []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        pid = int(stat.parent.name)
        parents[pid] = ppid
        if b"impls.torch_ddp_ranks" in cmdline:
            workers.append(pid)

    def started_by_parent(pid: int) -> bool:
        up = parents.get(pid)
        while up is not None and up > 1:
            if up == parent:
                return True
            if not descendants:
                return False
            up = parents.get(up)
        return False

    return [pid for pid in workers if started_by_parent(pid)]


def kill_all(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def own_step():
    """make(problem, **options): a step with workers of its own; every worker is killed after the test."""
    require(NAME)
    made = []

    def make(problem=None, **options):
        step = impls.create(NAME, problem or impls.Problem.preset("seed"), own_ranks=True, **options)
        made.append(step.worker_pids())
        return step

    yield make
    for pids in made:
        kill_all(pids)


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 7, 64])
def test_rows_split_unevenly_cover_the_batch_once(n, ranks):
    ranges = ddp_ranks.row_ranges(n, ranks)
    assert len(ranges) == ranks and ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(
        stop == start for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False)
    )  # contiguous, no overlap
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize(("n", "ranks"), [(7, 2), (5, 3), (2, 3)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_uneven_splits_agree(n, ranks, optimizer):
    require(NAME)
    p = impls.Problem(n=n, d=13, h=5, o=3, optimizer=optimizer, lr=agreement.CHECK_LR[optimizer])
    step = impls.create(NAME, p, ranks=ranks)
    assert step.world_size == ranks
    assert step.replica.local.x.shape[0] == ddp_ranks.row_ranges(n, ranks)[0][1]  # rank 0 holds only its share
    agreement.assert_agrees(step)


def test_a_rank_that_drops_the_sum_is_caught(own_step, monkeypatch):
    # Rank 0 takes part in the all_reduce but keeps its own rows' gradients. The checker must see
    # the missing rows, and the weights check the ranks' weights part after one update.
    def local_only(replica):
        replica.local._forward_backward()
        replica.world.all_reduce(replica.local.reduced.clone())  # the workers get their sum; rank 0 ignores it

    step = own_step(agreement.check_problem("seed", "float64", "sgd"), ranks=2)
    monkeypatch.setattr(ddp_ranks.Replica, "forward_backward_reduce", local_only)
    report = agreement.check(step, steps=0)  # loss and gradients only: no update yet
    assert not report.ok
    assert {c.quantity for c in report.comparisons if not c.ok} >= {"loss", "gw1", "gw2"}
    step.step()
    with pytest.raises(torch_ddp.RanksFailed, match="^1 of 1 workers hold other weights than rank 0"):
        step.weights()


def test_workers_share_across_steps_and_end_with_the_context():
    require(NAME)
    with torch_ddp.shared_ranks():
        first = impls.create(NAME, agreement.check_problem("seed", "float32", "adam"), ranks=2)
        second = impls.create(NAME, agreement.check_problem("tutorial", "float64", "sgd"), ranks=2)
        pids = first.worker_pids()
        assert pids == second.worker_pids() and len(pids) == 1
        agreement.assert_agrees(first)  # the second step's arrival left the first's state as it was
        agreement.assert_agrees(second)
    assert wait_gone(pids) == []


def test_a_dead_worker_is_a_clear_error_at_once(own_step):
    step = own_step(ranks=2, timeout_s=TIMEOUT_S)
    (pid,) = step.worker_pids()
    os.kill(pid, signal.SIGKILL)
    assert wait_gone([pid]) == []
    start = time.monotonic()
    with pytest.raises(torch_ddp.RanksFailed, match=rf"^rank 1 \(pid {pid}\) was killed by SIGKILL during a step"):
        step.step()
    assert time.monotonic() - start < TIMEOUT_S  # the broken connection says so; no waiting out the timeout
    with pytest.raises(torch_ddp.RanksFailed, match="^this step's ranks are gone: rank 1"):
        step.loss_and_grads()


def test_a_hung_worker_is_a_clear_error_within_the_timeout(own_step):
    step = own_step(ranks=2, timeout_s=TIMEOUT_S)
    (pid,) = step.worker_pids()
    os.kill(pid, signal.SIGSTOP)  # alive, holding its connections, answering nothing
    # Should the timeout not work, this ends the worker later, so the test fails instead of hanging.
    watchdog = threading.Timer(10 * TIMEOUT_S, os.kill, (pid, signal.SIGKILL))
    watchdog.start()
    try:
        start = time.monotonic()
        with pytest.raises(torch_ddp.RanksFailed, match=rf"^no answer within 3 s \(\S+\) from rank 1 \(pid {pid}\)"):
            step.step()
        assert time.monotonic() - start < 3 * TIMEOUT_S
    finally:
        watchdog.cancel()
    assert wait_gone([pid]) == []  # the step ended the silent worker


def test_no_worker_outlives_the_step_in_this_process(own_step):
    step = own_step(ranks=2)
    step.run(2)
    pids = step.worker_pids()
    assert pids and all(alive(p) for p in pids)
    del step
    gc.collect()
    assert wait_gone(pids, seconds=ddp_ranks.STOP_GRACE_S + 5) == []
    closed = own_step(ranks=3)
    pids = closed.worker_pids()
    closed.close()
    assert wait_gone(pids, seconds=1) == []  # close() waits for them
    with pytest.raises(torch_ddp.RanksFailed, match="^this step's ranks are gone: the step was closed"):
        closed.step()


CALLER = """
import os, signal, sys
import impls
step = impls.create("torch:cpu:ddp", impls.Problem.preset("seed"), ranks=3)
print(*step.worker_pids(), flush=True)
step.run(3)
if sys.argv[1] == "exception":
    raise RuntimeError("the caller failed")
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "killed-workers-stopped":  # they cannot notice their connections close: only the signal ends them
    for pid in step.worker_pids():
        os.kill(pid, signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGKILL)
"""

ENDS = [("normal", 0), ("exception", 1), ("killed", -signal.SIGKILL)]
if sys.platform.startswith("linux"):  # the parent-death signal
    ENDS.append(("killed-workers-stopped", -signal.SIGKILL))


@pytest.mark.parametrize(("end", "status"), ENDS)
def test_no_worker_outlives_its_caller(end, status, tmp_path):
    require(NAME)
    out, err = tmp_path / "out", tmp_path / "err"
    # Files, not pipes: a worker left behind would hold a pipe open and the wait would see no end.
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", CALLER, end], stdout=stdout, stderr=stderr, timeout=DEADLINE_S, cwd=environment.REPO
        )
    pids = [int(p) for p in out.read_text().split()]
    try:
        assert done.returncode == status, err.read_text()
        assert len(pids) == 2
        assert wait_gone(pids) == []
        if end == "exception":
            assert err.read_text().rstrip().endswith("RuntimeError: the caller failed")
    finally:
        kill_all(pids)


def test_ctrl_c_of_the_main_job_ends_every_worker(tmp_path):
    """`make bench` interrupted from a terminal: SIGINT to the job's whole process group, workers included."""
    require(NAME)
    env = {**os.environ, "STEPBENCH_CACHE": str(tmp_path / "cache"), threads.ENV: "2"}
    # One round, then the data-parallel phase at each rank count: workers appear in the round when two threads
    # are free (ranks = threads), else only at W=2 after it. Sixteen rounds on a busy machine (one thread, no
    # workers) made the test wait a minute for its first worker.
    args = ["--implementations", NAME, "--presets", "seed", "--dtypes", "float32", "--no-sweep"]
    args += ["--rounds", "1", "--max-time", "0"]
    log = tmp_path / "stderr"
    with log.open("w") as stderr:  # a file: a worker left behind holding a pipe would block the wait
        job = subprocess.Popen(
            [sys.executable, "-m", "bench", *args, "--out", str(tmp_path / "out")],
            cwd=environment.REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
    seen: list[int] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not seen and job.poll() is None and time.monotonic() < deadline:
            seen = workers_of(job.pid, descendants=True)  # started by the round's worker process
            time.sleep(0.05)
        assert seen, f"no worker appeared (status {job.poll()})"
        time.sleep(1.0)  # into the set-up or the timing: either must end the workers
        os.killpg(job.pid, signal.SIGINT)
        job.wait(timeout=DEADLINE_S)
        err = log.read_text()
        assert job.returncode == 130, err
        assert err.splitlines()[-1] == "python -m bench: interrupted; earlier results are left as they were"
        assert "Traceback" not in err
        assert wait_gone(seen) == []
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        kill_all(seen)


def test_a_taken_port_is_reported(monkeypatch):
    require(NAME)
    before = set(workers_of(os.getpid()))  # the test run's shared workers
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(ddp_ranks.PORT_ENV, str(port))
        start = time.monotonic()
        with pytest.raises(
            RuntimeError, match=rf"^cannot listen on 127.0.0.1:{port} \({ddp_ranks.PORT_ENV}\): .*taken"
        ):
            impls.create(NAME, impls.Problem.preset("seed"), ranks=2, own_ranks=True)
        assert time.monotonic() - start < TIMEOUT_S
    assert set(workers_of(os.getpid())) == before  # refused before any worker started


def test_the_system_picks_a_free_port_by_default(own_step, monkeypatch):
    monkeypatch.delenv(ddp_ranks.PORT_ENV, raising=False)
    first, second = own_step(ranks=2), own_step(ranks=2)  # two worlds at once: two ports
    assert first.ranks.store.port != second.ranks.store.port
    assert first.run(1)[0] == second.run(1)[0]


def test_cuda_variant_needs_two_gpus(monkeypatch):
    monkeypatch.setattr(torch_ddp, "_device_reason", lambda device: None)
    monkeypatch.setattr(torch_ddp.dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert torch_ddp.unavailable_reason("cuda") == "needs at least 2 CUDA devices (one rank per GPU), found 1"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert torch_ddp.unavailable_reason("cuda") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_variant_says_why_it_cannot_run_here():
    assert AVAILABLE["torch:cuda:ddp"].startswith("CUDA not available")


def test_bad_settings_name_the_setting(monkeypatch):
    require(NAME)
    p = impls.Problem.preset("seed")
    with pytest.raises(ValueError, match="^ranks must be a positive integer, got 0"):
        impls.create(NAME, p, ranks=0)
    with pytest.raises(ValueError, match="^option 'device' is not one of torch:cpu:ddp's"):
        impls.create(NAME, p, device="cuda")
    monkeypatch.setenv(ddp_ranks.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=f"^{ddp_ranks.TIMEOUT_ENV} must be a positive number of seconds, got 'soon'"):
        impls.create(NAME, p)
    monkeypatch.delenv(ddp_ranks.TIMEOUT_ENV)
    monkeypatch.setenv(ddp_ranks.PORT_ENV, "http")
    with pytest.raises(ValueError, match=f"^{ddp_ranks.PORT_ENV} must be a TCP port"):
        impls.create(NAME, p)


def test_ranks_default_to_the_thread_budget_with_one_thread_each(monkeypatch):
    require(NAME)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 8)  # a budget of 3 that is neither 1 nor this machine's CPUs
    monkeypatch.setenv(threads.ENV, "3")
    step = impls.create(NAME, impls.Problem.preset("seed"))
    assert step.world_size == 3 and step.describe()["threads_per_rank"] == 1
    torch.set_num_threads(2)
    step.step()
    assert torch.get_num_threads() == 2  # rank 0 computed with one thread and gave the caller's setting back
    monkeypatch.delenv(threads.ENV)
    threads.apply()


def test_torchrun_on_one_node_two_processes(tmp_path):
    """bench.ddp.torchrun under torchrun, as a cluster user would start it: rank 0 writes every rank's environment."""
    require(NAME)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2"]
    command += [
        "-m",
        "bench.ddp.torchrun",
        "--presets",
        "seed",
        "--dtypes",
        "float32",
        "--budget",
        "0.05",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command,
        cwd=environment.REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "ddp-torchrun.json").read_text())
    assert [r["rank"] for r in data["ranks"]] == [0, 1]
    assert all(r["environment"]["versions"]["torch"] for r in data["ranks"])
    assert data["world_size"] == 2
    (result,) = data["results"]
    assert result["status"] == "ok" and result["agreement_worst_ratio"] <= 1 and result["median_s"] > 0
    # The console line carries what the record does: the time, its spread and the all-reduce's share.
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("torch:cpu:ddp W=2 seed float32 sgd:")]
    assert f"IQR {result['iqr_ratio']:.0%} of the median" in line
    assert f"all-reduce {result['all_reduce']:.0%} of the step" in line


def test_the_profilers_notices_are_dropped_and_other_native_output_kept(capfd):
    """torch's profiler writes a `USDT: ... profiler_start` line at each start and stop on native stderr:
    80 lines of a make bench run. Those go; anything else written meanwhile still reaches the user."""
    from bench.ddp import scaling

    with scaling.without_profiler_notices():
        os.write(2, b"USDT:2026-01-01 1:1 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"
    require(NAME)
    step = impls.create(NAME, impls.Problem.preset("seed"), ranks=2)
    try:
        shares = scaling.collective_shares(step, steps=2)
    finally:
        step.close()
    assert shares["all_reduce"] > 0 and "USDT" not in capfd.readouterr().err
