"""The backend seam: what a place where topics live must provide.

The policy layer (``Topic``, ``Consumer``, ``GroupConsumer``, retries, dead
letters, redrive, ``run``) is written against the protocols below and never
against a particular storage.  One backend ships: shared memory and
memory-mapped segment files on this host (:class:`pyqmem.shm.SharedMemory`,
the default).  ``Topic(name, backend=...)`` selects another; that argument
and ``pyqmem.topic.resolve_backend`` are the only places a backend is chosen.

What the layers above own, so a backend never sees it: argument checks,
serialization, partition choice (explicit, murmur2 of the key, or round
robin), the header block's bytes (``pyqmem.headers``), retry delays, what a
dead letter carries and where it goes.  What a backend owns: where the
bytes live, offsets, waiting, leases and their deadlines, and delivery
counts.

docs/design/backends.md says what each operation must guarantee, which
tests a backend must pass (those marked ``any_backend``; an in-process test
backend, tests/helpers/memory_backend.py, passes them too), and which
guarantees are the shared-memory backend's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Dict, List, NamedTuple, Optional, Protocol, Tuple, Union, runtime_checkable

__all__ = [
    "TopicConfig",
    "Start",
    "Backend",
    "TopicStore",
    "Sender",
    "SubscriberReader",
    "GroupMember",
    "Message",
    "GroupOptions",
]


class TopicConfig(NamedTuple):
    """A topic's configuration as stored (it wins over a later opener's).
    In the configuration a Topic asks for, ``retention_bytes`` may be
    ``"auto"``: the backend stores its own default (``AUTO_RETENTION``)."""

    partitions: int
    segment_bytes: int
    retention_bytes: Union[int, None, str]  # "auto" only when asked for
    retention_seconds: Optional[float]
    durability: str  # "os" or "fsync"


class Start(NamedTuple):
    """Where a new reader (or a new group) begins in each partition.

    ``latest``: at the partition's end.  Else ``timestamp_ns``: at the first
    record, in offset order, stamped at or after it.  Else the offset
    ``offsets.get(partition, default)``, clamped to the partition's bounds
    (``default`` 0 is "earliest")."""

    latest: bool = False
    timestamp_ns: Optional[int] = None
    offsets: Mapping[int, int] = {}
    default: int = 0

    def offset_for(self, partition: int) -> int:
        return self.offsets.get(partition, self.default)


class GroupOptions(NamedTuple):
    """How a member of a consumer group reads (validated by the policy layer)."""

    start: Start  # applies when the group is created
    ordered: bool  # one owner and one record in flight per partition
    at_most_once: bool  # complete each record when it is claimed
    visibility_timeout: float  # seconds a lease lasts
    max_deliveries: Optional[int]  # None: never dead-letter
    check_crcs: bool


@runtime_checkable
class Message(Protocol):
    """One delivered record (``pyqmem.Message``: what every consumer of every
    backend returns).  ``data`` is the value's bytes (zero-copy in the
    shared-memory backend, valid while the message is referenced),
    ``value`` those bytes deserialized, ``key`` bytes (``key_str`` decoded
    from UTF-8), ``timestamp`` float seconds since the epoch (UTC), ``id``
    ``f"{partition}-{offset}"``, ``delivery_count`` from 1.
    ``ack``/``nack``/``extend`` are no-ops for an independent subscriber and
    at-most-once; StaleAck when the lease moved on."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def id(self) -> str: ...
    @property
    def key(self) -> Optional[bytes]: ...
    @property
    def key_str(self) -> Optional[str]: ...
    @property
    def headers(self) -> Dict[str, bytes]: ...
    @property
    def correlation_id(self) -> Optional[str]: ...
    @property
    def data(self) -> memoryview: ...
    @property
    def value(self) -> Any: ...
    @property
    def delivery_count(self) -> int: ...

    def ack(self) -> None: ...
    def nack(self, delay: Optional[float] = None, error: Any = None) -> None: ...
    def extend(self, seconds: float) -> None: ...


class Sender(Protocol):
    """A backend's fast path for ``Topic.send``/``send_many`` (optional):
    it takes the calls it can and hands the rest to the general path it was
    given.  The Topic binds its methods to these, so they must behave
    exactly as the general path does."""

    def send(
        self,
        value: Any,
        *,
        key: Any = None,
        headers: Any = None,
        partition: Optional[int] = None,
        correlation_id: Optional[str] = None,
    ) -> Any: ...
    def send_many(self, values: Iterable[Any], *, key: Any = None) -> List[Any]: ...
    def round_robin(self) -> int: ...
    def close(self) -> None: ...


class SubscriberReader(Protocol):
    """An independent subscriber's reads of some partitions.

    ``get`` tries each partition without waiting, starting after the one
    that served last, then waits on all of them; Empty when `timeout`
    passes, Closed once closed (also for a get blocked in another thread).
    Within a partition records come in offset order."""

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Message: ...
    def get_nowait(self) -> Message: ...
    def get_many(
        self, max_messages: int, block: bool = True, timeout: Optional[float] = None
    ) -> List[Message]: ...
    def seek(self, partition: int, offset: int) -> None: ...
    def position(self) -> Dict[int, int]: ...
    def lag(self) -> Dict[int, int]: ...
    def skipped(self) -> Dict[int, int]: ...
    def close(self) -> None: ...


class GroupMember(Protocol):
    """One member of a durable consumer group: each record is leased to one
    member at a time and completed by ``Message.ack``.  The callables the
    policy layer gives at ``join_group`` decide retry delays, what a
    remembered error says and what happens to records claimed past
    ``max_deliveries``."""

    stale_acks: int

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Message: ...
    def get_nowait(self) -> Message: ...
    def get_many(
        self, max_messages: int, block: bool = True, timeout: Optional[float] = None
    ) -> List[Message]: ...
    def ack_many(self, msgs: Iterable[Message]) -> int: ...
    def lag(self) -> Dict[int, int]: ...
    def seek(self, partition: int, offset: int) -> None: ...
    def stats(self) -> Dict[int, Dict[str, int]]: ...
    def close(self) -> None: ...


class TopicStore(Protocol):
    """One open topic in a backend.  Thread-safe; every handle it opened is
    released by ``close()``, after which calls raise Closed."""

    config: TopicConfig
    max_value: int  # the largest record value it takes, in bytes
    location: str  # where it lives (a folder, a URL), for messages
    backend: Backend  # a backend that finds this topic from any process
    dir: Optional[str]  # its root folder (the shared-memory backend); None elsewhere

    def append(
        self, partition: int, key: Optional[bytes], headers: bytes, value: Any, timestamp_ns: int
    ) -> int: ...
    def append_many(
        self, partition: int, key: Optional[bytes], values: Sequence[Any], timestamp_ns: int
    ) -> List[int]: ...
    def sender(
        self,
        *,
        round_robin_start: int,
        raw: bool,
        general_send: Callable[[], Optional[Callable[..., Any]]],
        general_send_many: Callable[[], Optional[Callable[..., Any]]],
    ) -> Optional[Sender]: ...
    def subscribe(
        self,
        partitions: Sequence[int],
        start: Start,
        *,
        serializer: Any,
        raw: bool,
        check_crcs: bool,
    ) -> SubscriberReader: ...
    def join_group(
        self,
        group: str,
        partitions: Sequence[int],
        options: GroupOptions,
        *,
        serializer: Any,
        raw: bool,
        retry_delay: Callable[[int], float],
        error_text: Callable[[Any], str],
        dead_letter: Callable[[Any, List[Message]], None],
    ) -> GroupMember: ...
    def bounds(self, partition: int) -> Tuple[int, int]: ...
    def partition_stats(self, partition: int) -> Dict[str, int]: ...
    def group_stats(self) -> Dict[str, Dict[int, Dict[str, int]]]: ...
    def retain(self) -> int: ...
    def close(self) -> None: ...


class Backend(Protocol):
    """Where topics live.  Picklable: a Topic handed to another process
    re-attaches through its backend."""

    name: str

    @property
    def dir(self) -> Optional[str]:
        """The shared-memory backend's root folder; None elsewhere."""
        ...

    def open_topic(
        self, name: str, wanted: TopicConfig, *, grow_to: Optional[int], create: Optional[bool]
    ) -> TopicStore: ...
    def topic_exists(self, name: str) -> bool: ...
    def delete_topic(self, name: str, *, force: bool = False) -> None:
        """Remove the topic and everything in it (its groups too; not its
        dead-letter topic).  NotFound if there is none; InUse while any
        handle (this process's included) has it open, unless `force`.
        Atomic: interrupted, the topic is either whole or gone."""
        ...
