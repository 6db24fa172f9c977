"""CPython's own tests of queue.Queue (Lib/test/test_queue.py, shipped with the
interpreter) run against pyqmem.Queue: the stdlib contract, task_done()/join() and
an assignable maxsize included.  Every test of its BaseQueueTestMixin runs (pytest
collects the TestCase below); none is skipped.  (Lib/test/_test_multiprocessing.py's
_TestQueue is not run: it needs the multiprocessing test harness and asserts
timings.)"""
from __future__ import annotations

import os
import unittest

import pytest

import pyqmem

try:
    from test import test_queue as cpython
except ImportError:  # pragma: no cover - depends on the interpreter's packaging
    if os.environ.get("CI"):
        raise
    pytest.skip("this interpreter ships without its test package (Debian: libpython3-testsuite)",
                allow_module_level=True)


class TestPyqmemQueueWithCPythonsTests(cpython.BaseQueueTestMixin, unittest.TestCase):
    """``self.queue`` provides Full and Empty (pyqmem's derive from queue's);
    ``type2test`` is pyqmem.Queue itself: ``Queue()`` and ``Queue(maxsize)`` make
    anonymous queues, as multiprocessing.Queue does."""

    queue = pyqmem

    def setUp(self):
        self.type2test = pyqmem.Queue
        super().setUp()
