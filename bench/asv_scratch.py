"""`python -m bench.asv_scratch SRC DST`: asv's configuration with results and html under .asv/ (ignored by git).

The smoke run of `make test` uses it: `asv run --dry-run` still writes the machine's
machine.json into its results folder, and a test run must leave the checkout as it was.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

SCRATCH = ".asv/smoke"
# asv reads these relative to the folder of the configuration file (it changes into that folder).
PATH_KEYS = ("repo", "benchmark_dir", "env_dir", "results_dir", "html_dir")


def scratch_config(source: pathlib.Path, target: pathlib.Path) -> dict:
    # Imported here: asv imports every module of bench/ in the environments it builds, which have no asv.
    from asv import util

    config = util.load_json(str(source), js_comments=True)
    config["results_dir"] = f"{SCRATCH}/results"
    config["html_dir"] = f"{SCRATCH}/html"
    # Paths stay relative (the copy must not name this machine's folders) but now from the copy's folder.
    here, there = source.resolve().parent, target.resolve().parent
    for key in PATH_KEYS:
        if key in config and not os.path.isabs(config[key]):
            config[key] = os.path.relpath(here / config[key], there)
    return config


def main(argv=None) -> int:
    source, target = map(pathlib.Path, sys.argv[1:] if argv is None else argv)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(scratch_config(source, target), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
