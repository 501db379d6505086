"""`make small-gemm`: how near numba:blas's small products run to the GEMM rate, and whether another
provider's kernels would bring them nearer (results/latest/small-gemm.md and .json).

For each preset (seed, tutorial; medium with --presets) and dtype, in one process, every figure a ratio of two calls
timed in alternated blocks (impls.timing.alternate, every pool asleep between blocks):

- each of numba:blas's five products by SciPy's OpenBLAS (what numba:blas calls), as a fraction
  of the GEMM rate on the thread budget (a 1024^3 product of the dtype, as the main job's
  yardstick) and of the one-thread GEMM rate;
- the same product by each other provider installed (bench.studies.small_gemm_providers:
  oneMKL's JIT kernel, or its standard gemm where MKL declines to JIT; BLIS), as its time over
  OpenBLAS's;
- numba:blas's whole step (its own plan, chosen at create) against the GEMM block, and the
  products' share of it.

Every product of every provider is checked against the float64 product before it is timed; a
provider that disagrees is reported and not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

OUT = pathlib.Path("results/latest")
PRESETS = ("seed", "tutorial")  # the small shapes; medium on request (its products are mid-size GEMMs)
CHOICES = (*PRESETS, "medium")
DTYPES = ("float32", "float64")
PAIRS = 15
BLOCK_S = 2e-3
SETTLE_S = 3e-3  # bench.job.measure.SETTLE_S: every pool asleep before the next block
CALL_S = 20e-6  # the products are repeated inside one compiled call to about this long: a Python call is ~0.3 us


def _in_quiet_pools() -> None:
    """Run again with the main job's short pool waits (bench.job.measure.SHORT_WAITS), which must be
    in the environment before any pool starts: a pool spinning after its block takes a core from the next."""
    from bench.job.measure import SHORT_WAITS

    if any(os.environ.get(k) != v for k, v in SHORT_WAITS.items()):
        os.execve(
            sys.executable, [sys.executable, "-m", "bench.studies.small_gemm", *sys.argv[1:]], os.environ | SHORT_WAITS
        )


def repeats(run, target_s: float = CALL_S) -> int:
    """Products per compiled call so that one call lasts about target_s (run is warm)."""
    start = time.perf_counter()
    run(100)
    per_product = max((time.perf_counter() - start) / 100, 1e-9)
    return max(1, round(target_s / per_product))


def _repeated(run, products: int):
    """A call of `products` products back to back in one compiled call."""
    return lambda: run(products)


def ratio(first, second, first_per_call: int = 1, second_per_call: int = 1) -> float:
    """Median over alternated block pairs of the time of one of first's units over one of second's."""
    from impls import timing

    samples = timing.alternate(first, second, pairs=PAIRS, block_s=BLOCK_S, settle_s=SETTLE_S)
    return timing.median_ratio(samples) * second_per_call / first_per_call


def fraction_of_gemm(flops: float, seconds_over_gemm: float, gemm_flops: float) -> float:
    """A call's FLOP rate over the GEMM block's, from the call's time over the block's."""
    return (flops / gemm_flops) / seconds_over_gemm


def _threads_by_measurement() -> dict:
    """The budget's threads on a quiet machine; beside other work, the CPUs it leaves free, pinned, as the main
    job does (bench.job.main.choose_threads): a two-thread GEMM block with a core taken stalls, and every
    fraction of its rate would read high."""
    from bench.gate import rounds
    from bench.harness import load
    from impls import threads

    other, per_cpu = load.probe()
    count, cpus, why = rounds.threads_beside(other, per_cpu)
    if not rounds.quiet_reason(other):
        if cpus:
            os.sched_setaffinity(0, cpus)
        os.environ[threads.ENV] = str(count)  # threads.budget(), which every pool is limited to, reads it
        print(f"small-gemm: {why}: {count} thread(s), not the budget's", file=sys.stderr)
    return {"other_work": other, "threads": count, "cpus": cpus, "why": why}


def _time_the_step(problem, gemm) -> tuple[float, dict]:
    """numba:blas's step (its plan chosen at create) over the GEMM block, and its plan."""
    import impls
    from impls import agreement

    step = impls.create("numba:blas", problem)
    agreement.assert_agrees(step)  # the step timed is the step checked
    return ratio(step.step, gemm), step.describe()["plan"]


def measure_problem(preset: str, dtype: str, mkl, blis, progress) -> dict:
    """Every figure of one preset and dtype (see the module)."""
    from threadpoolctl import threadpool_limits

    from bench.harness.peak import product
    from bench.studies.small_gemm_providers import Operands, step_products
    from impls import agreement, threads

    problem = agreement.check_problem(preset, dtype, "sgd")
    gemm = product(dtype)  # the budget's threads (threads.apply)
    budget = threads.budget()
    gemm_flops = 2 * 1024**3

    def gemm_one_thread():
        with threadpool_limits(limits=1):
            gemm()

    products = {}
    for name, shape in step_products(*problem.shape).items():
        operands = Operands(shape, dtype, mkl, blis)
        errors = operands.check()
        bound = shape.k  # gamma_k: the standard bound of a k-term dot product's rounding, in units of eps |a| |b|
        entry = {"shape": shape._asdict(), "flops": shape.flops, "errors": errors, "providers": {}}
        runs = {}
        for provider, run in operands.runs.items():
            if not errors[provider] <= bound:  # nan too
                entry["providers"][provider] = {"disagrees": f"error {errors[provider]:.3g} eps |a||b| > {bound}"}
                continue
            runs[provider] = (run, repeats(run))
        openblas, r = _repeated(*runs["openblas"]), runs["openblas"][1]
        over_gemm = ratio(openblas, gemm, first_per_call=r)
        over_one = ratio(openblas, gemm_one_thread, first_per_call=r)
        entry["openblas"] = {
            "fraction_of_gemm": fraction_of_gemm(shape.flops, over_gemm, gemm_flops),
            "fraction_of_one_thread_gemm": fraction_of_gemm(shape.flops, over_one, gemm_flops),
            "seconds_over_gemm": over_gemm,
        }
        for provider, (other, r_other) in runs.items():
            if provider != "openblas":
                entry["providers"][provider] = {
                    "time_over_openblas": ratio(_repeated(other, r_other), openblas, r_other, r)
                }
        products[name] = entry
        progress(f"{preset} {dtype} {name}: {100 * entry['openblas']['fraction_of_gemm']:.0f}% of the GEMM rate")

    step_over_gemm, plan = _time_the_step(problem, gemm)
    step_flops = sum(p["flops"] for p in products.values())
    products_over_gemm = sum(p["openblas"]["seconds_over_gemm"] for p in products.values())
    return {
        "preset": preset,
        "dtype": dtype,
        "shape": list(problem.shape),
        "threads": budget,
        "products": products,
        "step": {
            "plan": plan,
            "fraction_of_gemm": fraction_of_gemm(step_flops, step_over_gemm, gemm_flops),
            "products_share": products_over_gemm / step_over_gemm,
            "one_thread_gemm_over_budget": ratio(gemm_one_thread, gemm),
        },
    }


def _plan_text(plan: dict) -> str:
    """numba:blas's plan in a few words: the products by the loops (if any) and the layout."""
    loops = [p for p, how in plan.items() if how == "loops"]
    return f"{'by the loops: ' + ', '.join(loops) if loops else 'every product by BLAS'}, {plan.get('layout', '?')}"


def report(record: dict) -> str:
    """The study as markdown: one table per preset and dtype, then what it means."""
    lines = [
        "# Small products: numba:blas's products against the GEMM rate",
        "",
        f"CPU: {record['versions']['cpu']}; MKL: {record['versions']['mkl']}; BLIS: {record['versions']['blis']}.",
        "Fractions: the product's FLOP rate over a 1024^3 product's, alternated in one process; "
        "other providers: their time over OpenBLAS's, alternated (below 1: faster).",
        f"Threads: {record['machine']['threads']} ({record['machine']['why']}).",
        "",
    ]
    for problem in record["problems"]:
        step = problem["step"]
        lines += [
            f"## {problem['preset']} {problem['dtype']} (N, D, H, O = {tuple(problem['shape'])}, {problem['threads']} thread(s))",
            "",
            f"Whole step (numba:blas, {_plan_text(step['plan'])}): {100 * step['fraction_of_gemm']:.0f}% of the GEMM rate; "
            f"its products by OpenBLAS: {100 * step['products_share']:.0f}% of its time. "
            f"One thread's GEMM rate: {100 / step['one_thread_gemm_over_budget']:.0f}% of the budget's.",
            "",
        ]
        others = sorted({p for e in problem["products"].values() for p in e["providers"]})
        lines.append(
            "| product | m x n x k | OpenBLAS, % of GEMM | % of one-thread GEMM | " + " | ".join(others) + " |"
        )
        lines.append("|---|---|---|---|" + "---|" * len(others))
        for name, e in problem["products"].items():
            s = e["shape"]
            cells = []
            for p in others:
                v = e["providers"].get(p, {})
                cells.append(
                    f"{v['time_over_openblas']:.2f}x" if "time_over_openblas" in v else v.get("disagrees", "-")
                )
            ob = e["openblas"]
            lines.append(
                f"| {name} | {s['m']}x{s['n']}x{s['k']} | {100 * ob['fraction_of_gemm']:.0f}% | "
                f"{100 * ob['fraction_of_one_thread_gemm']:.0f}% | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.studies.small_gemm", description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", choices=CHOICES, default=list(PRESETS), help="default: %(default)s")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--out", type=pathlib.Path, default=OUT, help="folder for small-gemm.md and .json")
    args = parser.parse_args(argv)
    _in_quiet_pools()
    from bench.studies.small_gemm_providers import Blis, Mkl, versions

    record_machine = _threads_by_measurement()
    mkl, blis = Mkl(), Blis()
    for provider, reason in (("mkl", mkl.reason), ("blis", blis.reason)):
        if reason:
            print(f"small-gemm: {provider} not measured: {reason}", file=sys.stderr)
    record = {"versions": versions(mkl, blis), "machine": record_machine, "problems": []}
    args.out.mkdir(parents=True, exist_ok=True)
    for preset in args.presets:
        for dtype in args.dtypes:
            record["problems"].append(measure_problem(preset, dtype, mkl, blis, lambda line: print(line, flush=True)))
            # after each problem, so that an interrupted run keeps what it measured
            (args.out / "small-gemm.json").write_text(json.dumps(record, indent=1) + "\n")
            (args.out / "small-gemm.md").write_text(report(record))
    from impls import numba_blas_jit

    record["mkl_kernels_created"] = numba_blas_jit.created
    (args.out / "small-gemm.json").write_text(json.dumps(record, indent=1) + "\n")
    print(report(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
