"""This machine's GEMM peak per dtype and device: the yardstick of "% of peak", measured once and cached.

The peak is the best rate over repeated square matrix products of two sizes under the
suite's thread budget (NumPy's BLAS on the CPU, torch on CUDA): the best, because on a busy
machine most products are slowed by other processes. It is cached per machine, dtype,
device, thread budget and library versions in STEPBENCH_CACHE (default ~/.cache/stepbench);
delete the file there to measure again (a fraction of peak above 1 says it was measured
under load).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time

import numpy as np

from impls import threads

from . import environment

GEMM_SIZES = {"cpu": (1024, 2048), "cuda": (4096, 8192)}  # near peak, and a few seconds for all repeats
GEMM_REPEATS = 25  # the best of many: on a shared machine most products are slowed


def cache_dir() -> pathlib.Path:
    default = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "stepbench"
    return pathlib.Path(os.environ.get("STEPBENCH_CACHE", default))


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


def gemm_peak_gflops(dtype: str, device: str = "cpu") -> float:
    """Best GFLOP/s of an n x n x n matrix product in `dtype` on `device`, cached after the first call."""
    path = cache_dir() / f"gemm-peak-{device}-{dtype}-{_key(dtype, device)}.json"
    try:
        return float(json.loads(path.read_text())["gflops"])
    except (OSError, ValueError, KeyError):
        pass
    gflops = _measure_cuda(dtype) if device == "cuda" else _measure_cpu(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    record = {
        "gflops": gflops,
        "dtype": dtype,
        "device": device,
        "sizes": GEMM_SIZES[device],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # readers never see a half-written file
    return gflops


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
