"""Plans chosen at create, remembered on this machine: two runs of `make bench` time the same code.

numba:blas chooses how to run (each product by BLAS or the loops, the buffers' layout, MKL's
JIT kernels) by timing trials when it is created, and a choice between two ways a few per
cent apart is decided by noise: two quiet runs of the same selection chose different layouts
for numba:blas at tutorial float32 (trials 0.96 and 0.98 about a 3% margin) and their
speed-ups came out 5.6% apart, each run's interval honest about its own plan. As FFTW's
wisdom or cuDNN's autotuning cache, the first run's choice is kept, with the trials behind it,
in STEPBENCH_CACHE (bench.harness.peak.cache_dir), under a key of everything the choice
depends on: the machine and its CPU, the library versions, the source of `impls`, the step's
problem and its threads. Every later run creates the step with that plan (its create runs no
trials) and the report says so; `python -m bench --replan` chooses again and replaces it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import json
import os
import pathlib
import platform
import tempfile

import impls
from bench.harness import environment, peak


@functools.cache
def impls_digest() -> str:
    """One hash of the source of the impls package: a plan chosen by other code is not reused."""
    digest = hashlib.sha256()
    root = pathlib.Path(impls.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _this_machine() -> dict:
    """What every plan of this process depends on alike: read once, not for each cell (twice a run)."""
    return {
        "machine": platform.node(),  # as environment.machine()["machine"], without its thread-pool survey
        "cpu": environment.cpu_model(),
        "versions": environment.versions(),
        "mkl": _version("mkl"),  # numba:blas's JIT kernels (not among the environment's libraries)
        "impls": impls_digest(),
    }


def key(name: str, problem: impls.Problem, threads: int | None) -> str:
    identity = _this_machine() | {
        "name": name,
        "problem": dataclasses.asdict(problem),
        "threads": threads,
    }
    return hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(), digest_size=8).hexdigest()


def path(name: str, problem: impls.Problem, threads: int | None) -> pathlib.Path:
    safe = "".join(c if c.isalnum() else "-" for c in name)
    return peak.cache_dir() / "plans" / f"{safe}-{key(name, problem, threads)}.json"


def remembered(name: str, problem: impls.Problem, threads: int | None) -> dict | None:
    """{"options": create options, "trials": the trials that chose them, "chosen_at": when}, or None."""
    try:
        found = json.loads(path(name, problem, threads).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("options"), dict) else None


def remember(name: str, problem: impls.Problem, threads: int | None, options: dict, details: dict) -> None:
    """Keep a plan chosen by trials (written whole or not at all: a run stopped half-way leaves no torn file)."""
    target = path(name, problem, threads)
    record = {
        "options": options,
        "trials": details.get("trials") or {},
        "chosen_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, delete=False, suffix=".tmp") as f:
        json.dump(record, f, indent=1)
    os.replace(f.name, target)


def give_remembered(cells, threads: int | None) -> dict[str, dict]:
    """Each cell with a remembered plan is given it (cell.options, which its first create then uses);
    returns {cell id: what was remembered}."""
    given = {}
    for cell in cells:
        found = remembered(cell.name, cell.problem, threads)
        if found is not None:
            cell.options = dict(found["options"])
            given[cell.id] = found
    return given


def keep_chosen(cells, threads: int | None, given: dict[str, dict]) -> None:
    """Remember each plan this run's trials chose (a checked step's create options), for the next run."""
    for cell in cells:
        if cell.id not in given and cell.status == "ok" and cell.options and any(cell.times):
            remember(cell.name, cell.problem, threads, cell.options, cell.details)


def describe_given(details: dict, found: dict) -> dict:
    """The step's details as the report shows them: the plan's trials, from the run that chose it."""
    return details | {
        "plan_chosen": f"remembered: chosen by trials on {found['chosen_at'][:10]} (--replan chooses again)",
        "trials": found.get("trials") or {},
    }
