"""Resource bounds and denial of service (reliability.md rows E1, E3, E5, E6, E7, I2, I4).

No test here asserts on time: durations are measured and printed (run with ``-s`` to
see them, they also go to the test report via ``record_property``).  Memory is
asserted with bounds (tracemalloc, RSS).  ``PYQMEM_LEAK_N`` scales the leak tests
(default 2 * 10**5 single put/get; 10**6 is the reliability.md figure),
``PYQMEM_CYCLES`` the open/close test (default 10**3; reliability.md asks 10**4).
"""
from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys

import pytest

import pyqmem
from helpers.topic_fixtures import make_topic, topic_dir, tname, tracked  # noqa: F401 (fixtures)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _report(record_property, name, value):
    """A measured figure: printed (pytest -s) and kept in the test report."""
    record_property(name, value)
    print(f"\n[figure] {name} = {value}")


@pytest.fixture
def sparse_2_40(tmp_path):
    """A read-only mapping of a sparse 2**40-byte file: a bytes-like object that claims
    a terabyte and occupies nothing."""
    path = tmp_path / "sparse"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 2**40)
        m = mmap.mmap(fd, 2**40, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
        os.unlink(path)
    yield m
    m.close()


# ----------------------------------------------------------------------------
# E1: a message that can never fit is refused before anything is allocated
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_messages_claiming_2_40_to_2_63_bytes_are_refused_before_any_allocation(names, topic_dir,
                                                                                   record_property):
    """Every producing path of Queue and Topic (values, keys, headers, batches, each
    serializer) refuses objects whose buffer claims 2**40 .. 2**63 - 1 bytes with
    MessageTooLarge, allocating < 1 MiB, leaving the queue/topic unchanged.  Run in a
    child: a wrong implementation would try to copy a terabyte."""
    pytest.importorskip("numpy")
    name = names.new()
    scratch = os.path.join(topic_dir, "sparse-e1")
    r = subprocess.run([sys.executable, "-m", "helpers.res_workers", "e1", name, scratch],
                       capture_output=True, text=True, timeout=100, cwd=TESTS_DIR)
    assert r.returncode == 0, f"child died ({r.returncode}): {r.stderr[-3000:]}"
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(results) >= 80
    wrong = [x for x in results if x["outcome"] != "MessageTooLarge" or not x["unchanged"]]
    assert wrong == [], "\n".join(map(str, wrong[:10]))
    heavy = [x for x in results if x["tracemalloc_peak"] >= 2**20 or x["rss_growth_kib"] >= 1024]
    assert heavy == [], "\n".join(map(str, heavy[:10]))
    seconds = sorted(x["seconds"] for x in results)
    _report(record_property, "e1_refusals", len(results))
    _report(record_property, "e1_refuse_seconds_median", seconds[len(seconds) // 2])
    _report(record_property, "e1_refuse_seconds_max", seconds[-1])
    _report(record_property, "e1_tracemalloc_peak_max_bytes", max(x["tracemalloc_peak"] for x in results))
    _report(record_property, "e1_rss_growth_max_kib", max(x["rss_growth_kib"] for x in results))


def test_topic_key_and_headers_over_the_limit_are_refused_before_being_copied(make_topic, sparse_2_40):
    """Regression: a bytes-like key or header value was copied (memoryview.tobytes)
    before its size was checked, so a 2**40-byte one raised MemoryError (or, with
    overcommit, made the OOM killer act)."""
    t = make_topic(segment_bytes=2**20)
    limit = t.max_message // 2   # key and headers together: segment_bytes // 4
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send(b"v", key=sparse_2_40)
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send_many([b"v"], key=sparse_2_40)
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send(b"v", headers={"h": sparse_2_40})
    # the exact bounds: key + encoded headers <= segment_bytes // 4
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send(b"v", key=b"k" * (limit + 1))
    with pytest.raises(pyqmem.MessageTooLarge):
        t.send(b"v", key="k" * (limit + 1))
    with pytest.raises(pyqmem.MessageTooLarge):   # the C fast path (bytes values, dict)
        t.send(b"v", key=b"k" * 100, headers={"h": b"x" * (limit - 100 - 8)})
    md = t.send(b"v", key=b"k" * 100, headers={"h": b"x" * (limit - 100 - 9)})
    with t.consumer() as c:
        m = c.get(timeout=5)
    assert (m.offset, m.key, len(m.headers["h"])) == (md.offset, b"k" * 100, limit - 109)
    assert t.stats()["partitions"][0]["end_offset"] == 1


def test_pickled_object_with_a_huge_non_contiguous_buffer_is_refused_before_pickling(make_queue,
                                                                                      make_topic):
    """Regression: pickle copies a buffer it cannot pass out of band (a non-contiguous
    numpy array), so np.broadcast_to(x, (2**40,)) -- one element, claiming a terabyte --
    raised MemoryError/OverflowError after trying to allocate it."""
    np = pytest.importorskip("numpy")
    huge = np.broadcast_to(np.zeros(1, dtype=np.uint8), (2**40,))
    q = make_queue(capacity=2**20)
    t = make_topic(segment_bytes=2**20, serializer="pickle")
    for call in (lambda: q.put(huge), lambda: q.put_many([1, huge]), lambda: t.send(huge)):
        with pytest.raises(pyqmem.MessageTooLarge):
            call()
    assert q.qsize() == 0 and t.stats()["partitions"][0]["end_offset"] == 0
    small = np.broadcast_to(np.arange(3, dtype=np.int64), (4, 3))   # still pickles fine
    q.put(small)
    assert np.array_equal(q.get(timeout=1), small)


def test_raw_put_many_copies_a_non_contiguous_array_like_put_does(make_queue):
    """Regression: Queue(serializer=None).put_many fell back to copying only on
    BufferError, but numpy refuses a contiguous view with ValueError, so put_many of a
    strided array failed where put of the same array worked."""
    np = pytest.importorskip("numpy")
    q = make_queue(capacity=2**20, serializer=None)
    strided = np.arange(20, dtype=np.uint8)[::2]
    q.put_many([b"a", strided])
    q.put(strided)
    assert q.get_many(3, timeout=1) == [b"a", strided.tobytes(), strided.tobytes()]
    with pytest.raises(pyqmem.MessageTooLarge):
        q.put_many([b"a", np.broadcast_to(np.zeros(1, dtype=np.uint8), (2**40,))])
    assert q.qsize() == 0


def _dead_letter_one(t, *, value, key=None, headers=None):
    """Send one record, then a small one; a group with max_deliveries=1 nacks the first,
    so its next claim dead-letters it.  Returns the small record as delivered."""
    t.send(value, key=key, headers=headers, partition=0)
    t.send(b"after", partition=0)
    with t.consumer(group="g", max_deliveries=1) as c:
        first = c.get(timeout=5)
        assert first.offset == 0
        first.nack(delay=0, error=RuntimeError("handler failed"))
        nxt = c.get(timeout=5)   # dead-letters offset 0 on the way
        nxt.ack()
        stats = c.stats()[0]
    assert (stats["committed"], stats["dead_lettered"], stats["pending"]) == (2, 1, 0)
    return nxt


def test_a_record_too_large_for_an_existing_dead_letter_topic_does_not_stall_the_group(
        make_topic, tname, topic_dir):
    """Regression: when the dead-letter append raised MessageTooLarge (a "<topic>.dlq"
    made with smaller segments), every get of the group raised it again, forever, and
    the records after it were never delivered.  Now a stand-in without the payload goes
    to the dead-letter topic, saying what was left out, and redrive passes over it."""
    t = make_topic(segment_bytes=2**20)
    dlq = make_topic(f"{tname}.dlq", segment_bytes=64 * 1024)   # values up to 32 KiB
    nxt = _dead_letter_one(t, value=b"v" * 40_000, key=b"the-key", headers={"trace": b"abc"})
    assert bytes(nxt.data) == b"after"
    with dlq.consumer() as c:
        stand_in = c.get(timeout=5)
    from pyqmem import deadletter
    info = deadletter.info(stand_in.headers)
    assert (info.topic, info.partition, info.offset, info.delivery_count) == (tname, 0, 0, 1)
    assert "RuntimeError: handler failed" in info.error
    omitted = bytes(stand_in.headers[deadletter.OMITTED]).decode()
    assert "value of 40000 bytes" in omitted and "MessageTooLarge" in omitted
    assert bytes(stand_in.data) == b"" and stand_in.key is None and "trace" not in stand_in.headers
    assert pyqmem.redrive(tname, dir=topic_dir) == 0
    assert t.stats()["partitions"][0]["end_offset"] == 2


@pytest.mark.timeout(120)
def test_the_dead_letter_topic_takes_every_value_its_source_takes(tmp_path, tname, tracked):
    """Regression: "<topic>.dlq" was created with the default 64 MiB segments, so a
    value over 32 MiB from a topic with larger segments could never be dead-lettered
    (and stalled the group as above).  It is now created with the source's segment size
    (on disk here: tmpfs would reserve the segments in memory)."""
    t = tracked(pyqmem.Topic(tname, dir=tmp_path, segment_bytes=68 * 2**20))
    value = b"\xab" * (33 * 2**20)
    _dead_letter_one(t, value=value)
    dlq = tracked(pyqmem.Topic(f"{tname}.dlq", dir=tmp_path, create=False))
    assert dlq.segment_bytes == 68 * 2**20
    with dlq.consumer() as c:
        m = c.get(timeout=5)
        assert m.data == value
