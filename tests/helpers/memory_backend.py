"""An in-process, pure-Python backend, written only for the tests.

It proves the backend seam (pyqmem.backend) is real: the policy layer --
``Topic``, ``Consumer``, ``GroupConsumer``, retries, dead letters -- runs on
it unchanged, and the backend-agnostic behaviour tests run against it as
they run against shared memory (the tests marked ``any_backend``;
tests/helpers/backends.py lists the backends).  Everything lives in one process: nothing survives it, and no
other process can see it.  Leases, epochs, delivery counts, redelivery,
at-most-once, ordered partitions, seeks and dead letters follow
docs/design/group-consumer.md.
"""
from __future__ import annotations

import errno
import itertools
import sys
import threading
import time
import weakref

from pyqmem import headers as _headers
from pyqmem._args import check_int, check_timeout
from pyqmem.errors import AlreadyExists, Closed, Empty, InUse, NotFound, StaleAck

_REGISTRY: weakref.WeakValueDictionary[int, MemoryBackend] = weakref.WeakValueDictionary()
_ids = itertools.count(1)


def _lookup(backend_id):
    """Unpickle a MemoryBackend: the same object (one process only)."""
    return _REGISTRY[backend_id]


def _now_ns():
    return time.monotonic_ns()


def _deadline(timeout):
    seconds = check_timeout(timeout)
    return None if seconds is None else time.monotonic() + seconds


def _joined(value):
    if isinstance(value, (list, tuple)):
        return b"".join(bytes(memoryview(p).cast("B")) for p in value)
    return bytes(memoryview(value).cast("B"))


class MemoryBackend:
    """Topics in this process's memory."""

    name = "memory"
    dir = None

    def __init__(self):
        self._id = next(_ids)
        _REGISTRY[self._id] = self
        self._lock = threading.Lock()
        self._topics: dict[str, _TopicData] = {}

    def open_topic(self, name, wanted, *, grow_to, create):
        with self._lock:
            data = self._topics.get(name)
            if data is None:
                if create is False:
                    raise NotFound(errno.ENOENT, f"no topic {name!r}", name)
                if wanted.retention_bytes == "auto":   # memory: no default bound
                    wanted = wanted._replace(retention_bytes=None)
                data = self._topics[name] = _TopicData(name, wanted)
            elif create is True:
                raise AlreadyExists(errno.EEXIST, f"topic {name!r} exists", name)
            elif grow_to is not None:
                if grow_to < data.config.partitions:
                    raise ValueError(f"topic {name!r} has {data.config.partitions} partitions; "
                                     f"partitions can grow but never shrink (asked for {grow_to})")
                data.grow(grow_to)
        return MemoryStore(self, data)

    def topic_exists(self, name):
        return name in self._topics

    def delete_topic(self, name, *, force=False):
        with self._lock:
            data = self._topics.get(name)
            if data is None:
                raise NotFound(errno.ENOENT, f"no topic {name!r}", name)
            if data.open_stores and not force:
                raise InUse(f"topic {name!r} is open ({data.open_stores} handles): "
                            "close them first, or delete with force=True")
            del self._topics[name]

    def __reduce__(self):
        return _lookup, (self._id,)


class _Partition:
    def __init__(self):
        self.start = 0           # offset of records[0]
        self.records = []        # (key, header block, value, timestamp ns)
        self.bytes = 0

    @property
    def end(self):
        return self.start + len(self.records)


class _TopicData:
    def __init__(self, name, config):
        self.name = name
        self.config = config
        self.parts = [_Partition() for _ in range(config.partitions)]
        self.cond = threading.Condition()
        self.groups: dict[str, _GroupData] = {}
        self.open_stores = 0  # MemoryStores not closed (delete refuses while any is)

    def grow(self, partitions):
        with self.cond:
            while len(self.parts) < partitions:
                self.parts.append(_Partition())
            self.config = self.config._replace(partitions=partitions)

    def retain(self, k):
        """Drop the oldest records beyond the retention bounds; how many."""
        part, cfg, dropped = self.parts[k], self.config, 0
        horizon = None
        if cfg.retention_seconds is not None:
            horizon = time.time_ns() - int(cfg.retention_seconds * 1e9)
        while part.records:
            key, head, value, ts = part.records[0]
            over = cfg.retention_bytes is not None and part.bytes > cfg.retention_bytes
            old = horizon is not None and ts < horizon
            if not (over or old) or len(part.records) == 1 and not old:
                break
            part.records.pop(0)
            part.bytes -= len(value) + len(key or b"") + len(head)
            part.start += 1
            dropped += 1
        return dropped


class MemoryStore:
    """One open topic (pyqmem.backend.TopicStore)."""

    def __init__(self, backend, data):
        self.backend = backend
        self._data = data
        self.config = data.config
        self.max_value = data.config.segment_bytes // 2
        self.location = f"memory:{data.name}"
        self.dir = None
        self._closed = False
        self._readers = []
        with data.cond:
            data.open_stores += 1

    def _check(self):
        if self._closed:
            raise Closed(f"topic {self._data.name!r} is closed")

    def append(self, partition, key, headers, value, timestamp_ns):
        return self._append(partition, key, bytes(headers), [value], timestamp_ns)[0]

    def append_many(self, partition, key, values, timestamp_ns):
        return self._append(partition, key, b"", values, timestamp_ns)

    def _append(self, partition, key, head, values, timestamp_ns):
        self._check()
        data = self._data
        key = bytes(key) if key else None
        with data.cond:
            part = data.parts[partition]
            out = []
            for value in values:
                raw = _joined(value)
                part.records.append((key, head, raw, timestamp_ns))
                out.append(part.end - 1)
                part.bytes += len(raw) + len(key or b"") + len(head)
            data.retain(partition)
            data.cond.notify_all()
        return out

    def sender(self, **kwargs):
        return None   # no fast path: Topic.send runs the general path

    def subscribe(self, partitions, start, *, serializer, raw, check_crcs):
        self._check()
        return self._track(MemorySubscriber(self._data, list(partitions), start,
                                            None if raw else serializer))

    def join_group(self, group, partitions, options, *, serializer, raw, retry_delay,
                   error_text, dead_letter):
        self._check()
        data = self._data
        with data.cond:
            g = data.groups.get(group)
            if g is None:
                g = data.groups[group] = _GroupData(data, options.start, options.ordered)
            elif g.ordered != options.ordered:
                raise ValueError(f"consumer group {group!r} was created with ordered={g.ordered}; "
                                 f"it cannot be opened with ordered={options.ordered}")
        return self._track(MemoryGroupMember(data, g, list(partitions), options,
                                             None if raw else serializer, retry_delay,
                                             error_text, dead_letter))

    def _track(self, reader):
        self._readers.append(reader)
        return reader

    def bounds(self, partition):
        self._check()
        part = self._data.parts[partition]
        return part.start, part.end

    def partition_stats(self, partition):
        self._check()
        part = self._data.parts[partition]
        return {"start_offset": part.start, "end_offset": part.end, "bytes": part.bytes,
                "segments": 1, "segments_rolled": 0, "abandoned": 0, "syncs": 0,
                "synced_appends": 0}

    def group_stats(self):
        self._check()
        data = self._data
        with data.cond:
            return {name: g.stats() for name, g in sorted(data.groups.items())}

    def retain(self):
        self._check()
        data = self._data
        with data.cond:
            return sum(data.retain(k) for k in range(self.config.partitions))

    def close(self):
        with self._data.cond:
            if not self._closed:
                self._data.open_stores -= 1
            self._closed = True


# ----- messages -----------------------------------------------------------------
class MemoryMessage:
    """pyqmem.backend.Message over a record in memory."""

    __slots__ = ("partition", "offset", "timestamp", "key", "_head", "_value_bytes",
                 "_serializer", "_member", "_epoch", "delivery_count", "_settled", "_decoded",
                 "_value", "_have_value")

    @property
    def key_str(self):
        return None if self.key is None else self.key.decode("utf-8")

    def __init__(self, partition, offset, record, serializer, member=None, epoch=0, count=1):
        key, head, value, ts = record
        self.partition, self.offset = partition, offset
        self.timestamp = ts / 1e9
        self.key = key
        self._head = head
        self._value_bytes = value
        self._serializer = serializer
        self._member = member
        self._epoch = epoch
        self.delivery_count = count
        self._settled = None
        self._decoded = None
        self._have_value = False

    @property
    def id(self):
        return f"{self.partition}-{self.offset}"

    @property
    def data(self):
        return memoryview(self._value_bytes).toreadonly()

    @property
    def value(self):
        if not self._have_value:
            if self._serializer is None:
                self._value = self._value_bytes
            else:
                self._value = self._serializer.decode_view(self.data)
            self._have_value = True
        return self._value

    def _headers_pair(self):
        if self._decoded is None:
            self._decoded = _headers.decode(self._head) if self._head else ({}, None)
        return self._decoded

    @property
    def headers(self):
        return dict(self._headers_pair()[0])

    @property
    def correlation_id(self):
        return self._headers_pair()[1]

    def ack(self):
        if self._member is not None:
            self._member._ack(self)

    def nack(self, delay=None, error=None):
        if delay is not None:
            if not isinstance(delay, (int, float)) or isinstance(delay, bool):
                raise TypeError(f"delay must be None or a number, not {type(delay).__name__}")
            if not 0 <= delay < 1e9:
                raise ValueError(f"delay must be in [0, 1e9) seconds, got {delay}")
        if self._member is not None:
            self._member._nack(self, delay, error)

    def extend(self, seconds):
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        if not 0 < seconds < 1e9:
            raise ValueError(f"seconds must be in (0, 1e9), got {seconds}")
        if self._member is not None:
            self._member._extend(self, seconds)

    def __repr__(self):
        return f"<MemoryMessage {self.id} key={self.key!r} {len(self._value_bytes)} bytes>"


# ----- readers -----------------------------------------------------------------------
class _Reader:
    """get/get_many of a reader: `_take(max_messages)` returns what is there
    now (a list, maybe empty); this waits, in short slices, until it returns
    something, the timeout passes (Empty) or the reader is closed (Closed)."""

    _data: _TopicData
    _closed: bool

    def _take(self, max_messages):
        raise NotImplementedError

    def get(self, block=True, timeout=None):
        return self.get_many(1, block, timeout)[0]

    def get_nowait(self):
        return self.get_many(1, False)[0]

    def get_many(self, max_messages, block=True, timeout=None):
        check_int("max_messages", max_messages, 1, sys.maxsize)
        deadline = _deadline(timeout if block else 0)
        data = self._data
        while True:
            if self._closed:
                raise Closed(f"consumer of topic {data.name!r} is closed")
            out = self._take(max_messages)
            if out:
                return out
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Empty(f"no message on topic {data.name!r}")
            with data.cond:
                if not self._closed:
                    data.cond.wait(0.02 if left is None else min(left, 0.02))


# ----- an independent subscriber -------------------------------------------------
class MemorySubscriber(_Reader):
    def __init__(self, data, partitions, start, serializer):
        self._data = data
        self._order = partitions
        self._serializer = serializer
        self._next = 0
        self._closed = False
        self._lock = threading.Lock()
        self._pos = {}
        self._skipped = {k: 0 for k in partitions}
        with data.cond:
            for k in partitions:
                part = data.parts[k]
                if start.latest:
                    self._pos[k] = part.end
                elif start.timestamp_ns is not None:
                    at = next((i for i, r in enumerate(part.records) if r[3] >= start.timestamp_ns),
                              len(part.records))
                    self._pos[k] = part.start + at
                else:
                    self._pos[k] = min(max(start.offset_for(k), part.start), part.end)

    def _poll(self):
        n = len(self._order)
        for i in range(n):
            idx = (self._next + i) % n
            k = self._order[idx]
            part = self._data.parts[k]
            pos = self._pos[k]
            if pos < part.start:
                self._skipped[k] += part.start - pos
                pos = self._pos[k] = part.start
            if pos < part.end:
                self._pos[k] = pos + 1
                self._next = idx + 1
                return MemoryMessage(k, pos, part.records[pos - part.start], self._serializer)
        return None

    def _take(self, max_messages):
        out = []
        with self._data.cond:
            while len(out) < max_messages:
                m = self._poll()
                if m is None:
                    break
                out.append(m)
        return out

    def seek(self, partition, offset):
        with self._data.cond:
            part = self._data.parts[partition]
            self._pos[partition] = min(max(offset, part.start), part.end)
            self._skipped[partition] = 0

    def position(self):
        return dict(self._pos)

    def lag(self):
        with self._data.cond:
            return {k: max(0, self._data.parts[k].end - max(self._pos[k], self._data.parts[k].start))
                    for k in self._order}

    def skipped(self):
        return dict(self._skipped)

    def close(self):
        with self._data.cond:
            self._closed = True
            self._data.cond.notify_all()


# ----- consumer groups -----------------------------------------------------------
class _Entry:
    __slots__ = ("epoch", "count", "deadline", "leased_by", "acked")

    def __init__(self):
        self.epoch = 0
        self.count = 0
        self.deadline = 0        # monotonic ns: lease end, or when a nacked record is due
        self.leased_by = None    # member, or None when it waits for redelivery
        self.acked = False


class _GroupPartition:
    def __init__(self, start):
        self.committed = start   # every offset below is completed
        self.next = start        # first offset never claimed
        self.entries = {}        # offset -> _Entry, for committed <= offset < next
        self.redelivered = 0
        self.dead_lettered = 0
        self.skipped = 0
        self.owner = None        # ordered: the member that owns the partition


class _GroupData:
    def __init__(self, topic, start, ordered):
        self.topic = topic
        self.ordered = ordered
        self.epochs = itertools.count(1)
        self.parts = {}
        for k, part in enumerate(topic.parts):
            self.parts[k] = _GroupPartition(self._first(part, start, k))

    @staticmethod
    def _first(part, start, k):
        if start.latest:
            return part.end
        if start.timestamp_ns is not None:
            at = next((i for i, r in enumerate(part.records) if r[3] >= start.timestamp_ns),
                      len(part.records))
            return part.start + at
        return min(max(start.offset_for(k), part.start), part.end)

    def partition(self, k):
        gp = self.parts.get(k)
        if gp is None:
            gp = self.parts[k] = _GroupPartition(0)
        return gp

    def settle(self, k):
        """Move the committed offset past completed records and retention."""
        gp, part = self.partition(k), self.topic.parts[k]
        if gp.committed < part.start:   # retention removed records nobody completed
            for off in range(gp.committed, part.start):
                e = gp.entries.pop(off, None)
                if e is None or not e.acked:
                    gp.skipped += 1
            gp.committed = part.start
            gp.next = max(gp.next, part.start)
        while gp.committed < gp.next:
            e = gp.entries.get(gp.committed)
            if e is not None and not e.acked:
                break
            gp.entries.pop(gp.committed, None)
            gp.committed += 1

    def stats(self):
        out = {}
        for k in range(len(self.topic.parts)):
            gp = self.partition(k)
            end = self.topic.parts[k].end
            pending = sum(1 for e in gp.entries.values() if not e.acked)
            out[k] = {"committed": gp.committed, "pending": pending,
                      "lag": max(0, end - gp.committed), "redelivered": gp.redelivered,
                      "dead_lettered": gp.dead_lettered, "skipped": gp.skipped}
        return out


class MemoryGroupMember(_Reader):
    """pyqmem.backend.GroupMember in memory."""

    def __init__(self, data, group, partitions, options, serializer, retry_delay, error_text,
                 dead_letter):
        self._data = data
        self._group = group
        self._order = partitions
        self._lease_ns = max(1, int(options.visibility_timeout * 1e9))
        self._at_most_once = options.at_most_once
        self._max = options.max_deliveries
        self._serializer = serializer
        self._retry_delay = retry_delay
        self._error_text = error_text
        self._dead_letter = dead_letter
        self._next = 0
        self._closed = False
        self.errors = {}
        self.stale_acks = 0
        self._get_lock = threading.Lock()

    # ----- claiming ------------------------------------------------------------
    def _claim(self, k, now, out, dead):
        g, part = self._group, self._data.parts[k]
        gp = g.partition(k)
        g.settle(k)
        unacked = [off for off in sorted(gp.entries) if not gp.entries[off].acked]
        if g.ordered:
            if gp.owner not in (None, self):
                return False
            gp.owner = self
            unacked = unacked[:1]   # one record in flight per partition, in order
        # a record due again (its lease expired, or it was nacked and its delay passed)
        for off in unacked:
            e = gp.entries[off]
            if e.deadline <= now:
                gp.redelivered += 1
                return self._lease(k, off, e, now, out, dead)
        if g.ordered and unacked:
            return False
        if gp.next < part.end:
            off = gp.next
            gp.next += 1
            e = gp.entries[off] = _Entry()
            return self._lease(k, off, e, now, out, dead)
        return False

    def _lease(self, k, off, e, now, out, dead):
        part = self._data.parts[k]
        e.epoch = next(self._group.epochs)
        e.count += 1
        e.leased_by = self
        e.deadline = now + self._lease_ns
        record = part.records[off - part.start]
        m = MemoryMessage(k, off, record, self._serializer, self, e.epoch, e.count)
        if self._at_most_once:
            e.acked = True
            m._member = None
            out.append(m)
        elif self._max is not None and e.count > self._max:
            dead.append(m)
        else:
            out.append(m)
        return True

    def _take(self, max_messages):
        """Claim up to `max_messages` deliverable records, the partitions in
        turn; records claimed past max_deliveries go to the dead-letter sink."""
        out, dead = [], []
        with self._get_lock:
            with self._data.cond:
                n = len(self._order)
                progress = True
                while len(out) < max_messages and progress:
                    progress = False
                    for i in range(n):
                        idx = (self._next + i) % n
                        if self._claim(self._order[idx], _now_ns(), out, dead):
                            self._next = idx + 1
                            progress = True
                            break
                for k in self._order:
                    self._group.settle(k)
            if dead:
                self._dead_letter(self, dead)
        return out

    # ----- completing ---------------------------------------------------------
    def _entry(self, m, what):
        gp = self._group.partition(m.partition)
        e = gp.entries.get(m.offset)
        if e is None or e.epoch != m._epoch or e.leased_by is not self or e.acked:
            raise StaleAck(f"message {m.partition}-{m.offset}: the lease moved on ({what})")
        return e

    def _ack(self, m):
        if m._settled == "acked":
            return
        with self._data.cond:
            if m._settled == "nacked":
                raise StaleAck(f"message {m.partition}-{m.offset} was nacked")
            if self._closed:
                raise StaleAck(f"message {m.partition}-{m.offset}: the consumer was closed")
            e = self._entry(m, "ack")
            e.acked = True
            m._settled = "acked"
            self.errors.pop((m.partition, m.offset), None)
            self._group.settle(m.partition)
            self._data.cond.notify_all()

    def _nack(self, m, delay, error):
        if delay is None:
            delay = self._retry_delay(m.delivery_count)
        with self._data.cond:
            if m._settled == "acked":
                raise StaleAck(f"message {m.partition}-{m.offset} was already acked")
            if self._closed:
                raise StaleAck(f"message {m.partition}-{m.offset}: the consumer was closed")
            e = self._entry(m, "nack")
            e.leased_by = None
            e.deadline = _now_ns() + round(delay * 1e9)
            m._settled = "nacked"
            self._data.cond.notify_all()
        if error is not None:
            self.errors[(m.partition, m.offset)] = self._error_text(error)

    def _extend(self, m, seconds):
        with self._data.cond:
            if self._closed:
                raise StaleAck(f"message {m.partition}-{m.offset}: the consumer was closed")
            self._entry(m, "extend").deadline = _now_ns() + int(seconds * 1e9)

    def ack_many(self, msgs):
        msgs = list(msgs)
        for m in msgs:   # check everything before changing anything
            if not isinstance(m, MemoryMessage):
                raise TypeError(f"ack_many takes messages, not {type(m).__name__}")
            if m._member is not None and m._member is not self:
                raise ValueError(f"message {m.partition}-{m.offset} was delivered by another "
                                 "consumer")
        stale = 0
        for m in msgs:
            if m._member is None or m._settled == "acked":
                continue
            try:
                self._ack(m)
            except StaleAck:
                stale += 1
        return stale

    def count_dead_lettered(self, partition, n=1):
        with self._data.cond:
            self._group.partition(partition).dead_lettered += n

    # ----- positions and state --------------------------------------------------
    def lag(self):
        with self._data.cond:
            return {k: max(0, self._data.parts[k].end - self._group.partition(k).committed)
                    for k in self._order}

    def seek(self, partition, offset):
        with self._data.cond:
            part = self._data.parts[partition]
            gp = self._group.partition(partition)
            gp.committed = gp.next = min(max(offset, part.start), part.end)
            gp.entries.clear()
            self._data.cond.notify_all()

    def stats(self):
        with self._data.cond:
            return self._group.stats()

    def close(self):
        with self._data.cond:
            if self._closed:
                return
            self._closed = True
            for gp in self._group.parts.values():
                for e in gp.entries.values():
                    if e.leased_by is self and not e.acked:
                        e.leased_by = None
                        e.deadline = 0   # due again at once, its count kept
                if gp.owner is self:
                    gp.owner = None
            self._data.cond.notify_all()
