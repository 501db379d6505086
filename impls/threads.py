"""The suite's one thread budget, applied alike to BLAS, torch and numba, and recorded with results.

The budget is STEPBENCH_THREADS if set and not empty, else the CPUs this process may run on; a
budget above those CPUs is refused: threads that outnumber the cores wait for each other at
every parallel region, and what would be timed is the oversubscription. Backends
call `apply()` when a step is created, so every library loaded by then runs with the same
number of threads; `describe()` is what results record.
"""

from __future__ import annotations

import os
import sys

ENV = "STEPBENCH_THREADS"

_blas_limits = None  # keeps threadpoolctl's limit in force for the life of the process


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def budget() -> int:
    """Threads each CPU backend may use."""
    value = os.environ.get(ENV, "").strip()
    if not value:  # unset, or set to nothing (`STEPBENCH_THREADS= make bench`): the default
        return usable_cpus()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise ValueError(f"{ENV} must be a positive integer, got {value!r}")
    if n > usable_cpus():
        raise ValueError(f"{ENV}={n} is more than the {usable_cpus()} CPUs this process may run on")
    return n


def apply(n: int | None = None) -> int:
    """Limit BLAS/OpenMP pools and any loaded torch or numba to n threads (default: budget())."""
    global _blas_limits
    n = budget() if n is None else n
    # torch and numba first: numba.set_num_threads loads numba's OpenMP runtime, which the
    # limits below then cover too.
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl the BLAS pool keeps its own default; describe() says so
        pass
    else:
        _blas_limits = threadpool_limits(limits=n)
    return n


def describe() -> dict:
    """The thread budget and what each loaded library actually runs with."""
    record = {"budget": budget()}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        record["blas"] = "threadpoolctl not installed"
    else:
        record["blas"] = [
            {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "threading_layer")}
            for info in threadpool_info()
        ]
    if "torch" in sys.modules:
        record["torch"] = sys.modules["torch"].get_num_threads()
    if "numba" in sys.modules:
        record["numba"] = sys.modules["numba"].get_num_threads()
    if "jax" in sys.modules:
        record["jax"] = _xla_threads()
    return record


def _xla_threads() -> int:
    """XLA's CPU intra-op threads: XLA_FLAGS' intra_op_parallelism_threads (impls.jax_step sets it
    to the budget where that is below the CPUs), else XLA's default, one per CPU."""
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.lstrip("-").startswith("intra_op_parallelism_threads="):
            return int(flag.split("=", 1)[1])
    return usable_cpus()
