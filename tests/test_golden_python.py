"""The bytes Python owns may only change on purpose (docs/design/format.md, "Bytes the
Python layer owns"), as test_golden.c holds the C structures to theirs.

Each case compares what this build writes with literal bytes written down once, then
reads those bytes back by the documented layout, by hand, so a change to the code and
a change to the spec cannot pass unnoticed together.  To change a format on purpose:
change the spec, the literals here and the format number (topic.json's "format").
"""
import json
import os
import pickle
import struct

from pyqmem import headers
from pyqmem.backend import TopicConfig
from pyqmem.serializers import PickleSerializer
from pyqmem.shm.folders import FORMAT, read_meta, write_meta

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")

# headers.encode({"trace": b"abc", "k": b""}, "c-1", limit)
HEADER_BLOCK = bytes.fromhex(
    "0300"                                        # u16 count = 3
    "0500" "7472616365" "03000000" "616263"       # "trace" -> b"abc"
    "0100" "6b" "00000000"                        # "k" -> b""
    "1100" "716d2e636f7272656c6174696f6e5f6964"   # "qm.correlation_id"
    "03000000" "632d31"                           # -> b"c-1"
)

# PickleSerializer().encode(pickle.PickleBuffer(bytearray(b"abc")), limit), joined
OUT_OF_BAND_RECORD = bytes.fromhex(
    "4f"                                          # tag "O"
    "0100000000000000" "0400000000000000"         # u64 nbufs = 1, u64 pickle_len = 4
    "0300000000000000"                            # u64 len[0] = 3
    "8005972e"                                    # pickle: PROTO 5, NEXT_BUFFER, STOP
    + "00" * 36                                   # pad: the buffer starts at 64 from the frame
    + "616263"                                    # the buffer
)


def test_the_header_block_is_its_golden_bytes_and_reads_back_by_the_spec():
    block = headers.encode({"trace": b"abc", "k": b""}, "c-1", 1 << 20)
    assert block == HEADER_BLOCK
    (count,), pos, fields = struct.unpack_from("<H", block), 2, []
    for _ in range(count):
        (n,) = struct.unpack_from("<H", block, pos)
        name = block[pos + 2:pos + 2 + n].decode()
        (m,) = struct.unpack_from("<I", block, pos + 2 + n)
        fields.append((name, block[pos + 6 + n:pos + 6 + n + m]))
        pos += 6 + n + m
    assert pos == len(block)
    assert fields == [("trace", b"abc"), ("k", b""), ("qm.correlation_id", b"c-1")]
    assert headers.decode(HEADER_BLOCK) == ({"trace": b"abc", "k": b""}, "c-1")
    assert headers.encode(None, None, 1 << 20) == b""     # no headers: zero bytes


def test_pickle_records_are_their_golden_framings():
    ser = PickleSerializer()
    record = b"".join(bytes(p) for p in ser.encode(pickle.PickleBuffer(bytearray(b"abc")), 1 << 20))
    assert record == OUT_OF_BAND_RECORD
    frame = record[1:]
    nbufs, pickle_len = struct.unpack_from("<QQ", frame)
    (length,) = struct.unpack_from("<Q", frame, 16)
    start = 24 + pickle_len
    start += -start % 64
    assert (record[0:1], nbufs, length, frame[start:start + length]) == (b"O", 1, 3, b"abc")
    assert bytes(ser.decode_view(memoryview(record))) == b"abc"

    big = b"x" * 65536                                 # a bytes of >= 64 KiB: tag "B", no pickle
    assert [bytes(p) for p in ser.encode(big, 1 << 20)] == [b"B", big]
    small = ser.encode({"a": 1}, 1 << 20)              # anything else: a plain pickle
    assert bytes(small)[:2] == b"\x80\x05" and pickle.loads(small) == {"a": 1}


def test_topic_json_is_its_golden_file_and_reads_back(tmp_path):
    config = TopicConfig(4, 1 << 20, 10_000_000, 3600.5, "fsync")
    write_meta(str(tmp_path), config)
    with open(os.path.join(GOLDEN, "topic-v1.json"), "rb") as f:
        golden = f.read()
    with open(tmp_path / "topic.json", "rb") as f:
        assert f.read() == golden
    assert json.loads(golden) == {"format": FORMAT, "partitions": 4, "segment_bytes": 1 << 20,
                                  "retention_bytes": 10_000_000, "retention_seconds": 3600.5,
                                  "durability": "fsync"}
    assert read_meta(str(tmp_path)) == config
