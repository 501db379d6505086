"""The ranks of the data-parallel step (impls.torch_ddp): the process group, each rank's share of a
step, the workers' loop, and how the workers start and end.

Rank 0 is the Step object, in the calling process. It starts ranks 1..W-1 as worker processes
(`python -m impls.torch_ddp_ranks`), which meet it through a TCPStore on 127.0.0.1 (a port the
system picks, or STEPBENCH_DDP_PORT) and then follow it in lockstep: each call on the step (step,
run, loss_and_grads, weights, and the end) reaches them as a small broadcast control message,
and the rest happens in collectives. Under torchrun (bench.ddp) the ranks are torchrun's instead.

A worker that dies ends the next collective with an error; one that hangs, after
STEPBENCH_DDP_TIMEOUT seconds (default 60). Either way the step raises RanksFailed naming the
rank, ends every worker and refuses later calls. Workers end with the step: when it is closed
or collected, at the caller's exit (an exception or Ctrl-C included) and, when the caller is
killed, as their connection to it closes or (Linux) by a parent-death signal.

Inside `shared_ranks()` steps with the same device and rank count share one set of workers,
each step its own state there: starting W-1 processes that import torch takes seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import time

import torch
import torch.distributed as dist

from . import threads
from .problem import Arrays, Problem
from .torch_step import TorchStep, _full_precision_float32_matmul

PORT_ENV = "STEPBENCH_DDP_PORT"  # the TCPStore's port; unset or empty: one the system picks
TIMEOUT_ENV = "STEPBENCH_DDP_TIMEOUT"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 60.0
# Workers wait for rank 0's next message for as long as the caller keeps the step: between two
# benchmarks that can be minutes. Their own connection to rank 0 breaks if it goes away.
IDLE_TIMEOUT = datetime.timedelta(days=7)
START_POLL_S = 0.05
START_S = 30.0  # beyond the timeout, for a worker to import torch on a busy machine
PARENT_GONE_S = 1.0
STOP_GRACE_S = 5.0  # a worker told to stop gets this long before it is killed

# Control messages: int64 [command, step id, argument], broadcast from rank 0.
NEW, STEP, GRADS, WEIGHTS, FREE, SHUTDOWN = range(6)
CONTROL_LEN = 3


class RanksFailed(RuntimeError):
    """A rank died, hung past the timeout or lost lockstep; the step's workers are ended."""


def env_timeout_s() -> float:
    """STEPBENCH_DDP_TIMEOUT in seconds, else DEFAULT_TIMEOUT_S."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def row_ranges(n: int, ranks: int) -> list[tuple[int, int]]:
    """[start, stop) of each rank's rows: the first n % ranks ranks hold one row more; a rank may hold none."""
    base, extra = divmod(n, ranks)
    bounds = [0]
    for r in range(ranks):
        bounds.append(bounds[-1] + base + (r < extra))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


@dataclasses.dataclass
class World:
    """One rank's view of the process group: where it runs and its two groups.

    `control` (gloo, CPU tensors) carries rank 0's messages and waits as long as the workers
    idle; `compute` (gloo, or NCCL on CUDA) carries data and gradients with the short timeout
    that turns a dead or hung rank into an error.
    """

    rank: int
    size: int
    device: torch.device
    control: object
    compute: object
    timeout_s: float

    @classmethod
    def join(cls, store, rank: int, size: int, device: str, seconds: float, one_host: bool = True) -> World:
        """Both groups over `store` (our TCPStore, or torchrun's); every rank calls this at once.

        On one host gloo talks over 127.0.0.1; across hosts (torchrun) over the interface it
        finds for this host's name, and a CUDA rank takes its GPU from LOCAL_RANK.
        """
        gloo = dist.ProcessGroupGloo

        def gloo_group(prefix: str, timeout: datetime.timedelta):
            options = gloo._Options()
            options._devices = [gloo.create_device(hostname="127.0.0.1") if one_host else gloo.create_default_device()]
            options._timeout = timeout
            return gloo(dist.PrefixStore(prefix, store), rank, size, options)

        control = gloo_group("control", IDLE_TIMEOUT)
        timeout = datetime.timedelta(seconds=seconds)
        if device == "cuda":
            where = torch.device("cuda", rank if one_host else int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(where)
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            compute = dist.ProcessGroupNCCL(dist.PrefixStore("compute", store), rank, size, options)
        else:
            where = torch.device("cpu")
            compute = gloo_group("compute", timeout)
        return cls(rank, size, where, control, compute, seconds)

    def message(self, command: int = 0, step_id: int = 0, argument: int = 0) -> tuple[int, int, int]:
        """Rank 0 sends (command, step id, argument); every other rank receives it.

        Only the receivers wait without limit: gloo sends once the receiver is ready for the
        data, so rank 0 would wait as long for a worker that hangs before its next message.
        """
        t = torch.tensor([command, step_id, argument], dtype=torch.int64)  # CONTROL_LEN
        options = dist.BroadcastOptions()
        if self.rank == 0:
            options.timeout = datetime.timedelta(seconds=self.timeout_s)
        self.control.broadcast([t], options).wait()
        return tuple(int(v) for v in t)

    def broadcast(self, t: torch.Tensor) -> None:
        self.compute.broadcast([t], dist.BroadcastOptions()).wait()

    def all_reduce(self, t: torch.Tensor) -> None:
        self.compute.allreduce([t]).wait()  # sum

    def send(self, t: torch.Tensor, rank: int):
        return self.compute.send([t], rank, 0)

    def recv(self, t: torch.Tensor) -> None:
        self.compute.recv([t], 0, 0).wait()


class Replica:
    """One rank's part of one step: a TorchStep on its rows, and the step's collectives."""

    def __init__(self, world: World, problem: Problem, arrays: Arrays):
        self.world = world
        self.local = TorchStep(problem, arrays, device=world.device.type)
        if world.device.type == "cuda":  # TorchStep put its tensors on the current device: this rank's
            assert self.local.w1.device == world.device

    def forward_backward_reduce(self) -> None:
        """The full batch's loss and gradients, on every rank."""
        self.local._forward_backward()
        self.world.all_reduce(self.local.reduced)  # D*H + H*O + 1   gw1, gw2, loss summed over ranks

    def step(self) -> torch.Tensor:
        self.forward_backward_reduce()
        self.local._update()  # identical on every rank: same summed gradients, same state
        return self.local.loss

    def weights_match(self) -> None:
        """Every rank compares its weights with rank 0's, bit for bit; RanksFailed on rank 0 if any differs."""
        mine = torch.cat([self.local.w1.reshape(-1), self.local.w2.reshape(-1)])  # D*H + H*O
        theirs = mine.clone()
        self.world.broadcast(theirs)
        differ = torch.tensor([0 if torch.equal(mine, theirs) else 1], device=mine.device)  # 1   workers that differ
        self.world.all_reduce(differ)
        if self.world.rank == 0 and int(differ) != 0:
            raise RanksFailed(f"{int(differ)} of {self.world.size - 1} workers hold other weights than rank 0")


def send_problem(world: World, step_id: int, problem: Problem, arrays: Arrays) -> Replica:
    """Rank 0: NEW, then the problem, both weights to all and each worker its rows."""
    blob = pickle.dumps(problem)
    world.message(NEW, step_id, len(blob))
    world.broadcast(torch.frombuffer(bytearray(blob), dtype=torch.uint8))  # len(blob)
    ranges = row_ranges(problem.n, world.size)
    tensors = {k: torch.tensor(v) for k, v in arrays._asdict().items()}  # the inputs are read-only NumPy
    for name in ("w1", "w2"):
        world.broadcast(tensors[name].to(world.device))
    pending = []
    for rank, (start, stop) in enumerate(ranges[1:], 1):
        if start == stop:  # fewer rows than ranks: this one holds none
            continue
        for name in ("x", "y"):
            pending.append(world.send(tensors[name][start:stop].contiguous().to(world.device), rank))
    for work in pending:
        work.wait()
    start, stop = ranges[0]
    return Replica(world, problem, Arrays(arrays.x[start:stop], arrays.y[start:stop], arrays.w1, arrays.w2))


def _receive_problem(world: World, length: int) -> Replica:
    """A worker's side of send_problem."""
    blob = torch.empty(length, dtype=torch.uint8)  # len(blob)
    world.broadcast(blob)
    problem = pickle.loads(blob.numpy().tobytes())
    _, d, h, o = problem.shape
    dtype = getattr(torch, problem.dtype)
    w1 = torch.empty(d, h, dtype=dtype, device=world.device)  # D,H
    w2 = torch.empty(h, o, dtype=dtype, device=world.device)  # H,O
    world.broadcast(w1)
    world.broadcast(w2)
    start, stop = row_ranges(problem.n, world.size)[world.rank]
    x = torch.empty(stop - start, d, dtype=dtype, device=world.device)  # rows,D
    y = torch.empty(stop - start, o, dtype=dtype, device=world.device)  # rows,O
    if stop > start:
        world.recv(x)
        world.recv(y)
    host = [t.cpu().numpy() for t in (x, y, w1, w2)]
    return Replica(world, problem, Arrays(*host))


def serve(world: World) -> None:
    """A worker's life: follow rank 0's messages until SHUTDOWN."""
    replicas: dict[int, Replica] = {}
    while True:
        command, step_id, argument = world.message()
        if command == NEW:
            replicas[step_id] = _receive_problem(world, argument)
        elif command == STEP:
            for _ in range(argument):
                replicas[step_id].step()
        elif command == GRADS:
            replicas[step_id].forward_backward_reduce()
        elif command == WEIGHTS:
            replicas[step_id].weights_match()
        elif command == FREE:
            replicas.pop(step_id, None)
        elif command == SHUTDOWN:
            return
        else:
            raise RuntimeError(f"unknown control message {command}")


class Ranks:
    """Rank 0's side of a world: the workers it started, their process group, and their end."""

    def __init__(self, device: str, size: int, seconds: float, port: int = 0):
        self.device_name, self.size, self.timeout_s = device, size, seconds
        self.workers: list[subprocess.Popen] = []
        self.failed: str | None = None  # why the world cannot be used any more
        self.busy = False  # inside an exchange: the workers may be mid-collective
        self.next_id = 0
        self.world: World | None = None
        try:
            self._start(port)
        except BaseException:
            self.close()
            raise

    def _start(self, port: int) -> None:
        timeout = datetime.timedelta(seconds=self.timeout_s)
        try:
            self.store = dist.TCPStore(
                "127.0.0.1", port, self.size, is_master=True, wait_for_workers=False, timeout=timeout
            )
        except (RuntimeError, OSError) as error:
            if port:
                raise RuntimeError(
                    f"cannot listen on 127.0.0.1:{port} ({PORT_ENV}): {_first_line(error)}; "
                    f"is the port taken? Unset {PORT_ENV} to let the system pick a free one"
                ) from None
            raise
        one = "1"  # one thread per rank: the budget is spent as W ranks
        env = {
            **os.environ,
            threads.ENV: one,
            "OMP_NUM_THREADS": one,
            "MKL_NUM_THREADS": one,
            "OPENBLAS_NUM_THREADS": one,
        }
        # The workers import the same `impls` as this process, wherever that comes from.
        package_root = str(pathlib.Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        for rank in range(1, self.size):
            command = [sys.executable, "-m", __name__, str(rank), str(self.size), str(self.store.port)]
            command += [self.device_name, repr(self.timeout_s), str(os.getpid())]
            # A process group of their own: a terminal's Ctrl-C reaches rank 0 alone, which ends them in
            # order, rather than interrupting each wherever it is (importing torch, mid-collective).
            self.workers.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True))
        # Each worker checks in once torch is imported: a worker that cannot start fails here at
        # once, instead of rank 0 waiting out the timeout inside the process group's set-up.
        allowed = self.timeout_s + START_S
        deadline = time.monotonic() + allowed
        waiting = [f"ready/{rank}" for rank in range(1, self.size)]
        while waiting and not self.store.check(waiting):
            self._raise_if_dead("while starting")
            if time.monotonic() > deadline:
                raise RanksFailed(f"the workers did not start within {allowed:g} s")
            time.sleep(START_POLL_S)
        try:
            self.world = World.join(self.store, 0, self.size, self.device_name, self.timeout_s)
        except RuntimeError as error:
            self._fail(error, "while joining the process group")

    def exchange(self):
        """Context of one call's messages and collectives; a failure inside ends the world."""
        return _Exchange(self)

    def _raise_if_dead(self, when: str) -> None:
        dead = [(rank, w) for rank, w in enumerate(self.workers, 1) if w.poll() is not None]
        if dead:
            text = ", ".join(f"rank {rank} (pid {w.pid}) {_exit_text(w.returncode)}" for rank, w in dead)
            raise RanksFailed(f"{text} {when}")

    def _fail(self, error: BaseException, when: str) -> None:
        """Turn a collective's error into RanksFailed naming the dead or silent ranks."""
        time.sleep(0.2)  # a worker killed just now may not have been reaped yet
        dead = [(rank, w) for rank, w in enumerate(self.workers, 1) if w.poll() is not None]
        if dead:
            what = ", ".join(f"rank {rank} (pid {w.pid}) {_exit_text(w.returncode)}" for rank, w in dead)
        else:
            alive = ", ".join(f"rank {rank} (pid {w.pid})" for rank, w in enumerate(self.workers, 1))
            what = f"no answer within {self.timeout_s:g} s ({TIMEOUT_ENV}) from {alive}, still running"
        self.failed = f"{what} {when}; the workers were stopped"
        self.close()
        raise RanksFailed(f"{self.failed} [{_first_line(error)}]") from None

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def close(self) -> None:
        """End every worker: SHUTDOWN when they are waiting for a message, else (or if they linger) kill them."""
        if self.workers and self.world is not None and not self.busy and self.failed is None:
            try:
                self.world.message(SHUTDOWN)
            except RuntimeError:
                pass
        deadline = time.monotonic() + (STOP_GRACE_S if not self.busy and self.failed is None else 0)
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.wait(timeout=max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            if w.poll() is None:
                w.kill()
            w.wait()
        if self.failed is None:
            self.failed = "the step was closed"
        self.world = None


class _Exchange:
    def __init__(self, ranks: Ranks):
        self.ranks = ranks

    def __enter__(self):
        if self.ranks.failed is not None:
            raise RanksFailed(f"this step's ranks are gone: {self.ranks.failed}")
        self.ranks.busy = True
        return self.ranks.world

    def __exit__(self, kind, error, traceback):
        if kind is None:
            self.ranks.busy = False
            return False
        if isinstance(error, RanksFailed):
            self.ranks.failed = self.ranks.failed or str(error)
            self.ranks.close()
            return False
        if isinstance(error, RuntimeError) and self.ranks.workers:  # gloo's or NCCL's error
            self.ranks._fail(error, "during a step")
        self.ranks.close()  # Ctrl-C or any other error mid-exchange: the workers may be mid-collective
        return False


def _first_line(error: BaseException) -> str:
    """An error's first line, without the C++ source location gloo puts in front."""
    lines = str(error).strip().splitlines()
    return re.sub(r"^\[[^\]]*\] ", "", lines[0]) if lines else type(error).__name__


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


_shared: dict[tuple[str, int, float], Ranks] | None = None


@contextlib.contextmanager
def shared_ranks():
    """Steps created inside share their workers, one set per (device, W, timeout); all end on leaving."""
    global _shared
    outer, _shared = _shared, {}
    try:
        yield
    finally:
        kept, _shared = _shared, outer
        for ranks in kept.values():
            ranks.close()


def ranks_for(device: str, size: int, seconds: float, own: bool) -> tuple[Ranks, bool]:
    """(ranks, owned): a shared set inside shared_ranks() unless `own`, else a new one the step owns."""
    port = _port()
    if _shared is None or own:
        return Ranks(device, size, seconds, port), True
    key = (device, size, seconds)
    if key not in _shared or _shared[key].failed is not None:
        _shared[key] = Ranks(device, size, seconds, port)
    return _shared[key], False


def _port() -> int:
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{PORT_ENV} must be a TCP port (1-65535), got {value!r}")
    return int(value)


class ExternalRanks:
    """A world whose processes someone else started (torchrun): nothing to start or end here."""

    workers: list = []

    def __init__(self, world: World):
        self.world, self.size, self.timeout_s = world, world.size, world.timeout_s
        self.failed = None
        self.busy = False
        self.next_id = 0

    new_id = Ranks.new_id
    exchange = Ranks.exchange

    def _fail(self, error, when):
        self.failed = f"{_first_line(error)} {when}"
        raise RanksFailed(self.failed) from None

    def close(self):
        self.failed = self.failed or "the step was closed"


def release(ranks: Ranks, owned: bool, step_id: int) -> None:
    """At a step's end: its workers end with it, or, when shared, drop its state."""
    if owned:
        ranks.close()
    elif ranks.failed is None and not ranks.busy:
        with contextlib.suppress(RuntimeError), ranks.exchange() as world:
            world.message(FREE, step_id)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this worker when the process that started it ends, however it ends."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the signal was armed
        os._exit(1)


def worker_main(argv: list[str]) -> int:
    rank, size, port, device, seconds, parent = argv
    rank, size, port, seconds, parent = int(rank), int(size), int(port), float(seconds), int(parent)
    _die_with_parent(parent)
    torch.set_num_threads(1)
    _full_precision_float32_matmul()
    store = dist.TCPStore("127.0.0.1", port, size, is_master=False, timeout=datetime.timedelta(seconds=seconds + 30))
    store.set(f"ready/{rank}", "1")
    world = World.join(store, rank, size, device, seconds)
    try:
        serve(world)
    except RuntimeError as error:  # rank 0 went away or a collective failed: rank 0 reports it
        # Not when rank 0 has ended (asv ends its processes without atexit): its sockets close before
        # it is gone, so give the parent-death signal time to arrive first.
        time.sleep(PARENT_GONE_S)
        if os.getppid() == parent:
            print(f"impls.torch_ddp_ranks rank {rank}: {_first_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
