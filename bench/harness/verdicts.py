"""Agreement verdicts shared by the processes of one asv run.

asv runs every benchmark and parameter set in a fresh process, and the float64 oracle of a
large problem costs more than timing it. So each problem is checked once per run: the
first setup that needs it runs bench/harness/agreement_worker.py in a child process, which checks
every implementation of the grid on that problem against one oracle run, and leaves the
verdicts in a folder named by the run's token (from asv's setup_cache). The child keeps
the timed process free of other backends and of the check's memory (peakmem_step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import impls

from . import grid
from .prepare import Verdict

WORKER = pathlib.Path(__file__).with_name("agreement_worker.py")


ROOT = pathlib.Path(tempfile.gettempdir()) / "stepbench-verdicts"
KEEP_S = 2 * 24 * 3600  # runs older than this are forgotten when a new one starts


def new_run() -> str:
    """A token naming one run's verdicts; asv's setup_cache returns it to every setup of the run."""
    for old in ROOT.glob("*") if ROOT.is_dir() else ():
        if time.time() - old.stat().st_mtime > KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
    return uuid.uuid4().hex


def _folder(run: str) -> pathlib.Path:
    return ROOT / run


def lookup(run: str, preset: str | None = None):
    """verdict(name, problem) for bench.harness.prepare: checked in a child process once per problem and run."""

    def verdict(name: str, problem: impls.Problem) -> Verdict:
        fields = dataclasses.asdict(problem)
        key = hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=8).hexdigest()
        path = _folder(run) / f"{key}.json"
        if not path.exists():
            names = [n for n in grid.IMPLEMENTATIONS if grid.size_skip_reason(n, preset) is None]
            _check_in_child({"problem": fields, "names": names}, path)
        found = json.loads(path.read_text())[name]
        if "unavailable" in found:  # available here, not in the child: say so rather than time unchecked
            return Verdict(False, float("inf"), f"{name} was not checked: {found['unavailable']}")
        return Verdict(found["ok"], found["worst_ratio"], found["report"])

    return verdict


def _check_in_child(spec: dict, path: pathlib.Path) -> None:
    # The child imports the same `impls` as this process, wherever that comes from.
    package_root = str(pathlib.Path(impls.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(spec)], env=env, stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(out)
    os.replace(tmp, path)  # a half-written file is never read
