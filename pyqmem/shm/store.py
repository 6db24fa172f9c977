"""One open topic of the shared-memory backend (pyqmem.backend.TopicStore).

Partition handles are per thread, as for Queue: the opening thread uses the
handles opened with the store, another thread opens its own on its first
append to a partition (released when the thread ends or by ``close()``).
Readers open their own handles.

The stored configuration wins over the opener's.  ``grow_to`` (a partition
count) may grow an existing topic -- the new partition logs are created,
then topic.json is rewritten -- but never shrink it (ValueError).  A store
keeps the partition count it opened with.  A creator that died before
writing topic.json leaves partition folders behind; the next creator
removes them and starts afresh; a creator that fails (a full disk: OSError
ENOSPC) removes them itself.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
import warnings
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    cast,
)

from .._native import _core
from ..errors import AlreadyExists, Closed, CorruptError, DurabilityWarning, NotFound
from .folders import (
    META,
    META_TMP,
    MetaLock,
    check_private,
    is_volatile,
    log_args,
    partition_path,
    read_meta,
    root,
    write_meta,
)
from .group_member import ShmGroupMember, topic_group_stats
from .subscriber import ShmSubscriber

if TYPE_CHECKING:
    from ..backend import GroupOptions, Start, TopicConfig

__all__ = ["ShmTopicStore"]

_T = TypeVar("_T")

_PARTITION_DIR = re.compile(r"p[0-9]+")
_STATS = (
    "start_offset",
    "end_offset",
    "bytes",
    "segments",
    "segments_rolled",
    "abandoned",
    "syncs",
    "synced_appends",
)


# retention_bytes="auto": a topic in RAM keeps this many segments per
# partition; on a disk it keeps everything (docs/api.md)
AUTO_RETENTION_SEGMENTS = 4


def _with_default_retention(wanted: TopicConfig, folder: str) -> TopicConfig:
    """`wanted` with retention_bytes "auto" resolved for a topic in `folder`."""
    if wanted.retention_bytes != "auto":
        return wanted
    bound = AUTO_RETENTION_SEGMENTS * wanted.segment_bytes if is_volatile(folder) else None
    return wanted._replace(retention_bytes=bound)


class ShmTopicStore:
    """A topic folder's partition logs, opened (or created) by this process."""

    def __init__(
        self,
        dir: Optional[str],
        name: str,
        wanted: TopicConfig,
        grow_to: Optional[int],
        create: Optional[bool],
    ) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._closed = False
        # every partition handle of this store
        self._handles: weakref.WeakSet[_core.Log] = weakref.WeakSet()
        self.backend: Any = None  # set by the backend that opened it
        self._local = threading.local()
        top = root(dir, make=create is not False)
        if top is None:
            raise NotFound(errno.ENOENT, f"no topic {name!r}: its folder does not exist", dir)
        self.dir: Optional[str] = top  # as pyqmem.backend.TopicStore declares it
        self._folder = self.location = os.path.join(top, name)
        config: Optional[TopicConfig] = None
        if os.path.lexists(self._folder):
            check_private(self._folder, f"topic folder of {name!r}")
            config = read_meta(self._folder)
        if config is None and create is False:
            raise NotFound(errno.ENOENT, f"no topic {name!r}", self._folder)
        if config is not None and create is not True and not self._grows(config, grow_to):
            self.config: TopicConfig = config
            logs = self._open_logs(range(config.partitions))
        else:
            self.config, logs = self._create_or_grow(wanted, grow_to, create)
        self._local.logs = logs
        self._owner_logs = logs
        self.max_value = logs[0].max_record
        if self.config.durability == "fsync" and is_volatile(self._folder):
            warnings.warn(
                f'topic {name!r} has durability="fsync" but lives in RAM ({top} is tmpfs): '
                "a power loss or reboot loses it all the same.  Give dir= a folder on a "
                'disk for durability, or use durability="os" (docs/api.md)',
                DurabilityWarning,
                stacklevel=4,  # warn, ShmTopicStore, SharedMemory.open_topic, Topic, caller
            )

    # ----- opening ----------------------------------------------------------
    def _grows(self, config: TopicConfig, partitions: Optional[int]) -> bool:
        """True if `partitions` asks to grow the stored topic; ValueError if
        it asks to shrink it."""
        if partitions is None:
            return False
        if partitions < config.partitions:
            raise ValueError(
                f"topic {self._name!r} has {config.partitions} partitions; "
                f"partitions can grow but never shrink (asked for {partitions})"
            )
        return partitions > config.partitions

    def _create_or_grow(
        self, wanted: TopicConfig, partitions: Optional[int], create: Optional[bool]
    ) -> Tuple[TopicConfig, List[_core.Log]]:
        """Under the metadata lock: create the topic, or grow an existing
        one to `partitions`.  Returns (config, this thread's handles)."""
        try:
            os.mkdir(self._folder, 0o700)
        except FileExistsError:
            pass
        check_private(self._folder, f"topic folder of {self._name!r}")
        with MetaLock(self._folder):
            config = read_meta(self._folder)
            if config is not None and create is True:
                raise AlreadyExists(errno.EEXIST, f"topic {self._name!r} exists", self._folder)
            if config is None:
                if create is False:  # removed since we looked
                    raise NotFound(errno.ENOENT, f"no topic {self._name!r}", self._folder)
                self._remove_leftovers()
                config = _with_default_retention(wanted, self._folder)
                fresh = range(config.partitions)
            elif self._grows(config, partitions):
                fresh = range(config.partitions, cast(int, partitions))  # _grows: not None
                config = config._replace(partitions=cast(int, partitions))
            else:  # grown to this size by another process meanwhile
                fresh = range(0)
            self.config = config
            try:
                logs = self._open_logs(range(config.partitions), created=fresh)
            except BaseException:
                self._undo_create(fresh)
                raise
            if fresh:
                try:
                    write_meta(self._folder, config)
                except BaseException:
                    for log in logs:
                        log.close()
                    self._undo_create(fresh)
                    raise
        return config, logs

    def _undo_create(self, fresh: range) -> None:
        """A new topic failed to be created (a full disk, ...): give back the
        space its partition folders took, unless topic.json made it visible."""
        if len(fresh) != self.config.partitions or os.path.exists(os.path.join(self._folder, META)):
            return
        try:
            self._remove_leftovers()
            os.unlink(os.path.join(self._folder, META_TMP))
        except OSError:
            pass

    def _remove_leftovers(self) -> None:
        """Partition folders of a creator that died before writing topic.json."""
        for entry in os.listdir(self._folder):
            if _PARTITION_DIR.fullmatch(entry):
                path = os.path.join(self._folder, entry)
                if os.path.islink(path):  # rmtree would refuse too, with a vaguer OSError
                    raise PermissionError(
                        errno.EPERM,
                        "object is not private to this user (refusing to follow a symlink)",
                        path,
                    )
                shutil.rmtree(path)

    def _open_logs(self, partitions: Iterable[int], created: range = range(0)) -> List[_core.Log]:
        """Handles on `partitions`; those in `created` may be created."""
        logs: List[_core.Log] = []
        try:
            for k in partitions:
                logs.append(self._open_log(k, k in created))
        except BaseException:
            for log in logs:
                log.close()
            raise
        return logs

    def _open_log(self, k: int, create: bool = False) -> _core.Log:
        mode = _core.OPEN_OR_CREATE if create else _core.OPEN_ONLY
        path = partition_path(self._folder, k)
        try:
            log = _core.Log.open(path, mode, *log_args(self.config))
        except NotFound:
            raise CorruptError(
                f"topic {self._name!r}: partition folder {path} is missing"
            ) from None
        if log.config()["segment_bytes"] != self.config.segment_bytes:
            log.close()
            raise CorruptError(
                f"topic {self._name!r}: partition {k} has another segment size than topic.json"
            )
        self._handles.add(log)
        return log

    def _log(self, partition: int) -> _core.Log:
        """This thread's handle on `partition`."""
        local = self._local.__dict__
        logs: Optional[List[Optional[_core.Log]]] = local.get("logs")
        if logs is None or logs[partition] is None:
            with self._lock:
                if self._closed:
                    raise Closed(f"topic {self._name!r} is closed")
                if logs is None:
                    logs = local["logs"] = [None] * self.config.partitions
                logs[partition] = self._open_log(partition)
        return cast(_core.Log, logs[partition])  # opened above if it was None

    # ----- producing ----------------------------------------------------------
    def append(
        self, partition: int, key: Optional[bytes], headers: bytes, value: Any, timestamp_ns: int
    ) -> int:
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        return self._log(partition).append(key, headers, value, timestamp_ns)

    def append_many(
        self, partition: int, key: Optional[bytes], values: Sequence[Any], timestamp_ns: int
    ) -> List[int]:
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        return self._log(partition).append_many(key, values, timestamp_ns)

    def sender(
        self,
        *,
        round_robin_start: int,
        raw: bool,
        general_send: Callable[[], Optional[Callable[..., Any]]],
        general_send_many: Callable[[], Optional[Callable[..., Any]]],
    ) -> _core.TopicSender:
        """The C fast path of send/send_many on the opening thread's handles."""
        return _core.TopicSender(
            self._name,
            self._owner_logs,
            self.config.partitions,
            round_robin_start,
            self.max_value,
            raw,
            general_send,
            general_send_many,
        )

    # ----- reading ------------------------------------------------------------
    def subscribe(
        self,
        partitions: Sequence[int],
        start: Start,
        *,
        serializer: Any,
        raw: bool,
        check_crcs: bool,
    ) -> ShmSubscriber:
        return self._track(
            lambda: ShmSubscriber(
                self._name,
                [(k, partition_path(self._folder, k)) for k in partitions],
                log_args(self.config),
                serializer,
                raw,
                start,
                check_crcs,
            )
        )

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
        dead_letter: Callable[[Any, List[Any]], None],
    ) -> ShmGroupMember:
        return self._track(
            lambda: ShmGroupMember(
                self._name,
                self._folder,
                self.config.partitions,
                partitions,
                log_args(self.config),
                serializer,
                raw,
                group,
                options,
                retry_delay=retry_delay,
                error_text=error_text,
                dead_letter=dead_letter,
            )
        )

    def _track(self, make: Callable[[], _T]) -> _T:
        with self._lock:
            if self._closed:
                raise Closed(f"topic {self._name!r} is closed")
        return make()

    # ----- state --------------------------------------------------------------
    def bounds(self, partition: int) -> Tuple[int, int]:
        return self._log(partition).bounds()

    def partition_stats(self, partition: int) -> Dict[str, int]:
        st = self._log(partition).stats()
        return {key: st[key] for key in _STATS}

    def group_stats(self) -> Dict[str, Dict[int, Dict[str, int]]]:
        def end(k: int) -> int:
            if k < self.config.partitions:
                return self._log(k).bounds()[1]
            return 0  # a partition another process added since this store opened

        return topic_group_stats(self._folder, end)

    def retain(self) -> int:
        return sum(self._log(k).retain() for k in range(self.config.partitions))

    def close(self) -> None:
        """Release every partition handle (idempotent); later calls raise Closed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles)
        for log in handles:
            log.close()
