"""Keep the path of this machine's interpreter out of asv's result files.

`asv run --python=same` (make asv-run) names its environment after the interpreter's
absolute path, in the result file's name and inside it (asv's ExistingEnvironment), so a
committed result would carry a local path such as the checkout's location. `python -m
bench.asv_results DIR` renames every such result after the Python version instead, as
asv's own virtualenv results are named: `existing-py3.11`, python `3.11`.
"""

from __future__ import annotations

import argparse
import json
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
    if target != path and target.exists():
        raise FileExistsError(f"{target} exists already: two runs of one commit with Python {version}")
    target.write_text(json.dumps(data, separators=(", ", ": ")))
    if target != path:
        path.unlink()
    return target


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
    parser = argparse.ArgumentParser(prog="python -m bench.asv_results", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=pathlib.Path, help="asv's results_dir (results/asv)")
    args = parser.parse_args(argv)
    for path in anonymize_all(args.results_dir):
        print(f"renamed for Python version, not path: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
