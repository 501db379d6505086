"""Does the triage find a slowdown in a history, and only there? Throwaway histories, each with an asv run and a triage.

    python -m bench.studies.triage_trials [--trials 10] [--controls 3] [--commits 16] [--seed 0] [--asv-rounds 2]
        [--out FILE]

Each trial clones this repository's last commit into a temporary folder and adds `--commits`
commits on top (each appends a line to a file nobody imports). In a slowdown trial, commit k
(drawn at random, 1 <= k < commits) also makes the numpy and numba steps spin for a tenth of
their own time after each step; a control trial has no slowdown. asv then runs the selected
benchmarks (numpy and numba at tutorial, float32, SGD) at the first and the last
commit only, so that an alert spans the whole history (`--asv-rounds` runs at each, alternated), and `python -m bench triage` re-measures
and bisects what asv's step detection reports. A trial is scored on the numpy and numba alerts:
confirmed with the culprit k named, undecided, or wrong (a culprit other than k, or a
confirmed alert in a control); and on the gate runs each took.

Runs take minutes each (asv twice, numba compiled anew for each commit the gate exports); the
figures of docs/triage.md come from it.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

from bench.harness import cli, environment

BENCHMARKS = r"time_step\('(numpy|numba)', 'tutorial', 'float32', 'sgd'\)"
SLOWED = ("numpy", "numba")  # the implementations the slowdown reaches
# Appended to each module: after each step, spin until the step has taken 1.1 times its own time.
SLOWDOWN = """

def _spin_a_tenth(step_once):
    import time as _time

    def slower(self):
        start = _time.perf_counter()
        out = step_once(self)
        until = start + 1.1 * (_time.perf_counter() - start)
        while _time.perf_counter() < until:
            pass
        return out

    return slower


{cls}._step = _spin_a_tenth({cls}._step)
"""
SLOWED_MODULES = {"impls/numpy_ref.py": "NumpyStep", "impls/numba_step.py": "NumbaStep"}


def _git(clone: pathlib.Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(clone), "-c", "user.name=trial", "-c", "user.email=trial@localhost", *args],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def build_history(clone: pathlib.Path, commits: int, slow_at: int | None) -> list[str]:
    """`commits` new commits on the clone's HEAD, oldest first; the slowdown added at index slow_at."""
    made = []
    for i in range(commits):
        with open(clone / "history-of-a-trial.txt", "a") as f:
            f.write(f"commit {i}\n")
        if i == slow_at:
            for module, cls in SLOWED_MODULES.items():
                with open(clone / module, "a") as f:
                    f.write(SLOWDOWN.format(cls=cls))
        _git(clone, "add", "-A")
        _git(clone, "commit", "-q", "-m", f"trial commit {i}" + (" (slower)" if i == slow_at else ""))
        made.append(_git(clone, "rev-parse", "HEAD"))
    return made


def _run(clone: pathlib.Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    # the clone's impls and bench, not this checkout's (asv drops PYTHONPATH in its benchmark processes
    # and puts ASV_PYTHONPATH in its place)
    env = os.environ | {"PYTHONPATH": str(clone), "ASV_PYTHONPATH": str(clone)}
    return subprocess.run(list(args), cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


def asv_run(clone: pathlib.Path, commit: str, machine: str) -> None:
    """One asv run of the selected benchmarks at `commit`, its samples added to that commit's earlier ones."""
    _git(clone, "checkout", "-q", commit)
    done = _run(
        clone, sys.executable, "-m", "asv", "run", "--python=same", "--set-commit-hash", commit,
        "--machine", machine, "-b", BENCHMARKS, "--show-stderr", "--append-samples",
    )  # fmt: skip
    if done.returncode != 0:
        raise cli.Fatal(f"asv run at {commit[:8]} failed: {(done.stderr or done.stdout)[-2000:]}")


def trial(workdir: pathlib.Path, commits: int, slow_at: int | None, max_time_s: float, asv_rounds: int = 2) -> dict:
    clone = workdir / "clone"
    subprocess.run(["git", "clone", "-q", str(environment.REPO), str(clone)], check=True)
    shutil.rmtree(clone / "results" / "asv", ignore_errors=True)  # this history's results only
    shutil.rmtree(clone / "results" / "triage", ignore_errors=True)
    history = build_history(clone, commits, slow_at)
    machine = _run(clone, sys.executable, "-m", "bench.harness.machine", "register").stdout.strip()
    started = time.monotonic()
    # asv's rounds alternate between the two commits (ABAB), each a process of its own whose samples
    # add to the commit's result, as asv's --interleave-rounds would if --python=same allowed two commits:
    # one process per commit read identical code up to 1.15x apart here, so its step detection missed
    # a 10% step in 3 of 10 trials and alerted on 3 of 3 controls.
    for _ in range(asv_rounds):
        for commit in (history[0], history[-1]):
            asv_run(clone, commit, machine)
    asv_s = time.monotonic() - started
    _git(clone, "checkout", "-q", history[-1])
    triaged = _run(clone, sys.executable, "-m", "bench", "triage", "--machine", machine, "--max-time", str(max_time_s))
    if triaged.returncode != 0:
        raise cli.Fatal(f"triage failed: {triaged.stderr[-2000:]}")
    record = json.loads((clone / "results" / "triage" / f"{machine}.json").read_text())
    return score(record, history, slow_at) | {"asv_s": asv_s, "triage_s": time.monotonic() - started - asv_s}


def score(record: dict, history: list[str], slow_at: int | None) -> dict:
    """Per alert: its implementation, outcome, culprit (as an index into the history) and gate runs."""
    alerts = []
    for a in record["alerts"]:
        culprit = history.index(a["culprit"]) if a["culprit"] in history else a["culprit"]
        slowed = a["params"].get("implementation") in SLOWED and slow_at is not None
        right = culprit == slow_at if slowed else a["outcome"] != "confirmed"
        alerts.append(
            {
                "implementation": a["params"].get("implementation"),
                "asv_factor": a["factor"],
                "outcome": a["outcome"],
                "interval": a["confirmation"] and [a["confirmation"][k] for k in ("ratio", "low", "high")],
                "bisection": a["bisection"],
                "culprit": culprit,
                "gate_runs": a["gate_runs"],
                "why": a["why"],
                "midpoints": [
                    [
                        history.index(m["head"]) if m["head"] in history else m["head"],
                        m["verdict"],
                        m["ratio"],
                        m["low"],
                        m["high"],
                        m["rounds"],
                    ]
                    for m in a["steps"]
                ],
                "named_k": slowed and culprit == slow_at,
                "wrong": (a["culprit"] is not None and not right) or (not slowed and a["outcome"] == "confirmed"),
            }
        )
    return {"slow_at": slow_at, "alerts": alerts}


def main(argv=None) -> int:
    parser = cli.Parser(prog="python -m bench.studies.triage_trials", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="histories with a slowdown")
    parser.add_argument("--controls", type=int, default=3, help="histories without one")
    parser.add_argument("--commits", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-time", type=float, default=900.0, help="each triage's --max-time")
    parser.add_argument("--asv-rounds", type=int, default=2, help="asv runs per end of the history, alternated")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON of every trial (written after each)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    plan = [rng.randrange(1, args.commits) for _ in range(args.trials)] + [None] * args.controls
    done = []
    for i, slow_at in enumerate(plan, 1):
        with tempfile.TemporaryDirectory(prefix="stepbench-trial-") as folder:
            result = trial(pathlib.Path(folder), args.commits, slow_at, args.max_time, args.asv_rounds)
        done.append(result)
        found = ", ".join(
            f"{a['implementation']} {a['outcome']} culprit {a['culprit']} ({a['gate_runs']} runs)"
            for a in result["alerts"]
        )
        print(f"trial {i}/{len(plan)}: slowdown at {slow_at}: {found or 'no alert'}", flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(done, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.studies.triage_trials", main))
