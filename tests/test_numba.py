"""The Numba backends beyond agreement: dtype discipline, no allocation per step, compilation and its cache."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import impls
from impls import agreement

from .conftest import require

NUMBA_NAMES = ["numba", "numba:parallel"]
STEP_NAMES = [*NUMBA_NAMES, "numba:blas"]  # every entry whose step is one compiled call on an arena
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ns():
    require("numba")
    from impls import numba_step

    return numba_step


@pytest.fixture(scope="module")
def gemm():
    require("numba")
    from impls import numba_gemm

    return numba_gemm


@pytest.fixture(scope="module")
def arena():
    require("numba")
    from impls import numba_arena

    return numba_arena


def _typemap(kernel, *args):
    """Types of every variable (temporaries included) of a fresh float32 compilation of kernel."""
    import numba

    from impls.numba_jit import SUM_FLAGS

    fresh = numba.njit(fastmath=SUM_FLAGS)(kernel.py_func)  # compiled afresh: a cached one keeps no types
    fresh(*args)
    (result,) = fresh.overloads.values()
    return result.type_annotation.typemap


def test_float32_sums_accumulate_in_float32(ns, gemm):
    import numba

    f32 = np.zeros((8, 8), dtype=np.float32)
    kernels = {  # every loop that sums, with the tiles inlined into _strip
        "NT strip": (gemm._strip, (f32, 0, 0, f32, 0, 0, 8, f32.copy(), 0, 8)),
        "NN rows": (gemm._matmul_nn_rows, (f32, f32, f32.copy(), 0, 8)),
        "loss": (ns.loss_and_output_grad, (f32, f32.copy())),
    }
    for label, (kernel, args) in kernels.items():
        widened = sorted(name for name, t in _typemap(kernel, *args).items() if t == numba.float64)
        assert not widened, f"{label} computes in float64 on float32 input: {widened[:5]}"


def _nrt_allocations(run) -> int:
    from numba.core.runtime import _nrt_python, rtsys

    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        run()
        after = rtsys.get_allocation_stats()
    finally:
        _nrt_python.memsys_disable_stats()
    assert after.alloc - after.free == before.alloc - before.free, "memory leaked"
    return after.alloc - before.alloc


@pytest.mark.parametrize("name", STEP_NAMES)
def test_a_step_allocates_nothing(name, gemm):
    require(name)
    import numba

    touch = numba.njit(lambda buf: buf[0])  # one array argument, as a step has
    # h.T packs panels of x, in parallel too (N D H >= PARALLEL_MIN_MACS); Adam has the most buffers.
    n, d, h = 16, gemm.PACK_MIN_K, gemm.PACK_MIN_M
    assert gemm.packs(h, d) and n * d * h >= gemm.PARALLEL_MIN_MACS
    step = impls.create(name, impls.Problem(n=n, d=d, h=h, o=4, dtype="float32", optimizer="adam"))
    step.run(1)
    touch(step._arena.buf)
    # Numba wraps each array argument in a MemInfo at every call (freed on return); a
    # step may make that allocation and no other, however many steps.
    calls = 10
    baseline = _nrt_allocations(lambda: [touch(step._arena.buf) for _ in range(calls)])
    assert baseline == calls
    assert _nrt_allocations(lambda: step.run(calls)) == baseline


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_buffer_starts_on_a_cache_line(dtype, arena):
    step = impls.create("numba", agreement.check_problem("seed", dtype, "adam"))
    assert step._arena.layout.adam and step._arena.layout.may_loop == arena.ALL_PRODUCTS  # every buffer there
    views, stretches = arena.arena_views(step._arena.buf, step._arena.layout)
    starts = {view.ctypes.data % arena.CACHE_LINE for view in (*views, *stretches) if view.size}
    assert starts == {0}


# Put before a script: kernels(), every compiled function of the package's numba modules loaded so far, each once.
_KERNELS = """
    import sys, numba
    def kernels():
        found = {}
        for name, module in list(sys.modules.items()):
            if name.startswith("impls.numba_"):
                found |= {id(f): f for f in vars(module).values() if isinstance(f, numba.core.registry.CPUDispatcher)}
        return list(found.values())
"""

_COMPILED_WHEN = """
    import impls
    def compiled():
        return sum(len(f.overloads) for f in kernels())
    step = impls.create({name!r}, impls.Problem(n=3, d=5, h=7, o=2, dtype="float32", optimizer="adam"))
    at_create = compiled()
    step.run(2)
    step.loss_and_grads()
    step.weights()
    print(at_create, compiled())
"""


@pytest.mark.parametrize("name", STEP_NAMES)
def test_compiled_in_create_not_in_a_step(name, ns):
    require(name)
    at_create, after_steps = map(int, _run(_KERNELS + _COMPILED_WHEN.format(name=name), ROOT, _cache_env()).split())
    assert at_create > 0 and after_steps == at_create


# Shapes where the parallel kernels run (a product of >= PARALLEL_MIN_MACS), with H = 4k + 2
# (the 2-row tile): the x products by NT on packed panels, and on panels read in place
# (x over 1 MiB even in float32, H too small to pack); ga by NN.
PARALLEL_SHAPES = {
    "packed NT": (16, 1000, 258, 40),
    "NT by panels": (8192, 40, 10, 10),
    "NN": (1024, 64, 302, 10),
}


def _parallel_product_runs(gemm, arena, n, d, h, o) -> bool:
    if gemm.packs(h, d) or n * d * 4 > gemm.B_IN_L2_BYTES:
        return n * d * h >= gemm.PARALLEL_MIN_MACS
    return o < gemm.NT_MIN_K and n * h * arena.padded_shape(n, d, h, o)[3] >= gemm.PARALLEL_MIN_MACS


@pytest.mark.parametrize("shape", list(PARALLEL_SHAPES.values()), ids=list(PARALLEL_SHAPES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NUMBA_NAMES)
def test_agrees_where_the_parallel_kernels_run(name, dtype, shape, gemm, arena):
    require(name)
    n, d, h, o = shape
    assert _parallel_product_runs(gemm, arena, n, d, h, o) and h % 4 == 2
    p = impls.Problem(n=n, d=d, h=h, o=o, dtype=dtype, optimizer="adam", lr=agreement.CHECK_LR["adam"])
    agreement.assert_agrees(impls.create(name, p))


_PRANGE_REGIONS = """
    import impls
    from impls import numba_gemm as gemm
    entered = []

    def counting_prange(*args):
        entered.append(args)
        return range(*args)

    gemm.prange = counting_prange  # looked up at every call: the kernels are plain Python here
    gemm.PARALLEL_MIN_MACS = 0  # every product takes the parallel path, however small
    # H, O < NT_MIN_K: y_pred and ga by NN, the other three products by NT.
    step = impls.create({name!r}, impls.Problem(n=8, d=8, h=5, o=3, optimizer="adam"))
    entered.clear()
    step.loss_and_grads()
    step.run(1)
    print(len(entered))
"""


@pytest.mark.parametrize(("name", "regions"), [("numba", 0), ("numba:parallel", 2 * 5)])
def test_parallel_entry_runs_a_prange_region_per_product(name, regions, gemm):
    # Observed, not inferred from module constants: with the JIT off the kernels run as Python,
    # so every prange loop entered is counted. loss_and_grads and one step: five products each.
    require(name)
    assert int(_run(_PRANGE_REGIONS.format(name=name), ROOT, {"NUMBA_DISABLE_JIT": "1"})) == regions
    # Compiled, the same loops are parallel only where the kernel's dispatcher says so.
    assert gemm.matmul_nt_parallel.targetoptions.get("parallel") is True
    assert gemm.matmul_nn_parallel.targetoptions.get("parallel") is True


_THREADS_AFTER_CREATE = """
    import impls
    from impls import threads
    impls.create("numba:parallel", impls.Problem())
    record = threads.describe()
    print(record["numba"], *(pool["num_threads"] for pool in record["blas"]))
"""


def test_a_fresh_process_runs_every_pool_on_the_thread_budget(ns):
    from impls import threads

    # Loading the kernels loads more pools (Numba's OpenMP, SciPy's OpenBLAS): the budget must cover them too.
    counts = _run(_THREADS_AFTER_CREATE, ROOT, {**_cache_env(), threads.ENV: "1"}).split()
    assert len(counts) >= 3 and set(counts) == {"1"}


def _cache_env() -> dict:
    """This process's numba cache directory, for a child that should share it."""
    return {"NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]} if "NUMBA_CACHE_DIR" in os.environ else {}


def _run(code: str, cwd, env_changes: dict) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update(env_changes)
    env["PYTHONPATH"] = str(cwd)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


_CACHE_REPORT = """
    import impls
    from impls import agreement
    step = impls.create({name!r}, impls.Problem(dtype="float64"))
    hits = sum(sum(f.stats.cache_hits.values()) for f in kernels())
    print(hits, sum(sum(f.stats.cache_misses.values()) for f in kernels()))
    agreement.assert_agrees(step)  # the cached code runs: numba:blas's calls to gemm are linked by name
"""


@pytest.mark.parametrize("name", ["numba", "numba:blas"])
def test_a_fresh_process_reuses_the_compiled_kernels(name, ns):
    require(name)
    from impls import numba_jit

    if numba_jit.uncached_reason is not None:
        pytest.skip(f"no writable cache location for numba here: {numba_jit.uncached_reason}")
    impls.create(name, impls.Problem(dtype="float64"))  # compiled or loaded, and so in the cache now
    hits, misses = map(int, _run(_KERNELS + _CACHE_REPORT.format(name=name), ROOT, _cache_env()).split())
    assert misses == 0 and hits >= 1


def _copy_of_package(tmp_path) -> pathlib.Path:
    """A copy of the package, without the compiled code cached beside it; returns the directory above it."""
    shutil.copytree(ROOT / "impls", tmp_path / "impls", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _read_only_copy(tmp_path) -> pathlib.Path:
    """A copy of the package whose __pycache__ cannot be created: a file is in the way."""
    root = _copy_of_package(tmp_path)
    (root / "impls" / "__pycache__").write_text("")
    return root


_CACHE_LOCATION = """
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from impls import numba_arena, numba_step
    print(numba_step.train_step.stats.cache_path)
    print(numba_arena.padded_shape(1, 9, 5, 4))
    print(sum("compiled in every process" in str(w.message) for w in caught))
"""


def test_read_only_install_caches_in_the_user_cache_dir(tmp_path, ns):
    root = _read_only_copy(tmp_path)
    user_cache = tmp_path / "user-cache"
    cache_path, sizes, warnings_given = _run(_CACHE_LOCATION, root, {"XDG_CACHE_HOME": str(user_cache)}).splitlines()
    assert cache_path.startswith(str(user_cache / "numba"))
    assert sizes == "(8, 16, 8, 4)" and warnings_given == "0"


def test_without_any_writable_cache_dir_compiles_uncached(tmp_path, ns):
    root = _read_only_copy(tmp_path)
    (tmp_path / "not-a-dir").write_text("")
    env = {"XDG_CACHE_HOME": str(tmp_path / "not-a-dir" / "cache")}
    cache_path, sizes, warnings_given = _run(_CACHE_LOCATION, root, env).splitlines()
    assert cache_path == "None"
    assert sizes == "(8, 16, 8, 4)" and warnings_given == "1"


_WITHOUT_BLAS = """
    import sys
    if {scipy_missing}:
        sys.modules["scipy"] = None  # as where SciPy is not installed: importing it fails
    import llvmlite.binding
    import impls.numba_step
    from impls import agreement
    impls.create("numba", impls.Problem.preset("seed")).run(2)
    agreement.assert_agrees(impls.create("numba", agreement.check_problem("seed", "float32", "adam")))
    loaded = [m for m, module in sys.modules.items() if module is not None]
    print(*sorted(m for m in loaded if m.split(".")[0] == "scipy" or m.startswith("impls.numba_blas")), sep=",")
    print(sum(llvmlite.binding.address_of_symbol(symbol) is not None for symbol in {symbols!r}))
"""


@pytest.mark.parametrize("scipy_missing", [False, True], ids=["scipy-installed", "scipy-missing"])
def test_the_numba_step_has_no_call_of_blas(scipy_missing, ns):
    # numba:blas's bridge is neither imported nor needed: LLVM is given no address for gemm, and the
    # step still links and runs, so its compiled code calls no gemm. Where SciPy is installed,
    # numba imports scipy itself (its version check, and scipy.linalg.cython_blas for np.dot), so
    # only a process without SciPy shows that nothing else does.
    from impls.numba_blas_bridge import GEMM_SYMBOLS

    script = _WITHOUT_BLAS.format(scipy_missing=scipy_missing, symbols=list(GEMM_SYMBOLS.values()))
    loaded, addresses = _run(script, ROOT, _cache_env()).splitlines()
    assert addresses == "0"
    assert [m for m in loaded.split(",") if m.startswith("impls.")] == []
    if scipy_missing:
        assert loaded == ""


_PACK_SHAPE = """
    from impls import numba_arena
    layout = numba_arena.ArenaLayout(16, {d}, {h}, 4, True, numba_arena.ALL_PRODUCTS, False)
    print(numba_arena.arena_shapes(layout).pack, sum(numba_arena.arena_shapes.stats.cache_hits.values()), sep="|")
"""


def test_an_edit_to_a_kernel_recompiles_what_calls_it(tmp_path, gemm):
    # numba_arena.arena_shapes calls numba_gemm.packs, whose code is compiled into it. Numba's own
    # check of a cached function reads only the function's own file: after an edit to
    # numba_gemm.py it would load arena_shapes compiled with the old packs.
    from impls import numba_jit

    sources = {path.name for path in numba_jit.stamped_sources()}
    assert sources >= {"numba_jit.py", "numba_gemm.py", "numba_arena.py", "numba_step.py", "problem.py"}
    assert sources >= {"numba_blas.py", "numba_blas_bridge.py"}
    root = _copy_of_package(tmp_path)
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}
    script = _PACK_SHAPE.format(d=gemm.PACK_MIN_K, h=gemm.PACK_MIN_M)  # a panel of x is copied to pack
    packed = str((1, gemm.PACK_ELEMENTS))
    assert _run(script, root, env).strip() == f"{packed}|0"  # compiled
    assert _run(script, root, env).strip() == f"{packed}|1"  # loaded from the cache
    kernels = root / "impls" / "numba_gemm.py"
    source = kernels.read_text()
    assert source.count(f"PACK_MIN_K = {gemm.PACK_MIN_K} ") == 1
    kernels.write_text(source.replace(f"PACK_MIN_K = {gemm.PACK_MIN_K} ", "PACK_MIN_K = 1 << 40 "))
    assert _run(script, root, env).strip() == "(0, 0)|0"  # compiled again, with the edited packs
