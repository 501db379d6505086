"""asv's suite: its setup and agreement verdicts, its results files, its configuration, and what asv imports.

Nothing here is timed.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

import impls
from bench.asvtools import results as asv_results
from bench.asvtools import smoke
from bench.benchmarks import training_step
from bench.harness import agreement_worker, environment, grid, verdicts

from .conftest import GHOST, TWIN, WRONG


def test_asv_setup_skips_with_not_implemented_error(new_entries):
    bench = training_step.Presets()
    with pytest.raises(NotImplementedError, match="accelerators only"):
        bench.setup("run", "numpy", "xlarge", "float64", "sgd")
    with pytest.raises(NotImplementedError, match="not installed"):
        bench.setup("run", GHOST, "seed", "float64", "sgd")


def test_asv_verdicts_check_only_the_implementation_being_set_up(monkeypatch, tmp_path):
    # `asv run -b numba:blas` must not check the grid's other implementations: each verdict comes from
    # a child that checks the one implementation asked for, once per problem and run, and leaves the
    # problem's oracle beside it for the other implementations' children.
    monkeypatch.setattr(verdicts, "ROOT", tmp_path)
    run = verdicts.new_run()
    problem = grid.preset_problem("seed", "float32", "sgd")
    children = []
    check_in_child = verdicts._check_in_child
    monkeypatch.setattr(
        verdicts, "_check_in_child", lambda spec, path: children.append(spec["names"]) or check_in_child(spec, path)
    )
    verdict = verdicts.lookup(run)
    found = verdict("numpy", problem)
    assert found.ok and "numpy agrees with" in found.report
    assert children == [["numpy"]]
    folder = verdicts.problem_folder(run, problem)
    assert sorted(p.name for p in folder.iterdir()) == ["numpy.json", verdicts.ORACLE]
    assert json.loads((folder / "numpy.json").read_text())["numpy"]["oracle"] == "computed"

    assert verdict("numpy", problem) == found  # no second child
    assert children == [["numpy"]]


def test_the_agreement_worker_reads_the_oracle_of_its_problem_and_inputs_only(new_entries, monkeypatch, tmp_path):
    from impls import agreement

    problem = grid.preset_problem("seed", "float64", "adam")
    spec = {"problem": dataclasses.asdict(problem), "names": ["numpy"], "oracle": str(tmp_path / "oracle.npz")}
    first = agreement_worker.main(spec)
    assert first["numpy"]["oracle"] == "computed" and first["numpy"]["ok"]

    computed = []
    oracle = agreement.oracle
    monkeypatch.setattr(agreement, "oracle", lambda *args, **kwargs: computed.append(args) or oracle(*args, **kwargs))
    second = agreement_worker.main(spec | {"names": [TWIN, WRONG]})
    assert computed == []  # the other implementations are checked against the oracle on file
    assert second[TWIN]["oracle"] == "read" and second[TWIN]["worst_ratio"] == first["numpy"]["worst_ratio"]
    assert not second[WRONG]["ok"] and "DISAGREES" in second[WRONG]["report"]

    # Same inputs, another optimizer: that file is not this problem's oracle.
    other = grid.preset_problem("seed", "float64", "sgd")
    third = agreement_worker.main(spec | {"problem": dataclasses.asdict(other)})
    assert third["numpy"]["oracle"] == "computed" and third["numpy"]["ok"] and len(computed) == 1


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # jax's, in this process; the child runs numpy only
def test_a_verdict_from_a_forked_child_is_the_same_as_from_a_new_process(monkeypatch, tmp_path):
    # asv's benchmark processes fork the child before they create anything: it starts with the
    # backends imported. Elsewhere (threads running) the child is a new process.
    monkeypatch.setattr(verdicts, "ROOT", tmp_path)
    problem = grid.preset_problem("seed", "float64", "sgd")
    forked = []
    fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forked.append(True) or fork())

    monkeypatch.setattr(verdicts, "may_fork", lambda: True)
    by_fork = verdicts.lookup(verdicts.new_run())("numpy", problem)
    assert forked == [True]
    monkeypatch.setattr(verdicts, "may_fork", lambda: False)
    by_new_process = verdicts.lookup(verdicts.new_run())("numpy", problem)
    assert forked == [True]
    assert by_fork == by_new_process and by_fork.ok


def test_prepare_takes_the_verdict_before_it_creates_the_step_and_creates_the_step_checked(monkeypatch):
    from bench.harness import prepare

    events = []
    create = impls.create
    monkeypatch.setattr(
        impls, "create", lambda name, problem, **options: events.append(("create", options)) or create(name, problem)
    )
    problem = grid.preset_problem("seed", "float32", "sgd")
    checked = prepare.Verdict(True, 0.5, "numpy agrees (elsewhere)", {"an_option": "as checked"})
    prepared = prepare.prepare("numpy", problem, "seed", verdict=lambda *args: events.append(("verdict",)) or checked)
    assert events == [("verdict",), ("create", {"an_option": "as checked"})]
    assert prepared.verdict == checked

    events.clear()
    failing = prepare.Verdict(False, 3.0, "numpy DISAGREES (elsewhere)")
    with pytest.raises(prepare.Disagrees):
        prepare.prepare("numpy", problem, "seed", verdict=lambda *args: events.append(("verdict",)) or failing)
    assert events == [("verdict",)]  # nothing created for a step that will not be timed


def test_numba_blas_is_timed_with_the_plan_its_checked_step_chose():
    # Its create chooses a plan by timing trials: every benchmark process would repeat them (seconds
    # at the large preset) and could choose another plan than the step that was checked.
    from .conftest import require

    require("numba:blas")
    problem = grid.preset_problem("tutorial", "float32", "sgd")
    spec = {"problem": dataclasses.asdict(problem), "names": ["numba:blas"]}
    found = agreement_worker.main(spec)["numba:blas"]
    assert found["ok"] and set(found["create_options"]) == {"plan"}
    step = impls.create("numba:blas", problem, **found["create_options"])
    assert step.describe()["plan_chosen"] == "given"
    assert ",".join(f"{k}={v}" for k, v in step.plan.items()) == found["create_options"]["plan"]
    assert agreement_worker.main(spec | {"names": ["numpy"]})["numpy"]["create_options"] == {}


def test_a_new_run_removes_oracles_no_child_has_read_for_an_hour(monkeypatch, tmp_path):
    monkeypatch.setattr(verdicts, "ROOT", tmp_path)
    problem = tmp_path / "an-earlier-run" / "a-problem"
    problem.mkdir(parents=True)
    (problem / "numpy.json").write_text("{}")
    stale, fresh = problem / verdicts.ORACLE, tmp_path / "a-run-now" / "a-problem" / verdicts.ORACLE
    fresh.parent.mkdir(parents=True)
    for path in (stale, fresh):
        path.write_bytes(b"")
    hours_ago = time.time() - verdicts.ORACLE_KEEP_S - 60
    os.utime(stale, (hours_ago, hours_ago))
    verdicts.new_run()
    assert not stale.exists() and fresh.exists() and (problem / "numpy.json").exists()


def test_agreement_worker_reports_each_implementation(new_entries):
    problem = grid.preset_problem("seed", "float64", "sgd")
    found = agreement_worker.main({"problem": dataclasses.asdict(problem), "names": ["numpy", GHOST, WRONG]})
    assert found["numpy"]["ok"] and found["numpy"]["worst_ratio"] <= 1
    assert found[GHOST] == {"unavailable": "no_such_package_for_stepbench not installed"}
    assert not found[WRONG]["ok"] and "DISAGREES" in found[WRONG]["report"]


COMMITTED_MACHINES = sorted((environment.REPO / "results" / "asv").glob("*/machine.json"))


def _this_vm(record: dict, **changes) -> dict:
    """What asv detects on another VM of a committed machine's pool: its hostname, a later kernel
    build and a few hundred kB less RAM, unless `changes` say otherwise."""
    here = {"machine": "vm", "os": "Linux 6.18.44-fc-v1098", "ram": str(int(record["ram"]) - 528384)}
    return {key: record[key] for key in ("arch", "cpu", "num_cpu")} | here | changes


def _plain_asv_run(machine_file: pathlib.Path, results_dir: pathlib.Path, monkeypatch) -> None:
    """What `asv run` without --machine does with the machine before it runs anything (asv.commands.run)."""
    from asv import machine as asv_machine

    monkeypatch.setattr(asv_machine, "_get_unique_machine_name", lambda: "vm")  # the VM's hostname
    asv_machine.Machine.load(machine_name=None, _path=str(machine_file), interactive=True).save(str(results_dir))


@pytest.mark.parametrize("committed", COMMITTED_MACHINES, ids=lambda path: path.parent.name)
def test_an_asv_run_on_another_vm_of_a_committed_machine_leaves_its_machine_json_as_committed(
    committed, monkeypatch, tmp_path
):
    # make asv-machine, then a plain `asv run`, on a VM of the same hardware and name as committed
    # results: asv writes the registered record into results/asv/<name>/machine.json, which must not
    # change with the VM's kernel build or RAM size, nor lose its formatting.
    from asv.machine import Machine

    from bench.harness import machine

    record = json.loads(committed.read_text())
    results = tmp_path / "results"
    (results / record["machine"]).mkdir(parents=True)
    (results / record["machine"] / "machine.json").write_bytes(committed.read_bytes())
    monkeypatch.setattr(Machine, "get_defaults", staticmethod(lambda: _this_vm(record)))
    monkeypatch.setattr(machine, "name", lambda: record["machine"])
    machine_file = tmp_path / "asv-machine.json"

    assert machine.register(results_dir=results, machine_file=str(machine_file)) == record["machine"]
    _plain_asv_run(machine_file, results, monkeypatch)
    assert (results / record["machine"] / "machine.json").read_bytes() == committed.read_bytes()


def test_a_committed_machine_json_of_other_hardware_is_replaced_and_said_so(monkeypatch, tmp_path, capsys):
    from asv.machine import Machine

    from bench.harness import machine

    record = json.loads(COMMITTED_MACHINES[0].read_text())
    results = tmp_path / "results"
    (results / record["machine"]).mkdir(parents=True)
    (results / record["machine"] / "machine.json").write_text(json.dumps(record))
    bigger = _this_vm(record, ram=str(4 * int(record["ram"])))  # same name, four times the memory
    monkeypatch.setattr(Machine, "get_defaults", staticmethod(lambda: bigger))
    monkeypatch.setattr(machine, "name", lambda: record["machine"])
    machine_file = tmp_path / "asv-machine.json"

    machine.register(results_dir=results, machine_file=str(machine_file))
    assert "describes other hardware" in capsys.readouterr().err
    _plain_asv_run(machine_file, results, monkeypatch)
    rewritten = json.loads((results / record["machine"] / "machine.json").read_text())
    assert rewritten["ram"] == bigger["ram"] and rewritten["os"] == bigger["os"]


def test_asv_results_keep_no_interpreter_path(tmp_path):
    machine = tmp_path / "vm"
    machine.mkdir()
    python = "/home/someone/checkout/.venv/bin/python3.12"
    env_name = "existing-py" + python.replace("/", "_")
    result = {"commit_hash": "0123456789abcdef", "env_name": env_name, "python": python}
    result["params"] = {"machine": "vm", "python": python}
    (machine / f"01234567-{env_name}.json").write_text(json.dumps(result))
    built = {"commit_hash": "0123456789abcdef", "env_name": "virtualenv-py3.11-numpy2.4.6", "python": "3.11"}
    built["params"] = {"python": "3.11"}
    (machine / "01234567-virtualenv-py3.11-numpy2.4.6.json").write_text(json.dumps(built))
    (machine / "machine.json").write_text(json.dumps({"machine": "vm"}))

    assert asv_results.main([str(tmp_path)]) == 0
    names = sorted(p.name for p in machine.iterdir())
    assert names == ["01234567-existing-py3.12.json", "01234567-virtualenv-py3.11-numpy2.4.6.json", "machine.json"]
    for path in machine.iterdir():
        assert "/home/" not in path.read_text()
    renamed = json.loads((machine / "01234567-existing-py3.12.json").read_text())
    assert renamed["python"] == renamed["params"]["python"] == "3.12" and renamed["env_name"] == "existing-py3.12"
    assert json.loads((machine / "01234567-virtualenv-py3.11-numpy2.4.6.json").read_text()) == built


def _asv_result(commit: str, env_name: str, python: str, results: dict) -> dict:
    """A result file as asv writes it, cut down to what bench.asvtools.results reads and merges."""
    return {
        "commit_hash": commit,
        "env_name": env_name,
        "python": python,
        "params": {"machine": "vm", "python": python},
        "result_columns": ["result", "params"],
        "results": results,
        "durations": {name: 1.0 for name in results},
    }


def test_asv_results_merge_a_second_run_of_one_commit(tmp_path):
    # make asv-run twice on one commit: asv writes a path-named file again beside the renamed first one.
    machine = tmp_path / "vm"
    machine.mkdir()
    python = "/home/someone/checkout/.venv/bin/python3.11"
    env_name = "existing-py" + python.replace("/", "_")
    path_named = machine / f"01234567-{env_name}.json"
    first = {"a.time_x": [[1.0], []], "a.time_y": [[2.0], []]}
    path_named.write_text(json.dumps(_asv_result("0123456789abcdef", env_name, python, first)))
    assert asv_results.main([str(tmp_path)]) == 0
    second = {"a.time_y": [[3.0], []], "a.time_z": [[4.0], []]}  # a rerun of y, and a benchmark new to this run
    path_named.write_text(json.dumps(_asv_result("0123456789abcdef", env_name, python, second)))

    assert asv_results.main([str(tmp_path)]) == 0
    assert [p.name for p in machine.iterdir()] == ["01234567-existing-py3.11.json"]
    merged = json.loads((machine / "01234567-existing-py3.11.json").read_text())
    assert merged["results"] == {"a.time_x": [[1.0], []], "a.time_y": [[3.0], []], "a.time_z": [[4.0], []]}
    assert set(merged["durations"]) == {"a.time_x", "a.time_y", "a.time_z"}
    assert merged["python"] == "3.11" and "/home/" not in json.dumps(merged)


# asv's discovery as asv runs it: the benchmark folder imported as the top-level package named
# after it (asv_runner.discovery), in a process where asv, pytest and pytest-benchmark cannot be
# imported (asv's environments have the pins of asv.conf.json only). It prints the benchmark
# names and every module of this checkout that got imported.
DISCOVERY = """
import json, pathlib, sys
for absent in ("asv", "pytest", "_pytest", "pytest_benchmark"):
    sys.modules[absent] = None
from asv_runner._aux import update_sys_path
from asv_runner.discovery import disc_benchmarks
root = pathlib.Path(sys.argv[1])
update_sys_path(str(root))
names = sorted(b.name for b in disc_benchmarks(str(root)))
checkout, environment = root.parents[1], pathlib.Path(sys.prefix).resolve()  # the venv may lie in the checkout
files = {name: pathlib.Path(m.__file__).resolve() for name, m in list(sys.modules.items()) if getattr(m, "__file__", None)}
mine = sorted(n for n, f in files.items() if f.is_relative_to(checkout) and not f.is_relative_to(environment))
print(json.dumps({"benchmarks": names, "modules": mine}))
"""


@pytest.fixture(scope="module")
def discovered():
    root = environment.REPO / "bench" / "benchmarks"
    done = subprocess.run(
        [sys.executable, "-c", DISCOVERY, str(root)], cwd="/", capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_asv_discovers_the_suite_without_test_runners_or_tools(discovered):
    """asv walks bench/benchmarks alone: of bench's code it imports the benchmark modules and the shared
    harness they use, never the gate, the main job, the dashboard, the pytest-benchmark suite or a study,
    so an error in those cannot break `asv run` and a time_* in them cannot become a benchmark."""
    bench_modules = [m for m in discovered["modules"] if not m.startswith("impls")]
    walked = [m for m in bench_modules if m == "benchmarks" or m.startswith("benchmarks.")]
    assert walked == ["benchmarks", "benchmarks.asv_dynamics", "benchmarks.training_step"]
    outside = [m for m in bench_modules if m not in walked]
    assert outside and all(m == "bench" or m.startswith("bench.harness") for m in outside), outside


def test_the_benchmark_names_are_those_of_the_committed_history(discovered):
    """Names are relative to the benchmark folder, so moving it kept every dashboard line: each name
    in the committed benchmarks.json is still discovered."""
    committed = json.loads((environment.REPO / "results" / "asv" / "benchmarks.json").read_text())
    recorded = {name for name in committed if name != "version"}
    assert recorded <= set(discovered["benchmarks"]), sorted(recorded - set(discovered["benchmarks"]))
    assert "training_step.Presets.time_step" in discovered["benchmarks"]


def test_the_asv_scratch_configuration_points_at_this_checkout_from_its_own_folder(tmp_path):
    # asv changes into the folder of the configuration it is given, so every path in the copy
    # must lead from there back to this checkout's benchmarks, and its results must stay in .asv/.
    from bench.asvtools import scratch as asv_scratch

    target = tmp_path / "scratch" / "smoke.conf.json"
    assert asv_scratch.main([str(environment.REPO / "asv.conf.json"), str(target)]) == 0
    config = json.loads(target.read_text())

    def resolved(key):
        return (target.parent / config[key]).resolve()

    assert resolved("repo") == environment.REPO.resolve()
    assert resolved("benchmark_dir") == (environment.REPO / "bench" / "benchmarks").resolve()
    assert resolved("results_dir") == (environment.REPO / ".asv" / "smoke" / "results").resolve()
    assert resolved("env_dir") == (environment.REPO / ".asv" / "env").resolve()
    assert not any(os.path.isabs(config[key]) for key in asv_scratch.PATH_KEYS)


ASV_OUTPUT = """\
· Running 2 total benchmarks (1 commits * 1 environments * 2 benchmarks)
[ 0.00%] ·· Benchmarking existing-py3.11
[25.00%] ··· Setting up training_step:162                                    ok
[50.00%] ··· training_step.Presets.time_step                        1/3 failed
[50.00%] ··· ============ =========
              numpy       10±0μs
              torch:cuda    n/a
              numba       failed
             ============ =========
[50.00%] ···· For parameters: 'numpy', 'seed'
              some chatter
              For parameters: 'torch:cuda', 'seed'
              asv: skipped: Skip('torch:cuda unavailable: CUDA not available')
              For parameters: 'numba', 'seed'
              Traceback (most recent call last):
              ValueError: broken
[100.00%] ··· training_step.Presets.peakmem_step                               ok
"""


def test_the_smoke_runs_console_shows_statuses_failures_and_a_count_of_skips():
    summary = smoke.summarize(ASV_OUTPUT.splitlines())
    assert summary.statuses == [
        ("training_step.Presets.time_step", "1/3 failed"),
        ("training_step.Presets.peakmem_step", "ok"),
    ]
    assert summary.skipped == 1
    # Output of a set that ran (numpy's chatter) is not a failure; the traceback is.
    assert [block[0] for block in summary.failures] == ["For parameters: 'numba', 'seed'"]
    lines = smoke.report(summary, 2, pathlib.Path("smoke.log"))
    assert "asv: failed: For parameters: 'numba', 'seed'" in lines and "    ValueError: broken" in lines
    assert lines[-1].startswith("asv smoke run: 2 benchmarks, 1 with failures, 1 parameter sets skipped")


def test_the_smoke_run_keeps_asvs_exit_status_and_refuses_a_run_of_nothing(tmp_path, capsys):
    log = tmp_path / "run.log"
    script = f"import sys; print({ASV_OUTPUT!r}); sys.exit(2)"
    assert smoke.main([str(log), "--", sys.executable, "-c", script]) == 2
    assert "ValueError: broken" in log.read_text()
    assert smoke.main([str(log), "--", sys.executable, "-c", "print('· Discovering benchmarks')"]) == 1
