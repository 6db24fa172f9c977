"""Redrive: move dead-lettered records back to the topic they came from.

As SQS's "start DLQ redrive": after the cause of the failures is fixed,
``pyqmem.redrive("orders")`` (or ``pyqmem redrive orders``) reads
``"orders.dlq"`` and sends each record that came from ``"orders"`` back to
it, with its key, value bytes, user headers and correlation id, to its
original partition (by key if the topic now has fewer partitions), without
the ``dlq.*`` headers.  Consumer groups of ``"orders"`` then see it as a
new record (delivery count 1).

Progress is a consumer group of the dead-letter topic, ``"<source>.redrive"``:
a record is acked there only after it was sent back, so a redrive killed
midway resumes where it stopped and loses nothing; a kill between the send
and the ack sends that one record twice (at-least-once).  Records of other
sources (a dead-letter topic shared by several) are passed over in this
source's group and stay in the dead-letter topic, and so are stand-ins of
records that did not fit it (``dlq.omitted``: they carry no payload).  The dead-letter topic
itself is never modified; its retention removes old records.
"""

from typing import TYPE_CHECKING, Optional, Union

from . import deadletter as _deadletter
from .errors import Empty
from .naming import check_name
from .topic import Topic

if TYPE_CHECKING:
    import os

    from .backend import Backend

__all__ = ["redrive"]


def redrive(
    source: str,
    *,
    dir: Union[str, "os.PathLike[str]", None] = None,
    dead_letter: Optional[str] = None,
    max_records: Optional[int] = None,
    timeout: Optional[float] = 0.0,
    backend: "Optional[Backend]" = None,
) -> int:
    """Send the records of `source`'s dead-letter topic (``"<source>.dlq"``,
    or the topic named by `dead_letter`) back to `source`; returns how many
    were sent.

    `max_records`: stop after that many (default: all there are);
    `timeout`: seconds to wait for more once the dead-letter topic is
    drained (default 0: stop at once).  NotFound if either topic does not
    exist; TypeError/ValueError for bad arguments, checked before either
    topic is opened (so is the progress group's name: a `source` of more than
    120 characters has none and is ValueError).  `dir` or `backend`: where
    the topics live, as for Topic."""
    if max_records is not None and (
        isinstance(max_records, bool) or not isinstance(max_records, int)
    ):
        raise TypeError(f"max_records must be an int or None, not {type(max_records).__name__}")
    if max_records is not None and max_records < 0:
        raise ValueError(f"max_records must be >= 0, not {max_records}")
    if dead_letter is not None and not isinstance(dead_letter, str):
        raise TypeError(f"dead_letter must be a topic name, not {type(dead_letter).__name__}")
    check_name(source, "topic name")  # every name, before anything is opened
    dlq_name = f"{source}.dlq" if dead_letter is None else dead_letter
    check_name(dlq_name, "dead-letter topic name")
    check_name(f"{source}.redrive", "redrive group name (source + '.redrive')")
    src = Topic(source, dir=dir, backend=backend, create=False)
    moved = 0
    try:
        dlq = Topic(dlq_name, backend=src.backend, create=False)
        try:
            consumer = dlq.consumer(
                group=f"{source}.redrive", start="earliest", max_deliveries=None, dead_letter=False
            )
            with consumer:
                while max_records is None or moved < max_records:
                    try:
                        msg = consumer.get(timeout=timeout)
                    except Empty:
                        break
                    info = _deadletter.info(msg.headers)
                    if info is not None and info.topic != source:
                        msg.ack()  # another source's record: not ours to move
                        continue
                    if _deadletter.OMITTED in msg.headers:
                        msg.ack()  # a stand-in without its payload: nothing to move
                        continue
                    partition: Optional[int] = None
                    if info is not None and info.partition < src.partitions:
                        partition = info.partition
                    src.send(
                        bytes(msg.data),
                        key=msg.key,
                        partition=partition,
                        headers=_deadletter.original_headers(msg.headers) or None,
                        correlation_id=msg.correlation_id,
                    )
                    msg.ack()
                    moved += 1
        finally:
            dlq.close()
    finally:
        src.close()
    return moved
