"""Shared fixtures: which implementations can run here, and the problems they are checked on."""

import pytest

import impls

AVAILABLE = impls.available()


def require(name: str) -> None:
    """Skip, naming the reason from impls.available(), where `name` cannot run here."""
    reason = AVAILABLE[name]
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")


@pytest.fixture(scope="session", autouse=True)
def data_parallel_workers_shared():
    """The data-parallel steps of a test run share their worker processes (impls.torch_ddp.shared_ranks):
    each would otherwise start its own, and a worker takes seconds to import torch."""
    if AVAILABLE["torch:cpu:ddp"] is not None:
        yield
        return
    from impls import torch_ddp

    with torch_ddp.shared_ranks():
        yield
