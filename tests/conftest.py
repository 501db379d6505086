"""Shared fixtures: which implementations can run here, and the problems they are checked on."""

import pytest

import impls

AVAILABLE = impls.available()


def require(name: str) -> None:
    """Skip, naming the reason from impls.available(), where `name` cannot run here."""
    reason = AVAILABLE[name]
    if reason is not None:
        pytest.skip(f"{name} unavailable: {reason}")
