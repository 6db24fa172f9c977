"""GroupConsumer: one member of a durable consumer group of a Topic.

``t.consumer(group="name", ...)`` makes one.  Members of a group (in any
processes) share the topic's records: each record goes to one member,
which acks it.  The group lives in ``<topic folder>/groups/<name>.grp``
(the C group core, docs/design/groups.md); docs/design/group-consumer.md is
the contract this module follows.

Delivery
    ``get``/``get_many``/iteration claim leases from the member's
    partitions in turn (the one after the last that served first) up to
    the log end, read their records (``pyqmem._core.GroupReader``: claim,
    read and Message making run in C, no Python frame per record) and hand
    them out.  A blocked get sleeps until a record is appended, a
    redelivery comes due, or the 100 ms liveness tick (a sweep that gives
    back the leases of dead members), whichever is first; Ctrl-C
    interrupts it.  A claimed offset whose writer died (a gap) or that
    retention removed is completed silently.

Completing
    ``msg.ack()`` completes the lease; ``msg.nack(delay=None, error=None)``
    gives it back, deliverable again after `delay` (default: the
    RetryPolicy's delay for the delivery count); ``msg.extend(seconds)``
    moves the lease's end.  A lease that moved on raises StaleAck.
    ``c.ack_many(msgs)`` acks a batch in one call and returns how many were
    stale.  ``mode="at_most_once"``: records are completed when claimed;
    ack/nack/extend are no-ops.

Dead letters
    A record claimed for the (max_deliveries + 1)-th time is not delivered:
    it is appended to the dead-letter topic (``"<topic>.dlq"``, or the
    named one; ``dead_letter=False`` drops it) with the ``dlq.*`` headers
    of pyqmem.deadletter, then acked and counted.  ``dlq.delivery_count``
    is the deliveries it had (max_deliveries, unless members died holding
    it).  The dead-letter topic is created with segments at least as large as
    the source's; a record that still does not fit it (an existing topic with
    smaller segments, or key and headers near the limit) is dead-lettered
    without key, value and user headers, with a ``dlq.omitted`` header
    saying why (see pyqmem.deadletter): the group never stalls on it.  delivery_count saturates at 4095 in the C core, so a
    max_deliveries of 4095 or more never dead-letters.

Threads
    One thread per consumer is the intended use; get calls from several
    threads are serialized by a lock.  ack/nack/extend may be called from
    any thread, also while another thread is blocked in get.  ``close()``
    (any thread) gives this member's leases back at once.
"""

import errno
import os
import sys
import time
from collections.abc import Mapping

from ._args import check_int as _check_int
from ._native import _core
from . import deadletter as _deadletter
from .consumer import _OFFSET_MAX, _timestamp_ns, iterate
from .errors import Closed, Empty, NotFound, QmemError, StaleAck
from .retry import RetryPolicy
from .serializers import RawSerializer

__all__ = ["GroupConsumer", "group_stats", "topic_group_stats"]

_GROUPS_DIR = "groups"
_SUFFIX = ".grp"


def _partition_stats(group, partition, end):
    st = group.partition_stats(partition)
    return {
        "committed": st["committed"],
        "pending": st["pending"],
        "lag": max(0, end - st["committed"]),
        "redelivered": st["redelivered"],
        "dead_lettered": st["dead_lettered"],
        "skipped": st["skipped"],
    }


def group_stats(group, ends):
    """``{partition: {committed, pending, lag, redelivered, dead_lettered,
    skipped}}`` of a ``_core.Group``; `ends(k)` gives partition k's log end."""
    return {k: _partition_stats(group, k, ends(k)) for k in range(group.partitions)}


def topic_group_stats(folder, ends):
    """group_stats of every group file in the topic folder `folder`, by name."""
    out = {}
    try:
        names = sorted(os.listdir(os.path.join(folder, _GROUPS_DIR)))
    except FileNotFoundError:
        return out
    for entry in names:
        if not entry.endswith(_SUFFIX):
            continue
        name = entry[:-len(_SUFFIX)]
        try:
            group = _core.Group.open(folder, name, _core.OPEN_ONLY)
        except (NotFound, ValueError):   # removed meanwhile, or not a group name
            continue
        except (OSError, QmemError) as exc:
            if _being_created(exc):
                continue
            raise
        try:
            out[name] = group_stats(group, ends)
        finally:
            group.close()
    return out


def _being_created(exc):
    """True for the errors of opening a group file its creator is still
    writing: QM_ENOTREADY, or the empty file before it is sized (EINVAL)."""
    if isinstance(exc, NotFound):
        return False
    if type(exc) is QmemError:   # QM_ENOTREADY, not e.g. a full member table
        return getattr(exc, "status", None) == _core.ENOTREADY
    return type(exc) is OSError and exc.errno == errno.EINVAL


def _check_retry(retry):
    if retry is None:
        return RetryPolicy()
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be None or a pyqmem.RetryPolicy, not {type(retry).__name__}")
    return retry


class GroupConsumer:
    """A member of the consumer group `name` of a topic; made by
    ``Topic.consumer(group=name, ...)`` (see the module docstring).

    ``get(timeout=None)``, ``get_many(max_messages, timeout=None)``,
    iteration, ``ack_many(msgs)``, ``run(handler, *, stop=None)``,
    ``lag()``, ``seek(partition, offset)``, ``stats()``, ``close()``; a
    context manager.
    """

    def __init__(self, topic_name, folder, topic_partitions, chosen, log_args, serializer,
                 name, *, start, mode, visibility_timeout, max_deliveries, dead_letters, ordered,
                 retry, check_crcs):
        """`dead_letters`: the pyqmem.deadletter.DeadLetters that takes
        what the group gives up on (closed with this consumer)."""
        self._topic = topic_name
        self._folder = folder
        self._name = name
        self._nparts = topic_partitions
        self._log_args = log_args
        self._mode = mode
        self._retry = _check_retry(retry)
        self._closed = False
        self._logs = {}
        self._dead_letters = dead_letters
        self._grp_handle = None
        self._reader = None
        try:
            for k in chosen:
                self._logs[k] = _core.Log.open(self._path(k), _core.OPEN_ONLY, *log_args)
            group = self._grp_handle = self._open_group(start, ordered)
            if group.partitions < topic_partitions:
                raise ValueError(
                    f"consumer group {name!r} holds {group.partitions} partitions but topic "
                    f"{topic_name!r} has {topic_partitions}: a group file's partition count is "
                    "fixed when it is created")
            stored = bool(group.flags & _core.GROUP_ORDERED)
            if stored != ordered:
                raise ValueError(f"consumer group {name!r} was created with ordered={stored}; "
                                 f"it cannot be opened with ordered={ordered}")
            self._order = list(chosen)
            self._reader = _core.GroupReader(
                topic_name, group, self._order, [self._logs[k] for k in chosen], serializer,
                isinstance(serializer, RawSerializer), float(visibility_timeout),
                mode == "at_most_once", ordered, 0 if max_deliveries is None else max_deliveries,
                check_crcs, retry_delay=self._retry.delay, error_text=_deadletter.error_text,
                dead_letter=dead_letters.publish)
        except BaseException:
            self.close()
            raise
        # the hot paths, bound: no Python frame of ours per call
        self.get = self._reader.get
        self.get_many = self._reader.get_many
        self.ack_many = self._reader.ack_many

    def get(self, timeout=None):
        """The next message for this member, waiting up to `timeout` seconds
        (None: forever).  Raises Empty if none came in time."""
        return self._reader.get(timeout)

    def get_many(self, max_messages, timeout=None):
        """Up to `max_messages` messages: waits (as get) for the first, then
        claims what is already there.  Raises Empty if none came."""
        return self._reader.get_many(max_messages, timeout)

    def ack_many(self, msgs):
        """Ack every message of `msgs` (of this consumer) in one call.
        Returns how many were stale (their leases had moved on: they raise
        nothing); already acked ones are skipped, and at-most-once ones are
        no-ops."""
        return self._reader.ack_many(msgs)

    # ----- opening ------------------------------------------------------------
    def _path(self, k):
        return os.path.join(self._folder, f"p{k}")

    def _open_group(self, start, ordered):
        """Attach to the group, or create it with `start` resolved now.  A
        file another member is still creating is retried (for up to 10 s)."""
        flags = _core.GROUP_ORDERED if ordered else 0
        starts = None
        give_up = time.monotonic() + 10.0
        while True:
            try:
                try:
                    return _core.Group.open(self._folder, self._name, _core.OPEN_ONLY)
                except NotFound:
                    pass
                except (OSError, QmemError) as exc:
                    # half made: by a live creator (OPEN_OR_CREATE then waits
                    # with the rest of this loop) or by one that was killed
                    # (OPEN_OR_CREATE re-creates it)
                    if not _being_created(exc):
                        raise
                if starts is None:
                    starts = self._start_offsets(start)
                return _core.Group.open(self._folder, self._name, _core.OPEN_OR_CREATE,
                                        self._nparts, 0, flags, starts)
            except (OSError, QmemError) as exc:
                if not _being_created(exc) or time.monotonic() > give_up:
                    raise
            time.sleep(0.005)

    def _with_log(self, k, fn):
        """fn(log) with a handle on partition k (this consumer's, or a
        temporary one for a partition it does not read)."""
        log = self._logs.get(k)
        if log is not None:
            return fn(log)
        log = _core.Log.open(self._path(k), _core.OPEN_ONLY, *self._log_args)
        try:
            return fn(log)
        finally:
            log.close()

    def _start_offsets(self, start):
        """Each partition's first offset for a new group (see the contract)."""
        at_ns = _timestamp_ns(start)

        def first(k, log):
            lo, hi = log.bounds()
            if at_ns is not None:
                cursor = _core.Cursor(log, False)
                cursor.seek_time(at_ns)
                return min(max(cursor.position, lo), hi)
            if start == "latest":
                return hi
            if start == "earliest":
                return lo
            if isinstance(start, Mapping):
                return min(max(start.get(k, 0), lo), hi)
            return min(max(start, lo), hi)

        return [self._with_log(k, lambda log, k=k: first(k, log)) for k in range(self._nparts)]

    # ----- consuming ----------------------------------------------------------
    def __iter__(self):
        """Messages as they come, blocking for more.  Iteration ends when the
        consumer is closed while iterating (from another thread); iterating a
        closed consumer raises Closed."""
        return iterate(self)

    def run(self, handler, *, stop=None):
        """Call ``handler(msg)`` for each record until ``stop.is_set()``
        (checked at least every 0.1 s) or the consumer is closed.  On return
        the record is acked; on an Exception it is nacked with the retry
        delay and the exception as its last error, and the loop goes on.
        KeyboardInterrupt and SystemExit propagate.  A StaleAck is counted
        in ``stale_acks`` and ignored.  Returns the number of records whose
        handler returned."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if stop is not None and not callable(getattr(stop, "is_set", None)):
            raise TypeError("stop must be None or have is_set() (e.g. a threading.Event)")
        if self._closed:
            raise Closed(f"consumer of topic {self._topic!r} is closed")
        handled = 0
        while not self._closed:
            if stop is not None and stop.is_set():
                break
            try:
                msg = self.get(timeout=0.1)
            except Empty:
                continue
            except Closed:
                if self._closed:
                    break
                raise
            try:
                handler(msg)
            except Exception as exc:
                try:
                    msg.nack(error=exc)
                except StaleAck:
                    self._reader.stale_acks += 1
                continue
            handled += 1
            try:
                msg.ack()
            except StaleAck:
                self._reader.stale_acks += 1
        return handled

    # ----- positions and state -------------------------------------------------
    def _locked(self, fn):
        self._reader.lock()
        try:
            return fn()
        finally:
            self._reader.unlock()

    def lag(self):
        """``{partition: log end - committed offset}`` for this member's partitions."""
        def lags():
            return {k: max(0, log.bounds()[1] - self._grp_handle.partition_stats(k)["committed"])
                    for k, log in self._logs.items()}
        return self._locked(lags)

    def seek(self, partition, offset):
        """Replay `partition` from `offset` for the whole group (clamped to the
        log's start and end): pending leases there become stale."""
        _check_int("partition", partition, 0, sys.maxsize)
        if partition >= self._nparts:
            raise ValueError(f"partition must be in 0..{self._nparts - 1}, got {partition}")
        _check_int("offset", offset, 0, _OFFSET_MAX)

        def do():
            lo, hi = self._with_log(partition, lambda log: log.bounds())
            self._grp_handle.seek(partition, min(max(offset, lo), hi))
            self._reader.after_seek(partition)
        self._locked(do)

    def stats(self):
        """This member's group as ``t.stats()["groups"][name]`` shows it:
        ``{partition: {committed, pending, lag, redelivered, dead_lettered,
        skipped}}`` for every partition of the group."""
        return self._locked(lambda: group_stats(
            self._grp_handle, lambda k: self._with_log(k, lambda log: log.bounds()[1])))

    @property
    def stale_acks(self):
        """Acks and nacks run() found stale (the lease had moved on)."""
        return self._reader.stale_acks

    @property
    def group(self):
        """The group's name."""
        return self._name

    @property
    def partitions(self):
        """The partitions this member claims from."""
        return list(self._order) if hasattr(self, "_order") else sorted(self._logs)

    @property
    def closed(self):
        """True after close()."""
        return self._closed

    @property
    def retry(self):
        """The RetryPolicy of nack() without a delay and of run()."""
        return self._retry

    def close(self):
        """Leave the group (idempotent): this member's leases are given back at
        once (their delivery counts kept) and its ordered partitions freed.  A
        get blocked in another thread raises Closed."""
        self._closed = True
        if self._reader is not None:
            self._reader.close()
        for log in self._logs.values():
            log.close()
        if self._grp_handle is not None:
            self._grp_handle.close()
        self._dead_letters.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = " closed" if self._closed else ""
        return (f"<pyqmem.GroupConsumer group={self._name!r} of {self._topic!r} "
                f"partitions={self.partitions}{state}>")
