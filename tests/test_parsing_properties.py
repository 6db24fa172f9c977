"""Property tests (hypothesis) of the Python-side parsers of bytes a peer wrote.

Record headers are decoded twice over: ``pyqmem.headers.decode`` (the reference) and
the C fast path in ``_core`` that ``Message.headers`` uses.  Whatever the bytes, both
must agree, and the only error either may raise is ``CorruptError``.  The same holds
for the dead-letter headers (``pyqmem.deadletter.info``: ``ValueError``) and the
out-of-band frames of the pickle serializer (``CorruptError``).

PYQMEM_PROPERTY_EXAMPLES scales the number of examples (default 200 per property).
"""
from __future__ import annotations

import os
import pickle
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyqmem
from pyqmem import deadletter, headers
from pyqmem.errors import CorruptError
from pyqmem.serializers import PickleSerializer

EXAMPLES = int(os.environ.get("PYQMEM_PROPERTY_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

names = st.text(min_size=0, max_size=12).filter(lambda n: not n.startswith("qm."))
header_dicts = st.dictionaries(names, st.binary(max_size=24), max_size=6)
correlation_ids = st.none() | st.text(max_size=16)


def decode_outcome(fn, raw):
    """('ok', value) or ('corrupt',); any other exception propagates (a failure)."""
    try:
        return ("ok", fn(raw))
    except CorruptError:
        return ("corrupt",)


@st.composite
def header_blocks(draw):
    """Bytes near valid header blocks: a real encoding, then cut, extended or with
    bytes overwritten, or plain random bytes."""
    raw = bytearray(headers.encode(draw(header_dicts), draw(correlation_ids)))
    how = draw(st.sampled_from(["valid", "cut", "extend", "overwrite", "random"]))
    if how == "cut" and raw:
        del raw[draw(st.integers(0, len(raw) - 1)):]
    elif how == "extend":
        raw += draw(st.binary(min_size=1, max_size=8))
    elif how == "overwrite" and raw:
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    elif how == "random":
        raw = bytearray(draw(st.binary(max_size=64)))
    return bytes(raw)


@SETTINGS
@given(header_dicts, correlation_ids)
def test_header_encoding_round_trips_every_valid_dict(hdrs, cid):
    decoded, decoded_cid = headers.decode(headers.encode(hdrs, cid))
    assert decoded == hdrs
    assert list(decoded) == list(hdrs)   # order kept
    assert decoded_cid == cid


@SETTINGS
@given(header_blocks())
def test_header_decoder_returns_headers_or_raises_corrupt_for_any_bytes(raw):
    outcome = decode_outcome(headers.decode, raw)
    if outcome[0] == "ok":
        hdrs, cid = outcome[1]
        assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in hdrs.items())
        assert cid is None or isinstance(cid, str)
        # what decoded encodes to bytes that decode to the same again
        assert headers.decode(headers.encode(hdrs, cid)) == (hdrs, cid)


@pytest.fixture(scope="module")
def raw_log(tmp_path_factory):
    """A one-partition topic, its Log (to append header bytes unchecked) and a
    subscriber reading them back through the C decoder."""
    folder = tmp_path_factory.mktemp("parsing")
    t = pyqmem.Topic("parse", partitions=1, dir=str(folder), segment_bytes=1 << 20, retention_bytes=None)
    c = t.consumer(start="latest")
    yield t._store._log(0), c
    c.close()
    t.close()


@SETTINGS
@given(header_blocks())
def test_c_header_decoder_agrees_with_the_python_reference(raw_log, raw):
    log, consumer = raw_log
    log.append(None, raw, b"v", 0)
    msg = consumer.get(timeout=5)
    assert bytes(msg.data) == b"v"
    want = decode_outcome(headers.decode, raw)
    got = decode_outcome(lambda _: (msg.headers, msg.correlation_id), raw)
    assert got == want


dlq_fields = st.fixed_dictionaries({
    "topic": st.text(max_size=8), "group": st.text(max_size=8),
    "partition": st.integers(0, 2**16), "offset": st.integers(0, 2**63),
    "delivery_count": st.integers(0, 4095), "error": st.text(max_size=20),
})


@SETTINGS
@given(dlq_fields, header_dicts)
def test_dead_letter_headers_round_trip_through_info(fields, user):
    hdrs = deadletter.dead_letter_headers(user, **fields)
    got = deadletter.info(hdrs)
    assert got is not None
    for k, v in fields.items():
        assert getattr(got, k) == (deadletter.error_text(v) if k == "error" else v)
    assert deadletter.original_headers(hdrs) == {k: v for k, v in user.items()
                                                 if not k.startswith("dlq.")}


@SETTINGS
@given(st.dictionaries(st.sampled_from([deadletter.PREFIX + f for f in deadletter.DeadLetterInfo._fields]
                                       + ["x", "dlq.other"]),
                       st.binary(max_size=12), max_size=9))
def test_dead_letter_info_of_any_headers_is_none_info_or_value_error(hdrs):
    try:
        got = deadletter.info(hdrs)
    except ValueError as exc:
        assert "dead-letter header" in str(exc)
        return
    assert got is None or isinstance(got, deadletter.DeadLetterInfo)
    if got is None:
        assert deadletter.PREFIX + "offset" not in hdrs


def oob_frame(chunks):
    """The record PickleSerializer makes for out-of-band buffers `chunks`."""
    value = [pickle.PickleBuffer(bytearray(c)) for c in chunks]
    pieces = PickleSerializer().encode(value, 1 << 20)
    assert isinstance(pieces, list) and pieces[0] == b"O"
    return b"".join(bytes(p) for p in pieces)


@SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=3))
def test_out_of_band_frames_made_by_the_serializer_round_trip(chunks):
    got = PickleSerializer().decode_view(memoryview(oob_frame(chunks)))
    assert [bytes(b) for b in got] == chunks


@SETTINGS
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=3),
       st.integers(1, 15), st.integers(0, 2**64 - 1), st.booleans())
def test_out_of_band_frame_with_hostile_counts_is_corrupt_or_a_pickle_error(
        chunks, field, value, cut):
    """Overwrite one 8-byte count of the frame head (buffer count, pickle length or a
    buffer length) with any value, or cut the frame short: decoding raises
    CorruptError, or a pickle error when the counts frame a broken pickle stream -
    never an IndexError, struct.error, MemoryError or a hang."""
    frame = bytearray(oob_frame(chunks))
    nfields = 2 + len(chunks)
    k = field % nfields
    struct.pack_into("<Q", frame, 1 + 8 * k, value)
    if cut:
        del frame[len(frame) // 2:]
    try:
        PickleSerializer().decode_view(memoryview(bytes(frame)))
    except CorruptError:
        pass
    except (pickle.UnpicklingError, EOFError) as exc:
        assert type(exc) in (pickle.UnpicklingError, EOFError)


# ----- what a consumer sees of a record whose header block is malformed -------------
BAD_BLOCK = b"\x01\x00\x00\x000\x00\x00\x00\x00"   # one header whose value runs past the end


def test_a_record_with_a_malformed_header_block_is_delivered_and_its_headers_raise(tmp_path):
    with pyqmem.Topic("bad", partitions=1, dir=str(tmp_path), retention_bytes=None) as t:
        with t.consumer(start="earliest") as c:
            t._store._log(0).append(None, BAD_BLOCK, b"value", 0)
            t.send(b"next", headers={"h": b"1"})
            m = c.get(timeout=5)
            assert bytes(m.data) == b"value" and m.offset == 0
            for _ in range(2):   # every access, not only the first
                with pytest.raises(CorruptError, match="ends past the headers"):
                    m.headers
                with pytest.raises(CorruptError):
                    m.correlation_id
            n = c.get(timeout=5)
            assert (n.value, n.headers) == (b"next", {"h": b"1"})


def test_a_group_dead_letters_a_record_with_a_malformed_header_block_without_them(tmp_path):
    from pyqmem import RetryPolicy

    with pyqmem.Topic("bad", partitions=1, dir=str(tmp_path), retention_bytes=None) as t:
        t._store._log(0).append(b"k", BAD_BLOCK, b"value", 0)
        with t.consumer(group="g", max_deliveries=1,
                        retry=RetryPolicy(initial=0.0, maximum=0.0, jitter=0)) as c:
            m = c.get(timeout=5)
            with pytest.raises(CorruptError):
                m.headers
            m.nack(delay=0)
            with pytest.raises(pyqmem.Empty):
                c.get(timeout=0.2)   # the next claim dead-letters it
        assert t.stats()["groups"]["g"][0]["dead_lettered"] == 1
        with pyqmem.Topic("bad.dlq", dir=str(tmp_path), create=False) as dlq:
            with dlq.consumer() as dc:
                d = dc.get(timeout=5)
                assert (d.key, d.value, d.correlation_id) == (b"k", b"value", None)
                info = deadletter.info(d.headers)
                assert info.offset == 0 and info.error.startswith("CorruptError")
                assert deadletter.original_headers(d.headers) == {}


def test_unknown_reserved_headers_are_skipped_by_both_decoders(tmp_path):
    raw = b"".join([struct.pack("<H", 3),
                    struct.pack("<H", 6), b"qm.new", struct.pack("<I", 1), b"x",
                    struct.pack("<H", 4), b"user", struct.pack("<I", 2), b"ok",
                    struct.pack("<H", 17), b"qm.correlation_id", struct.pack("<I", 2), b"id"])
    assert headers.decode(raw) == ({"user": b"ok"}, "id")
    with pyqmem.Topic("res", partitions=1, dir=str(tmp_path), retention_bytes=None) as t:
        with t.consumer(start="earliest") as c:
            t._store._log(0).append(None, raw, b"v", 0)
            m = c.get(timeout=5)
            assert (m.headers, m.correlation_id) == ({"user": b"ok"}, "id")
