"""Version drift: the agreement checker (no timing) for every implementation, here or in each tox env.

    python -m impls.drift                         this environment, as a table
    python -m impls.drift --json FILE             this environment, as JSON (what each tox env runs)
    python -m impls.drift --tox py310,py311,...   every listed tox env, then one table env x implementation

Each implementation is checked at the `seed` and `tutorial` presets in both dtypes with both
optimizers, plus relu'(0) = 0 on an exactly-zero column of h. A cell reads `pass 0.031`
(worst error/bound ratio over those checks), `FAIL 3.2e+05 (where)`, or `skip` with the
reason. The probe column shows torch's gradient of clamp(min=0) at exactly 0, which
changed from 1 to 0 between torch 2.13 and 2.14: the kind of drift this table is for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata

import numpy as np

from . import agreement
from .problem import Arrays, Problem, make_arrays
from .registry import available, create

PRESETS = ("seed", "tutorial")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")
PROBE = "torch clamp'(0)"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("numpy", "numba", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "-"
    return versions


def _relu_at_zero_ok(name: str, dtype: str) -> bool:
    """An exactly-zero column of h must get exactly zero gradient (relu'(0) = 0)."""
    p = Problem(n=7, d=13, h=5, o=3, dtype=dtype, init="randn")
    x, y, w1, w2 = (a.copy() for a in make_arrays(p))
    w1[:, 2] = 0
    _, gw1, _ = create(name, p, Arrays(x, y, w1, w2)).loss_and_grads()
    return bool(np.all(gw1[:, 2] == 0))


def check_implementation(name: str) -> dict:
    """Worst agreement ratio over the drift configurations, and where it failed if it did."""
    worst, failures = 0.0, []
    for preset in PRESETS:
        for dtype in DTYPES:
            for optimizer in OPTIMIZERS:
                report = agreement.check(create(name, agreement.check_problem(preset, dtype, optimizer)))
                worst = max(worst, report.worst_ratio)
                if not report.ok:
                    failures.append(f"{preset}/{dtype}/{optimizer}: {report.worst.quantity}")
        if not _relu_at_zero_ok(name, dtype):
            failures.append(f"relu'(0) != 0 in {dtype}")
    return {"status": "fail" if failures else "pass", "worst_ratio": worst, "failures": failures}


def clamp_grad_at_zero() -> float | None:
    """torch's autograd gradient of clamp(min=0) at exactly 0, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    x = torch.zeros(1, requires_grad=True)
    x.clamp(min=0).sum().backward()
    return float(x.grad[0])


def run_here() -> dict:
    results = {}
    for name, reason in available().items():
        if reason is not None:
            results[name] = {"status": "skip", "reason": reason}
            continue
        print(f"  checking {name}", file=sys.stderr, flush=True)
        try:
            results[name] = check_implementation(name)
        except Exception as exc:  # a crash is a result here, reported in the table
            results[name] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    return {"versions": _versions(), "results": results, "probe": clamp_grad_at_zero()}


def _cell(result: dict | None) -> str:
    if result is None:
        return "-"
    status = result["status"]
    if status == "pass":
        return f"pass {result['worst_ratio']:.2g}"
    if status == "fail":
        return f"FAIL {result['worst_ratio']:.2g} ({'; '.join(result['failures'][:2])})"
    if status == "skip":
        return "skip"
    return "ERROR"


def format_table(runs: dict[str, dict]) -> str:
    """Rows: env; columns: versions, each implementation, the clamp probe. Skip reasons listed below."""
    names = list(dict.fromkeys(n for run in runs.values() for n in run.get("results", {})))
    header = ["env", "python", "numpy", "numba", "torch", *names, PROBE]
    rows = []
    notes = []
    for env, run in runs.items():
        if "error" in run:
            rows.append([env, *["?"] * 4, *["ERROR"] * len(names), "?"])
            notes.append(f"{env}: {run['error']}")
            continue
        v = run["versions"]
        cells = [_cell(run["results"].get(n)) for n in names]
        probe = "-" if run["probe"] is None else f"{run['probe']:g}"
        rows.append([env, v["python"], v["numpy"], v["numba"], v["torch"], *cells, probe])
        for n, r in run["results"].items():
            if r["status"] in ("skip", "error"):
                notes.append(f"{env}: {n} {r['status']}: {r['reason']}")
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ([""] + sorted(set(notes)) if notes else []))


def run_tox(envs: list[str]) -> dict[str, dict]:
    """Run this module in each tox env (tox creates and installs the env as needed)."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, env in enumerate(envs, 1):
            out = os.path.join(tmp, f"{env}.json")
            print(f"[{i}/{len(envs)}] tox env {env}", file=sys.stderr, flush=True)
            cmd = [sys.executable, "-m", "tox", "exec", "-e", env, "--", "python", "-m", "impls.drift", "--json", out]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0 or not os.path.exists(out):
                tail = proc.stdout.strip().splitlines()[-3:]
                runs[env] = {"error": f"tox exited {proc.returncode}: {' | '.join(tail)}"}
                continue
            with open(out) as f:
                runs[env] = json.load(f)
    return runs


DEFAULT_ENVS = "py310,py311,py312,py313,py311-numpy1"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m impls.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="write this environment's results as JSON")
    parser.add_argument("--tox", metavar="ENVS", nargs="?", const=DEFAULT_ENVS, help=f"(default {DEFAULT_ENVS})")
    args = parser.parse_args(argv)
    if args.tox:
        runs = run_tox([e for e in args.tox.split(",") if e])
    else:
        runs = {"here": run_here()}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(runs["here"], f, indent=1)
            return 0
    print(format_table(runs))
    failed = any(
        "error" in r or any(x["status"] in ("fail", "error") for x in r["results"].values()) for r in runs.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
