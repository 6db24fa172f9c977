"""Entry points for child processes (importable under fork, spawn and forkserver).

Every loop is bounded in count and in time.  Children report through a
multiprocessing Connection (see collector.py), never through the queue under test.
"""
from __future__ import annotations

import os
import random
import time
import traceback
from array import array

from . import msgs
from .reporting import reporting
from .reporting import send as _send


def _diag():
    """Let the parent ask for this child's Python stacks (SIGUSR1 -> stderr) when it looks stuck."""
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _open(name, **kw):
    import pyqmem

    _diag()

    kw.setdefault("serializer", None)
    kw.setdefault("create", False)
    return pyqmem.Queue(name, **kw)


# ----------------------------------------------------------------------------
# multi-process stress (no kills)
# ----------------------------------------------------------------------------
def stress_producer(name, producer, n, seed, conn, deadline_s):
    """Put n self-checking messages of random sizes; report ("done", producer, n_put)."""
    import pyqmem

    end = time.monotonic() + deadline_s
    seq = 0
    with reporting(conn, producer, lambda: seq) as closing:
        q = closing(_open(name))
        rng = random.Random(seed)
        while seq < n and time.monotonic() < end:
            if rng.random() < 0.5:
                k = min(n - seq, rng.randint(1, 32))
                batch = []
                for i in range(k):
                    s = seq + i
                    size = 0 if s == 0 else msgs.MAX_PAYLOAD if s == 1 else msgs.draw_size(rng)
                    batch.append(msgs.encode(producer, s, size))
                done = 0
                while done < k and time.monotonic() < end:
                    try:
                        q.put_many(batch[done:], timeout=1.0)
                        done = k
                    except pyqmem.Full as e:
                        done += e.count
                seq += done
            else:
                size = 0 if seq == 0 else msgs.MAX_PAYLOAD if seq == 1 else msgs.draw_size(rng)
                m = msgs.encode(producer, seq, size)
                try:
                    q.put(m, timeout=1.0)
                except pyqmem.Full:
                    continue
                seq += 1


def stress_consumer(name, consumer, conn, stop, deadline_s):
    """Get (mixing get and get_many) until stop is set and the queue is empty.

    Reports ("done", consumer, (receipt order as array('Q') bytes of
    producer<<40|seq, first torn reports, torn count))."""
    import pyqmem

    end = time.monotonic() + deadline_s
    got = array("Q")
    torn = []
    rng = random.Random(consumer)
    with reporting(conn, consumer, lambda: (got.tobytes(), torn[:20], len(torn))) as closing:
        q = closing(_open(name))
        while time.monotonic() < end:
            try:
                if rng.random() < 0.5:
                    bufs = q.get_many(rng.randint(1, 16), timeout=0.05)
                else:
                    bufs = [q.get(timeout=0.05)]
            except pyqmem.Empty:
                if stop.is_set():
                    break
                continue
            for b in bufs:
                if type(b) is not bytes:
                    torn.append(f"get returned {type(b).__name__}, not bytes")
                try:
                    p, s, _t, _n = msgs.decode(b)
                except msgs.TornMessage as e:
                    torn.append(str(e))
                    continue
                got.append((p << 40) | s)


# ----------------------------------------------------------------------------
# handle passing
# ----------------------------------------------------------------------------
def echo_with_handle(q_in, q_out, n, conn):
    """Receive n items on q_in (handles passed as arguments) and put (pid, item) on q_out."""
    try:
        for _ in range(n):
            item = q_in.get(timeout=30)
            q_out.put((os.getpid(), item), timeout=30)
        conn.send(("ok", os.getpid()))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def pool_put(q, start, n):
    for i in range(start, start + n):
        q.put(("pool", i), timeout=30)
    return os.getpid(), n


def pool_get(q, n):
    return [q.get(timeout=30) for _ in range(n)]


# ----------------------------------------------------------------------------
# numpy / out-of-band pickling
# ----------------------------------------------------------------------------
def numpy_modify_and_return(q_in, q_out, conn):
    """Get one object, check numpy arrays in it are writable, modify them, send it back."""
    import numpy as np

    try:
        obj = q_in.get(timeout=60)
        info = {}
        arrays = obj if isinstance(obj, dict) else {"a": obj}
        for k, v in arrays.items():
            if isinstance(v, np.ndarray):
                info[k] = {"writeable": bool(v.flags.writeable), "shape": v.shape, "dtype": str(v.dtype),
                           "sum": None if v.dtype.names else float(v.sum(dtype=np.float64))}
                if v.flags.writeable:
                    v.flat[0] = -1
        q_out.put(obj, timeout=60)
        conn.send(("ok", info))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


# ----------------------------------------------------------------------------
# crash tests
# ----------------------------------------------------------------------------
def report_producer(name, producer, conn, stop, throttle_s, max_size, seed, deadline_s):
    """Produce until stop is set; report acked sequence numbers in small batches."""
    import pyqmem

    end = time.monotonic() + deadline_s
    acked = []
    last_flush = time.monotonic()
    seq = 0

    def finish():  # the last acks, then ("done", producer, seq)
        if acked:
            _send(conn, "ack", producer, acked)
        return seq

    with reporting(conn, producer, finish) as closing:
        q = closing(_open(name))
        rng = random.Random(seed)
        while not stop.is_set() and time.monotonic() < end:
            size = msgs.draw_size(rng, max_size)
            m = msgs.encode(producer, seq, size, time.monotonic())
            try:
                q.put(m, timeout=0.5)
            except pyqmem.Full:
                _send(conn, "full", producer, seq)
                continue
            acked.append(seq)
            seq += 1
            now = time.monotonic()
            if len(acked) >= 64 or now - last_flush > 0.005:
                _send(conn, "ack", producer, acked)
                acked = []
                last_flush = now
            if throttle_s:
                time.sleep(throttle_s)


def victim_producer(name, producer, conn, max_size, seed, deadline_s):
    """Produce as fast as possible, reporting every returned put at once, until killed."""
    import pyqmem

    end = time.monotonic() + deadline_s
    try:
        q = _open(name)
        rng = random.Random(seed)
        seq = 0
        while time.monotonic() < end:
            # biased to larger records so a kill often lands inside the copy
            size = rng.randint(0, max_size) if rng.random() < 0.5 else msgs.draw_size(rng, max_size)
            m = msgs.encode(producer, seq, size, time.monotonic())
            try:
                q.put(m, timeout=0.5)
            except pyqmem.Full:
                _send(conn, "full", producer, seq)
                continue
            conn.send(("ack", producer, [seq]))
            seq += 1
    except BaseException:
        _send(conn, "error", producer, traceback.format_exc())
    conn.close()


def report_consumer(name, consumer, conn, stop, throttle_s, deadline_s):
    """Consume until stop is set and the queue looks empty; report deliveries in batches."""
    import pyqmem

    end = time.monotonic() + deadline_s
    batch = []
    last_flush = time.monotonic()

    def finish():  # the last deliveries, then ("done", consumer, None)
        if batch:
            _send(conn, "deliver", consumer, batch)

    with reporting(conn, consumer, finish) as closing:
        q = closing(_open(name))
        while time.monotonic() < end:
            try:
                b = q.get(timeout=0.01)
            except pyqmem.Empty:
                if batch:
                    _send(conn, "deliver", consumer, batch)
                    batch = []
                    last_flush = time.monotonic()
                if stop.is_set():
                    break
                continue
            t_recv = time.monotonic()
            try:
                p, s, t_put, _n = msgs.decode(b)
            except msgs.TornMessage as e:
                _send(conn, "torn", consumer, str(e))
                continue
            batch.append((p, s, t_put, t_recv))
            if len(batch) >= 128 or t_recv - last_flush > 0.003:
                _send(conn, "deliver", consumer, batch)
                batch = []
                last_flush = t_recv
            if throttle_s:
                time.sleep(throttle_s)


def victim_consumer(name, consumer, conn, deadline_s):
    """Consume as fast as possible, reporting every delivery at once, until killed."""
    import pyqmem

    end = time.monotonic() + deadline_s
    try:
        q = _open(name)
        while time.monotonic() < end:
            try:
                b = q.get(timeout=0.05)
            except pyqmem.Empty:
                continue
            t_recv = time.monotonic()
            try:
                p, s, t_put, _n = msgs.decode(b)
            except msgs.TornMessage as e:
                _send(conn, "torn", consumer, str(e))
                continue
            conn.send(("deliver", consumer, [(p, s, t_put, t_recv)]))
    except BaseException:
        _send(conn, "error", consumer, traceback.format_exc())
    conn.close()


def blast_producer(name, producer, conn, stop, deadline_s, fast=False):
    """Keep the ring full of self-checking messages (no per-message reports); report errors.
    stop=None for a process that will be SIGKILLed (see blast_consumer).  fast=True cycles
    through a few pre-encoded messages so nearly all the time is spent inside put()."""
    import pyqmem

    end = time.monotonic() + deadline_s
    sizes = (100, 5000, 20000, 60 * 1024)
    canned = [msgs.encode(producer, i, n) for i, n in enumerate(sizes)] if fast else None
    seq = 0
    with reporting(conn, producer, lambda: seq) as closing:
        q = closing(_open(name))
        while (stop is None or not stop.is_set()) and time.monotonic() < end:
            m = canned[seq % len(canned)] if fast else msgs.encode(producer, seq, sizes[seq % len(sizes)])
            try:
                q.put(m, timeout=0.2)
            except pyqmem.Full:
                continue
            if seq == 0:
                _send(conn, "hello", producer)
            seq += 1


def blast_consumer(name, consumer, conn, stop, throttle_s, deadline_s, fast=False):
    """Take messages as fast as possible (checking each unless fast); report only problems.

    A process that may be SIGKILLed must get stop=None: a multiprocessing Event has a lock
    inside, and a process killed while holding it wedges every other user of the Event."""
    import pyqmem

    end = time.monotonic() + deadline_s
    n = 0
    with reporting(conn, consumer, lambda: n) as closing:
        q = closing(_open(name))
        while (stop is None or not stop.is_set()) and time.monotonic() < end:
            try:
                b = q.get(timeout=0.05)
            except pyqmem.Empty:
                continue
            if not fast or n == 0:  # fast: nearly all the time is spent inside get()
                try:
                    msgs.decode(b)
                except msgs.TornMessage as e:
                    _send(conn, "torn", consumer, str(e))
            if n == 0:
                _send(conn, "hello", consumer)
            n += 1
            if throttle_s:
                time.sleep(throttle_s)
