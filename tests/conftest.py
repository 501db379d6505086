"""Shared fixtures: which implementations can run here, new registry entries, and a machine with scripted timings."""

import atexit
import os
import shutil
import tempfile

import pytest

# Numba's on-disk cache is not safe for two processes writing one folder at once: two pytest-xdist workers
# (make test) compiling the same kernels into impls/__pycache__ left entries that crashed the processes
# loading them (SIGSEGV in 4 tests of a fresh clone's make test; 2 of 119 numba tests, one run in two,
# with the cache emptied first; none in one process). Each worker, and every process its tests start,
# caches in a folder of its own. The first keeps numba's (NUMBA_CACHE_DIR, else beside the modules), which
# make test's smoke run then finds filled (it compiled every kernel again, 55 s, when all were temporary);
# the others use a subfolder of NUMBA_CACHE_DIR where that is set, else a temporary one.
# Set before `import impls` below: numba reads it when it is imported.
if (worker := os.environ.get("PYTEST_XDIST_WORKER")) and worker != "gw0":
    if os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.environ["NUMBA_CACHE_DIR"], worker)
    else:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"stepbench-numba-{worker}-")
        atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)

import impls  # noqa: E402

AVAILABLE = impls.available()

TWIN = "numpy:twin"  # a second, correct implementation, as a new backend would register itself
GHOST = "ghost:cpu"  # registered, but unavailable here
WRONG = "numpy:wrong"  # registered, available, and wrong: the checker must stop it before timing
PEAKS = {"float32": 200.0, "float64": 100.0}  # quiet_machine's GEMM peaks, GFLOP/s: one per dtype
SHORT = ("--rounds", "2")  # the main job in tests: two rounds give an interval; the scripted times need no more


def short_settings():
    from bench.job import measure

    return measure.Settings(rounds=2, passes=3)


def own_pytest_env() -> dict[str, str]:
    """The environment for a pytest session a test starts: this one's, less the variables by which a
    pytest-xdist worker (make test's) knows it is one; inherited, they make pytest-benchmark take its
    session for a worker and disable itself, so that it saves and compares nothing."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_XDIST_")}


def as_from_a_terminal() -> None:
    """preexec_fn of a job a test interrupts: SIGINT handled by default, as in a job started from a terminal.

    A shell without job control starts its background commands with SIGINT ignored (`cmd &` in a
    script), and every process below inherits that: Python then installs no handler and Ctrl-C
    would pass unseen, whatever the job does with it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def require(name: str) -> None:
    """Skip, naming the reason from impls.available(), where `name` cannot run here."""
    reason = AVAILABLE[name]
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(scope="session", autouse=True)
def data_parallel_workers_shared():
    """The data-parallel steps of a test run share their worker processes (impls.torch_ddp.shared_ranks):
    each would otherwise start its own, and a worker takes seconds to import torch."""
    if AVAILABLE["torch:cpu:ddp"] is not None:
        yield
        return
    from impls import torch_ddp

    with torch_ddp.shared_ranks():
        yield


@pytest.fixture
def new_entries(monkeypatch):
    """Three registry entries beside the built-ins: a correct twin of numpy, one unavailable here, one wrong."""
    from impls import registry

    monkeypatch.setitem(registry._REGISTRY, TWIN, registry.Entry("numpy_ref", "NumpyStep"))
    monkeypatch.setitem(
        registry._REGISTRY, GHOST, registry.Entry("numpy_ref", "NumpyStep", requires=("no_such_package_for_stepbench",))
    )
    monkeypatch.setitem(registry._REGISTRY, WRONG, registry.Entry("negative_controls", "W2NotTransposed"))


@pytest.fixture
def quiet_machine(monkeypatch, tmp_path_factory):
    """GEMM peaks cached at PEAKS (float32 twice float64, as on a CPU) and confirmed by their recheck,
    an idle load average, a private cache."""
    from bench.harness import load, peak

    monkeypatch.setenv("STEPBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setattr(peak, "gemm_peak_gflops", lambda dtype, device="cpu": PEAKS[dtype])
    monkeypatch.setattr(peak, "cached_gflops", lambda dtype, device="cpu": PEAKS[dtype])
    monkeypatch.setattr(peak, "quick_gflops", lambda dtype, device="cpu": PEAKS[dtype])
    monkeypatch.setattr(
        peak, "measure_and_cache", lambda dtype, device="cpu", at_least=0.0: max(at_least, PEAKS[dtype])
    )
    monkeypatch.setattr(load, "load_average", lambda: 0.0)
    monkeypatch.setattr(load, "probe", lambda window_s=1.0: (0.0, {}))  # no other work, and no second spent looking

    class NoOtherWork:
        def cores_busy(self):
            return 0.0

    monkeypatch.setattr(load, "OtherWork", NoOtherWork)


class ScriptedTimesWorker:
    """The main job's worker (bench.job.measure.ProcessWorker) in this process: steps created and checked for
    real (bench.gate.worker.Worker, so a wrong implementation is still stopped), block times from a script.

    Seconds per call: numpy 100 us, the twin 50 us, a GEMM block at PEAKS of its dtype; float64 blocks
    read as noisy (a problem's groups are in turn 1x, 1.5x and 0.5x as slow as a whole, alike for all
    their blocks, so each group's ratios are exact and each round's medians the same). `calls` logs the implementations timed, one entry per cell and round.
    """

    def __init__(self, calls: list):
        self.calls = calls

    def __call__(self, seed, threads, cpus):
        import impls as registry
        from bench.gate import worker

        scripted, calls = self, self.calls

        class Worker(worker.Worker):
            def __init__(self):
                super().__init__(registry, seed)
                self.groups, self.timed, self.group_index = {}, set(), 0

            def group(self, blocks, settle_s=0.0):
                # Groups are counted per problem, so that every round gives each problem the same factors.
                problem = next(i.split("|", 1)[1] for i, _, _ in blocks if not i.startswith(worker.GEMM))
                self.groups[problem] = self.group_index = self.groups.get(problem, 0) + 1
                return [self.time(cell_id, number, warm) for cell_id, number, warm in blocks]

            def time(self, cell_id, number, warm=True):
                if cell_id not in self.timed:
                    self.timed.add(cell_id)
                    calls.append(cell_id.split("|")[0])
                return scripted.per_call(self.steps[cell_id], self.group_index)

            def environment(self):
                return {}

        return Worker()

    @staticmethod
    def per_call(step, group: int) -> float:
        from bench.gate import worker

        if isinstance(step, worker.Product):
            dtype = str(step.a.dtype)
            seconds = step.flops / (PEAKS[dtype] * 1e9)
        else:
            dtype = step.problem.dtype
            seconds = 50e-6 if step.name == TWIN else 100e-6
        spread = 0.5 if dtype == "float64" else 0.01
        return seconds * (1 + spread * (group % 3 - 1))


@pytest.fixture
def fake_timing(monkeypatch, quiet_machine):
    """The main job's blocks and the ratio tracks' alternation read scripted times (ScriptedTimesWorker: numpy
    100 us, the twin 50 us, one noisy dtype); returns the names timed."""
    from bench.ddp import scaling as ddp
    from bench.gate import worker
    from bench.harness import timing
    from bench.job import measure

    calls = []

    def alternate(first, second, **kwargs):
        """The step of `first` against numpy's: W ranks take 100/W us (the twin's 50), numpy 100 us."""
        step = first.step
        calls.append(step.name)
        base = 100e-6 / getattr(step, "world_size", 1) if step.name != TWIN else 50e-6
        return [(base, 100e-6)] * 5

    monkeypatch.setattr(measure, "ProcessWorker", ScriptedTimesWorker(calls))
    monkeypatch.setattr(worker, "WARM_UP_S", 0.0)  # three calls: the scripted times need no warm caches
    monkeypatch.setattr(timing, "alternate", alternate)
    monkeypatch.setattr(ddp, "collective_shares", lambda step: {"all_reduce": 0.25, "control": 0.05})
    return calls


# A clock that only the test moves: timing code (the ratio tracks' alternation) run on it reads no real time.
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def call(self, seconds, log=None, label=None):
        def advance():
            self.now += seconds
            if log is not None:
                log.append(label)

        return advance


@pytest.fixture
def clock(monkeypatch):
    from bench.harness import timing as harness_timing

    fake = FakeClock()
    monkeypatch.setattr(harness_timing.time, "perf_counter", fake)
    monkeypatch.setattr(harness_timing.time, "sleep", lambda seconds: setattr(fake, "now", fake.now + seconds))
    return fake


@pytest.fixture
def chromium():
    """Skip where there is no Chromium, unless the run requires the browser test (CI sets this)."""
    from bench.asvtools import browser

    if browser.chromium() is None:
        if os.environ.get("STEPBENCH_BROWSER_TEST") == "required":
            pytest.fail("STEPBENCH_BROWSER_TEST=required, and no Chromium is installed")
        pytest.skip("no Chromium here (Debian's package chromium)")
