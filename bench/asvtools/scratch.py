"""asv configurations written elsewhere than asv.conf.json: `python -m bench.asvtools.scratch SRC DST`.

The smoke run of `make test` uses one with results and html under .asv/ (ignored by git):
`asv run --dry-run` still writes the machine's machine.json into its results folder, and a
test run must leave the checkout as it was. `make dashboard` and its browser test use one
that publishes into a folder of their choice.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

SCRATCH = ".asv/smoke"
# asv reads these relative to the folder of the configuration file (it changes into that folder).
PATH_KEYS = ("repo", "benchmark_dir", "env_dir", "results_dir", "html_dir")


def relocated(source: pathlib.Path, target: pathlib.Path, **paths: str) -> dict:
    """source's configuration, with `paths` (relative to source's folder, or absolute) replacing
    its own, every relative path re-expressed from target's folder."""
    # Imported here: asv imports every module of bench/ in the environments it builds, which have no asv.
    from asv import util

    config = util.load_json(str(source), js_comments=True)
    config.update(paths)
    # Paths stay relative (the copy must not name this machine's folders) but now from the copy's folder.
    here, there = source.resolve().parent, target.resolve().parent
    for key in PATH_KEYS:
        if key in config and not os.path.isabs(config[key]):
            config[key] = os.path.relpath(here / config[key], there)
    return config


def scratch_config(source: pathlib.Path, target: pathlib.Path) -> dict:
    return relocated(source, target, results_dir=f"{SCRATCH}/results", html_dir=f"{SCRATCH}/html")


def write(source: pathlib.Path, target: pathlib.Path, **paths: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(relocated(source, target, **paths), indent=1) + "\n")


def resolved(config: pathlib.Path, key: str) -> pathlib.Path:
    """Where asv will find `key` of the configuration file `config`."""
    return (config.resolve().parent / json.loads(config.read_text())[key]).resolve()


def main(argv=None) -> int:
    source, target = map(pathlib.Path, sys.argv[1:] if argv is None else argv)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(scratch_config(source, target), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
