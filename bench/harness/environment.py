"""What every result records about where it was measured: machine, CPU, threads, BLAS, versions, commit."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import pathlib
import platform
import subprocess

from impls import threads

from . import machine as machine_identity

REPO = pathlib.Path(__file__).resolve().parents[2]
LIBRARIES = ("numpy", "scipy", "numba", "llvmlite", "torch", "jax", "jaxlib", "threadpoolctl")


cpu_model = machine_identity.cpu_model


@functools.cache  # nvidia-smi is asked once per process
def machine_name() -> str:
    """The name results are filed under on this machine: hostname, CPU, cores, GPU (bench.harness.machine)."""
    return machine_identity.name()


def versions() -> dict[str, str | None]:
    """Python and library versions, read from package metadata so nothing gets imported."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_state(repo: pathlib.Path = REPO) -> dict:
    """Commit and dirty flag of the checkout the harness runs from; None where it is not a git checkout."""

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def machine() -> dict:
    """The machine and the software on it; stable between runs, so comparisons can check it."""
    return {
        "machine": platform.node(),
        "machine_name": machine_name(),
        "system": f"{platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads.describe(),  # the budget, and the BLAS pools with vendor and thread count
        "versions": versions(),
    }


def record() -> dict:
    """machine() plus the git commit and dirty flag; call it after the backends have been loaded."""
    return {**machine(), "git": git_state()}


def load_backends() -> list[str]:
    """Create a 1x1x1x1 step of every implementation that can run here, so their thread pools exist."""
    import impls

    loaded = []
    for name, reason in impls.available().items():
        if reason is None:
            impls.create(name, impls.Problem(n=1, d=1, h=1, o=1))
            loaded.append(name)
    return loaded


def main(argv=None) -> None:
    """`python -m bench.harness.environment --save DIR`: record() of this checkout as DIR/<machine name>-<commit>.json.

    asv's results record the machine, the library versions and the commit, but not the BLAS
    vendor and threads nor whether the checkout was dirty: `make asv-run` saves this beside them.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m bench.harness.environment", description=main.__doc__.splitlines()[0]
    )
    parser.add_argument("--save", type=pathlib.Path, help="folder to write to (default: print to stdout)")
    args = parser.parse_args(argv)
    info = {"implementations": load_backends(), **record()}
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    if args.save is None:
        print(text, end="")
        return
    args.save.mkdir(parents=True, exist_ok=True)
    path = args.save / f"{info['machine_name']}-{(info['git']['commit'] or 'no-commit')[:8]}.json"
    path.write_text(text)
    print(f"environment written to {path}")


if __name__ == "__main__":
    main()
