"""Child-process entry points for the pyqmem.Topic tests (fork, spawn and forkserver).

Children report through a multiprocessing Connection, never through the topic under test:
    ("ready", who, pid)
    ("acks", producer, [(seq, partition, offset), ...])   sends that returned
    ("deliver", sub, [(partition, offset, producer, seq), ...])
    ("torn", sub, text)                                    a value failed its checksum
    ("error", who, text)                                   unexpected exception
    ("done", who, info)                                    orderly exit
Every loop is bounded in count and in time.  Values are helpers.msgs frames (CRC-checked).
"""
from __future__ import annotations

import os
import random
import time
import traceback

from . import msgs
from .reporting import reporting
from .reporting import send as _send


def _diag():
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _open(dir, name, partitions):
    import pyqmem

    _diag()
    return pyqmem.Topic(name, dir=dir, partitions=partitions, create=False)


def _key_of(msg):
    k = msg.key
    if isinstance(k, str):
        return k.encode("utf-8")
    return None if k is None else bytes(k)


# ----------------------------------------------------------------------------
# multi-process stress (no kills)
# ----------------------------------------------------------------------------
def stress_producer(dir, name, producer, n, seed, partitions, conn, deadline_s, max_size=2048):
    """Send n self-checking values with random keys; report acks in batches, then done."""
    from pyqmem.partitioning import murmur2

    end = time.monotonic() + deadline_s
    sent = 0
    with reporting(conn, producer, lambda: sent) as closing:
        t = closing(_open(dir, name, partitions))
        rng = random.Random(seed)
        batch = []
        for seq in range(n):
            if time.monotonic() > end:
                break
            size = rng.randint(0, max_size) if rng.random() < 0.97 else rng.randint(max_size, 8 * max_size)
            key = b"k%d-%d" % (producer, rng.getrandbits(32))
            md = t.send(msgs.encode(producer, seq, size), key=key)
            want = (murmur2(key) & 0x7FFFFFFF) % partitions
            if md.partition != want:
                _send(conn, "error", producer, f"key {key!r} went to partition {md.partition}, murmur2 says {want}")
            batch.append((seq, md.partition, md.offset))
            sent += 1
            if len(batch) >= 200:
                _send(conn, "acks", producer, batch)
                batch = []
        if batch:
            _send(conn, "acks", producer, batch)


def stress_subscriber(dir, name, sub, partitions, expected, conn, deadline_s, linger_s=0.5):
    """Independent subscriber from "earliest": read until `expected` records (then linger
    a little to catch extras) or the deadline; report every delivery."""
    import pyqmem

    end = time.monotonic() + deadline_s
    got = 0
    with reporting(conn, sub, lambda: got) as closing:
        t = closing(_open(dir, name, partitions))
        c = closing(t.consumer(start="earliest"))
        _send(conn, "ready", sub, os.getpid())
        batch = []
        linger_end = None
        while time.monotonic() < end:
            if got >= expected and linger_end is None:
                linger_end = time.monotonic() + linger_s
            if linger_end is not None and time.monotonic() > linger_end:
                break
            try:
                ms = c.get_many(256, timeout=0.2)
            except pyqmem.Empty:
                ms = []
            for m in ms:
                try:
                    producer, seq, _t, _size = msgs.decode(m.data)
                except msgs.TornMessage as e:
                    _send(conn, "torn", sub, f"p{m.partition}@{m.offset}: {e}")
                    continue
                batch.append((m.partition, m.offset, producer, seq))
                got += 1
            del ms
            if len(batch) >= 500:
                _send(conn, "deliver", sub, batch)
                batch = []
        if batch:
            _send(conn, "deliver", sub, batch)


def lockstep_producer(dir, name, partitions, conn, batches, per_batch, size, deadline_s):
    """Send `batches` batches of `per_batch` values of `size` bytes to partition 0; after
    each, report ("batch", i, [offsets]) and wait for the parent's "go"."""
    end = time.monotonic() + deadline_s
    with reporting(conn, "lockstep") as closing:
        t = closing(_open(dir, name, partitions))
        seq = 0
        for i in range(batches):
            offs = []
            for _ in range(per_batch):
                offs.append(t.send(msgs.encode(0, seq, size), partition=0).offset)
                seq += 1
            _send(conn, "batch", i, offs)
            if not conn.poll(max(0.0, end - time.monotonic())):
                raise TimeoutError("parent never said go")
            if conn.recv() != "go":
                break


def zero_copy_after_retention(dir, name):
    """Run as a script (isolated: a crash only fails its test).  Holds a message's
    zero-copy data while retention deletes its segment and the consumer reads on
    (each read may unmap segments it no longer needs); exit 0 if the data stays
    intact, and once it is dropped no mapping of a deleted segment is left."""
    import pyqmem

    def deleted_mappings():
        with open("/proc/self/maps") as f:
            return [ln for ln in f if os.path.join(dir, name) in ln and "(deleted)" in ln]

    t = pyqmem.Topic(name, dir=dir, partitions=1, segment_bytes=65536, retention_bytes=2 * 65536)
    first = msgs.encode(0, 0, 1000)
    t.send(first, partition=0)
    c = t.consumer(start="earliest")
    m = c.get(timeout=5)
    data = m.data
    late = []
    for seq in range(1, 400):  # ~ 6 segments of 64 KiB
        t.send(msgs.encode(0, seq, 1000), partition=0)
        got = c.get(timeout=5)
        if seq % 50 == 0:
            late.append(got)           # messages kept from segments deleted later
    t.retain()
    start = t.stats()["partitions"][0]["start_offset"]
    assert start > 0, f"retention deleted nothing (start_offset {start})"
    assert deleted_mappings(), "the held segments should still be mapped"
    assert bytes(data) == first, "zero-copy data changed after its segment was deleted"
    assert bytes(m.data) == first
    for got in late:
        assert msgs.decode(got.data)[1] == got.offset
    del data, m, late, got
    t.send(b"x", partition=0)
    assert bytes(c.get(timeout=5).data) == b"x"   # a read unmaps what nothing holds
    assert deleted_mappings() == [], deleted_mappings()
    c.close()
    t.close()
    print("ok")


# ----------------------------------------------------------------------------
# crash tests
# ----------------------------------------------------------------------------
def crash_writer(dir, name, partitions, writer, seed, conn, max_records, deadline_s, max_size):
    """Send until killed (or max_records / deadline); report every returned send at once."""
    end = time.monotonic() + deadline_s
    with reporting(conn, writer) as closing:
        t = closing(_open(dir, name, partitions))
        rng = random.Random(seed)
        _send(conn, "ready", writer, os.getpid())
        for seq in range(max_records):
            if time.monotonic() > end:
                break
            r = rng.random()
            size = rng.randint(0, 1024) if r < 0.85 else rng.randint(1024, max_size)
            key = rng.getrandbits(64).to_bytes(8, "little")
            md = t.send(msgs.encode(writer, seq, size), key=key, headers={"w": b"%d" % writer})
            conn.send(("ack", writer, seq, md.partition, md.offset))


def survivor_writer(dir, name, partitions, writer, seed, conn, stop, deadline_s, max_size):
    """Long-lived writer spanning all kills: sends until `stop` is set; acks in batches."""
    end = time.monotonic() + deadline_s
    with reporting(conn, writer) as closing:
        t = closing(_open(dir, name, partitions))
        rng = random.Random(seed)
        _send(conn, "ready", writer, os.getpid())
        batch = []
        seq = 0
        while not stop.is_set() and time.monotonic() < end and seq < 1_000_000:
            size = rng.randint(0, 1024) if rng.random() < 0.9 else rng.randint(1024, max_size)
            md = t.send(msgs.encode(writer, seq, size), key=rng.getrandbits(64).to_bytes(8, "little"))
            batch.append((seq, md.partition, md.offset))
            seq += 1
            if len(batch) >= 50:
                _send(conn, "acks", writer, batch)
                batch = []
                time.sleep(0.002)  # leave CPU to the victims
        if batch:
            _send(conn, "acks", writer, batch)


def sentinel_subscriber(dir, name, partitions, sub, conn, deadline_s):
    """Subscriber from "earliest" that stops once it saw the sentinel in every partition."""
    import pyqmem

    end = time.monotonic() + deadline_s
    seen_sentinel = set()
    with reporting(conn, sub, lambda: sorted(seen_sentinel)) as closing:
        t = closing(_open(dir, name, partitions))
        c = closing(t.consumer(start="earliest"))
        _send(conn, "ready", sub, os.getpid())
        batch = []
        while len(seen_sentinel) < partitions and time.monotonic() < end:
            try:
                ms = c.get_many(256, timeout=0.2)
            except pyqmem.Empty:
                ms = []
            for m in ms:
                try:
                    producer, seq, _t, _size = msgs.decode(m.data)
                except msgs.TornMessage as e:
                    _send(conn, "torn", sub, f"p{m.partition}@{m.offset}: {e}")
                    continue
                if producer == msgs.SENTINEL_PRODUCER:
                    seen_sentinel.add(m.partition)
                    continue
                batch.append((m.partition, m.offset, producer, seq))
            del ms
            if len(batch) >= 200:
                _send(conn, "deliver", sub, batch)
                batch = []
        if batch:
            _send(conn, "deliver", sub, batch)


def create_victim(dir, name, partitions, segment_bytes, conn):
    """Create the topic (killed at a random point by the parent), then send one record."""
    import pyqmem

    with reporting(conn, "creator"):
        _send(conn, "ready", "creator", os.getpid())
        t = pyqmem.Topic(name, dir=dir, partitions=partitions, segment_bytes=segment_bytes, retention_bytes=None)
        _send(conn, "created", "creator", None)
        md = t.send(b"from-creator", partition=0)
        _send(conn, "ack", "creator", (md.partition, md.offset))
        t.close()


# ----------------------------------------------------------------------------
# handles passed to children
# ----------------------------------------------------------------------------
def use_pickled_topic(topic, n_expected, conn):
    """Got a Topic handle by pickling: read the parent's records, send one of our own."""
    import pyqmem

    try:
        c = topic.consumer(start="earliest")
        values = []
        for _ in range(n_expected):
            values.append(bytes(c.get(timeout=10).value))
        try:
            extra = c.get(timeout=0.2)
            values.append(bytes(extra.value))
        except pyqmem.Empty:
            pass
        c.close()
        md = topic.send(b"child-%d" % os.getpid(), partition=0)
        _send(conn, "ok", os.getpid(), (values, md.partition, md.offset))
        topic.close()
    except BaseException:
        _send(conn, "error", "child", traceback.format_exc())
    finally:
        conn.close()


# ----------------------------------------------------------------------------
# racing openers
# ----------------------------------------------------------------------------
def racing_opener(dir, name, partitions, who, barrier, n, conn):
    """Wait for the others, then open (create, attach or grow) the topic at once and
    send n records spread over its partitions; report acks and the partition count."""
    import pyqmem

    t = None
    try:
        _diag()
        barrier.wait(30)
        try:
            t = pyqmem.Topic(name, dir=dir, partitions=partitions, retention_bytes=None)
        except ValueError as e:  # another opener grew it past `partitions` first
            _send(conn, "valueerror", who, str(e))
            return
        seen = len(t.stats()["partitions"])
        acks = []
        for seq in range(n):
            md = t.send(msgs.encode(who, seq, 64), partition=seq % partitions)
            acks.append((seq, md.partition, md.offset))
        _send(conn, "acks", who, acks)
        _send(conn, "done", who, seen)
    except BaseException:
        _send(conn, "error", who, traceback.format_exc())
    finally:
        if t is not None:
            t.close()
        conn.close()


def forked_writer(topic, writer, conn, max_records, deadline_s):
    """Under fork: use the parent's Topic object as inherited; send until killed."""
    end = time.monotonic() + deadline_s
    with reporting(conn, writer):
        _send(conn, "ready", writer, os.getpid())
        for seq in range(max_records):
            if time.monotonic() > end:
                break
            md = topic.send(msgs.encode(writer, seq, (seq * 7919) % 3000), partition=seq % 2)
            conn.send(("ack", writer, seq, md.partition, md.offset))
