"""Single-process micro-benchmarks of pyqmem calls (pytest-benchmark).

    pytest bench/test_micro.py --benchmark-only
    pytest bench/test_micro.py --benchmark-only --benchmark-group-by=group --benchmark-columns=min,median,ops

Each benchmark is one round trip in ONE process (put then get on the same
queue), so it measures the per-call cost of the API -- serialization, the C
core, the GIL release -- without any cross-process wake-up.  The
multiprocessing.Queue and faster_fifo.Queue figures beside them are for scale
only: an mp.Queue round trip includes a hand-off to its feeder thread and a
pipe.  Cross-process throughput is bench/compare.py's job.

Marked ``bench``: skipped unless run with --benchmark-only (see conftest.py).
"""

import itertools
import multiprocessing as mp
import os
import random

import pytest

pytest.importorskip("pytest_benchmark")
pyqmem = pytest.importorskip("pyqmem")

pytestmark = pytest.mark.bench

SMALL = bytes(range(64))
BIG = random.Random(1).randbytes(2**20)
BATCH = [bytes([i]) * 64 for i in range(64)]
OBJ = (12345, "the quick brown fox", 0.5)
TIMEOUT = 10.0  # no benchmark may hang: a lost message fails the test

_seq = itertools.count()


def _name(tag):
    return f"microbench-{os.getpid()}-{next(_seq)}-{tag}"


@pytest.fixture
def pq_raw():
    q = pyqmem.Queue(_name("raw"), capacity=16 * 2**20, serializer=None, create=True)
    try:
        yield q
    finally:
        q.unlink()
        q.close()


@pytest.fixture
def pq_pickle():
    q = pyqmem.Queue(_name("pickle"), capacity=16 * 2**20, create=True)
    try:
        yield q
    finally:
        q.unlink()
        q.close()


@pytest.fixture
def mpq():
    q = mp.get_context("spawn").Queue()
    try:
        yield q
    finally:
        q.close()
        q.join_thread()


def _ff(raw):
    ff = pytest.importorskip("faster_fifo")
    if raw:
        return ff.Queue(max_size_bytes=16 * 2**20, loads=lambda b: bytes(b), dumps=lambda x: x)
    return ff.Queue(max_size_bytes=16 * 2**20)


def _roundtrip(q, msg):
    put, get = q.put, q.get

    def rt():
        put(msg)
        return get(True, TIMEOUT)

    return rt


def _roundtrip_many(put_many, get_many, msgs):
    def rt():
        put_many(msgs)
        return get_many()

    return rt


# ---- 64 B raw bytes, put + get -------------------------------------------


@pytest.mark.benchmark(group="roundtrip 64 B raw")
def test_pyqmem_raw_64B(benchmark, pq_raw):
    assert benchmark(_roundtrip(pq_raw, SMALL)) == SMALL


@pytest.mark.benchmark(group="roundtrip 64 B raw")
def test_mp_queue_64B(benchmark, mpq):
    assert benchmark(_roundtrip(mpq, SMALL)) == SMALL


@pytest.mark.benchmark(group="roundtrip 64 B raw")
def test_faster_fifo_raw_64B(benchmark):
    assert benchmark(_roundtrip(_ff(raw=True), SMALL)) == SMALL


# ---- 64 x 64 B, put_many + get_many -----------------------------------------


@pytest.mark.benchmark(group="batch 64 x 64 B raw")
def test_pyqmem_raw_batch64(benchmark, pq_raw):
    rt = _roundtrip_many(pq_raw.put_many, lambda: pq_raw.get_many(64, True, TIMEOUT), BATCH)
    assert benchmark(rt) == BATCH


@pytest.mark.benchmark(group="batch 64 x 64 B raw")
def test_mp_queue_64_single_ops(benchmark, mpq):
    # mp.Queue has no batch API: 64 puts then 64 gets
    put, get = mpq.put, mpq.get

    def rt():
        for m in BATCH:
            put(m)
        return [get(True, TIMEOUT) for _ in BATCH]

    assert benchmark(rt) == BATCH


@pytest.mark.benchmark(group="batch 64 x 64 B raw")
def test_faster_fifo_raw_batch64(benchmark):
    q = _ff(raw=True)
    rt = _roundtrip_many(
        q.put_many, lambda: q.get_many(True, TIMEOUT, max_messages_to_get=64), BATCH
    )
    assert benchmark(rt) == BATCH


# ---- pickled small object, put + get ----------------------------------------


@pytest.mark.benchmark(group="roundtrip pickled (int, str, float)")
def test_pyqmem_pickle_small(benchmark, pq_pickle):
    assert benchmark(_roundtrip(pq_pickle, OBJ)) == OBJ


@pytest.mark.benchmark(group="roundtrip pickled (int, str, float)")
def test_mp_queue_pickle_small(benchmark, mpq):
    assert benchmark(_roundtrip(mpq, OBJ)) == OBJ


@pytest.mark.benchmark(group="roundtrip pickled (int, str, float)")
def test_faster_fifo_pickle_small(benchmark):
    assert benchmark(_roundtrip(_ff(raw=False), OBJ)) == OBJ


# ---- 1 MiB raw bytes, put + get -----------------------------------------------


@pytest.mark.benchmark(group="roundtrip 1 MiB raw")
def test_pyqmem_raw_1MiB(benchmark, pq_raw):
    assert benchmark(_roundtrip(pq_raw, BIG)) == BIG


@pytest.mark.benchmark(group="roundtrip 1 MiB raw")
def test_mp_queue_1MiB(benchmark, mpq):
    assert benchmark(_roundtrip(mpq, BIG)) == BIG


@pytest.mark.benchmark(group="roundtrip 1 MiB raw")
def test_faster_fifo_raw_1MiB(benchmark):
    assert benchmark(_roundtrip(_ff(raw=True), BIG)) == BIG
