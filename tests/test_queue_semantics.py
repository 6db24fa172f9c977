"""pyqmem.Queue semantics in one process (contract: docs/api.md, Queue and Errors)."""
from __future__ import annotations

import dataclasses
import decimal
import fractions
import json
import os
import pickle
import queue as stdqueue
import threading
import time
from collections import Counter, OrderedDict

import pytest

import pyqmem
from helpers.paths import queue_path

SMALL = 64 * 1024  # a power of two, so capacity // 4 is unambiguous


def _later(delay, fn, *args):
    """Run fn(*args) in a thread after delay seconds; returns the started thread."""
    box = {}

    def run():
        time.sleep(delay)
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # reported by the caller via box
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.box = box
    t.start()
    return t


def _fill_until_full(q, item, limit=10_000):
    """put_nowait(item) until Full; returns how many fit.  Bounded by `limit`."""
    for n in range(limit):
        try:
            q.put_nowait(item)
        except pyqmem.Full:
            return n
    pytest.fail(f"queue never became full after {limit} puts")


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: tuple = ()


# ----------------------------------------------------------------------------
# order and blocking
# ----------------------------------------------------------------------------
def test_put_get_preserves_fifo_order(make_queue):
    q = make_queue()
    for i in range(1000):
        q.put(i)
    assert [q.get(timeout=5) for _ in range(1000)] == list(range(1000))


def test_fifo_order_survives_many_ring_wraparounds(make_queue):
    q = make_queue(capacity=4096, serializer=None)
    expect = 0
    for i in range(3000):  # ~3000 * 300 B through a 4 KiB ring: dozens of wraps
        q.put(i.to_bytes(4, "little") * (i % 150), timeout=5)
        if q.qsize() >= 3 or i == 2999:
            while q.qsize():
                b = q.get(timeout=5)
                assert b == expect.to_bytes(4, "little") * (expect % 150)
                expect += 1
    assert expect == 3000


def test_get_without_timeout_blocks_until_a_put_arrives(make_queue):
    q = make_queue()
    t = _later(0.2, q.put, "late")
    t0 = time.monotonic()
    assert q.get() == "late"
    assert time.monotonic() - t0 >= 0.15
    t.join(5)
    assert "error" not in t.box


def test_put_without_timeout_blocks_until_a_get_frees_room(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")
    t = _later(0.2, q.get, True, 5)
    t0 = time.monotonic()
    q.put("second")
    assert time.monotonic() - t0 >= 0.15
    t.join(5)
    assert t.box.get("result") == "first"
    assert q.get(timeout=5) == "second"


def test_full_and_empty_are_stdlib_queue_exceptions_and_qmem_errors():
    assert issubclass(pyqmem.Full, stdqueue.Full)
    assert issubclass(pyqmem.Full, pyqmem.QmemError)
    assert issubclass(pyqmem.Empty, stdqueue.Empty)
    assert issubclass(pyqmem.Empty, pyqmem.QmemError)
    assert issubclass(pyqmem.QmemError, Exception)


def test_error_hierarchy_matches_the_contract():
    assert issubclass(pyqmem.Closed, pyqmem.QmemError) and issubclass(pyqmem.Closed, ValueError)
    assert issubclass(pyqmem.MessageTooLarge, pyqmem.QmemError) and issubclass(pyqmem.MessageTooLarge, ValueError)
    assert issubclass(pyqmem.NotFound, pyqmem.QmemError) and issubclass(pyqmem.NotFound, FileNotFoundError)
    assert issubclass(pyqmem.AlreadyExists, pyqmem.QmemError) and issubclass(pyqmem.AlreadyExists, FileExistsError)
    assert issubclass(pyqmem.CorruptError, pyqmem.QmemError)
    assert issubclass(pyqmem.IncompatibleError, pyqmem.QmemError)


def test_get_with_timeout_on_empty_queue_raises_empty_after_the_timeout(make_queue):
    q = make_queue()
    t0 = time.monotonic()
    with pytest.raises(pyqmem.Empty):
        q.get(timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 0.2 + 1.0


def test_get_empty_error_is_catchable_as_queue_empty(make_queue):
    q = make_queue()
    with pytest.raises(stdqueue.Empty):
        q.get(timeout=0.01)


def test_put_on_queue_at_maxsize_raises_full_after_the_timeout(make_queue):
    q = make_queue(maxsize=2)
    q.put(1)
    q.put(2)
    t0 = time.monotonic()
    with pytest.raises(pyqmem.Full):
        q.put(3, timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 0.2 + 1.0
    assert [q.get_nowait(), q.get_nowait()] == [1, 2]
    assert q.empty()


def test_put_on_byte_full_queue_raises_full_after_the_timeout(make_queue):
    q = make_queue(capacity=4096, serializer=None)
    item = b"z" * 1000
    n = _fill_until_full(q, item)
    assert n >= 1
    t0 = time.monotonic()
    with pytest.raises(pyqmem.Full):
        q.put(item, timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 0.2 + 1.0
    assert [q.get_nowait() for _ in range(n)] == [item] * n
    with pytest.raises(pyqmem.Empty):
        q.get_nowait()


def test_byte_full_queue_accepts_again_after_a_get(make_queue):
    q = make_queue(capacity=4096, serializer=None)
    n = _fill_until_full(q, b"y" * 900)
    q.get_nowait()
    q.put(b"after", timeout=1)
    got = [q.get_nowait() for _ in range(n)]
    assert got == [b"y" * 900] * (n - 1) + [b"after"]


# ----------------------------------------------------------------------------
# nowait variants
# ----------------------------------------------------------------------------
def test_get_nowait_on_empty_raises_empty_immediately(make_queue):
    q = make_queue()
    with pytest.raises(pyqmem.Empty):
        q.get_nowait()
    with pytest.raises(pyqmem.Empty):
        q.get(block=False)


def test_put_nowait_on_full_raises_full_immediately(make_queue):
    q = make_queue(maxsize=1)
    q.put_nowait("a")
    with pytest.raises(pyqmem.Full):
        q.put_nowait("b")
    with pytest.raises(pyqmem.Full):
        q.put("b", block=False)
    assert q.get_nowait() == "a"
    assert q.empty()


def test_nowait_round_trip(make_queue):
    q = make_queue()
    q.put_nowait({"k": 1})
    assert q.get_nowait() == {"k": 1}


# ----------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------
def test_put_many_then_get_many_keeps_order(make_queue):
    q = make_queue()
    q.put_many(range(100))
    got = []
    for _ in range(200):  # bounded
        if len(got) == 100:
            break
        batch = q.get_many(30, timeout=5)
        assert 1 <= len(batch) <= 30
        got.extend(batch)
    assert got == list(range(100))


def test_put_many_partial_on_full_queue_raises_full_with_count(make_queue):
    q = make_queue(maxsize=5)
    q.put("a")
    q.put("b")
    t0 = time.monotonic()
    with pytest.raises(pyqmem.Full) as ei:
        q.put_many([f"m{i}" for i in range(10)], timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    assert ei.value.count == 3
    assert [q.get_nowait() for _ in range(5)] == ["a", "b", "m0", "m1", "m2"]
    assert q.empty()


def test_put_many_nonblocking_on_full_queue_reports_zero_put(make_queue):
    q = make_queue(maxsize=1)
    q.put("x")
    with pytest.raises(pyqmem.Full) as ei:
        q.put_many(["y", "z"], block=False)
    assert ei.value.count == 0
    assert q.qsize() == 1


def test_put_many_of_a_generator_with_a_strided_buffer_puts_every_message(make_queue):
    # the raw fast path refuses a non-contiguous buffer and falls back to copying it:
    # the fallback must see the whole generator, not what the first pass left of it
    q = make_queue(serializer=None)
    strided = memoryview(b"abcdef")[::2]
    q.put_many(x for x in [b"y", strided])
    assert q.get_many(5, timeout=1) == [b"y", b"ace"]


def test_put_many_of_nothing_is_a_no_op(make_queue):
    q = make_queue()
    q.put_many([])
    assert q.qsize() == 0


def test_get_many_returns_what_is_there_up_to_max(make_queue):
    q = make_queue()
    q.put_many(["a", "b", "c"])
    got = q.get_many(10, timeout=1)
    assert 1 <= len(got) <= 3
    assert got == ["a", "b", "c"][: len(got)]
    rest = []
    for _ in range(10):
        if len(got) + len(rest) == 3:
            break
        rest.extend(q.get_many(10, timeout=1))
    assert got + rest == ["a", "b", "c"]


def test_get_many_never_returns_more_than_max_messages(make_queue):
    q = make_queue()
    q.put_many(range(10))
    assert q.get_many(2, timeout=1) in ([0], [0, 1])
    assert len(q.get_many(1, timeout=1)) == 1


def test_get_many_on_empty_raises_empty_after_timeout(make_queue):
    q = make_queue()
    t0 = time.monotonic()
    with pytest.raises(pyqmem.Empty):
        q.get_many(5, timeout=0.2)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(pyqmem.Empty):
        q.get_many(5, block=False)


def test_get_many_blocks_until_at_least_one_message(make_queue):
    q = make_queue()
    t = _later(0.2, q.put, "late")
    got = q.get_many(8, timeout=10)
    assert got == ["late"]
    t.join(5)


# ----------------------------------------------------------------------------
# size queries
# ----------------------------------------------------------------------------
def test_qsize_len_empty_full_are_exact_in_one_process(make_queue):
    q = make_queue(maxsize=3)
    assert (q.qsize(), len(q), q.empty(), q.full()) == (0, 0, True, False)
    q.put("a")
    assert (q.qsize(), len(q), q.empty(), q.full()) == (1, 1, False, False)
    q.put_many(["b", "c"])
    assert (q.qsize(), len(q), q.empty(), q.full()) == (3, 3, False, True)
    q.get()
    assert (q.qsize(), len(q), q.empty(), q.full()) == (2, 2, False, False)
    got = q.get_many(5, timeout=1)
    if len(got) < 2:
        got += q.get_many(5, timeout=1)
    assert got == ["b", "c"]
    assert (q.qsize(), len(q), q.empty(), q.full()) == (0, 0, True, False)


def test_qsize_counts_every_put_without_maxsize(make_queue):
    q = make_queue(serializer=None)
    for i in range(1, 201):
        q.put(b"x" * (i % 7))
        assert q.qsize() == i
    assert not q.full()


# ----------------------------------------------------------------------------
# lifecycle
# ----------------------------------------------------------------------------
CLOSED_OPS = {
    "put": lambda q: q.put(1),
    "put_timeout": lambda q: q.put(1, timeout=0.1),
    "put_nowait": lambda q: q.put_nowait(1),
    "put_many": lambda q: q.put_many([1, 2]),
    "get": lambda q: q.get(),
    "get_timeout": lambda q: q.get(timeout=0.1),
    "get_nowait": lambda q: q.get_nowait(),
    "get_many": lambda q: q.get_many(3),
    "qsize": lambda q: q.qsize(),
    "len": lambda q: len(q),
    "empty": lambda q: q.empty(),
    "full": lambda q: q.full(),
    "stats": lambda q: q.stats(),
}


@pytest.mark.parametrize("op", sorted(CLOSED_OPS))
def test_every_operation_after_close_raises_closed(make_queue, op):
    q = make_queue()
    q.put("pending")  # a non-empty queue: get must not succeed after close
    q.close()
    with pytest.raises(pyqmem.Closed) as ei:
        CLOSED_OPS[op](q)
    assert isinstance(ei.value, ValueError)


def test_close_is_idempotent_and_keeps_the_queue(make_queue, qname):
    q = make_queue()
    q.put("kept")
    q.close()
    q.close()
    q.close()
    assert pyqmem.Queue.exists(qname)
    q2 = make_queue(create=False)
    assert q2.get(timeout=1) == "kept"


def test_context_manager_returns_the_handle_and_closes_it(qname):
    with pyqmem.Queue(qname) as q:
        assert isinstance(q, pyqmem.Queue)
        q.put("in")
        assert q.get(timeout=1) == "in"
    with pytest.raises(pyqmem.Closed):
        q.put("out")
    q.close()  # still idempotent


def test_context_manager_closes_on_exception_and_propagates_it(qname):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with pyqmem.Queue(qname) as q:
            raise Boom
    with pytest.raises(pyqmem.Closed):
        q.get_nowait()


def test_create_true_on_existing_queue_raises_already_exists(make_queue, qname):
    make_queue(create=True)
    with pytest.raises(pyqmem.AlreadyExists) as ei:
        pyqmem.Queue(qname, create=True)
    assert isinstance(ei.value, FileExistsError)
    assert isinstance(ei.value, pyqmem.QmemError)


def test_create_false_on_missing_queue_raises_not_found_and_creates_nothing(names, shm_dir):
    name = names.new()
    before = sorted(os.listdir(shm_dir))
    with pytest.raises(pyqmem.NotFound) as ei:
        pyqmem.Queue(name, create=False)
    assert isinstance(ei.value, FileNotFoundError)
    assert isinstance(ei.value, pyqmem.QmemError)
    assert sorted(os.listdir(shm_dir)) == before
    assert not pyqmem.Queue.exists(name)


def test_create_none_creates_then_attaches(make_queue, qname):
    assert not pyqmem.Queue.exists(qname)
    a = make_queue()
    assert pyqmem.Queue.exists(qname)
    assert os.path.exists(queue_path(qname))
    b = make_queue()
    a.put("shared")
    assert b.get(timeout=1) == "shared"


def test_attaching_without_a_capacity_keeps_the_original(make_queue):
    a = make_queue(capacity=SMALL, serializer=None)
    b = make_queue(serializer=None)
    assert a.stats()["capacity"] == SMALL
    assert b.stats()["capacity"] == SMALL
    with pytest.raises(pyqmem.MessageTooLarge):
        b.put(b"x" * (SMALL // 4 + 1))
    b.put(b"x" * (SMALL // 4))
    assert a.get(timeout=1) == b"x" * (SMALL // 4)


def test_unlink_removes_the_name_while_attached_handles_keep_working(make_queue, qname):
    a = make_queue(serializer=None)
    b = make_queue(serializer=None)
    a.put(b"before")
    a.unlink()
    assert not pyqmem.Queue.exists(qname)
    assert not os.path.exists(queue_path(qname))
    assert b.get(timeout=1) == b"before"
    b.put(b"after")
    assert a.get(timeout=1) == b"after"
    assert a.qsize() == 0
    # the name is free again: a new queue with it is a different, empty queue
    c = make_queue(create=True, serializer=None)
    a.put(b"old-object")
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.05)
    assert b.get(timeout=1) == b"old-object"


def test_exists_reflects_creation_and_unlink(make_queue, qname):
    assert pyqmem.Queue.exists(qname) is False
    q = make_queue()
    assert pyqmem.Queue.exists(qname) is True
    q.unlink()
    assert pyqmem.Queue.exists(qname) is False


# ----------------------------------------------------------------------------
# stats
# ----------------------------------------------------------------------------
STATS_KEYS = {"put", "got", "bytes_put", "bytes_got", "depth", "depth_bytes", "capacity", "producers", "consumers"}


def test_stats_has_the_contract_keys(make_queue):
    s = make_queue().stats()
    assert isinstance(s, dict)
    assert STATS_KEYS <= set(s), STATS_KEYS - set(s)


def test_stats_counts_puts_gets_bytes_and_depth(make_queue):
    q = make_queue(capacity=2**20, serializer=None)
    sizes = [0, 1, 10, 100, 1000, 5000, 17, 3]
    for i, n in enumerate(sizes):
        q.put(bytes([i]) * n)
    got = [q.get(timeout=1) for _ in range(3)]
    assert [len(g) for g in got] == sizes[:3]
    s = q.stats()
    assert s["put"] == len(sizes)
    assert s["got"] == 3
    assert s["bytes_put"] == sum(sizes)
    assert s["bytes_got"] == sum(sizes[:3])
    assert s["depth"] == len(sizes) - 3
    assert s["depth_bytes"] == sum(sizes[3:])
    assert s["capacity"] == 2**20
    assert s["producers"] == 1
    assert s["consumers"] == 1


def test_stats_are_shared_by_all_handles(make_queue):
    a = make_queue(serializer=None)
    b = make_queue(serializer=None)
    a.put(b"12345")
    a.put(b"67")
    b.get(timeout=1)
    for s in (a.stats(), b.stats()):
        assert (s["put"], s["got"], s["bytes_put"], s["bytes_got"], s["depth"], s["depth_bytes"]) == (2, 1, 7, 5, 1, 2)
        assert s["producers"] >= 1 and s["consumers"] >= 1


# ----------------------------------------------------------------------------
# serializers
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("serializer", [None, "raw"])
def test_raw_serializer_accepts_bytes_like_and_returns_bytes(make_queue, serializer):
    import array

    q = make_queue(serializer=serializer)
    inputs = [
        b"plain bytes",
        bytearray(b"a bytearray"),
        memoryview(b"a memoryview"),
        memoryview(b"xxSLICExx")[2:7],
        array.array("i", [1, 2, 3]),
    ]
    for x in inputs:
        q.put(x)
    for x in inputs:
        out = q.get(timeout=1)
        assert type(out) is bytes
        assert out == bytes(x)


@pytest.mark.parametrize("bad", ["a str", 42, None, [1, 2], {"k": b"v"}, 3.5])
def test_raw_serializer_rejects_non_bytes_with_type_error(make_queue, bad):
    q = make_queue(serializer=None)
    with pytest.raises(TypeError):
        q.put(bad)
    with pytest.raises(TypeError):
        q.put_many([b"ok", bad])  # nothing past the bad item; at most the good one
    assert q.qsize() <= 1


def test_custom_serializer_object_round_trips(make_queue):
    class JsonSerializer:
        def __init__(self):
            self.dumped = 0
            self.loaded = 0

        def dumps(self, obj):
            self.dumped += 1
            return json.dumps(obj, sort_keys=True).encode()

        def loads(self, buf):
            self.loaded += 1
            return json.loads(bytes(buf))

    ser = JsonSerializer()
    q = make_queue(serializer=ser)
    docs = [{"a": 1, "b": [1, 2, {"c": None}]}, [], "text", 3.25, True]
    for d in docs:
        q.put(d)
    assert [q.get(timeout=1) for _ in docs] == docs
    assert ser.dumped == len(docs) and ser.loaded == len(docs)
    # prove the payload really is our JSON, not pickle: a raw reader sees it
    raw = make_queue(serializer=None)
    q.put({"z": 1})
    assert raw.get(timeout=1) == b'{"z": 1}'


def test_pickle_serializer_round_trips_arbitrary_objects(make_queue):
    q = make_queue()
    objs = [
        None, True, 0, -1, 2**200, 3.5, 1 + 2j, "unicode ✓ é", b"\x00\xff", bytearray(b"ba"),
        (1, (2, (3,))), [1, [2, [3]]], {"k": {"n": [1, 2]}}, {1, 2, 3}, frozenset({"f"}),
        OrderedDict(a=1, b=2), Counter("hello"), decimal.Decimal("1.10"), fractions.Fraction(3, 7),
        Point(1, 2.5, ("t",)), ValueError("boom", 7), range(3, 30, 4), slice(1, None, 2),
    ]
    for o in objs:
        q.put(o)
    out = [q.get(timeout=1) for _ in objs]
    for a, b in zip(objs, out):
        if isinstance(a, BaseException):
            assert type(b) is type(a) and b.args == a.args
        else:
            assert type(b) is type(a) and b == a
    # shared references survive inside one message
    shared = [1, 2]
    q.put({"x": shared, "y": shared})
    got = q.get(timeout=1)
    assert got["x"] is got["y"]


def test_pickle_serializer_is_the_default_and_matches_multiprocessing_semantics(make_queue):
    q = make_queue()
    q.put(Point(3, 4.0))
    assert q.get(timeout=1) == Point(3, 4.0)


@pytest.mark.parametrize("serializer", [None, "pickle"])
def test_empty_message_round_trips(make_queue, serializer):
    q = make_queue(serializer=serializer)
    q.put(b"")
    q.put(b"")
    assert q.qsize() == 2
    assert q.get(timeout=1) == b""
    assert q.get(timeout=1) == b""
    assert q.empty()


def test_handle_pickles_to_a_small_token_that_reattaches_by_name(make_queue):
    q = make_queue(capacity=2**20)
    q.put("via token")
    blob = pickle.dumps(q)
    assert len(blob) < 4096
    q2 = pickle.loads(blob)
    try:
        assert q2.get(timeout=1) == "via token"
    finally:
        q2.close()


# ----------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_threads_sharing_one_handle_deliver_every_message_exactly_once(make_queue):
    q = make_queue(capacity=2**20)
    n_threads, per_thread = 4, 5000
    total = n_threads * per_thread
    deadline = time.monotonic() + 120
    received = [[] for _ in range(n_threads)]
    errors = []
    lock = threading.Lock()
    count = [0]

    def producer(pid):
        try:
            for seq in range(per_thread):
                if time.monotonic() > deadline:
                    raise TimeoutError("producer out of time")
                q.put((pid, seq), timeout=30)
        except BaseException as e:
            errors.append(repr(e))

    def consumer(cid):
        try:
            while time.monotonic() < deadline:
                with lock:
                    if count[0] >= total:
                        return
                try:
                    item = q.get(timeout=0.05)
                except pyqmem.Empty:
                    continue
                received[cid].append(item)
                with lock:
                    count[0] += 1
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(n_threads)]
    threads += [threading.Thread(target=consumer, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic() + 5))
    assert not any(t.is_alive() for t in threads), "threads did not finish in time"
    assert errors == []
    flat = [x for r in received for x in r]
    assert len(flat) == total
    assert Counter(flat) == Counter((p, s) for p in range(n_threads) for s in range(per_thread))
    for r in received:  # FIFO per producer as seen by each consumer
        last = {}
        for p, s in r:
            assert s > last.get(p, -1)
            last[p] = s
    assert q.qsize() == 0


def test_a_queue_is_unlinked_by_name_without_opening_it(make_queue, qname):
    q = make_queue()
    q.put("stays readable")
    pyqmem.Queue.unlink(qname)
    assert not pyqmem.Queue.exists(qname)
    assert q.get(timeout=1) == "stays readable"  # attached handles keep working
    with pytest.raises(pyqmem.NotFound):
        pyqmem.Queue.unlink(qname)
    pyqmem.Queue.unlink(qname, missing_ok=True)
    with pytest.raises(ValueError):
        pyqmem.Queue.unlink("../etc")
