"""Resource bounds and denial of service (reliability-matrix.md rows E1, E3, E5, E6, E7, I2, I4,
and A10: fork with open handles).

No test here asserts on time: durations are measured and printed (run with ``-s`` to
see them, they also go to the test report via ``record_property``).  Memory is
asserted with bounds (tracemalloc, RSS).  ``PYQMEM_LEAK_N`` scales the leak tests
(default 2 * 10**5 single put/get; 10**6 is the reliability-matrix.md figure),
``PYQMEM_CYCLES`` the open/close test (default 10**3; reliability-matrix.md asks 10**4).
"""
from __future__ import annotations

import fcntl
import gc
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest

import pyqmem

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
    with pytest.raises(pyqmem.MessageTooLarge):   # measured before it is encoded
        t.send(b"v", correlation_id="c" * (limit + 1))
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



_EXTREME_ARGUMENTS = {
    "Topic(segment_bytes)": lambda t, c, g, q, v: pyqmem.Topic("other", segment_bytes=v, retention_bytes=None),
    "Topic(partitions)": lambda t, c, g, q, v: pyqmem.Topic("other", partitions=v, retention_bytes=None),
    "Topic(retention_seconds)": lambda t, c, g, q, v: pyqmem.Topic("other", retention_seconds=v, retention_bytes=None),
    "send(partition)": lambda t, c, g, q, v: t.send(b"x", partition=v),
    "consumer.get_many": lambda t, c, g, q, v: c.get_many(v, timeout=0),
    "group.get_many": lambda t, c, g, q, v: g.get_many(v, timeout=0),
    "consumer.seek": lambda t, c, g, q, v: c.seek(0, v),
    "group.seek": lambda t, c, g, q, v: g.seek(0, v),
    "consumer(start)": lambda t, c, g, q, v: t.consumer(start=v),
    "consumer(visibility_timeout)": lambda t, c, g, q, v: t.consumer(group="h", visibility_timeout=v),
    "consumer(max_deliveries)": lambda t, c, g, q, v: t.consumer(group="h", max_deliveries=v),
    "Queue(maxsize)": lambda t, c, g, q, v: pyqmem.Queue(q.name + "-other", maxsize=v),
    "Queue(capacity)": lambda t, c, g, q, v: pyqmem.Queue(q.name + "-other", capacity=v),
    "queue.get_many": lambda t, c, g, q, v: q.get_many(v, timeout=0),
    "message.nack(delay)": lambda t, c, g, q, v: g.get(timeout=5).nack(delay=v),
    "message.extend": lambda t, c, g, q, v: g.get(timeout=5).extend(v),
}


@pytest.mark.parametrize("value", [-1, 2**63, 2**64], ids=["-1", "2**63", "2**64"])
def test_sizes_counts_and_offsets_of_minus_one_or_2_63_and_up_are_value_errors(
        value, make_topic, make_queue, topic_dir, tracked):
    """E1 for numbers: every size, count, offset, partition and duration argument of
    -1, 2**63 and 2**64 raises ValueError (no OverflowError, no wrap-around, no huge
    allocation); nothing is created and the records stay where they were."""
    t = make_topic()
    t.send_many([b"a", b"b"])
    c, g = tracked(t.consumer()), tracked(t.consumer(group="g", visibility_timeout=60))
    q = make_queue()
    before = sorted(os.listdir(topic_dir)), sorted(os.listdir(t.path))
    wrong = {}
    for what, call in _EXTREME_ARGUMENTS.items():
        try:
            tracked(call(t, c, g, q, value))
            wrong[what] = "accepted"
        except ValueError:
            pass
        except BaseException as exc:   # noqa: BLE001 - collected and reported
            wrong[what] = f"{type(exc).__name__}: {exc}"
    assert wrong == {}
    assert (sorted(os.listdir(topic_dir)), sorted(os.listdir(t.path))) == before
    assert not pyqmem.Queue.exists(q.name + "-other")
    assert [bytes(m.data) for m in c.get_many(10, timeout=1)] == [b"a", b"b"]


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


# ----------------------------------------------------------------------------
# E6: no fd or mapping leaks over open/close cycles
# ----------------------------------------------------------------------------
def _cycles(default):
    return int(os.environ.get("PYQMEM_CYCLES", default))


def _fd_and_maps(*folders):
    """(open fds, lines of /proc/self/maps, maps lines of files under `folders`)."""
    gc.collect()
    fds = len(os.listdir("/proc/self/fd"))
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    ours = [line for line in lines if any(folder in line for folder in folders)]
    return fds, len(lines), len(ours)


def _open_close(kind, qname):
    if kind == "queue":
        def cycle():
            pyqmem.Queue(qname).close()
    elif kind == "queue+thread-handle":
        def cycle():   # a second thread's handle (qm_ring_dup) is released by close too
            q = pyqmem.Queue(qname)
            th = threading.Thread(target=q.qsize)
            th.start()
            th.join()
            q.close()
    elif kind == "thread-ends-without-close":
        q = pyqmem.Queue(qname)
        t = pyqmem.Topic("cycled", retention_bytes=None)

        def use():   # this thread's queue handle and partition handle: released at its end
            q.put(1)
            q.get(timeout=5)
            t.send(b"x", partition=1)

        def cycle():
            th = threading.Thread(target=use)
            th.start()
            th.join()
            assert q.stats()["members"] == 1
    elif kind == "topic":
        def cycle():
            with pyqmem.Topic("cycled", retention_bytes=None) as t:
                t.send(b"x", partition=0)
    elif kind == "topic+consumer":
        def cycle():
            with pyqmem.Topic("cycled", retention_bytes=None) as t, t.consumer(start="latest") as c:
                c.lag()
    elif kind == "group-consumer":
        def cycle():
            with pyqmem.Topic("cycled", retention_bytes=None) as t, t.consumer(group="cycling") as c:
                try:
                    c.get(timeout=0).ack()
                except pyqmem.Empty:
                    pass
    return cycle


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind,default", [("queue", 10_000), ("queue+thread-handle", 1_000),
                                          ("thread-ends-without-close", 1_000),
                                          ("topic", 1_000), ("topic+consumer", 1_000),
                                          ("group-consumer", 1_000)])
def test_open_close_cycles_leak_no_fd_and_no_mapping(kind, default, qname, shm_dir, topic_dir,
                                                      record_property):
    """E6: after a warm-up, N open/close cycles leave the number of open fds and of
    mappings of pyqmem files exactly as they were (and the total of mappings within
    a few lines: Python's allocator maps and unmaps arenas by itself).  N is 10**4 for
    Queue; the Topic kinds default to 10**3 (about 1 ms a cycle; PYQMEM_CYCLES=10000)."""
    with pyqmem.Queue(qname):
        pass
    with pyqmem.Topic("cycled", partitions=2, segment_bytes=64 * 1024, retention_bytes=None) as t:
        t.send_many([b"r"] * 10)
    cycle = _open_close(kind, qname)
    for _ in range(50):
        cycle()
    before = _fd_and_maps(shm_dir, topic_dir)
    n = _cycles(default)
    t0 = time.perf_counter()
    for _ in range(n):
        cycle()
    seconds = time.perf_counter() - t0
    after = _fd_and_maps(shm_dir, topic_dir)
    _report(record_property, f"e6_{kind}_cycles", n)
    _report(record_property, f"e6_{kind}_us_per_cycle", round(seconds / n * 1e6, 1))
    _report(record_property, f"e6_{kind}_fd_maps_delta",
            (after[0] - before[0], after[1] - before[1], after[2] - before[2]))
    assert after[0] == before[0], f"open fds {before[0]} -> {after[0]} over {n} cycles"
    assert after[2] == before[2], f"mappings of pyqmem files {before[2]} -> {after[2]}"
    # the allocators map arenas by themselves: a few lines, more under ASan, whose
    # allocator keeps per-thread regions (the pyqmem mappings above stay exact)
    slack = 32 if "libasan" in os.environ.get("LD_PRELOAD", "") else 8
    assert abs(after[1] - before[1]) <= slack, f"mappings {before[1]} -> {after[1]} over {n} cycles"


# ----------------------------------------------------------------------------
# E7: no memory growth over many put/get and send/get
# ----------------------------------------------------------------------------
def _leak_n():
    return int(os.environ.get("PYQMEM_LEAK_N", 200_000))


def _status_kib(*fields):
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in fields:
                out[key] = int(rest.split()[0])
    return out


def _leak_workloads(qname, tracked):
    """name -> (run(count), messages per count): each moves `count` messages through
    and checks they arrive."""
    q = tracked(pyqmem.Queue(qname, capacity=2**20))
    qr = tracked(pyqmem.Queue(qname + "-raw", capacity=2**20, serializer=None))
    t = tracked(pyqmem.Topic("leak", segment_bytes=2**20, retention_bytes=2**21))
    tc = tracked(t.consumer(start="latest"))
    g = tracked(pyqmem.Topic("leak-g", segment_bytes=2**20, retention_bytes=2**21))
    gc_ = tracked(g.consumer(group="leak"))
    item = {"seq": 0, "payload": "x" * 40}
    raw = b"r" * 64

    def queue_put_get(n):
        for i in range(n):
            item["seq"] = i
            q.put(item)
            assert q.get()["seq"] == i

    def queue_put_many_get_many(n):
        batch = [raw] * 1000
        for _ in range(n // 1000):
            qr.put_many(batch)
            got = 0
            while got < 1000:
                got += len(qr.get_many(1000))

    def topic_send_get(n):
        for i in range(n):
            md = t.send(raw)
            assert tc.get(timeout=5).offset == md.offset

    def topic_send_many_get_many(n):
        batch = [raw] * 1000
        for _ in range(n // 1000):
            t.send_many(batch)
            got = 0
            while got < 1000:
                got += len(tc.get_many(1000, timeout=5))

    def group_send_get_ack(n):
        for _ in range(n // 100):
            g.send_many([raw] * 100)
            got = 0
            while got < 100:
                msgs = gc_.get_many(100, timeout=5)
                gc_.ack_many(msgs)
                got += len(msgs)

    return {"queue put/get (pickle)": queue_put_get,
            "queue put_many/get_many (raw)": queue_put_many_get_many,
            "topic send/get": topic_send_get,
            "topic send_many/get_many": topic_send_many_get_many,
            "group send_many/get_many/ack_many": group_send_get_ack}


# messages per workload, as multiples of PYQMEM_LEAK_N: batched ones move 5x as many
_LEAK_SCALE = {"queue put/get (pickle)": 1, "queue put_many/get_many (raw)": 5,
               "topic send/get": 1, "topic send_many/get_many": 5,
               "group send_many/get_many/ack_many": 1}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("workload", list(_LEAK_SCALE))
def test_many_messages_grow_neither_rss_nor_python_heap(workload, qname, topic_dir, tracked,
                                                         record_property):
    """E7: after a warm-up, moving PYQMEM_LEAK_N messages one by one (5x as many in
    batches) grows the anonymous RSS by < max(1 MiB, 1 %), and a tenth of that under
    tracemalloc leaves < 64 KiB more Python memory allocated."""
    run = _leak_workloads(qname, tracked)[workload]
    n = _leak_n() * _LEAK_SCALE[workload]
    run(max(n // 10, 1000))   # warm-up: rings lapped, segments rolled and retained
    gc.collect()
    before = _status_kib("VmRSS", "RssAnon")
    t0 = time.perf_counter()
    run(n)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = _status_kib("VmRSS", "RssAnon")
    tracemalloc.start()
    try:
        run(max(n // 10, 1000))
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        run(max(n // 10, 1000))
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    growth = after["RssAnon"] - before["RssAnon"]
    label = workload.replace(" ", "_")
    _report(record_property, f"e7_{label}_messages", n)
    _report(record_property, f"e7_{label}_us_per_message", round(seconds / n * 1e6, 2))
    _report(record_property, f"e7_{label}_rss_anon_kib", (before["RssAnon"], after["RssAnon"]))
    _report(record_property, f"e7_{label}_vm_rss_kib", (before["VmRSS"], after["VmRSS"]))
    _report(record_property, f"e7_{label}_tracemalloc_growth_bytes", traced_growth)
    assert growth < max(1024, before["RssAnon"] // 100), f"RssAnon grew by {growth} KiB over {n}"
    assert traced_growth < 64 * 1024, f"Python heap grew by {traced_growth} bytes"


# ----------------------------------------------------------------------------
# I2: an exception half-way through producing leaves everything as it was
# ----------------------------------------------------------------------------
class _Boom(Exception):
    pass


class _RaisesWhenPickled:
    def __reduce__(self):
        raise _Boom("refuses to be pickled")


class _DumpsRaisesOnThird:
    def __init__(self):
        self.calls = 0

    def dumps(self, obj):
        self.calls += 1
        if self.calls % 3 == 0:
            raise _Boom("dumps failed on its third call")
        return repr(obj).encode()

    def loads(self, buf):
        return bytes(buf).decode()


def _raising_iter(n):
    for i in range(n):
        yield b"%d" % i
    raise _Boom("the iterable failed half-way")


def _files_bytes(folder):
    """{relative path: bytes} of every file below `folder`."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


_HALF_WAY_QUEUE = {
    "pickle put": ("pickle", lambda q: q.put([1, bytearray(100_000), _RaisesWhenPickled()])),
    "pickle put_many": ("pickle", lambda q: q.put_many([1, 2, [bytearray(100_000), _RaisesWhenPickled()], 4])),
    "custom put_many": ("custom", lambda q: q.put_many(["a", "b", "c", "d"])),
    "custom dumps returns int": ("int", lambda q: q.put("x")),
    "raw put_many non-bytes": ("raw", lambda q: q.put_many([b"a", b"b", 5, b"d"])),
    "raw put_many iterator": ("raw", lambda q: q.put_many(_raising_iter(3))),
    "pickle put_many iterator": ("pickle", lambda q: q.put_many(_raising_iter(3))),
}


@pytest.mark.parametrize("case", list(_HALF_WAY_QUEUE))
def test_exception_half_way_through_a_put_leaves_the_queue_byte_identical(case, make_queue, qname):
    """I2: a serializer or iterable raising part-way through put/put_many propagates
    its exception and the queue's shared memory is byte for byte what it was; the next
    put works."""
    kind, call = _HALF_WAY_QUEUE[case]
    serializer = {"pickle": "pickle", "raw": None, "custom": _DumpsRaisesOnThird(),
                  "int": type("IntDumps", (), {"dumps": staticmethod(lambda o: 5),
                                               "loads": staticmethod(bytes)})()}[kind]
    q = make_queue(capacity=2**20, serializer=serializer)
    if kind != "int":
        q.put(b"w" if kind == "raw" else "w")   # joins as producer and consumer: roles set
        q.get(timeout=1)
        q.put(b"kept" if kind == "raw" else "kept")
    from helpers.paths import queue_path
    with open(queue_path(qname), "rb") as f:
        before = f.read()
    stats = q.stats()
    with pytest.raises((_Boom, TypeError)):
        call(q)
    with open(queue_path(qname), "rb") as f:
        assert f.read() == before, "the failed put changed the queue's shared memory"
    assert q.stats() == stats
    if kind == "int":
        return
    if isinstance(serializer, _DumpsRaisesOnThird):
        serializer.calls = 0
    q.put(b"next" if kind == "raw" else "next")
    got = q.get_many(10, timeout=1)
    assert got in ([b"kept", b"next"], ["kept", "next"], ["'kept'", "'next'"]), got


_HALF_WAY_TOPIC = {
    "pickle send": ("pickle", lambda t: t.send([1, bytearray(100_000), _RaisesWhenPickled()])),
    "pickle send_many": ("pickle", lambda t: t.send_many([1, 2, _RaisesWhenPickled(), 4])),
    "custom send_many": ("custom", lambda t: t.send_many(["a", "b", "c", "d"])),
    "raw send_many non-bytes": ("raw", lambda t: t.send_many([b"a", b"b", 5, b"d"])),
    "raw send_many iterator": ("raw", lambda t: t.send_many(_raising_iter(3))),
    "raw send bad header value": ("raw", lambda t: t.send(b"v", key="k", headers={"a": b"1", "b": 5})),
    "raw send bad key": ("raw", lambda t: t.send(b"v", key=object())),
    "raw send bad correlation id": ("raw", lambda t: t.send(b"v", headers={"a": b"1"},
                                                           correlation_id=5)),
}


@pytest.mark.parametrize("case", list(_HALF_WAY_TOPIC))
def test_exception_half_way_through_a_send_leaves_the_topic_byte_identical(case, make_topic):
    """I2 for topics: every file of the topic is byte for byte what it was after a
    send/send_many whose serializer, iterable, key or headers raised part-way; nothing
    was appended, and the next send gets the next offset."""
    kind, call = _HALF_WAY_TOPIC[case]
    serializer = {"pickle": "pickle", "raw": None, "custom": _DumpsRaisesOnThird()}[kind]
    t = make_topic(partitions=2, segment_bytes=64 * 1024, serializer=serializer)
    for p in (0, 1):   # both partition handles joined
        t.send(b"kept" if kind == "raw" else "kept", partition=p)
    before = _files_bytes(t.path)
    ends = {k: v["end_offset"] for k, v in t.stats()["partitions"].items()}
    with pytest.raises((_Boom, TypeError)):
        call(t)
    assert _files_bytes(t.path) == before, "the failed send changed the topic's files"
    assert {k: v["end_offset"] for k, v in t.stats()["partitions"].items()} == ends == {0: 1, 1: 1}
    if isinstance(serializer, _DumpsRaisesOnThird):
        serializer.calls = 0
    md = t.send(b"next" if kind == "raw" else "next", partition=0)
    assert md.offset == 1


# ----------------------------------------------------------------------------
# I4: the interpreter exits promptly with open handles, blocked threads and leases
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["return", "sys.exit", "os._exit"])
def test_exit_with_open_handles_blocked_threads_and_leases_is_prompt_and_frees_the_leases(
        how, qname, make_topic, tname, record_property):
    """I4: a process that holds a queue, a topic, group leases (visibility_timeout=120)
    and daemon threads blocked in get/put of each kind exits with code 0 without
    closing anything; another member then gets the leased records at once (their
    deliveries counted), not after the visibility timeout, and the queue counts no
    member of the dead process."""
    t = make_topic()
    t.send_many([b"a", b"b", b"c"])
    child = subprocess.Popen([sys.executable, "-m", "helpers.res_workers", "exit_holding",
                              qname, tname, how], cwd=TESTS_DIR, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        ready = time.monotonic()
        assert line, f"child gave no report: {child.stderr.read()[-3000:]}"
        report = json.loads(line)
        assert report == {"leased": [0, 1, 2], "blocked": 5}, report
        code = child.wait(timeout=30)
        exit_seconds = time.monotonic() - ready
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        stderr = child.stderr.read()
        child.stderr.close()
    assert code == 0, f"exit code {code}: {stderr[-3000:]}"
    t0 = time.monotonic()
    with t.consumer(group="g", visibility_timeout=120) as c:
        got = []
        while len(got) < 3 and time.monotonic() - t0 < 10:
            try:
                got += c.get_many(3, timeout=0.5)
            except pyqmem.Empty:
                pass
        redelivery_seconds = time.monotonic() - t0
        # >= 2: while the process finalizes, its idle member (still blocked in get in
        # a daemon thread) may claim a record the closing member gave back (count 3)
        assert sorted(m.offset for m in got) == [0, 1, 2]
        assert all(m.delivery_count >= 2 for m in got), [m.delivery_count for m in got]
        c.ack_many(got)
    with pyqmem.Queue(qname) as q:
        stats = q.stats()
        assert (stats["members"], q.get(timeout=1)) == (1, "occupant")
    _report(record_property, f"i4_{how}_exit_seconds", round(exit_seconds, 3))
    _report(record_property, f"i4_{how}_redelivery_seconds", round(redelivery_seconds, 3))


# ----------------------------------------------------------------------------
# E5: a full member table is a typed error; dead members' slots are reclaimed
# ----------------------------------------------------------------------------
MEMBER_SLOTS = 1023   # live handles per queue, partition log or group file (qmem.h)


def _holder(kind, name, count):
    p = subprocess.Popen([sys.executable, "-m", "helpers.res_workers", "hold_members", kind, name,
                          str(count)], cwd=TESTS_DIR, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line, p.stderr.read()[-3000:]
    return p, json.loads(line)


def _assert_members_full(exc_info):
    exc = exc_info.value
    assert type(exc) is pyqmem.QmemError, type(exc)
    assert "member table full" in str(exc) and "1023" in str(exc), str(exc)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["queue", "group"])
def test_full_member_table_is_a_typed_error_and_dead_members_slots_are_reclaimed(
        kind, qname, make_topic, reaper, monkeypatch, record_property):
    """E5: three processes take every member slot (1023) of a queue, or of a consumer
    group's file; the next handle is refused with QmemError "member table full" at
    once; after one of them is SIGKILLed, all of its slots can be taken again (by
    queue handles, by group consumers) and the one after that is refused again.
    (Filling a table costs seconds: each join tries the taken slots' locks in turn.)

    Regression (group): opening a group consumer took "member table full" for a group
    file still being created and retried it, sleeping 5 ms at a time, for 10 s."""
    import pyqmem.shm.group_member
    from helpers.res_workers import open_member

    def refused():
        sleeps = []
        with monkeypatch.context() as m:
            m.setattr(pyqmem.shm.group_member.time, "sleep", sleeps.append)
            with pytest.raises(pyqmem.QmemError) as ei:
                take()
        _assert_members_full(ei)
        assert ei.value.status == pyqmem._core.EMEMBERS
        assert sleeps == [], f"retried {len(sleeps)} times as if the file were being created"

    if kind == "group":
        topic = make_topic()
        topic.send(b"r")
        topic.consumer(group="g").close()   # creates the group file
        name = topic.path

        def take():
            return topic.consumer(group="g")
    else:
        pyqmem.Queue(qname, capacity=4096).close()
        name = qname

        def take():
            return open_member(kind, name)
    procs, counts = [], []
    t0 = time.perf_counter()
    try:
        for count in (100, 400, "fill"):
            p, report = _holder(kind, name, count)
            procs.append(reaper.add(p))
            counts.append(report["opened"])
        fill_seconds = time.perf_counter() - t0
        assert report["error"] is not None and "member table full" in report["error"][1], report
        assert counts == [100, 400, MEMBER_SLOTS - 500], counts
        refused()
        procs[0].kill()
        procs[0].wait()
        mine = []
        t0 = time.perf_counter()
        try:
            for _ in range(counts[0]):
                mine.append(take())
            reclaim_seconds = time.perf_counter() - t0
            refused()
            if kind == "queue":
                assert mine[0].stats()["members"] == MEMBER_SLOTS
            else:   # the members on reclaimed slots work: one of them gets the record
                msg = mine[-1].get(timeout=5)
                assert bytes(msg.data) == b"r"
                msg.ack()
        finally:
            for h in mine:
                h.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.stdin.close()
                p.kill()
            p.wait()
    _report(record_property, f"e5_{kind}_fill_seconds", round(fill_seconds, 3))
    _report(record_property, f"e5_{kind}_reclaim_{counts[0]}_seconds", round(reclaim_seconds, 3))



# ----------------------------------------------------------------------------
# E3: a flooding producer gets Full; everyone else carries on
# ----------------------------------------------------------------------------
def _child(reaper, *args):
    p = subprocess.Popen([sys.executable, "-m", "helpers.res_workers", *args], cwd=TESTS_DIR,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reaper.add(p)
    line = p.stdout.readline()
    assert line and json.loads(line) == {"ready": True}, p.stderr.read()[-3000:]
    return p


def _round_trips(ping, pong, n, tag):
    """n round trips through the echo child; returns each one's seconds."""
    rtts = []
    for i in range(n):
        t0 = time.perf_counter()
        ping.put((tag, i))
        assert pong.get(timeout=30) == (tag, i)
        rtts.append(time.perf_counter() - t0)
    return rtts


def _pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1e6, 1)


@pytest.mark.timeout(120)
def test_a_flooding_producer_gets_full_while_a_normal_pair_carries_on(names, make_topic, reaper,
                                                                      record_property):
    """E3: a process floods a queue (blocking puts, then put_nowait in a loop) and a
    topic with retention; its blocking puts give up with Full and its queue never holds
    more than its capacity; the topic's files stay within retention; meanwhile a pair
    on other queues and a producer/subscriber on another topic get every message, in
    order.  Round-trip latencies with and without the flood are reported, not
    asserted (2 shared cores)."""
    flooded, ping_name, pong_name = names.new("-flooded"), names.new("-ping"), names.new("-pong")
    with pyqmem.Queue(flooded, capacity=64 * 1024, serializer=None) as fq, \
            pyqmem.Queue(ping_name) as ping, pyqmem.Queue(pong_name) as pong:
        flood_topic = make_topic("flooded", segment_bytes=256 * 1024, retention_bytes=2**20)
        other = make_topic("other")
        _child(reaper, "echo", ping_name, pong_name)
        n = 1000
        baseline = _round_trips(ping, pong, n, "base")
        flooder = _child(reaper, "flood", flooded, "flooded", "2.0")
        with other.consumer(start="latest") as sub:
            flooded_rtts = []
            sent = 0
            end = time.monotonic() + 1.5
            while time.monotonic() < end and sent < 20 * n:   # the pair and the other topic
                flooded_rtts += _round_trips(ping, pong, 50, "flood")
                for i in range(10):
                    other.send(b"%d" % (sent + i))
                got = [bytes(sub.get(timeout=30).data) for _ in range(10)]
                assert got == [b"%d" % (sent + i) for i in range(10)]
                sent += 10
        out, err = flooder.communicate(timeout=60)
        assert flooder.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        ping.put(None)
        assert pong.get(timeout=30) is None
        stats = fq.stats()
        assert stats["used_bytes"] <= stats["capacity"]
        assert report["fulls"] >= 5 and report["puts"] == stats["put"] > 0, report
        assert len(report["full_waits"]) == 5
        segments = [os.path.getsize(os.path.join(root, f))
                    for root, _d, files in os.walk(flood_topic.path) for f in files
                    if f.endswith(".seg") or f.endswith(".log")]
        on_disk = sum(segments)
        assert on_disk <= 2**20 + 2 * 256 * 1024, f"{on_disk} bytes of segments: retention not applied"
        assert report["sent"] > 0
    _report(record_property, "e3_flooder", {k: report[k] for k in ("puts", "fulls", "sent")})
    _report(record_property, "e3_full_wait_ms_with_timeout_0.2",
            [round(w * 1e3, 1) for w in report["full_waits"]])
    _report(record_property, "e3_rtt_us_baseline_p50_p99", (_pct(baseline, 0.5), _pct(baseline, 0.99)))
    _report(record_property, "e3_rtt_us_flooded_p50_p99_n",
            (_pct(flooded_rtts, 0.5), _pct(flooded_rtts, 0.99), len(flooded_rtts)))
    _report(record_property, "e3_flooded_topic_segment_bytes", on_disk)


# ----------------------------------------------------------------------------
# A10: os.fork() with open handles
# ----------------------------------------------------------------------------
def _in_forked_child(fn):
    """Run fn() in a child made by os.fork(); the child sends fn's result (or its
    error) through a pipe, then SIGKILLs itself with every handle still open."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: never returns into pytest
        try:
            os.close(r)
            try:
                out = {"ok": fn()}
            except BaseException as exc:   # noqa: BLE001 - reported to the parent
                out = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(w, json.dumps(out).encode())
            os.close(w)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    out = json.loads(data)
    assert "error" not in out, out["error"]
    return out["ok"]


def test_forked_child_rejoins_under_its_own_slot_and_its_death_leaves_the_parent_alive(
        make_queue, make_topic, shm_dir, topic_dir):
    """A10: a child forked with a queue and a group consumer open uses them under member
    slots of its own (never the parent's lease); when it is SIGKILLed the parent is
    still a live member, its lease still acks, and the child's lease comes back to the
    parent.  Every fd of a pyqmem file is close-on-exec."""
    q = make_queue()
    q.put("parent")
    t = make_topic()
    t.send_many([b"a", b"b"])
    c = t.consumer(group="g", visibility_timeout=120)
    mine = c.get(timeout=5)
    parent_slot = q.stats()["member_slot"]
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith((shm_dir, topic_dir)):
            assert fcntl.fcntl(int(fd), fcntl.F_GETFD) & fcntl.FD_CLOEXEC, target

    def child():
        q.put("child")
        st = q.stats()
        theirs = c.get(timeout=5)   # leased to the child's own slot
        return {"slot": st["member_slot"], "members": st["members"], "offset": theirs.offset}

    got = _in_forked_child(child)
    assert got["slot"] != parent_slot and got["members"] == 2, got
    assert got["offset"] != mine.offset
    st = q.stats()
    assert (st["member_slot"], st["members"]) == (parent_slot, 1)
    assert q.get_many(2, timeout=1) == ["parent", "child"]
    mine.ack()   # the parent's lease survived the child's death
    back = c.get(timeout=5)   # the dead child's lease, given back by the sweep
    assert (back.offset, back.delivery_count) == (got["offset"], 2)
    back.ack()
    c.close()
