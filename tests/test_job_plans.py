"""Plans chosen at create are remembered per machine (bench.job.plans): the next run of the main job creates
the step with the same plan, runs no trials, and says where the plan came from; --replan chooses again.

The round's worker is the scripted one of test_job_measure: a numba:blas step created without a plan
"chooses" the plan the test sets (as its trials would), one created with a plan keeps it."""

import json

import pytest

from bench.harness import grid
from bench.job import main, plans, report

from .conftest import FakeClock
from .test_job_measure import Script, steady

PROBLEM = grid.preset_problem("tutorial", "float32", "sgd")


class Planning(Script):
    """numba:blas's create: with no plan given, the trials choose `self.choice`; with one, it is used."""

    choice = "h=blas,layout=batch"

    def setup(self, payloads, check, warm_up_s=None):
        out = super().setup(payloads, check, warm_up_s)
        for p, got in zip(payloads, out, strict=True):
            if p["name"] != "numba:blas":
                continue
            given = (p.get("options") or {}).get("plan")
            plan = given or self.choice
            got["create_options"] = {"plan": plan}
            got["details"] = {
                "plan": dict(part.split("=") for part in plan.split(",")),
                "trials": {} if given else {"layout": 0.96},
                "plan_chosen": "given" if given else "measured at create",
                "threads": {},
            }
        return out


def _run(script, replan=False):
    return main.run(
        ["numpy", "numba:blas"], ("tutorial",), ("float32",), ("sgd",), sweep=False, data_parallel=False,
        open_worker=script, replan=replan,
    )  # fmt: skip


def _first_round_options(script):
    return [p.get("options") for p in script.payloads[0] if p["name"] == "numba:blas"]


def _row(data):
    return next(r for r in data["results"] if r["implementation"] == "numba:blas")


@pytest.fixture
def two_threads(quiet_machine, monkeypatch):
    monkeypatch.setattr(main.threads, "budget", lambda: 2)


def test_the_next_run_creates_the_step_with_the_plan_the_first_one_chose(two_threads):
    first = Planning(steady({"numba:blas": 1.2}), FakeClock())
    data = _run(first)
    assert _first_round_options(first) == [None]  # nothing remembered yet: the trials choose
    assert _row(data)["details"]["plan_chosen"] == "measured at create"
    assert data["plans"] == {"remembered": 0, "replan": False}

    second = Planning(steady({"numba:blas": 1.2}), FakeClock())
    second.choice = "h=loops,layout=feature"  # what trials would choose now: never asked
    data = _run(second)
    assert _first_round_options(second) == [{"plan": "h=blas,layout=batch"}]
    details = _row(data)["details"]
    assert details["plan"] == {"h": "blas", "layout": "batch"}
    assert details["plan_chosen"].startswith("remembered: chosen by trials on ")
    assert details["trials"] == {"layout": 0.96}  # the trials of the run that chose it, for the report's table
    assert data["plans"] == {"remembered": 1, "replan": False}
    assert "remembered: chosen by trials on" in report.markdown(data)


def test_replan_runs_the_trials_again_and_keeps_their_choice(two_threads):
    _run(Planning(steady({}), FakeClock()))
    again = Planning(steady({}), FakeClock())
    again.choice = "h=loops,layout=feature"
    data = _run(again, replan=True)
    assert _first_round_options(again) == [None]
    assert _row(data)["details"]["plan_chosen"] == "measured at create"
    assert plans.remembered("numba:blas", PROBLEM, 2)["options"] == {"plan": "h=loops,layout=feature"}


def test_a_plan_is_remembered_for_its_machine_code_problem_and_threads_only(quiet_machine, monkeypatch):
    plans.remember("numba:blas", PROBLEM, 2, {"plan": "h=blas"}, {"trials": {"h": 1.1}})
    assert plans.remembered("numba:blas", PROBLEM, 2)["options"] == {"plan": "h=blas"}
    assert plans.remembered("numba:blas", PROBLEM, 1) is None  # beside other work the run has fewer threads
    assert plans.remembered("numba:blas", grid.preset_problem("tutorial", "float64", "sgd"), 2) is None
    assert plans.remembered("numba", PROBLEM, 2) is None
    monkeypatch.setattr(plans, "impls_digest", lambda: "other source")
    plans._this_machine.cache_clear()  # read once per process: this one's code "changed"
    try:
        assert plans.remembered("numba:blas", PROBLEM, 2) is None  # the code that chose it changed
    finally:
        monkeypatch.undo()
        plans._this_machine.cache_clear()


def test_a_torn_or_foreign_plan_file_counts_as_none(quiet_machine):
    target = plans.path("numba:blas", PROBLEM, 2)
    target.parent.mkdir(parents=True, exist_ok=True)
    for text in ('{"options": {"plan": "h=bl', json.dumps(["not", "a", "record"]), json.dumps({"options": "h"})):
        target.write_text(text)
        assert plans.remembered("numba:blas", PROBLEM, 2) is None
    plans.remember("numba:blas", PROBLEM, 2, {"plan": "h=blas"}, {})
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # written whole, no temporary left
