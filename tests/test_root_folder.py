"""One environment variable names where pyqmem keeps its objects: $PYQMEM_DIR
holds every queue file and topic folder; the old $PYQMEM_SHM_DIR (queues only)
still works, with a DeprecationWarning, and loses to $PYQMEM_DIR."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

import pyqmem
from helpers.paths import queue_path


@pytest.fixture
def two_folders(shm_dir):
    a = tempfile.mkdtemp(prefix="root-a-", dir=shm_dir)
    b = tempfile.mkdtemp(prefix="root-b-", dir=shm_dir)
    yield a, b
    for d in (a, b):
        shutil.rmtree(d)


def _name():
    return "root-" + uuid.uuid4().hex[:10]


def test_pyqmem_dir_holds_queues_and_topics_alike(two_folders, monkeypatch):
    a, _ = two_folders
    monkeypatch.setenv("PYQMEM_DIR", a)
    monkeypatch.delenv("PYQMEM_SHM_DIR", raising=False)
    name = _name()
    with pyqmem.Queue(name, capacity=4096) as q:
        q.put(1)
        assert os.path.exists(os.path.join(a, f"pyqmem.{os.geteuid()}.q.{name}"))
        assert pyqmem.Queue.exists(name)
        q.unlink()
    t = pyqmem.Topic(name, partitions=1, segment_bytes=1 << 16, retention_bytes=None)
    try:
        assert os.path.dirname(t.path) == a
    finally:
        t.close()


def test_the_old_variable_still_places_queues_with_a_deprecation_warning(two_folders, monkeypatch):
    _, b = two_folders
    monkeypatch.delenv("PYQMEM_DIR", raising=False)
    monkeypatch.setenv("PYQMEM_SHM_DIR", b)
    name = _name()
    with pytest.warns(DeprecationWarning, match=r"PYQMEM_SHM_DIR is deprecated: set \$PYQMEM_DIR"):
        q = pyqmem.Queue(name, capacity=4096)
    with q:
        assert queue_path(name) == os.path.join(b, f"pyqmem.{os.geteuid()}.q.{name}")
        assert os.path.exists(queue_path(name))
        with pytest.warns(DeprecationWarning):
            assert pyqmem.Queue.exists(name)
        q.unlink()


def test_pyqmem_dir_wins_over_the_old_variable_and_the_warning_says_so(two_folders, monkeypatch):
    a, b = two_folders
    monkeypatch.setenv("PYQMEM_DIR", a)
    monkeypatch.setenv("PYQMEM_SHM_DIR", b)
    name = _name()
    with pytest.warns(DeprecationWarning, match="is ignored: \\$PYQMEM_DIR is set and wins"):
        q = pyqmem.Queue(name, capacity=4096)
    with q:
        assert os.listdir(b) == []
        assert os.path.exists(os.path.join(a, f"pyqmem.{os.geteuid()}.q.{name}"))
        q.unlink()
