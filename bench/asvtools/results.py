"""Keep the path of this machine's interpreter out of asv's result files.

`asv run --python=same` (make asv-run) names its environment after the interpreter's
absolute path, in the result file's name and inside it (asv's ExistingEnvironment), so a
committed result would carry a local path such as the checkout's location. `python -m
bench.asvtools.results DIR` renames every such result after the Python version instead, as
asv's own virtualenv results are named: `existing-py3.11`, python `3.11`.

A second run of one commit finds the first one's file under the new name, which asv no
longer recognises as its own: the two are merged, the newer run's benchmarks replacing the
older's and the rest kept, as asv itself does when it runs a commit again in one environment.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

PREFIX = "existing-py"


def _version(python: str) -> str:
    """'3.11' from an interpreter path ending in python3.11; else this interpreter's version."""
    match = re.search(r"python(\d+\.\d+)$", python)
    return match.group(1) if match else f"{sys.version_info.major}.{sys.version_info.minor}"


def anonymize(path: pathlib.Path) -> pathlib.Path:
    """Rewrite one result file if its environment is named after a path; returns its (new) path."""
    data = json.loads(path.read_text())
    python = data.get("python", "")
    if not data.get("env_name", "").startswith(PREFIX) or "/" not in python and "\\" not in python:
        return path
    version = _version(python)
    data["python"] = data["params"]["python"] = version
    data["env_name"] = f"{PREFIX}{version}"
    target = path.with_name(f"{data['commit_hash'][:8]}-{data['env_name']}.json")
    if target.exists():
        data = merge(json.loads(target.read_text()), data)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, separators=(", ", ": ")))
    os.replace(tmp, target)  # an interrupted rewrite leaves the earlier run's file whole
    if path != target:
        path.unlink()
    return target


def merge(earlier: dict, later: dict) -> dict:
    """One result file from two runs of one commit and environment: the later run's benchmarks win.

    Per-benchmark entries ("results", "durations") are kept from the earlier run where the
    later one did not run them (`asv run -b ...`); everything else describes the later run.
    Results recorded in a different column layout (another asv version) cannot be mixed:
    the later run replaces the earlier one.
    """
    if earlier.get("result_columns") != later.get("result_columns"):
        return later
    merged = dict(later)
    for key in ("results", "durations"):
        merged[key] = {**earlier.get(key, {}), **later.get(key, {})}
    return merged


def anonymize_all(results_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every result under results_dir (machine folders), rewritten where needed; the ones changed."""
    changed = []
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        new = anonymize(path)
        if new != path:
            changed.append(new)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asvtools.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=pathlib.Path, help="asv's results_dir (results/asv)")
    args = parser.parse_args(argv)
    for path in anonymize_all(args.results_dir):
        print(f"renamed for Python version, not path: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
