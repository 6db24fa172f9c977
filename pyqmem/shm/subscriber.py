"""An independent subscriber of a shared-memory topic (pyqmem.backend.SubscriberReader).

Its own partition handles and one cursor per partition; ``get`` and
``get_many`` are the C fast path's (``_core.TopicReader``), whose lock also
serializes ``seek`` and ``lag`` with them.  Records removed by retention
before the subscriber read them are counted in ``skipped()``; the cursor
then continues at the partition's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Sequence, Tuple

from .._native import _core
from ..errors import NotFound

if TYPE_CHECKING:
    from ..backend import Start

__all__ = ["ShmSubscriber"]


class ShmSubscriber:
    def __init__(
        self,
        topic_name: str,
        paths: Sequence[Tuple[int, str]],
        log_args: Tuple[int, int, int, int],
        serializer: Any,
        raw: bool,
        start: Start,
        check_crcs: bool,
    ) -> None:
        """`paths`: (partition, log folder) in the order to try them;
        `start`: a pyqmem.backend.Start."""
        self._logs: Dict[int, _core.Log] = {}
        self._cursors: Dict[int, _core.Cursor] = {}
        self._reader: Any = None
        try:
            for k, path in paths:
                self._logs[k] = _core.Log.open(path, _core.OPEN_ONLY, *log_args)
                self._cursors[k] = _core.Cursor(self._logs[k], check_crcs)
            self._place(start)
        except BaseException:
            self.close()
            raise
        order = [k for k, _ in paths]
        self._reader = _core.TopicReader(
            topic_name,
            order,
            [self._logs[k] for k in order],
            [self._cursors[k] for k in order],
            serializer,
            raw,
        )
        self.get = self._reader.get
        self.get_nowait = self._reader.get_nowait
        self.get_many = self._reader.get_many

    def _place(self, start: Start) -> None:
        for k, cursor in self._cursors.items():
            if start.latest:
                cursor.seek(self._logs[k].bounds()[1])
            elif start.timestamp_ns is not None:
                cursor.seek_time(start.timestamp_ns)
            else:
                self._seek(k, start.offset_for(k))

    def _seek(self, partition: int, offset: int) -> None:
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

    def seek(self, partition: int, offset: int) -> None:
        self._reader.lock()
        try:
            self._seek(partition, offset)
        finally:
            self._reader.unlock()

    def position(self) -> Dict[int, int]:
        return {k: cursor.position for k, cursor in self._cursors.items()}

    def lag(self) -> Dict[int, int]:
        self._reader.lock()
        try:
            lags: Dict[int, int] = {}
            for k, cursor in self._cursors.items():
                start, end = self._logs[k].bounds()
                lags[k] = max(0, end - max(cursor.position, start))
            return lags
        finally:
            self._reader.unlock()

    def skipped(self) -> Dict[int, int]:
        return {k: cursor.skipped for k, cursor in self._cursors.items()}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        for log in self._logs.values():
            log.close()
