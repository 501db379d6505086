"""`python -m bench.asvtools.spread RESULTS_DIR RESULTS_DIR ...`: how far each asv track moves between runs of one commit.

Each RESULTS_DIR holds one `asv run` (as asv writes it: benchmarks.json and a folder per
machine). For every benchmark and parameter set measured in all of them, the spread is
max/min - 1 over the runs; the table gives its median, 90th percentile and maximum per
benchmark. Unchanged code should give lines that do not move: the spread is what a
dashboard reader would take for a change.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import sys

import numpy as np

from bench.harness import cli


def values(results_dir: pathlib.Path) -> dict[tuple[str, tuple], float]:
    """{(benchmark, parameters): value} of every result file under results_dir, NaN and skipped left out."""
    from asv import results as asv_results  # imported here: asv imports bench/ in environments without asv
    from asv import util

    benchmarks = util.load_json(str(results_dir / "benchmarks.json"), api_version=2)
    found = {}
    for path in sorted(results_dir.glob("*/*.json")):
        if path.name == "machine.json":
            continue
        run = asv_results.Results.load(str(path))
        for name in run.get_result_keys(benchmarks):
            params = benchmarks[name]["params"]
            combos = list(itertools.product(*params)) if params else [()]
            for combo, value in zip(combos, run.get_result_value(name, params), strict=True):
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    found[(name, combo)] = float(value)
    return found


def spreads(runs: list[dict]) -> dict[str, list[float]]:
    """{benchmark: [max/min - 1 of each parameter set measured in every run]}."""
    common = set(runs[0]).intersection(*runs[1:])
    by_benchmark: dict[str, list[float]] = {}
    for key in sorted(common):
        measured = [run[key] for run in runs]
        by_benchmark.setdefault(key[0], []).append(max(measured) / min(measured) - 1)
    return by_benchmark


def table(by_benchmark: dict[str, list[float]], runs: int) -> str:
    lines = [
        f"Spread between {runs} runs of unchanged code, max/min - 1 per parameter set:",
        "",
        "| benchmark | parameter sets | median | p90 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, spread in sorted(by_benchmark.items()):
        median, p90 = np.percentile(spread, [50, 90])
        lines.append(f"| `{name}` | {len(spread)} | {median:.1%} | {p90:.1%} | {max(spread):.1%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = cli.Parser(prog="python -m bench.asvtools.spread", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", type=pathlib.Path, help="results folders, one asv run each")
    args = parser.parse_args(argv)
    if len(args.results) < 2:
        raise cli.Fatal("give at least two results folders: a spread needs two runs")
    for folder in args.results:
        if not (folder / "benchmarks.json").is_file():
            raise cli.Fatal(f"{folder}: no benchmarks.json, not an asv results folder")
    runs = [values(folder) for folder in args.results]
    by_benchmark = spreads(runs)
    if not by_benchmark:
        raise cli.Fatal("no benchmark was measured in every run")
    print(table(by_benchmark, len(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.asvtools.spread", main))
