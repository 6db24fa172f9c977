"""How Python objects become ring records (and topic record values) and back.

A serializer has ``frames`` (True: records are read with ``Ring.get_frame``,
which splits off a tag byte; False: with ``Ring.get``), ``encode(obj, limit)``
returning a record (one bytes-like object, or a list of bytes-like pieces the
ring gathers into one record), ``decode(item)``, and ``decode_view(view)``
for a topic record: the object of the whole record given as a read-only
memoryview into the log's mapping (the same bytes ``encode`` produced).

"pickle" record formats, told apart by the first byte:

``0x80 ...``  a plain ``pickle.dumps(obj, protocol=5)`` (every pickle of
              protocol 2+ starts with the PROTO opcode 0x80).
``B data``    a ``bytes`` object of at least 64 KiB, copied once into the
              ring and once out (no pickle framing).
``O frame``   a pickle with out-of-band buffers (protocol 5, e.g. numpy
              arrays, bytearrays).  ``frame`` is, little-endian::

                  u64 nbufs, u64 pickle_len, u64 len[nbufs],
                  pickle bytes, then each buffer, zero-padded so that every
                  buffer starts at a multiple of 64 from the start of frame.

              The reader receives ``frame`` as one writable bytearray and
              unpickles with memoryview slices of it as the buffers, so arrays
              come back writable without another copy.
"""

from __future__ import annotations

import json
import pickle
import struct
import types
from typing import TYPE_CHECKING, Any, List, Tuple, Union

from .errors import CorruptError, MessageTooLarge

if TYPE_CHECKING:
    from typing import Protocol

    from typing_extensions import Buffer

    # What ``encode`` returns: one bytes-like record, or pieces the ring gathers into one.
    Encoded = Union[Buffer, List[Buffer]]

    class Serializer(Protocol):
        """What ``resolve`` gives (for type checking only)."""

        frames: bool

        def encode(self, obj: Any, limit: int) -> Encoded: ...
        def decode(self, item: Any) -> Any: ...
        def decode_view(self, view: memoryview) -> Any: ...


__all__ = ["resolve"]

_BIG_BYTES = 64 * 1024
_ALIGN = 64
_ZEROS = bytes(_ALIGN)
# The first byte of a pickle record (docs/design/format.md).  pyqmem._native
# hands TAG_BYTES and TAG_OUT_OF_BAND to _core, whose Ring.get_frame splits
# them off: this is the one place they are written down.
TAG_PICKLE = 0x80
TAG_BYTES = ord("B")
TAG_OUT_OF_BAND = ord("O")
_FRAME_HEAD = struct.Struct("<QQ")


def _too_large(size: int, limit: int) -> MessageTooLarge:
    return MessageTooLarge(
        f"message of {size} bytes is larger than the limit of {limit} bytes "
        "(a queue's capacity // 4, a topic's segment_bytes // 2)"
    )


def _record(data: Any, limit: int, what: str) -> Buffer:
    """`data` checked to be bytes-like and at most `limit` bytes, C-contiguous."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what} a bytes-like object, not {type(data).__name__}") from None
    if view.nbytes > limit:
        raise _too_large(view.nbytes, limit)
    return data if view.c_contiguous else view.tobytes()


# Types seen not to export a buffer (bounded: types can be made at run time).
_NO_BUFFER = {int, float, str, tuple, list, dict, set, frozenset, bool, type(None), complex}
_NO_BUFFER_MAX = 1024


def _check_buffer_size(obj: Any, kind: type, limit: int) -> None:
    """MessageTooLarge, before pickling, for an object exporting a buffer of
    more than `limit` bytes.  Pickle copies a buffer it cannot pass out of
    band (a non-contiguous numpy array: ``np.broadcast_to`` claims any size
    while holding one element), so the size must be known first."""
    try:
        view = memoryview(obj)
    except TypeError:
        if len(_NO_BUFFER) < _NO_BUFFER_MAX:
            _NO_BUFFER.add(kind)
        return
    except BufferError:  # exports no buffer now (e.g. a released one): pickle decides
        return
    with view:
        if view.nbytes > limit:
            raise _too_large(view.nbytes, limit)


class PickleSerializer:
    """Any picklable object; large buffers are copied only into and out of the ring."""

    frames = True

    def encode(self, obj: Any, limit: int) -> Encoded:
        """The record for `obj`; MessageTooLarge if it exceeds `limit` bytes."""
        kind = type(obj)
        if kind is bytes and len(obj) >= _BIG_BYTES:
            if len(obj) + 1 > limit:
                raise _too_large(len(obj) + 1, limit)
            return [b"B", obj]
        if kind is bytes or kind is bytearray or kind is memoryview:
            nbytes = memoryview(obj).nbytes
            if nbytes > limit:
                raise _too_large(nbytes, limit)
        elif kind not in _NO_BUFFER:
            _check_buffer_size(obj, kind, limit)
        buffers: List[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        if not buffers:
            if len(data) > limit:
                raise _too_large(len(data), limit)
            return data
        raws = [b.raw() for b in buffers]
        head = _FRAME_HEAD.pack(len(raws), len(data)) + struct.pack(
            f"<{len(raws)}Q", *[r.nbytes for r in raws]
        )
        pieces: List[Buffer] = [b"O", head, data]
        offset = len(head) + len(data)
        for raw in raws:
            pad = -offset % _ALIGN
            if pad:
                pieces.append(_ZEROS[:pad])
            pieces.append(raw)
            offset += pad + raw.nbytes
        if offset + 1 > limit:
            raise _too_large(offset + 1, limit)
        return pieces

    def decode(self, item: Tuple[int, Union[bytes, bytearray]]) -> Any:
        """The object of a ``(tag, obj)`` item from ``Ring.get_frame``."""
        tag, obj = item
        if tag == TAG_PICKLE:
            return pickle.loads(obj)
        if tag == TAG_BYTES:
            return obj
        if tag == TAG_OUT_OF_BAND:
            return _load_frame(obj)
        raise CorruptError(f"record does not start with a pickle serializer tag (first byte {tag})")

    def decode_view(self, view: memoryview) -> Any:
        """The object of a whole record.  Out-of-band buffers are copied
        into one writable bytearray (as ``decode`` gets them), so arrays come
        back writable and independent of the log's mapping."""
        if not view:
            raise CorruptError("empty record: no pickle serializer tag")
        tag = view[0]
        if tag == TAG_PICKLE:
            return pickle.loads(view)
        if tag == TAG_BYTES:
            return view[1:].tobytes()
        return self.decode((tag, bytearray(view[1:])))


def _load_frame(frame: Buffer) -> Any:
    view = memoryview(frame)
    size = len(view)
    if size < _FRAME_HEAD.size:
        raise CorruptError(f"out-of-band frame of {size} bytes has no header")
    nbufs, pickle_len = _FRAME_HEAD.unpack_from(view)
    offset = _FRAME_HEAD.size + 8 * nbufs
    if offset > size:
        raise CorruptError(f"out-of-band frame of {size} bytes claims {nbufs} buffers")
    lengths = struct.unpack_from(f"<{nbufs}Q", view, _FRAME_HEAD.size)
    data = view[offset : offset + pickle_len]
    offset += pickle_len
    buffers = []
    for length in lengths:
        offset += -offset % _ALIGN
        buffers.append(view[offset : offset + length])
        offset += length
    if offset > size:
        raise CorruptError(f"out-of-band frame of {size} bytes claims {offset} bytes")
    return pickle.loads(data, buffers=buffers)


class RawSerializer:
    """Bytes-like objects in, ``bytes`` out."""

    frames = False

    def encode(self, obj: Any, limit: int) -> Encoded:
        """`obj` itself (C-contiguous), after checking type and size."""
        return _record(obj, limit, "the raw serializer takes")

    def decode(self, item: bytes) -> bytes:
        """The bytes of the record."""
        return item

    def decode_view(self, view: memoryview) -> bytes:
        """A copy of the record as bytes."""
        return view.tobytes()


class CustomSerializer:
    """Wraps a user object with ``dumps(obj) -> bytes-like or str`` (a str is
    stored as its UTF-8, so the ``json`` module works as it is) and
    ``loads(bytes)``."""

    frames = False

    def __init__(self, spec: Any) -> None:
        if not (callable(getattr(spec, "dumps", None)) and callable(getattr(spec, "loads", None))):
            raise TypeError(
                'serializer must be "pickle", "raw", None, or an object with '
                f"dumps() and loads() methods, not {type(spec).__name__}"
            )
        self._spec = spec

    def encode(self, obj: Any, limit: int) -> Encoded:
        """``dumps(obj)``, checked to be bytes-like and to fit."""
        out = self._spec.dumps(obj)
        if isinstance(out, str):
            out = out.encode("utf-8")
        return _record(out, limit, f"{_spec_name(self._spec)}.dumps() must return str or")

    def decode(self, item: bytes) -> Any:
        """``loads(bytes)``."""
        return self._spec.loads(item)

    def decode_view(self, view: memoryview) -> Any:
        """``loads(bytes)`` of a copy of the record (``loads`` gets bytes, as
        from a Queue; ``Message.data`` is the zero-copy view)."""
        return self._spec.loads(view.tobytes())


def _spec_name(spec: object) -> str:
    return spec.__name__ if isinstance(spec, types.ModuleType) else type(spec).__name__


_PICKLE = PickleSerializer()
_RAW = RawSerializer()


def resolve(spec: Any) -> Serializer:
    """The serializer for a ``Queue(serializer=...)`` or ``Topic(serializer=...)`` argument."""
    if spec is None or (isinstance(spec, str) and spec == "raw"):
        return _RAW
    if isinstance(spec, str):
        if spec == "pickle":
            return _PICKLE
        if spec == "json":
            return CustomSerializer(json)
        raise ValueError(
            f'unknown serializer {spec!r}: use "pickle", "json", "raw", None or an object '
            "with dumps() and loads()"
        )
    return CustomSerializer(spec)
