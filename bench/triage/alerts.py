"""The alerts of an asv history: what asv's Regressions page lists, one alert per step up, and the gate cell
that re-measures each.

The alerts are asv's own: `asv publish` runs its step detection (asv.step_detect) over each
machine's results and writes regressions.json, which the page shows. Each entry is a benchmark
at one set of parameters on one machine, with one or more jumps (the last measured commit
before a step up, the first after it, the values on either side). An alert here is one jump.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import json
import pathlib
import re
import subprocess

from bench.gate.cells import Cell, preset_cell, sweep_cell
from bench.harness import environment

# asv benchmark method -> what the gate's worker calls in a timed block (bench.gate.worker.CALLS)
CALLS = {"time_step": "step", "track_ms_per_gflop": "step", "time_loss_and_grads": "loss_and_grads"}
# result parameters that describe the run, not the environment the code ran in
NOT_ENVIRONMENT = ("machine",)


@dataclasses.dataclass
class Alert:
    machine: str
    benchmark: str  # asv's full name: training_step.Presets.time_step('numpy', 'seed', 'float32', 'sgd')
    params: dict  # parameter name -> value (implementation, preset, dtype, optimizer / batch)
    before: str  # the last commit measured before the step up (full sha)
    after: str  # the first commit measured after it
    old: float  # asv's values on either side, in the benchmark's unit
    new: float
    unit: str = "seconds"
    environment_change: dict = dataclasses.field(default_factory=dict)  # param -> [before, after] where they differ

    @property
    def key(self) -> str:
        """Names the alert across runs: a triage record entry and a dashboard row meet on it."""
        return f"{self.machine}|{self.benchmark}|{self.before[:8]}..{self.after[:8]}"

    @property
    def factor(self) -> float:
        return self.new / self.old if self.old else float("inf")

    @property
    def method(self) -> str:
        return self.benchmark.split("(")[0].rsplit(".", 1)[-1]

    def cell(self) -> tuple[Cell | None, str]:
        """(the gate cell that times what this alert's benchmark timed, "") or (None, why there is none)."""
        call = CALLS.get(self.method)
        if call is None:
            return (
                None,
                f"{self.method} is not a step's time (a ratio, a memory or a setting): the gate has no cell for it",
            )
        p = self.params
        try:
            if "preset" in p:
                cell = preset_cell(p["implementation"], p["preset"], p["dtype"], p["optimizer"])
            else:
                cell = sweep_cell(p["implementation"], p["batch"], p["dtype"])
        except (KeyError, ValueError) as error:
            return None, f"parameters {p} name no cell of this grid: {error}"
        if call != "step":
            cell.id, cell.call = f"{cell.id}:{call}", call
        return cell, ""


def _params(benchmark: dict, index: int | None) -> dict:
    if index is None:
        return {}
    values = next(itertools.islice(itertools.product(*benchmark["params"]), index, index + 1))
    return {name: ast.literal_eval(v) for name, v in zip(benchmark["param_names"], values, strict=True)}


def parent(commit: str, repo: pathlib.Path = environment.REPO) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"{commit}^"], capture_output=True, text=True, check=True
    ).stdout.strip()


def from_published(html: pathlib.Path, results: pathlib.Path, repo: pathlib.Path = environment.REPO) -> list[Alert]:
    """Every jump of the published regressions.json, as alerts; the environment compared between the two
    commits' result files (results/asv/<machine>/<commit>-<env>.json)."""
    listed = json.loads((html / "regressions.json").read_text())["regressions"]
    index = json.loads((html / "index.json").read_text())
    to_hash = index["revision_to_hash"]
    alerts = []
    for name, graph, graph_params, idx, _last, _best, jumps in listed:
        base_name = name.split("(")[0]
        benchmark = index["benchmarks"][base_name]
        # asv names the machine among the graph's parameters only where several machines have results
        machine = graph_params.get("machine") or re.search(r"(?:^|/)machine-([^/]+)/", graph).group(1)
        for rev1, rev2, old, new in jumps or ():
            after = to_hash[str(rev2)]
            # asv writes no first revision where the range is one commit: the step is that commit's own
            before = to_hash[str(rev1)] if rev1 is not None else parent(after, repo)
            alert = Alert(machine, name, _params(benchmark, idx), before, after, old, new, benchmark.get("unit", ""))
            alert.environment_change = environment_change(results / machine, before, after)
            alerts.append(alert)
    alerts.sort(key=lambda a: -a.factor)
    return alerts


def _result_params(folder: pathlib.Path, commit: str) -> dict | None:
    files = sorted(folder.glob(f"{commit[:8]}-*.json"))
    return json.loads(files[0].read_text())["params"] if files else None


def environment_change(folder: pathlib.Path, before: str, after: str) -> dict:
    """{parameter: [before's, after's]} where the two commits' results were measured in different
    environments (a library version, the CPU, the OS): a step up there may be the environment's."""
    a, b = _result_params(folder, before), _result_params(folder, after)
    if a is None or b is None:
        return {}
    return {
        k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if k not in NOT_ENVIRONMENT and a.get(k) != b.get(k)
    }
