"""What `make dashboard` hands `asv publish`: a copy of results/asv in which the runs' environments line up.

asv builds the dashboard's selectors and legends from each run's `params`: the machine,
Python and the versions of the libraries in asv.conf.json's matrix when the run was made.
A library added to the matrix later is absent from the params of every earlier run, and asv
then treats "not recorded" as a version of its own: each such library gets a selector with
a `[none]` button on every machine's graphs, and its name and version in the legend of
every later line beside an earlier one (jax, jaxlib, ml_dtypes and opt_einsum, which the
Intel runs predate, on the AMD machine's graphs).

A key that some runs lack and on which every run that records it agrees tells no two
lines apart, so the copy leaves it out of every run. A key whose recorded values differ
is kept, "not recorded" included, since it does tell lines apart. The committed files
are not changed: each keeps what its run recorded.
"""

from __future__ import annotations

import json
import pathlib
import shutil

NOT_RECORDED = (None, "")  # asv reads a null as "" (its backward compatibility)


def results_files(results_dir: pathlib.Path) -> list[pathlib.Path]:
    """The result files of every machine folder (not benchmarks.json, not machine.json)."""
    return sorted(path for path in results_dir.glob("*/*.json") if path.name != "machine.json")


def uninformative_keys(runs: list[dict]) -> list[str]:
    """Keys of `params` that some runs do not record and every run that does records alike."""
    keys = sorted({key for run in runs for key in run.get("params", {})})
    left_out = []
    for key in keys:
        values = [run.get("params", {}).get(key) for run in runs]
        recorded = {value for value in values if value not in NOT_RECORDED}
        if len(recorded) <= 1 and any(value in NOT_RECORDED for value in values):
            left_out.append(key)
    return left_out


def copy_for_publishing(source: pathlib.Path, target: pathlib.Path) -> list[str]:
    """Copy asv's results folder `source` to `target` (which must not exist), leaving out of every run
    the params keys that tell nothing apart; returns those keys."""
    shutil.copytree(source, target)
    paths = results_files(target)
    runs = [json.loads(path.read_text()) for path in paths]
    left_out = uninformative_keys(runs)
    for path, run in zip(paths, runs, strict=True):
        if any(key in run.get("params", {}) for key in left_out):
            run["params"] = {key: value for key, value in run["params"].items() if key not in left_out}
            path.write_text(json.dumps(run))
    return left_out
