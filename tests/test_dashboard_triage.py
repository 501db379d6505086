"""The dashboard's Triage page: every alert of the Regressions page with what re-measuring it found, reached from
asv's navigation, filtered to the confirmed ones; opened in headless Chromium (skipped where there is none, unless
STEPBENCH_BROWSER_TEST=required).

The records are scripted (bisection.triage over the committed alerts with scripted verdicts): what
the page shows is tested, not what a measurement would find.
"""

import json

import pytest

from bench.asvtools import browser as dashboard_browser
from bench.asvtools import dashboard, triage_page
from bench.harness import environment
from bench.triage import bisection, record, remeasure
from bench.triage.alerts import from_published
from bench.triage.bisection import Measured

pytest.importorskip("asv", reason="the dashboard is asv's: envs without asv cannot build it")
RESULTS = environment.REPO / "results" / "asv"


def _scripted_records(alerts, folder):
    """The first alert confirmed (culprit: its `after`), the second refuted, the third undecided; the rest
    not in any record. One record per machine, as python -m bench triage writes them."""
    script = {alerts[0].key: "slower", alerts[1].key: "same", alerts[2].key: "unsure"}
    chosen = [a for a in alerts if a.key in script]

    def measure(base, head, cells):
        (alert,) = [a for a in chosen if a.before == base and a.after == head and a.cell()[0].id == cells[0].id]
        return {c.id: Measured(base, head, script[alert.key], 1.2, 1.1, 1.3, 4) for c in cells}

    for machine in {a.machine for a in chosen}:
        mine = [a for a in chosen if a.machine == machine]
        # one alert per gate run: the scripted measure answers for one cell at a time
        entries = [e for a in mine for e in bisection.triage([a], measure, lambda before, after: [after])]
        record.write(record.path(folder, machine), record.build(entries, machine, remeasure.Gate(), "complete"))
    return chosen


@pytest.fixture(scope="module")
def triaged(tmp_path_factory):
    first = dashboard.publish(environment.REPO / "asv.conf.json", html_dir=tmp_path_factory.mktemp("plain") / "html")
    alerts = from_published(first.html, RESULTS)
    results = tmp_path_factory.mktemp("results")
    chosen = _scripted_records(alerts, results)
    html = tmp_path_factory.mktemp("triaged") / "html"
    dashboard.publish(environment.REPO / "asv.conf.json", html_dir=html, triage_dir=results / record.FOLDER)
    return html, alerts, chosen


def test_the_page_lists_every_alert_with_its_outcome_and_the_untriaged_ones_as_such(triaged):
    html, alerts, chosen = triaged
    text = (html / "triage.html").read_text()
    assert text.count("<tr data-outcome=") == len(alerts)
    assert text.count('data-outcome="confirmed"') == 1 and text.count('data-outcome="refuted"') == 1
    assert text.count('data-outcome="undecided"') == 1
    assert text.count(f'data-outcome="{triage_page.NOT_TRIAGED}"') == len(alerts) - 3
    assert f"first slower commit <code>{chosen[0].after[:8]}</code>" in text


def test_a_record_of_other_alerts_matches_none(tmp_path):
    first = dashboard.publish(environment.REPO / "asv.conf.json", html_dir=tmp_path / "html")
    alerts = from_published(first.html, RESULTS)
    stale = {"alerts": [{"key": alerts[0].key.replace("..", "..0"), "outcome": "confirmed"}]}
    (tmp_path / "m.json").write_text(json.dumps(stale))
    text = triage_page.page(alerts, triage_page.records(tmp_path))
    assert 'data-outcome="confirmed"' not in text


_VISIBLE = "Array.from(document.querySelectorAll('#triage tbody tr')).filter(r => r.offsetParent !== null)"


def test_the_navigation_leads_to_the_triage_page_and_confirmed_only_hides_the_rest(triaged, chromium):
    html, alerts, chosen = triaged
    with dashboard_browser.serve(html) as url, dashboard_browser.browser() as browser:
        browser.open(url + "index.html")
        browser.page.click("#nav-li-triage a")
        browser.page.wait_for_selector("#triage")
        assert browser.page.evaluate(f"{_VISIBLE}.length") == len(alerts)
        browser.page.click("#show-confirmed")
        shown = browser.page.evaluate(f"{_VISIBLE}.map(r => r.dataset.outcome + ' ' + r.cells[6].textContent)")
        assert shown == [
            f"confirmed first slower commit {chosen[0].after[:8]} {_subject(chosen[0].after)} (1 gate run)"
        ]
        assert browser.page.evaluate("location.hash") == "#confirmed"
        browser.page.reload()  # the address keeps the filter
        browser.page.wait_for_selector("#triage")
        assert browser.page.evaluate(f"{_VISIBLE}.length") == 1
        browser.page.click("#show-all")
        assert browser.page.evaluate(f"{_VISIBLE}.length") == len(alerts)
    assert browser.errors == [] and browser.blocked == []


def _subject(commit):
    import subprocess

    return subprocess.check_output(
        ["git", "-C", str(environment.REPO), "log", "-1", "--format=%s", commit], text=True
    ).strip()[:120]
