"""The two sides of a comparison: a git revision (a clean export of its package) or the working tree, and a Python."""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import subprocess
import sys
import tarfile

from bench.gate import Refused
from bench.harness import environment, peak

EXPORTED = ("impls", "pyproject.toml")  # what a side's checkout needs: the package under comparison


@dataclasses.dataclass
class Side:
    role: str  # "base" or "head"
    spec: str  # what the user wrote: a revision, or "working tree"
    commit: str | None  # full sha; None for the working tree
    dirty: bool | None
    python: str
    checkout: pathlib.Path | None = None
    environment: dict | None = None

    @property
    def label(self) -> str:
        where = self.commit[:8] if self.commit else "working tree" + (" (dirty)" if self.dirty else "")
        return f"{self.spec} [{where}]" if self.spec not in ("working tree",) else where


def _git(*args) -> str:
    return subprocess.run(
        ["git", "-C", str(environment.REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def resolve_commit(spec: str) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except (OSError, subprocess.CalledProcessError):
        raise Refused(f"unknown revision {spec!r} (not a commit of this repository)") from None


def resolve_python(env: str | None) -> str:
    """A tox env name (.tox/ENV), the path of an interpreter, or None for this one."""
    if env is None:
        return sys.executable
    tox = environment.REPO / ".tox" / env / "bin" / "python"
    for candidate in (tox, pathlib.Path(env)):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise Refused(f"environment {env!r} is neither a tox env in .tox/ (run tox -e {env} first) nor a Python")


def export(commit: str) -> pathlib.Path:
    """A clean export of the revision's package, cached by commit (numba's compiled kernels stay beside it)."""
    target = peak.cache_dir() / "compare-checkouts" / commit
    if (target / "impls" / "__init__.py").is_file():
        return target
    archive = subprocess.run(
        ["git", "-C", str(environment.REPO), "archive", "--format=tar", commit, *EXPORTED],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise Refused(f"revision {commit[:8]} has no {' or '.join(EXPORTED)}: {archive.stderr.decode().strip()}")
    tmp = target.with_name(f".{commit}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    try:
        tmp.rename(target)  # whole or not at all: an interrupted export is never reused
    except OSError:  # another compare exported it meanwhile
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return target


def make_side(role: str, spec: str | None, env: str | None) -> Side:
    python = resolve_python(env)
    if spec is None:
        state = environment.git_state()
        return Side(role, "working tree", None, state["dirty"], python, environment.REPO)
    return Side(role, spec, resolve_commit(spec), False, python)
