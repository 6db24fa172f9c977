"""The topic backends the conformance tests run on (docs/design/backends.md).

A test marked ``@pytest.mark.any_backend`` runs once per name in BACKENDS
(tests/conftest.py parametrizes it); its ``make_topic`` / ``topic``
fixtures open topics in that backend.  A new backend adds its name here and
a branch to ``make``.
"""
from __future__ import annotations

BACKENDS = ["shm", "memory"]


def make(name: str):
    """A fresh backend called `name`; None for "shm" (the default, where the
    tests give ``dir=`` as they always did)."""
    if name == "shm":
        return None
    if name == "memory":
        from helpers.memory_backend import MemoryBackend

        return MemoryBackend()
    raise ValueError(f"unknown backend {name!r}")


def topic_kwargs(backend, kw: dict) -> dict:
    """`kw` for pyqmem.Topic in `backend`: unchanged for shared memory; for
    another backend, ``dir`` is dropped and ``backend`` given."""
    if backend is None:
        return kw
    kw = dict(kw)
    kw.pop("dir", None)
    kw.setdefault("backend", backend)
    return kw
