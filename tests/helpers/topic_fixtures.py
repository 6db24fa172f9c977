"""Fixtures and small utilities shared by the tests/test_topic_*.py files.

tests/conftest.py registers this module as a plugin (``pytest_plugins``), so every test
module may use its fixtures without importing them; the plain helpers below are imported.

- ``topic_dir``: a fresh 0700 folder under the session's private PYQMEM_DIR (itself
  under /dev/shm), exported as PYQMEM_DIR for this test and removed afterwards.
- ``tname``: a unique valid topic name.
- ``make_topic``: factory ``make_topic(name=None, **kw)`` -> pyqmem.Topic; every handle
  (and every consumer opened through ``tracked``) is closed at teardown.  In a test
  marked ``any_backend`` the topic lives in the backend the test runs on.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import stat
import tempfile
import time
import uuid

import pytest


def partition_for(key, partitions: int) -> int:
    """The partition the contract assigns to `key`: Kafka's murmur2 positive modulo."""
    from pyqmem.partitioning import murmur2

    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return (murmur2(data) & 0x7FFFFFFF) % partitions


def mp_ctx(method: str | None = None):
    """A multiprocessing context; forkserver (pyqmem preloaded) when available."""
    if method is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if method not in mp.get_all_start_methods():
        pytest.skip(f"start method {method} unavailable")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["helpers.topic_workers", "helpers.msgs", "pyqmem"])
    return ctx


def tree(path: str) -> list[str]:
    """Every file and folder below `path`, relative, sorted (empty if it does not exist)."""
    out = []
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(root, n), path))
    return sorted(out)


def drain(consumer, n: int, timeout: float = 10.0, per_get: float = 2.0) -> list:
    """Exactly `n` messages from `consumer` (fails the test if they do not come in time)."""
    import pyqmem

    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            got.append(consumer.get(timeout=min(per_get, left)))
        except pyqmem.Empty:
            continue
    assert len(got) == n, f"received {len(got)} of {n} messages within {timeout} s"
    return got


def assert_nothing_more(consumer, timeout: float = 0.2) -> None:
    import pyqmem

    with pytest.raises(pyqmem.Empty):
        extra = consumer.get(timeout=timeout)
        pytest.fail(f"unexpected extra message p{extra.partition}@{extra.offset}: {bytes(extra.data)[:40]!r}")


@pytest.fixture
def topic_dir(shm_dir, monkeypatch):
    d = tempfile.mkdtemp(prefix="topics-", dir=shm_dir)
    os.chmod(d, 0o700)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    monkeypatch.setenv("PYQMEM_DIR", d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tname(request) -> str:
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in request.node.name)[:60].strip("-.")
    return ("t" + uuid.uuid4().hex[:8] + "-" + base)[:100]


class Tracker:
    def __init__(self):
        self.objs = []

    def __call__(self, obj):
        self.objs.append(obj)
        return obj

    def close_all(self):
        for obj in reversed(self.objs):
            try:
                obj.close()
            except Exception:
                pass
        self.objs.clear()


@pytest.fixture
def tracked():
    """tracked(obj) registers anything with close(); all are closed (newest first) at teardown."""
    t = Tracker()
    yield t
    t.close_all()


@pytest.fixture
def make_topic(topic_dir, tname, tracked, topic_backend):
    import pyqmem
    from helpers.backends import topic_kwargs

    def factory(name: str | None = None, **kw):
        # tests keep every record unless they are about retention (the default,
        # "auto", bounds a topic in /dev/shm, where the tests' topics live)
        kw.setdefault("retention_bytes", None)
        return tracked(pyqmem.Topic(tname if name is None else name,
                                    **topic_kwargs(topic_backend, kw)))

    return factory
