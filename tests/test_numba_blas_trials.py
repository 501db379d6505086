"""numba:blas's plan, chosen by timing trials at create, on scripted block times: each trial puts the right
side first, the faster side wins by the margin, and the plan chosen (or given) is the one the step runs.

impls.timing.timed_block is replaced: a block runs its call once, so that a spy on the compiled step's
call sees what the call computes (which products by BLAS, which layout), and lasts `number` times the
scripted cost of that plan. The real alternation (impls.timing.alternate) and the real trials run on
those times, so a ratio depends on which side a trial passes first, as a measured one does.
"""

import types

import pytest

import impls
import impls.timing
from impls import agreement

from .conftest import require

NAME = "numba:blas"


@pytest.fixture
def nb():
    require(NAME)
    from impls import numba_blas

    return numba_blas


@pytest.fixture
def scripted(monkeypatch, nb):
    computed = []  # (batch_major, Products by BLAS) of every call of the compiled step, in order
    by_jit = []  # the products each of those calls gave to a JIT kernel (a tuple of names)
    blocks = []  # the same, of every timed block
    original = nb.NumbaBlasStep._call

    def spy(self, kind, t=0, arena=None, by_blas_argument=None, kernels=nb._STEP_KERNELS):
        used = self._arena if arena is None else arena
        by_blas = self._by_blas_argument if by_blas_argument is None else by_blas_argument
        given = self._kernels if kernels is nb._STEP_KERNELS else kernels
        computed.append((used.layout.batch_major, nb.Products(*by_blas)))
        by_jit.append(() if given is None else tuple(p for i, p in enumerate(nb.PRODUCTS) if given[2 * i]))
        return original(self, kind, t, arena, by_blas_argument, kernels)

    monkeypatch.setattr(nb.NumbaBlasStep, "_call", spy)

    def costs(loops: dict, blas: dict, batch_major_factor: float = 1.0, jit: dict | None = None):
        """Seconds per call: the sum over products of each one's cost by the loops, by BLAS, or by a JIT
        kernel (jit); batch-major (every product by BLAS) is the feature-major all-BLAS cost times
        batch_major_factor."""

        def timed_block(call, number):
            call()
            batch_major, by_blas = computed[-1]
            blocks.append(computed[-1])
            per_call = sum(
                (jit[p] if p in by_jit[-1] else blas[p]) if b else loops[p]
                for p, b in zip(nb.PRODUCTS, by_blas, strict=True)
            )
            return number * per_call * (batch_major_factor if batch_major else 1.0)

        monkeypatch.setattr(impls.timing, "timed_block", timed_block)

    return types.SimpleNamespace(computed=computed, by_jit=by_jit, blocks=blocks, costs=costs)


BLAS_COST = {"h": 1e-4, "y_pred": 1e-4, "gw2": 1e-4, "ga": 1e-4, "gw1": 1e-4}


def test_each_product_goes_to_the_loops_only_where_they_are_faster_by_the_margin(nb, scripted):
    # In the step's order: h by the loops costs 1.06x the step by BLAS (kept by BLAS), y_pred 0.9x
    # (loops), gw2 1.0x (a tie: BLAS), ga 1.044x (BLAS), gw1 0.911x (loops), each against the plan so far.
    loops = {"h": 1.3e-4, "y_pred": 0.5e-4, "gw2": 1e-4, "ga": 1.2e-4, "gw1": 0.6e-4}
    scripted.costs(loops, BLAS_COST)
    step = impls.create(NAME, agreement.check_problem("seed", "float32", "sgd"))
    assert step.trials == pytest.approx({"h": 1.06, "y_pred": 0.9, "gw2": 1.0, "ga": 1.044, "gw1": 0.911}, abs=1e-3)
    chosen = {"h": "blas", "y_pred": "loops", "gw2": "blas", "ga": "blas", "gw1": "loops"}
    assert step.plan == chosen | {"layout": "feature-major"}  # not every product by BLAS: no layout trial
    assert step.describe()["plan"] == step.plan and step.describe()["plan_chosen"] == "measured at create"
    agreement.assert_agrees(step)
    scripted.computed.clear()
    step.step()
    assert scripted.computed == [(False, nb.Products(True, False, True, True, False))]  # the plan, run


@pytest.mark.parametrize(
    ("factor", "layout"),
    [(0.5, "batch-major"), (1 - 1.5 * 0.03, "batch-major"), (1 - 0.5 * 0.03, "feature-major"), (2.0, "feature-major")],
)
def test_batch_major_is_kept_only_where_it_is_faster_by_the_margin(nb, scripted, factor, layout):
    assert nb.LAYOUT_MARGIN == 0.03
    scripted.costs(dict.fromkeys(nb.PRODUCTS, 1e-3), BLAS_COST, batch_major_factor=factor)  # BLAS wins every product
    step = impls.create(NAME, agreement.check_problem("seed", "float32", "adam"))
    assert step.trials["layout"] == pytest.approx(factor, abs=1e-3)  # batch-major's time over feature-major's
    assert step.plan == dict.fromkeys(nb.PRODUCTS, "blas") | {"layout": layout}
    agreement.assert_agrees(step)  # the kept arena holds the inputs
    scripted.computed.clear()
    step.step()
    assert scripted.computed == [(layout == "batch-major", nb.ALL_PRODUCTS)]  # the kept arena is the one run


@pytest.mark.parametrize(
    ("plan", "batch_major", "by_blas"),
    [
        ("layout=batch-major", True, (True,) * 5),
        ("h=loops,gw1=loops", False, (False, True, True, True, False)),
        ("loops", False, (False,) * 5),
    ],
)
def test_a_given_plan_is_the_one_run_and_no_trial_is_timed(nb, scripted, plan, batch_major, by_blas):
    scripted.costs(BLAS_COST, BLAS_COST)
    step = impls.create(NAME, agreement.check_problem("seed", "float64", "sgd"), plan=plan)
    assert scripted.blocks == [] and step.trials == {}
    record = step.describe()
    assert record["plan_chosen"] == "given"
    assert record["plan"] == {
        **{p: "blas" if b else "loops" for p, b in zip(nb.PRODUCTS, by_blas, strict=True)},
        "layout": "batch-major" if batch_major else "feature-major",
    }
    assert step._arena.layout.batch_major is batch_major
    agreement.assert_agrees(step)
    scripted.computed.clear()
    step.step()
    assert scripted.computed == [(batch_major, nb.Products(*by_blas))]


def test_alternated_pairs_run_in_both_orders_at_random(monkeypatch):
    def run(seed):
        log = []
        monkeypatch.setattr(impls.timing, "timed_block", lambda call, number: call() or number * 1e-3)
        impls.timing.alternate(lambda: log.append("a"), lambda: log.append("b"), pairs=24, block_s=1e-3, seed=seed)
        timed = log[2:]  # after one calibration block of each
        return [tuple(timed[i : i + 2]) for i in range(0, len(timed), 2)]

    orders = {seed: run(seed) for seed in (0, 1)}
    for pairs in orders.values():
        assert len(pairs) == 24 and set(pairs) == {("a", "b"), ("b", "a")}  # one block each per pair, both orders
    assert orders[0] != orders[1]  # the seed decides, not a fixed pattern


@pytest.fixture
def jit(nb, monkeypatch):
    """numba_blas_jit with its kernels relabelled as `provider` says: on a CPU where oneMKL generates code,
    or declines to (MKL_NO_JIT), whatever this one does. The kernel is MKL's real one, so each step still
    computes its products; the timing is scripted."""
    from impls import numba_blas_jit

    if numba_blas_jit.unavailable_reason() is not None:
        pytest.skip(f"oneMKL's JIT unavailable: {numba_blas_jit.unavailable_reason()}")
    made = []
    real = numba_blas_jit.create

    def relabel(provider):
        def create(shape, dtype, owner):
            made.append(real(shape, dtype, owner)._replace(provider=provider))
            return made[-1]

        monkeypatch.setattr(numba_blas_jit, "create", create)

    return types.SimpleNamespace(module=numba_blas_jit, made=made, relabel=relabel)


def test_a_jit_kernel_replaces_openblas_only_where_the_step_is_faster_by_the_margin(nb, scripted, jit):
    # Every product by BLAS (the loops cost 10x), feature-major (batch-major costs 2x). Then, in the step's
    # order, each product's JIT kernel against OpenBLAS with the kernels kept so far: h 0.9x (kept),
    # y_pred 1.0x (a tie: OpenBLAS), gw2 4.4/4.5 = 0.978x (within the margin: OpenBLAS), ga 4.0/4.5 (kept),
    # gw1 4.2/4.0 (slower: OpenBLAS).
    assert nb.JIT_MARGIN == 0.03
    jit.relabel("mkl-jit")
    kernel_cost = {"h": 0.5e-4, "y_pred": 1e-4, "gw2": 0.9e-4, "ga": 0.5e-4, "gw1": 1.2e-4}
    scripted.costs(dict.fromkeys(nb.PRODUCTS, 1e-3), BLAS_COST, batch_major_factor=2.0, jit=kernel_cost)
    before = jit.module.created
    step = impls.create(NAME, agreement.check_problem("seed", "float32", "sgd"))
    trials = {p: step.trials[f"{p}:jit"] for p in nb.PRODUCTS}
    assert trials == pytest.approx({"h": 0.9, "y_pred": 1.0, "gw2": 0.978, "ga": 0.889, "gw1": 1.05}, abs=1e-3)
    assert step.plan == {"h": "jit", "y_pred": "blas", "gw2": "blas", "ga": "jit", "gw1": "blas"} | {
        "layout": "feature-major"
    }
    # One kernel per product, all at create; those not kept are freed at once, the kept ones with the step.
    assert jit.module.created - before == 5
    assert [k.destroy.alive for k in jit.made] == [True, False, False, True, False]
    record = step.describe()
    assert record["jit"]["kernels"] == {"h": "mkl-jit", "ga": "mkl-jit"}
    assert record["threads"]["h"] == record["threads"]["ga"] == 1
    agreement.assert_agrees(step)
    scripted.computed.clear(), scripted.by_jit.clear()
    step.step()
    assert scripted.by_jit == [("h", "ga")]  # the kept kernels, run
    step.run(3), step.loss_and_grads()
    assert jit.module.created - before == 5  # no kernel is made by a call of the step
    del step
    assert not any(k.destroy.alive for k in jit.made)


def test_where_mkl_generates_no_code_nothing_is_tried_and_openblas_stays(nb, scripted, jit):
    jit.relabel("mkl-gemm")  # MKL_NO_JIT: the pointer would run MKL's standard gemm
    scripted.costs(
        dict.fromkeys(nb.PRODUCTS, 1e-3), BLAS_COST, batch_major_factor=2.0, jit=dict.fromkeys(nb.PRODUCTS, 0)
    )
    step = impls.create(NAME, agreement.check_problem("seed", "float64", "adam"))
    assert not any(key.endswith(":jit") for key in step.trials)  # however fast it was scripted to be
    assert step.plan == dict.fromkeys(nb.PRODUCTS, "blas") | {"layout": "feature-major"}
    assert set(step.describe()["jit"]["tried"].values()) == {"no JIT kernel (MKL_NO_JIT): OpenBLAS, untried"}
    assert len(jit.made) == 5 and not any(k.destroy.alive for k in jit.made)
    assert scripted.by_jit and not any(scripted.by_jit)  # no call of the step used one


def test_without_mkl_numba_blas_runs_as_before_and_says_why(nb, scripted, monkeypatch):
    from impls import numba_blas_jit

    reason = "mkl not installed (requirements.txt pins it)"
    monkeypatch.setattr(numba_blas_jit, "unavailable_reason", lambda: reason)
    before = numba_blas_jit.created
    scripted.costs(dict.fromkeys(nb.PRODUCTS, 1e-3), BLAS_COST, batch_major_factor=2.0)
    step = impls.create(NAME, agreement.check_problem("seed", "float32", "sgd"))
    assert numba_blas_jit.created == before and not any(key.endswith(":jit") for key in step.trials)
    assert step.describe()["jit"] == {"mkl": None, "unused": reason, "kernels": {}}
    with pytest.raises(ValueError, match="asks for JIT kernels: mkl not installed"):
        impls.create(NAME, agreement.check_problem("seed", "float32", "sgd"), plan="h=jit")


def test_a_given_plan_records_each_kernels_provider_as_mkl_made_it(nb, jit):
    # A kernel where MKL generated no code runs its standard gemm: the record says so, whatever the plan asked.
    jit.relabel("mkl-gemm")
    step = impls.create(NAME, agreement.check_problem("seed", "float64", "sgd"), plan="h=jit,ga=jit")
    assert step.plan == {"h": "jit", "y_pred": "blas", "gw2": "blas", "ga": "jit", "gw1": "blas"} | {
        "layout": "feature-major"
    }
    assert step.describe()["jit"]["kernels"] == {"h": "mkl-gemm", "ga": "mkl-gemm"}
    jit.relabel("mkl-jit")
    step = impls.create(NAME, agreement.check_problem("seed", "float64", "sgd"), plan="gw1=jit")
    assert step.describe()["jit"]["kernels"] == {"gw1": "mkl-jit"}
