"""How long a full `asv run` takes on this machine, estimated from a timed sample of it.

    python -m bench.asvtools.run_estimate            # runs the sample (tens of minutes), prints the estimate
    python -m bench.asvtools.run_estimate --list     # the sample's parts and what each stands for

A full run is over two thousand parameter sets and takes the machine for most of an hour;
this times a sample instead. Each part of the sample is one `asv run --python=same
--dry-run` of a `-b` selection, under a scratch configuration whose results go to .asv/
(nothing is written under results/), timed from start to end. The parts are chosen so
that a full run holds each part's cost a known number of times:

- a problem of the preset grid with every implementation on it (the ones that cannot run
  here are skipped, as in a full run, and the oracle is computed once for all of them):
  one (dtype, optimizer) of the four at seed, tutorial, medium and xlarge, standing for
  four; two at large, where the cost is, standing for two each;
- the batch sweep at one dtype of the two per batch size, standing for two;
- one configuration of each dynamics track with every implementation, standing for five;
- the GEMM peak and the thread budget, once, as in a full run.

Each asv run pays asv's own start (discovering the suite, starting its processes): the
part with the GEMM peak and the thread budget, whose benchmarks take a moment, measures
it, and it is counted once. The estimate is the sum of each part's time less that start,
times how many the part stands for, plus one start. It is an estimate: the dtypes and
optimizers left out of the sample are taken to cost what the sampled ones do, and the
machine's other work slows the sample as it would a full run.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time

from bench.asvtools import scratch
from bench.benchmarks import asv_dynamics
from bench.harness import cli, environment, grid, load, machine

CONFIG = environment.REPO / ".asv" / "estimate.conf.json"
SCRATCH = ".asv/estimate"  # results and html of the sample, relative to the checkout
LOG = environment.REPO / SCRATCH / "asv.log"  # asv's output of every part


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    selection: tuple[str, ...]  # asv run -b regular expressions
    stands_for: int  # how many times a full run holds this part's cost


def _cell(benchmark: str, *params: str) -> str:
    """A -b expression for every benchmark of `benchmark` (a class) at these parameters, any implementation."""
    values = ", ".join(re.escape(repr(value)) for value in params)
    return rf"^{re.escape(benchmark)}\.\w+\('[^']*', {values}\)$"


# (preset, dtype, optimizer, stands for): every preset once; large, where the time goes, at both dtypes.
PRESET_SAMPLE = (
    ("seed", "float32", "sgd", 4),
    ("tutorial", "float64", "adam", 4),
    ("medium", "float32", "adam", 4),
    ("large", "float32", "sgd", 2),
    ("large", "float64", "adam", 2),
    ("xlarge", "float64", "sgd", 4),
)
# One dtype per batch size, alternating.
SWEEP_SAMPLE = tuple((n_id, grid.DTYPES[i % len(grid.DTYPES)]) for i, n_id in enumerate(grid.SWEEP_IDS))
# One configuration of each dynamics track: a tutorial-sized run and a seed-sized one.
DYNAMICS_SAMPLE = (
    ("asv_dynamics.FinalLoss", next(c for c in asv_dynamics.CONVERGING if c.startswith("tutorial"))),
    ("asv_dynamics.DivergenceStep", next(c for c in asv_dynamics.DIVERGENCE if c.startswith("seed"))),
)
START = "asv's start, the GEMM peak and the thread budget"


def parts() -> list[Part]:
    found = [Part(START, (r"^training_step\.GemmPeak\.", r"^training_step\.track_thread_budget$"), 1)]
    for preset, dtype, optimizer, stands_for in PRESET_SAMPLE:
        found.append(
            Part(
                f"preset grid at {preset} {dtype} {optimizer}",
                (_cell("training_step.Presets", preset, dtype, optimizer),),
                stands_for,
            )
        )
    sweep = tuple(_cell("training_step.BatchSweep", n_id, dtype) for n_id, dtype in SWEEP_SAMPLE)
    found.append(Part("batch sweep, one dtype per batch size", sweep, len(grid.DTYPES)))
    dynamics = tuple(_cell(benchmark, config) for benchmark, config in DYNAMICS_SAMPLE)
    found.append(Part("dynamics, one configuration of each track", dynamics, len(asv_dynamics.CONVERGING)))
    return found


def estimate(seconds: dict[str, float], sample: list[Part]) -> float:
    """The full run's seconds from each part's measured seconds: one asv start, every part's own time
    as many times as it stands for."""
    start = seconds[START]
    return start + sum(part.stands_for * max(0.0, seconds[part.name] - start) for part in sample if part.name != START)


def _asv_run(part: Part, name: str, log) -> float:
    """Seconds of one asv run of the part; its output goes to `log` (a benchmark that fails still took its time)."""
    command = [sys.executable, "-m", "asv", "run", "--python=same", "--dry-run", "--machine", name]
    command += ["--config", str(CONFIG)]
    for expression in part.selection:
        command += ["-b", expression]
    log.write(f"== {part.name}: {' '.join(command)}\n")
    log.flush()
    began = time.perf_counter()
    subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=environment.REPO)
    return time.perf_counter() - began


def main(argv=None) -> int:
    parser = cli.Parser(prog="python -m bench.asvtools.run_estimate", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="print the sample's parts and stop")
    args = parser.parse_args(argv)
    sample = parts()
    if args.list:
        for part in sample:
            print(f"x{part.stands_for}  {part.name}: {' '.join(part.selection)}")
        return 0
    scratch.write(
        environment.REPO / "asv.conf.json", CONFIG, results_dir=f"{SCRATCH}/results", html_dir=f"{SCRATCH}/html"
    )
    name = machine.register()  # as make asv-machine does: asv run --machine needs it
    LOG.parent.mkdir(parents=True, exist_ok=True)
    seconds = {}
    loads = [load.load_average()]
    with open(LOG, "w") as log:
        for part in sample:
            seconds[part.name] = _asv_run(part, name, log)
            loads.append(load.load_average())
            print(f"{seconds[part.name]:8.1f} s  x{part.stands_for}  {part.name}", flush=True)
    total = estimate(seconds, sample)
    busy = ", ".join(f"{value:.1f}" for value in loads if value is not None)
    print(
        f"estimated full asv run: {total / 60:.0f} min on {load.cores()} cores (an estimate from the sample above; "
        f"one-minute load average between parts: {busy})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.asvtools.run_estimate", main))
