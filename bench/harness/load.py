"""Is the machine busy? Timings taken beside other work are slow as a whole, and their IQR need not show it.

The load average (runnable processes, averaged over the last minute) against the cores:
when the other work and the thread budget together need more cores than there are, the
timed threads wait for the CPU. The one-minute average lags: right after another heavy job
it still shows that job's load for a minute or so.
"""

from __future__ import annotations

import os
import pathlib
import resource
import time

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


def _busy_and_total_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat; None where there is none."""
    try:
        fields = pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class OtherWork:
    """How many cores other processes kept busy between start() and cores_busy(): the machine's busy
    time less this process's and its (waited-for) children's. Unlike the load average it does not lag,
    and it does not count our own work. Falls back to the load average where /proc/stat is missing.
    """

    def __init__(self):
        self.start()

    def start(self) -> None:
        self.machine, self.own, self.wall = _busy_and_total_cpu_s(), _own_cpu_s(), time.monotonic()

    def cores_busy(self) -> float | None:
        now = _busy_and_total_cpu_s()
        if now is None or self.machine is None:
            return load_average()
        wall = time.monotonic() - self.wall
        if wall <= 0:
            return None
        others = (now[0] - self.machine[0]) - (_own_cpu_s() - self.own)
        return max(0.0, others / wall)


def _busy_cpu_s_per_cpu() -> dict[int, float] | None:
    """{cpu: busy CPU seconds since boot}, from /proc/stat's cpuN lines; None where there are none."""
    try:
        lines = pathlib.Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    hz, busy = os.sysconf("SC_CLK_TCK"), {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(x) for x in fields[:8]]
            busy[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4]) / hz
    return busy


def other_work(window_s: float = 1.0) -> float | None:
    """Cores kept busy by other processes over the next `window_s` seconds, this one sleeping."""
    return probe(window_s)[0]


def probe(window_s: float = 1.0) -> tuple[float | None, dict[int, float]]:
    """(cores kept busy by other processes, {cpu: its busy fraction}) over `window_s` seconds, this one sleeping.

    The per-CPU figures say where the other work sits, so that a measurement can keep off those CPUs.
    """
    whole, before, start = OtherWork(), _busy_cpu_s_per_cpu(), time.monotonic()
    time.sleep(window_s)
    after, wall = _busy_cpu_s_per_cpu(), time.monotonic() - start
    per_cpu = (
        {} if before is None or after is None else {c: (after[c] - before[c]) / wall for c in after if c in before}
    )
    return whole.cores_busy(), per_cpu
