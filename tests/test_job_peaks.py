"""The main job's % of GEMM peak: every row against the peak of its own dtype, in results.json and both reports.

The peaks are quiet_machine's (conftest.PEAKS), one per dtype and different, so a row measured against
the other dtype's peak reads another percentage. Timings are conftest.fake_timing's fixed samples.
"""

import re

import pytest

from bench.job import main, report

from .conftest import PEAKS, TWIN


def _has_percent(text: str, fraction: float) -> bool:
    """Whether `text` shows the fraction as a percentage with one decimal, as a whole number (not 12.9% for 2.9%)."""
    return re.search(rf"(?<![\d.]){re.escape(f'{100 * fraction:.1f}')}%", text) is not None


def _console_table(text: str, dtype: str) -> str:
    return text.split(f"\n{dtype}, sgd: ", 1)[1].split(", sgd: ", 1)[0]


def _markdown_table(md: str, dtype: str) -> str:
    return md.split(f"## {dtype}, sgd", 1)[1].split("\n## ", 1)[0]


def test_each_rows_percent_of_peak_is_against_its_own_dtypes_peak(new_entries, fake_timing):
    assert PEAKS["float32"] != PEAKS["float64"]
    data = main.run(["numpy", TWIN], ["seed"], ["float32", "float64"], ["sgd"], False, 0.0, data_parallel=False)
    assert data["gemm_peak_gflops"] == {"cpu": PEAKS}
    text, md = report.console(data), report.markdown(data)
    rows = [r for r in data["results"] if r["status"] == "ok"]
    assert {(r["implementation"], r["problem"]["dtype"]) for r in rows} == {
        (n, d) for n in ("numpy", TWIN) for d in PEAKS
    }
    for r in rows:
        dtype, name = r["problem"]["dtype"], r["implementation"]
        other = next(d for d in PEAKS if d != dtype)
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / PEAKS[dtype])
        console = _console_table(text, dtype)
        assert f"% of GEMM peak (cpu {PEAKS[dtype]:.1f} GFLOP/s)" in console.splitlines()[0]
        (console_row,) = (line for line in console.splitlines() if line.split(" ")[0] == name)
        (md_row,) = (line for line in _markdown_table(md, dtype).splitlines() if line.startswith(f"| `{name}` |"))
        for row in (console_row, md_row):
            assert _has_percent(row, r["gflops"] / PEAKS[dtype]), (dtype, row)
            assert not _has_percent(row, r["gflops"] / PEAKS[other]), (dtype, row)
