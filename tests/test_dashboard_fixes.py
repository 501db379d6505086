"""The dashboard shows what the committed results hold: no empty box, no failed load, no `[none]`
selector, the machine of every regression.

The published copy of the results and the changes to asv's page are checked on their own;
the browser test opens the dashboard of the committed results in headless Chromium
(skipped where there is none, unless STEPBENCH_BROWSER_TEST=required).
"""

import collections
import json
import pathlib
import shutil
import urllib.parse

import pytest

from bench.asvtools import browser as dashboard_browser
from bench.asvtools import dashboard, page_fixes, publish_input
from bench.harness import environment

asv = pytest.importorskip("asv", reason="the dashboard is asv's: envs without asv cannot build it")
ASV_WWW = pathlib.Path(asv.__file__).parent / "www"
RESULTS = environment.REPO / "results" / "asv"
GRAPH = "training_step.Presets.time_step"
CELL = {"implementation": "numpy", "preset": "seed", "dtype": "float32", "optimizer": "sgd"}


def _run(machine: str, **libraries) -> dict:
    return {"commit_hash": "0" * 40, "params": {"machine": machine, "python": "3.11"} | libraries, "results": {}}


def test_a_library_only_some_runs_recorded_is_left_out_of_the_published_copy_only(tmp_path):
    source = tmp_path / "results"
    runs = {
        "intel/1-existing-py3.11.json": _run("intel", numpy="2.4.6", torch="2.13.0"),  # before jax joined the matrix
        "amd/2-existing-py3.11.json": _run("amd", numpy="2.4.6", torch="2.13.0", jax="0.10.2"),
        "amd/3-existing-py3.11.json": _run("amd", numpy="2.4.6", torch="2.14.1", jax="0.10.2"),
    }
    for name, run in runs.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(json.dumps(run))
    (source / "amd" / "machine.json").write_text(json.dumps({"machine": "amd"}))
    (source / "benchmarks.json").write_text("{}")
    committed = {path: path.read_bytes() for path in source.rglob("*.json")}

    # jax tells no two runs apart; torch does (2.13.0 and 2.14.1), and numpy is recorded by all.
    assert publish_input.copy_for_publishing(source, tmp_path / "copy") == ["jax"]
    for name, run in runs.items():
        published = json.loads((tmp_path / "copy" / name).read_text())["params"]
        assert published == {key: value for key, value in run["params"].items() if key != "jax"}
    assert {path: path.read_bytes() for path in source.rglob("*.json")} == committed


def test_the_page_fixes_fit_asvs_page_and_stop_where_it_changed(tmp_path):
    html = tmp_path / "html"
    shutil.copytree(ASV_WWW, html)
    page_fixes.patch(html)
    regressions_js = (html / "regressions.js").read_text()
    assert regressions_js.count('<th data-sort="string">Machine</th>') == 2
    assert regressions_js.count("text(param_dict['machine'])") == 2

    changed = tmp_path / "changed"
    shutil.copytree(ASV_WWW, changed)
    (changed / "regressions.js").write_text(
        (changed / "regressions.js").read_text().replace("Benchmark</th>", "Name</th>")
    )
    summary_before = (changed / "summarygrid.js").read_text()
    with pytest.raises(page_fixes.PageChanged, match="regressions.js"):
        page_fixes.patch(changed)
    assert (changed / "summarygrid.js").read_text() == summary_before  # nothing half done


def _measured(benchmarks: dict) -> set[str]:
    """Benchmarks of benchmarks.json with a committed result of their current version on some machine."""
    from asv import results as asv_results

    names = set()
    for path in RESULTS.glob("*/*.json"):
        if path.name != "machine.json":
            names |= set(asv_results.Results.load(str(path)).get_result_keys(benchmarks))
    return names


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return dashboard.publish(environment.REPO / "asv.conf.json", html_dir=tmp_path_factory.mktemp("fixed") / "html")


def test_only_benchmarks_some_machine_has_a_result_for_are_listed(published):
    from asv import util

    benchmarks = util.load_json(str(RESULTS / "benchmarks.json"), api_version=2)
    listed = set(json.loads((published.html / "index.json").read_text())["benchmarks"])
    assert listed == _measured(benchmarks)
    assert sorted(published.unmeasured) == sorted(set(benchmarks) - listed - {"version"})


# Each summary box of the grid, scrolled into view (asv draws a box when it is seen), then what it drew.
_SHOW_EVERY_BOX = """() => Object.keys($.asv.main_json.benchmarks).forEach(name => {
    document.getElementById('summarygrid-' + name).scrollIntoView();
    $(window).trigger('scroll');
})"""
_EVERY_BOX_PLOTTED = """() => Object.keys($.asv.main_json.benchmarks).every(
    name => $(document.getElementById('summarygrid-' + name)).data('plot'))"""
_WHAT_EACH_BOX_DREW = """() => Object.fromEntries(Object.keys($.asv.main_json.benchmarks).map(name => {
    const plot = $(document.getElementById('summarygrid-' + name)).data('plot');
    if (!plot) return [name, 'no plot'];
    const series = plot.getData()[0];
    const points = series.data.filter(p => p[1] !== null).length;
    const drawn = (series.lines.show && points >= 2) || (series.points.show && points >= 1);
    return [name, drawn ? 'drawn' : `nothing drawn (${points} point)`];
}))"""


def test_every_summary_box_draws_its_results_and_no_load_fails(published, chromium):
    with dashboard_browser.serve(published.html) as url, dashboard_browser.browser() as browser:
        browser.open(url + "index.html")
        # The index object can be there before its benchmarks are (read once on a loaded machine).
        browser.page.wait_for_function("$.asv.main_json.benchmarks", timeout=dashboard_browser.TIMEOUT_MS)
        browser.page.evaluate(_SHOW_EVERY_BOX)
        try:
            browser.page.wait_for_function(_EVERY_BOX_PLOTTED, timeout=dashboard_browser.TIMEOUT_MS)
        except Exception:  # Playwright's timeout: the assertion below names the boxes without a plot
            pass
        browser.page.wait_for_load_state("networkidle")
        drew = browser.page.evaluate(_WHAT_EACH_BOX_DREW)
    assert drew and {name: what for name, what in drew.items() if what != "drawn"} == {}
    assert browser.errors == [] and browser.blocked == []


def test_the_legend_and_selectors_name_only_what_tells_the_lines_apart(published, chromium):
    selection = urllib.parse.urlencode({f"p-{name}": repr(value) for name, value in CELL.items()})
    with dashboard_browser.serve(published.html) as url, dashboard_browser.browser() as browser:
        browser.open(url + "index.html#" + GRAPH + "?" + selection)  # every machine selected
        labels = [label for label, _ in browser.graph_series()]
        buttons = browser.page.evaluate("$('#graphdisplay-state-params a.btn').map((i, b) => $(b).text()).get()")
    machines = {path.parent.name for path in RESULTS.glob("*/machine.json")}
    assert {f"machine-{machine}" in " ".join(labels) for machine in machines} == {True}
    for label in labels:
        keys = {part.split("-", 1)[0] for part in label.split("; ")}
        assert keys <= set(CELL) | {"machine"}, label
    assert "[none]" not in buttons


def test_each_regression_names_its_machine(published, chromium):
    listed = json.loads((published.html / "regressions.json").read_text())["regressions"]
    expected = collections.Counter(entry[2]["machine"] for entry in listed for _ in entry[6] or ())
    assert expected, "the committed results list no regression"
    with dashboard_browser.serve(published.html) as url, dashboard_browser.browser() as browser:
        browser.open(url + "index.html#regressions")
        browser.regression_rows()
        table = "$('#regressions-body table').first()"
        header = browser.page.evaluate(f"{table}.find('thead th').map((i, th) => $(th).text()).get()")
        column = header.index("Machine")
        machines = browser.page.evaluate(
            f"{table}.find('tbody tr').map((i, tr) => $(tr).children().eq({column}).text()).get()"
        )
    assert header[:2] == ["Benchmark", "Machine"]
    assert collections.Counter(machines) == expected
