"""The name a machine's results are filed under: it changes when the hardware does, never only the host.

    python -m bench.harness.machine        # prints it, for make asv-machine and results/<kind>/<name>/

hostname-cpu-Ncpu[-gpu], for example `vm-intel-xeon-2cpu` or `node3-amd-epyc-7b13-16cpu-nvidia-h200`.
asv names a machine after its hostname alone, and every VM of a pool may share one: two CPUs
would then share a history, and each run would relabel the older results with its own CPU.
Standard library only, so that the Makefile can ask before anything else is imported.
"""

from __future__ import annotations

import os
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


def register() -> str:
    """Describe this machine to asv (~/.asv-machine.json) under its name, with what asv itself detects.

    `asv machine --yes --machine NAME` stores only the fields that differ from asv's defaults,
    the name alone: every result would then carry no CPU, OS or RAM. So the whole record is
    saved through asv's own machine file.
    """
    from asv.machine import Machine, MachineCollection  # imported here: asv imports bench/ without asv

    record = Machine.get_defaults() | {"machine": name()}
    MachineCollection.save(record["machine"], record)
    return record["machine"]


if __name__ == "__main__":
    # `python -m bench.harness.machine`: the name; `python -m bench.harness.machine register`: described to asv too.
    if sys.argv[1:2] == ["register"]:
        print(register())
        sys.exit(0)
    print(name())
    sys.exit(0)
