"""Timing of one call, for `make bench` and asv's track_* benchmarks (asv and pytest-benchmark time their own).

Blocked like torch.utils.benchmark's blocked_autorange: calls are grouped in blocks long
enough for the clock, and the statistics are over per-call times of the blocks.
"""

from __future__ import annotations

import dataclasses
import gc
import time

import numpy as np

NOISY = 0.10  # IQR/median above this is flagged, as torch.utils.benchmark does


@dataclasses.dataclass
class Timing:
    samples: list[float]  # seconds per call, one per block
    number: int  # calls per block

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def q25(self) -> float:
        return float(np.percentile(self.samples, 25))

    @property
    def q75(self) -> float:
        return float(np.percentile(self.samples, 75))

    @property
    def iqr_ratio(self) -> float:
        """IQR / median: the noise of the measurement."""
        return (self.q75 - self.q25) / self.median

    @property
    def noisy(self) -> bool:
        return self.iqr_ratio > NOISY


def _block(call, number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return time.perf_counter() - start


def measure(call, block_s: float = 0.01, min_blocks: int = 5, max_blocks: int = 50, budget_s: float = 0.5) -> Timing:
    """Seconds per call of `call()`: blocks of >= block_s, at least min_blocks, more until budget_s is spent.

    `call` must do one complete unit of work (a device step ends with a synchronize) and be
    warmed up already.
    """
    number, t = calibrate(call, block_s)
    # A call long enough to be a block by itself is a sample already (`call` is warm): slow
    # configurations do not pay for a calibration call they do not need.
    samples = [t] if number == 1 else []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one block would show as noise
    try:
        start = time.perf_counter()
        while len(samples) < max_blocks and (len(samples) < min_blocks or time.perf_counter() - start < budget_s):
            samples.append(_block(call, number) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(samples, number)


def calibrate(call, block_s: float) -> tuple[int, float]:
    """Calls per block so that a block of `call` lasts at least block_s, as timeit.autorange does,
    and the seconds of the last block tried (`call` is warm)."""
    number = 1
    while True:
        t = _block(call, number)
        if t >= block_s:
            return number, t
        number = max(number + 1, int(number * min(10.0, 1.2 * block_s / max(t, 1e-9))))


def alternate(
    first, second, pairs: int = 15, block_s: float = 0.01, settle_s: float = 0.0, seed: int = 0
) -> list[tuple[float, float]]:
    """Seconds per call of two calls measured in alternating blocks: one (first, second) pair per block pair.

    A drift of the machine's speed (another job starting, the CPU's clock) slows the two
    blocks of a pair alike, so a ratio within a pair survives what two separate runs do
    not. The order within each pair is random, so neither side always runs just after the
    other has warmed the caches. After each block the process sleeps settle_s, so that
    thread pools which keep spinning after a call (OpenBLAS's, for about 0.1 s) are asleep
    before the other side's block: otherwise they hold a core that block needs.
    """
    numbers = (calibrate(first, block_s)[0], calibrate(second, block_s)[0])
    order = np.random.default_rng(seed).integers(0, 2, size=pairs)
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for swap in order:
            sides = (1, 0) if swap else (0, 1)
            seconds = [0.0, 0.0]
            for side in sides:
                if settle_s:
                    time.sleep(settle_s)
                seconds[side] = _block((first, second)[side], numbers[side]) / numbers[side]
            samples.append((seconds[0], seconds[1]))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def median_ratio(samples: list[tuple[float, float]]) -> float:
    """The median over pairs of first/second."""
    return float(np.median([a / b for a, b in samples]))
