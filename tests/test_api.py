"""The public API: bad input refused at the boundary, inputs copied, lazy imports, registry."""

import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import impls
from impls import registry
from impls.problem import validate_arrays

from .conftest import require


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 0),
        ("d", -3),
        ("h", 2.5),
        ("o", True),
        ("n", "64"),
        ("dtype", "float16"),
        ("dtype", "int32"),
        ("dtype", "bogus"),
        ("optimizer", "rmsprop"),
        ("init", "zeros"),
        ("lr", math.nan),
        ("lr", math.inf),
        ("lr", -1e-3),
        ("lr", "0.1"),
        ("seed", -1),
    ],
)
def test_bad_problem_field_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"^{field} .*{value!r}"):
        impls.Problem(**{field: value})


def test_problem_normalises_and_freezes():
    p = impls.Problem(dtype=np.float32, lr=1, n=np.int64(3))
    assert (p.dtype, p.lr, p.n) == ("float32", 1.0, 3) and type(p.n) is int
    with pytest.raises(AttributeError):
        p.n = 4


def test_preset_sizes_and_overrides():
    p = impls.Problem.preset("tutorial", dtype="float32", optimizer="adam")
    assert p.shape == impls.SIZES["tutorial"] == (64, 1000, 100, 10)
    assert (p.dtype, p.optimizer, p.lr, p.init) == ("float32", "adam", 1e-6, "torch")
    with pytest.raises(ValueError, match="preset must be one of seed, tutorial"):
        impls.Problem.preset("huge")
    with pytest.raises(ValueError, match="^n is set by preset"):
        impls.Problem.preset("seed", n=3)


def test_flops_counts_the_five_matmuls():
    p = impls.Problem(n=2, d=3, h=5, o=7)
    # x@w1, x.T@gh: 2*N*D*H each; a@w2, a.T@g, g@w2.T: 2*N*H*O each.
    assert impls.flops(p) == 2 * (2 * 2 * 3 * 5) + 3 * (2 * 2 * 5 * 7)


def test_make_arrays_same_numbers_in_every_dtype_and_seeded():
    p64 = impls.Problem.preset("seed", init="randn")
    a64, a32 = impls.make_arrays(p64), impls.make_arrays(p64.replace(dtype="float32"))
    for x64, x32 in zip(a64, a32, strict=True):
        assert x64.flags.c_contiguous and x32.dtype == np.float32
        np.testing.assert_array_equal(x32, x64.astype(np.float32))
    again, other = impls.make_arrays(p64), impls.make_arrays(p64.replace(seed=1))
    assert all(np.array_equal(a, b) for a, b in zip(a64, again, strict=True))
    assert not np.array_equal(a64.x, other.x)


def test_torch_init_is_uniform_within_fan_in_bound():
    p = impls.Problem.preset("tutorial", init="torch")
    _, _, w1, w2 = impls.make_arrays(p)
    assert np.abs(w1).max() <= 1 / math.sqrt(p.d) and np.abs(w2).max() <= 1 / math.sqrt(p.h)
    # U(-b, b) has standard deviation b / sqrt(3); 100,000 draws pin it to about 0.3%.
    assert abs(w1.std() * math.sqrt(3 * p.d) - 1) < 0.01


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="name must be one of numpy"):
        impls.create("numpyy", impls.Problem())


def test_required_packages_are_every_backends_own_once_in_registry_order():
    assert registry.required_packages() == ["numba", "torch", "jax"]


def test_create_rejects_non_problem():
    with pytest.raises(ValueError, match="^problem must be"):
        impls.create("numpy", {"n": 1})


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("x", lambda a: a[:, :-1], "shape"),
        ("w2", lambda a: a.T.copy(), "shape"),
        ("y", lambda a: a.astype(np.float32), "dtype"),
        ("w1", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a), "finite"),
        ("x", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.inf, a), "finite"),
        ("y", lambda a: a.tolist(), "NumPy array"),
    ],
)
def test_bad_arrays_name_the_field(field, change, message):
    p = impls.Problem(n=4, d=5, h=3, o=2)
    arrays = impls.make_arrays(p)._asdict()
    arrays[field] = change(arrays[field])
    with pytest.raises(ValueError, match=rf"^{field} .*{message}"):
        impls.create("numpy", p, impls.Arrays(**arrays))


def test_inputs_are_copied_both_ways():
    p = impls.Problem(n=4, d=5, h=3, o=2, lr=0.1)
    arrays = impls.make_arrays(p)
    originals = [a.copy() for a in arrays]
    step = impls.create("numpy", p, arrays)
    arrays.w1[...] = 0  # the caller changing its arrays does not reach the step
    step.run(3)
    np.testing.assert_array_equal(arrays.w2, originals[3])  # the step does not write the caller's arrays
    w1, _ = step.weights()
    w1[...] = 7  # nor do weights() copies reach the step
    assert not np.array_equal(step.weights()[0], w1)
    assert not np.array_equal(step.weights()[0], originals[2])


@pytest.mark.parametrize("name", impls.names())
def test_inputs_changed_after_create_do_not_reach_the_step(name):
    require(name)
    p = impls.Problem(n=4, d=5, h=3, o=2)
    arrays = impls.make_arrays(p)
    step = impls.create(name, p, arrays)
    assert not any(np.shares_memory(mine, theirs) for mine in step.arrays for theirs in arrays)
    loss, gw1, gw2 = step.loss_and_grads()
    for a in arrays:
        a[...] = 0  # with x and y zero, a step still reading them would report a loss of 0
    again = step.loss_and_grads()
    assert again[0] == loss
    np.testing.assert_array_equal(again[1], gw1)
    np.testing.assert_array_equal(again[2], gw2)


def _fortran_and_strided(arrays):
    fortran = impls.Arrays(*(np.asfortranarray(a) for a in arrays))
    strided = impls.Arrays(*(np.repeat(a, 2, axis=1)[:, ::2] for a in arrays))
    return {"fortran": fortran, "strided": strided}


def test_validated_arrays_are_c_contiguous_read_only_copies():
    # Backends rely on C order: torch keeps a Fortran array's strides, and its products then round differently.
    p = impls.Problem(n=6, d=5, h=4, o=3)
    arrays = impls.make_arrays(p)
    for label, variant in _fortran_and_strided(arrays).items():
        for given, checked in zip(variant, validate_arrays(p, variant), strict=True):
            assert checked.flags.c_contiguous and not checked.flags.writeable, label
            assert not np.shares_memory(given, checked) and np.array_equal(given, checked), label


# numba:blas chooses its plan by timing trials at create, and two plans sum in different orders: two
# creates whose trials land on either side of a margin would differ in the last bit whatever the inputs'
# order. A given plan makes every create compute alike, so only the inputs' order can differ.
SAME_PLAN = {"numba:blas": {"plan": "h=loops,gw1=loops"}}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", impls.names())
def test_fortran_and_strided_inputs_read_correctly(name, dtype):
    # At the seed size a Fortran-ordered x changes torch's (and, in float64, NumPy's) summation order.
    require(name)
    p = impls.Problem.preset("seed", dtype=dtype)
    arrays = impls.make_arrays(p)
    options = SAME_PLAN.get(name, {})
    expected = impls.create(name, p, arrays, **options).loss_and_grads()
    for label, variant in _fortran_and_strided(arrays).items():
        got = impls.create(name, p, variant, **options).loss_and_grads()
        assert got[0] == expected[0], label
        np.testing.assert_array_equal(got[1], expected[1], err_msg=label)
        np.testing.assert_array_equal(got[2], expected[2], err_msg=label)


def test_run_returns_k_pre_update_losses():
    p = impls.Problem.preset("seed", lr=1e-4)
    step = impls.create("numpy", p)
    first = step.loss_and_grads()[0]
    losses = step.run(4)
    assert losses.dtype == np.float64 and losses.shape == (4,)
    assert losses[0] == first and losses[1] != losses[0]
    assert step.run(0).shape == (0,)
    with pytest.raises(ValueError, match="^k must be"):
        step.run(-1)


def test_unavailable_backend_raises_runtime_error_with_reason(monkeypatch):
    entry = registry.Entry("numpy_ref", "NumpyStep", requires=("no_such_package_for_stepbench",))
    monkeypatch.setitem(registry._REGISTRY, "ghost", entry)
    reason = impls.available()["ghost"]
    assert reason == "no_such_package_for_stepbench not installed"
    with pytest.raises(RuntimeError, match=reason):
        impls.create("ghost", impls.Problem())


def test_names_start_with_the_reference():
    assert impls.names()[0] == "numpy"
    assert set(impls.available()) == set(impls.names())


def test_import_is_lazy():
    code = (
        "import impls, sys; impls.create('numpy', impls.Problem.preset('seed'));"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba')))"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_thread_budget_from_environment(monkeypatch):
    from impls import threads

    monkeypatch.setenv(threads.ENV, "1")
    assert threads.budget() == 1
    impls.create("numpy", impls.Problem())  # applies the budget to BLAS
    assert all(pool["num_threads"] == 1 for pool in threads.describe()["blas"])
    monkeypatch.setenv(threads.ENV, "zero")
    with pytest.raises(ValueError, match=f"^{threads.ENV} must be a positive integer, got 'zero'"):
        threads.budget()
    monkeypatch.delenv(threads.ENV)
    threads.apply()


def test_a_thread_budget_above_the_cpus_is_refused(monkeypatch):
    """999 threads on 2 cores would time the oversubscription (and cache a GEMM peak measured under it)."""
    from impls import threads

    cpus = threads.usable_cpus()
    monkeypatch.setenv(threads.ENV, str(cpus))
    assert threads.budget() == cpus
    monkeypatch.setenv(threads.ENV, str(cpus + 1))
    with pytest.raises(ValueError, match=f"^{threads.ENV}={cpus + 1} is more than the {cpus} CPUs"):
        threads.budget()
