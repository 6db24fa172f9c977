"""The C fast paths of Topic.send/send_many and Consumer.get/get_many
(pyqmem._core.TopicSender/TopicReader) give the same results as the Python
definitions they stand in for: murmur2 partitions, header bytes, errors,
RecordMetadata as a named tuple, Message fields made on first use.
"""
from __future__ import annotations

import collections
import gc
import os
import pickle
import threading

import pytest

import pyqmem
from pyqmem import _core
from pyqmem.headers import encode
from pyqmem.partitioning import murmur2
from pyqmem.shm.folders import log_args


@pytest.mark.parametrize("key", ["user-1", "clé", b"k", b"", bytearray(b"ba"), memoryview(b"mv")])
def test_keyed_send_lands_where_murmur2_says(make_topic, key):
    t = make_topic(partitions=7)
    data = key.encode() if isinstance(key, str) else bytes(key)
    assert t.send(b"v", key=key).partition == (murmur2(data) & 0x7FFFFFFF) % 7


HEADER_CASES = [
    (None, None), ({}, None), (None, "req"), ({"a": b"1", "é": b""}, "x"),
    ({"trace": b"abc" * 100}, None), ({}, "ü" * 10),
    ({"x": bytearray(b"ba"), "y": memoryview(b"mv")}, None),
    (collections.OrderedDict(a=b"1"), "c"), ({f"k{i}": b"v" for i in range(300)}, "z"),
]


def test_stored_header_bytes_are_those_of_headers_encode(make_topic):
    t = make_topic()
    log = _core.Log.open(os.path.join(t.path, "p0"), _core.OPEN_ONLY, *log_args(t._config))
    cursor = _core.Cursor(log)
    cursor.seek(0)
    try:
        for headers, cid in HEADER_CASES:
            t.send(b"v", key="k", headers=headers, correlation_id=cid)
            assert log.read(cursor, _core.NOWAIT)[3] == encode(headers, cid), (headers, cid)
        c = t.consumer()
        for headers, cid in HEADER_CASES:
            m = c.get(timeout=5)
            assert m.headers == {k: bytes(v) for k, v in (headers or {}).items()}
            assert (m.correlation_id, m.key) == (cid, b"k")
        c.close()
    finally:
        log.close()


@pytest.mark.parametrize("headers, cid, exc", [
    ({"qm.x": b"1"}, None, ValueError), ({1: b"1"}, None, TypeError),
    ({"a": 1}, None, TypeError), ({"a": "text"}, None, TypeError),
    ([("a", b"1")], None, TypeError), (None, 5, TypeError),
    ({"\ud800": b"1"}, None, UnicodeEncodeError), (None, "\ud800", UnicodeEncodeError),
])
def test_bad_headers_raise_as_headers_encode_does_and_append_nothing(make_topic, headers, cid, exc):
    t = make_topic()
    with pytest.raises(exc):
        encode(headers, cid)
    with pytest.raises(exc):
        t.send(b"v", headers=headers, correlation_id=cid)
    assert t.stats()["partitions"][0]["end_offset"] == 0


@pytest.mark.parametrize("partition, exc", [(5, ValueError), (-1, ValueError), ("0", TypeError),
                                            (True, TypeError), (0.0, TypeError)])
def test_bad_partition_raises(make_topic, partition, exc):
    t = make_topic(partitions=2)
    with pytest.raises(exc):
        t.send(b"v", partition=partition)


def test_corrupt_header_block_is_the_headers_corrupt_error_not_the_get_s(make_topic):
    t = make_topic()
    log = t._store._local.logs[0]
    bad = [b"\x01", b"\x01\x00\xff", b"\x01\x00\x01\x00\xff\x00\x00\x00\x00", b"\x00\x00x",
           b"\x01\x00\x01\x00a\x05\x00\x00\x00ab"]
    for block in bad:
        log.append(None, block, b"v", 0)
    t.send(b"fine")
    c = t.consumer()
    for _ in bad:
        m = c.get(timeout=5)   # delivered: the value is fine, the headers are not
        assert bytes(m.data) == b"v"
        with pytest.raises(pyqmem.CorruptError):
            m.headers
    assert bytes(c.get(timeout=5).data) == b"fine"
    c.close()


def test_record_metadata_behaves_as_its_named_tuple(make_topic):
    t = make_topic(partitions=3)
    md = t.send(b"x", partition=1)
    partition, offset, timestamp, mid = md
    assert (partition, offset, mid) == (1, 0, "1-0") and md[3] == md[-1] == "1-0"
    assert md == (1, 0, timestamp, "1-0") and hash(md) == hash(tuple(md)) and len(md) == 4
    assert md._asdict() == {"partition": 1, "offset": 0, "timestamp": timestamp, "id": "1-0"}
    assert md._fields == ("partition", "offset", "timestamp", "id")
    assert pickle.loads(pickle.dumps(md)) == md
    assert md._replace(offset=5).offset == 5
    assert repr(md).startswith("RecordMetadata(partition=1, offset=0, timestamp=")
    assert pyqmem.RecordMetadata(1, 0, timestamp, "1-0") == md


def test_send_many_round_robin_and_other_threads_share_one_sequence(make_topic):
    t = make_topic(partitions=3)
    first = t.send(b"a").partition
    mds = t.send_many([b"b", b"c", b"d"])
    got = []
    th = threading.Thread(target=lambda: got.extend([t.send(b"e"), *t.send_many([b"f"])]))
    th.start()
    th.join()
    parts = [first] + [m.partition for m in mds + got]
    assert parts == [(first + i) % 3 for i in range(6)]
    assert len({m.id for m in mds + got}) == 5


def test_message_fields_made_on_first_use_stay_valid_after_close(make_topic):
    t = make_topic()
    t.send(b"payload", key=b"k", headers={"h": b"1"}, correlation_id="c")
    t.send(b"bare")
    c = t.consumer()
    m, bare = c.get_many(2, timeout=5)
    c.close()
    t.close()
    gc.collect()
    assert bytes(m.data) == b"payload" and m.value == b"payload" and m.data is m.data
    assert (m.key, m.headers, m.correlation_id, m.id) == (b"k", {"h": b"1"}, "c", "0-0")
    assert (bare.key, bare.headers, bare.correlation_id) == (None, {}, None)
    assert isinstance(m, pyqmem.Message) and m.delivery_count == 1  # the protocol
    assert isinstance(m, _core.Message)
    with pytest.raises(TypeError):
        _core.Message()
    with pytest.raises(pyqmem.Closed):
        c.get(timeout=0)
