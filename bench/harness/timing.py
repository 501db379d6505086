"""Timing of one call, for `make bench` and asv's track_* benchmarks (asv and pytest-benchmark time their own).

Blocked like torch.utils.benchmark's blocked_autorange: calls are grouped in blocks long
enough for the clock, and the statistics are over per-call times of the blocks.
"""

from __future__ import annotations

import dataclasses
import gc
import time

import numpy as np

from impls.timing import alternate, calibrate, median_ratio, timed_block

# alternate and median_ratio are the harness's too: the ratio tracks and the data-parallel figures use them.
__all__ = ["NOISY", "Timing", "alternate", "calibrate", "measure", "median_ratio", "timed_block"]


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
            samples.append(timed_block(call, number) / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing(samples, number)
