"""How many pairs of blocks the asv ratio tracks take: as many as a step of milliseconds needs, no more
where one call lasts seconds. On a fake clock: nothing here is timed."""

import pytest

from bench.benchmarks import training_step
from bench.harness import timing


@pytest.fixture
def clock(clock, monkeypatch):
    """conftest's fake clock, with the ratio tracks' settings of a real run."""
    fake = clock
    monkeypatch.delenv("STEPBENCH_SMOKE", raising=False)
    # The settings of a real run (make test's smoke run sets others, read at import).
    monkeypatch.setattr(training_step, "PAIRS", 12)
    monkeypatch.setattr(training_step, "MIN_PAIRS", 3, raising=False)
    monkeypatch.setattr(training_step, "PAIRS_BUDGET_S", 4.0, raising=False)
    monkeypatch.setattr(training_step, "BLOCK_S", 0.02)
    monkeypatch.setattr(training_step, "SETTLE_S", 0.12)
    return fake


def test_a_ratio_track_of_a_step_of_milliseconds_takes_every_pair(clock):
    samples = training_step._alternate(clock.call(1e-3), clock.call(2e-3))
    assert len(samples) == training_step.PAIRS == 12
    assert timing.median_ratio(samples) == pytest.approx(0.5)


def test_a_ratio_track_of_a_step_of_seconds_stops_after_the_least_pairs_a_median_needs(clock):
    # The large preset on one thread: each call is a block by itself, of 1.5 and 1 s. Twelve pairs
    # took a minute per track and cell; pairs stop once the budget is spent, after at least three.
    samples = training_step._alternate(clock.call(1.5), clock.call(1.0))
    assert len(samples) == training_step.MIN_PAIRS == 3
    assert timing.median_ratio(samples) == pytest.approx(1.5)


def test_pairs_go_on_until_the_budget_is_spent(clock):
    # Blocks of 0.2 s: a pair with its two pauses takes 0.64 s, so the budget of 4 s ends after 7 pairs.
    samples = timing.alternate(
        clock.call(0.2), clock.call(0.2), pairs=12, min_pairs=3, budget_s=4.0, block_s=0.02, settle_s=0.12
    )
    assert len(samples) == 7


def test_without_a_budget_every_pair_is_taken(clock):
    samples = timing.alternate(clock.call(1.5), clock.call(1.0), pairs=5, block_s=0.02, settle_s=0.12)
    assert len(samples) == 5


class _Step:
    def __init__(self, name, world_size=1):
        self.name, self.world_size = name, world_size


def _call_of(step):
    def call():
        pass

    call.step = step
    return call


@pytest.mark.parametrize(
    ("name", "world_size", "limited"),
    [
        ("numpy", 1, True),
        ("numba:blas", 1, True),
        ("torch:cpu:compile", 1, True),
        ("torch:cpu:ddp", 2, False),  # the other rank is another process, on its own threads
        ("jax:cpu", 1, False),  # XLA's pool is fixed when jax starts
        ("torch:cuda", 1, False),
        ("someones:plugin", 1, False),  # threads of a library the budget may not reach
    ],
)
def test_only_steps_on_threads_the_budget_limits_go_without_the_pause(name, world_size, limited):
    assert training_step.runs_only_limited_threads(_call_of(_Step(name, world_size))) is limited


def test_the_pause_before_each_block_is_kept_where_a_side_runs_threads_the_budget_does_not_limit(monkeypatch):
    from bench.harness import peak

    seen = []
    monkeypatch.setattr(timing, "alternate", lambda first, second, **settings: seen.append(settings["settle_s"]) or [])
    numpy, jax, product = _call_of(_Step("numpy")), _call_of(_Step("jax:cpu")), peak.product("float32", "cpu", n=8)
    training_step._alternate(numpy, numpy)
    training_step._alternate(numpy, product)  # track_time_over_gemm's pair
    training_step._alternate(jax, numpy)
    training_step._alternate(numpy, lambda: None)  # a call of unknown threads
    assert seen == [0.0, 0.0, training_step.SETTLE_S, training_step.SETTLE_S]
