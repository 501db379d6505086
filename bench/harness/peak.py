"""This machine's GEMM peak per dtype and device: the yardstick of "% of peak", measured once and cached.

The peak is the best rate over repeated square matrix products of two sizes under the
suite's thread budget (NumPy's BLAS on the CPU, torch on CUDA): the best, because on a busy
machine most products are slowed by other processes. It is cached per machine, dtype,
device, thread budget and library versions in STEPBENCH_CACHE (default ~/.cache/stepbench);
delete the file there to measure again (a fraction of peak above 1 says it was measured
under load). `make bench` checks a cached peak against one quick product before it uses it
(`checked_peak`: one beaten by more than 20% is measured again and replaced), and fails before any timing when the cache cannot be written (`cache_problem`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import time

import numpy as np

from impls import threads

from . import environment

GEMM_SIZES = {"cpu": (1024, 2048), "cuda": (4096, 8192)}  # near peak, and a few seconds for all repeats
GEMM_REPEATS = 25  # the best of many: on a shared machine most products are slowed
QUICK_SIZES = {"cpu": 1024, "cuda": 4096}  # recheck: the smaller size, a few hundredths of a second
QUICK_REPEATS = 3  # the first product also wakes the thread pool
# A quick product this much faster than the cached peak means the peak was measured under
# load; this much slower, that the machine is busy now. Between the two, a single product's
# own noise and its smaller size.
RECHECK_ABOVE, RECHECK_BELOW = 1.2, 0.5
FLOAT32_OVER_FLOAT64_MIN = 1.4  # float32 peaks below this multiple of float64's: see dtype_warning
CACHE_ENV = "STEPBENCH_CACHE"


def cache_dir() -> pathlib.Path:
    default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "stepbench"
    return pathlib.Path(os.environ.get(CACHE_ENV) or default)


def cache_problem() -> str | None:
    """Why a measured peak could not be cached, or None; a run checks this before it times anything."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        return f"the GEMM peak cache {directory} ({CACHE_ENV}) is not writable: {error.strerror or error}"
    return None


def _key(dtype: str, device: str) -> str:
    # What the peak depends on; a change in any of them measures again.
    identity = {
        "machine": environment.machine()["machine"],
        "cpu": environment.cpu_model(),
        "budget": threads.budget(),
        "versions": environment.versions(),
        "dtype": dtype,
        "device": device,
        "sizes": GEMM_SIZES[device],
    }
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8).hexdigest()


def cache_path(dtype: str, device: str = "cpu") -> pathlib.Path:
    return cache_dir() / f"gemm-peak-{device}-{dtype}-{_key(dtype, device)}.json"


def cached_gflops(dtype: str, device: str = "cpu") -> float | None:
    """The cached peak, or None where none has been measured under the current key."""
    try:
        return float(json.loads(cache_path(dtype, device).read_text())["gflops"])
    except (OSError, ValueError, KeyError):
        return None


def gemm_peak_gflops(dtype: str, device: str = "cpu") -> float:
    """Best GFLOP/s of an n x n x n matrix product in `dtype` on `device`, cached after the first call."""
    cached = cached_gflops(dtype, device)
    return cached if cached is not None else measure_and_cache(dtype, device)


def measure_and_cache(dtype: str, device: str = "cpu", at_least: float = 0.0) -> float:
    """Measure the peak and cache it; `at_least`: a rate already seen, which the peak cannot be below."""
    gflops = max(at_least, _measure_cuda(dtype) if device == "cuda" else _measure_cpu(dtype))
    path = cache_path(dtype, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    record = {
        "gflops": gflops,
        "dtype": dtype,
        "device": device,
        "sizes": GEMM_SIZES[device],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,  # high: measured under load
    }
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # readers never see a half-written file
    return gflops


def recheck(dtype: str, device: str, peak_gflops: float) -> str | None:
    """A warning when one quick product disagrees with the cached peak, else None.

    Much faster than the peak: the peak was measured under load and would flatter every
    timing against it; it is measured again and the cache replaced (checked_peak). Much
    slower: the machine is busy now, and the timings will be slow.
    """
    return _judge(dtype, device, peak_gflops, quick_gflops(dtype, device))


def _judge(dtype: str, device: str, peak_gflops: float, quick: float) -> str | None:
    where = f"{dtype} on {device}"
    if quick > RECHECK_ABOVE * peak_gflops:
        return (
            f"the cached GEMM peak ({where}, {peak_gflops:.1f} GFLOP/s) is below a quick product just now "
            f"({quick:.1f} GFLOP/s): it was measured under load ({cache_path(dtype, device)})"
        )
    if quick < RECHECK_BELOW * peak_gflops:
        return (
            f"a quick product ({where}) ran at {quick:.1f} GFLOP/s, {quick / peak_gflops:.0%} of the cached GEMM "
            f"peak ({peak_gflops:.1f} GFLOP/s): the machine is busy now, and its timings will be slow"
        )
    return None


def checked_peak(dtype: str, device: str = "cpu") -> tuple[float, str | None]:
    """(the peak to use, a warning or None): the cached peak checked by a quick product.

    A cache a quick product beats by more than RECHECK_ABOVE was measured under load: it is
    measured again now and replaced, so one busy moment is not cached for good. The new
    peak is at least the quick product's rate, the best seen.
    """
    cached = cached_gflops(dtype, device)
    if cached is None:
        return measure_and_cache(dtype, device), None
    quick = quick_gflops(dtype, device)
    warning = _judge(dtype, device, cached, quick)
    if quick > RECHECK_ABOVE * cached:
        again = measure_and_cache(dtype, device, at_least=quick)
        return again, f"{warning}; measured again: {again:.1f} GFLOP/s, cached in its place"
    return cached, warning


def dtype_warning(peaks: dict[str, float], device: str = "cpu") -> str | None:
    """A warning when a CPU's float32 peak is not well above its float64 peak.

    A vector unit holds twice as many float32 lanes as float64 ones, so BLAS reaches about twice
    the float32 rate; a ratio near 1 says one of the two was measured under load.
    """
    if device != "cpu" or not {"float32", "float64"} <= peaks.keys():
        return None
    ratio = peaks["float32"] / peaks["float64"]
    if ratio >= FLOAT32_OVER_FLOAT64_MIN:
        return None
    return (
        f"the GEMM peaks on {device} are float32 {peaks['float32']:.1f} and float64 {peaks['float64']:.1f} GFLOP/s, "
        f"a ratio of {ratio:.2f} where about 2 is expected: one was measured under load; delete "
        f"{cache_path('float32', device)} and {cache_path('float64', device)} and run again on a quiet machine"
    )


def quick_gflops(dtype: str, device: str = "cpu") -> float:
    """GFLOP/s of a few products of the smaller size: a check of the peak, not a measurement of it."""
    n = QUICK_SIZES[device]
    call = product(dtype, device, n)
    return 2 * n**3 / min(_timed(call) for _ in range(QUICK_REPEATS)) / 1e9


def product(dtype: str, device: str = "cpu", n: int | None = None):
    """One n x n x n matrix product per call, done when the call returns (n: the quick size)."""
    n = QUICK_SIZES[device] if n is None else n
    if device == "cuda":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(n, n, device="cuda", dtype=getattr(torch, dtype))  # n,n
        out = torch.empty_like(a)  # n,n

        def call():
            torch.matmul(a, a, out=out)
            torch.cuda.synchronize()

    else:
        threads.apply()
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)  # n,n
        out = np.empty_like(a)  # n,n

        def call():
            np.matmul(a, a, out=out)

    call.flops = 2 * n**3
    return call


def _measure_cpu(dtype: str) -> float:
    threads.apply()
    rng = np.random.default_rng(0)
    best = 0.0
    for n in GEMM_SIZES["cpu"]:
        a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))  # n,n
        out = np.empty((n, n), dtype=dtype)
        np.matmul(a, b, out=out)  # warm-up: thread pool start, page faults
        fastest = min(_timed(lambda a=a, b=b, out=out: np.matmul(a, b, out=out)) for _ in range(GEMM_REPEATS))
        best = max(best, 2 * n**3 / fastest / 1e9)
    return best


def _measure_cuda(dtype: str) -> float:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # the full-precision peak, like the timed steps
    best = 0.0
    for n in GEMM_SIZES["cuda"]:
        a, b = (torch.randn(n, n, device="cuda", dtype=getattr(torch, dtype)) for _ in range(2))  # n,n
        out = torch.empty(n, n, device="cuda", dtype=a.dtype)

        def product(a=a, b=b, out=out):
            torch.matmul(a, b, out=out)
            torch.cuda.synchronize()  # the product is done only when the device says so

        product()
        fastest = min(_timed(product) for _ in range(GEMM_REPEATS))
        best = max(best, 2 * n**3 / fastest / 1e9)
    return best


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start
