"""The dashboard (`make dashboard`): built from the committed results, it opens with no network.

The offline rewrite is checked on asv's own page template; the browser test opens the
dashboard built from the committed results in headless Chromium with every request
outside 127.0.0.1 blocked. Without Chromium (Debian's package `chromium`; CI installs it)
the browser test skips with that reason; the rest runs everywhere.
"""

import itertools
import pathlib
import re
import shutil
import urllib.parse

import pytest

from bench.asvtools import browser as dashboard_browser
from bench.asvtools import dashboard
from bench.asvtools import scratch as asv_scratch
from bench.harness import environment

asv = pytest.importorskip("asv", reason="the dashboard is asv's: envs without asv cannot build it")
ASV_WWW = pathlib.Path(asv.__file__).parent / "www"
RESULTS = environment.REPO / "results" / "asv"
CELL = ("numpy", "seed", "float32", "sgd")  # implementation, preset, dtype, optimizer
BENCHMARK = "training_step.Presets.time_step"


def _asv_page(tmp_path) -> pathlib.Path:
    html = tmp_path / "html"
    shutil.copytree(ASV_WWW, html)
    return html


def test_every_address_of_asv_page_is_served_from_the_committed_copies(tmp_path):
    html = _asv_page(tmp_path)
    template = (html / "index.html").read_text()
    replaced = dashboard.localize(html)
    page = (html / "index.html").read_text()

    assert replaced == sorted(url for url in dashboard.VENDORED if url in template) and replaced
    assert not re.search(r'<(script|link)\b[^>]*(src|href)="(https?:)?//', page)
    # Each tag's integrity matches the file the page will be served: a wrong hash would block the load.
    for src, pinned in re.findall(r'(?:src|href)="(vendor/[^"]+)" integrity="([^"]+)"', page):
        algorithm = pinned.split("-", 1)[0]
        assert dashboard.integrity(html / src, algorithm) == pinned, src
    assert page.count('integrity="') == template.count('integrity="')


def test_copies_are_the_exact_files_asv_pins_where_the_cdn_serves_an_npm_file():
    # jQuery, bootstrap, blueimp-md5, flot-orderbars and stupidtable are byte for byte what asv's
    # integrity attributes name; a changed copy would lose that and must be noticed.
    template = (ASV_WWW / "index.html").read_text()
    pinned = dict(re.findall(r'(?:src|href)="(https://[^"]+)" integrity="([^"]+)"', template))
    identical = [url for url, copy in dashboard.VENDORED.items() if "flot/0.8.3" not in url]
    for url in identical:
        assert dashboard._matches(dashboard.VENDOR_SOURCE / dashboard.VENDORED[url], pinned[url]), url


def test_a_library_address_without_a_copy_stops_the_build(tmp_path):
    html = _asv_page(tmp_path)
    index = html / "index.html"
    index.write_text(
        index.read_text().replace("</head>", '<script src="https://cdn.example.org/new.js"></script></head>')
    )
    with pytest.raises(dashboard.NotOffline, match="cdn.example.org/new.js"):
        dashboard.localize(html)


def _expected_points(machine_dir: pathlib.Path) -> int:
    """Committed runs on this machine with a value for CELL: one point each on the graph."""
    from asv import results as asv_results

    benchmarks = asv_results.util.load_json(str(RESULTS / "benchmarks.json"), api_version=2)
    params = benchmarks[BENCHMARK]["params"]
    wanted = [repr(value) for value in CELL]
    count = 0
    for path in sorted(machine_dir.glob("*.json")):
        if path.name == "machine.json":
            continue
        run = asv_results.Results.load(str(path))
        if BENCHMARK not in run.get_result_keys(benchmarks):
            continue
        values = run.get_result_value(BENCHMARK, params)
        combos = list(itertools.product(*params))
        value = values[combos.index(tuple(wanted))]
        count += value is not None and value == value  # a NaN is a failed or skipped run: no point
    return count


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    html = tmp_path_factory.mktemp("dashboard") / "html"
    dashboard.publish(environment.REPO / "asv.conf.json", html_dir=html)
    return html


def test_the_dashboard_of_the_committed_results_works_offline_in_chromium(published, chromium):
    # Every machine with a committed run of the cell (a GPU machine may have only its CUDA entries).
    expected = {p.parent.name: _expected_points(p.parent) for p in RESULTS.glob("*/machine.json")}
    expected = {machine: points for machine, points in sorted(expected.items()) if points}
    assert expected, "no committed asv run of numpy at seed, float32, SGD"
    with dashboard_browser.serve(published) as url, dashboard_browser.browser() as browser:
        browser.open(url + "index.html")
        for machine, points in expected.items():
            selection = {"machine": machine} | {
                f"p-{name}": repr(value)
                for name, value in zip(("implementation", "preset", "dtype", "optimizer"), CELL, strict=True)
            }
            _count_graph_loads(browser)
            browser.open(url + "index.html#" + BENCHMARK + "?" + urllib.parse.urlencode(selection))
            _wait_until_drawn(browser)
            series = browser.graph_series()
            # One line per environment (asv splits a machine's history where its library versions
            # change). Under load asv can push a line twice when two of its loads overlap: a repeat
            # must be identical, and counts once.
            lines = dict(series)
            assert all(lines[label] == drawn for label, drawn in series), (machine, series)
            assert sum(lines.values()) == points, (machine, series)
        browser.open(url + "index.html#regressions")
        assert browser.regression_rows() == dashboard.regressions(published)[1] > 0
        assert browser.blocked == []
        # asv's summary grid asks for a graph of every benchmark it knows, and has none of those
        # without a committed result (a track added since the last run of a machine): those 404s
        # are asv's own; any other failed load or error is the page's.
        measured = _benchmarks_with_results()
        expected_404 = re.compile(r"HTTP 404: .*/graphs/summary/([^/?]+)\.json\?")
        unexpected = [
            error
            for error in browser.errors
            if not (
                (found := expected_404.match(error))
                and found.group(1) not in measured
                or error.startswith("Failed to load resource: the server responded with a status of 404")
            )
        ]
        assert unexpected == []
        assert sum(1 for error in browser.errors if expected_404.match(error)) == sum(
            1 for error in browser.errors if error.startswith("Failed to load resource")
        )  # each console 404 is one of the summaries above


# A new selection is a change of the address's fragment: the page is not loaded again, so waiting for
# the network to be idle returns at once, and the plot of the previous selection stays on the page
# until asv has loaded the new graph files (one per line: a machine's history splits where its library
# versions change) and redrawn it, once per file. Counted before then, the points were another
# machine's: 1 where 3 were expected, when the second machine's file came late. So each load of the
# benchmark's graph files is counted, and the points are read once every load has been handled:
# asv's handlers, which draw, run as a load completes, before a timeout set at that moment.
_COUNT_GRAPH_LOADS = """(benchmark) => {
    const asv = window.$.asv;
    if (!asv.stepbenchLoads) {
        const load = asv.load_graph_data;
        const loads = {pending: 0, handled: 0, benchmark: null};
        asv.load_graph_data = function (url, ...rest) {
            const promise = load.call(this, url, ...rest);
            if (!url.startsWith("graphs/summary/") && url.endsWith("/" + loads.benchmark + ".json")) {
                loads.pending += 1;
                promise.always(() => setTimeout(() => { loads.pending -= 1; loads.handled += 1; }, 0));
            }
            return promise;
        };
        asv.stepbenchLoads = loads;
    }
    asv.stepbenchLoads.benchmark = benchmark;
    asv.stepbenchLoads.handled = 0;
}"""
_ALL_GRAPH_LOADS_HANDLED = "() => $.asv.stepbenchLoads.handled > 0 && $.asv.stepbenchLoads.pending === 0"


def _count_graph_loads(browser) -> None:
    """From now on, count the loads of BENCHMARK's graph files (the page is asv's, already open)."""
    browser.page.evaluate(_COUNT_GRAPH_LOADS, BENCHMARK)


def _wait_until_drawn(browser) -> None:
    """Wait until every graph file the selection asked for has been loaded and drawn."""
    browser.page.wait_for_function(_ALL_GRAPH_LOADS_HANDLED, timeout=dashboard_browser.TIMEOUT_MS)


def _benchmarks_with_results() -> set[str]:
    from asv import results as asv_results

    names = set()
    for path in RESULTS.glob("*/*.json"):
        if path.name != "machine.json":
            names |= set(asv_results.Results.load(str(path)).get_all_result_keys())
    return names


def test_the_scratch_configuration_publishes_where_it_is_told(tmp_path):
    target = tmp_path / "conf" / "asv.conf.json"
    asv_scratch.write(environment.REPO / "asv.conf.json", target, html_dir=str(tmp_path / "out"))
    assert asv_scratch.resolved(target, "html_dir") == (tmp_path / "out").resolve()
    assert asv_scratch.resolved(target, "results_dir") == RESULTS.resolve()


def test_the_browser_records_what_the_dashboard_test_asserts_is_absent(tmp_path, chromium):
    # The assertions above can fail: a request outside localhost, an uncaught error and a missing file are seen.
    (tmp_path / "index.html").write_text(
        '<html><head><script src="https://cdn.example.org/lib.js"></script><script src="missing.js"></script>'
        "<script>window.$ = {asv: {main_json: {}}}; throw new Error('broken page');</script></head></html>"
    )
    with dashboard_browser.serve(tmp_path) as url, dashboard_browser.browser() as browser:
        browser.open(url + "index.html")
    assert browser.blocked == ["https://cdn.example.org/lib.js"]
    assert any("broken page" in error for error in browser.errors)
    assert any("missing.js" in error for error in browser.errors)
