"""The dlq.* headers a dead-lettered record carries, and their decoding."""
import pytest

from pyqmem import deadletter as dl


def _headers(**kw):
    base = dict(topic="orders", group="billing", partition=3, offset=1234, delivery_count=5,
                error=RuntimeError("card declined"), timestamp_ns=1_700_000_000_000_000_000)
    base.update(kw)
    return dl.dead_letter_headers({"trace": b"abc"}, **base)


def test_headers_name_source_partition_offset_count_error_and_keep_user_headers():
    h = _headers()
    assert h["trace"] == b"abc"
    assert h["dlq.partition"] == b"3" and h["dlq.offset"] == b"1234"
    assert h["dlq.delivery_count"] == b"5"
    assert h["dlq.error"] == b"RuntimeError: card declined"
    got = dl.info(h)
    assert got == dl.DeadLetterInfo("orders", "billing", 3, 1234, 5,
                                    "RuntimeError: card declined", 1_700_000_000_000_000_000)


def test_dead_lettering_again_replaces_the_old_dlq_headers():
    first = _headers(delivery_count=5)
    again = dl.dead_letter_headers(first, topic="orders", group="billing", partition=0,
                                   offset=9, delivery_count=2, error="again")
    assert dl.info(again).offset == 9 and dl.info(again).error == "again"
    assert again["trace"] == b"abc"
    assert sum(k.startswith("dlq.") for k in again) == 7


def test_original_headers_drop_only_dlq_headers():
    assert dl.original_headers(_headers()) == {"trace": b"abc"}
    assert dl.original_headers(None) == {}


def test_a_record_that_was_never_dead_lettered_has_no_info():
    assert dl.info({"trace": b"x"}) is None
    assert dl.info({}) is None and dl.info(None) is None


def test_no_error_is_an_empty_text_and_long_errors_are_cut_on_a_character():
    assert dl.info(_headers(error=None)).error == ""
    long = "é" * dl.ERROR_MAX          # 2 bytes each in UTF-8
    text = dl.error_text(ValueError(long))
    assert len(text.encode()) <= dl.ERROR_MAX
    assert text.startswith("ValueError: é")
    assert text.encode().decode("utf-8") == text


@pytest.mark.parametrize("field, value", [("offset", b"-1"), ("offset", b"12x"),
                                          ("partition", b"\xff"), ("timestamp", b""),
                                          ("delivery_count", "٣".encode())])
def test_malformed_dlq_headers_raise_value_error(field, value):
    h = _headers()
    h["dlq." + field] = value
    with pytest.raises(ValueError, match=field):
        dl.info(h)


def test_incomplete_dlq_headers_raise_value_error():
    h = _headers()
    del h["dlq.group"]
    with pytest.raises(ValueError, match="dlq.group"):
        dl.info(h)


def test_the_omitted_note_is_cut_on_a_character_too():
    class Msg:
        data = b"x" * 10
        key = None

    out = dl.omitted_headers({"dlq.topic": b"t", "user": b"u"}, Msg(), {"user": b"u"},
                             ValueError("é" * dl.ERROR_MAX))
    note = out[dl.OMITTED]
    assert len(note) <= dl.ERROR_MAX and set(out) == {"dlq.topic", dl.OMITTED}
    assert note.decode("utf-8").startswith("value of 10 bytes")
