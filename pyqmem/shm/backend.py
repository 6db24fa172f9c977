"""The shared-memory backend: topics as folders of memory-mapped partition
logs on this host (the default; see docs/design/backends.md)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional, Tuple, Type, Union

from .delete import delete_topic
from .folders import META, dir_argument, root
from .store import ShmTopicStore

if TYPE_CHECKING:
    from ..backend import TopicConfig

__all__ = ["SharedMemory"]


class SharedMemory:
    """Topics in the folder `dir` (None: ``$PYQMEM_DIR`` if set, else the
    per-user ``/dev/shm/pyqmem-<uid>``; see pyqmem.shm.folders).  The
    folder is looked up when a topic is opened, not here."""

    name = "shm"

    def __init__(self, dir: Union[str, os.PathLike[str], None] = None) -> None:
        dir_argument(dir)  # TypeError/ValueError now, before anything is touched
        self._dir = None if dir is None else os.path.abspath(os.fspath(dir))

    @property
    def dir(self) -> Optional[str]:
        """The root folder as given (absolute), or None for the default."""
        return self._dir

    def open_topic(
        self,
        name: str,
        wanted: TopicConfig,
        *,
        grow_to: Optional[int],
        create: Optional[bool],
    ) -> ShmTopicStore:
        store = ShmTopicStore(self._dir, name, wanted, grow_to, create)
        store.backend = SharedMemory(store.dir)  # finds the same topic from any process
        return store

    def topic_exists(self, name: str) -> bool:
        top = root(self._dir, make=False)
        return top is not None and os.path.isfile(os.path.join(top, name, META))

    def delete_topic(self, name: str, *, force: bool = False) -> None:
        delete_topic(self._dir, name, force)

    def __eq__(self, other: object) -> bool:
        return type(other) is SharedMemory and other._dir == self._dir

    def __hash__(self) -> int:
        return hash((SharedMemory, self._dir))

    def __reduce__(self) -> Tuple[Type[SharedMemory], Tuple[Optional[str]]]:
        return SharedMemory, (self._dir,)

    def __repr__(self) -> str:
        return f"pyqmem.shm.SharedMemory({self._dir!r})"
