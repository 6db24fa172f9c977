"""pyqmem: queues and topics between Python processes on one host, through shared memory.

No broker, no daemon; a killed process never wedges the others.

    >>> import pyqmem
    >>> q = pyqmem.Queue()  # anonymous, as multiprocessing.Queue(); or Queue("jobs")
    >>> q.put({"id": 1})
    >>> q.get()
    {'id': 1}
    >>> q.close()

    >>> t = pyqmem.Topic("events", partitions=4)
    >>> md = t.send(b"hello", key="user-1")
    >>> with t.consumer(start="earliest") as c:
    ...     c.get(timeout=1).value
    b'hello'
    >>> t.delete()  # a topic outlives processes until deleted
"""

from . import _native  # noqa: F401  (the compiled core, configured; first)
from .consumer import Consumer
from .errors import (
    AlreadyExists,
    Closed,
    CorruptError,
    DurabilityWarning,
    Empty,
    Full,
    IncompatibleError,
    InUse,
    MessageTooLarge,
    NotFound,
    QmemError,
    StaleAck,
)
from .group import GroupConsumer
from .queue import Queue
from .redrive import redrive
from .retry import RetryPolicy
from .topic import Message, Record, RecordMetadata, Topic

__version__ = "0.1.0"

__all__ = [
    "Queue",
    "Topic",
    "Consumer",
    "GroupConsumer",
    "Message",
    "RetryPolicy",
    "redrive",
    "Record",
    "RecordMetadata",
    "QmemError",
    "Full",
    "Empty",
    "Closed",
    "MessageTooLarge",
    "CorruptError",
    "DurabilityWarning",
    "IncompatibleError",
    "NotFound",
    "AlreadyExists",
    "InUse",
    "StaleAck",
    "__version__",
]
