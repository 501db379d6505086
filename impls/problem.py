"""The problem: sizes, dtype, optimizer and inputs of one training step, validated at the boundary."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

# (N, D, H, O): batch, input features, hidden units, outputs.
SIZES = {
    "seed": (64, 100, 10, 10),  # the notebook's own size
    "tutorial": (64, 1000, 100, 10),  # the classic PyTorch tutorial size
    "medium": (512, 1024, 1024, 256),
    "large": (2048, 2048, 2048, 512),
    "xlarge": (16384, 8192, 8192, 2048),  # accelerators only
}
CPU_PRESETS = ("seed", "tutorial", "medium", "large")

DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam")
INITS = ("randn", "torch")

# torch.optim.Adam defaults; every backend uses these.
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


def _check_dim(field: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{field} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{field} must be a positive integer, got {value!r}")
    return int(value)


def _check_choice(field: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _dtype_name(value) -> str:
    try:
        name = np.dtype(value).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {value!r}")
    return name


@dataclasses.dataclass(frozen=True)
class Problem:
    """One training-step configuration; invalid fields raise ValueError naming the field."""

    n: int = 64
    d: int = 100
    h: int = 10
    o: int = 10
    dtype: str = "float64"
    optimizer: str = "sgd"
    lr: float = 1e-6
    init: str = "torch"
    seed: int = 0

    def __post_init__(self):
        for field in ("n", "d", "h", "o"):
            object.__setattr__(self, field, _check_dim(field, getattr(self, field)))
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("init", self.init, INITS)
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
            raise ValueError(f"lr must be a finite non-negative number, got {lr!r}")
        if not math.isfinite(lr) or lr < 0:
            raise ValueError(f"lr must be a finite non-negative number, got {lr!r}")
        object.__setattr__(self, "lr", float(lr))
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        object.__setattr__(self, "seed", int(seed))

    @classmethod
    def preset(cls, name: str, **fields) -> Problem:
        """The problem of a named size preset; other fields keep their defaults unless given."""
        if name not in SIZES:
            raise ValueError(f"preset must be one of {', '.join(SIZES)}; got {name!r}")
        for dim in ("n", "d", "h", "o"):
            if dim in fields:
                raise ValueError(f"{dim} is set by preset {name!r}; build Problem(...) to change it")
        n, d, h, o = SIZES[name]
        return cls(n=n, d=d, h=h, o=o, **fields)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.d, self.h, self.o)

    def replace(self, **fields) -> Problem:
        return dataclasses.replace(self, **fields)


class Arrays(NamedTuple):
    """Inputs of a step: x (N,D), y (N,O), w1 (D,H), w2 (H,O)."""

    x: np.ndarray
    y: np.ndarray
    w1: np.ndarray
    w2: np.ndarray


def array_shapes(p: Problem) -> dict[str, tuple[int, int]]:
    return {"x": (p.n, p.d), "y": (p.n, p.o), "w1": (p.d, p.h), "w2": (p.h, p.o)}


def make_arrays(p: Problem) -> Arrays:
    """Seeded inputs, drawn in float64 and cast, so that every dtype sees the same numbers.

    The order of draws must not be changed (recorded results depend on it), only appended to.
    """
    rng = np.random.default_rng(p.seed)
    x = rng.standard_normal((p.n, p.d))  # N,D
    y = rng.standard_normal((p.n, p.o))  # N,O
    if p.init == "randn":  # the notebook's NumPy cell
        w1 = rng.standard_normal((p.d, p.h))  # D,H
        w2 = rng.standard_normal((p.h, p.o))  # H,O
    else:  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        w1 = rng.uniform(-1 / math.sqrt(p.d), 1 / math.sqrt(p.d), (p.d, p.h))  # D,H
        w2 = rng.uniform(-1 / math.sqrt(p.h), 1 / math.sqrt(p.h), (p.h, p.o))  # H,O
    return Arrays(*(np.ascontiguousarray(a, dtype=p.dtype) for a in (x, y, w1, w2)))


def validate_arrays(p: Problem, arrays) -> Arrays:
    """Checked, C-contiguous private copies of the caller's inputs; ValueError on any mismatch."""
    if not isinstance(arrays, tuple) or len(arrays) != 4:
        raise ValueError(f"arrays must be Arrays(x, y, w1, w2), got {type(arrays).__name__}")
    checked = []
    for (field, shape), value in zip(array_shapes(p).items(), arrays, strict=True):
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{field} must be a NumPy array, got {type(value).__name__}")
        if value.shape != shape:
            raise ValueError(f"{field} must have shape {shape} for this problem, got {value.shape}")
        if value.dtype != np.dtype(p.dtype):
            raise ValueError(f"{field} must have dtype {p.dtype} for this problem, got {value.dtype}")
        if not np.isfinite(value).all():
            raise ValueError(f"{field} must be finite, got {np.count_nonzero(~np.isfinite(value))} non-finite entries")
        copy = np.array(value, order="C", copy=True)
        copy.flags.writeable = False  # the step's inputs stay as given; backends copy what they update
        checked.append(copy)
    return Arrays(*checked)


def flops(p: Problem) -> int:
    """Matmul FLOPs of one step: x@w1 and x.T@gh (2NDH each), a@w2, a.T@g, g@w2.T (2NHO each)."""
    return 4 * p.n * p.d * p.h + 6 * p.n * p.h * p.o
