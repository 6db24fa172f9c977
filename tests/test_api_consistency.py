"""One API across queues and consumers, and no surprises for a user coming from
queue.Queue / multiprocessing.Queue: get(block, timeout) and get_nowait() on
consumers, bool(q), join_thread/cancel_join_thread, a different capacity or maxsize
on attach refused, serializers whose dumps returns str, keys as str, and a warning
for durability="fsync" on a file system in RAM."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings

import pytest

import pyqmem
from helpers.paths import queue_path
from pyqmem.shm.folders import is_volatile


# ----- consumers read like queues ---------------------------------------------------
@pytest.mark.any_backend
@pytest.mark.parametrize("group", [None, "g"])
def test_consumers_take_block_and_timeout_and_have_get_nowait(make_topic, group):
    t = make_topic(partitions=2)
    with t.consumer(group=group) as c:
        with pytest.raises(pyqmem.Empty):
            c.get_nowait()
        with pytest.raises(pyqmem.Empty):
            c.get(False)
        with pytest.raises(pyqmem.Empty):
            c.get(block=False, timeout=30)  # the timeout is ignored, as in queue.Queue
        with pytest.raises(pyqmem.Empty):
            c.get(True, 0.01)
        with pytest.raises(pyqmem.Empty):
            c.get_many(5, False)
        t.send_many([b"a", b"b", b"c"], key="k")
        assert bytes(c.get_nowait().data) == b"a"
        assert bytes(c.get(False).data) == b"b"
        assert [bytes(m.data) for m in c.get_many(5, block=False)] == [b"c"]
        t.send(b"d")
        assert bytes(c.get(True, 5).data) == b"d"


# ----- Queue: what queue.Queue / multiprocessing.Queue users expect ---------------
def test_an_empty_queue_is_still_true(make_queue):
    q = make_queue()
    assert len(q) == 0 and q.empty()
    assert bool(q) is True
    assert (q or None) is q


def test_join_thread_and_cancel_join_thread_exist_and_lose_nothing(make_queue):
    q = make_queue()
    q.put("x")
    q.cancel_join_thread()
    q.join_thread()
    assert q.get(timeout=5) == "x"


def test_attaching_with_another_capacity_or_maxsize_is_refused(make_queue, qname):
    q = make_queue(capacity=8192, maxsize=3)
    q.put("kept")
    assert pyqmem.Queue(qname).capacity == 8192  # None: attach to whatever is there
    with pytest.raises(ValueError, match="exists with capacity 8192, not 16384"):
        pyqmem.Queue(qname, capacity=16384)
    with pytest.raises(ValueError, match="exists with maxsize 3, not 0"):
        pyqmem.Queue(qname, maxsize=0)
    a = pyqmem.Queue(qname, capacity=5000, maxsize=3)  # 5000 rounds up to 8192: the same
    a.close()
    assert q.get(timeout=5) == "kept"


def test_a_new_queue_gets_the_capacity_asked_for_without_a_mismatch(make_queue, qname):
    q = make_queue(capacity=4096)
    assert q.capacity == 4096 and os.path.exists(queue_path(qname))


# ----- serializers --------------------------------------------------------------------
def test_json_works_as_a_serializer_object_and_by_name(make_queue, names):
    for spec in (json, "json"):
        q = make_queue(name=names.new(), serializer=spec)
        q.put({"id": 1, "tags": ["a"]})
        assert q.get(timeout=5) == {"id": 1, "tags": ["a"]}


class _TextCodec:
    @staticmethod
    def dumps(obj):
        return f"{obj}!"

    @staticmethod
    def loads(raw):
        return raw.decode("utf-8")


@pytest.mark.any_backend
def test_a_dumps_returning_str_is_stored_as_utf8(make_topic):
    t = make_topic(serializer=_TextCodec())
    t.send("héllo")
    with t.consumer() as c:
        m = c.get(timeout=5)
        assert bytes(m.data) == "héllo!".encode() and m.value == "héllo!"


def test_a_dumps_returning_neither_str_nor_bytes_says_so(make_queue):
    class Bad:
        dumps = staticmethod(lambda obj: 42)
        loads = staticmethod(lambda raw: raw)

    q = make_queue(serializer=Bad())
    with pytest.raises(TypeError, match=r"Bad.dumps\(\) must return str or a bytes-like object"):
        q.put("x")
    assert q.empty()


def test_an_unknown_serializer_name_lists_the_known_ones(make_queue):
    with pytest.raises(ValueError, match='"pickle", "json", "raw"'):
        make_queue(serializer="yaml")


# ----- keys -------------------------------------------------------------------------------
@pytest.mark.any_backend
def test_a_str_key_comes_back_as_key_str(make_topic):
    t = make_topic()
    t.send(b"v", key="clé")
    t.send(b"v", key=b"\xff")
    t.send(b"v")
    with t.consumer() as c:
        a, b, n = c.get_many(3, timeout=5)
        assert (a.key, a.key_str) == ("clé".encode(), "clé")
        assert b.key == b"\xff"
        with pytest.raises(UnicodeDecodeError):
            b.key_str
        assert n.key is None and n.key_str is None


# ----- durability ------------------------------------------------------------------------
def test_fsync_durability_in_ram_warns_where_the_topic_is_opened(make_topic, tname, topic_dir):
    with pytest.warns(pyqmem.DurabilityWarning, match='durability="fsync" but lives in RAM') as rec:
        pyqmem.Topic(tname, dir=topic_dir, durability="fsync").close()
    assert rec[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_topic(name="os-durability", durability="os")  # no warning


def test_fsync_durability_on_a_disk_does_not_warn(tname):
    base = os.environ.get("TMPDIR") or tempfile.gettempdir()
    if is_volatile(base):
        pytest.skip(f"{base} is not on a disk here")
    with tempfile.TemporaryDirectory(dir=base) as d:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pyqmem.Topic(tname, dir=d, durability="fsync", segment_bytes=1 << 16) as t:
                t.send(b"x")


# ----- send_many with per-record metadata ------------------------------------------------
@pytest.mark.any_backend
def test_send_many_takes_records_with_their_own_key_headers_partition_and_correlation_id(
        make_topic):
    t = make_topic(partitions=3)
    mds = t.send_many([
        b"plain",
        pyqmem.Record(b"h", headers={"trace": b"1"}, correlation_id="req-1"),
        pyqmem.Record(b"p", partition=2),
        pyqmem.Record(b"k", key="other"),
    ], key="batch")
    assert [md.partition for md in mds[:3]] == [mds[0].partition, mds[0].partition, 2]
    got = {}
    with t.consumer() as c:
        for m in c.get_many(10, timeout=5):
            got[bytes(m.data)] = m
    assert set(got) == {b"plain", b"h", b"p", b"k"}
    assert got[b"plain"].key == b"batch" and got[b"plain"].headers == {}
    assert got[b"h"].headers == {"trace": b"1"} and got[b"h"].correlation_id == "req-1"
    assert got[b"h"].key_str == "batch"
    assert got[b"p"].partition == 2
    assert got[b"k"].key == b"other"


@pytest.mark.any_backend
def test_a_bad_record_in_a_batch_appends_nothing(make_topic):
    t = make_topic(partitions=2)
    with pytest.raises(ValueError):
        t.send_many([b"ok", pyqmem.Record(b"bad", partition=5)])
    with pytest.raises(TypeError):
        t.send_many([b"ok", pyqmem.Record(b"bad", headers={"h": 1})])
    assert sum(p["end_offset"] for p in t.stats()["partitions"].values()) == 0


def test_a_folder_in_ram_is_told_from_one_on_a_disk(topic_dir):
    from pyqmem.shm.folders import is_volatile

    for path in (topic_dir, "/", tempfile.gettempdir()):
        kind = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert is_volatile(path) == (kind in ("tmpfs", "ramfs")), (path, kind)
    assert is_volatile("/no/such/folder") is False  # cannot tell: not in RAM


# ----- one wording per error ------------------------------------------------------------------
def test_queues_and_topics_word_the_same_errors_the_same_way(make_queue, qname, make_topic):
    named, anonymous = make_queue(maxsize=1), pyqmem.Queue(maxsize=1)
    t = make_topic()
    c = t.consumer()
    try:
        for q, label in ((named, f"queue {qname!r}"), (anonymous, "the anonymous queue")):
            for get in (lambda: q.get(timeout=0.01), q.get_nowait):
                with pytest.raises(pyqmem.Empty, match=f"^no message on {label}$"):
                    get()
            q.put(1)
            for put in (lambda: q.put(2, timeout=0.01), lambda: q.put_nowait(2),
                        lambda: q.put_many([2], timeout=0.01)):
                with pytest.raises(pyqmem.Full, match=f"^{label} is full$"):
                    put()
        for get in (lambda: c.get(timeout=0.01), c.get_nowait):
            with pytest.raises(pyqmem.Empty, match=f"^no message on topic {t.name!r}$"):
                get()
        anonymous.close()
        c.close()
        with pytest.raises(pyqmem.Closed, match="^the anonymous queue is closed$"):
            anonymous.get()
        with pytest.raises(pyqmem.Closed, match=f"^consumer of topic {t.name!r} is closed$"):
            c.get()
    finally:
        anonymous.close()
        c.close()
