"""The registry of implementations: names, lazy imports, availability and construction.

A backend module is imported only when one of its entries is checked or created, so
`import impls` never pulls in numba, torch or jax. A backend module defines its step class and
`unavailable_reason(**options) -> str | None` for what it cannot do on this machine.

Implementations from other distributions come in through the entry-point group
`stepbench.implementations` (PLUGIN_GROUP): the entry point's name is the implementation's
name, its value resolves to an `impls.Step` subclass, which may define a static or class
method `unavailable_reason()`. They are listed after the built-ins. Listing them reads only
the installed distributions' metadata; a plugin's module is imported when it is checked or
created, like a built-in backend's. A plugin that cannot be used (its import fails, it is
not a Step subclass, its unavailable_reason raises, or its name is taken) is listed all the
same and `available()` gives the reason; one whose name is taken is listed as
`name@distribution`, so the built-in (or the earlier plugin) keeps the name.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
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
    plugin: importlib.metadata.EntryPoint | None = None  # set for an implementation from outside
    refused: str | None = None  # why a plugin cannot be used whatever it loads (its name is taken)


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
    "torch:cpu:compile": Entry(
        "torch_step", "TorchCompileStep", requires=("torch",), options={"device": "cpu", "compiled": True}
    ),
    "torch:cuda:compile": Entry(
        "torch_step", "TorchCompileStep", requires=("torch",), options={"device": "cuda", "compiled": True}
    ),
    "jax:cpu": Entry("jax_step", "JaxStep", requires=("jax",), options={"device": "cpu"}),
    "jax:cuda": Entry("jax_step", "JaxStep", requires=("jax",), options={"device": "cuda"}),
    "torch:cpu:ddp": Entry("torch_ddp", "TorchDDPStep", requires=("torch",), options={"device": "cpu"}),
    "torch:cuda:ddp": Entry("torch_ddp", "TorchDDPStep", requires=("torch",), options={"device": "cuda"}),
    "numba:blas": Entry("numba_blas", "NumbaBlasStep", requires=("numba",)),  # SciPy: unavailable_reason
}


PLUGIN_GROUP = "stepbench.implementations"


def _distribution(point: importlib.metadata.EntryPoint) -> str:
    dist = point.dist
    return dist.name if dist is not None else "an unknown distribution"


@functools.cache
def _plugins() -> dict[str, Entry]:
    """The entry points of PLUGIN_GROUP by listed name, read from installed metadata once per process."""
    found: dict[str, Entry] = {}
    for point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        where = f"plugin {point.name} = {point.value} from {_distribution(point)}"
        if point.name in _REGISTRY or point.name in found:
            owner = "a built-in implementation" if point.name in _REGISTRY else "an earlier plugin"
            name = f"{point.name}@{_distribution(point)}"
            entry = Entry("", "", plugin=point, refused=f"{where}: the name {point.name!r} is taken by {owner}")
        else:
            name, entry = point.name, Entry("", "", plugin=point)
        found.setdefault(name, entry)  # the same distribution seen twice on sys.path: its first copy
    return found


def _all() -> dict[str, Entry]:
    return _REGISTRY | _plugins()


def names() -> list[str]:
    """Registered implementation names, the reference first, then plugins in the order they were found."""
    return list(_all())


def required_packages() -> list[str]:
    """The packages the registered backends need beyond NumPy, each once, in registry order."""
    return list(dict.fromkeys(package for entry in _REGISTRY.values() for package in entry.requires))


def _entry(name) -> Entry:
    registry = _all()
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(f"name must be one of {', '.join(registry)}; got {name!r}") from None


def _plugin_class(entry: Entry) -> tuple[type | None, str | None]:
    """(the plugin's Step subclass, None), or (None, why it cannot be used). Never raises."""
    point = entry.plugin
    where = f"plugin {point.name} = {point.value} from {_distribution(point)}"
    if entry.refused is not None:
        return None, entry.refused
    try:
        cls = point.load()
    except Exception as error:  # noqa: BLE001 - whatever a plugin raises on import is its reason
        return None, f"{where} failed to load: {type(error).__name__}: {error}"
    if not (isinstance(cls, type) and issubclass(cls, Step)):
        return None, f"{where} is {cls!r}, not an impls.Step subclass"
    return cls, None


def _reason(entry: Entry) -> str | None:
    if entry.plugin is not None:
        cls, refused = _plugin_class(entry)
        if refused is not None:
            return refused
        check = getattr(cls, "unavailable_reason", None)
        try:
            return check() if check is not None else None
        except Exception as error:  # noqa: BLE001
            return f"plugin {entry.plugin.name}: unavailable_reason() raised {type(error).__name__}: {error}"
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
    names = list(_all()) if names is None else names
    return {name: _reason(_entry(name)) for name in names}  # an unknown name is a ValueError


def _class(entry: Entry) -> type:
    """The entry's Step class: a built-in's from its module, a plugin's from its entry point."""
    if entry.plugin is not None:
        return _plugin_class(entry)[0]  # create() runs only for an available entry: the class loaded
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
