"""The main job's % of the GEMM rate: every row against a product of its own dtype, in results.json and both reports.

The scripted GEMM blocks run at quiet_machine's peaks (conftest.PEAKS), one per dtype and different, so a
row measured against the other dtype's product reads another percentage. Timings are conftest.fake_timing's.
"""

import re

import pytest

from bench.job import main, report

from .conftest import PEAKS, TWIN, short_settings


def _has_percent(text: str, fraction: float) -> bool:
    """Whether `text` shows the fraction as a percentage with one decimal, as a whole number (not 12.9% for 2.9%)."""
    return re.search(rf"(?<![\d.]){re.escape(f'{100 * fraction:.1f}')}%", text) is not None


def _console_table(text: str, dtype: str) -> str:
    return text.split(f"\n{dtype}, sgd: ", 1)[1].split(", sgd: ", 1)[0]


def _markdown_table(md: str, dtype: str) -> str:
    return md.split(f"## {dtype}, sgd", 1)[1].split("\n## ", 1)[0]


def test_each_rows_percent_of_peak_is_against_its_own_dtypes_peak(new_entries, fake_timing):
    assert PEAKS["float32"] != PEAKS["float64"]
    data = main.run(
        ["numpy", TWIN], ["seed"], ["float32", "float64"], ["sgd"], False, short_settings(), data_parallel=False
    )
    assert data["gemm_peak_gflops"] == {"cpu": PEAKS}
    text, md = report.console(data), report.markdown(data)
    rows = [r for r in data["results"] if r["status"] == "ok"]
    assert {(r["implementation"], r["problem"]["dtype"]) for r in rows} == {
        (n, d) for n in ("numpy", TWIN) for d in PEAKS
    }
    for r in rows:
        dtype, name = r["problem"]["dtype"], r["implementation"]
        other = next(d for d in PEAKS if d != dtype)
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / PEAKS[dtype])  # against the cached peak
        assert r["gemm_fraction"] == pytest.approx(r["gflops"] / PEAKS[dtype])  # against the product alongside
        assert r["gemm_fraction_low"] == pytest.approx(r["gemm_fraction"])  # every group's ratio is the same
        console = _console_table(text, dtype)
        assert f"% of the GEMM rate (a {dtype} product timed alongside)" in console.splitlines()[0]
        (console_row,) = (line for line in console.splitlines() if line.split(" ")[0] == name)
        (md_row,) = (line for line in _markdown_table(md, dtype).splitlines() if line.startswith(f"| `{name}` |"))
        for row in (console_row, md_row):
            assert _has_percent(row, r["gflops"] / PEAKS[dtype]), (dtype, row)
            assert not _has_percent(row, r["gflops"] / PEAKS[other]), (dtype, row)
