"""Record headers: a dict of str -> bytes, stored as bytes the C core keeps opaque.

Encoding (little-endian)::

    u16 count
    count times: u16 name length, UTF-8 name, u32 value length, value

A record with no header at all is stored as zero bytes (not as a count of 0);
both decode to ``{}``.  Names starting with ``"qm."`` are reserved for pyqmem:
``"qm.correlation_id"`` carries ``send(correlation_id=...)`` and is exposed
as ``Message.correlation_id``, not in ``Message.headers``.  Users may not
set reserved names; other reserved names in a record (a later version's, or
a peer's) are skipped when decoding, so whatever decodes encodes again.
Header names are unique (a dict; a name given twice keeps its last value);
order is kept.

This module is the definition.  On CPython the send and read fast paths
encode and decode the common case in C (pyqmem/_cy/records.pxi) and hand
everything else here; tests/test_topic_fastpaths.py holds both to the same
bytes and errors.
"""

import struct
from collections.abc import Mapping
from typing import Dict, Optional, Tuple

from .errors import CorruptError, MessageTooLarge

__all__ = ["encode", "decode", "CORRELATION_ID"]

CORRELATION_ID = "qm.correlation_id"
_RESERVED = "qm."
_COUNT = struct.Struct("<H")
_NAME_LEN = struct.Struct("<H")
_VALUE_LEN = struct.Struct("<I")
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF


def encode(headers: object, correlation_id: object, limit: Optional[int] = None) -> bytes:
    """The bytes of user `headers` (a mapping str -> bytes-like, or None)
    plus the reserved correlation id (a str, or None).  TypeError/ValueError
    on bad names or values; with `limit`, MessageTooLarge as soon as the
    encoding would exceed `limit` bytes, before a value is copied."""
    if headers is None:
        if correlation_id is None:
            return b""  # the common case: no header block at all
        headers = {}
    elif not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a dict of str -> bytes, not {type(headers).__name__}")
    if correlation_id is not None and not isinstance(correlation_id, str):
        raise TypeError(
            f"correlation_id must be a str or None, not {type(correlation_id).__name__}"
        )
    items = []
    for name, value in headers.items():
        if not isinstance(name, str):
            raise TypeError(f"header names must be str, not {type(name).__name__}")
        if name.startswith(_RESERVED):
            raise ValueError(f"header name {name!r}: names starting with 'qm.' are reserved")
        items.append((name, value))
    if correlation_id is not None:
        if limit is not None and len(correlation_id) > limit:  # >= 1 UTF-8 byte a character
            raise MessageTooLarge(
                f"correlation id of {len(correlation_id)} characters is larger "
                f"than the limit of {limit} bytes left for the headers"
            )
        items.append((CORRELATION_ID, correlation_id.encode("utf-8")))
    if not items:
        return b""
    if len(items) > _U16_MAX:
        raise ValueError(f"{len(items)} headers: at most {_U16_MAX} per record")
    parts = [_COUNT.pack(len(items))]
    size = _COUNT.size
    for name, value in items:
        raw_name = name.encode("utf-8")
        if len(raw_name) > _U16_MAX:
            raise ValueError(f"header name of {len(raw_name)} bytes: at most {_U16_MAX}")
        try:
            view = memoryview(value)
        except TypeError:
            raise TypeError(
                f"header {name!r}: values must be bytes-like, not {type(value).__name__}"
            ) from None
        with view:  # sizes checked before the value is copied
            size += _NAME_LEN.size + len(raw_name) + _VALUE_LEN.size + view.nbytes
            if limit is not None and size > limit:
                raise MessageTooLarge(
                    f"headers of at least {size} bytes are larger than the limit of {limit} "
                    "bytes left for them (a topic's segment_bytes // 4 for key and headers)"
                )
            if view.nbytes > _U32_MAX:
                raise ValueError(f"header {name!r}: value of {view.nbytes} bytes is too long")
            raw_value = view.tobytes()
        parts += (
            _NAME_LEN.pack(len(raw_name)),
            raw_name,
            _VALUE_LEN.pack(len(raw_value)),
            raw_value,
        )
    return b"".join(parts)


def decode(data: bytes) -> Tuple[Dict[str, bytes], Optional[str]]:
    """``(headers, correlation_id)`` from the bytes `data`; CorruptError if
    the lengths do not add up or a name is not UTF-8."""
    if not data:
        return {}, None
    size = len(data)
    if size < _COUNT.size:
        raise CorruptError(f"record headers of {size} bytes have no count")
    (count,) = _COUNT.unpack_from(data)
    pos = _COUNT.size
    headers = {}
    correlation_id = None
    for _ in range(count):
        if pos + _NAME_LEN.size > size:
            raise CorruptError("record headers end inside a name length")
        (name_len,) = _NAME_LEN.unpack_from(data, pos)
        pos += _NAME_LEN.size
        if pos + name_len + _VALUE_LEN.size > size:
            raise CorruptError("record headers end inside a name")
        try:
            name = data[pos : pos + name_len].decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptError("record header name is not UTF-8") from None
        pos += name_len
        (value_len,) = _VALUE_LEN.unpack_from(data, pos)
        pos += _VALUE_LEN.size
        if pos + value_len > size:
            raise CorruptError(f"record header {name!r} ends past the headers")
        value = data[pos : pos + value_len]
        pos += value_len
        if name == CORRELATION_ID:
            try:
                correlation_id = value.decode("utf-8")
            except UnicodeDecodeError:
                raise CorruptError("record correlation id is not UTF-8") from None
        elif not name.startswith(_RESERVED):
            headers[name] = value
    if pos != size:
        raise CorruptError(f"record headers have {size - pos} bytes after the last header")
    return headers, correlation_id
