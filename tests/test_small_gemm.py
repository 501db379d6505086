"""The small-GEMM study (bench.studies.small_gemm): each provider's product is the product it claims before
anything is timed, a provider that disagrees is reported and not timed, the ratios are per product
whatever the repeats per call, and the report says what was measured. Timing is scripted here."""

import types
from importlib import metadata

import pytest

from .conftest import require


@pytest.fixture(scope="module")
def sg():
    require("numba:blas")  # the study times numba:blas's own products: SciPy's OpenBLAS from compiled code
    from bench.studies import small_gemm, small_gemm_providers

    return types.SimpleNamespace(study=small_gemm, providers=small_gemm_providers)


def _absent(sg, name):
    return types.SimpleNamespace(available=False, reason=f"{name} not installed", created=0)


ODD = (7, 13, 5, 3)  # N, D, H, O: no size a multiple of a vector or tile


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("product", ["h", "y_pred", "gw2", "ga", "gw1"])
def test_openblas_computes_each_product_of_the_step_with_its_transposes(product, dtype, sg):
    shape = sg.providers.step_products(*ODD)[product]
    operands = sg.providers.Operands(shape, dtype, _absent(sg, "mkl"), _absent(sg, "blis"))
    assert list(operands.runs) == ["openblas"]
    errors = operands.check()
    assert errors["openblas"] <= 1.0  # a few roundings; a wrong transpose or size is ~1/eps off
    op_a = operands.a.T if shape.trans_a else operands.a
    op_b = operands.b.T if shape.trans_b else operands.b
    assert operands.c["openblas"].shape == (op_a @ op_b).shape == (shape.m, shape.n)


def test_the_step_products_are_the_shapes_numba_blas_multiplies(sg):
    n, d, h, o = ODD
    shapes = sg.providers.step_products(n, d, h, o)
    assert {name: (s.m, s.n, s.k) for name, s in shapes.items()} == {
        "h": (h, n, d),
        "y_pred": (o, n, h),
        "gw2": (h, o, n),
        "ga": (h, n, o),
        "gw1": (h, d, n),
    }
    from impls.numba_blas import product_macs  # the same multiply-adds as numba:blas counts

    assert {name: s.flops // 2 for name, s in shapes.items()} == product_macs(n, d, h, o)


def test_a_provider_that_disagrees_is_reported_and_not_timed(sg, monkeypatch):
    timed = []

    def fake_alternate(first, second, **_):
        timed.append((first, second))
        first(), second()
        return [(1.0, 1.0)]

    monkeypatch.setattr("impls.timing.alternate", fake_alternate)
    original = sg.providers.Operands.__init__

    def with_a_wrong_provider(self, shape, dtype, mkl, blis, seed=0):
        original(self, shape, dtype, mkl, blis, seed)
        self._add("wrong", lambda c, calls: c.fill(1.0))  # writes something, never the product
        self._add("silent", lambda c, calls: None)  # writes nothing: its output stays nan

    monkeypatch.setattr(sg.providers.Operands, "__init__", with_a_wrong_provider)
    monkeypatch.setattr(sg.study, "repeats", lambda run, target_s=0: 1)
    monkeypatch.setattr(sg.study, "_time_the_step", lambda problem, gemm: (1.0, {}))
    absent = _absent(sg, "mkl or blis")
    record = sg.study.measure_problem("seed", "float64", absent, absent, progress=lambda line: None)
    for entry in record["products"].values():
        assert entry["providers"]["wrong"]["disagrees"].startswith("error ")
        assert entry["providers"]["silent"]["disagrees"].startswith("error nan")
        assert "time_over_openblas" not in entry["providers"]["wrong"]
    # Per product: OpenBLAS against the GEMM block on the budget and on one thread; then the two GEMM
    # blocks against each other once. Nothing of the disagreeing providers.
    assert len(timed) == 2 * 5 + 1


@pytest.mark.parametrize(("first_per_call", "second_per_call", "expected"), [(1, 1, 2.0), (10, 1, 0.2), (4, 8, 4.0)])
def test_a_ratio_is_per_product_whatever_the_products_per_call(
    first_per_call, second_per_call, expected, sg, monkeypatch
):
    # Scripted blocks: every call of `first` takes 2 s, of `second` 1 s, in every pair.
    monkeypatch.setattr("impls.timing.alternate", lambda first, second, **_: [(2.0, 1.0), (2.0, 1.0), (9.0, 1.0)])
    assert sg.study.ratio(None, None, first_per_call, second_per_call) == pytest.approx(expected)


def test_a_fraction_of_the_gemm_rate_is_the_rate_over_the_blocks(sg):
    # A product of a tenth of the block's FLOPs taking a fifth of its time runs at half its rate.
    assert sg.study.fraction_of_gemm(flops=100.0, seconds_over_gemm=0.2, gemm_flops=1000.0) == pytest.approx(0.5)


def test_the_report_names_each_provider_and_marks_disagreement(sg):
    shape = sg.providers.Shape(10, 64, 100, False, True)
    entry = {
        "shape": shape._asdict(),
        "flops": shape.flops,
        "openblas": {"fraction_of_gemm": 0.39, "fraction_of_one_thread_gemm": 0.75, "seconds_over_gemm": 1e-3},
        "providers": {"mkl-gemm": {"time_over_openblas": 1.3}, "blis": {"disagrees": "error 3e+06 eps |a||b| > 100"}},
    }
    record = {
        "versions": {"cpu": "a CPU", "mkl": "MKL 1", "blis": "BLIS 2"},
        "machine": {"other_work": 1.0, "threads": 1, "cpus": [1], "why": "other work holds 1.0 cores"},
        "problems": [
            {
                "preset": "seed",
                "dtype": "float32",
                "shape": [64, 100, 10, 10],
                "threads": 2,
                "products": {"h": entry},
                "step": {
                    "plan": {
                        "h": "blas",
                        "y_pred": "loops",
                        "gw2": "blas",
                        "ga": "loops",
                        "gw1": "blas",
                        "layout": "feature-major",
                    },
                    "fraction_of_gemm": 0.23,
                    "products_share": 0.57,
                    "one_thread_gemm_over_budget": 2.2,
                },
            }
        ],
    }
    text = sg.study.report(record)
    assert "| product | m x n x k | OpenBLAS, % of GEMM | % of one-thread GEMM | blis | mkl-gemm |" in text
    assert "| h | 10x64x100 | 39% | 75% | error 3e+06 eps |a||b| > 100 | 1.30x |" in text
    assert "Threads: 1 (other work holds 1.0 cores)." in text
    assert "(numba:blas, by the loops: y_pred, ga, feature-major): 23% of the GEMM rate" in text
    assert "23% of the GEMM rate" in text and "57% of its time" in text and "45% of the budget's" in text


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


# The optional providers (requirements-small-gemm.txt); the mkl wheel holds libraries, no Python package.
needs_mkl = pytest.mark.skipif(not _installed("mkl"), reason="mkl not installed (make small-gemm)")
needs_blis = pytest.mark.skipif(not _installed("blis"), reason="blis not installed (make small-gemm)")


@needs_mkl
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mkl_creates_one_kernel_per_product_and_it_computes_the_product(dtype, sg):
    from impls import numba_blas_jit

    mkl = sg.providers.Mkl()
    assert mkl.reason is None
    for product, shape in sg.providers.step_products(*ODD).items():
        before = numba_blas_jit.created
        operands = sg.providers.Operands(shape, dtype, mkl, _absent(sg, "blis"))
        assert numba_blas_jit.created == before + 1
        provider = next(p for p in operands.runs if p.startswith("mkl"))
        assert provider in ("mkl-jit", "mkl-gemm")
        assert operands.check()[provider] <= 1.0, product
        operands.runs[provider](5)
        assert numba_blas_jit.created == before + 1  # calls create nothing


@needs_blis
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blis_computes_each_product_of_the_step(dtype, sg):
    blis = sg.providers.Blis()
    for product, shape in sg.providers.step_products(*ODD).items():
        operands = sg.providers.Operands(shape, dtype, _absent(sg, "mkl"), blis)
        assert operands.check()["blis"] <= 1.0, product
