"""The pytest-benchmark suite: `pytest bench/pytest_suite` (make bench-save, make bench-compare)."""
