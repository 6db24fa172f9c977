"""pytest configuration for bench/ only (the normal suite never collects bench/).

The micro-benchmarks in this folder are marked ``bench`` and are skipped unless
pytest runs with ``--benchmark-only`` (or PYQMEM_BENCH=1 is set), so a stray
``pytest bench/`` or a broad ``pytest .`` does not spend minutes timing calls.
"""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "bench: pyqmem micro-benchmark (run: pytest bench/test_micro.py --benchmark-only)",
    )


def pytest_collection_modifyitems(config, items):
    try:
        only = config.getoption("--benchmark-only")
    except ValueError:  # pytest-benchmark not installed
        only = False
    if only or os.environ.get("PYQMEM_BENCH") == "1":
        return
    skip = pytest.mark.skip(
        reason="micro-benchmark: run with `pytest bench/test_micro.py --benchmark-only`"
    )
    for item in items:
        if item.get_closest_marker("bench"):
            item.add_marker(skip)
