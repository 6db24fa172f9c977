"""GroupConsumer: one member of a durable consumer group of a Topic.

``t.consumer(group="name", ...)`` makes one.  Members of a group (in any
processes) share the topic's records: each record goes to one member,
which acks it.  The group's state lives in the topic's backend (for the
shared-memory one, ``<topic folder>/groups/<name>.grp``: the C group core,
docs/design/groups.md, and pyqmem.shm.group_member);
docs/design/group-consumer.md is the contract this module follows.  This
module is the policy: retries, dead letters (pyqmem.deadletter), run().

Delivery
    ``get``/``get_many``/iteration claim leases from the member's
    partitions in turn (the one after the last that served first) up to
    the log end, read their records and hand them out (in the
    shared-memory backend claim, read and Message making run in C, with no
    Python frame per record).  A blocked get sleeps until a record is appended, a
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

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ._args import check_int as _check_int
from .backend import GroupMember, Message
from .consumer import _OFFSET_MAX, iterate
from .errors import Closed, Empty, StaleAck
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .deadletter import DeadLetters

__all__ = ["GroupConsumer"]


class GroupConsumer:
    """A member of the consumer group `name` of a topic; made by
    ``Topic.consumer(group=name, ...)`` (see the module docstring).

    ``get(timeout=None)``, ``get_many(max_messages, timeout=None)``,
    iteration, ``ack_many(msgs)``, ``run(handler, *, stop=None)``,
    ``lag()``, ``seek(partition, offset)``, ``stats()``, ``close()``; a
    context manager.
    """

    def __init__(
        self,
        topic_name: str,
        name: str,
        topic_partitions: int,
        partitions: Iterable[int],
        member: GroupMember,
        retry: RetryPolicy,
        dead_letters: "DeadLetters",
    ) -> None:
        """`member`: the backend's pyqmem.backend.GroupMember, joined with
        `retry`'s delays and `dead_letters` (a pyqmem.deadletter.DeadLetters,
        closed with this consumer)."""
        self._topic = topic_name
        self._name = name
        self._nparts = topic_partitions
        self._order = list(partitions)
        self._member = member
        self._retry = retry
        self._dead_letters = dead_letters
        self._closed = False
        # the member's hot paths, bound: no Python frame of ours per call
        self.get = member.get  # type: ignore[method-assign]
        self.get_nowait = member.get_nowait  # type: ignore[method-assign]
        self.get_many = member.get_many  # type: ignore[method-assign]
        self.ack_many = member.ack_many  # type: ignore[method-assign]

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Message:
        """The next message for this member, waiting for one if `block` (at
        most `timeout` seconds; None: forever), as ``queue.Queue.get``.
        Raises Empty if none came in time."""
        return self._member.get(block, timeout)

    def get_nowait(self) -> Message:
        """The next message for this member if one is there now, else raise Empty."""
        return self._member.get_nowait()

    def get_many(
        self, max_messages: int, block: bool = True, timeout: Optional[float] = None
    ) -> List[Message]:
        """Up to `max_messages` messages: waits (as get) for the first, then
        claims what is already there.  Raises Empty if none came."""
        return self._member.get_many(max_messages, block, timeout)

    def ack_many(self, msgs: Iterable[Message]) -> int:
        """Ack every message of `msgs` (of this consumer) in one call.
        Returns how many were stale (their leases had moved on: they raise
        nothing); already acked ones are skipped, and at-most-once ones are
        no-ops."""
        return self._member.ack_many(msgs)

    # ----- consuming ----------------------------------------------------------
    def __iter__(self) -> Iterator[Message]:
        """Messages as they come, blocking for more.  Iteration ends when the
        consumer is closed while iterating (from another thread); iterating a
        closed consumer raises Closed."""
        return iterate(self)

    def run(self, handler: Callable[[Message], Any], *, stop: Any = None) -> int:
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
                    self._member.stale_acks += 1
                continue
            handled += 1
            try:
                msg.ack()
            except StaleAck:
                self._member.stale_acks += 1
        return handled

    # ----- positions and state -------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"consumer of topic {self._topic!r} is closed")

    def lag(self) -> Dict[int, int]:
        """``{partition: log end - committed offset}`` for this member's partitions."""
        self._check_open()
        return self._member.lag()

    def seek(self, partition: int, offset: int) -> None:
        """Replay `partition` from `offset` for the whole group (clamped to the
        log's start and end): pending leases there become stale."""
        _check_int("partition", partition, 0, sys.maxsize)
        if partition >= self._nparts:
            raise ValueError(f"partition must be in 0..{self._nparts - 1}, got {partition}")
        _check_int("offset", offset, 0, _OFFSET_MAX)
        self._check_open()
        self._member.seek(partition, offset)

    def stats(self) -> Dict[int, Dict[str, int]]:
        """This member's group as ``t.stats()["groups"][name]`` shows it:
        ``{partition: {committed, pending, lag, redelivered, dead_lettered,
        skipped}}`` for every partition of the group."""
        self._check_open()
        return self._member.stats()

    @property
    def stale_acks(self) -> int:
        """Acks and nacks run() found stale (the lease had moved on)."""
        return self._member.stale_acks

    @property
    def group(self) -> str:
        """The group's name."""
        return self._name

    @property
    def partitions(self) -> List[int]:
        """The partitions this member claims from."""
        return list(self._order)

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    @property
    def retry(self) -> RetryPolicy:
        """The RetryPolicy of nack() without a delay and of run()."""
        return self._retry

    def close(self) -> None:
        """Leave the group (idempotent): this member's leases are given back at
        once (their delivery counts kept) and its ordered partitions freed.  A
        get blocked in another thread raises Closed."""
        self._closed = True
        self._member.close()
        self._dead_letters.close()

    def __enter__(self) -> "GroupConsumer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<pyqmem.GroupConsumer group={self._name!r} of {self._topic!r} "
            f"partitions={self.partitions}{state}>"
        )
