"""What a dead-lettered record carries: headers naming where it came from and why.

When a consumer group gives up on a record (``max_deliveries`` reached), it
appends the record to the dead-letter topic (``"<topic>.dlq"`` by default)
with its key, value, correlation id and user headers unchanged, plus these
headers (UTF-8 text values, so any tool can read them)::

    dlq.topic           the source topic's name
    dlq.group           the consumer group that gave up
    dlq.partition       partition of the original record (decimal)
    dlq.offset          offset of the original record (decimal)
    dlq.delivery_count  deliveries it had (decimal)
    dlq.error           the last error, "<ExceptionType>: <text>" (at most
                        ERROR_MAX bytes; empty if the record was never nacked
                        with an error, e.g. its consumers kept dying)
    dlq.timestamp       when it was dead-lettered, ns since the epoch (decimal)
    dlq.omitted         only when the record did not fit the dead-letter topic
                        (MessageTooLarge): what was left out and why.  Such a
                        record has no key, an empty value, no user headers and
                        no correlation id; the original is still in the source
                        topic at dlq.partition / dlq.offset until retention
                        removes it.  Redrive passes over it.

A record dead-lettered again after a redrive gets fresh values.  Redrive
(:func:`original_headers`) removes them before sending the record back.

:class:`DeadLetters` is what a consumer group's hot path calls with the
records it gives up on: it publishes each (or drops it, for
``dead_letter=False``), then acks it and counts it in the group.
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Protocol, Tuple, cast

from .errors import CorruptError, MessageTooLarge, StaleAck

if TYPE_CHECKING:
    from .backend import Message

    class _DeadLetterTopic(Protocol):
        """What DeadLetters needs of the dead-letter topic (a pyqmem.Topic)."""

        @property
        def partitions(self) -> int: ...
        def send(
            self,
            value: Any,
            *,
            key: Optional[bytes] = None,
            headers: Optional[Mapping[str, Any]] = None,
            partition: Optional[int] = None,
            correlation_id: Optional[str] = None,
        ) -> object: ...
        def close(self) -> None: ...

    class _Member(Protocol):
        """What DeadLetters.publish needs of the group member that calls it."""

        @property
        def errors(self) -> Dict[Tuple[int, int], str]: ...
        def count_dead_lettered(self, partition: int, n: int = ...) -> None: ...


__all__ = [
    "ERROR_MAX",
    "PREFIX",
    "OMITTED",
    "DeadLetterInfo",
    "DeadLetters",
    "dead_letter_headers",
    "info",
    "omitted_headers",
    "original_headers",
    "error_text",
]

PREFIX = "dlq."
OMITTED = PREFIX + "omitted"
ERROR_MAX = 4096
_INT_FIELDS = ("partition", "offset", "delivery_count", "timestamp")


class DeadLetterInfo(NamedTuple):
    """The ``dlq.*`` headers of a dead-lettered record, decoded."""

    topic: str
    group: str
    partition: int
    offset: int
    delivery_count: int
    error: str
    timestamp: int  # ns since the epoch


def error_text(error: object) -> str:
    """The ``dlq.error`` text of `error` (an exception, a str or None),
    cut to ERROR_MAX bytes of UTF-8 without splitting a character."""
    if error is None:
        text = ""
    elif isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    else:
        text = str(error)
    raw = text.encode("utf-8", "replace")
    if len(raw) > ERROR_MAX:
        text = raw[:ERROR_MAX].decode("utf-8", "ignore")
    return text


def dead_letter_headers(
    headers: Optional[Mapping[str, bytes]],
    *,
    topic: str,
    group: str,
    partition: int,
    offset: int,
    delivery_count: int,
    error: object = None,
    timestamp_ns: Optional[int] = None,
) -> Dict[str, bytes]:
    """A new dict: the record's user `headers` (any earlier ``dlq.*`` ones
    dropped) plus the ``dlq.*`` headers for this dead-lettering."""
    out = original_headers(headers)
    fields = {
        "topic": topic,
        "group": group,
        "partition": partition,
        "offset": offset,
        "delivery_count": delivery_count,
        "error": error_text(error),
        "timestamp": time.time_ns() if timestamp_ns is None else timestamp_ns,
    }
    for name, value in fields.items():
        out[PREFIX + name] = str(value).encode("utf-8")
    return out


def omitted_headers(
    headers: Mapping[str, bytes],
    msg: "Message",
    user_headers: Mapping[str, bytes],
    error: object,
) -> Dict[str, bytes]:
    """The headers of the stand-in for `msg` (a Message with `user_headers`)
    when its dead-letter copy with `headers` (from dead_letter_headers) raised
    `error`: only the ``dlq.*`` ones, plus ``dlq.omitted`` naming what is left
    out."""
    out = {k: v for k, v in headers.items() if k.startswith(PREFIX)}
    user = sum(len(k) + len(v) for k, v in user_headers.items())
    text = (
        f"value of {len(msg.data)} bytes, key of {len(msg.key or b'')} bytes, "
        f"{len(user_headers)} user headers ({user} bytes) and the correlation id "
        f"did not fit the dead-letter topic: {error_text(error)}"
    )
    out[OMITTED] = text.encode("utf-8")[:ERROR_MAX].decode("utf-8", "ignore").encode("utf-8")
    return out


def original_headers(headers: Optional[Mapping[str, bytes]]) -> Dict[str, bytes]:
    """A new dict of `headers` without the ``dlq.*`` ones."""
    return {k: v for k, v in (headers or {}).items() if not k.startswith(PREFIX)}


def info(headers: Optional[Mapping[str, bytes]]) -> Optional[DeadLetterInfo]:
    """The :class:`DeadLetterInfo` of a record's headers, or None if it was
    not dead-lettered.  ValueError if the ``dlq.*`` headers are incomplete
    or malformed."""
    if not headers or PREFIX + "offset" not in headers:
        return None
    values: Dict[str, Any] = {}
    for field in DeadLetterInfo._fields:
        raw = headers.get(PREFIX + field)
        if raw is None:
            raise ValueError(f"dead-letter header {PREFIX + field!r} is missing")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"dead-letter header {PREFIX + field!r} is not UTF-8") from None
        if field in _INT_FIELDS:
            if not text.isdigit() or not text.isascii():
                raise ValueError(
                    f"dead-letter header {PREFIX + field!r} is not a "
                    f"non-negative integer: {text[:40]!r}"
                )
            values[field] = int(text)
        else:
            values[field] = text
    return DeadLetterInfo(**values)


class DeadLetters:
    """Where one consumer group member's given-up records go.

    `open_topic` (None: drop them) is called once, on the first record,
    and returns the dead-letter topic (an object with ``partitions`` and
    ``send(value, key=, headers=, partition=, correlation_id=)``); this
    object closes it.  Called as ``publish(member, msgs)`` by the group
    member (pyqmem.backend.GroupMember: ``errors`` holds the last error
    text by ``(partition, offset)``, ``count_dead_lettered(partition, n)``
    counts): each record is appended with the ``dlq.*`` headers, then acked
    and counted.  A record that does not fit the dead-letter topic goes there
    without its key, value and user headers (``dlq.omitted`` says why):
    raising instead would fail every get of the group forever.
    """

    def __init__(
        self,
        source_topic: str,
        group: str,
        open_topic: "Optional[Callable[[], _DeadLetterTopic]]",
    ) -> None:
        self._source = source_topic
        self._group = group
        self._open_topic = open_topic
        self._topic: Optional[_DeadLetterTopic] = None
        self._lock = threading.Lock()

    def _target(self) -> "_DeadLetterTopic":
        with self._lock:
            if self._topic is None:
                # publish calls this only with an _open_topic
                self._topic = cast("Callable[[], _DeadLetterTopic]", self._open_topic)()
            return self._topic

    def publish(self, member: "_Member", msgs: "Iterable[Message]") -> None:
        for m in msgs:
            key = (m.partition, m.offset)
            if self._open_topic is not None:
                self._send(self._target(), m, member.errors.get(key))
            try:
                m.ack()
            except StaleAck:  # another member settled it meanwhile
                continue
            member.errors.pop(key, None)
            member.count_dead_lettered(m.partition, 1)

    def _send(self, dlq: "_DeadLetterTopic", m: "Message", error: object) -> None:
        try:
            user_headers, correlation_id = m.headers, m.correlation_id
        except CorruptError as exc:  # a malformed header block: drop it, say so
            user_headers, correlation_id = {}, None
            error = error or exc
        headers = dead_letter_headers(
            user_headers,
            topic=self._source,
            group=self._group,
            partition=m.partition,
            offset=m.offset,
            delivery_count=max(1, m.delivery_count - 1),
            error=error,
        )
        partition = m.partition % dlq.partitions
        try:
            dlq.send(
                m.data,
                key=m.key,
                headers=headers,
                partition=partition,
                correlation_id=correlation_id,
            )
        except MessageTooLarge as exc:
            # it does not fit the dead-letter topic (made by someone with
            # smaller segments, or the dlq.* headers tipped key + headers over)
            dlq.send(
                b"", partition=partition, headers=omitted_headers(headers, m, user_headers, exc)
            )

    def close(self) -> None:
        """Close the dead-letter topic if it was opened (idempotent)."""
        with self._lock:
            topic, self._topic = self._topic, None
        if topic is not None:
            topic.close()
