"""The asv tracks that survive drift, and their direction: what they compute, on a fake clock.

Nothing here is timed against the real clock: time.perf_counter is replaced by a clock that
each fake call advances by a fixed amount, so the expected values are exact.
"""

import inspect
import itertools
import json
import os
import subprocess
import sys

import pytest

import impls
from bench.benchmarks import training_step
from bench.harness import environment, peak, timing

REPO = environment.REPO


def test_alternated_blocks_give_per_call_times_and_their_ratio(clock):
    log = []
    samples = timing.alternate(clock.call(2e-3, log, "a"), clock.call(1e-3, log, "b"), pairs=20, block_s=0.01)
    assert len(samples) == 20
    assert samples == [pytest.approx((2e-3, 1e-3))] * 20  # per call, not per block of 5 or 10 calls
    assert timing.median_ratio(samples) == pytest.approx(2.0)
    # The blocks alternate, in both orders: after calibration, runs of one side are never longer than two blocks.
    timed = log[-(20 * (5 + 10)) :]
    blocks = [label for label, _ in itertools.groupby(timed)]
    assert set(blocks) == {"a", "b"} and len(blocks) > 20


def test_each_block_waits_for_the_other_sides_spinning_threads_to_sleep(clock, monkeypatch):
    events = []
    monkeypatch.setattr(timing.time, "sleep", lambda seconds: events.append(f"sleep {seconds}"))
    timing.alternate(clock.call(1e-3, events, "a"), clock.call(1e-3, events, "b"), pairs=3, block_s=0.005, settle_s=0.1)
    timed = events[events.index("sleep 0.1") :]  # after calibration
    runs = [label for label, _ in itertools.groupby(timed)]
    assert len(runs) == 12
    assert runs[0::2] == ["sleep 0.1"] * 6  # a pause before every block ...
    assert sorted(runs[1::2]) == ["a"] * 3 + ["b"] * 3  # ... and the blocks, one of each side per pair


def test_a_drift_between_pairs_cancels_in_the_ratio(clock):
    # The machine slows down 3x half-way: both sides of each pair are slowed alike.
    speed = {"factor": 1.0}
    pairs_done = {"n": 0}

    def side(seconds):
        def call():
            clock.now += seconds * speed["factor"]

        return call

    first, second = side(3e-3), side(1e-3)
    samples = []
    for _ in range(10):
        samples += timing.alternate(first, second, pairs=1, block_s=0.01, seed=pairs_done["n"])
        pairs_done["n"] += 1
        if pairs_done["n"] == 5:
            speed["factor"] = 3.0
    assert [a for a, _ in samples] != [samples[0][0]] * 10  # the times moved ...
    assert timing.median_ratio(samples) == pytest.approx(3.0)  # ... the ratio did not


def test_the_product_call_knows_its_flops():
    call = peak.product("float64", "cpu", n=8)
    call()
    assert call.flops == 2 * 8**3


def _tracks():
    return [
        (cls, name)
        for cls in (training_step.Presets, training_step.BatchSweep, training_step.GemmPeak)
        for name, _ in inspect.getmembers(cls, inspect.isfunction)
        if name.startswith("track_")
    ]


def test_no_tracked_value_rises_when_the_step_gets_faster():
    # asv lists any rise as a regression: a rate would list every speed-up among them.
    tracks = _tracks()
    assert {name for _, name in tracks} == {"track_ms_per_gflop", "track_time_vs_numpy", "track_time_over_gemm"}
    for cls, name in tracks:
        assert "lower is faster" in getattr(cls, name).unit, (cls.__name__, name)


def test_time_over_gemm_is_the_reciprocal_of_the_fraction_of_the_rate_measured_alongside(monkeypatch):
    problem = impls.Problem.preset("seed", dtype="float64")
    benchmark = training_step.Presets()
    benchmark.prepared = type("Prepared", (), {"step": impls.create("numpy", problem)})()
    benchmark.one_step = lambda: None
    product = peak.product("float64", "cpu", n=16)
    monkeypatch.setattr(peak, "product", lambda dtype, device: product)
    # Pairs of (step seconds, product seconds): the product's rate is flops/g, the step's flops take flops/rate.
    samples = [(4e-3, 1e-3), (5e-3, 1e-3), (6e-3, 2e-3)]
    monkeypatch.setattr(timing, "alternate", lambda first, second, **settings: list(samples))
    expected = sorted(s * product.flops / (impls.flops(problem) * g) for s, g in samples)[1]
    assert benchmark.track_time_over_gemm("run") == pytest.approx(expected)


def test_ms_per_gflop_is_the_reciprocal_of_the_rate(monkeypatch):
    problem = impls.Problem.preset("seed", dtype="float64")
    benchmark = training_step.Presets()
    benchmark.prepared = type("Prepared", (), {"step": impls.create("numpy", problem)})()
    benchmark.one_step = lambda: None
    monkeypatch.setattr(timing, "measure", lambda call, **kw: timing.Timing([2e-3] * 3, 1))
    gflops = impls.flops(problem) / 2e-3 / 1e9
    assert benchmark.track_ms_per_gflop("run") == pytest.approx(1e3 / gflops)


def test_time_vs_numpy_is_the_step_over_numpy_on_the_same_problem(clock, monkeypatch):
    problem = impls.Problem.preset("tutorial", dtype="float32", optimizer="adam")
    asked = []

    class NumpyStep:  # what _prepare hands back for the reference: a step of 4 ms
        step = staticmethod(clock.call(4e-3))

        @staticmethod
        def sync():
            pass

    def prepare(run, name, problem_, preset=None, role="timed"):
        asked.append((run, name, problem_, preset, role))
        return type("Prepared", (), {"step": NumpyStep})()

    monkeypatch.setattr(training_step, "_prepare", prepare)
    monkeypatch.setattr(training_step, "_parameter_set", ("run-1", problem, "tutorial"))
    benchmark = training_step.Presets()
    benchmark.one_step = clock.call(1e-3)  # the timed implementation: 4x faster than numpy
    assert benchmark.track_time_vs_numpy("run-1") == pytest.approx(0.25)
    assert asked == [("run-1", "numpy", problem, "tutorial", "reference")]


def test_the_spread_between_runs_is_max_over_min_per_parameter_set_measured_in_all():
    from bench.asvtools import spread as asv_spread

    first = {("t", ("numpy",)): 1.0, ("t", ("numba",)): 2.0}
    second = {("t", ("numpy",)): 1.5, ("t", ("numba",)): 2.0, ("u", ()): 1.0}  # u: in one run only
    assert asv_spread.spreads([first, second]) == {"t": [pytest.approx(0.0), pytest.approx(0.5)]}


def test_the_ratios_are_measured_on_one_thread_per_library_and_the_budget_comes_back(monkeypatch):
    from threadpoolctl import threadpool_info

    from impls import threads

    seen = []
    monkeypatch.setattr(timing, "alternate", lambda first, second, **settings: seen.append(_blas_threads()) or [])
    monkeypatch.setenv(threads.ENV, "2")

    def _blas_threads():
        # A pool on a sequential layer (oneMKL, loaded by numba:blas for its one-thread JIT kernels)
        # is one thread whatever the budget: only the pools a budget can move are counted.
        return {
            info["num_threads"]
            for info in threadpool_info()
            if info["user_api"] == "blas" and info.get("threading_layer") != "sequential"
        }

    threads.apply()
    training_step._alternate(None, None)
    assert seen == [{training_step.RATIO_THREADS}] == [{1}]
    assert _blas_threads() == {2}


_RATIO_SETTINGS = """
import importlib, json, os
from bench.harness import timing
from bench.benchmarks import training_step

seen = []
timing.alternate = lambda first, second, **settings: seen.append(settings) or []
training_step._alternate(None, None)
os.environ["STEPBENCH_SMOKE"] = "1"
importlib.reload(training_step)
training_step._alternate(None, None)
print(json.dumps(seen))
"""


def test_the_ratio_tracks_measure_in_earnest_unless_the_smoke_run_asks_otherwise():
    # make test's asv run sets STEPBENCH_SMOKE (one pair of empty blocks: the tracks run, their values
    # mean nothing). A run without it, as asv's own, must get the settings the tracks were measured with.
    # Read in a fresh process without the variable: this one may have it, and reads it at import.
    env = {k: v for k, v in os.environ.items() if k != "STEPBENCH_SMOKE"}
    done = subprocess.run(
        [sys.executable, "-c", _RATIO_SETTINGS], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    default, smoke = json.loads(done.stdout.splitlines()[-1])
    settings = ("pairs", "block_s", "settle_s")
    assert {k: default[k] for k in settings} == {"pairs": 12, "block_s": 0.02, "settle_s": 0.12}
    assert {k: smoke[k] for k in settings} == {"pairs": 1, "block_s": 0.0, "settle_s": 0.0}
