"""pyqmem.Topic semantics in one process (contract: docs/api.md, Topic,
plus this step's decisions: folder layout, murmur2 partitioning, RecordMetadata.id
"<partition>-<offset>", reserved "qm." headers, group=None only).

Every test gets its own 0700 PYQMEM_DIR under the session's private /dev/shm folder.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import pickle
import re
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction

import pytest

import pyqmem
from helpers import topic_workers
from helpers.topic_fixtures import assert_nothing_more, drain, mp_ctx, partition_for, tree

SEG = 65536  # smallest segment; segment_bytes // 2 == 32768


def _user_headers(msg) -> dict:
    """The headers the user sent (names starting "qm." are the library's own)."""
    return {k: bytes(v) for k, v in (msg.headers or {}).items() if not k.startswith("qm.")}


def _bounds(t, k):
    s = t.stats()["partitions"][k]
    return s["start_offset"], s["end_offset"]


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: tuple = ()


# ----------------------------------------------------------------------------
# producing and consuming
# ----------------------------------------------------------------------------
@pytest.mark.any_backend
def test_send_returns_record_metadata_with_partition_offset_timestamp_and_id(make_topic):
    t = make_topic(partitions=3)
    before = time.time()
    md = t.send(b"hello", partition=2)
    after = time.time()
    assert type(md).__name__ == "RecordMetadata"
    assert (md.partition, md.offset) == (2, 0)
    assert isinstance(md.timestamp, float)
    assert before - 1.0 <= md.timestamp <= after + 1.0, (before, md.timestamp, after)
    assert md.id == "2-0"
    md2 = t.send(b"again", partition=2)
    assert (md2.partition, md2.offset, md2.id) == (2, 1, "2-1")


@pytest.mark.any_backend
def test_round_trip_keeps_value_key_headers_correlation_id_and_metadata(make_topic):
    t = make_topic(partitions=2)
    md = t.send(b"payload", key=b"user-7", headers={"trace": b"abc", "empty": b""}, correlation_id="req-42")
    c = t.consumer(start="earliest")
    m = c.get(timeout=5)
    assert bytes(m.value) == b"payload"
    assert m.key in (b"user-7", bytearray(b"user-7"))
    assert _user_headers(m) == {"trace": b"abc", "empty": b""}
    assert m.correlation_id == "req-42"
    assert (m.partition, m.offset) == (md.partition, md.offset)
    assert m.id == md.id == f"{md.partition}-{md.offset}"
    assert abs(m.timestamp - md.timestamp) < 1e-3
    assert m.delivery_count == 1
    c.close()


@pytest.mark.any_backend
def test_message_without_key_headers_or_correlation_id_has_empty_defaults(make_topic):
    t = make_topic()
    t.send(b"bare")
    c = t.consumer()
    m = c.get(timeout=5)
    assert m.key is None
    assert _user_headers(m) == {}
    assert m.correlation_id is None
    c.close()


@pytest.mark.any_backend
def test_str_key_round_trips_as_its_text_or_utf8_bytes(make_topic):
    t = make_topic()
    t.send(b"v", key="clé")
    c = t.consumer()
    m = c.get(timeout=5)
    assert m.key in ("clé", "clé".encode())
    c.close()


@pytest.mark.any_backend
def test_ack_and_nack_are_no_ops_for_an_independent_subscriber(make_topic):
    t = make_topic()
    for i in range(3):
        t.send(b"%d" % i)
    c = t.consumer()
    m0 = c.get(timeout=5)
    assert m0.ack() is None
    m1 = c.get(timeout=5)
    m1.nack()
    m1.nack(delay=0.0)
    m2 = c.get(timeout=5)
    assert [m0.offset, m1.offset, m2.offset] == [0, 1, 2]
    assert all(m.delivery_count == 1 for m in (m0, m1, m2))
    assert_nothing_more(c)  # nack did not redeliver
    c.close()


@pytest.mark.any_backend
def test_offsets_start_at_zero_and_increase_by_one_per_partition(make_topic):
    t = make_topic(partitions=3)
    order = [0, 1, 1, 2, 0, 0, 2, 1, 0, 2, 2, 2]
    got = {0: [], 1: [], 2: []}
    for i, p in enumerate(order):
        got[p].append(t.send(b"x%d" % i, partition=p).offset)
    for p in range(3):
        assert got[p] == list(range(order.count(p))), (p, got[p])
        assert _bounds(t, p) == (0, order.count(p))


@pytest.mark.any_backend
def test_send_many_assigns_consecutive_offsets_in_order(make_topic):
    t = make_topic(partitions=1)
    t.send(b"first")
    mds = t.send_many([b"a", b"b", b"c", b""], key=b"k")
    assert [md.offset for md in mds] == [1, 2, 3, 4]
    assert {md.partition for md in mds} == {0}
    c = t.consumer()
    assert [bytes(m.value) for m in drain(c, 5)] == [b"first", b"a", b"b", b"c", b""]
    c.close()


@pytest.mark.any_backend
def test_send_many_with_a_key_puts_every_value_on_the_key_partition(make_topic):
    t = make_topic(partitions=5)
    mds = t.send_many([b"%d" % i for i in range(10)], key=b"same-key")
    assert {md.partition for md in mds} == {partition_for(b"same-key", 5)}
    assert [md.offset for md in mds] == list(range(10))


@pytest.mark.any_backend
@pytest.mark.parametrize("headers", [{"qm.x": b"1"}, {"qm.correlation_id": b"c"}, {"ok": b"1", "qm.": b""}])
def test_reserved_qm_header_names_are_value_error_and_nothing_is_appended(make_topic, headers):
    t = make_topic()
    with pytest.raises(ValueError):
        t.send(b"v", headers=headers)
    assert _bounds(t, 0) == (0, 0)


@pytest.mark.any_backend
@pytest.mark.parametrize("headers", [{1: b"x"}, {"name": "text"}, {"name": 5}, [("name", b"x")]])
def test_malformed_headers_are_rejected_and_nothing_is_appended(make_topic, headers):
    t = make_topic()
    with pytest.raises((TypeError, ValueError)):
        t.send(b"v", headers=headers)
    assert _bounds(t, 0) == (0, 0)


@pytest.mark.any_backend
def test_two_independent_subscribers_each_receive_every_record(make_topic):
    t = make_topic(partitions=2)
    for i in range(20):
        t.send(b"%d" % i)
    c1, c2 = t.consumer(), t.consumer()
    s1 = sorted((m.partition, m.offset, bytes(m.value)) for m in drain(c1, 20))
    s2 = sorted((m.partition, m.offset, bytes(m.value)) for m in drain(c2, 20))
    assert s1 == s2 and len(set(s1)) == 20
    assert sorted(v for _, _, v in s1) == sorted(b"%d" % i for i in range(20))
    assert_nothing_more(c1)
    assert_nothing_more(c2)
    c1.close()
    c2.close()


@pytest.mark.any_backend
def test_each_partition_is_delivered_in_offset_order(make_topic):
    t = make_topic(partitions=3)
    for i in range(60):
        t.send(b"%d" % i)
    c = t.consumer()
    msgs = drain(c, 60)
    for p in range(3):
        offs = [m.offset for m in msgs if m.partition == p]
        assert offs == list(range(len(offs))), (p, offs)
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_iteration_blocks_for_and_yields_records_in_offset_order(make_topic):
    t = make_topic()
    for i in range(5):
        t.send(b"%d" % i)
    c = t.consumer()
    seen = []
    for m in c:
        seen.append(bytes(m.value))
        if len(seen) == 5:
            break
    assert seen == [b"0", b"1", b"2", b"3", b"4"]
    c.close()


@pytest.mark.any_backend
def test_get_on_a_caught_up_consumer_raises_empty_which_is_also_queue_empty(make_topic):
    import queue as stdqueue

    t = make_topic()
    c = t.consumer()
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.05)
    with pytest.raises(stdqueue.Empty):
        c.get(timeout=0)
    with pytest.raises(pyqmem.Empty):
        c.get_many(10, timeout=0.05)
    c.close()


@pytest.mark.any_backend
def test_get_many_returns_at_least_one_and_at_most_max_messages(make_topic):
    t = make_topic()
    for i in range(7):
        t.send(b"%d" % i)
    c = t.consumer()
    got = []
    for _ in range(20):  # bounded
        batch = c.get_many(3, timeout=2)
        assert 1 <= len(batch) <= 3
        got.extend(bytes(m.value) for m in batch)
        if len(got) >= 7:
            break
    assert got == [b"%d" % i for i in range(7)]
    c.close()


@pytest.mark.any_backend
def test_get_returns_a_record_sent_by_another_thread_while_blocked(make_topic):
    import threading

    t = make_topic()
    c = t.consumer()
    th = threading.Timer(0.1, lambda: t.send(b"late"))
    th.start()
    try:
        m = c.get(timeout=10)
    finally:
        th.join(5)
    assert bytes(m.value) == b"late"
    c.close()


# ----------------------------------------------------------------------------
# where a subscriber starts
# ----------------------------------------------------------------------------
def _fill(t, per_partition):
    for p in range(t.stats()["partitions"].__len__()):
        for i in range(per_partition):
            t.send(b"p%d-%d" % (p, i), partition=p)


@pytest.mark.any_backend
def test_start_earliest_replays_every_stored_record(make_topic):
    t = make_topic(partitions=2)
    _fill(t, 4)
    c = t.consumer(start="earliest")
    got = sorted((m.partition, m.offset, bytes(m.value)) for m in drain(c, 8))
    assert got == [(p, i, b"p%d-%d" % (p, i)) for p in range(2) for i in range(4)]
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_default_start_is_earliest(make_topic):
    t = make_topic()
    t.send(b"a")
    c = t.consumer()
    assert bytes(c.get(timeout=5).value) == b"a"
    c.close()


@pytest.mark.any_backend
def test_start_int_offset_starts_every_partition_there(make_topic):
    t = make_topic(partitions=3)
    _fill(t, 5)
    c = t.consumer(start=3)
    got = sorted((m.partition, m.offset) for m in drain(c, 6))
    assert got == [(p, o) for p in range(3) for o in (3, 4)]
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_start_dict_sets_each_partitions_first_offset(make_topic):
    t = make_topic(partitions=3)
    _fill(t, 5)
    c = t.consumer(start={0: 4, 1: 0, 2: 5})
    got = sorted((m.partition, m.offset) for m in drain(c, 6))
    assert got == [(0, 4), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    assert_nothing_more(c)
    t.send(b"new", partition=2)
    m = c.get(timeout=5)
    assert (m.partition, m.offset, bytes(m.value)) == (2, 5, b"new")
    c.close()


@pytest.mark.any_backend
def test_start_latest_sees_only_records_sent_after_the_consumer_was_created(make_topic):
    t = make_topic(partitions=2)
    _fill(t, 3)
    c = t.consumer(start="latest")
    t.send(b"new-0", partition=0)
    t.send(b"new-1", partition=1)
    got = sorted((m.partition, m.offset, bytes(m.value)) for m in drain(c, 2))
    assert got == [(0, 3, b"new-0"), (1, 3, b"new-1")]
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_start_latest_on_a_caught_up_topic_raises_empty(make_topic):
    t = make_topic()
    _fill(t, 3)
    c = t.consumer(start="latest")
    assert_nothing_more(c)
    c.close()


def _three_phases(t, gap=0.03):
    """Send 'old' records, note the time, send 'new' ones; returns (cut, new_mds)."""
    for i in range(4):
        t.send(b"old-%d" % i)
    time.sleep(gap)
    cut = time.time()
    time.sleep(gap)
    new = [t.send(b"new-%d" % i) for i in range(5)]
    return cut, new


@pytest.mark.any_backend
def test_start_timestamp_dict_replays_records_sent_after_that_time(make_topic):
    t = make_topic(partitions=2)
    cut, new = _three_phases(t)
    assert all(md.timestamp >= cut for md in new)
    c = t.consumer(start={"timestamp": cut})
    got = sorted(bytes(m.value) for m in drain(c, 5))
    assert got == sorted(b"new-%d" % i for i in range(5))
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_start_datetime_replays_records_sent_after_that_time(make_topic):
    t = make_topic(partitions=2)
    cut, _ = _three_phases(t)
    when = datetime.datetime.fromtimestamp(cut, tz=datetime.timezone.utc)
    c = t.consumer(start=when)
    got = sorted(bytes(m.value) for m in drain(c, 5))
    assert got == sorted(b"new-%d" % i for i in range(5))
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_start_timestamp_before_everything_replays_all_and_after_everything_waits(make_topic):
    t = make_topic()
    t.send(b"old")
    c = t.consumer(start={"timestamp": time.time() - 3600})
    assert bytes(c.get(timeout=5).value) == b"old"
    c.close()
    c2 = t.consumer(start={"timestamp": time.time() + 3600})
    assert_nothing_more(c2)
    c2.close()


@pytest.mark.any_backend
@pytest.mark.parametrize("start", ["middle", "", -1, {0: -1}, {"timestamp": "yesterday"}, {5: 0}, 2.5, [0]])
def test_invalid_start_is_rejected(make_topic, start):
    t = make_topic(partitions=2)
    t.send(b"x")
    with pytest.raises((ValueError, TypeError)):
        t.consumer(start=start)


@pytest.mark.any_backend
@pytest.mark.parametrize("timeout, exc", [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError)])
def test_bad_get_timeout_is_rejected_and_loses_nothing(make_topic, timeout, exc):
    t = make_topic()
    t.send(b"resident")
    c = t.consumer()
    with pytest.raises(exc):
        c.get(timeout=timeout)
    with pytest.raises(exc):
        c.get_many(3, timeout=timeout)
    assert bytes(c.get(timeout=5).value) == b"resident"
    c.close()


@pytest.mark.any_backend
def test_seek_moves_one_partition_back_and_forward(make_topic):
    t = make_topic(partitions=1)
    for i in range(10):
        t.send(b"%d" % i)
    c = t.consumer()
    assert [m.offset for m in drain(c, 6)] == [0, 1, 2, 3, 4, 5]
    c.seek(0, 2)
    assert [bytes(m.value) for m in drain(c, 3)] == [b"2", b"3", b"4"]
    c.seek(0, 8)
    assert [m.offset for m in drain(c, 2)] == [8, 9]
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_seek_only_affects_the_named_partition(make_topic):
    t = make_topic(partitions=2)
    _fill(t, 4)
    c = t.consumer()
    drain(c, 8)
    c.seek(1, 1)
    got = [(m.partition, m.offset) for m in drain(c, 3)]
    assert got == [(1, 1), (1, 2), (1, 3)]
    assert_nothing_more(c)
    c.close()


@pytest.mark.any_backend
def test_seek_to_a_missing_partition_is_value_error(make_topic):
    t = make_topic(partitions=2)
    c = t.consumer()
    with pytest.raises(ValueError):
        c.seek(2, 0)
    with pytest.raises(ValueError):
        c.seek(0, -1)
    c.close()


@pytest.mark.any_backend
def test_lag_counts_unread_records_per_partition(make_topic):
    t = make_topic(partitions=3)
    c = t.consumer()
    assert c.lag() == {0: 0, 1: 0, 2: 0}
    for i in range(5):
        t.send(b"a", partition=0)
    for i in range(2):
        t.send(b"b", partition=2)
    assert c.lag() == {0: 5, 1: 0, 2: 2}
    c.seek(0, 3)
    assert c.lag() == {0: 2, 1: 0, 2: 2}
    drain(c, 4)
    assert c.lag() == {0: 0, 1: 0, 2: 0}
    c2 = t.consumer(start="latest")
    assert c2.lag() == {0: 0, 1: 0, 2: 0}
    c2.close()
    c.close()


@pytest.mark.any_backend
def test_skipped_is_zero_per_partition_without_retention(make_topic):
    t = make_topic(partitions=2)
    _fill(t, 3)
    c = t.consumer()
    drain(c, 6)
    assert c.skipped() == {0: 0, 1: 0}
    c.close()


# ----------------------------------------------------------------------------
# sizes and serializers
# ----------------------------------------------------------------------------
@pytest.mark.any_backend
def test_empty_value_round_trips_with_empty_data(make_topic):
    t = make_topic()
    t.send(b"")
    t.send(bytearray())
    c = t.consumer()
    for m in drain(c, 2):
        assert bytes(m.value) == b""
        assert m.data.nbytes == 0
    c.close()


@pytest.mark.timeout(120)
@pytest.mark.any_backend
def test_value_of_half_the_default_segment_round_trips_and_one_more_byte_is_too_large(make_topic):
    t = make_topic()  # segment_bytes default: 64 MiB
    big = os.urandom(1024) * (32 * 1024)  # 32 MiB
    assert len(big) == 32 * 2**20
    md = t.send(big)
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send(big + b"x")
    md2 = t.send(big[:1000])
    assert md2.offset == md.offset + 1
    c = t.consumer()
    m = c.get(timeout=30)
    assert m.data.nbytes == len(big)
    assert m.data == big
    del m
    m2 = c.get(timeout=30)
    assert bytes(m2.value) == big[:1000]
    del m2
    c.close()


@pytest.mark.any_backend
def test_value_of_half_a_segment_fits_even_with_key_and_headers(make_topic):
    t = make_topic(segment_bytes=SEG)
    v = os.urandom(SEG // 2)
    md = t.send(v, key=b"some-key", headers={"h": b"x" * 100}, correlation_id="cid")
    c = t.consumer()
    m = c.get(timeout=5)
    assert (m.offset, bytes(m.value), m.correlation_id) == (md.offset, v, "cid")
    c.close()


@pytest.mark.any_backend
def test_value_one_byte_over_half_a_segment_is_message_too_large_and_appends_nothing(make_topic):
    t = make_topic(segment_bytes=SEG)
    assert issubclass(pyqmem.MessageTooLarge, ValueError)
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send(b"\0" * (SEG // 2 + 1))
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send_many([b"ok", b"\0" * (SEG // 2 + 1)])
    assert t.stats()["partitions"][0]["end_offset"] in (0, 1)  # at most the batch's first
    md = t.send(b"after")
    c = t.consumer(start=md.offset)
    assert bytes(c.get(timeout=5).value) == b"after"
    c.close()


def test_records_fill_many_segments_and_all_read_back(make_topic):
    t = make_topic(segment_bytes=SEG)
    vals = [os.urandom(i * 2711 % 20000) for i in range(60)]  # ~600 KB: ~10 rolls
    for v in vals:
        t.send(v)
    st = t.stats()["partitions"][0]
    assert st["segments"] >= 5 and st["end_offset"] == 60
    c = t.consumer()
    assert [bytes(m.value) for m in drain(c, 60)] == vals
    c.close()


@pytest.mark.any_backend
@pytest.mark.parametrize("serializer", [None, "raw"])
def test_raw_serializer_rejects_str_and_other_non_bytes_with_type_error(make_topic, serializer):
    t = make_topic(serializer=serializer)
    for bad in ("text", 5, None, {"a": 1}):
        with pytest.raises(TypeError):
            t.send(bad)
    assert t.stats()["partitions"][0]["end_offset"] == 0
    t.send(b"b")
    t.send(bytearray(b"ba"))
    t.send(memoryview(b"mv"))
    c = t.consumer()
    assert [bytes(m.value) for m in drain(c, 3)] == [b"b", b"ba", b"mv"]
    c.close()


@pytest.mark.any_backend
def test_pickle_serializer_round_trips_python_objects(make_topic):
    t = make_topic(serializer="pickle")
    objs = [
        {"a": [1, 2.5, None], "b": ("x", b"y")},
        "text",
        Fraction(1, 3),
        Point(1, 2.0, ("t",)),
        b"raw bytes",
        b"z" * 100_000,
        bytearray(b"ba"),
        None,
        [],
    ]
    for o in objs:
        t.send(o)
    c = t.consumer()
    got = [m.value for m in drain(c, len(objs))]
    assert got == objs
    assert type(got[6]) is bytearray
    c.close()


@pytest.mark.any_backend
def test_custom_serializer_object_is_used_both_ways(make_topic):
    class Upper:
        def dumps(self, obj):
            return obj.upper().encode()

        def loads(self, buf):
            return "<" + bytes(buf).decode() + ">"

    t = make_topic(serializer=Upper())
    t.send("hello")
    c = t.consumer()
    m = c.get(timeout=5)
    assert m.value == "<HELLO>"
    assert bytes(m.data) == b"HELLO"
    c.close()


@pytest.mark.any_backend
def test_message_data_is_a_read_only_memoryview_equal_to_the_raw_value(make_topic):
    t = make_topic()
    payload = bytes(range(256)) * 40
    t.send(payload)
    c = t.consumer()
    m = c.get(timeout=5)
    assert isinstance(m.data, memoryview)
    assert m.data.readonly
    assert m.data.nbytes == len(payload)
    assert m.data == payload and bytes(m.value) == payload
    with pytest.raises(TypeError):
        m.data[0] = 1
    c.close()


@pytest.mark.any_backend
def test_message_data_stays_valid_while_the_message_lives_after_more_reads(make_topic):
    t = make_topic(segment_bytes=SEG)
    first = os.urandom(5000)
    t.send(first)
    for i in range(40):  # several rolls
        t.send(os.urandom(5000))
    c = t.consumer()
    m0 = c.get(timeout=5)
    rest = drain(c, 40)
    assert bytes(m0.data) == first
    del rest
    c.close()


# ----------------------------------------------------------------------------
# partitioning
# ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, expected",
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka_test_vectors(data, expected):
    from pyqmem.partitioning import murmur2

    assert murmur2(data) == expected


def test_murmur2_is_signed_32_bit_for_many_inputs():
    from pyqmem.partitioning import murmur2

    for n in range(0, 300, 7):
        h = murmur2(bytes(range(n % 256)) * (1 + n // 256))
        assert isinstance(h, int) and -(2**31) <= h < 2**31


@pytest.mark.any_backend
def test_key_partition_is_murmur2_positive_modulo_partitions(make_topic):
    t = make_topic(partitions=7)
    keys = [b"21", b"foobar", "abc", "clé", b"", b"\xff\x00", "user-%d" % 99] + [b"k%d" % i for i in range(50)]
    for k in keys:
        md = t.send(b"v", key=k)
        assert md.partition == partition_for(k, 7), k
    # a str key hashes as its UTF-8 bytes
    assert t.send(b"v", key="clé").partition == t.send(b"v", key="clé".encode()).partition


@pytest.mark.any_backend
def test_same_key_goes_to_the_same_partition_from_two_topic_objects(make_topic, tname):
    a = make_topic(partitions=8)
    b = make_topic(partitions=8)
    for i in range(40):
        k = b"key-%d" % i
        pa = a.send(b"a", key=k).partition
        pb = b.send(b"b", key=k).partition
        assert pa == pb == partition_for(k, 8)


def _partitions_in_fresh_process(topic_dir, name, keys, hashseed):
    code = (
        "import sys, json, pyqmem\n"
        "t = pyqmem.Topic(sys.argv[1], dir=sys.argv[2], partitions=8, retention_bytes=None)\n"
        "print(json.dumps([t.send(b'x', key=k).partition for k in sys.argv[3:]]))\n"
        "t.close()\n"
    )
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
    out = subprocess.run(
        [sys.executable, "-c", code, name, topic_dir, *keys],
        env=env, capture_output=True, text=True, timeout=60, cwd=topic_dir,
    )
    assert out.returncode == 0, out.stderr
    import json

    return json.loads(out.stdout)


@pytest.mark.timeout(120)
def test_same_key_goes_to_the_same_partition_across_process_restarts(make_topic, topic_dir, tname):
    keys = ["alpha", "beta", "gamma", "user-1", "user-2", "order-123", "z", "delta-epsilon"]
    first = _partitions_in_fresh_process(topic_dir, tname, keys, 1)
    second = _partitions_in_fresh_process(topic_dir, tname, keys, 2)
    t = make_topic(partitions=8)
    here = [t.send(b"p", key=k).partition for k in keys]
    assert first == second == here == [partition_for(k, 8) for k in keys]
    assert len(set(here)) > 1  # the keys do spread


@pytest.mark.any_backend
def test_round_robin_without_key_spreads_evenly_over_all_partitions(make_topic):
    t = make_topic(partitions=4)
    parts = [t.send(b"x").partition for _ in range(40)]
    assert Counter(parts) == {0: 10, 1: 10, 2: 10, 3: 10}
    for i in range(0, 40, 4):  # every run of 4 consecutive sends visits all partitions
        assert sorted(parts[i:i + 4]) == [0, 1, 2, 3], parts


@pytest.mark.any_backend
@pytest.mark.parametrize("bad", [4, -1, 100])
def test_explicit_partition_out_of_range_is_value_error(make_topic, bad):
    t = make_topic(partitions=4)
    with pytest.raises(ValueError):
        t.send(b"x", partition=bad)
    assert all(t.stats()["partitions"][p]["end_offset"] == 0 for p in range(4))


@pytest.mark.any_backend
def test_explicit_partition_overrides_the_key(make_topic):
    t = make_topic(partitions=4)
    k = b"foobar"
    other = (partition_for(k, 4) + 1) % 4
    assert t.send(b"x", key=k, partition=other).partition == other


@pytest.mark.any_backend
@pytest.mark.parametrize("bad", ["1", 1.0, b"1"])
def test_partition_of_wrong_type_is_rejected(make_topic, bad):
    t = make_topic(partitions=4)
    with pytest.raises((TypeError, ValueError)):
        t.send(b"x", partition=bad)


# ----------------------------------------------------------------------------
# opening, layout, persistence
# ----------------------------------------------------------------------------
def test_topic_lives_in_dir_name_with_partition_folders_segments_and_metadata(make_topic, topic_dir, tname):
    t = make_topic(partitions=3, segment_bytes=SEG)
    for p in range(3):
        t.send(b"x", partition=p)
    root = os.path.join(topic_dir, tname)
    assert os.path.isdir(root)
    assert os.path.isfile(os.path.join(root, "topic.json"))
    for p in range(3):
        pdir = os.path.join(root, f"p{p}")
        files = os.listdir(pdir)
        assert "control" in files, files
        logs = [f for f in files if f.endswith(".log")]
        assert logs and all(re.fullmatch(r"\d{20}\.log", f) for f in logs), files
        assert "00000000000000000000.log" in logs
        assert os.path.getsize(os.path.join(pdir, "00000000000000000000.log")) == SEG
    assert not os.path.exists(os.path.join(root, "p3"))
    for path in [root] + [os.path.join(root, f"p{p}") for p in range(3)]:
        assert os.stat(path).st_mode & 0o077 == 0, oct(os.stat(path).st_mode)


def test_explicit_dir_argument_wins_over_pyqmem_dir(make_topic, topic_dir, tname, shm_dir):
    import tempfile

    other = tempfile.mkdtemp(prefix="other-", dir=shm_dir)
    try:
        t = make_topic(dir=other)
        t.send(b"x")
        assert os.path.isdir(os.path.join(other, tname))
        assert not os.path.exists(os.path.join(topic_dir, tname))
        t.close()
    finally:
        import shutil

        shutil.rmtree(other, ignore_errors=True)


def test_default_dir_without_pyqmem_dir_is_per_user_folder_under_dev_shm(monkeypatch, tname, tracked):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    monkeypatch.delenv("PYQMEM_DIR", raising=False)
    base = f"/dev/shm/pyqmem-{os.getuid()}"
    existed = os.path.exists(base)
    root = os.path.join(base, tname)
    try:
        t = tracked(pyqmem.Topic(tname, partitions=1, retention_bytes=None))
        t.send(b"x")
        assert os.path.isdir(os.path.join(root, "p0"))
        assert os.stat(base).st_mode & 0o077 == 0
        t.close()
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        if not existed:
            shutil.rmtree(base, ignore_errors=True)


def test_records_persist_after_every_handle_is_closed(make_topic, tname):
    t = make_topic(partitions=2)
    mds = [t.send(b"v%d" % i, key=b"k%d" % i, headers={"i": b"%d" % i}) for i in range(10)]
    t.close()
    t2 = make_topic(partitions=2, create=False)
    c = t2.consumer()
    got = {(m.partition, m.offset): (bytes(m.value), m.key, _user_headers(m)) for m in drain(c, 10)}
    for i, md in enumerate(mds):
        assert got[(md.partition, md.offset)] == (b"v%d" % i, b"k%d" % i, {"i": b"%d" % i})
    assert t2.send(b"more", partition=mds[-1].partition).offset == 1 + max(
        md.offset for md in mds if md.partition == mds[-1].partition
    )
    c.close()


def test_stats_reports_per_partition_offsets_bytes_and_segments(make_topic):
    t = make_topic(partitions=2, segment_bytes=SEG)
    for i in range(30):
        t.send(os.urandom(4000), partition=0)
    st = t.stats()
    assert len(st["partitions"]) == 2
    p0, p1 = st["partitions"][0], st["partitions"][1]
    assert (p0["start_offset"], p0["end_offset"]) == (0, 30)
    assert (p1["start_offset"], p1["end_offset"]) == (0, 0)
    assert p0["segments"] >= 2 and p1["segments"] == 1
    # bytes: on disk (preallocated segments) or used -- either way bounded so
    assert 30 * 4000 <= p0["bytes"] <= p0["segments"] * SEG
    assert 0 <= p1["bytes"] <= SEG


def test_retain_deletes_whole_old_segments_and_moves_start_offset(make_topic, topic_dir, tname):
    t = make_topic(segment_bytes=SEG, retention_bytes=2 * SEG)
    c = t.consumer()  # positioned at 0 before anything is deleted
    for i in range(200):  # ~ 200 * 2 KiB = 6 segments
        t.send(b"%06d" % i + b"." * 2000)
    t.retain()
    st = t.stats()["partitions"][0]
    assert st["end_offset"] == 200
    assert 0 < st["start_offset"] < 200
    assert st["segments"] <= 2 and st["bytes"] <= 2 * SEG
    pdir = os.path.join(topic_dir, tname, "p0")
    logs = sorted(f for f in os.listdir(pdir) if f.endswith(".log"))
    assert len(logs) == st["segments"]
    assert int(logs[0][:20]) == st["start_offset"]
    # an earliest subscriber starts at the new start; the old one skips what it lost
    c2 = t.consumer(start="earliest")
    m = c2.get(timeout=5)
    assert m.offset == st["start_offset"] and bytes(m.value)[:6] == b"%06d" % m.offset
    m1 = c.get(timeout=5)
    assert m1.offset == st["start_offset"]
    assert c.skipped() == {0: st["start_offset"]}
    assert c2.skipped() == {0: 0}
    c2.close()
    c.close()


def test_start_offset_before_retention_start_begins_at_the_log_start(make_topic):
    t = make_topic(segment_bytes=SEG, retention_bytes=2 * SEG)
    for i in range(200):
        t.send(b"%06d" % i + b"." * 2000)
    t.retain()
    start = t.stats()["partitions"][0]["start_offset"]
    assert start > 0
    c = t.consumer(start=0)
    assert c.get(timeout=5).offset == start
    c.close()


def test_partitions_grow_on_reopen_and_old_records_stay(make_topic, topic_dir, tname):
    t = make_topic(partitions=2)
    t.send(b"a", partition=0)
    t.send(b"b", partition=1)
    t.close()
    t4 = make_topic(partitions=4)
    assert len(t4.stats()["partitions"]) == 4
    assert os.path.isdir(os.path.join(topic_dir, tname, "p3"))
    assert t4.send(b"d", partition=3).offset == 0
    c = t4.consumer()
    got = sorted((m.partition, m.offset, bytes(m.value)) for m in drain(c, 3))
    assert got == [(0, 0, b"a"), (1, 0, b"b"), (3, 0, b"d")]
    c.close()
    # a handle opened with the old count sees the grown topic too
    t2 = make_topic(partitions=4, create=False)
    assert len(t2.stats()["partitions"]) == 4


@pytest.mark.any_backend
def test_partitions_grow_while_another_handle_is_open(make_topic):
    old = make_topic(partitions=2)
    new = make_topic(partitions=3)
    assert new.send(b"x", partition=2).offset == 0
    # the older handle is not required to see p2 yet, but must keep working on p0/p1
    assert old.send(b"y", partition=1).offset == 0


def test_shrinking_partitions_on_reopen_is_value_error_and_changes_nothing(make_topic, topic_dir, tname):
    t = make_topic(partitions=4)
    t.send(b"x", partition=3)
    before = tree(os.path.join(topic_dir, tname))
    with pytest.raises(ValueError):
        make_topic(partitions=3)
    with pytest.raises(ValueError):
        make_topic(partitions=2, create=False)
    assert tree(os.path.join(topic_dir, tname)) == before
    assert len(t.stats()["partitions"]) == 4


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", ".hidden", "-dash", "_under", "a/b", "a\\b", "a b", "x" * 129, "é", "a\0b", "a:b", "*"],
)
def test_invalid_topic_names_are_value_error_before_any_file_exists(topic_dir, name):
    with pytest.raises(ValueError):
        pyqmem.Topic(name, retention_bytes=None)
    assert os.listdir(topic_dir) == []


@pytest.mark.parametrize("name", [None, 5, b"bytes-name"])
def test_non_str_topic_names_are_type_error(topic_dir, name):
    with pytest.raises(TypeError):
        pyqmem.Topic(name, retention_bytes=None)
    assert os.listdir(topic_dir) == []


@pytest.mark.any_backend
def test_longest_valid_name_is_accepted(make_topic):
    t = make_topic(name="a" + "b" * 127)
    assert t.send(b"x").offset == 0


@pytest.mark.parametrize(
    "kw, exc",
    [
        ({"partitions": 0}, ValueError),
        ({"partitions": -1}, ValueError),
        ({"partitions": "2"}, TypeError),
        ({"partitions": 1.5}, TypeError),
        ({"segment_bytes": 0}, ValueError),
        ({"segment_bytes": 1000}, ValueError),
        ({"segment_bytes": -65536}, ValueError),
        ({"segment_bytes": "64k"}, TypeError),
        ({"retention_bytes": -1}, ValueError),
        ({"retention_bytes": "1"}, TypeError),
        ({"retention_seconds": -5}, ValueError),
        ({"retention_seconds": "1d"}, TypeError),
        ({"durability": "never"}, ValueError),
        ({"durability": 1}, (TypeError, ValueError)),
        ({"serializer": "json-ish"}, ValueError),
        ({"serializer": 42}, TypeError),
        ({"dir": 5}, TypeError),
        ({"create": "yes"}, (TypeError, ValueError)),
    ],
    ids=lambda v: repr(v),
)
def test_invalid_arguments_are_rejected_before_any_file_exists(topic_dir, tname, kw, exc):
    with pytest.raises(exc):
        pyqmem.Topic(tname, **kw)
    assert os.listdir(topic_dir) == []


@pytest.mark.any_backend
def test_unknown_keyword_is_type_error(topic_dir, tname):
    with pytest.raises(TypeError):
        pyqmem.Topic(tname, partition=2, retention_bytes=None)
    assert os.listdir(topic_dir) == []


@pytest.mark.any_backend
def test_create_true_on_an_existing_topic_is_already_exists(make_topic, topic_dir, tname):
    make_topic(partitions=2, create=True)
    with pytest.raises(pyqmem.AlreadyExists) as ei:
        make_topic(partitions=2, create=True)
    assert isinstance(ei.value, FileExistsError)


def test_create_false_on_a_missing_topic_is_not_found_and_creates_nothing(topic_dir, tname):
    with pytest.raises(pyqmem.NotFound) as ei:
        pyqmem.Topic(tname, create=False)
    assert isinstance(ei.value, FileNotFoundError)
    assert os.listdir(topic_dir) == []


@pytest.mark.any_backend
def test_create_false_attaches_to_an_existing_topic(make_topic):
    t = make_topic(partitions=3, create=True)
    t.send(b"x", partition=1)
    t2 = make_topic(partitions=3, create=False)
    c = t2.consumer()
    m = c.get(timeout=5)
    assert (m.partition, bytes(m.value)) == (1, b"x")
    c.close()


@pytest.mark.any_backend
def test_a_group_argument_makes_a_group_consumer(make_topic):
    t = make_topic()
    c = t.consumer(group="x")
    assert isinstance(c, pyqmem.GroupConsumer) and not isinstance(c, pyqmem.Consumer)
    c.close()


# ----------------------------------------------------------------------------
# closing and pickling
# ----------------------------------------------------------------------------
@pytest.mark.any_backend
def test_close_is_idempotent_and_every_later_operation_raises_closed(make_topic):
    t = make_topic()
    t.send(b"x")
    t.close()
    t.close()
    assert issubclass(pyqmem.Closed, ValueError)
    for op in (
        lambda: t.send(b"y"),
        lambda: t.send_many([b"y"]),
        lambda: t.consumer(),
        lambda: t.stats(),
        lambda: t.retain(),
    ):
        with pytest.raises(pyqmem.Closed):
            op()


@pytest.mark.any_backend
def test_consumer_close_is_idempotent_and_later_calls_raise_closed(make_topic):
    t = make_topic()
    t.send(b"x")
    c = t.consumer()
    c.close()
    c.close()
    for op in (lambda: c.get(timeout=0.1), lambda: c.get_many(5, timeout=0.1), lambda: c.lag(),
               lambda: c.seek(0, 0), lambda: next(iter(c))):
        with pytest.raises(pyqmem.Closed):
            op()
    assert t.send(b"topic still works").offset == 1


def test_context_managers_close_topic_and_consumer(topic_dir, tname):
    with pyqmem.Topic(tname, retention_bytes=None) as t:
        t.send(b"x")
        with t.consumer() as c:
            assert bytes(c.get(timeout=5).value) == b"x"
        with pytest.raises(pyqmem.Closed):
            c.get(timeout=0.1)
    with pytest.raises(pyqmem.Closed):
        t.send(b"y")


@pytest.mark.any_backend
def test_closing_one_handle_leaves_other_handles_working(make_topic):
    a = make_topic()
    b = make_topic()
    a.send(b"1")
    a.close()
    b.send(b"2")
    c = b.consumer()
    assert [bytes(m.value) for m in drain(c, 2)] == [b"1", b"2"]
    c.close()


@pytest.mark.any_backend
def test_pickling_a_topic_in_process_reattaches_to_the_same_topic(make_topic, tracked):
    t = make_topic(partitions=3, serializer="pickle")
    t.send({"n": 1}, partition=2)
    t2 = tracked(pickle.loads(pickle.dumps(t)))
    assert len(t2.stats()["partitions"]) == 3
    c = t2.consumer()
    m = c.get(timeout=5)
    assert (m.partition, m.value) == (2, {"n": 1})
    c.close()
    assert len(pickle.dumps(t)) < 2000


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_pickling_a_topic_into_a_child_process_reattaches(make_topic, tracked, shm_dir, method):
    import shutil
    import tempfile

    # an explicit dir that is NOT $PYQMEM_DIR: the handle must carry it
    own_dir = tempfile.mkdtemp(prefix="pickled-", dir=shm_dir)
    try:
        ctx = mp_ctx(method)
        t = make_topic(dir=own_dir, partitions=2)
        sent = [b"parent-%d" % i for i in range(5)]
        for v in sent:
            t.send(v)
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=topic_workers.use_pickled_topic, args=(t, len(sent), w), daemon=True)
        p.start()
        w.close()
        try:
            assert r.poll(60), "child reported nothing"
            status = r.recv()
        finally:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
        assert status[0] == "ok", status
        values, part, off = status[2]
        assert sorted(values) == sorted(sent)
        assert p.exitcode == 0
        c = t.consumer(start={0: off, 1: t.stats()["partitions"][1]["end_offset"]})
        m = c.get(timeout=5)
        assert (m.partition, m.offset, bytes(m.value)) == (part, off, b"child-%d" % status[1])
        c.close()
        t.close()
    finally:
        shutil.rmtree(own_dir, ignore_errors=True)


# ----------------------------------------------------------------------------
# threads, handles and resources
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.any_backend
def test_concurrent_sends_from_threads_get_distinct_dense_offsets(make_topic):
    import threading

    t = make_topic(partitions=2)
    n_threads, per_thread = 8, 300
    results = [None] * n_threads
    errors = []

    def worker(i):
        try:
            results[i] = [t.send(b"%d-%d" % (i, j), key=b"t%d" % i) for j in range(per_thread)]
        except BaseException as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == [] and not any(th.is_alive() for th in threads), errors[:3]
    by_part = {0: [], 1: []}
    for i, mds in enumerate(results):
        for j, md in enumerate(mds):
            by_part[md.partition].append((md.offset, i, j))
    for p, items in by_part.items():
        items.sort()
        assert [o for o, _, _ in items] == list(range(len(items))), f"p{p}: offsets not dense/unique"
        last = {}
        for _, i, j in items:  # each thread's records keep their order in the partition
            assert j > last.get(i, -1)
            last[i] = j
    c = t.consumer()
    got = drain(c, n_threads * per_thread, timeout=60)
    assert sorted(bytes(m.value) for m in got) == sorted(
        b"%d-%d" % (i, j) for i in range(n_threads) for j in range(per_thread))
    del got
    c.close()


@pytest.mark.timeout(120)
def test_many_short_lived_threads_can_send_without_exhausting_resources(make_topic):
    import threading

    t = make_topic(partitions=1)
    errors = []

    def once(i):
        try:
            t.send(b"%d" % i)
        except BaseException as e:  # reported below
            errors.append(repr(e))

    n = 1300  # more than the 1024 member slots of a partition
    for i in range(n):
        th = threading.Thread(target=once, args=(i,))
        th.start()
        th.join(30)
        if errors:
            break
    assert errors == [], f"thread {len(errors) and i}: {errors[:2]}"
    assert t.stats()["partitions"][0]["end_offset"] == n


@pytest.mark.timeout(120)
def test_opening_and_closing_many_topics_and_consumers_does_not_exhaust_resources(make_topic, tname):
    first = make_topic(partitions=2)
    first.send(b"x", partition=1)
    for i in range(1300):  # more than the 1024 member slots of a partition
        t = pyqmem.Topic(tname, partitions=2, create=False)
        c = t.consumer()
        m = c.get(timeout=5)
        assert (m.partition, bytes(m.value)) == (1, b"x"), i
        del m
        c.close()
        t.close()
    assert first.send(b"y", partition=0).offset == 0


@pytest.mark.any_backend
def test_closing_the_consumer_from_another_thread_interrupts_a_blocked_get(make_topic):
    import threading

    t = make_topic()
    c = t.consumer()
    box = {}

    def blocked():
        try:
            box["msg"] = c.get(timeout=30)
        except BaseException as e:  # inspected below
            box["exc"] = e

    th = threading.Thread(target=blocked, daemon=True)
    th.start()
    time.sleep(0.2)
    c.close()
    th.join(10)
    assert not th.is_alive(), "get stayed blocked after close()"
    assert isinstance(box.get("exc"), pyqmem.Closed), box


@pytest.mark.any_backend
def test_closing_the_topic_closes_its_consumers(make_topic):
    t = make_topic()
    t.send(b"x")
    c = t.consumer()
    t.close()
    with pytest.raises(pyqmem.Closed):
        c.get(timeout=0.1)


_DATA_AFTER_CLOSE = r"""
import sys, pyqmem
t = pyqmem.Topic(sys.argv[1], dir=sys.argv[2], partitions=1, retention_bytes=None)
payload = bytes(range(256)) * 64
t.send(payload)
c = t.consumer()
m = c.get(timeout=5)
view = m.data
c.close()
t.close()
assert bytes(view) == payload, "data changed after close"
assert bytes(m.data) == payload
del m, view
print("ok")
"""


@pytest.mark.timeout(60)
def test_message_data_stays_valid_after_its_consumer_and_topic_are_closed(topic_dir, tname):
    # in a child interpreter: an unmapped view would crash only that child
    out = subprocess.run([sys.executable, "-c", _DATA_AFTER_CLOSE, tname, topic_dir],
                         capture_output=True, text=True, timeout=50, cwd=topic_dir)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-3000:])


@pytest.mark.any_backend
def test_consumer_limited_to_some_partitions_reads_only_those(make_topic):
    t = make_topic(partitions=3)
    _fill(t, 2)
    c = t.consumer(partitions=[2, 0])
    got = sorted((m.partition, m.offset) for m in drain(c, 4))
    assert got == [(0, 0), (0, 1), (2, 0), (2, 1)]
    assert_nothing_more(c)
    c.close()


def test_fsync_durability_sends_and_reads_back(make_topic):
    t = make_topic(partitions=2, durability="fsync", segment_bytes=SEG)
    mds = [t.send(os.urandom(3000) if i % 2 else b"%d" % i) for i in range(40)]
    assert len({(md.partition, md.offset) for md in mds}) == 40
    c = t.consumer()
    drain(c, 40)
    c.close()


def test_retention_seconds_drops_segments_whose_records_are_older(make_topic):
    t = make_topic(segment_bytes=SEG, retention_seconds=0.2)
    for i in range(100):  # ~3 segments
        t.send(b"." * 2000)
    time.sleep(0.5)
    last = t.send(b"fresh")
    t.retain()
    st = t.stats()["partitions"][0]
    assert st["segments"] == 1, st  # only the active segment is kept
    assert 0 < st["start_offset"] <= last.offset
    c = t.consumer()
    m = c.get(timeout=5)
    assert m.offset == st["start_offset"]
    c.close()


# ----------------------------------------------------------------------------
# damaged files
# ----------------------------------------------------------------------------
def test_a_record_damaged_on_disk_raises_corrupt_error_instead_of_bad_data(make_topic, topic_dir, tname):
    t = make_topic(segment_bytes=SEG)
    t.send(b"good-before")
    marker = b"DAMAGE-ME-" * 10
    t.send(marker)
    seg = os.path.join(topic_dir, tname, "p0", "00000000000000000000.log")
    with open(seg, "r+b") as f:
        raw = f.read()
        at = raw.find(marker)
        assert at > 0
        f.seek(at + 5)
        f.write(b"X")
    c = t.consumer()
    assert bytes(c.get(timeout=5).value) == b"good-before"
    with pytest.raises(pyqmem.CorruptError):
        m = c.get(timeout=2)
        pytest.fail(f"damaged record delivered: {bytes(m.data)!r}")
    c.close()


def test_check_crcs_false_reads_a_damaged_value_but_still_rejects_a_damaged_length(
        make_topic, topic_dir, tname):
    t = make_topic(segment_bytes=SEG)
    marker = b"DAMAGE-ME-" * 10
    t.send(marker)
    t.send(b"after")
    seg = os.path.join(topic_dir, tname, "p0", "00000000000000000000.log")
    with open(seg, "r+b") as f:
        at = f.read().find(marker)
        f.seek(at + 5)
        f.write(b"X")
    with t.consumer(check_crcs=False) as trusting:
        m = trusting.get(timeout=5)
        assert bytes(m.data) == marker[:5] + b"X" + marker[6:]
        assert bytes(trusting.get(timeout=5).data) == b"after"
    with t.consumer() as checking:
        with pytest.raises(pyqmem.CorruptError):
            checking.get(timeout=2)
    # a length word pointing past the segment is refused either way
    with open(seg, "r+b") as f:
        f.seek(128)                     # the first record's word: state | owner | length
        word = int.from_bytes(f.read(8), "little")
        f.seek(128)
        f.write(((word & ~0xFFFFFFFF) | (SEG * 4)).to_bytes(8, "little"))
    with t.consumer(check_crcs=False) as trusting:
        with pytest.raises(pyqmem.CorruptError):
            trusting.get(timeout=2)
    with pytest.raises(TypeError):
        t.consumer(check_crcs=1)


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"format": 1}', b""])
def test_damaged_topic_json_raises_corrupt_error_on_open(make_topic, topic_dir, tname, content):
    t = make_topic(partitions=2)
    t.close()
    with open(os.path.join(topic_dir, tname, "topic.json"), "wb") as f:
        f.write(content)
    with pytest.raises(pyqmem.CorruptError):
        pyqmem.Topic(tname, create=False)


def test_topic_json_of_another_format_raises_incompatible_error(make_topic, topic_dir, tname):
    import json

    t = make_topic(partitions=2)
    t.close()
    path = os.path.join(topic_dir, tname, "topic.json")
    with open(path) as f:
        meta = json.load(f)
    assert isinstance(meta, dict) and meta.get("partitions") == 2
    fmt_key = next((k for k in ("format", "version", "format_version") if k in meta), None)
    if fmt_key is None:
        pytest.skip(f"topic.json names no format version: {sorted(meta)}")
    meta[fmt_key] = 999
    with open(path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(pyqmem.IncompatibleError) as ei:
        pyqmem.Topic(tname, create=False)
    assert "999" in str(ei.value)


@pytest.mark.any_backend
@pytest.mark.parametrize("kw", [{"key": 5}, {"key": 1.5}, {"correlation_id": 5}, {"correlation_id": b"bytes"}],
                         ids=repr)
def test_key_and_correlation_id_of_wrong_type_are_type_error(make_topic, kw):
    t = make_topic()
    with pytest.raises(TypeError):
        t.send(b"v", **kw)
    assert t.stats()["partitions"][0]["end_offset"] == 0
