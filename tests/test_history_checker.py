"""Unit tests for tests/helpers/history.py: it must catch each kind of error."""
import pytest

from helpers import msgs
from helpers.history import History


def _clean_history():
    h = History()
    for p in ("p1", "p2"):
        h.ack_many(p, range(10))
    # two consumers interleave the two producers, each in per-producer order
    h.deliver_many("c1", [("p1", 0), ("p2", 0), ("p1", 2), ("p2", 1), ("p1", 5)])
    h.deliver_many("c2", [("p1", 1), ("p1", 3), ("p1", 4), ("p2", 2), ("p2", 3)])
    h.deliver_many("c1", [("p1", s) for s in range(6, 10)] + [("p2", s) for s in range(4, 10)])
    return h


def test_clean_history_reports_no_errors():
    r = _clean_history().check()
    assert r.ok(), r.summary()
    assert r.counts == {"acked": 20, "delivered": 20, "lost": 0, "duplicated": 0,
                        "unexpected": 0, "recovered": 0, "reordered": 0}


def test_acked_but_never_delivered_is_lost():
    h = _clean_history()
    h.ack("p1", 10)
    r = h.check()
    assert r.lost == [("p1", 10)]
    assert not r.ok()
    assert r.ok(max_lost=1)


def test_message_delivered_twice_to_different_consumers_is_duplicated():
    h = _clean_history()
    h.deliver("c3", "p2", 7)
    r = h.check()
    assert r.duplicated == [("p2", 7, 2)]
    assert not r.ok(max_lost=100)


def test_message_delivered_twice_to_same_consumer_is_duplicated_not_reordered():
    h = History()
    h.ack_many("p", range(3))
    h.deliver_many("c", [("p", 0), ("p", 1), ("p", 1), ("p", 2)])
    r = h.check()
    assert r.duplicated == [("p", 1, 2)]
    assert r.reordered == []


def test_delivery_of_never_acked_message_is_unexpected():
    h = _clean_history()
    h.deliver("c2", "p1", 42)
    h.deliver("c2", "ghost", 0)
    r = h.check()
    assert sorted(r.unexpected, key=str) == sorted([("p1", 42), ("ghost", 0)], key=str)
    assert not r.ok()


def test_in_flight_message_of_dead_producer_is_recovered_if_delivered_and_not_lost_if_not():
    h = _clean_history()
    h.maybe("p1", 10)          # delivered: recovered, fine
    h.deliver("c1", "p1", 10)
    h.maybe("p2", 10)          # never delivered: fine too
    r = h.check()
    assert r.recovered == [("p1", 10)]
    assert r.unexpected == [] and r.lost == []
    assert r.ok()


def test_lower_sequence_after_higher_from_same_producer_at_one_consumer_is_reordered():
    h = History()
    h.ack_many("p", range(5))
    h.deliver_many("c", [("p", 0), ("p", 2), ("p", 1), ("p", 3), ("p", 4)])
    r = h.check()
    assert r.reordered == [("c", "p", 2, 1)]
    assert r.lost == [] and r.duplicated == []
    assert not r.ok()


def test_interleaving_across_consumers_is_not_a_reorder():
    h = History()
    h.ack_many("p", range(4))
    h.deliver_many("a", [("p", 1), ("p", 3)])
    h.deliver_many("b", [("p", 0), ("p", 2)])
    assert h.check().ok()


def test_each_error_kind_is_counted_independently():
    h = History()
    h.ack_many("p", range(6))
    h.maybe("p", 6)
    h.deliver_many("c", [("p", 0), ("p", 2), ("p", 1), ("p", 2), ("p", 9), ("p", 6)])
    r = h.check()
    c = r.counts
    assert (c["lost"], c["duplicated"], c["unexpected"], c["recovered"], c["reordered"]) == (3, 1, 1, 1, 2)
    assert r.lost == [("p", 3), ("p", 4), ("p", 5)]
    assert "lost=3" in r.summary()


def test_max_acked_and_undelivered_queries():
    h = History()
    assert h.max_acked("p") == -1
    h.ack_many("p", [3, 1, 2])
    h.deliver("c", "p", 1)
    assert h.max_acked("p") == 3
    assert h.undelivered_acked() == 2
    assert h.is_delivered("p", 1) and not h.is_delivered("p", 2)


def test_self_checking_message_round_trips_and_detects_any_corruption():
    m = msgs.encode(5, 99, 3000, 12.5)
    assert msgs.decode(m) == (5, 99, 12.5, 3000)
    assert msgs.decode(msgs.encode(1, 0, 0)) == (1, 0, 0.0, 0)
    for pos in (0, 5, 12, 27, len(m) // 2, len(m) - 1):
        bad = bytearray(m)
        bad[pos] ^= 0x10
        with pytest.raises(msgs.TornMessage):
            msgs.decode(bad)
    with pytest.raises(msgs.TornMessage):
        msgs.decode(m[:-1])
    with pytest.raises(msgs.TornMessage):
        msgs.decode(m[:10])
    # a well-formed message of another (producer, seq) spliced into this header is caught
    other = msgs.encode(5, 100, 3000)
    spliced = m[:msgs.HDR.size] + other[msgs.HDR.size:]
    with pytest.raises(msgs.TornMessage):
        msgs.decode(spliced)
