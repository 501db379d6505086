"""The version-drift report: its checks, its table, and the torch semantics it exists to watch."""

import pytest

from impls import drift


def test_numpy_passes_every_drift_check_here():
    result = drift.check_implementation("numpy")
    assert result["status"] == "pass", result["failures"]
    assert 0 <= result["worst_ratio"] <= 1


def test_drift_check_catches_relu_grad_at_zero(monkeypatch):
    from impls import negative_controls, numpy_ref

    # Swap the reference's backward for the notebook's relu'(0) = 1 and the check must fail.
    monkeypatch.setattr(numpy_ref.NumpyStep, "backward", staticmethod(negative_controls.ReluGradOneAtZero.backward))
    assert not drift._relu_at_zero_ok("numpy", "float64")


def test_table_shows_pass_fail_skip_and_errors():
    runs = {
        "py311": {
            "versions": {"python": "3.11.7", "numpy": "2.4.6", "numba": "0.68.1", "torch": "2.13.0"},
            "results": {
                "numpy": {"status": "pass", "worst_ratio": 0.08},
                "torch:cpu": {"status": "fail", "worst_ratio": 3e5, "failures": ["seed/float32/sgd: gw1"]},
                "torch:cuda": {"status": "skip", "reason": "CUDA not available"},
            },
            "probe": 1.0,
        },
        "py313": {"error": "tox exited 1: no interpreter"},
    }
    table = drift.format_table(runs)
    assert "pass 0.08" in table and "FAIL 3e+05 (seed/float32/sgd: gw1)" in table
    assert "py311: torch:cuda skip: CUDA not available" in table
    assert "py313: tox exited 1" in table and "ERROR" in table


def test_torch_relu_and_clamp_gradient_at_zero():
    torch = pytest.importorskip("torch", reason="torch not installed")
    x = torch.zeros(2, requires_grad=True)
    torch.relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0]  # relu'(0) = 0 in every torch version
    # clamp(min=0) passed gradient at exactly 0 up to torch 2.13 and stops from 2.14 on.
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    expected = 1.0 if (major, minor) < (2, 14) else 0.0
    assert drift.clamp_grad_at_zero() == expected
