"""The one parameter grid of both harnesses (asv and pytest-benchmark) and of `make bench`.

The grid is the same on every machine, so that result histories line up: a configuration
that cannot run here is skipped with the reason, never left out. Ids must not be changed
once results are recorded under them, only appended to.
"""

from __future__ import annotations

import impls
from impls import agreement

IMPLEMENTATIONS = tuple(impls.names())  # registry order, the reference first
PRESETS = tuple(impls.SIZES)  # seed ... xlarge
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")
REFERENCE = IMPLEMENTATIONS[0]  # speed-ups are given over this one

# The batch sweep: cost growth with N at the tutorial's feature sizes, with SGD.
SWEEP_SHAPE = (1000, 100, 10)  # D, H, O
SWEEP_N = (64, 256, 1024, 4096, 16384)
SWEEP_OPTIMIZER = "sgd"

# Presets too big for a CPU step in reasonable time (impls.SIZES: "accelerators only").
ACCELERATOR_PRESETS = tuple(p for p in PRESETS if p not in impls.CPU_PRESETS)
ACCELERATOR_DEVICES = ("cuda",)


def sweep_id(n: int) -> str:
    """Fixed-width id of a batch size, so ids sort and line up: n00064 ... n16384."""
    return f"n{n:05d}"


SWEEP_IDS = tuple(sweep_id(n) for n in SWEEP_N)


def device(name: str) -> str:
    """Where an implementation runs, from its `lib:device[:variant]` name: "cuda" or "cpu"."""
    parts = name.split(":")
    return next((p for p in parts[1:] if p in ACCELERATOR_DEVICES), "cpu")


def preset_problem(preset: str, dtype: str, optimizer: str) -> impls.Problem:
    """A grid point: the problem the agreement check uses at this preset ("torch" init, small lr)."""
    return agreement.check_problem(preset, dtype, optimizer)


def sweep_problem(n_id: str, dtype: str) -> impls.Problem:
    """A batch-sweep point; lr and init as in the agreement check, sizes (N, *SWEEP_SHAPE)."""
    n = SWEEP_N[SWEEP_IDS.index(n_id)]
    d, h, o = SWEEP_SHAPE
    return agreement.check_problem("seed", dtype, SWEEP_OPTIMIZER).replace(n=n, d=d, h=h, o=o)


def size_skip_reason(name: str, preset: str | None) -> str | None:
    """Why this size is not run for this implementation on any machine, or None."""
    if preset in ACCELERATOR_PRESETS and device(name) == "cpu":
        return f"preset {preset} is for accelerators only and {name} runs on the CPU"
    return None


def preset_cases(presets=PRESETS, dtypes=DTYPES, optimizers=OPTIMIZERS, names=None):
    """(name, preset, dtype, optimizer), problem-major: implementations of one problem run together,
    so that they share one oracle run."""
    names = impls.names() if names is None else names
    return [(n, p, d, o) for p in presets for d in dtypes for o in optimizers for n in names]


def sweep_selection(sweep) -> tuple[str, ...]:
    """The sweep ids a job runs: True for all of them, False or empty for none, else the ids given."""
    if isinstance(sweep, bool):
        return SWEEP_IDS if sweep else ()
    return tuple(sweep)


def sweep_cases(n_ids=SWEEP_IDS, dtypes=DTYPES, names=None):
    """(name, n_id, dtype), problem-major."""
    names = impls.names() if names is None else names
    return [(n, s, d) for s in n_ids for d in dtypes for n in names]
