"""pytest-benchmark settings: runs saved under results/pytest-benchmark/<machine name>, the suite's environment recorded.

Each machine (bench.machine: hostname, CPU, cores, GPU) has a folder of its own, so that
`--benchmark-compare` finds only baselines of this hardware.
"""

import pathlib

from bench import environment

STORAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent / "results" / "pytest-benchmark"
PLUGIN_DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_configure(config):
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if config.getoption("benchmark_storage", None) == PLUGIN_DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{STORAGE_ROOT / environment.machine_name()}"


def pytest_benchmark_update_machine_info(config, machine_info):
    # Only what stays the same between runs on one machine: --benchmark-compare warns when it differs.
    # The commit and dirty flag are in pytest-benchmark's own commit_info.
    machine_info["stepbench"] = environment.machine()
