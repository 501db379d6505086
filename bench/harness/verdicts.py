"""Agreement verdicts shared by the processes of one asv run.

asv runs every benchmark and parameter set in a fresh process, and the float64 oracle of a
large problem costs more than timing it. So each implementation is checked once per
problem and run, and only when a parameter set of it is set up: the first setup that needs
a verdict runs bench/harness/agreement_worker.py in a child process that checks that one
implementation, and leaves the verdict in a folder named by the run's token (from asv's
setup_cache). A run of a few implementations (`asv run -b numba:blas`) checks those and no
others. The oracle is computed once per problem: the first child of a problem writes it
into the run's folder and the children of the other implementations read it there. The
child keeps the timed process free of the check's memory (peakmem_step) and of the
oracle's run, and imports only the backend that the timed process imports anyway.
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
import traceback
import urllib.parse
import uuid

import impls

from .prepare import Verdict

WORKER = pathlib.Path(__file__).with_name("agreement_worker.py")


ROOT = pathlib.Path(tempfile.gettempdir()) / "stepbench-verdicts"
KEEP_S = 2 * 24 * 3600  # runs older than this are forgotten when a new one starts
# A large problem's oracle takes about 170 MB. One that no child has read for this long is removed
# when a new run starts: a run still going would only compute it again.
ORACLE_KEEP_S = 3600
ORACLE = "oracle.npz"


def new_run() -> str:
    """A token naming one run's verdicts; asv's setup_cache returns it to every setup of the run."""
    now = time.time()
    for old in ROOT.glob("*") if ROOT.is_dir() else ():
        if now - old.stat().st_mtime > KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
    for oracle in ROOT.glob(f"*/*/{ORACLE}") if ROOT.is_dir() else ():
        try:
            if now - oracle.stat().st_mtime > ORACLE_KEEP_S:
                oracle.unlink()
        except FileNotFoundError:  # another run's cleanup was first
            pass
    return uuid.uuid4().hex


def _folder(run: str) -> pathlib.Path:
    return ROOT / run


def problem_folder(run: str, problem: impls.Problem) -> pathlib.Path:
    """Where the verdicts and the oracle of one problem in one run are kept."""
    fields = json.dumps(dataclasses.asdict(problem), sort_keys=True)
    return _folder(run) / hashlib.blake2b(fields.encode(), digest_size=8).hexdigest()


def lookup(run: str):
    """verdict(name, problem) for bench.harness.prepare: checked in a child process once per
    implementation, problem and run."""

    def verdict(name: str, problem: impls.Problem) -> Verdict:
        folder = problem_folder(run, problem)
        path = folder / f"{urllib.parse.quote(name, safe='')}.json"  # a name may hold any character
        if not path.exists():
            spec = {"problem": dataclasses.asdict(problem), "names": [name], "oracle": str(folder / ORACLE)}
            _check_in_child(spec, path)
        found = json.loads(path.read_text())[name]
        if "unavailable" in found:  # available here, not in the child: say so rather than time unchecked
            return Verdict(False, float("inf"), f"{name} was not checked: {found['unavailable']}")
        return Verdict(found["ok"], found["worst_ratio"], found["report"], found.get("create_options", {}))

    return verdict


def _check_in_child(spec: dict, path: pathlib.Path) -> None:
    if may_fork():
        _check_in_forked_child(spec, path)
    else:
        _check_in_new_process(spec, path)


def _threads() -> int | None:
    """The threads this process runs (Linux), or None where that cannot be read."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


# The threads of the process that imported this module: in asv, the one every benchmark process is
# forked from (bench/benchmarks/training_step.py), with its libraries imported and no pool started.
_THREADS_AT_IMPORT = _threads()


def may_fork() -> bool:
    """Whether a child may be forked from this process: it runs no thread it did not run when it
    imported this module. asv's benchmark processes are forked from one that imported the suite;
    before a step is created they are in that state, and a child forked then starts as they did,
    with the backends' libraries imported (seconds of imports for torch and jax). After a step has
    run, a backend's thread pool may be running (OpenMP's cannot be used in a forked child): the
    child is then a new process.
    """
    now = _threads()
    if not hasattr(os, "fork") or now is None or _THREADS_AT_IMPORT is None or now > _THREADS_AT_IMPORT:
        return False
    return not _jax_started()


def _jax_started() -> bool:
    """Whether jax has started its backends here (its threads may start later than that): jax
    cannot run in a child forked after that. Unknown counts as started."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # another jax: its internals moved
        return True


def _check_in_forked_child(spec: dict, path: pathlib.Path) -> None:
    pid = os.fork()
    if pid == 0:  # the child: check, leave the verdicts, and exit without running anything of the parent's
        status = 1
        try:
            from . import agreement_worker

            _write(path, json.dumps(agreement_worker.main(spec)))
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if not path.exists():
        code = os.waitstatus_to_exitcode(status)
        raise RuntimeError(f"the agreement check of {', '.join(spec['names'])} ended without a verdict (exit {code})")


def _check_in_new_process(spec: dict, path: pathlib.Path) -> None:
    # The child imports the same `impls` as this process, wherever that comes from.
    package_root = str(pathlib.Path(impls.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(spec)], env=env, stdout=subprocess.PIPE, text=True, check=True
    ).stdout
    _write(path, out)


def _write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)  # a half-written file is never read
