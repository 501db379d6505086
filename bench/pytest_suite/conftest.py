"""pytest-benchmark settings: runs saved per machine, the suite's environment recorded, a baseline gate that compares like with like.

Each machine (bench.harness.machine: hostname, CPU, cores, GPU) has a folder of its own under
results/pytest-benchmark/, so that `--benchmark-compare` finds only baselines of this
hardware. A comparison is refused in one line when the baseline is from other hardware or
other library versions, or lacks one of the selected configurations (pytest-benchmark
would compare nothing and pass); a regression ends in one line, not a traceback.
"""

import pathlib

import pytest
from pytest_benchmark.session import PerformanceRegression

from bench.harness import environment, machine

STORAGE_ROOT = pathlib.Path(__file__).resolve().parents[2] / "results" / "pytest-benchmark"
PLUGIN_DEFAULT_STORAGE = "file://./.benchmarks"
BASELINE_MISMATCH = 2  # the exit status of a comparison that cannot be made, as for a usage error
REGRESSED = 1


@pytest.fixture(scope="session", autouse=True)
def data_parallel_workers_shared():
    """The data-parallel configurations share their worker processes (impls.torch_ddp.shared_ranks):
    starting them (importing torch in each) would otherwise be part of every configuration's set-up."""
    import impls

    if "torch:cpu:ddp" not in impls.names() or impls.available(["torch:cpu:ddp"])["torch:cpu:ddp"] is not None:
        yield
        return
    from impls import torch_ddp

    with torch_ddp.shared_ranks():
        yield


def pytest_configure(config):
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if config.getoption("benchmark_storage", None) == PLUGIN_DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{STORAGE_ROOT / environment.machine_name()}"


def pytest_benchmark_update_machine_info(config, machine_info):
    # The commit and dirty flag are in pytest-benchmark's own commit_info.
    machine_info["stepbench"] = environment.machine()


def _identity(info: dict) -> tuple[str, dict]:
    """(machine name, library versions) of a saved machine_info; older runs did not record the name."""
    ours = info.get("stepbench", {})
    name = ours.get("machine_name") or machine.name(info.get("node", ""), ours.get("cpu", ""), ours.get("cores"), [])
    return name, ours.get("versions", {})


@pytest.hookimpl(tryfirst=True)
def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """Refuse a baseline of other hardware or libraries; on the same, skip pytest-benchmark's dump of both.

    pytest-benchmark warns whenever the two machine_info differ in anything, a CPU clock
    reading or a thread pool loaded in one run and not the other, with both records in full
    (5 KB). What matters is the machine name and the library versions.
    """
    here, here_versions = _identity(machine_info)
    there, there_versions = _identity(compared_benchmark["machine_info"])
    if here != there:
        raise pytest.UsageError(
            f"the baseline was saved on {there}, this machine is {here}: save one here first (make bench-save)"
        )
    changed = {k: (there_versions.get(k), v) for k, v in here_versions.items() if there_versions.get(k) != v}
    if changed:
        listed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
        raise pytest.UsageError(f"the baseline was saved with other library versions ({listed}): save one with these")
    compared_benchmark["machine_info"] = machine_info  # the same machine: nothing to warn about


def pytest_sessionfinish(session, exitstatus):
    """A compare that would leave a selected configuration uncompared fails instead of passing silently."""
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is None or not bench_session.compare or bench_session.disabled:
        return
    timed = [b.fullname for b in bench_session.benchmarks if b]
    baselines = bench_session.compared_mapping or {}
    missing = [name for name in timed if not any(name in mapping for mapping in baselines.values())]
    if not baselines or missing:
        where = session.config.getoption("benchmark_storage")
        if not baselines:
            message = f"bench-compare: no saved baseline in {where}"
        else:
            message = f"bench-compare: {len(missing)} of {len(timed)} timed configurations are not in the baseline ({missing[0]}, ...)"
        message += ": save one with this selection first (make bench-save BENCH_SELECT=...)"
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = BASELINE_MISMATCH


@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary(terminalreporter):
    """pytest-benchmark lists the regressions, then raises: one line and exit status 1 instead of its traceback."""
    try:
        return (yield)
    except PerformanceRegression:
        terminalreporter.write_line("bench-compare: performance has regressed (listed above)", red=True)
        terminalreporter._session.exitstatus = REGRESSED
        return None
