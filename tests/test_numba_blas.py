"""numba:blas beyond agreement at the presets: every plan computes the step, BLAS is really called
where the plan says, the plan follows its trials, and the option is checked at the boundary."""

import os
import subprocess
import sys
import textwrap

import pytest

import impls
from impls import agreement

from .conftest import require

NAME = "numba:blas"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def nb():
    require(NAME)
    from impls import numba_blas

    return numba_blas


# Each product by the loops where the others go to BLAS, and the reverse; y_pred and ga by NT
# (H, O >= NT_MIN_K: the loops' transposed copies of a and g) and by NN; H = 4k + 2 and odd sizes.
PLANS = ["blas", "loops", "h=loops,gw2=loops", "y_pred=loops,ga=loops,gw1=loops", "gw1=loops", "layout=batch-major"]
# oneMKL's kernels for some products, OpenBLAS or the loops for the others (on a CPU where MKL generates no
# code, its kernel runs MKL's standard gemm: the kernel's call and its leading dimensions are checked all the same).
PLANS += ["jit", "h=jit,gw2=loops", "y_pred=jit,ga=jit,gw1=jit"]
SHAPES = [(7, 13, 5, 3), (16, 40, 34, 33), (64, 100, 10, 10)]


@pytest.mark.parametrize("shape", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_every_plan_agrees(plan, shape, dtype, optimizer, nb):
    n, d, h, o = shape
    p = impls.Problem(n=n, d=d, h=h, o=o, dtype=dtype, optimizer=optimizer, lr=agreement.CHECK_LR[optimizer])
    if "jit" in plan:
        _require_jit()
    step = impls.create(NAME, p, plan=plan)
    assert step.describe()["plan_chosen"] == "given"
    assert [p for p, how in step.plan.items() if how == "jit"] == list(step.describe()["jit"]["kernels"])
    agreement.assert_agrees(step)


def _require_jit():
    from impls import numba_blas_jit

    if numba_blas_jit.unavailable_reason() is not None:
        pytest.skip(f"oneMKL's JIT unavailable: {numba_blas_jit.unavailable_reason()}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jit_kernels_are_created_once_at_create_never_by_a_call(dtype, nb):
    _require_jit()
    from impls import numba_blas_jit

    before = numba_blas_jit.created
    step = impls.create(NAME, agreement.check_problem("seed", dtype, "adam"), plan="h=jit,gw2=jit,gw1=loops")
    assert numba_blas_jit.created - before == 2
    step.loss_and_grads(), step.run(5)
    assert numba_blas_jit.created - before == 2
    assert set(step.describe()["jit"]["kernels"]) == {"h", "gw2"}


_GEMM_CALLS = """
    import ctypes
    import llvmlite.binding
    from numba.extending import get_cython_function_address
    import impls
    from impls import numba_blas_bridge

    # Every call of dgemm counted, then passed on to SciPy's: the step links against this
    # function because its code is compiled here, afresh (an empty NUMBA_CACHE_DIR).
    signature = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)
    dgemm = signature(get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))
    calls = []

    @signature
    def counted(*args):
        calls.append(1)
        dgemm(*args)

    llvmlite.binding.add_symbol(numba_blas_bridge.GEMM_SYMBOLS["float64"], ctypes.cast(counted, ctypes.c_void_p).value)
    problem = impls.Problem(n=7, d=13, h=5, o=3, dtype="float64", optimizer="adam", lr=1e-3)
    plans = [("numba:blas", "blas"), ("numba:blas", "loops"), ("numba:blas", "h=loops,ga=loops")]
    plans += [("numba:blas", "layout=batch-major"), ("numba", None)]
    from impls import numba_blas_jit

    if numba_blas_jit.unavailable_reason() is None:  # oneMKL's kernels for two products: OpenBLAS for three
        plans.append(("numba:blas", "h=jit,ga=jit"))
    for name, plan in plans:
        step = impls.create(name, problem, **({} if plan is None else {"plan": plan}))
        calls.clear()
        step.loss_and_grads()
        step.run(2)
        print(len(calls))
"""


def test_the_plan_decides_which_products_call_blas(tmp_path, nb):
    # Observed at run time: three calls of the step (loss_and_grads and two updates), five products each.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update(NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"), PYTHONPATH=ROOT)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_GEMM_CALLS)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    from impls import numba_blas_jit

    jit = [str(3 * 3)] if numba_blas_jit.unavailable_reason() is None else []
    assert out.stdout.split() == [str(3 * 5), "0", str(3 * 3), str(3 * 5), "0", *jit]


def test_the_loops_keep_a_product_only_when_measured_faster_by_the_margin(nb, monkeypatch):
    # The trials' time ratios (loops / BLAS) are made up here, in the order the products are tried.
    ratios = {"h": 1.3, "y_pred": 0.90, "gw2": 1 - nb.LOOPS_MARGIN / 2, "ga": 1.0, "gw1": 0.5}
    tried = []

    def fake_alternate(first, second, **_):
        tried.append(nb.PRODUCTS[len(tried)])
        first(), second()  # both sides are real calls of the step
        return [(ratios[tried[-1]], 1.0)]

    monkeypatch.setattr(nb.timing, "alternate", fake_alternate)
    step = impls.create(NAME, agreement.check_problem("seed", "float64", "sgd"))
    assert tried == list(nb.PRODUCTS)  # at the seed size every product is small enough to try
    assert step.plan == {
        "h": "blas",
        "y_pred": "loops",
        "gw2": "blas",
        "ga": "blas",
        "gw1": "loops",
        "layout": "feature-major",
    }
    assert step.trials == pytest.approx(ratios)
    assert step.describe()["plan_chosen"] == "measured at create"
    agreement.assert_agrees(step)


def test_products_beyond_the_trial_size_go_to_blas_untried(nb, monkeypatch):
    tried = []

    def fake_alternate(first, second, **_):
        tried.append("a trial")
        return [(2.0, 1.0)]  # feature-major (the second side of the layout trial) is faster

    monkeypatch.setattr(nb.timing, "alternate", fake_alternate)
    n, d, h, o = 8192, 32, 36, 32  # every product has more than LOOPS_MAX_MACS multiply-adds
    assert min(nb.product_macs(n, d, h, o).values()) > nb.LOOPS_MAX_MACS
    p = impls.Problem(n=n, d=d, h=h, o=o, optimizer="adam", lr=agreement.CHECK_LR["adam"])
    step = impls.create(NAME, p)
    assert tried == ["a trial"] and step.trials == {"layout": 2.0}  # the layout's trial only
    assert step.plan == dict.fromkeys(nb.PRODUCTS, "blas") | {"layout": "feature-major"}
    # None of the loops' copies (x.T, w2.T, row-major a and g) is allocated.
    from impls.numba_arena import ALL_PRODUCTS, NO_PRODUCTS, ArenaLayout, arena_size

    without_loops, with_loops = (
        ArenaLayout(n, d, h, o, True, may_loop, False) for may_loop in (NO_PRODUCTS, ALL_PRODUCTS)
    )
    assert step._arena.buf.size == arena_size(without_loops) < arena_size(with_loops)
    agreement.assert_agrees(step)


@pytest.mark.parametrize(("ratio", "layout"), [(0.5, "batch-major"), (1.0, "feature-major")])
def test_the_faster_layout_is_kept_where_every_product_goes_to_blas(ratio, layout, nb, monkeypatch):
    ratios = dict.fromkeys(nb.PRODUCTS, 1.2) | {"layout": ratio}  # BLAS wins every product's trial
    tried = []

    def fake_alternate(first, second, **_):
        tried.append(list(ratios)[len(tried)])
        return [(ratios[tried[-1]], 1.0)]

    monkeypatch.setattr(nb.timing, "alternate", fake_alternate)
    step = impls.create(NAME, agreement.check_problem("seed", "float32", "adam"))
    assert tried == [*nb.PRODUCTS, "layout"] and step.trials == pytest.approx(ratios)
    assert step.plan["layout"] == layout and step.describe()["plan"]["layout"] == layout
    agreement.assert_agrees(step)  # the kept arena holds the inputs


def test_threads_are_recorded_per_product(nb):
    from impls import threads

    small = impls.create(NAME, agreement.check_problem("seed", "float32", "sgd"), plan="h=loops")
    record = small.describe()
    assert record["plan"]["h"] == "loops" and record["threads"]["h"] == 1  # the loops: one thread
    # At the seed size OpenBLAS runs every product on one thread (at most 65536 x 4 multiply-adds).
    assert max(nb.product_macs(*small.problem.shape).values()) <= nb.OPENBLAS_ONE_THREAD_MACS
    assert set(record["threads"].values()) == {1}
    assert record["blas"]["internal_api"] == "openblas"
    big = impls.create(NAME, impls.Problem(n=512, d=1024, h=64, o=10), plan="blas").describe()
    assert big["threads"]["h"] == min(threads.budget(), 512 * 1024 * 64 // nb.OPENBLAS_ONE_THREAD_MACS)
    assert big["threads"]["y_pred"] == 1  # 512 x 64 x 10 multiply-adds


@pytest.mark.parametrize(
    "plan",
    [
        "fast",
        "h=gpu",
        "q=loops",
        "h=loops,,",
        "",
        3,
        None,
        "h=loops,layout=batch-major",
        "layout=rows",
        "h=jit,layout=batch-major",
        "jit=h",
    ],
)
def test_a_bad_plan_is_refused_naming_the_option_and_value(plan, nb):
    with pytest.raises(ValueError, match="plan must be") as caught:
        impls.create(NAME, impls.Problem.preset("seed"), plan=plan)
    assert repr(plan) in str(caught.value)


def test_the_plan_is_an_option_of_numba_blas_only(nb):
    assert impls.registry.open_options(NAME) == ["plan"]
    with pytest.raises(ValueError, match="option 'plan' is not one of numba's"):
        impls.create("numba", impls.Problem.preset("seed"), plan="blas")
