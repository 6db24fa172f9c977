"""Consumer and Message: reading a Topic.

An independent subscriber (``group=None``) reads every record of its
partitions from `start` on, with its own cursor per partition; nothing it
does affects other subscribers or the topic.

`start`
    ``"earliest"``: each partition's first stored record.  ``"latest"``:
    only records appended after the consumer opened.  An ``int`` offset for
    every partition (one before a partition's start means that start; one
    past its end means its end).  A dict ``{partition: offset}`` (partitions
    not named start at the earliest).  Replay by time: a ``datetime`` (a
    naive one is local time) or ``{"timestamp": seconds_since_epoch}``
    starts each partition at its first record, in offset order, whose
    timestamp is at or after that instant.

Delivery
    ``get`` tries each partition without waiting, starting after the one
    that served last (so a busy partition cannot starve the others), then
    blocks on all of them at once.  Within a partition records come in
    offset order; an offset whose writer died is a gap.  Records removed by
    retention before the consumer read them are counted in ``skipped()``;
    the cursor then continues at the partition's start.

Messages
    ``Message.data`` is a read-only memoryview of the value in place in the
    memory-mapped segment (zero-copy).  It stays valid while the Message (or
    the view) is referenced, even after the consumer is closed or retention
    deleted the segment file: the consumer's mapping is released only when
    the last view is gone.  ``Message.value`` is deserialized on first use
    and cached (for ``serializer=None`` it is ``bytes(data)``; a custom
    serializer's ``loads`` receives bytes; pickled out-of-band buffers come
    back writable, copied out of the mapping).  ``ack``/``nack`` are no-ops
    for an independent subscriber; ``delivery_count`` is 1.

Threads
    A Consumer is meant for one thread.  Calls from several threads are
    serialized by a lock (a ``get`` with a timeout also bounds its wait for
    the lock).  ``close()`` may be called from any thread: a ``get`` blocked
    in another thread raises Closed, and iteration ends.
"""

import datetime
import numbers
import sys
from collections.abc import Mapping

from ._args import check_int as _check_int
from ._native import _core
from .errors import Closed, NotFound
from .naming import check_name
from .serializers import RawSerializer

__all__ = ["Consumer", "Message"]

_MODES = ("at_least_once", "at_most_once")
_OFFSET_MAX = 2**63 - 1


# One record delivered to a consumer: a C type (see _core.Message) whose
# key, headers, data and value are made from the mapping on first use.
Message = _core.Message


def _timestamp_ns(start):
    """Unix nanoseconds of a datetime or ``{"timestamp": seconds}`` start, or None."""
    if isinstance(start, datetime.datetime):
        return round(start.timestamp() * 1e6) * 1000
    if isinstance(start, Mapping) and "timestamp" in start:
        if len(start) != 1:
            raise ValueError('a start by time is {"timestamp": seconds} alone')
        seconds = start["timestamp"]
        if not isinstance(seconds, numbers.Real) or isinstance(seconds, bool):
            raise TypeError(f"start timestamp must be a number, not {type(seconds).__name__}")
        if not -9e9 < seconds < 9e9:
            raise ValueError(f"start timestamp {seconds} is out of range")
        return round(seconds * 1e9)
    return None


def _check_start(start, partitions):
    if isinstance(start, str):
        if start not in ("earliest", "latest"):
            raise ValueError(f'start must be "earliest", "latest", an offset, a dict or a '
                             f"datetime, got {start!r}")
    elif isinstance(start, int) and not isinstance(start, bool):
        _check_int("start offset", start, 0, _OFFSET_MAX)
    elif _timestamp_ns(start) is not None:
        pass
    elif isinstance(start, Mapping):
        for partition, offset in start.items():
            _check_int("start partition", partition, 0, partitions - 1)
            _check_int(f"start offset of partition {partition}", offset, 0, _OFFSET_MAX)
    else:
        raise TypeError(f"start must be a str, int, dict or datetime, not {type(start).__name__}")


def check_consumer_args(topic_partitions, start, mode, visibility_timeout, max_deliveries,
                        dead_letter, ordered, partitions):
    """Validate ``Topic.consumer`` arguments; return the partitions to read."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(visibility_timeout, numbers.Real) or isinstance(visibility_timeout, bool):
        raise TypeError(f"visibility_timeout must be a number, not {type(visibility_timeout).__name__}")
    if not 0 < visibility_timeout < 1e9:
        raise ValueError(f"visibility_timeout must be in (0, 1e9) seconds, got {visibility_timeout}")
    if max_deliveries is not None:
        _check_int("max_deliveries", max_deliveries, 1, 2**31 - 1)
    if isinstance(dead_letter, str):
        check_name(dead_letter, "dead_letter topic name")
    elif not isinstance(dead_letter, bool):
        raise TypeError(f"dead_letter must be True, False or a topic name, not "
                        f"{type(dead_letter).__name__}")
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, not {type(ordered).__name__}")
    if partitions is None:
        chosen = list(range(topic_partitions))
    else:
        if isinstance(partitions, (str, bytes)) or not hasattr(partitions, "__iter__"):
            raise TypeError(f"partitions must be None or an iterable of ints, not "
                            f"{type(partitions).__name__}")
        chosen = list(partitions)
        for k in chosen:
            _check_int("partition", k, 0, topic_partitions - 1)
        if not chosen:
            raise ValueError("partitions must name at least one partition")
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"partitions lists a partition twice: {chosen}")
    _check_start(start, topic_partitions)
    if isinstance(start, Mapping) and _timestamp_ns(start) is None:
        unread = set(start) - set(chosen)
        if unread:
            raise ValueError(f"start names partitions this consumer does not read: {sorted(unread)}")
    return chosen



def iterate(consumer):
    """``get()`` forever: the iteration of a consumer (independent or group
    member); ends when the consumer is closed meanwhile."""
    if consumer._closed:
        raise Closed(f"consumer of topic {consumer._topic!r} is closed")
    while True:
        try:
            yield consumer.get()
        except Closed:
            if consumer._closed:
                return
            raise

class Consumer:
    """Reads a topic's partitions; made by ``Topic.consumer()``.

    ``get(timeout=None)``, ``get_many(max_messages, timeout=None)``,
    iteration, ``seek(partition, offset)``, ``lag()``, ``skipped()``,
    ``close()``; a context manager.  See the module docstring.
    """

    def __init__(self, topic_name, paths, log_args, serializer, start, *, check_crcs=True):
        self._topic = topic_name
        self._serializer = serializer
        self._closed = False
        self._logs = {}
        self._cursors = {}
        self._reader = None
        try:
            for k, path in paths:
                self._logs[k] = _core.Log.open(path, _core.OPEN_ONLY, *log_args)
                self._cursors[k] = _core.Cursor(self._logs[k], check_crcs)
            self._place(start)
        except BaseException:
            self.close()
            raise
        self._order = [k for k, _ in paths]
        # get() and get_many() are the TopicReader's (bound here: no Python
        # frame of ours per call): they try the partitions in this order
        # (after the one that served last), then wait on all
        self._reader = _core.TopicReader(
            topic_name, self._order, [self._logs[k] for k in self._order],
            [self._cursors[k] for k in self._order], serializer,
            isinstance(serializer, RawSerializer))
        self.get = self._reader.get
        self.get_many = self._reader.get_many

    def get(self, timeout=None):
        """The next message, waiting up to `timeout` seconds (None: forever).
        Raises Empty if none came in time."""
        return self._reader.get(timeout)

    def get_many(self, max_messages, timeout=None):
        """Up to `max_messages` messages: waits (as get) for the first, then
        takes what is already there, one partition after another.  Raises
        Empty if none came."""
        return self._reader.get_many(max_messages, timeout)

    def _place(self, start):
        at_ns = _timestamp_ns(start)
        for k, cursor in self._cursors.items():
            if at_ns is not None:
                cursor.seek_time(at_ns)
            elif start == "latest":
                cursor.seek(self._logs[k].bounds()[1])
            elif isinstance(start, Mapping):
                self._seek(k, start.get(k, 0))
            elif start == "earliest":
                self._seek(k, 0)
            else:
                self._seek(k, start)

    def _seek(self, partition, offset):
        """Place `partition`'s cursor at `offset`, or at the partition's
        start if `offset` is before it (retention may move it meanwhile)."""
        log, cursor = self._logs[partition], self._cursors[partition]
        while True:
            start, _ = log.bounds()
            try:
                cursor.seek(max(offset, start))
                return
            except NotFound:
                continue

    def _enter(self, deadline=_core.FOREVER):
        """Take the consumer's lock, waiting at most until `deadline`
        (Empty); Closed if the consumer is closed.  Release with _unlock()."""
        self._reader.lock(deadline)

    def _unlock(self):
        self._reader.unlock()

    def __iter__(self):
        """Messages as they come, blocking for more.  Iteration ends when the
        consumer is closed while iterating (from another thread); iterating a
        closed consumer raises Closed."""
        return iterate(self)

    def seek(self, partition, offset):
        """Continue `partition` at `offset` (its start if `offset` is before
        it, its end if past it)."""
        _check_int("partition", partition, 0, sys.maxsize)
        if partition not in self._logs:
            raise ValueError(f"this consumer does not read partition {partition}")
        _check_int("offset", offset, 0, _OFFSET_MAX)
        self._enter()
        try:
            self._seek(partition, offset)
        finally:
            self._unlock()

    def position(self):
        """``{partition: offset of the next record to read}``."""
        return {k: cursor.position for k, cursor in self._cursors.items()}

    def lag(self):
        """``{partition: records stored after this consumer's position}``
        (end offset minus position; records retention removed are not counted)."""
        self._enter()
        try:
            lags = {}
            for k, cursor in self._cursors.items():
                start, end = self._logs[k].bounds()
                lags[k] = max(0, end - max(cursor.position, start))
            return lags
        finally:
            self._unlock()

    def skipped(self):
        """``{partition: records retention removed before this consumer read
        them}``, counted since the consumer opened or its last seek() there."""
        return {k: cursor.skipped for k, cursor in self._cursors.items()}

    @property
    def partitions(self):
        """The partitions this consumer reads."""
        return list(self._order)

    @property
    def closed(self):
        """True after close()."""
        return self._closed

    def close(self):
        """Release the consumer's handles (idempotent).  A get blocked in
        another thread raises Closed.  Messages already delivered keep their
        data valid."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()
        for log in self._logs.values():
            log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = " closed" if self._closed else ""
        return f"<pyqmem.Consumer of {self._topic!r} partitions={self._order}{state}>"
