"""Is the machine busy? Timings taken beside other work are slow as a whole, and their IQR need not show it.

The load average (runnable processes, averaged over the last minute) against the cores:
when the other work and the thread budget together need more cores than there are, the
timed threads wait for the CPU. The one-minute average lags: right after another heavy job
it still shows that job's load for a minute or so.
"""

from __future__ import annotations

import os

SLACK = 0.5  # cores: the load average of an idle machine is rarely exactly 0


def cores() -> int:
    return os.cpu_count() or 1


def load_average() -> float | None:
    """The one-minute load average, or None where the system has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_warning(budget: int, own_threads: int = 0) -> str | None:
    """A warning when other work leaves fewer idle cores than the thread budget needs, else None.

    `own_threads`: how much of the load average is this process's own work (its timed
    threads, at the end of a run), and so not competition.
    """
    load = load_average()
    if load is None:
        return None
    others = max(0.0, load - own_threads)
    if others + budget <= cores() + SLACK:
        return None
    return (
        f"the machine is busy: load average {load:.2f} over the last minute on {cores()} cores "
        f"({others:.1f} of it other work) beside a thread budget of {budget}; the timings are slowed as a whole, "
        "rerun on a quieter machine before trusting them"
    )
