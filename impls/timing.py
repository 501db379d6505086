"""Alternated timing of two calls: the ratio of their speeds in one time window, drift cancelled.

Shared by the harness (bench.timing: the asv ratio tracks, the data-parallel figures) and by
numba:blas, which chooses its plan at create by such a comparison.
"""

from __future__ import annotations

import gc
import time

import numpy as np


def timed_block(call, number: int) -> float:
    """Seconds for `number` calls of `call`, back to back."""
    start = time.perf_counter()
    for _ in range(number):
        call()
    return time.perf_counter() - start


def calibrate(call, block_s: float) -> tuple[int, float]:
    """Calls per block so that a block of `call` lasts at least block_s, as timeit.autorange does,
    and the seconds of the last block tried (`call` is warm)."""
    number = 1
    while True:
        t = timed_block(call, number)
        if t >= block_s:
            return number, t
        number = max(number + 1, int(number * min(10.0, 1.2 * block_s / max(t, 1e-9))))


def alternate(
    first,
    second,
    pairs: int = 15,
    block_s: float = 0.01,
    settle_s: float = 0.0,
    seed: int = 0,
    min_pairs: int | None = None,
    budget_s: float | None = None,
) -> list[tuple[float, float]]:
    """Seconds per call of two calls measured in alternating blocks: one (first, second) pair per block pair.

    A drift of the machine's speed (another job starting, the CPU's clock) slows the two
    blocks of a pair alike, so a ratio within a pair survives what two separate runs do
    not. The order within each pair is random, so neither side always runs just after the
    other has warmed the caches. After each block the process sleeps settle_s, so that
    thread pools which keep spinning after a call (OpenBLAS's, for about 0.1 s) are asleep
    before the other side's block: otherwise they hold a core that block needs.

    `pairs` pairs, or with `budget_s`: at least `min_pairs`, more until budget_s seconds have
    passed since the first, at most `pairs`. Blocks of calls that each last seconds need
    fewer pairs than blocks of a few milliseconds, and would otherwise take minutes.
    """
    numbers = (calibrate(first, block_s)[0], calibrate(second, block_s)[0])
    order = np.random.default_rng(seed).integers(0, 2, size=pairs)
    least = pairs if budget_s is None else min(pairs, 1 if min_pairs is None else min_pairs)
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        for swap in order:
            if budget_s is not None and len(samples) >= least and time.perf_counter() - start >= budget_s:
                break
            sides = (1, 0) if swap else (0, 1)
            seconds = [0.0, 0.0]
            for side in sides:
                if settle_s:
                    time.sleep(settle_s)
                seconds[side] = timed_block((first, second)[side], numbers[side]) / numbers[side]
            samples.append((seconds[0], seconds[1]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def median_ratio(samples: list[tuple[float, float]]) -> float:
    """The median over pairs of first/second."""
    return float(np.median([a / b for a, b in samples]))
