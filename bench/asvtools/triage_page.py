"""The dashboard's Triage page (triage.html, linked from asv's navigation): each alert of the Regressions page
with what re-measuring it found (python -m bench triage, results/triage/<machine>.json).

Every alert the published regressions.json lists is a row, matched to the triage records by
machine, benchmark and commits; an alert no record covers is shown as "not triaged", so a
record older than the history never passes for a verdict. "Confirmed only" (or the address
triage.html#confirmed) hides the rest.
"""

from __future__ import annotations

import html
import json
import pathlib
import urllib.parse

from bench.triage.alerts import Alert, from_published
from bench.triage.record import runs_text

NOT_TRIAGED = "not triaged"
OUTCOME_CLASS = {"confirmed": "danger", "undecided": "warning", "refuted": "success"}

_SCRIPT = """
function show(only) {
  document.querySelectorAll('tr[data-outcome]').forEach(function (row) {
    row.style.display = (!only || row.dataset.outcome === 'confirmed') ? '' : 'none';
  });
  document.getElementById('show-all').classList.toggle('active', !only);
  document.getElementById('show-confirmed').classList.toggle('active', only);
}
document.getElementById('show-all').onclick = function () { history.replaceState(null, '', '#'); show(false); };
document.getElementById('show-confirmed').onclick = function () {
  history.replaceState(null, '', '#confirmed'); show(true);
};
show(location.hash === '#confirmed');
"""


def records(folder: pathlib.Path) -> dict[str, dict]:
    """Every triage record's alerts by key, each with the record it came from."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        for alert in record.get("alerts", ()):
            found[alert["key"]] = {**alert, "record": record}
    return found


def _graph_link(alert: Alert) -> str:
    params = {f"p-{k}": repr(v) for k, v in alert.params.items()}
    params |= {"machine": alert.machine, "commits": f"{alert.before}-{alert.after}"}
    return "index.html#" + alert.benchmark.split("(")[0] + "?" + urllib.parse.urlencode(params)


def _remeasured(entry: dict) -> str:
    m = entry.get("confirmation") or {}
    if m.get("ratio") is None:
        return ""
    return f"{m['ratio']:.3f} [{m['low']:.3f}, {m['high']:.3f}], {m['rounds']} rounds"


def _finding(entry: dict) -> str:
    if entry.get("culprit"):
        subject = f" {entry['culprit_subject']}" if entry.get("culprit_subject") else ""
        return f"first slower commit <code>{entry['culprit'][:8]}</code>{html.escape(subject)} ({runs_text(entry['gate_runs'])})"
    if entry.get("bisection") == "undecided" and entry.get("narrowed_to"):
        low, high = entry["narrowed_to"]
        return f"between <code>{low[:8]}</code> and <code>{high[:8]}</code>: {html.escape(entry['why'])}"
    note = entry.get("why", "")
    if entry.get("environment_note"):
        note = f"{note}; {entry['environment_note']}" if note else entry["environment_note"]
    return html.escape(note)


def _row(alert: Alert, entry: dict | None) -> str:
    outcome = entry["outcome"] if entry else NOT_TRIAGED
    cells = [
        f'<a href="{html.escape(_graph_link(alert))}">{html.escape(alert.benchmark)}</a>',
        html.escape(alert.machine),
        f"{alert.factor:.2f}x",
        f"<code>{alert.before[:8]}</code>..<code>{alert.after[:8]}</code>",
        _remeasured(entry) if entry else "",
        f"<strong>{outcome}</strong>",
        _finding(entry) if entry else "",
    ]
    style = OUTCOME_CLASS.get(outcome, "")
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr data-outcome="{outcome}" class="{style}">{tds}</tr>'


def _where(found: list[dict]) -> str:
    seen = {}
    for entry in found:
        r = entry["record"]
        where = r["remeasured_on"]
        seen[r["history"]] = (
            f"{html.escape(r['history'])}'s alerts re-measured on {html.escape(str(where.get('machine_name')))} "
            f"({html.escape(str(where.get('cpu')))}, {where.get('cores')} cores) at {r['triaged_at']}, "
            f"{len(r['gate_runs'])} gate runs, threshold {r['threshold']:.0%}"
            + ("" if r["state"] == "complete" else f" ({r['state']})")
        )
    return "".join(f"<li>{text}</li>" for text in seen.values())


def page(alerts: list[Alert], by_key: dict[str, dict]) -> str:
    matched = [by_key.get(a.key) for a in alerts]
    counts: dict[str, int] = {}
    for entry in matched:
        outcome = entry["outcome"] if entry else NOT_TRIAGED
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
    rows = "\n".join(_row(a, e) for a, e in zip(alerts, matched, strict=True))
    head = "".join(
        f"<th>{h}</th>"
        for h in ("Benchmark", "Machine", "asv's step", "Commits", "Re-measured: after/before, 95% interval",
                  "Outcome", "Finding")
    )  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Triage of the alerts</title>
<link href="vendor/bootstrap-3.1.1/css/bootstrap.min.css" rel="stylesheet" type="text/css">
</head>
<body style="padding: 1em">
<p><a href="index.html">Benchmark grid</a> | <a href="index.html#regressions">Regressions</a> | Triage</p>
<h2>Triage of the Regressions page's alerts</h2>
<p>Each alert (a step up found by asv in one machine's history) re-measured with the paired gate
between the last commit before the step and the first after it: <strong>confirmed</strong> when the
whole interval of after/before lies above the threshold, <strong>refuted</strong> when it lies within it
or below, <strong>undecided</strong> otherwise. Each confirmed alert is bisected; the first slower commit
is named only when every midpoint was decided. <code>python -m bench triage</code> writes the records.</p>
<p id="summary">{len(alerts)} alerts: {summary}</p>
<ul>{_where([e for e in matched if e])}</ul>
<div class="btn-group" style="margin-bottom: 1em">
<button id="show-all" class="btn btn-default" type="button">All</button>
<button id="show-confirmed" class="btn btn-default" type="button">Confirmed only</button>
</div>
<table id="triage" class="table table-condensed">
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write(html_dir: pathlib.Path, results: pathlib.Path, triage_folder: pathlib.Path) -> list[Alert]:
    """triage.html in the published html_dir, from its regressions.json and the records in triage_folder;
    returns the alerts it lists."""
    alerts = from_published(html_dir, results)
    (html_dir / "triage.html").write_text(page(alerts, records(triage_folder)), encoding="utf-8")
    return alerts
