"""pytest-benchmark settings: runs saved under results/pytest-benchmark, the suite's environment recorded."""

import pathlib

from bench import environment

STORAGE = pathlib.Path(__file__).resolve().parent.parent / "results" / "pytest-benchmark"
PLUGIN_DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_configure(config):
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if config.getoption("benchmark_storage", None) == PLUGIN_DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{STORAGE}"


def pytest_benchmark_update_machine_info(config, machine_info):
    # Only what stays the same between runs on one machine: --benchmark-compare warns when it differs.
    # The commit and dirty flag are in pytest-benchmark's own commit_info.
    machine_info["stepbench"] = environment.machine()
