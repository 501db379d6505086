"""asv's published page, changed where it hides what the results hold (after `asv publish`, by `make dashboard`).

- asv lists every benchmark of benchmarks.json, measured or not, and its summary grid asks
  for a summary graph of each: one that no machine has a result for yet (a benchmark
  renamed or added since the committed runs, which were selections) is a failed load
  (404) and an empty box. Such benchmarks are left out of the published index, and
  `make dashboard` names them.
- The summary grid draws each summary as a line: a benchmark with results at one commit
  only is a single point, which a line does not draw, so its box stayed empty. A lone
  point is drawn as a point.
- The navigation links the Triage page (bench.asvtools.triage_page): which alerts re-measuring
  confirmed, beside asv's list of them.
- The Regressions page has no machine column, though every listed regression is one
  machine's: two machines' rows of one benchmark looked alike. A Machine column follows
  the benchmark's name (and the default sort, by factor, follows its column).

Each change replaces an exact text of asv 0.6's files; where asv's file no longer holds it,
the build stops and says so, rather than publish a page with the change half made.
"""

from __future__ import annotations

import json
import pathlib

from bench.harness import cli


class PageChanged(cli.Fatal):
    """asv's page no longer holds the text a change replaces."""


# (file, asv's text, its replacement, how many times asv's file holds it)
PATCHES = (
    (
        "index.html",
        '<li id="nav-li-regressions"><a href="#/regressions">Regressions</a></li>',
        '<li id="nav-li-regressions"><a href="#/regressions">Regressions</a></li>'
        '<li id="nav-li-triage"><a href="triage.html">Triage</a></li>',
        1,
    ),
    (
        "summarygrid.js",
        "plot_div, [{data: data}], options);",
        # A lone point: a benchmark measured at one commit. A line through it draws nothing.
        "plot_div, [{data: data, points: {show: data.filter(function(p) { return p[1] !== null; }).length == 1}}],"
        " options);",
        1,
    ),
    (
        "regressions.js",
        "'<th data-sort=\"string\">Benchmark</th>' +",
        "'<th data-sort=\"string\">Benchmark</th>' + '<th data-sort=\"string\">Machine</th>' +",
        2,  # the table of regressions and the grouped one
    ),
    (
        "regressions.js",
        "row.append($('<td/>').append(benchmark_link));",
        "row.append($('<td/>').append(benchmark_link)); "
        "row.append($('<td style=\"white-space: nowrap\"/>').text(param_dict['machine']));",
        2,
    ),
    (
        "regressions.js",
        'var th_to_sort = table.find("thead th").eq(3);',  # Factor, by default: one column further now
        'var th_to_sort = table.find("thead th").eq(4);',
        1,
    ),
)


def patch(html_dir: pathlib.Path) -> None:
    """Apply PATCHES to the published page; PageChanged, before anything is written, where one does not fit."""
    texts = {name: (html_dir / name).read_text(encoding="utf-8") for name in {p[0] for p in PATCHES}}
    for name, old, new, times in PATCHES:
        found = texts[name].count(old)
        if found != times:
            raise PageChanged(
                f"asv's {name} holds {old!r} {found} times, not {times}: asv's page changed; "
                f"update bench.asvtools.page_fixes.PATCHES"
            )
        texts[name] = texts[name].replace(old, new)
    for name, text in texts.items():
        (html_dir / name).write_text(text, encoding="utf-8")


def leave_out_unmeasured(html_dir: pathlib.Path) -> list[str]:
    """Remove from the published index the benchmarks no machine has a result for; returns their names.

    asv writes a summary graph (graphs/summary/NAME.json) for every benchmark with at least one
    result and for no other.
    """
    index_path = html_dir / "index.json"
    index = json.loads(index_path.read_text())
    summaries = html_dir / "graphs" / "summary"
    unmeasured = sorted(name for name in index["benchmarks"] if not (summaries / f"{name}.json").is_file())
    if unmeasured:
        index["benchmarks"] = {k: v for k, v in index["benchmarks"].items() if k not in unmeasured}
        index_path.write_text(json.dumps(index))  # compact, as asv writes it
    return unmeasured


def fix(html_dir: pathlib.Path) -> list[str]:
    """Every change above; returns the benchmarks left out for want of a result."""
    patch(html_dir)
    return leave_out_unmeasured(html_dir)
