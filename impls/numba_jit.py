"""How the package's Numba code is compiled: one decorator, its on-disk cache, and when that cache is stale.

Every compiled function of the numba_* modules is made by `jit`: numba.njit with an on-disk
cache, so that a second process loads the steps compiled instead of compiling them again
(seconds per dtype). Numba caches in NUMBA_CACHE_DIR if set, else next to the module, else
in the user's cache directory; where none is writable it compiles in every process instead.

Numba decides whether a cached function is stale by one source file: the function's own.
But a compiled step is built from the kernels of several modules (the GEMM, the arena,
the fused passes, for numba:blas the BLAS bridge) and from constants of impls.problem
(Adam's, compiled in as literals): with the stock check, an edit to any of these leaves the
step compiled before it in the cache, loaded without a word. So the package's functions are
located by locators of its own (put before numba's, which keep every other function), each
the stock locator of the same directory with one change: the stamp it writes and checks is
a hash of every source the compiled code is built from (STAMPED_SOURCES), not of the
function's own file. An edit to any of them recompiles every function of the package at its
next use; an mtime changed with the content kept (a checkout, a copy) recompiles nothing.
NUMBA_CACHE_LOCATOR_CLASSES, which replaces numba's list of locators, bypasses them.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import warnings

import numba
from numba.core import caching

PACKAGE = pathlib.Path(__file__).resolve().parent
# Sources of compiled code: every numba_* module, and problem.py for Adam's constants.
STAMPED_SOURCES = ("numba_*.py", "problem.py")

# Sums only: reassociation lets LLVM split each dot product into vector lanes
# (any summation order stays within the checker's u * sqrt(K) bound), contraction lets it
# fuse multiply and add (one rounding instead of two). No nnan/ninf: a diverging run must
# show its NaN and inf, not have them optimised away. The loss, a sum too, uses the same;
# the element-wise kernels (relu, transposes, updates) use no fastmath at all.
SUM_FLAGS = {"reassoc", "contract"}

uncached_reason: str | None = None  # why the kernels are compiled in every process, once a decorator found out


def jit(**options):
    """numba.njit with an on-disk cache, or without one where no cache directory is writable."""

    def decorate(fn):
        global uncached_reason
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as err:  # numba: "cannot cache function ...: no locator available"
            if uncached_reason is None:
                uncached_reason = str(err)
                warnings.warn(f"numba kernels will be compiled in every process: {err}", RuntimeWarning, stacklevel=3)
            return numba.njit(**options)(fn)

    return decorate


def stamped_sources() -> list[pathlib.Path]:
    """The files whose content stamps every cached function of the package, in a fixed order."""
    return sorted(path for pattern in STAMPED_SOURCES for path in PACKAGE.glob(pattern))


@functools.cache
def _file_hash(path: pathlib.Path, mtime_ns: int, size: int) -> bytes:
    # mtime and size are the key only: a file changed while the process runs is read again.
    return hashlib.sha256(path.read_bytes()).digest()


def source_stamp() -> str:
    """One hash of the content of every stamped source: what the package's cache entries are checked against."""
    digest = hashlib.sha256()
    for path in stamped_sources():
        stat = path.stat()
        digest.update(path.name.encode() + b"\0" + _file_hash(path, stat.st_mtime_ns, stat.st_size))
    return digest.hexdigest()


class _PackageStamp:
    """For a function of a stamped source only: the base locator, with source_stamp() for its stamp."""

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            ours = pathlib.Path(py_file).resolve() in stamped_sources()
        except OSError:
            ours = False
        return super().from_function(py_func, py_file) if ours else None

    def get_source_stamp(self):
        return source_stamp()


def _stock(name: str) -> type:
    """numba's class `name` (older releases name it with a leading underscore)."""
    return getattr(caching, name, None) or getattr(caching, f"_{name}")


class UserProvidedLocator(_PackageStamp, _stock("UserProvidedCacheLocator")):
    """In NUMBA_CACHE_DIR, where set."""


class InTreeLocator(_PackageStamp, _stock("InTreeCacheLocator")):
    """In __pycache__ beside the module, where writable."""


class UserWideLocator(_PackageStamp, _stock("UserWideCacheLocator")):
    """In the user's cache directory."""


LOCATORS = (UserProvidedLocator, InTreeLocator, UserWideLocator)  # numba's own order of preference


def _install_locators() -> None:
    """Put LOCATORS first in the list numba tries for every cached function (a list shared by its cache kinds)."""
    tried = _stock("CacheImpl")._locator_classes
    if tried[: len(LOCATORS)] != list(LOCATORS):
        tried[:0] = LOCATORS


_install_locators()  # before any function of the package is decorated: each numba_* module imports this one first
