"""Topic: a partitioned, persistent log on memory-mapped segment files (pub/sub).

Storage
    A topic lives in a backend (pyqmem.backend): by default the
    shared-memory one, where it is the folder ``<dir>/<name>`` of
    memory-mapped partition logs with its ``topic.json``
    (pyqmem.shm.folders, docs/design/format.md).  ``dir`` is that backend's
    root folder; ``backend=`` selects another (``resolve_backend`` below is
    the one place that choice is made).

Existing topics
    The stored configuration wins over the arguments (as for Queue's
    capacity).  ``partitions`` (default: 1 when creating, the stored count
    when attaching) may grow an existing topic -- the new partition logs are
    created, then topic.json is rewritten -- but never shrink it
    (ValueError).  A Topic object keeps the partition count it opened with;
    reopen to see partitions another process added.  At most 128 partitions.

Producing
    ``send`` picks the partition (see pyqmem.partitioning: explicit, else
    Kafka's murmur2 of the key, else round-robin from a random start),
    appends one record and returns a RecordMetadata.  The message id is
    ``f"{partition}-{offset}"``, unique within the topic.  A value larger
    than ``segment_bytes // 2`` after serialization is MessageTooLarge, and
    so are a key and encoded headers that together exceed
    ``segment_bytes // 4`` (the C core's bounds: such a record always fits
    in one segment).  An empty key is stored as no key.

Handles
    A Topic may be used from any thread (the shared-memory backend opens
    per-thread partition handles, released when the thread ends or by
    ``close()``).  Consumers open their own handles.  A Topic pickles to a
    token (name, backend, serializer) that re-attaches with
    ``create=False``.  Retention runs after each segment roll; ``retain()``
    runs it now.
"""

import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Type, Union, overload

from typing_extensions import Literal

from . import headers as _headers
from ._args import (
    check_create,
    check_durability,
    check_int,
    check_retention_bytes,
    check_retention_seconds,
    check_segment_bytes,
)
from ._dual import dualmethod
from ._native import _core
from .backend import Backend, GroupOptions, Message, TopicConfig
from .consumer import Consumer, check_consumer_args
from .deadletter import DeadLetters, error_text
from .errors import AlreadyExists, Closed
from .group import GroupConsumer
from .naming import check_name
from .partitioning import key_bytes, partition_for_key
from .retry import RetryPolicy
from .serializers import RawSerializer, resolve
from .shm import SharedMemory

__all__ = ["Topic", "Record", "RecordMetadata", "Message", "resolve_backend"]

MAX_PARTITIONS = 128
_DLQ_SEGMENT_BYTES = 64 * 2**20  # the default segment size

# Where ``send`` put a record: partition, offset, timestamp (float seconds
# since the epoch, UTC), id (f"{partition}-{offset}", unique within the
# topic).  A C type that behaves as that named tuple; its id is made on
# first use.
RecordMetadata = _core.RecordMetadata

# Message (imported from .backend above) is what consumers return, whatever
# the backend; the shared-memory backend's is _core.Message, a C type whose
# key, headers, data and value are made from the mapping on first use.


class Record(NamedTuple):
    """One record of a ``send_many`` batch that needs more than its value:
    its own key, headers, partition or correlation id (each None: as the
    ``send_many`` call says, i.e. its `key`, no headers, the partition of
    the key or round robin, no correlation id)."""

    value: Any
    key: Union[str, bytes, None] = None
    headers: Optional[Mapping[str, Any]] = None
    partition: Optional[int] = None
    correlation_id: Optional[str] = None


def resolve_backend(
    backend: Optional[Backend], dir: Union[str, "os.PathLike[str]", None]
) -> Backend:
    """The backend a Topic (or redrive) uses: `backend` as given, else the
    shared-memory one in `dir` (None: ``$PYQMEM_DIR`` or the per-user
    default).  Giving both is ValueError: `dir` is that backend's argument."""
    if backend is None:
        return SharedMemory(dir)
    if dir is not None:
        raise ValueError(
            "dir is the shared-memory backend's argument: give dir or backend, not both"
        )
    for attr in ("open_topic", "topic_exists"):
        if not callable(getattr(backend, attr, None)):
            raise TypeError(
                f"backend must be None or a pyqmem backend (with {attr}()), not "
                f"{type(backend).__name__}"
            )
    return backend


def _attach(name: str, backend: Backend, serializer: Any) -> "Topic":
    """Unpickle a Topic token: attach to the existing topic."""
    return Topic(name, backend=backend, serializer=serializer, create=False)


def _delete_topic(self: "Topic", *, force: bool = False) -> None:
    """Delete this topic: every partition, record and consumer group (its
    dead-letter topic stays).  Closes this object first.  InUse while any
    other handle has it open, in any process, this one's other Topic
    objects and consumers included (close them first; messages kept after
    their consumer closed do not count), unless `force`.  Also
    ``Topic.delete(name, dir=None, *, backend=None, force=False)`` without
    opening it.  Interrupted, the topic is either whole or gone."""
    self.close()
    Topic.delete(self.name, backend=self.backend, force=force)


def _delete_named(
    cls: "Type[Topic]",
    name: str,
    dir: Union[str, "os.PathLike[str]", None] = None,
    *,
    backend: Optional[Backend] = None,
    force: bool = False,
) -> None:
    """Delete the topic `name` (in `dir` or `backend`, as for Topic) without
    opening it; ``t.delete(*, force=False)`` on an open Topic closes it and
    does the same.  Every partition, record and consumer group goes; its
    dead-letter topic stays.  InUse while any handle has it open, in any
    process (this one's included), unless `force`; NotFound if there is
    none.  Interrupted, the topic is either whole or gone."""
    check_name(name, "topic name")
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False, not {type(force).__name__}")
    resolve_backend(backend, dir).delete_topic(name, force=force)


for _form in (_delete_topic, _delete_named):  # as help() and tracebacks name them
    _form.__name__, _form.__qualname__ = "delete", "Topic.delete"


class Topic:
    """A partitioned, persistent log of messages, readable by any number of
    independent subscribers.

    ``Topic(name, *, partitions=None, dir=None, segment_bytes=64 * 2**20,
    retention_bytes="auto", retention_seconds=None, durability="os",
    serializer=None, create=None, backend=None)``

    - `partitions`: partition count when creating (default 1); for an
      existing topic None attaches as it is, a larger count grows it, a
      smaller one is ValueError.
    - `dir`: root folder of the shared-memory backend (see the module
      docstring).
    - `segment_bytes`: size of each segment file, a multiple of 4096 in
      [64 KiB, 4 GiB]; a value up to ``segment_bytes // 2`` always fits.
    - `retention_bytes` / `retention_seconds`: drop whole old segments
      beyond this many bytes per partition / older than this; None = keep.
      ``retention_bytes="auto"`` (the default): a topic in RAM (tmpfs, as
      the default root in /dev/shm is) keeps at most 4 segments per
      partition (256 MiB with the default segments); on a disk, everything.
      The resolved value is stored (``t.retention_bytes``, ``t.stats()``).
    - `durability`: ``"os"`` (page cache; survives any process crash) or
      ``"fsync"`` (``send`` returns after fdatasync; concurrent senders share one).
    - `serializer`: None (bytes-like values; ``Message.value`` is bytes),
      ``"pickle"``, or an object with ``dumps``/``loads`` (as for Queue).
    - `create`: None create or attach, True must create (AlreadyExists),
      False must attach (NotFound).
    - `backend`: where the topic lives (pyqmem.backend); None is the
      shared-memory backend in `dir`.

    The configuration of an existing topic wins over these arguments.
    """

    def __init__(
        self,
        name: str,
        *,
        partitions: Optional[int] = None,
        dir: Union[str, "os.PathLike[str]", None] = None,
        segment_bytes: int = 64 * 2**20,
        retention_bytes: Union[int, None, Literal["auto"]] = "auto",
        retention_seconds: Optional[float] = None,
        durability: str = "os",
        serializer: Any = None,
        create: Optional[bool] = None,
        backend: Optional[Backend] = None,
    ) -> None:
        check_name(name, "topic name")
        if partitions is not None:
            check_int("partitions", partitions, 1, MAX_PARTITIONS)
        check_segment_bytes(segment_bytes)
        check_retention_bytes(retention_bytes)
        check_retention_seconds(retention_seconds)
        check_durability(durability)
        check_create(create)
        backend = resolve_backend(backend, dir)
        self._serializer = resolve(serializer)
        self._raw = isinstance(self._serializer, RawSerializer)
        self._serializer_spec = serializer
        self._name = name
        self._lock = threading.Lock()
        self._closed = False
        self._consumers: weakref.WeakSet[Union[Consumer, GroupConsumer]] = weakref.WeakSet()
        wanted = TopicConfig(
            partitions or 1, segment_bytes, retention_bytes, retention_seconds, durability
        )
        self._store = backend.open_topic(name, wanted, grow_to=partitions, create=create)
        self._config = self._store.config
        self._max_value = self._store.max_value
        # round-robin from a random start.  A backend's fast path takes
        # send/send_many (bound here: no Python frame of ours on the way)
        # and hands what it does not take to _send/_send_many, which it
        # holds weakly so a dropped Topic frees its handles at once
        rr = random.randrange(self._config.partitions)
        self._sender = self._store.sender(
            round_robin_start=rr,
            raw=self._raw,
            general_send=weakref.WeakMethod(self._send),
            general_send_many=weakref.WeakMethod(self._send_many),
        )
        if self._sender is not None:
            self._round_robin = self._sender.round_robin
            self.send = self._sender.send  # type: ignore[method-assign]
            self.send_many = self._sender.send_many  # type: ignore[method-assign]
        else:
            counter = iter(range(rr, 2**63))
            self._round_robin = lambda: next(counter) % self._config.partitions

    # ----- properties -----------------------------------------------------
    @property
    def name(self) -> str:
        """The topic's name."""
        return self._name

    @property
    def dir(self) -> Optional[str]:
        """The absolute root folder the topic lives in (None for a backend
        without folders)."""
        return self._store.dir

    @property
    def path(self) -> str:
        """Where the topic lives: its folder ``dir/name`` in the
        shared-memory backend."""
        return self._store.location

    @property
    def partitions(self) -> int:
        """Number of partitions (as of opening this Topic object)."""
        return self._config.partitions

    @property
    def segment_bytes(self) -> int:
        """Bytes of each segment file."""
        return self._config.segment_bytes

    @property
    def retention_bytes(self) -> Optional[int]:
        """Per-partition bytes bound of retention, or None (as stored: a
        topic created with "auto" has the value it resolved to)."""
        bound = self._config.retention_bytes
        return None if isinstance(bound, str) else bound  # stored configs hold no "auto"

    @property
    def retention_seconds(self) -> Optional[float]:
        """Age bound of retention in seconds, or None."""
        return self._config.retention_seconds

    @property
    def durability(self) -> str:
        """``"os"`` or ``"fsync"``."""
        return self._config.durability

    @property
    def max_message(self) -> int:
        """Largest serialized value accepted, in bytes (segment_bytes // 2)."""
        return self._max_value

    @property
    def backend(self) -> Backend:
        """The backend the topic lives in (picklable; it finds this topic
        from any process)."""
        return self._store.backend

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    # ----- producing ------------------------------------------------------
    def _encode(self, value: Any) -> Any:
        """The record value of `value`; MessageTooLarge beyond max_message."""
        return self._serializer.encode(value, self._max_value)

    def _partition(self, partition: Optional[int], key: Optional[bytes]) -> int:
        if partition is not None:
            check_int("partition", partition, 0, self._config.partitions - 1)
            return partition
        if key is not None:
            return partition_for_key(key, self._config.partitions)
        return self._round_robin()

    def _append(
        self, partition: int, key: Optional[bytes], head: bytes, record: Any
    ) -> RecordMetadata:
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        now = time.time_ns()
        offset = self._store.append(partition, key, head, record, now)
        return RecordMetadata(partition, offset, now / 1e9, None)

    # When the backend has a fast path (a Sender), an open Topic's send and
    # send_many are bound to it in __init__; it hands every call it does
    # not take to _send / _send_many.  Otherwise these methods run.
    def send(
        self,
        value: Any,
        *,
        key: Union[str, bytes, None] = None,
        headers: Optional[Mapping[str, Any]] = None,
        partition: Optional[int] = None,
        correlation_id: Optional[str] = None,
    ) -> RecordMetadata:
        """Append `value` and return its RecordMetadata.

        `key` (str, bytes-like or None) picks the partition by Kafka's
        murmur2 unless `partition` is given; without either, round-robin.
        `headers`: dict str -> bytes-like (names starting with "qm." are
        reserved).  `correlation_id`: a str carried to
        ``Message.correlation_id``."""
        return self._send(value, key, headers, partition, correlation_id)

    def send_many(
        self, values: Iterable[Any], *, key: Union[str, bytes, None] = None
    ) -> List[RecordMetadata]:
        """Send each of `values` (each partition chosen as by send) and
        return their RecordMetadata in order.  An item that is a
        ``pyqmem.Record`` brings its own key, headers, partition and
        correlation id.  Every value is serialized and checked before the
        first is appended; if an append fails, the values before it stay
        appended."""
        return self._send_many(values if type(values) is list else list(values), key)

    def _send(
        self,
        value: Any,
        key: Union[str, bytes, None],
        headers: Optional[Mapping[str, Any]],
        partition: Optional[int],
        correlation_id: Optional[str],
    ) -> RecordMetadata:
        """send() in general."""
        limit = self._max_value // 2  # key and headers: segment_bytes // 4
        raw_key = None if key is None else key_bytes(key, limit)
        p = self._partition(partition, raw_key)
        head = _headers.encode(headers, correlation_id, limit - len(raw_key or b""))
        if self._raw and type(value) is bytes and len(value) <= self._max_value:
            return self._append(p, raw_key, head, value)  # nothing to encode or check
        return self._append(p, raw_key, head, self._encode(value))

    def _send_many(self, values: List[Any], key: Union[str, bytes, None]) -> List[RecordMetadata]:
        """send_many() in general (`values` is a list)."""
        if any(type(v) is Record for v in values):
            return self._send_records(values, key)
        raw_key = None if key is None else key_bytes(key, self._max_value // 2)
        limit = self._max_value
        if self._raw and all(type(v) is bytes and len(v) <= limit for v in values):
            records = values  # nothing to encode or check
        else:
            records = [self._encode(value) for value in values]
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        # one batch per partition, each in order (round-robin or by key)
        parts = [self._partition(None, raw_key) for _ in records]
        batches: Dict[int, List[int]] = {}
        for i, p in enumerate(parts):
            batches.setdefault(p, []).append(i)
        now = time.time_ns()
        offsets = [0] * len(records)
        for p, idx in batches.items():
            batch = records if len(idx) == len(records) else [records[i] for i in idx]
            for i, off in zip(idx, self._store.append_many(p, raw_key, batch, now)):
                offsets[i] = off
        ts = now / 1e9
        return [RecordMetadata(p, off, ts, None) for p, off in zip(parts, offsets)]

    def _send_records(
        self, values: List[Any], key: Union[str, bytes, None]
    ) -> List[RecordMetadata]:
        """send_many() of a batch holding Records: each checked and encoded
        first, then appended one by one, in order."""
        limit = self._max_value // 2  # key and headers: segment_bytes // 4
        prepared = []
        for v in values:
            r = v if type(v) is Record else Record(v)
            k = key if r.key is None else r.key
            raw_key = None if k is None else key_bytes(k, limit)
            p = self._partition(r.partition, raw_key)
            head = _headers.encode(r.headers, r.correlation_id, limit - len(raw_key or b""))
            prepared.append((p, raw_key, head, self._encode(r.value)))
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        now = time.time_ns()
        return [
            RecordMetadata(p, self._store.append(p, raw_key, head, value, now), now / 1e9, None)
            for p, raw_key, head, value in prepared
        ]

    # ----- consuming --------------------------------------------------------
    @overload
    def consumer(
        self,
        group: None = None,
        *,
        start: Any = "earliest",
        mode: str = "at_least_once",
        visibility_timeout: float = 30.0,
        max_deliveries: Optional[int] = 5,
        dead_letter: Union[bool, str] = True,
        ordered: bool = False,
        partitions: Optional[Iterable[int]] = None,
        retry: Optional[RetryPolicy] = None,
        check_crcs: bool = True,
    ) -> Consumer: ...

    @overload
    def consumer(
        self,
        group: str,
        *,
        start: Any = "earliest",
        mode: str = "at_least_once",
        visibility_timeout: float = 30.0,
        max_deliveries: Optional[int] = 5,
        dead_letter: Union[bool, str] = True,
        ordered: bool = False,
        partitions: Optional[Iterable[int]] = None,
        retry: Optional[RetryPolicy] = None,
        check_crcs: bool = True,
    ) -> GroupConsumer: ...

    def consumer(
        self,
        group: Optional[str] = None,
        *,
        start: Any = "earliest",
        mode: str = "at_least_once",
        visibility_timeout: float = 30.0,
        max_deliveries: Optional[int] = 5,
        dead_letter: Union[bool, str] = True,
        ordered: bool = False,
        partitions: Optional[Iterable[int]] = None,
        retry: Optional[RetryPolicy] = None,
        check_crcs: bool = True,
    ) -> Union[Consumer, GroupConsumer]:
        """A Consumer of this topic (see pyqmem.consumer), or with `group` a
        member of that consumer group (a GroupConsumer, see pyqmem.group and
        docs/design/group-consumer.md).

        ``check_crcs=False`` skips verifying each record's CRC-32C on read
        (as Kafka's ``check.crcs``): every header and length is still
        validated, so a damaged record cannot make a read go astray, but
        flipped payload bytes go unnoticed.  It saves a pass over every
        value, which matters for large values read zero-copy.

        ``group=None``: an independent subscriber that sees every record
        from `start` on; `mode`, `visibility_timeout`, `max_deliveries`,
        `dead_letter`, `ordered` and `retry` are validated and apply to
        groups only.  With a group: `start` applies when the group is
        created; `max_deliveries` an int >= 1 or None (never dead-letter);
        `dead_letter` True ("<topic>.dlq"), a topic name, or False (drop);
        `retry` a pyqmem.RetryPolicy (default RetryPolicy())."""
        if group is not None:
            check_name(group, "group name")
        chosen, begin = check_consumer_args(
            self._config.partitions,
            start,
            mode,
            visibility_timeout,
            max_deliveries,
            dead_letter,
            ordered,
            partitions,
        )
        if retry is None:
            retry = RetryPolicy()
        elif not isinstance(retry, RetryPolicy):
            raise TypeError(
                f"retry must be None or a pyqmem.RetryPolicy, not {type(retry).__name__}"
            )
        if not isinstance(check_crcs, bool):
            raise TypeError(f"check_crcs must be True or False, not {type(check_crcs).__name__}")
        if group is not None and dead_letter is True:
            check_name(f"{self._name}.dlq", "dead-letter topic name (topic name + '.dlq')")
        with self._lock:
            if self._closed:
                raise Closed(f"topic {self._name!r} is closed")
        consumer: Union[Consumer, GroupConsumer]
        if group is None:
            consumer = Consumer(
                self._name,
                chosen,
                self._store.subscribe(
                    chosen, begin, serializer=self._serializer, raw=self._raw, check_crcs=check_crcs
                ),
            )
        else:
            options = GroupOptions(
                begin,
                ordered,
                mode == "at_most_once",
                float(visibility_timeout),
                max_deliveries,
                check_crcs,
            )
            dead_letters = self._dead_letters(group, dead_letter)
            try:
                member = self._store.join_group(
                    group,
                    chosen,
                    options,
                    serializer=self._serializer,
                    raw=self._raw,
                    retry_delay=retry.delay,
                    error_text=error_text,
                    dead_letter=dead_letters.publish,
                )
            except BaseException:
                dead_letters.close()
                raise
            consumer = GroupConsumer(
                self._name, group, self._config.partitions, chosen, member, retry, dead_letters
            )
        with self._lock:
            if self._closed:  # closed meanwhile: do not leak the consumer
                consumer.close()
                raise Closed(f"topic {self._name!r} is closed")
            self._consumers.add(consumer)
        return consumer

    def _dead_letters(self, group: str, dead_letter: Union[bool, str]) -> DeadLetters:
        """The DeadLetters of a member of `group` (`dead_letter` as for
        consumer()).  The dead-letter topic is opened on first use, in this
        topic's root, created with as many partitions and segments at least
        as large as this topic's (so every value that fit here fits there)."""
        if dead_letter is False:
            return DeadLetters(self._name, group, None)
        name = f"{self._name}.dlq" if dead_letter is True else dead_letter
        backend, partitions = self._store.backend, self._config.partitions
        segment_bytes = max(self._config.segment_bytes, _DLQ_SEGMENT_BYTES)

        def open_topic() -> "Topic":
            try:
                return Topic(
                    name,
                    backend=backend,
                    partitions=partitions,
                    segment_bytes=segment_bytes,
                    create=True,
                )
            except AlreadyExists:
                return Topic(name, backend=backend, create=False)

        return DeadLetters(self._name, group, open_topic)

    # ----- state ------------------------------------------------------------
    def stats(self) -> Dict[str, Any]:
        """``{"config": {partitions, segment_bytes, retention_bytes,
        retention_seconds, durability}, "partitions": {k: {start_offset,
        end_offset, bytes, segments,
        segments_rolled, abandoned, syncs, synced_appends}}, "groups":
        {name: {k: {committed, pending, lag, redelivered, dead_lettered,
        skipped}}}}`` (every consumer group of the topic)."""
        self._check_open()
        parts = {k: self._store.partition_stats(k) for k in range(self._config.partitions)}
        config = self._store.config._asdict()
        return {"config": config, "partitions": parts, "groups": self._store.group_stats()}

    def retain(self) -> int:
        """Apply retention now (it also runs after every segment roll);
        returns how many segment files were deleted."""
        self._check_open()
        return self._store.retain()

    def _check_open(self) -> None:
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")

    @staticmethod
    def exists(
        name: str,
        dir: Union[str, "os.PathLike[str]", None] = None,
        *,
        backend: Optional[Backend] = None,
    ) -> bool:
        """True if a topic called `name` exists (in `dir` or `backend`, as for Topic)."""
        check_name(name, "topic name")
        return resolve_backend(backend, dir).topic_exists(name)

    # t.delete(*, force=False) and Topic.delete(name, dir=None, ...)
    delete = dualmethod(_delete_topic).on_class(_delete_named)

    # ----- lifetime ---------------------------------------------------------
    def close(self) -> None:
        """Release this object's handles and close its consumers
        (idempotent); later calls raise Closed, also calls blocked in other
        threads.  The topic's files stay."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            consumers = list(self._consumers)
        if self._sender is not None:
            self._sender.close()
        for consumer in consumers:
            consumer.close()
        self._store.close()

    def __enter__(self) -> "Topic":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(
        self,
    ) -> Tuple[Callable[[str, Backend, Any], "Topic"], Tuple[str, Backend, Any]]:
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        return _attach, (self._name, self._store.backend, self._serializer_spec)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<pyqmem.Topic {self._name!r} at {self._store.location!r} "
            f"partitions={self._config.partitions}{state}>"
        )
