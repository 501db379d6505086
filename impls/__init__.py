"""stepbench: one training step of a two-layer ReLU network, in several backends, checked and timed."""

from .problem import CPU_PRESETS, SIZES, Arrays, Problem, flops, make_arrays
from .registry import available, create, names
from .step import Step

__all__ = [
    "CPU_PRESETS",
    "SIZES",
    "Arrays",
    "Problem",
    "Step",
    "available",
    "create",
    "flops",
    "make_arrays",
    "names",
]
