"""Which partition a record goes to.

- An explicit ``partition`` wins (it must be in ``range(partitions)``).
- Else a record with a key goes to ``(murmur2(key) & 0x7fffffff) % partitions``:
  Kafka's default partitioner (``org.apache.kafka.common.utils.Utils.murmur2``,
  seed ``0x9747b28c``, and ``toPositive``), so the same key lands on the same
  partition across processes, restarts and Kafka clients.  A ``str`` key is
  hashed as its UTF-8 bytes; any bytes-like key as its bytes.
- Else round-robin, per ``Topic`` object, starting at a random partition.
"""

import itertools
import random
from typing import Any, Optional

from ._native import _core
from .errors import MessageTooLarge

__all__ = ["murmur2", "key_bytes", "partition_for_key", "RoundRobin"]


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of `data` (bytes), as a signed int like Java's
    (``qm_murmur2`` of the C core: the one implementation, the same the
    send fast path and every backend use)."""
    return _core.murmur2(data)


def key_bytes(key: Any, limit: Optional[int] = None) -> bytes:
    """The bytes of a record key: ``str`` as UTF-8, bytes-like as is.

    With `limit`, a key longer than `limit` bytes is MessageTooLarge, found
    before the key is encoded or copied (a bytes-like key may claim far more
    memory than there is, e.g. a sparse mapping)."""
    if isinstance(key, str):
        if limit is not None and len(key) > limit:  # UTF-8 has at least one byte per character
            raise _key_too_large(len(key), limit)
        raw = key.encode("utf-8")
    elif isinstance(key, bytes):
        raw = key
    else:
        try:
            view = memoryview(key)
        except TypeError:
            raise TypeError(
                f"key must be str, bytes-like or None, not {type(key).__name__}"
            ) from None
        with view:
            if limit is not None and view.nbytes > limit:
                raise _key_too_large(view.nbytes, limit)
            raw = view.tobytes()
    if limit is not None and len(raw) > limit:
        raise _key_too_large(len(raw), limit)
    return raw


def _key_too_large(size: int, limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        f"key of {size} bytes is larger than the limit of {limit} bytes "
        "for key and headers together (a topic's segment_bytes // 4)"
    )


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of a record with key bytes `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class RoundRobin:
    """Cycles over ``range(partitions)`` from a random start (thread-safe:
    ``next`` on an ``itertools.count`` is atomic)."""

    def __init__(self, partitions: int) -> None:
        self._partitions = partitions
        self._counter = itertools.count(random.randrange(partitions))

    def __call__(self) -> int:
        return next(self._counter) % self._partitions
