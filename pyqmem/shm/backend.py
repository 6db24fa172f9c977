"""The shared-memory backend: topics as folders of memory-mapped partition
logs on this host (the default; see docs/design/backends.md)."""

import os

from .delete import delete_topic
from .folders import META, dir_argument, root
from .store import ShmTopicStore

__all__ = ["SharedMemory"]


class SharedMemory:
    """Topics in the folder `dir` (None: ``$PYQMEM_DIR`` if set, else the
    per-user ``/dev/shm/pyqmem-<uid>``; see pyqmem.shm.folders).  The
    folder is looked up when a topic is opened, not here."""

    name = "shm"

    def __init__(self, dir=None):
        dir_argument(dir)  # TypeError/ValueError now, before anything is touched
        self._dir = None if dir is None else os.path.abspath(os.fspath(dir))

    @property
    def dir(self):
        """The root folder as given (absolute), or None for the default."""
        return self._dir

    def open_topic(self, name, wanted, *, grow_to, create):
        store = ShmTopicStore(self._dir, name, wanted, grow_to, create)
        store.backend = SharedMemory(store.dir)  # finds the same topic from any process
        return store

    def topic_exists(self, name):
        top = root(self._dir, make=False)
        return top is not None and os.path.isfile(os.path.join(top, name, META))

    def delete_topic(self, name, *, force=False):
        delete_topic(self._dir, name, force)

    def __eq__(self, other):
        return type(other) is SharedMemory and other._dir == self._dir

    def __hash__(self):
        return hash((SharedMemory, self._dir))

    def __reduce__(self):
        return SharedMemory, (self._dir,)

    def __repr__(self):
        return f"pyqmem.shm.SharedMemory({self._dir!r})"
