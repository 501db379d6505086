"""One side of `python -m bench compare`: a process that prepares steps from ONE checkout and times blocks on request.

Run as a script by the compare driver, never imported by it:

    PYTHON compare_worker.py --checkout DIR --seed S [--cpus C,C...]

It imports `impls` from DIR (a revision's clean export, or the working tree) with the
interpreter of the side's environment, and uses only the public API of `impls`, so the
same worker serves an old revision and a new one, and the harness (setup, warm-up, how a
block is timed) is identical on both sides: only the code under comparison differs.

Protocol: one JSON object per line, requests on stdin, replies on the original stdout.
Everything else the process prints (a library's warnings, numba's messages) goes to
stderr, so nothing can corrupt the replies.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import pathlib
import platform
import sys
import time

GEMM = "gemm"  # a cell of this name is a block of matrix products (Product), not a registered step
WARM_UP_S = 0.1  # as bench.harness.prepare: JIT compilation and first-touch costs stay out of every timed block
WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT", "KMP_BLOCKTIME")
LIBRARIES = ("numpy", "scipy", "numba", "llvmlite", "torch", "jax", "jaxlib", "threadpoolctl")


def _reply_channel():
    """The original stdout for replies; fd 1 then points at stderr for anything else that prints."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return replies


def _import_impls(checkout: pathlib.Path):
    here = pathlib.Path(__file__).resolve().parent
    sys.path[:] = [str(checkout)] + [p for p in sys.path if pathlib.Path(p or ".").resolve() != here]
    import impls

    found = pathlib.Path(impls.__file__).resolve().parent
    if found != (checkout / "impls").resolve():
        raise ImportError(f"impls was imported from {found}, not from the checkout {checkout}")
    return impls


class Product:
    """n x n x n matrix products of one dtype, one per call, done when the call returns."""

    def __init__(self, dtype: str, device: str, n: int):
        self.flops = 2 * n**3
        if device == "cuda":
            import torch

            torch.backends.cuda.matmul.allow_tf32 = False  # the full-precision rate, like the timed steps
            self.a = torch.randn(n, n, device="cuda", dtype=getattr(torch, dtype))  # n,n
            self.out = torch.empty_like(self.a)  # n,n
            self.matmul, self.sync = torch.matmul, torch.cuda.synchronize
        else:
            import numpy as np

            self.a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)  # n,n
            self.out = np.empty_like(self.a)  # n,n
            self.matmul, self.sync = np.matmul, lambda: None

    def step(self):
        self.matmul(self.a, self.a, out=self.out)


class LossAndGrads:
    """A step whose timed call is loss_and_grads() (forward and backward, no update): what asv's
    time_loss_and_grads measures, for re-measuring its alerts (bench.triage)."""

    def __init__(self, step):
        self.step_object = step
        self.weights, self.sync = step.weights, step.sync

    def step(self):
        self.step_object.loss_and_grads()


CALLS = {"step": lambda step: step, "loss_and_grads": LossAndGrads}  # what a cell's "call" times


def create_options(step) -> dict:
    """impls.create options that make this step again, where its create chose how to run (numba:blas's
    plan, by timing trials): a later process given them creates the step that was checked, without the trials.
    As bench.harness.agreement_worker.create_options, which this script cannot import (it runs old revisions)."""
    plan = getattr(step, "plan", None)
    if isinstance(plan, dict) and plan:
        return {"plan": ",".join(f"{key}={value}" for key, value in plan.items())}
    return {}


def _plain(details: dict) -> dict:
    """step.describe() as JSON can carry it: what is not a number, string or container becomes its text."""
    return json.loads(json.dumps(details, default=str))


class Worker:
    def __init__(self, impls, seed: int):
        import numpy as np

        self.impls = impls
        self.np = np
        self.rng = np.random.default_rng(seed)
        self.steps = {}  # cell id -> prepared step
        self.padding = []  # kept alive: they shift where this process's arrays land
        self.shared_ranks = None  # entered once a data-parallel backend is loaded: see share_ranks

    def share_ranks(self):
        """Data-parallel steps created from now on share their rank processes (impls.torch_ddp.shared_ranks,
        where the checkout has it): each would otherwise start its own, seconds of importing torch per cell."""
        module = sys.modules.get("impls.torch_ddp")
        if self.shared_ranks is None and hasattr(module, "shared_ranks"):
            self.shared_ranks = module.shared_ranks()
            self.shared_ranks.__enter__()

    def close(self):
        if self.shared_ranks is not None:
            self.shared_ranks.__exit__(None, None, None)

    def apply_threads(self):
        try:
            from impls import threads
        except ImportError:  # an old revision without the thread budget: the libraries' defaults
            return None
        return threads.apply()

    def setup(self, cells, check: bool, warm_up_s: float | None = None) -> list[dict]:
        """Each cell's step created (and checked), then called for warm_up_s (default WARM_UP_S), at least 3 times."""
        warm_up_s = WARM_UP_S if warm_up_s is None else warm_up_s
        out, prepared = [], {}
        for cell in cells:
            if cell["id"] in prepared:  # one step serves every cell with its id (the main job's reference)
                out.append(prepared[cell["id"]])
                continue
            # A random allocation before each step moves its buffers to other addresses and
            # cache sets, so no single memory layout decides a verdict (see bench.gate.compare).
            self.padding.append(bytearray(int(self.rng.integers(64, 1 << 16))))
            prepared[cell["id"]] = (
                self._prepare(cell, check, warm_up_s) if cell["name"] != GEMM else self._product(cell, warm_up_s)
            )
            out.append(prepared[cell["id"]])
        return out

    def _product(self, cell: dict, warm_up_s: float) -> dict:
        """A block of square matrix products of the cell's dtype on its device: the main job's yardstick
        of the GEMM rate (as bench.harness.peak.product), timed like any step."""
        self.steps[cell["id"]] = step = Product(cell["problem"]["dtype"], cell["device"], cell["n"])
        return {"status": "ok", "call_s": self._warm_up(step, warm_up_s), "flops": step.flops}

    def _prepare(self, cell: dict, check: bool, warm_up_s: float) -> dict:
        impls, name = self.impls, cell["name"]
        if name not in impls.names():
            return {"status": "skipped", "reason": f"{name} is not registered in this checkout"}
        reason = impls.available([name])[name]
        if reason is not None:
            return {"status": "skipped", "reason": f"{name} unavailable: {reason}"}
        try:
            self.apply_threads()
            created = time.perf_counter()
            step = impls.create(name, impls.Problem(**cell["problem"]), **cell.get("options", {}))
            create_s = time.perf_counter() - created
            self.share_ranks()
            self.apply_threads()  # again, for a backend whose library was first imported by create
        except Exception as error:  # noqa: BLE001 - reported to the driver, which names the side and cell
            return {"status": "error", "reason": f"create failed: {type(error).__name__}: {error}"}
        result = {
            "status": "ok",
            "create_s": create_s,
            "details": _plain(getattr(step, "describe", dict)()),
            "create_options": create_options(step),
        }
        if check:
            from impls import agreement

            agreement.oracle(step.problem, step.arrays)  # computed untimed (and cached for the problem's other cells)
            checked = time.perf_counter()
            report = agreement.check(step)
            result["check_s"] = time.perf_counter() - checked
            result["worst_ratio"] = float(report.worst_ratio)
            if not report.ok:
                return {"status": "disagrees", "reason": str(report), "worst_ratio": float(report.worst_ratio)}
        step = CALLS[cell.get("call", "step")](step)
        result["call_s"] = self._warm_up(step, warm_up_s)
        if not self._finite(step):
            return {"status": "diverged", "reason": "weights are no longer finite after the warm-up"}
        self.steps[cell["id"]] = step
        return result

    def _warm_up(self, step, seconds: float) -> float:
        """Call the step for `seconds`, at least 3 times; its seconds per call (which sizes the blocks)."""
        start = time.perf_counter()
        calls = 0
        while calls < 3 or time.perf_counter() - start < seconds:
            self._call(step)
            calls += 1
        return (time.perf_counter() - start) / calls

    @staticmethod
    def _call(step):
        step.step()
        step.sync()

    def _finite(self, step) -> bool:
        if isinstance(step, Product):
            return True
        w1, w2 = step.weights()
        return bool(self.np.isfinite(w1).all() and self.np.isfinite(w2).all())

    def time(self, cell_id: str, number: int, warm: bool = True) -> float:
        """Seconds per call over `number` calls, after one untimed call that brings the step back into cache.

        warm=False: no untimed call, for a block of one call long enough to be a block by itself,
        where a cold start is a small part of the call and the untimed call would double the cost.
        """
        step = self.steps[cell_id]
        if warm:
            self._call(step)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(number):
                self._call(step)
            elapsed = time.perf_counter() - start
        finally:
            if gc_was_enabled:
                gc.enable()
        return elapsed / number

    def group(self, blocks, settle_s: float = 0.0) -> list[float]:
        """Seconds per call of each block [cell id, calls, warm], timed in the order given, each after a
        pause of settle_s: thread pools that spin for a while after their last call are asleep by then."""
        out = []
        for cell_id, number, warm in blocks:
            if settle_s:
                time.sleep(settle_s)
            out.append(self.time(cell_id, number, warm))
        return out

    def finish(self) -> list[str]:
        """Cells whose weights stopped being finite while they were timed."""
        return [cell_id for cell_id, step in self.steps.items() if not self._finite(step)]

    def environment(self) -> dict:
        versions = {"python": platform.python_version()}
        for name in LIBRARIES:
            try:
                versions[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                versions[name] = None
        try:
            from impls import threads

            thread_record = threads.describe()
        except ImportError:
            thread_record = None
        return {
            "python_executable": sys.executable,
            "impls": str(pathlib.Path(self.impls.__file__).resolve().parent),
            "names": self.impls.names(),
            "versions": versions,
            "threads": thread_record,
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            # How the thread pools wait between calls (bench.gate.workers.PASSIVE_WAITS), as this process sees it.
            "waits": {k: os.environ.get(k) for k in WAIT_SETTINGS},
        }


def pin(cpus) -> None:
    """Every thread of this process onto `cpus`: sched_setaffinity(0) moves only the calling thread, and
    the thread pools (OpenBLAS, OpenMP, torch's) started earlier would stay where they were."""
    cpus = set(cpus)
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except ProcessLookupError:  # a thread that ended since the listing
            pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=pathlib.Path, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--cpus", default=None, help="pin this process to these CPUs (duet), comma-separated")
    args = parser.parse_args(argv)
    replies = _reply_channel()

    def reply(obj):
        replies.write(json.dumps(obj) + "\n")

    if args.cpus is not None:
        pin(int(c) for c in args.cpus.split(","))
    try:
        worker = Worker(_import_impls(args.checkout.resolve()), args.seed)
    except Exception as error:  # noqa: BLE001 - the driver turns this into one line and exit 2
        reply({"error": f"cannot import the suite: {type(error).__name__}: {error}"})
        return 3
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "setup":
            reply({"cells": worker.setup(request["cells"], request["check"], request.get("warm_up_s"))})
        elif op == "time":
            if "cpus" in request:  # a duet's crossover: this side's block runs on the other side's CPUs
                pin(request["cpus"])
            reply({"t": worker.time(request["cell"], request["number"], request.get("warm", True))})
        elif op == "group":
            reply({"t": worker.group(request["blocks"], request.get("settle_s", 0.0))})
        elif op == "finish":
            reply({"diverged": worker.finish()})
        elif op == "environment":
            reply({"environment": worker.environment()})
        elif op == "quit":
            break
        else:
            reply({"error": f"unknown request {op!r}"})
    worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
