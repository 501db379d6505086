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
STEP_NAMES = [*NUMBA_NAMES, "numba:blas"]  # every entry whose step is numba_step's compiled call
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ns():
    require("numba")
    from impls import numba_step

    return numba_step


def _typemap(ns, kernel, *args):
    """Types of every variable (temporaries included) of a fresh float32 compilation of kernel."""
    import numba

    fresh = numba.njit(fastmath=ns.SUM_FLAGS)(kernel.py_func)  # compiled afresh: a cached one keeps no types
    fresh(*args)
    (result,) = fresh.overloads.values()
    return result.type_annotation.typemap


def test_float32_sums_accumulate_in_float32(ns):
    import numba

    f32 = np.zeros((8, 8), dtype=np.float32)
    kernels = {  # every loop that sums, with the tiles inlined into _strip
        "NT strip": (ns._strip, (f32, 0, 0, f32, 0, 0, 8, f32.copy(), 0, 8)),
        "NN rows": (ns._matmul_nn_rows, (f32, f32, f32.copy(), 0, 8)),
        "loss": (ns._loss_and_output_grad, (f32, f32.copy())),
    }
    for label, (kernel, args) in kernels.items():
        widened = sorted(name for name, t in _typemap(ns, kernel, *args).items() if t == numba.float64)
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
def test_a_step_allocates_nothing(name, ns):
    require(name)
    import numba

    touch = numba.njit(lambda buf: buf[0])  # one array argument, as a step has
    # h.T packs panels of x, in parallel too (N D H >= PARALLEL_MIN_MACS); Adam has the most buffers.
    n, d, h = 16, ns.PACK_MIN_K, ns.PACK_MIN_M
    assert ns.packs(h, d) and n * d * h >= ns.PARALLEL_MIN_MACS
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
def test_every_buffer_starts_on_a_cache_line(dtype, ns):
    step = impls.create("numba", agreement.check_problem("seed", dtype, "adam"))
    padded = ns.padded_shape(*step.problem.shape)
    views, stretches = ns.arena_views(step._arena.buf, *padded, True, ns.ALL_PRODUCTS, False)
    starts = {view.ctypes.data % ns.CACHE_LINE for view in (*views, *stretches) if view.size}
    assert starts == {0}


_COMPILED_WHEN = """
    import numba, impls
    from impls import numba_step as ns
    def compiled():
        return sum(len(f.overloads) for f in vars(ns).values() if isinstance(f, numba.core.registry.CPUDispatcher))
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
    at_create, after_steps = map(int, _run(_COMPILED_WHEN.format(name=name), ROOT, _cache_env()).split())
    assert at_create > 0 and after_steps == at_create


# Shapes where the parallel kernels run (a product of >= PARALLEL_MIN_MACS), with H = 4k + 2
# (the 2-row tile): the x products by NT on packed panels, and on panels read in place
# (x over 1 MiB even in float32, H too small to pack); ga by NN.
PARALLEL_SHAPES = {
    "packed NT": (16, 1000, 258, 40),
    "NT by panels": (8192, 40, 10, 10),
    "NN": (1024, 64, 302, 10),
}


def _parallel_product_runs(ns, n, d, h, o) -> bool:
    if ns.packs(h, d) or n * d * 4 > ns.B_IN_L2_BYTES:
        return n * d * h >= ns.PARALLEL_MIN_MACS
    return o < ns.NT_MIN_K and n * h * ns.padded_shape(n, d, h, o)[3] >= ns.PARALLEL_MIN_MACS


@pytest.mark.parametrize("shape", list(PARALLEL_SHAPES.values()), ids=list(PARALLEL_SHAPES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", NUMBA_NAMES)
def test_agrees_where_the_parallel_kernels_run(name, dtype, shape, ns):
    require(name)
    n, d, h, o = shape
    assert _parallel_product_runs(ns, n, d, h, o) and h % 4 == 2
    p = impls.Problem(n=n, d=d, h=h, o=o, dtype=dtype, optimizer="adam", lr=agreement.CHECK_LR["adam"])
    agreement.assert_agrees(impls.create(name, p))


_PRANGE_REGIONS = """
    import impls
    from impls import numba_step as ns
    entered = []

    def counting_prange(*args):
        entered.append(args)
        return range(*args)

    ns.prange = counting_prange  # looked up at every call: the kernels are plain Python here
    ns.PARALLEL_MIN_MACS = 0  # every product takes the parallel path, however small
    # H, O < NT_MIN_K: y_pred and ga by NN, the other three products by NT.
    step = impls.create({name!r}, impls.Problem(n=8, d=8, h=5, o=3, optimizer="adam"))
    entered.clear()
    step.loss_and_grads()
    step.run(1)
    print(len(entered))
"""


@pytest.mark.parametrize(("name", "regions"), [("numba", 0), ("numba:parallel", 2 * 5)])
def test_parallel_entry_runs_a_prange_region_per_product(name, regions, ns):
    # Observed, not inferred from module constants: with the JIT off the kernels run as Python,
    # so every prange loop entered is counted. loss_and_grads and one step: five products each.
    require(name)
    assert int(_run(_PRANGE_REGIONS.format(name=name), ROOT, {"NUMBA_DISABLE_JIT": "1"})) == regions
    # Compiled, the same loops are parallel only where the kernel's dispatcher says so.
    assert ns.matmul_nt_parallel.targetoptions.get("parallel") is True
    assert ns.matmul_nn_parallel.targetoptions.get("parallel") is True


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
    import numba, impls
    from impls import agreement, numba_step as ns
    step = impls.create({name!r}, impls.Problem(dtype="float64"))
    kernels = [f for f in vars(ns).values() if isinstance(f, numba.core.registry.CPUDispatcher)]
    hits = sum(sum(f.stats.cache_hits.values()) for f in kernels)
    print(hits, sum(sum(f.stats.cache_misses.values()) for f in kernels))
    agreement.assert_agrees(step)  # the cached code runs: numba:blas's calls to gemm are linked by name
"""


@pytest.mark.parametrize("name", ["numba", "numba:blas"])
def test_a_fresh_process_reuses_the_compiled_kernels(name, ns):
    require(name)
    if ns._cache_warning_given:
        pytest.skip("no writable cache location for numba here")
    impls.create(name, impls.Problem(dtype="float64"))  # compiled or loaded, and so in the cache now
    hits, misses = map(int, _run(_CACHE_REPORT.format(name=name), ROOT, _cache_env()).split())
    assert misses == 0 and hits >= 1


def _read_only_copy(tmp_path) -> pathlib.Path:
    """A copy of the package whose __pycache__ cannot be created: a file is in the way."""
    shutil.copytree(ROOT / "impls", tmp_path / "impls", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "impls" / "__pycache__").write_text("")
    return tmp_path


_CACHE_LOCATION = """
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from impls import numba_step as ns
    print(ns.train_step.stats.cache_path)
    print(ns.padded_shape(1, 9, 5, 4))
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
