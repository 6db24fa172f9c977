"""Self-checking messages: header + payload + CRC-32 trailer.

Layout (little endian):
    magic u32 | producer u32 | seq u64 | t_put f64 | length u32 | payload | crc32 u32
The CRC covers header and payload, so a torn or mixed-up record is detected.
Payload bytes are a slice of a fixed pseudo-random block chosen by (producer, seq).
"""
from __future__ import annotations

import random
import struct
import zlib

MAGIC = 0x51_4D_45_4D  # "QMEM"
HDR = struct.Struct("<IIQdI")
TRAILER = struct.Struct("<I")
OVERHEAD = HDR.size + TRAILER.size
SENTINEL_PRODUCER = 0xFFFF_FFFF

MAX_PAYLOAD = 256 * 1024
_BLOCK = random.Random(12345).randbytes(2 * MAX_PAYLOAD)
_BLOCK_MV = memoryview(_BLOCK)


class TornMessage(Exception):
    pass


def payload_for(producer: int, seq: int, size: int) -> memoryview:
    span = len(_BLOCK) - size + 1
    off = (producer * 7919 + seq * 104729) % span
    return _BLOCK_MV[off:off + size]


def encode(producer: int, seq: int, size: int, t_put: float = 0.0) -> bytes:
    hdr = HDR.pack(MAGIC, producer, seq, t_put, size)
    payload = payload_for(producer, seq, size)
    crc = zlib.crc32(payload, zlib.crc32(hdr))
    return b"".join((hdr, payload, TRAILER.pack(crc)))


def sentinel() -> bytes:
    return encode(SENTINEL_PRODUCER, 0, 0)


def decode(buf) -> tuple:
    """Return (producer, seq, t_put, size); raise TornMessage if anything is off."""
    mv = memoryview(buf).cast("B")
    n = mv.nbytes
    if n < OVERHEAD:
        raise TornMessage(f"short message: {n} bytes")
    magic, producer, seq, t_put, size = HDR.unpack_from(mv, 0)
    if magic != MAGIC:
        raise TornMessage(f"bad magic {magic:#x}")
    if size != n - OVERHEAD:
        raise TornMessage(f"length field {size} != actual {n - OVERHEAD}")
    (crc,) = TRAILER.unpack_from(mv, n - TRAILER.size)
    if zlib.crc32(mv[:n - TRAILER.size]) != crc:
        raise TornMessage(f"crc mismatch producer={producer} seq={seq} size={size}")
    if mv[HDR.size:n - TRAILER.size] != payload_for(producer, seq, size):
        raise TornMessage(f"payload mismatch producer={producer} seq={seq}")
    return producer, seq, t_put, size


def draw_size(rng: random.Random, max_size: int = MAX_PAYLOAD) -> int:
    """Mostly small, some large: mean about 2.6 KiB for max_size = 256 KiB."""
    r = rng.random()
    if r < 0.90:
        hi = min(1024, max_size)
        return rng.randint(0, hi)
    if r < 0.99:
        lo, hi = min(1025, max_size), min(16384, max_size)
        return rng.randint(lo, hi)
    lo = min(16385, max_size)
    return rng.randint(lo, max_size)
