"""The public API's types, checked by mypy (never run): .ci/run runs
``mypy --strict tests/typing examples``.  A public signature that loses its
types makes an assert_type below fail, and the `type: ignore[...]` lines must
stay errors (warn_unused_ignores reports them if they stop being errors)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from typing_extensions import assert_type

import pyqmem
from pyqmem.backend import Backend


def queues() -> None:
    q = pyqmem.Queue()
    assert_type(q, pyqmem.Queue)
    assert_type(pyqmem.Queue(10), pyqmem.Queue)
    assert_type(pyqmem.Queue("jobs", capacity=4096, maxsize=0), pyqmem.Queue)
    assert_type(q.get(), Any)
    assert_type(q.get(True, 1.0), Any)
    assert_type(q.get_nowait(), Any)
    assert_type(q.get_many(10, timeout=1), List[Any])
    assert_type(q.put(b"x"), None)
    assert_type(q.put_many([1, 2]), None)
    assert_type(q.qsize(), int)
    assert_type(q.empty(), bool)
    assert_type(q.full(), bool)
    assert_type(q.name, Optional[str])
    assert_type(q.maxsize, int)
    assert_type(q.join(timeout=1), bool)
    assert_type(q.task_done(), None)
    assert_type(q.unfinished_tasks, int)
    assert_type(q.stats(), Dict[str, int])
    assert_type(pyqmem.Queue.exists("jobs"), bool)
    assert_type(pyqmem.Queue.unlink("jobs", missing_ok=True), None)
    assert_type(q.unlink(), None)
    q.get(timeout="soon")  # type: ignore[arg-type]
    pyqmem.Queue(b"jobs")  # type: ignore[call-overload]
    pyqmem.Queue(10, create=True)  # type: ignore[call-overload]


def topics(backend: Backend) -> None:
    t = pyqmem.Topic("events", partitions=4)
    assert_type(pyqmem.Topic("events", backend=backend), pyqmem.Topic)
    md = t.send(b"v", key="k", headers={"h": b"1"}, correlation_id="c")
    assert_type(md, pyqmem.RecordMetadata)
    assert_type(md.partition, int)
    assert_type(md.offset, int)
    assert_type(t.send_many([b"a", pyqmem.Record(b"b", key="k")]), List[pyqmem.RecordMetadata])
    assert_type(t.partitions, int)
    assert_type(pyqmem.Topic.exists("events"), bool)
    c = t.consumer(start="earliest")
    assert_type(c, pyqmem.Consumer)
    g = t.consumer(group="billing", max_deliveries=3)
    assert_type(g, pyqmem.GroupConsumer)
    m = c.get(timeout=1)
    assert_type(m, pyqmem.Message)
    assert_type(c.get_nowait(), pyqmem.Message)
    assert_type(c.get_many(10, block=False), List[pyqmem.Message])
    assert_type(m.data, memoryview)
    assert_type(m.key, Optional[bytes])
    assert_type(m.key_str, Optional[str])
    assert_type(m.headers, Dict[str, bytes])
    assert_type(m.offset, int)
    assert_type(g.get(timeout=1).ack(), None)
    assert_type(g.ack_many(g.get_many(5)), int)
    assert_type(c.lag(), Dict[int, int])
    assert_type(t.delete(), None)
    assert_type(pyqmem.redrive("events"), int)
    t.send(b"v", key=42)  # type: ignore[arg-type]
    c.get(timeout="soon")  # type: ignore[arg-type]
