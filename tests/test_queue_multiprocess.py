"""pyqmem.Queue across processes: stress with self-checking messages, handle passing under
every start method and ProcessPoolExecutor, large numpy arrays and pickle protocol 5."""
from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import pickle
import random
import time
from array import array

import pytest

from helpers import workers
from helpers.history import History

SCALE = float(os.environ.get("PYQMEM_STRESS_SCALE", "1"))
STRESS_MESSAGES = max(400, int(200_000 * SCALE))
STRESS_BUDGET = 240 * max(1.0, SCALE)


def _ctx(method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"start method {method} unavailable")
    return mp.get_context(method)


def _start(reaper, ctx, target, args):
    p = ctx.Process(target=target, args=args, daemon=True)
    reaper.add(p)
    p.start()
    return p


# ----------------------------------------------------------------------------
# stress
# ----------------------------------------------------------------------------
@pytest.mark.timeout(STRESS_BUDGET + 60)
def test_four_producers_four_consumers_deliver_every_message_once_in_per_producer_order(qname, make_queue, reaper):
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    n_prod, n_cons = 4, 4
    per_producer = STRESS_MESSAGES // n_prod
    q = make_queue(serializer=None, create=True)  # default 16 MiB ring: 256 KiB records fit
    stop = ctx.Event()
    deadline = time.monotonic() + STRESS_BUDGET

    cons_conns, prod_conns = [], []
    for c in range(n_cons):
        r, w = ctx.Pipe(duplex=False)
        _start(reaper, ctx, workers.stress_consumer, (qname, c, w, stop, STRESS_BUDGET))
        w.close()
        cons_conns.append(r)
    for p in range(n_prod):
        r, w = ctx.Pipe(duplex=False)
        _start(reaper, ctx, workers.stress_producer, (qname, p, per_producer, 1000 + p, w, STRESS_BUDGET))
        w.close()
        prod_conns.append(r)

    produced, errors = {}, []
    for r in prod_conns:
        left = max(0.1, deadline - time.monotonic())
        assert r.poll(left), "producer did not finish in time"
        for _ in range(3):
            msg = r.recv()
            if msg[0] == "error":
                errors.append(msg)
                continue
            if msg[0] == "done":
                produced[msg[1]] = msg[2]
                break
    assert errors == [], errors
    assert produced == {p: per_producer for p in range(n_prod)}

    # all producers are done: wait (bounded) for the consumers to empty the queue, then stop them
    end = min(deadline, time.monotonic() + 120)
    while q.qsize() and time.monotonic() < end:
        time.sleep(0.01)
    stop.set()

    hist = History()
    for p in range(n_prod):
        hist.ack_many(p, range(per_producer))
    torn_total, torn_examples = 0, []
    for r in cons_conns:
        left = max(0.1, deadline + 30 - time.monotonic())
        assert r.poll(left), "consumer did not finish in time"
        msg = r.recv()
        while msg[0] == "error":
            errors.append(msg)
            msg = r.recv()
        assert msg[0] == "done"
        _, cid, (raw, examples, n_torn) = msg
        torn_total += n_torn
        torn_examples += examples
        got = array("Q")
        got.frombytes(raw)
        hist.deliver_many(cid, ((v >> 40, v & ((1 << 40) - 1)) for v in got))
    assert errors == [], errors
    assert torn_total == 0, torn_examples
    res = hist.check()
    assert res.ok(), res.summary()
    assert res.delivered == n_prod * per_producer
    s = q.stats()
    assert s["depth"] == 0
    assert s["put"] == s["got"] == n_prod * per_producer


# ----------------------------------------------------------------------------
# passing handles to children
# ----------------------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_handles_passed_to_children_work_under_every_start_method(names, make_queue, reaper, method):
    ctx = _ctx(method)
    q_in = make_queue(name=names.new("-in"))
    q_out = make_queue(name=names.new("-out"))
    n_children, per_child = 3, 50
    conns, procs = [], []
    for _ in range(n_children):
        r, w = ctx.Pipe(duplex=False)
        procs.append(_start(reaper, ctx, workers.echo_with_handle, (q_in, q_out, per_child, w)))
        w.close()
        conns.append(r)
    items = [("item", i, "x" * (i % 97)) for i in range(n_children * per_child)]
    for it in items:
        q_in.put(it, timeout=10)
    results = []
    for _ in range(len(items)):
        results.append(q_out.get(timeout=30))
    child_pids = set()
    for r in conns:
        assert r.poll(30)
        status = r.recv()
        assert status[0] == "ok", status
        child_pids.add(status[1])
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert sorted(item for _pid, item in results) == sorted(items)
    assert {pid for pid, _ in results} <= child_pids
    assert os.getpid() not in child_pids
    # per child, items arrive in the order the child took them, which is FIFO order
    by_child = {}
    for pid, item in results:
        by_child.setdefault(pid, []).append(item[1])
    for seq in by_child.values():
        assert seq == sorted(seq)
    assert q_in.qsize() == 0 and q_out.qsize() == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_handles_work_through_process_pool_executor(make_queue, method):
    ctx = _ctx(method)
    q = make_queue()
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
        puts = [ex.submit(workers.pool_put, q, k * 100, 100) for k in range(4)]
        done = [f.result(timeout=60) for f in puts]
        assert sum(n for _pid, n in done) == 400
        assert os.getpid() not in {pid for pid, _ in done}
        got = [q.get(timeout=10) for _ in range(400)]
        assert sorted(i for _tag, i in got) == list(range(400))
        for i in range(50):
            q.put(("back", i))
        gets = [ex.submit(workers.pool_get, q, 25) for _ in range(2)]
        back = [x for f in gets for x in f.result(timeout=60)]
    assert sorted(back) == [("back", i) for i in range(50)]
    assert q.qsize() == 0


def test_forked_child_inherits_an_open_handle_and_can_use_it(names, make_queue, reaper):
    ctx = _ctx("fork")
    q = make_queue(name=names.new("-in"))
    r, w = ctx.Pipe(duplex=False)
    q2 = make_queue(name=names.new("-out"))
    p = _start(reaper, ctx, workers.echo_with_handle, (q, q2, 2, w))
    w.close()
    q.put("one")
    q.put("two")
    assert [item for _pid, item in (q2.get(timeout=30), q2.get(timeout=30))] == ["one", "two"]
    assert r.poll(30) and r.recv()[0] == "ok"
    p.join(10)
    assert p.exitcode == 0
    # the parent's handle is unaffected by the child's exit
    q.put("three")
    assert q.get(timeout=1) == "three"


# ----------------------------------------------------------------------------
# numpy and pickle protocol 5
# ----------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_100mb_numpy_array_round_trips_across_processes_and_is_writable(names, make_queue, reaper):
    np = pytest.importorskip("numpy")
    ctx = _ctx("spawn")
    n = 100 * 10**6 // 8
    a = np.random.default_rng(1).standard_normal(n)
    assert a.nbytes >= 100 * 10**6
    cap = 2**29  # 512 MiB: capacity // 4 = 128 MiB > 100 MB + pickle framing
    q_in = make_queue(name=names.new("-in"), capacity=cap)
    q_out = make_queue(name=names.new("-out"), capacity=cap)
    r, w = ctx.Pipe(duplex=False)
    p = _start(reaper, ctx, workers.numpy_modify_and_return, (q_in, q_out, w))
    w.close()
    q_in.put(a, timeout=60)
    assert r.poll(120), "child did not answer"
    status = r.recv()
    assert status[0] == "ok", status
    b = q_out.get(timeout=60)
    info = status[1]["a"]
    assert info["writeable"], "received array is read-only"
    assert info["shape"] == a.shape and info["dtype"] == str(a.dtype)
    assert info["sum"] == pytest.approx(float(a.sum()), rel=1e-9, abs=1e-6)
    assert isinstance(b, np.ndarray) and b.shape == a.shape and b.dtype == a.dtype
    assert b[0] == -1
    assert np.array_equal(b[1:], a[1:])
    assert b.flags.writeable
    b[1] = 5.0  # writable here too
    p.join(30)
    assert p.exitcode == 0


def _oob_payload(np):
    rng = np.random.default_rng(5)
    return {
        "big_bytes": rng.bytes(24 * 2**20),
        "array": rng.integers(0, 2**31, size=3 * 2**20, dtype=np.int64),          # 24 MiB
        "fortran": np.asfortranarray(rng.standard_normal((512, 1024))),
        "strided": np.arange(2**20, dtype=np.float32)[::3],
        "structured": np.zeros(1000, dtype=[("x", "<i4"), ("y", "<f8")]),
        "small": [1, "two", 3.0],
    }


ARRAY_KEYS = ("array", "fortran", "strided", "structured")


@pytest.mark.timeout(180)
def test_pickle_protocol_5_out_of_band_buffers_round_trip_across_processes(names, make_queue, reaper):
    np = pytest.importorskip("numpy")
    ctx = _ctx("spawn")
    cap = 2**29
    q_in = make_queue(name=names.new("-in"), capacity=cap)
    q_out = make_queue(name=names.new("-out"), capacity=cap)
    obj = _oob_payload(np)
    r, w = ctx.Pipe(duplex=False)
    p = _start(reaper, ctx, workers.numpy_modify_and_return, (q_in, q_out, w))
    w.close()
    q_in.put(obj, timeout=60)
    assert r.poll(120), "child did not answer"
    status = r.recv()
    assert status[0] == "ok", status
    back = q_out.get(timeout=60)
    for k in ARRAY_KEYS:
        assert status[1][k]["writeable"], f"{k} arrived read-only in the child"
    assert type(back["big_bytes"]) is bytes
    assert back["big_bytes"] == obj["big_bytes"]
    for k in ARRAY_KEYS:
        got, exp = back[k], obj[k]
        assert isinstance(got, np.ndarray), k
        assert got.dtype == exp.dtype and got.shape == exp.shape, k
        # the child set element 0 to -1 (every field, for the structured one)
        assert np.array_equal(got.ravel()[1:], exp.ravel()[1:]), k
        first = got.ravel()[0]
        assert (first["x"] == -1 if exp.dtype.names else first == -1), k
        assert got.flags.writeable, k
    assert back["small"] == [1, "two", 3.0]
    p.join(30)
    assert p.exitcode == 0


def test_pickle_protocol_5_buffers_round_trip_in_one_process(make_queue):
    np = pytest.importorskip("numpy")
    q = make_queue(capacity=2**28)
    big = bytes(random.Random(3).randbytes(16 * 2**20))
    arr = np.arange(4 * 2**20, dtype=np.float64)
    q.put(big)
    q.put(arr)
    q.put({"a": arr[::2], "b": big})
    assert q.get(timeout=30) == big
    got = q.get(timeout=30)
    assert np.array_equal(got, arr) and got.flags.writeable
    got[0] = 42  # must not write into the queue or the original
    assert arr[0] == 0
    d = q.get(timeout=30)
    assert np.array_equal(d["a"], arr[::2]) and d["b"] == big
    pb_data = random.Random(4).randbytes(2**20)
    q.put(pickle.PickleBuffer(bytearray(pb_data)))
    assert bytes(q.get(timeout=30)) == pb_data
