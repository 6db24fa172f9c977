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
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Protocol, Tuple, Union

from ._args import check_int as _check_int
from .backend import Message, Start, SubscriberReader
from .errors import Closed
from .naming import check_name

__all__ = ["Consumer"]

_MODES = ("at_least_once", "at_most_once")
_OFFSET_MAX = 2**63 - 1

if TYPE_CHECKING:

    class _ConsumerLike(Protocol):
        """What iterate() needs of a consumer (a Consumer or a GroupConsumer)."""

        _closed: bool
        _topic: str

        def get(self) -> Message: ...


def _timestamp_ns(start: object) -> Optional[int]:
    """Unix nanoseconds of a datetime or ``{"timestamp": seconds}`` start, or None."""
    if isinstance(start, datetime.datetime):
        return round(start.timestamp() * 1e6) * 1000
    if isinstance(start, Mapping) and "timestamp" in start:
        if len(start) != 1:
            raise ValueError('a start by time is {"timestamp": seconds} alone')
        seconds = start["timestamp"]
        if not isinstance(seconds, numbers.Real) or isinstance(seconds, bool):
            raise TypeError(f"start timestamp must be a number, not {type(seconds).__name__}")
        if not -9e9 < float(seconds) < 9e9:
            raise ValueError(f"start timestamp {seconds} is out of range")
        return round(float(seconds) * 1e9)
    return None


def _check_start(start: object, partitions: int) -> None:
    if isinstance(start, str):
        if start not in ("earliest", "latest"):
            raise ValueError(
                f'start must be "earliest", "latest", an offset, a dict or a '
                f"datetime, got {start!r}"
            )
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


def check_consumer_args(
    topic_partitions: int,
    start: Any,
    mode: str,
    visibility_timeout: object,
    max_deliveries: Optional[int],
    dead_letter: Union[bool, str],
    ordered: bool,
    partitions: Optional[Iterable[int]],
) -> Tuple[List[int], Start]:
    """Validate ``Topic.consumer`` arguments; return the partitions to read
    and where to start (a pyqmem.backend.Start)."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(visibility_timeout, numbers.Real) or isinstance(visibility_timeout, bool):
        raise TypeError(
            f"visibility_timeout must be a number, not {type(visibility_timeout).__name__}"
        )
    if not 0 < float(visibility_timeout) < 1e9:
        raise ValueError(
            f"visibility_timeout must be in (0, 1e9) seconds, got {visibility_timeout}"
        )
    if max_deliveries is not None:
        _check_int("max_deliveries", max_deliveries, 1, 2**31 - 1)
    if isinstance(dead_letter, str):
        check_name(dead_letter, "dead_letter topic name")
    elif not isinstance(dead_letter, bool):
        raise TypeError(
            f"dead_letter must be True, False or a topic name, not {type(dead_letter).__name__}"
        )
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, not {type(ordered).__name__}")
    if partitions is None:
        chosen = list(range(topic_partitions))
    else:
        if isinstance(partitions, (str, bytes)) or not hasattr(partitions, "__iter__"):
            raise TypeError(
                f"partitions must be None or an iterable of ints, not {type(partitions).__name__}"
            )
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
            raise ValueError(
                f"start names partitions this consumer does not read: {sorted(unread)}"
            )
    return chosen, _resolve_start(start)


def _resolve_start(start: Any) -> Start:
    """The pyqmem.backend.Start of a checked `start` argument."""
    at_ns = _timestamp_ns(start)
    if at_ns is not None:
        return Start(timestamp_ns=at_ns)
    if start == "latest":
        return Start(latest=True)
    if start == "earliest":
        return Start()
    if isinstance(start, Mapping):
        return Start(offsets=dict(start))
    return Start(default=start)


def iterate(consumer: "_ConsumerLike") -> Iterator[Message]:
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

    def __init__(
        self, topic_name: str, partitions: Iterable[int], reader: SubscriberReader
    ) -> None:
        """`reader`: the backend's pyqmem.backend.SubscriberReader of `partitions`."""
        self._topic = topic_name
        self._order = list(partitions)
        self._reader = reader
        self._closed = False
        # the reader's get and get_many, bound: no Python frame of ours per call
        self.get = reader.get  # type: ignore[method-assign]
        self.get_nowait = reader.get_nowait  # type: ignore[method-assign]
        self.get_many = reader.get_many  # type: ignore[method-assign]

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Message:
        """The next message, waiting for one if `block` (at most `timeout`
        seconds; None: forever), as ``queue.Queue.get``.  Raises Empty if
        none came in time."""
        return self._reader.get(block, timeout)

    def get_nowait(self) -> Message:
        """The next message if one is there now, else raise Empty."""
        return self._reader.get_nowait()

    def get_many(
        self, max_messages: int, block: bool = True, timeout: Optional[float] = None
    ) -> List[Message]:
        """Up to `max_messages` messages: waits (as get) for the first, then
        takes what is already there, one partition after another.  Raises Empty if none came."""
        return self._reader.get_many(max_messages, block, timeout)

    def __iter__(self) -> Iterator[Message]:
        """Messages as they come, blocking for more.  Iteration ends when the
        consumer is closed while iterating (from another thread); iterating a
        closed consumer raises Closed."""
        return iterate(self)

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"consumer of topic {self._topic!r} is closed")

    def seek(self, partition: int, offset: int) -> None:
        """Continue `partition` at `offset` (its start if `offset` is before
        it, its end if past it)."""
        _check_int("partition", partition, 0, sys.maxsize)
        if partition not in self._order:
            raise ValueError(f"this consumer does not read partition {partition}")
        _check_int("offset", offset, 0, _OFFSET_MAX)
        self._check_open()
        self._reader.seek(partition, offset)

    def position(self) -> Dict[int, int]:
        """``{partition: offset of the next record to read}``."""
        return self._reader.position()

    def lag(self) -> Dict[int, int]:
        """``{partition: records stored after this consumer's position}``
        (end offset minus position; records retention removed are not counted)."""
        self._check_open()
        return self._reader.lag()

    def skipped(self) -> Dict[int, int]:
        """``{partition: records retention removed before this consumer read
        them}``, counted since the consumer opened or its last seek() there."""
        return self._reader.skipped()

    @property
    def partitions(self) -> List[int]:
        """The partitions this consumer reads."""
        return list(self._order)

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    def close(self) -> None:
        """Release the consumer's handles (idempotent).  A get blocked in
        another thread raises Closed.  Messages already delivered keep their
        data valid."""
        self._closed = True
        self._reader.close()

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<pyqmem.Consumer of {self._topic!r} partitions={self._order}{state}>"
