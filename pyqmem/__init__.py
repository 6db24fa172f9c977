"""pyqmem: queues and topics between Python processes on one host, through shared memory.

No broker, no daemon; a killed process never wedges the others.

    >>> import pyqmem
    >>> q = pyqmem.Queue("jobs")
    >>> q.put({"id": 1})
    >>> q.get()
    {'id': 1}

    >>> t = pyqmem.Topic("events", partitions=4)
    >>> md = t.send(b"hello", key="user-1")
    >>> with t.consumer(start="earliest") as c:
    ...     c.get(timeout=1).value
    b'hello'
"""

from .errors import (
    AlreadyExists,
    Closed,
    CorruptError,
    Empty,
    Full,
    IncompatibleError,
    MessageTooLarge,
    NotFound,
    QmemError,
    StaleAck,
)

try:
    from . import _core  # noqa: F401  (the compiled adapter)
except ImportError as exc:  # pragma: no cover - depends on how it was installed
    raise ImportError(
        f"pyqmem's compiled core is missing ({exc}).  If pyqmem is installed, "
        f"the source folder {__path__[0]!r} is shadowing it: run from another "
        "folder, or install with `pip install -e .`"
    ) from exc

from .consumer import Consumer, Message
from .group import GroupConsumer
from .queue import Queue
from .redrive import redrive
from .retry import RetryPolicy
from .topic import RecordMetadata, Topic

__version__ = "0.1.0"

__all__ = [
    "Queue",
    "Topic",
    "Consumer",
    "GroupConsumer",
    "Message",
    "RetryPolicy",
    "redrive",
    "RecordMetadata",
    "QmemError",
    "Full",
    "Empty",
    "Closed",
    "MessageTooLarge",
    "CorruptError",
    "IncompatibleError",
    "NotFound",
    "AlreadyExists",
    "StaleAck",
    "__version__",
]
