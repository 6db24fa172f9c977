"""A member of a consumer group of a shared-memory topic (pyqmem.backend.GroupMember).

The group lives in ``<topic folder>/groups/<name>.grp`` (the C group core,
docs/design/groups.md).  ``get``/``get_many``/``ack_many`` are the C fast
path's (``_core.GroupReader``: claim, read and Message making in C, no
Python frame per record); its lock also serializes ``lag``, ``seek`` and
``stats`` with them.  A blocked get sleeps until a record is appended, a
redelivery comes due, or the 100 ms liveness tick (a sweep that gives back
the leases of dead members), whichever is first.  A claimed offset whose
writer died (a gap) or that retention removed is completed silently.
"""

from __future__ import annotations

import errno
import os
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    cast,
)

from .._native import _core
from ..errors import NotFound, QmemError
from .folders import partition_path

if TYPE_CHECKING:
    from ..backend import GroupOptions, Start

__all__ = ["ShmGroupMember", "group_stats", "topic_group_stats"]

_GROUPS_DIR = "groups"
_SUFFIX = ".grp"

_T = TypeVar("_T")


def _partition_stats(group: _core.Group, partition: int, end: int) -> Dict[str, int]:
    st = group.partition_stats(partition)
    return {
        "committed": st["committed"],
        "pending": st["pending"],
        "lag": max(0, end - st["committed"]),
        "redelivered": st["redelivered"],
        "dead_lettered": st["dead_lettered"],
        "skipped": st["skipped"],
    }


def group_stats(group: _core.Group, ends: Callable[[int], int]) -> Dict[int, Dict[str, int]]:
    """``{partition: {committed, pending, lag, redelivered, dead_lettered,
    skipped}}`` of a ``_core.Group``; `ends(k)` gives partition k's log end."""
    return {k: _partition_stats(group, k, ends(k)) for k in range(group.partitions)}


def topic_group_stats(
    folder: str, ends: Callable[[int], int]
) -> Dict[str, Dict[int, Dict[str, int]]]:
    """group_stats of every group file in the topic folder `folder`, by name."""
    out: Dict[str, Dict[int, Dict[str, int]]] = {}
    try:
        names = sorted(os.listdir(os.path.join(folder, _GROUPS_DIR)))
    except FileNotFoundError:
        return out
    for entry in names:
        if not entry.endswith(_SUFFIX):
            continue
        name = entry[: -len(_SUFFIX)]
        try:
            group = _core.Group.open(folder, name, _core.OPEN_ONLY)
        except (NotFound, ValueError):  # removed meanwhile, or not a group name
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


def _being_created(exc: BaseException) -> bool:
    """True for the errors of opening a group file its creator is still
    writing: QM_ENOTREADY, or the empty file before it is sized (EINVAL)."""
    if isinstance(exc, NotFound):
        return False
    if type(exc) is QmemError:  # QM_ENOTREADY, not e.g. a full member table
        return getattr(exc, "status", None) == _core.ENOTREADY
    return type(exc) is OSError and exc.errno == errno.EINVAL


class ShmGroupMember:
    def __init__(
        self,
        topic_name: str,
        folder: str,
        topic_partitions: int,
        chosen: Sequence[int],
        log_args: Tuple[int, int, int, int],
        serializer: Any,
        raw: bool,
        name: str,
        options: GroupOptions,
        *,
        retry_delay: Callable[[int], float],
        error_text: Callable[[Any], str],
        dead_letter: Callable[[Any, List[Any]], None],
    ) -> None:
        """`chosen`: the partitions to claim from, in the order to try them;
        `options`: a pyqmem.backend.GroupOptions."""
        self._folder = folder
        self._name = name
        self._nparts = topic_partitions
        self._log_args = log_args
        self._logs: Dict[int, _core.Log] = {}
        self._group: Any = None
        self._reader: Any = None
        try:
            for k in chosen:
                self._logs[k] = _core.Log.open(
                    partition_path(folder, k), _core.OPEN_ONLY, *log_args
                )
            group = self._group = self._open_group(options.start, options.ordered)
            if group.partitions < topic_partitions:
                raise ValueError(
                    f"consumer group {name!r} holds {group.partitions} partitions but topic "
                    f"{topic_name!r} has {topic_partitions}: a group file's partition count is "
                    "fixed when it is created"
                )
            stored = bool(group.flags & _core.GROUP_ORDERED)
            if stored != options.ordered:
                raise ValueError(
                    f"consumer group {name!r} was created with ordered={stored}; "
                    f"it cannot be opened with ordered={options.ordered}"
                )
            self._reader = _core.GroupReader(
                topic_name,
                group,
                list(chosen),
                [self._logs[k] for k in chosen],
                serializer,
                raw,
                float(options.visibility_timeout),
                options.at_most_once,
                options.ordered,
                options.max_deliveries or 0,
                options.check_crcs,
                retry_delay=retry_delay,
                error_text=error_text,
                dead_letter=dead_letter,
            )
        except BaseException:
            self.close()
            raise
        self.get = self._reader.get
        self.get_nowait = self._reader.get_nowait
        self.get_many = self._reader.get_many
        self.ack_many = self._reader.ack_many

    @property
    def errors(self) -> Dict[Tuple[int, int], str]:
        return cast("Dict[Tuple[int, int], str]", self._reader.errors)

    def count_dead_lettered(self, partition: int, n: int = 1) -> None:
        self._reader.count_dead_lettered(partition, n)

    @property
    def stale_acks(self) -> int:
        return cast(int, self._reader.stale_acks)

    @stale_acks.setter
    def stale_acks(self, n: int) -> None:
        self._reader.stale_acks = n

    # ----- opening ------------------------------------------------------------
    def _open_group(self, start: Start, ordered: bool) -> _core.Group:
        """Attach to the group, or create it with `start` resolved now.  A
        file another member is still creating is retried (for up to 10 s)."""
        flags = _core.GROUP_ORDERED if ordered else 0
        starts: Optional[List[int]] = None
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
                return _core.Group.open(
                    self._folder, self._name, _core.OPEN_OR_CREATE, self._nparts, 0, flags, starts
                )
            except (OSError, QmemError) as exc:
                if not _being_created(exc) or time.monotonic() > give_up:
                    raise
            time.sleep(0.005)

    def _with_log(self, k: int, fn: Callable[[_core.Log], _T]) -> _T:
        """fn(log) with a handle on partition k (this member's, or a
        temporary one for a partition it does not read)."""
        log = self._logs.get(k)
        if log is not None:
            return fn(log)
        log = _core.Log.open(partition_path(self._folder, k), _core.OPEN_ONLY, *self._log_args)
        try:
            return fn(log)
        finally:
            log.close()

    def _start_offsets(self, start: Start) -> List[int]:
        """Each partition's first offset for a new group."""

        def first(k: int, log: _core.Log) -> int:
            lo, hi = log.bounds()
            if start.latest:
                return hi
            if start.timestamp_ns is not None:
                cursor = _core.Cursor(log, False)
                cursor.seek_time(start.timestamp_ns)
                return min(max(cursor.position, lo), hi)
            return min(max(start.offset_for(k), lo), hi)

        return [
            self._with_log(k, cast("Callable[[_core.Log], int]", lambda log, k=k: first(k, log)))
            for k in range(self._nparts)
        ]

    # ----- positions and state ------------------------------------------------
    def _locked(self, fn: Callable[[], _T]) -> _T:
        self._reader.lock()
        try:
            return fn()
        finally:
            self._reader.unlock()

    def lag(self) -> Dict[int, int]:
        def lags() -> Dict[int, int]:
            return {
                k: max(0, log.bounds()[1] - self._group.partition_stats(k)["committed"])
                for k, log in self._logs.items()
            }

        return self._locked(lags)

    def seek(self, partition: int, offset: int) -> None:
        def do() -> None:
            lo, hi = self._with_log(partition, lambda log: log.bounds())
            self._group.seek(partition, min(max(offset, lo), hi))
            self._reader.after_seek(partition)

        self._locked(do)

    def stats(self) -> Dict[int, Dict[str, int]]:
        return self._locked(
            lambda: group_stats(
                self._group, lambda k: self._with_log(k, lambda log: log.bounds()[1])
            )
        )

    def close(self) -> None:
        """Leave the group: this member's leases go back at once."""
        if self._reader is not None:
            self._reader.close()
        for log in self._logs.values():
            log.close()
        if self._group is not None:
            self._group.close()
