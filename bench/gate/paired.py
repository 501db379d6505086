"""The statistics of a paired comparison: HEAD/BASE per cell, its confidence interval, and the verdict.

Each sample is a pair of blocks, one per side, taken back to back (or at once, in a duet),
so a drift of the machine's speed hits both halves alike and cancels in the ratio. Pairs
come from several processes per side ("rounds"); a process's memory layout can bias all of
its pairs by a few per cent, so the interval must reflect the spread between rounds, not
only between pairs. It is a two-level bootstrap: resample the rounds, then the pairs within
each, and take the median log ratio (Davison & Hinkley, "Bootstrap Methods and their
Application", 1997, section 3.8, for the hierarchical resampling).

With few rounds the bootstrap is too sure of the spread between them: it can only redraw
the rounds it saw (its variance is biased by (n-1)/n, its tails cut off at the extreme
round). So the interval is never narrower than Student's t interval over the rounds' own
median log ratios, which allows for estimating that spread from n rounds. Simulated A/A
(tests/test_gate_statistics.py: 4 rounds, 2 more while undecided, up to 16) calls under 1%
of cells with process effects up to 8%; at 12%, far beyond any measured, about 1.5%, where
the bootstrap alone called 4.3%. On a quiet machine the floor costs little: a simulated 7%
slowdown was called in 100 of 100 cells either way, after 5.5 rounds on average instead of 5.0.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 4000

# Verdicts, in the order a report lists them: what needs attention first.
UNSURE = "unsure"
ORDER = ("disagrees", "failed", "slower", UNSURE, "faster", "same", "skipped")
FAILING = ("disagrees", "failed", "slower")  # HEAD computes wrongly, cannot run, or is slower: exit status 1


@dataclasses.dataclass(frozen=True)
class Estimate:
    ratio: float  # HEAD/BASE, the median over all pairs
    low: float  # the confidence interval of that ratio
    high: float
    pairs: int
    rounds: int


def estimate(rounds: list[list[tuple[float, float]]], seed: int = 0, looks: int = 1) -> Estimate:
    """HEAD/BASE from pairs (base_s, head_s) grouped by round, with a two-level bootstrap interval.

    `looks`: how many times a verdict has been asked of this cell's growing sample, this one
    included (the gate adds rounds to undecided cells and looks again). Each look is a chance
    of a false call, so the t floor's level is Bonferroni's over the looks: 1 - 0.05/looks.
    """
    logs = [np.log([h / b for b, h in pairs]) for pairs in rounds if pairs]
    if not logs:
        raise ValueError("no pairs to estimate from")
    point = float(np.exp(np.median(np.concatenate(logs))))
    rng = np.random.default_rng(seed)
    width = max(len(x) for x in logs)
    # Rounds may differ in length; pad with NaN and resample only real entries.
    table = np.full((len(logs), width), np.nan)
    lengths = np.array([len(x) for x in logs])
    for i, x in enumerate(logs):
        table[i, : len(x)] = x
    chosen = rng.integers(0, len(logs), size=(RESAMPLES, len(logs)))  # rounds, with replacement
    within = (rng.random((RESAMPLES, len(logs), width)) * lengths[chosen][:, :, None]).astype(int)
    drawn = table[chosen[:, :, None], within]  # (RESAMPLES, rounds, width): pairs of each drawn round
    keep = np.arange(width)[None, None, :] < lengths[chosen][:, :, None]
    medians = _row_medians(np.where(keep, drawn, np.inf).reshape(RESAMPLES, -1), keep.sum(axis=(1, 2)))
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    t_low, t_high = _t_interval([float(np.median(x)) for x in logs], 1 - (1 - CONFIDENCE) / looks)
    low, high = np.exp(min(low, t_low)), np.exp(max(high, t_high))
    return Estimate(point, float(low), float(high), int(lengths.sum()), len(logs))


def _row_medians(padded: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The median of each row's first `counts` values once sorted; the padding is +inf, so it sorts last.

    np.nanmedian over NaN padding gives the same numbers, but several times slower: the gate asks
    for an interval at every look of every cell, and the simulated A/A tests for thousands.
    """
    ordered = np.sort(padded, axis=1)
    low = np.take_along_axis(ordered, ((counts - 1) // 2)[:, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, (counts // 2)[:, None], axis=1)[:, 0]
    return (low + high) / 2


def _t_interval(round_medians: list[float], level: float) -> tuple[float, float]:
    """Student's t interval of the mean over the rounds' median log ratios (empty with one round)."""
    n = len(round_medians)
    if n < 2:
        return math.inf, -math.inf
    centre = float(np.mean(round_medians))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * np.std(round_medians, ddof=1) / math.sqrt(n))
    return centre - half, centre + half


def verdict(est: Estimate, threshold: float) -> tuple[str, str]:
    """("slower" | "faster" | "same" | "unsure", why) for a ratio interval and a relative threshold.

    Symmetric in log space: "faster" mirrors "slower" (1/(1+t), not 1-t), so swapping BASE
    and HEAD swaps the two verdicts and nothing else.
    """
    up, down = 1 + threshold, 1 / (1 + threshold)
    if est.low > up:
        return "slower", f"whole interval above +{threshold:.0%}"
    if est.high < down:
        return "faster", f"whole interval below -{threshold:.0%}"
    if est.low >= down and est.high <= up:
        return "same", f"whole interval within ±{threshold:.0%}"
    spread = math.log(est.high / est.low)
    if spread > 2 * math.log(up):
        return UNSURE, f"interval wider than ±{threshold:.0%}: noise, rerun on a quieter machine or with more time"
    return UNSURE, f"interval crosses ±{threshold:.0%}: a change near the threshold"
