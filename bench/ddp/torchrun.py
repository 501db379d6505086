"""torchrun entry point: the data-parallel step over torchrun's world, for clusters.

    torchrun --nnodes N --nproc-per-node P [--rdzv-endpoint HOST:PORT --rdzv-id ID | --standalone] \\
        -m bench.ddp.torchrun [--presets seed tutorial medium] [--dtypes float32 float64] [--optimizers sgd]
                              [--sweep] [--device cpu|cuda] [--budget S] [--out DIR]

Under torchrun every process is one rank of torchrun's world (W = N x P). Rank 0 creates the
data-parallel step over all of them (torch:cpu:ddp, or torch:cuda:ddp with one GPU per rank),
checks it against the float64 oracle, times it and profiles it; the other ranks follow it in
lockstep (impls.torch_ddp.serve). Rank 0 writes DIR/ddp-torchrun.json (default results/latest):
the results and every rank's environment (host, CPU, threads, library versions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import sys

import impls
from bench.ddp.scaling import collective_shares
from bench.harness import cli, environment, grid, prepare, timing
from impls import threads


def _rank_environment(rank: int, local_rank: int) -> dict:
    return {
        "rank": rank,
        "local_rank": local_rank,
        "host": platform.node(),
        "pid": os.getpid(),
        "environment": environment.machine(),
    }


def torchrun_main(argv=None) -> int:
    import torch.distributed as dist

    from impls import torch_ddp

    parser = cli.Parser(prog="python -m bench.ddp.torchrun", description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=("seed", "tutorial", "medium"), choices=grid.PRESETS)
    parser.add_argument("--dtypes", nargs="+", default=grid.DTYPES, choices=grid.DTYPES)
    parser.add_argument("--optimizers", nargs="+", default=("sgd",), choices=grid.OPTIMIZERS)
    parser.add_argument("--sweep", action="store_true", help="also the batch sweep")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--budget", type=cli.non_negative_seconds, default=0.5, metavar="S")
    parser.add_argument("--out", type=pathlib.Path, default=environment.REPO / "results" / "latest")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise cli.Fatal("run it under torchrun: torchrun --nnodes N --nproc-per-node P -m bench.ddp.torchrun ...")
    name = f"torch:{args.device}:ddp"
    # Availability on one GPU is torchrun's business here: W counts ranks, not this host's GPUs.
    device_reason = torch_ddp._device_reason(args.device)
    if device_reason is not None:
        raise cli.Fatal(f"{name} cannot run here: {device_reason}")
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if args.device == "cpu":
        os.environ[threads.ENV] = "1"  # one thread per rank, as for torch:cpu:ddp
        threads.apply(1)
    if rank == 0:
        cli.check_out_dir(args.out)
    store, _, _ = next(dist.rendezvous("env://"))
    store = dist.PrefixStore("stepbench", store)
    world = torch_ddp.World.join(store, rank, size, args.device, torch_ddp.env_timeout_s(), one_host=False)
    store.set(f"environment/{rank}", json.dumps(_rank_environment(rank, local_rank)))
    if rank != 0:
        torch_ddp.serve(world)
        return 0
    try:
        results = []
        problems = [
            (p, grid.preset_problem(p, d, o)) for p in args.presets for d in args.dtypes for o in args.optimizers
        ]
        if args.sweep:
            problems += [(n_id, grid.sweep_problem(n_id, d)) for n_id in grid.SWEEP_IDS for d in args.dtypes]
        for label, problem in problems:
            results.append(_torchrun_result(name, label, problem, world, args.budget))
            r = results[-1]
            outcome = (
                f"{r['median_s'] * 1e6:10.1f} us/step, IQR {r['iqr_ratio']:.0%} of the median, "
                f"all-reduce {r['all_reduce']:.0%} of the step"
                if r["status"] == "ok"
                else r["status"]
            )
            print(
                f"{name} W={size} {label} {problem.dtype} {problem.optimizer}: {outcome}", file=sys.stderr, flush=True
            )
        ranks = [json.loads(store.get(f"environment/{r}")) for r in range(size)]
    finally:
        world.message(torch_ddp.SHUTDOWN)
    data = {
        "implementation": name,
        "world_size": size,
        "launcher": "torchrun",
        "git": environment.git_state(),
        "ranks": ranks,
        "budget_s": args.budget,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "ddp-torchrun.json"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if any(r["status"] != "ok" for r in results) else 0


def _torchrun_result(name, label, problem, world, budget_s) -> dict:
    from impls import agreement

    result = {"label": label, "problem": dataclasses.asdict(problem), "status": "ok"}
    checked = impls.create(name, problem, world=world)
    report = agreement.check(checked)
    checked.close()
    result["agreement_worst_ratio"] = report.worst_ratio
    if not report.ok:
        result.update(status="disagrees", reason=str(report))
        return result
    step = impls.create(name, problem, world=world)
    try:
        prepare.warm_up(step)
        t = timing.measure(prepare.synced(step), budget_s=budget_s)
        result.update(median_s=t.median, iqr_ratio=t.iqr_ratio, samples_s=t.samples, number=t.number)
        result.update(collective_shares(step))
        prepare.assert_finite(step)
    except prepare.Diverged as why:
        result.update(status="diverged", reason=str(why))
    finally:
        step.close()
    return result


if __name__ == "__main__":
    sys.exit(cli.run("python -m bench.ddp.torchrun", torchrun_main))
