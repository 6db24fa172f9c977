"""Every exception pyqmem raises.

Each one derives from :class:`QmemError` and, where a standard library
exception means the same thing, from that one too, so code written for
``queue.Queue`` or for files keeps working (``except queue.Full``,
``except FileNotFoundError``, ...).
"""

import queue as _queue
from typing import Optional

__all__ = [
    "QmemError",
    "Full",
    "Empty",
    "Closed",
    "MessageTooLarge",
    "CorruptError",
    "IncompatibleError",
    "NotFound",
    "AlreadyExists",
    "InUse",
    "StaleAck",
    "DurabilityWarning",
]


class QmemError(Exception):
    """Root of every pyqmem error."""


class Full(QmemError, _queue.Full):
    """A put could not complete in time.

    ``count`` is how many messages of a ``put_many`` were put before the
    deadline passed (``None`` for a single ``put``).
    """

    count: Optional[int] = None

    def __init__(self, *args: object, count: Optional[int] = None) -> None:
        super().__init__(*args)
        self.count = count


class Empty(QmemError, _queue.Empty):
    """A get found nothing in time."""


class Closed(QmemError, ValueError):
    """An operation on a closed handle."""


class MessageTooLarge(QmemError, ValueError):
    """A message can never fit; raised before any space is taken."""


class CorruptError(QmemError):
    """Shared memory or a file failed validation (magic, bounds, CRC, framing)."""


class IncompatibleError(QmemError):
    """An existing object has another format version or layout."""


class NotFound(QmemError, FileNotFoundError):
    """``create=False`` and the object does not exist."""


class AlreadyExists(QmemError, FileExistsError):
    """``create=True`` and the object exists."""


class InUse(QmemError):
    """The object is open elsewhere (or by this process), so it is not deleted."""


class StaleAck(QmemError):
    """Ack/nack of a delivery whose lease was lost (redelivered elsewhere)."""


class DurabilityWarning(UserWarning):
    """A topic asks for more durability than where it lives can give:
    ``durability="fsync"`` on a file system in RAM (tmpfs), which a power
    loss or a reboot empties whatever was synced."""
