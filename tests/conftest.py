"""Shared fixtures: which implementations can run here, new registry entries, and a machine with scripted timings."""

import pytest

import impls

AVAILABLE = impls.available()

TWIN = "numpy:twin"  # a second, correct implementation, as a new backend would register itself
GHOST = "ghost:cpu"  # registered, but unavailable here
WRONG = "numpy:wrong"  # registered, available, and wrong: the checker must stop it before timing
PEAKS = {"float32": 200.0, "float64": 100.0}  # quiet_machine's GEMM peaks, GFLOP/s: one per dtype


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


@pytest.fixture
def fake_timing(monkeypatch, quiet_machine):
    """measure() returns fixed samples (numpy 100 us, the twin 50 us, with one noisy config); records its calls."""
    from bench.ddp import scaling as ddp
    from bench.harness import timing

    calls = []

    def measure(call, **kwargs):
        step = call.step  # prepare.synced's call knows its step
        calls.append(step.name)
        base = 50e-6 if step.name == TWIN else 100e-6
        spread = 0.5 if step.problem.dtype == "float64" else 0.01  # float64 reads as noisy
        return timing.Timing([base * (1 - spread)] * 2 + [base] + [base * (1 + spread)] * 2, 1)

    def alternate(first, second, **kwargs):
        """The step of `first` against numpy's: W ranks take 100/W us (the twin's 50), numpy 100 us."""
        step = first.step
        calls.append(step.name)
        base = 100e-6 / getattr(step, "world_size", 1) if step.name != TWIN else 50e-6
        return [(base, 100e-6)] * 5

    monkeypatch.setattr(timing, "measure", measure)
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
