"""The name a machine's results are filed under: it changes when the hardware does, never only the host.

    python -m bench.harness.machine        # prints it, for make asv-machine and results/<kind>/<name>/

hostname-cpu-Ncpu[-gpu], for example `vm-intel-xeon-2cpu` or `node3-amd-epyc-7b13-16cpu-nvidia-h200`.
asv names a machine after its hostname alone, and every VM of a pool may share one: two CPUs
would then share a history, and each run would relabel the older results with its own CPU.
Standard library only, so that the Makefile can ask before anything else is imported.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys

# Words that say nothing about which CPU it is.
_NOISE = re.compile(r"\((r|tm)\)|\b(cpu|processor|\d+-core)\b|@", re.IGNORECASE)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unknown"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[str]:
    """NVIDIA GPU model names from nvidia-smi (no CUDA library is loaded); empty where there is none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def name(host: str | None = None, cpu: str | None = None, cores: int | None = None, gpu_names=None) -> str:
    host = platform.node() if host is None else host
    cpu = cpu_model() if cpu is None else cpu
    cores = os.cpu_count() if cores is None else cores
    gpu_names = gpus() if gpu_names is None else gpu_names
    parts = [slug(host), slug(_NOISE.sub(" ", cpu)), f"{cores}cpu"]
    if gpu_names:
        count = f"{len(gpu_names)}x" if len(gpu_names) > 1 else ""
        parts.append(count + slug(gpu_names[0]))
    return "-".join(parts)


# What a machine's name stands for: a results folder's machine.json that agrees on these (and on
# the RAM, within RAM_TOLERANCE) describes this machine, whatever its OS string says.
HARDWARE = ("machine", "arch", "cpu", "num_cpu")
# VMs of one pool report a few hundred kB more or less RAM than each other (the two committed
# machines' records and this code's own runs); a different memory size is more than this.
RAM_TOLERANCE = 0.01
REPO = pathlib.Path(__file__).resolve().parents[2]


def register(results_dir: pathlib.Path | None = None, machine_file: str | None = None) -> str:
    """Describe this machine to asv (~/.asv-machine.json) under its name; returns the name.

    `asv machine --yes --machine NAME` stores only the fields that differ from asv's defaults,
    the name alone: every result would then carry no CPU, OS or RAM. So the whole record is
    saved through asv's own machine file.

    Every `asv run` writes the record it is given into results_dir/NAME/machine.json. Where
    that file is committed and describes the same hardware, that record is registered as it
    is, so the run leaves the file byte for byte as it was: VMs of one pool share a name and
    hardware but report other kernel builds and a slightly different RAM size, and rewriting
    the committed description at every run would only churn it. A committed record of other
    hardware under this name is not kept: this machine's own description is registered, and
    the run will rewrite the file, as this says on stderr.
    """
    from asv import util  # imported here: asv imports bench/ without asv
    from asv.machine import Machine, MachineCollection

    record = Machine.get_defaults() | {"machine": name()}
    if results_dir is None:
        config = util.load_json(str(REPO / "asv.conf.json"), js_comments=True)
        results_dir = REPO / config["results_dir"]
    committed_path = pathlib.Path(results_dir) / record["machine"] / "machine.json"
    committed = _committed(committed_path)
    if committed is not None and same_hardware(committed, record):
        record = committed
    elif committed is not None:
        print(
            f"{committed_path} describes other hardware than this machine of the same name: the next asv run "
            "rewrites it with this machine's description",
            file=sys.stderr,
        )
    MachineCollection.save(record["machine"], record, _path=machine_file)
    return record["machine"]


def _committed(path: pathlib.Path) -> dict | None:
    """The machine record of a results folder, without asv's file version, or None where there is none."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    record.pop("version", None)  # asv adds its own when it writes the file
    return record


def same_hardware(committed: dict, here: dict) -> bool:
    """Whether a committed record describes this machine: the same name, architecture, CPU and cores,
    and the same RAM within RAM_TOLERANCE. The OS string is not compared."""
    if any(committed.get(key) != here.get(key) for key in HARDWARE):
        return False
    try:
        ram, ram_here = float(committed["ram"]), float(here["ram"])
    except (KeyError, TypeError, ValueError):
        return False
    return abs(ram - ram_here) <= RAM_TOLERANCE * max(ram, ram_here)


if __name__ == "__main__":
    # `python -m bench.harness.machine`: the name; `python -m bench.harness.machine register`: described to asv too.
    if sys.argv[1:2] == ["register"]:
        print(register())
        sys.exit(0)
    print(name())
    sys.exit(0)
