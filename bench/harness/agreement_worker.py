"""Checks implementations on one problem and prints their verdicts as JSON (a child of bench.harness.verdicts).

It runs as a script and imports nothing but `impls` (and NumPy, which `impls` needs), so it
works in any environment that has the package, asv's own included, and it imports the
backends of the implementations it is given only.

The float64 oracle of a large problem costs more than checking an implementation against
it, so when the spec names an oracle file it is computed once per problem: read from that
file where it holds the oracle of these inputs, else computed and written there for the
next child, which checks another implementation on the same problem.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import traceback

import numpy as np


def main(spec: dict) -> dict:
    import impls
    from impls import agreement, threads

    problem = impls.Problem(**spec["problem"])
    oracle_file = pathlib.Path(spec["oracle"]) if spec.get("oracle") else None
    reasons = impls.available(spec["names"])
    verdicts = {}
    for name in spec["names"]:
        if reasons[name] is not None:
            verdicts[name] = {"unavailable": reasons[name]}
            continue
        try:
            threads.apply()  # as the timed processes create their steps: a plan chosen at create is theirs
            step = impls.create(name, problem)
            expected, oracle = oracle_for(problem, step.arrays, oracle_file)
            report = agreement.check(step, expected=expected)
        except Exception:  # a crash is a failed check, reported like one
            verdicts[name] = {"ok": False, "worst_ratio": float("inf"), "report": traceback.format_exc()}
        else:
            verdicts[name] = {
                "ok": report.ok,
                "worst_ratio": report.worst_ratio,
                "report": str(report),
                "oracle": oracle,  # "read" from the problem's file, or "computed" here
                "create_options": create_options(step),
            }
    return verdicts


def create_options(step) -> dict:
    """impls.create options that make this step again, where its create chose how to run.

    numba:blas chooses its plan (which products by BLAS, which layout) by timing trials at
    create, seconds at the large preset: a step created again with the plan given runs the
    code that was checked, and does not repeat the trials (nor come to another choice).
    """
    plan = getattr(step, "plan", None)
    if isinstance(plan, dict) and plan:
        return {"plan": ",".join(f"{key}={value}" for key, value in plan.items())}
    return {}


def oracle_for(problem, arrays, path: pathlib.Path | None):
    """The oracle of these inputs and whether it was "read" from `path` or "computed" (and then written there)."""
    from impls import agreement

    if path is None:
        return agreement.oracle(problem, arrays), "computed"
    # What the oracle is of: the problem (its optimizer and learning rate too), the inputs and the steps.
    identity = {
        "problem": json.dumps(dataclasses.asdict(problem), sort_keys=True),
        "inputs": agreement.inputs_digest(problem, arrays),
        "steps": str(agreement.DEFAULT_STEPS),
    }
    saved = _read(path, identity)
    if saved is not None:
        return saved, "read"
    expected = agreement.oracle(problem, arrays)
    _write(path, expected, identity)
    return expected, "computed"


def _read(path: pathlib.Path, identity: dict[str, str]):
    """The oracle saved at `path` if it is the oracle `identity` describes, else None."""
    from impls import agreement

    try:
        with np.load(path) as saved:
            if any(str(saved[f"identity_{key}"]) != value for key, value in identity.items()):
                return None
            names = [key.removeprefix("value_") for key in saved.files if key.startswith("value_")]
            expected = agreement.Expected(
                {k: saved[f"value_{k}"] for k in names}, {k: saved[f"bound_{k}"] for k in names}
            )
    except (OSError, KeyError, ValueError):  # absent, removed meanwhile or unreadable: compute it again
        return None
    with contextlib.suppress(OSError):  # its last use, by which bench.harness.verdicts removes unneeded oracles
        os.utime(path)
    return expected


def _write(path: pathlib.Path, expected, identity: dict[str, str]) -> None:
    arrays = {f"identity_{k}": np.array(v) for k, v in identity.items()}
    arrays |= {f"value_{k}": v for k, v in expected.values.items()}
    arrays |= {f"bound_{k}": v for k, v in expected.bounds.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # a half-written oracle is never read


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1])), sys.stdout)
