"""The registry of implementations: names, lazy imports, availability and construction.

A backend module is imported only when one of its entries is checked or created, so
`import impls` never pulls in numba or torch. A backend module defines its step class and
`unavailable_reason(**options) -> str | None` for what it cannot do on this machine.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect

from .problem import Problem, make_arrays, validate_arrays
from .step import Step


@dataclasses.dataclass(frozen=True)
class Entry:
    module: str  # impls submodule holding the backend
    cls: str  # its Step subclass
    requires: tuple[str, ...] = ()  # packages checked without importing them
    options: dict = dataclasses.field(default_factory=dict)  # passed to the class and unavailable_reason


# Registry order: the reference first. Append new backends; names are public and recorded in results.
_REGISTRY: dict[str, Entry] = {
    "numpy": Entry("numpy_ref", "NumpyStep"),
    "numba": Entry("numba_step", "NumbaStep", requires=("numba",), options={"parallel": False}),
    "numba:parallel": Entry("numba_step", "NumbaStep", requires=("numba",), options={"parallel": True}),
    "torch:cpu": Entry("torch_step", "TorchStep", requires=("torch",), options={"device": "cpu"}),
    "torch:cpu:autograd": Entry("torch_step", "TorchAutogradStep", requires=("torch",), options={"device": "cpu"}),
    "torch:cuda": Entry("torch_step", "TorchStep", requires=("torch",), options={"device": "cuda"}),
    "torch:cuda:autograd": Entry("torch_step", "TorchAutogradStep", requires=("torch",), options={"device": "cuda"}),
    "torch:cuda:graph": Entry("torch_step", "TorchGraphStep", requires=("torch",), options={"device": "cuda"}),
    "torch:cpu:ddp": Entry("torch_ddp", "TorchDDPStep", requires=("torch",), options={"device": "cpu"}),
    "torch:cuda:ddp": Entry("torch_ddp", "TorchDDPStep", requires=("torch",), options={"device": "cuda"}),
}


def names() -> list[str]:
    """Registered implementation names, the reference first."""
    return list(_REGISTRY)


def required_packages() -> list[str]:
    """The packages the registered backends need beyond NumPy, each once, in registry order."""
    return list(dict.fromkeys(package for entry in _REGISTRY.values() for package in entry.requires))


def _entry(name) -> Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"name must be one of {', '.join(_REGISTRY)}; got {name!r}") from None


def _reason(entry: Entry) -> str | None:
    for package in entry.requires:
        if importlib.util.find_spec(package) is None:
            return f"{package} not installed"
    module = importlib.import_module(f"{__package__}.{entry.module}")
    check = getattr(module, "unavailable_reason", None)
    return check(**entry.options) if check is not None else None


def available(names=None) -> dict[str, str | None]:
    """{name: None if it can run here, else the reason it cannot}, for all names or the ones given.

    Asking for one name imports only that backend (a benchmark process stays free of the others).
    """
    names = list(_REGISTRY) if names is None else names
    return {name: _reason(_entry(name)) for name in names}  # an unknown name is a ValueError


def _class(entry: Entry) -> type:
    return getattr(importlib.import_module(f"{__package__}.{entry.module}"), entry.cls)


def open_options(name: str) -> list[str]:
    """The keyword options create() passes on to `name`'s class: those its entry does not fix.

    Imports the backend; call it for an available name.
    """
    entry = _entry(name)
    fixed = ("problem", "arrays", *entry.options)
    return [p for p in inspect.signature(_class(entry)).parameters if p not in fixed]


def create(name: str, problem: Problem, arrays=None, **options) -> Step:
    """A fresh step of implementation `name` for `problem`, on private copies of `arrays`.

    `options` are settings of the backend's class that the name leaves open (`ranks=` of the
    data-parallel entries); one the class does not take, or one the name fixes, is a ValueError.
    """
    entry = _entry(name)
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be an impls.Problem, got {type(problem).__name__}")
    reason = _reason(entry)
    if reason is not None:
        raise RuntimeError(f"{name} cannot run here: {reason}")
    cls = _class(entry)
    if options:
        open_ = open_options(name)
        for option in options:
            if option not in open_:
                takes = f"takes {', '.join(open_)}" if open_ else "takes none"
                raise ValueError(f"option {option!r} is not one of {name}'s ({takes})")
    arrays = validate_arrays(problem, make_arrays(problem) if arrays is None else arrays)
    step = cls(problem, arrays, **entry.options, **options)
    step.name = name
    return step
