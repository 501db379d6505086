"""The triage record, results/triage/<machine>.json (the machine whose history raised the alerts), and its console table.

Written after every gate run under a temporary name and swapped in, so an interrupted triage
keeps what it measured ("state": "in progress" until the end).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import subprocess

from bench.harness import environment
from bench.triage.bisection import OUTCOMES, Entry

FOLDER = "triage"  # under results/


def path(results: pathlib.Path, machine: str) -> pathlib.Path:
    return results / FOLDER / f"{machine}.json"


def _subject(commit: str | None, repo: pathlib.Path) -> str | None:
    if commit is None:
        return None
    done = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s", commit], capture_output=True, text=True)
    return done.stdout.strip()[:120] or None


def entry_record(entry: Entry, repo: pathlib.Path) -> dict:
    a = entry.alert
    out = {
        "key": a.key,
        "benchmark": a.benchmark,
        "params": a.params,
        "before": a.before,
        "after": a.after,
        "old": a.old,
        "new": a.new,
        "unit": a.unit,
        "factor": a.factor,
        "environment_change": a.environment_change,
        "outcome": entry.outcome or "pending",
        "why": entry.why,
        "confirmation": dataclasses.asdict(entry.confirmation) if entry.confirmation else None,
        "bisection": entry.bisection if entry.outcome == "confirmed" else None,
        "commits_between": len(entry.commits),
        "steps": [dataclasses.asdict(s) for s in entry.steps],
        "culprit": entry.culprit,
        "culprit_subject": _subject(entry.culprit, repo),
        "narrowed_to": list(entry.narrowed_to) if entry.commits else None,
        "gate_runs": entry.gate_runs,
    }
    if a.environment_change:
        out["environment_note"] = environment_note(a.environment_change)
    return out


def environment_note(change: dict) -> str:
    what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in change.items())
    return (
        f"the two results were measured in different environments ({what}): the re-measurement ran both "
        "commits in this machine's one environment, so it judges the code change alone; the environment's "
        "part needs both environments here (python -m bench compare REV REV --base-env OLD --head-env NEW)"
    )


def build(entries: list[Entry], machine: str, gate, state: str, repo: pathlib.Path = environment.REPO) -> dict:
    alerts = [entry_record(e, repo) for e in entries]
    return {
        "state": state,  # in progress | complete | interrupted
        "triaged_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "history": machine,
        "remeasured_on": environment.machine(),
        "threshold": gate.threshold,
        "max_time_s": gate.max_time_s,
        "counts": {o: sum(a["outcome"] == o for a in alerts) for o in OUTCOMES},
        "alerts": alerts,
        "gate_runs": gate.runs,
    }


def write(target: pathlib.Path, record: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, target)


def runs_text(n: int) -> str:
    return f"{n} gate run" + ("" if n == 1 else "s")


def _interval(m: dict | None) -> str:
    if not m or m.get("ratio") is None:
        return ""
    return f"{m['ratio']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def table(record: dict) -> str:
    alerts = record["alerts"]
    width = max([len(a["benchmark"]) for a in alerts] + [9])
    lines = [
        f"Alerts of {record['history']}, re-measured on {record['remeasured_on']['machine_name']}: "
        f"asv's step up, then HEAD/BASE (after/before) paired, 95% interval",
        "",
        f"{'benchmark':<{width}}  {'asv':>6}  {'re-measured':>22}  outcome",
    ]
    for a in alerts:
        outcome = a["outcome"]
        if a["culprit"]:
            outcome += f", first slower commit {a['culprit'][:8]} ({runs_text(a['gate_runs'])})"
        elif a["bisection"] == "undecided":
            low, high = a["narrowed_to"]
            outcome += f", between {low[:8]} and {high[:8]}: {a['why']}"
        elif a["why"]:
            outcome += f": {a['why']}"
        lines.append(f"{a['benchmark']:<{width}}  {a['factor']:5.2f}x  {_interval(a['confirmation']):>22}  {outcome}")
    counts = ", ".join(f"{n} {o}" for o, n in record["counts"].items() if n)
    lines += ["", f"{len(alerts)} alerts: {counts}"]
    return "\n".join(lines)
