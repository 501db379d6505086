"""The gate's statistics (bench.gate.paired): which interval follows from which pairs, and which verdict
from which interval.

Every input is constructed, so each expected verdict is exact. The interval is checked against a
plain two-level bootstrap written here: rounds drawn with replacement, then pairs within each drawn
round, the median log ratio of each draw, and the central 95% of those medians.
"""

import math

import numpy as np
import pytest

from bench.gate import paired

THRESHOLDS = (0.02, 0.05, 0.10)
JUST = 1e-9  # relative: just inside or just outside a bound


def _verdict(low, high, threshold, ratio=None):
    ratio = math.sqrt(low * high) if ratio is None else ratio
    return paired.verdict(paired.Estimate(ratio, low, high, 48, 4), threshold)[0]


# --- verdicts --------------------------------------------------------------------------------


@pytest.mark.parametrize("t", THRESHOLDS)
def test_slower_only_when_the_whole_interval_lies_above_one_plus_the_threshold(t):
    up = 1 + t
    assert _verdict(up * (1 + JUST), 2 * up, t) == "slower"
    assert _verdict(up, 2 * up, t) == "unsure"  # on the bound is not beyond it
    assert _verdict(up * (1 - JUST), 2 * up, t) == "unsure"


@pytest.mark.parametrize("t", THRESHOLDS)
def test_faster_only_when_the_whole_interval_lies_below_one_over_one_plus_the_threshold(t):
    down = 1 / (1 + t)
    assert _verdict(down / 2, down * (1 - JUST), t) == "faster"
    assert _verdict(down / 2, down, t) == "unsure"
    assert _verdict(down / 2, down * (1 + JUST), t) == "unsure"
    # The bound is 1/(1+t), not 1-t: an interval ending between the two is faster, as its mirror is slower.
    assert 1 - t < (1 - t + down) / 2 < down
    assert _verdict(down / 2, (1 - t + down) / 2, t) == "faster"


@pytest.mark.parametrize("t", THRESHOLDS)
def test_same_only_when_the_whole_interval_lies_within_both_bounds(t):
    up, down = 1 + t, 1 / (1 + t)
    assert _verdict(down, up, t) == "same"
    assert _verdict(down * (1 + JUST), up * (1 - JUST), t) == "same"
    assert _verdict(down * (1 - JUST), up * (1 - JUST), t) == "unsure"
    assert _verdict(down * (1 + JUST), up * (1 + JUST), t) == "unsure"


def test_the_point_estimate_alone_never_decides():
    # A median 10% slower (or faster) whose interval reaches back within 5% is unsure, not slower.
    assert _verdict(1.03, 1.20, 0.05, ratio=1.10) == "unsure"
    assert _verdict(1 / 1.20, 1 / 1.03, 0.05, ratio=1 / 1.10) == "unsure"
    # An interval beyond the threshold is slower even where its median sits near it.
    assert _verdict(1.051, 1.20, 0.05, ratio=1.052) == "slower"


def test_an_unsure_verdict_says_whether_it_is_noise_or_a_change_near_the_threshold():
    noise = paired.verdict(paired.Estimate(1.0, 0.93, 1.08, 48, 4), 0.05)  # wider than +-5%
    near = paired.verdict(paired.Estimate(1.05, 1.03, 1.07, 48, 4), 0.05)  # narrow, across +5%
    assert noise[0] == near[0] == "unsure"
    assert "wider than" in noise[1] and "near the threshold" in near[1]


@pytest.mark.parametrize("t", THRESHOLDS)
def test_swapping_base_and_head_swaps_slower_and_faster_and_nothing_else(t):
    mirror = {"slower": "faster", "faster": "slower", "same": "same", "unsure": "unsure"}
    ends = np.exp(np.arange(-15, 16) * 0.0137)  # no end falls on a bound
    seen = set()
    for low in ends:
        for high in ends[ends >= low]:
            verdict, why = paired.verdict(paired.Estimate(math.sqrt(low * high), low, high, 48, 4), t)
            mirrored = paired.verdict(paired.Estimate(1 / math.sqrt(low * high), 1 / high, 1 / low, 48, 4), t)
            assert mirrored[0] == mirror[verdict], (low, high)
            if verdict in ("same", "unsure"):  # noise stays noise, a change near the threshold stays one
                assert mirrored[1] == why, (low, high)
            seen.add(verdict)
    assert seen == set(mirror)


# --- the interval ----------------------------------------------------------------------------


def _rounds(ratios_per_round):
    """Pairs (base_s, head_s) per round with HEAD/BASE as given."""
    return [[(1e-4, 1e-4 * r) for r in ratios] for ratios in ratios_per_round]


def _reference_interval(rounds, level, resamples=40_000, seed=7):
    """The two-level bootstrap, plainly: (low, high) of HEAD/BASE at `level`, for rounds of equal length."""
    logs = np.log(np.array([[h / b for b, h in pairs] for pairs in rounds]))
    n_rounds, n_pairs = logs.shape
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, n_rounds, (resamples, n_rounds))
    within = rng.integers(0, n_pairs, (resamples, n_rounds, n_pairs))
    medians = np.median(logs[chosen[:, :, None], within].reshape(resamples, -1), axis=1)
    return tuple(np.exp(np.percentile(medians, [50 * (1 - level), 50 * (1 + level)])))


def _reference_t_floor(rounds, level):
    """Student's t interval of the mean of the rounds' median log ratios, plainly."""
    from scipy import stats

    medians = [np.median(np.log([h / b for b, h in pairs])) for pairs in rounds]
    n = len(medians)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * np.std(medians, ddof=1) / math.sqrt(n)
    return math.exp(np.mean(medians) - half), math.exp(np.mean(medians) + half)


def _width(low, high):
    return math.log(high / low)


def test_the_interval_spans_the_central_95_percent_of_the_two_level_bootstrap_and_the_t_floor():
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 0.02, 6)  # each process's own bias ...
    rounds = _rounds([np.exp(0.05 + o + rng.normal(0, 0.02, 12)) for o in offsets])  # ... and each pair's noise
    est = paired.estimate(rounds)
    assert paired.CONFIDENCE == 0.95
    assert (est.pairs, est.rounds) == (72, 6)
    ref = {level: _reference_interval(rounds, level) for level in (0.90, 0.95, 0.99)}
    tolerance = 0.04 * _width(*ref[0.95])  # the bootstrap's own resampling noise is well within this
    # The check can tell the levels apart: 90% and 99% intervals differ by more than the tolerance.
    assert _width(*ref[0.95]) - _width(*ref[0.90]) > 2 * tolerance < _width(*ref[0.99]) - _width(*ref[0.95])
    t_low, t_high = _reference_t_floor(rounds, 0.95)
    assert abs(math.log(est.low / min(ref[0.95][0], t_low))) < tolerance
    assert abs(math.log(est.high / max(ref[0.95][1], t_high))) < tolerance
    assert est.low < est.ratio < est.high
    assert est.ratio == pytest.approx(math.exp(np.median(np.log([h / b for p in rounds for b, h in p]))))


@pytest.mark.parametrize("looks", [1, 3])
def test_with_few_rounds_that_disagree_the_interval_is_the_t_interval_over_the_rounds(looks):
    # Four processes 4% apart, each sure of itself: the bootstrap can only redraw these four;
    # Student's t allows for a spread estimated from four rounds.
    rng = np.random.default_rng(4)
    rounds = _rounds([np.exp(c + rng.normal(0, 0.002, 12)) for c in (-0.02, 0.02, 0.06, 0.10)])
    boot = _reference_interval(rounds, 0.95)
    level = 1 - 0.05 / looks  # 95% at the first look, Bonferroni over the later ones
    t_low, t_high = _reference_t_floor(rounds, level)
    assert t_low < boot[0] and boot[1] < t_high
    est = paired.estimate(rounds, looks=looks)
    assert (est.low, est.high) == pytest.approx((t_low, t_high), rel=1e-9)


def test_each_further_look_widens_the_interval():
    rng = np.random.default_rng(6)
    rounds = _rounds([np.exp(rng.normal(0, 0.03) + rng.normal(0, 0.01, 12)) for _ in range(8)])
    widths = [_width(e.low, e.high) for e in (paired.estimate(rounds, looks=k) for k in (1, 2, 4))]
    assert widths[0] < widths[1] < widths[2]


def _simulated_stopping_rule(rng, effect: float, process_sd: float, pair_sd: float) -> str:
    """One cell as the gate measures it: 4 rounds of 12 pairs, 2 more while undecided, at most 16; its verdict."""
    rounds = []

    def add(n):
        for _ in range(n):
            bias = rng.normal(0, process_sd)
            rounds.append([(1.0, float(np.exp(effect + bias + x))) for x in rng.standard_t(4, 12) * pair_sd])

    add(4)
    looks = 1
    while True:
        verdict, _ = paired.verdict(paired.estimate(rounds, seed=looks, looks=looks), 0.05)
        if verdict != paired.UNSURE or len(rounds) >= 16:
            return verdict
        add(2)
        looks += 1


@pytest.mark.parametrize("process_sd", [0.03, 0.08])
def test_simulated_a_a_with_the_stopping_rule_calls_at_most_one_percent_of_cells(process_sd):
    # Identical code, each process biased by a normal effect (3%: a loaded machine; 8%: worse than any
    # measured), each pair heavy-tailed (t with 4 degrees of freedom, 3%).
    rng = np.random.default_rng(11)
    verdicts = [_simulated_stopping_rule(rng, 0.0, process_sd, 0.03) for _ in range(300)]
    false_calls = sum(v in ("slower", "faster") for v in verdicts)
    assert false_calls <= 3, verdicts  # 1% of 300


def test_simulated_ten_percent_slowdown_is_called_slower():
    rng = np.random.default_rng(12)
    verdicts = [_simulated_stopping_rule(rng, math.log(1.10), 0.02, 0.05) for _ in range(100)]
    assert sum(v == "slower" for v in verdicts) >= 95 and "faster" not in verdicts and "same" not in verdicts


def test_pairs_that_repeat_their_round_add_no_confidence():
    # The round is the unit: five processes whose pairs agree within each process say as much as five
    # pairs, one per process. Pooling all pairs would make 40 repeats look 40 times as sure.
    centres = [1.00, 1.03, 1.06, 1.09, 1.12]
    one = paired.estimate(_rounds([[c] for c in centres]))
    many = paired.estimate(_rounds([[c] * 40 for c in centres]))
    assert (many.low, many.high) == pytest.approx((one.low, one.high), rel=1e-12)
    assert one.low <= 1.03 and one.high >= 1.09  # the spread between processes is the interval's


def test_the_spread_within_rounds_counts_too():
    # Four processes with identical pairs: their medians agree exactly, and yet the pairs are noisy.
    pairs = np.exp(np.linspace(-0.1, 0.1, 11))
    est = paired.estimate(_rounds([pairs] * 4))
    assert est.low < 0.995 and est.high > 1.005


def test_mirrored_pairs_give_the_mirrored_interval():
    rng = np.random.default_rng(5)
    rounds = _rounds([np.exp(rng.normal(0.03 * i, 0.02, 9)) for i in range(4)])
    est = paired.estimate(rounds)
    swapped = paired.estimate([[(h, b) for b, h in pairs] for pairs in rounds])
    assert (swapped.ratio, swapped.low, swapped.high) == pytest.approx((1 / est.ratio, 1 / est.high, 1 / est.low))
