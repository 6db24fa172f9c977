"""Child-process entry points (and the parent's report pump) for the consumer-group tests
(tests/test_group_multiprocess.py, tests/test_group_crash.py).

The contract under test is docs/design/group-consumer.md.  Children report through a
multiprocessing Connection, never through the topic under test; every report is sent at
once (one small pickle, one atomic pipe write), so a SIGKILL loses at most the report of
the step it interrupted.  Report tuples:

    ("ready", who, pid)
    ("d", who, pid, partition, offset, delivery_count, producer, seq, t)
                       a delivery, sent after get returned and before processing;
                       t = time.monotonic() right after get returned
    ("a", who, pid, partition, offset, producer, seq, t0, t1)
                       an ack that returned; t0/t1 = before/after the ack() call
    ("stale", who, pid, partition, offset, what)   ack/nack/extend raised StaleAck
    ("batch", who, [(partition, offset, delivery_count, producer, seq), ...])
                       throughput members: records processed and acked, in batches
    ("sent", producer, seq, partition, offset)     a send that returned
    ("sent_many", producer, [(seq, partition, offset), ...])
    ("torn", who, text) / ("error", who, text) / ("done", who, info)

CLOCK_MONOTONIC (time.monotonic) is system-wide on Linux, so times from different
processes are comparable.  Every loop is bounded in count and in time.
"""
from __future__ import annotations

import os
import random
import time
import traceback
from collections import defaultdict
from multiprocessing.connection import wait as mp_wait

from . import msgs
from .reporting import reporting
from .reporting import send as _send
from .stopflag import StopFlag  # noqa: F401  (gw.StopFlag)

POISON = 0xFFFF_FFFE          # producer id of a record whose handler dies (os._exit(1))


def _diag():
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _open_topic(dir, name):
    import pyqmem

    _diag()
    return pyqmem.Topic(name, dir=dir, create=False)


def _consumer(t, group, kw):
    """t.consumer(group=group, **kw); kw["retry"] may be a dict of RetryPolicy args."""
    import pyqmem

    kw = dict(kw)
    retry = kw.get("retry")
    if isinstance(retry, dict):
        from pyqmem.retry import RetryPolicy

        kw["retry"] = RetryPolicy(**retry)
    assert pyqmem is not None
    return t.consumer(group=group, **kw)


def _decode(m):
    try:
        producer, seq, _t, _size = msgs.decode(m.data)
    except msgs.TornMessage:
        return None
    return producer, seq


# ----------------------------------------------------------------------------
# producers
# ----------------------------------------------------------------------------
def bulk_producer(dir, name, producer, n, seed, conn, deadline_s, batch=500, size=(0, 200)):
    """Send n msgs frames (round-robin) in send_many batches; report them in batches."""
    end = time.monotonic() + deadline_s
    sent = 0
    with reporting(conn, producer, lambda: sent) as closing:
        t = closing(_open_topic(dir, name))
        rng = random.Random(seed)
        _send(conn, "ready", producer, os.getpid())
        seq = 0
        while seq < n and time.monotonic() < end:
            k = min(batch, n - seq)
            vals = [msgs.encode(producer, seq + i, rng.randint(*size)) for i in range(k)]
            mds = t.send_many(vals)   # no key: round-robin over the partitions
            _send(conn, "sent_many", producer, [(seq + i, md.partition, md.offset) for i, md in enumerate(mds)])
            seq += k
            sent += k


def slow_producer(dir, name, producer, n, seed, conn, deadline_s, pause=(0.0, 0.002), every=5):
    """Send n msgs frames one by one with random keys (a short pause every `every`);
    report each send that returned at once (so a SIGKILL loses at most one report)."""
    end = time.monotonic() + deadline_s
    with reporting(conn, producer) as closing:
        t = closing(_open_topic(dir, name))
        rng = random.Random(seed)
        _send(conn, "ready", producer, os.getpid())
        for seq in range(n):
            if time.monotonic() > end:
                break
            md = t.send(msgs.encode(producer, seq, rng.randint(0, 300)),
                        key=rng.getrandbits(64).to_bytes(8, "little"))
            conn.send(("sent", producer, seq, md.partition, md.offset))
            if seq % every == every - 1:
                time.sleep(rng.uniform(*pause))


def big_writer(dir, name, size, n, conn, deadline_s, first_seq=0):
    """Send n records of `size` bytes (the seq in header "seq") to partition 0,
    back to back, so most of its time is spent copying a record into the log; report
    each send that returned."""
    end = time.monotonic() + deadline_s
    with reporting(conn, "writer") as closing:
        t = closing(_open_topic(dir, name))
        filler = os.urandom(1 << 16) * (size >> 16)
        _send(conn, "ready", "writer", os.getpid())
        for seq in range(first_seq, first_seq + n):
            if time.monotonic() > end:
                break
            md = t.send(filler, partition=0, headers={"seq": b"%d" % seq})   # no per-record copy here
            conn.send(("sent", 0, seq, md.partition, md.offset))


# ----------------------------------------------------------------------------
# members
# ----------------------------------------------------------------------------
def throughput_member(dir, name, group, who, kw, conn, stop, deadline_s, use_ack_many=False):
    """get_many + ack (or c.ack_many) until `stop` is set; report processed records in
    batches of ~1000 (partition, offset, delivery_count, producer, seq), and whatever it
    has whenever a get comes back empty."""
    import pyqmem

    end = time.monotonic() + deadline_s
    n = 0
    stale = 0
    with reporting(conn, who, lambda: n) as closing:
        t = closing(_open_topic(dir, name))
        c = closing(_consumer(t, group, kw))
        _send(conn, "ready", who, os.getpid())
        out = []
        while not stop.is_set() and time.monotonic() < end:
            try:
                ms = c.get_many(256, timeout=0.1)
            except pyqmem.Empty:
                ms = []
            for m in ms:
                d = _decode(m)
                if d is None:
                    _send(conn, "torn", who, f"p{m.partition}@{m.offset}")
                    continue
                out.append((m.partition, m.offset, m.delivery_count, d[0], d[1]))
            if ms:
                if use_ack_many:
                    stale += c.ack_many(ms)
                else:
                    for m in ms:
                        m.ack()
                n += len(ms)
            if out and (len(out) >= 1000 or not ms):   # full, or idle: report now
                _send(conn, "batch", who, out)
                out = []
            del ms
        if out:
            _send(conn, "batch", who, out)
        if stale:
            _send(conn, "error", who, f"ack_many reported {stale} stale acks with no member dying")


def member(dir, name, group, who, kw, conn, stop, deadline_s, seed=0, get_timeout=0.1,
           max_batch=1, work=(0.0, 0.0), max_acks=None, poison_exit=True):
    """A member that reports every delivery before processing it and every ack after it.

    Claims with get (max_batch 1) or get_many(random 1..max_batch); "processes" each record
    by sleeping uniform(*work) seconds; a POISON record makes it os._exit(1) (reported
    first).  Stops when `stop` is set (None: never), after `max_acks` acks, or at the
    deadline; closes its consumer on the way out."""
    import pyqmem

    end = time.monotonic() + deadline_s
    rng = random.Random(seed)
    acks = 0
    pid = os.getpid()
    with reporting(conn, who, lambda: acks) as closing:
        t = closing(_open_topic(dir, name))
        c = closing(_consumer(t, group, kw))
        _send(conn, "ready", who, pid)
        while time.monotonic() < end and (stop is None or not stop.is_set()):
            if max_acks is not None and acks >= max_acks:
                break
            try:
                if max_batch <= 1:
                    ms = [c.get(timeout=get_timeout)]
                else:
                    ms = c.get_many(rng.randint(1, max_batch), timeout=get_timeout)
            except pyqmem.Empty:
                continue
            now = time.monotonic()
            decoded = []
            for m in ms:
                d = _decode(m)
                if d is None:
                    conn.send(("torn", who, f"p{m.partition}@{m.offset}"))
                    d = (-1, -1)
                conn.send(("d", who, pid, m.partition, m.offset, m.delivery_count, d[0], d[1], now))
                decoded.append(d)
            for m, d in zip(ms, decoded):
                if d[0] == POISON and poison_exit:
                    os._exit(1)
                if work[1] > 0:
                    time.sleep(rng.uniform(*work))
                t0 = time.monotonic()
                try:
                    m.ack()
                except pyqmem.StaleAck:
                    conn.send(("stale", who, pid, m.partition, m.offset, "ack"))
                    continue
                t1 = time.monotonic()
                conn.send(("a", who, pid, m.partition, m.offset, d[0], d[1], t0, t1))
                acks += 1
            ms = m = None


def group_creator(dir, name, group, conn):
    """Open the topic, report ready, then open (create) the consumer group `group` and
    report "created"; the parent SIGKILLs it at a random moment."""
    t = c = None
    try:
        t = _open_topic(dir, name)
        _send(conn, "ready", "creator", os.getpid())
        c = t.consumer(group=group, start="earliest")
        _send(conn, "created", group)
        time.sleep(30)
    except BaseException:
        _send(conn, "error", "creator", traceback.format_exc())
    finally:
        if c is not None:
            c.close()
        if t is not None:
            t.close()
        conn.close()


def holder(dir, name, group, who, kw, conn, n, deadline_s, get_timeout=10.0, fork_helper=False):
    """Claim n records (one get each), report each delivery, then wait for commands on
    the duplex `conn` (it is SIGKILLed or SIGSTOPped meanwhile).  With `fork_helper` it
    first os.fork()s a helper child that does nothing with pyqmem (as a worker that
    starts a helper process would) and only sleeps; reported as ("helper", who, pid).
    Commands:
        "ack" / "nack" / "extend": try that on every held message, report the outcome
        ("stale", ...) or ("a", ...) / ("nacked", ...) / ("extended", ...);
        "close": close the consumer and exit."""
    import pyqmem

    end = time.monotonic() + deadline_s
    t = c = None
    held = []
    pid = os.getpid()
    try:
        t = _open_topic(dir, name)
        c = _consumer(t, group, kw)
        _send(conn, "ready", who, pid)
        while len(held) < n and time.monotonic() < end:
            t_before = time.monotonic()
            try:
                m = c.get(timeout=get_timeout)
            except pyqmem.Empty:
                continue
            now = time.monotonic()
            d = _decode(m) or (-1, -1)
            held.append(m)
            conn.send(("d", who, pid, m.partition, m.offset, m.delivery_count, d[0], d[1], now, t_before))
        if fork_helper:
            child = os.fork()
            if child == 0:                 # the helper: lives on, touches nothing
                try:
                    time.sleep(max(0.0, end - time.monotonic()))
                finally:
                    os._exit(0)
            conn.send(("helper", who, child))
        conn.send(("holding", who, pid, len(held)))
        while time.monotonic() < end:
            if not conn.poll(min(1.0, max(0.0, end - time.monotonic()))):
                continue
            cmd = conn.recv()
            if cmd == "close":
                break
            for m in held:
                try:
                    if cmd == "ack":
                        t0 = time.monotonic()
                        m.ack()
                        conn.send(("a", who, pid, m.partition, m.offset, -1, -1, t0, time.monotonic()))
                    elif cmd == "nack":
                        m.nack()
                        conn.send(("nacked", who, pid, m.partition, m.offset))
                    elif cmd == "extend":
                        m.extend(30.0)
                        conn.send(("extended", who, pid, m.partition, m.offset))
                except pyqmem.StaleAck:
                    conn.send(("stale", who, pid, m.partition, m.offset, cmd))
            conn.send(("cmd_done", who, cmd))
    except BaseException:
        _send(conn, "error", who, traceback.format_exc())
    finally:
        held.clear()
        if c is not None:
            c.close()
        if t is not None:
            t.close()
        _send(conn, "done", who, None)
        conn.close()


def run_member(dir, name, group, who, kw, conn, stop, deadline_s, fail_producers=(), work=0.0, seed=0):
    """c.run(handler, stop=stop): the handler reports each call with its start time, then
    raises RuntimeError("boom <delivery_count>") for records of `fail_producers`, or
    sleeps up to `work` s and reports ("a", ...) just before returning (run() acks after
    that); reports run()'s return value in "done"."""
    rng = random.Random(seed)
    handled = None
    pid = os.getpid()
    with reporting(conn, who, lambda: handled) as closing:
        t = closing(_open_topic(dir, name))
        c = closing(_consumer(t, group, kw))
        _send(conn, "ready", who, pid)
        deadline = time.monotonic() + deadline_s

        class Stop:
            def is_set(self):
                return stop.is_set() or time.monotonic() > deadline

        def handler(m):
            now = time.monotonic()
            d = _decode(m) or (-1, -1)
            conn.send(("d", who, pid, m.partition, m.offset, m.delivery_count, d[0], d[1], now))
            if d[0] in fail_producers:
                raise RuntimeError(f"boom {m.delivery_count}")
            if work:
                time.sleep(rng.uniform(0, work))
            conn.send(("a", who, pid, m.partition, m.offset, d[0], d[1], now, time.monotonic()))

        handled = c.run(handler, stop=Stop())


# ----------------------------------------------------------------------------
# parent side
# ----------------------------------------------------------------------------
def groups_implemented() -> bool:
    """False only if Topic.consumer(group=...) raises NotImplementedError (the feature is
    absent); any other outcome means the tests must run (and may fail)."""
    import shutil
    import tempfile

    import pyqmem

    root = os.environ.get("PYQMEM_DIR") or tempfile.gettempdir()
    d = tempfile.mkdtemp(prefix="group-probe-", dir=root)
    os.chmod(d, 0o700)
    t = c = None
    try:
        t = pyqmem.Topic("probe", dir=d, partitions=1, retention_bytes=None)
        try:
            c = t.consumer(group="probe")
        except NotImplementedError:
            return False
        except Exception:
            return True
        return True
    finally:
        if c is not None:
            c.close()
        if t is not None:
            t.close()
        shutil.rmtree(d, ignore_errors=True)


def group_ctx(method=None):
    """mp_ctx with this module preloaded in the forkserver (when it starts here first)."""
    from .topic_fixtures import mp_ctx

    ctx = mp_ctx(method)
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["helpers.topic_workers", "helpers.group_workers", "helpers.msgs", "pyqmem"])
    return ctx


def start(reaper, ctx, target, args, kwargs=None):
    p = ctx.Process(target=target, args=args, kwargs=kwargs or {}, daemon=True)
    reaper.add(p)
    p.start()
    return p


class Reports:
    """Reads children's pipes and keeps every report, by kind, in arrival order."""

    def __init__(self):
        self.conns = {}                       # Connection -> label
        self.ready = {}                       # label -> pid
        self.done = {}                        # label -> info
        self.errors = []
        self.torn = []
        self.deliveries = []                  # ("d", ...) tuples
        self.acks = []                        # ("a", ...) tuples
        self.stale = []
        self.batches = defaultdict(list)      # who -> [(p, o, dc, producer, seq)]
        self.sent = {}                        # (producer, seq) -> (partition, offset)
        self.max_seq = defaultdict(lambda: -1)
        self.other = []                       # anything else (holding, nacked, cmd_done, ...)
        self.eof = set()                      # labels whose pipe reached EOF

    def add(self, conn, label):
        self.conns[conn] = label
        return conn

    def handle(self, label, msg):
        kind = msg[0]
        if kind == "d":
            self.deliveries.append(msg)
        elif kind == "a":
            self.acks.append(msg)
        elif kind == "batch":
            self.batches[msg[1]].extend(msg[2])
        elif kind == "sent":
            self.sent[(msg[1], msg[2])] = (msg[3], msg[4])
            self.max_seq[msg[1]] = max(self.max_seq[msg[1]], msg[2])
        elif kind == "sent_many":
            for seq, p, o in msg[2]:
                self.sent[(msg[1], seq)] = (p, o)
                self.max_seq[msg[1]] = max(self.max_seq[msg[1]], seq)
        elif kind == "stale":
            self.stale.append(msg)
        elif kind == "torn":
            self.torn.append(msg[1:])
        elif kind == "error":
            self.errors.append((label,) + msg[1:])
        elif kind == "ready":
            self.ready[label] = msg[2]
        elif kind == "done":
            self.done[label] = msg[2]
        else:
            self.other.append(msg)

    def pump(self, timeout, until=lambda: False, only=None):
        """Read every pipe until until() is true, the timeout passes, or (with `only`, a
        Connection) that pipe reached EOF.  Returns until()."""
        deadline = time.monotonic() + timeout
        while True:
            if until():
                return True
            if only is not None and only not in self.conns:
                return until()
            left = deadline - time.monotonic()
            if left <= 0 or not self.conns:
                return until()
            for r in mp_wait(list(self.conns), timeout=min(0.05, left)):
                try:
                    msg = r.recv()
                except (EOFError, OSError):
                    self.eof.add(self.conns.pop(r))
                    continue
                self.handle(self.conns[r], msg)

    def acked_records(self):
        """{(producer, seq): [ack tuples]} of every member ack."""
        out = defaultdict(list)
        for a in self.acks:
            out[(a[5], a[6])].append(a)
        return out

    def delivered_records(self):
        out = defaultdict(list)
        for d in self.deliveries:
            out[(d[6], d[7])].append(d)
        return out
