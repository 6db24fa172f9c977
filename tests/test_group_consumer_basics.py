"""The group consumer's own mechanics, in one process (docs/design/group-consumer.md):
claim/ack/nack/extend, StaleAck, double acks, at-most-once, dead-letter content, ordered
one-in-flight, lag, stats, seek and argument validation.  The multi-process and crash
behaviour is in tests/test_group_multiprocess.py and tests/test_group_crash.py.

No timing assertions: delays are either 0 or far longer than any wait here, and every
loop is bounded by count and time.
"""
from __future__ import annotations

import os
import threading
import time

import pytest

import pyqmem
from helpers.backends import topic_kwargs
from pyqmem import deadletter
from pyqmem.retry import RetryPolicy

# every behaviour here is the group contract, not the shared-memory backend's own:
# each test runs on every backend (docs/design/backends.md)
pytestmark = pytest.mark.any_backend

FAST = RetryPolicy(initial=0.0, maximum=0.0, jitter=0)   # nack() without delay: at once
LONG = 3600.0


@pytest.fixture
def topic(topic_dir, tname, tracked, topic_backend):
    def make(partitions=1, **kw):
        kw = topic_kwargs(topic_backend, dict(dir=topic_dir, partitions=partitions, **kw))
        return tracked(pyqmem.Topic(tname, **kw))
    return make


@pytest.fixture
def group(tracked):
    def make(t, name="g", **kw):
        return tracked(t.consumer(group=name, **kw))
    return make


def get_until(c, pred, tries=100, per=0.2):
    """The first message from c for which pred(msg) holds (others are nacked at once)."""
    deadline = time.monotonic() + 20
    for _ in range(tries):
        if time.monotonic() > deadline:
            break
        try:
            m = c.get(timeout=per)
        except pyqmem.Empty:
            continue
        if pred(m):
            return m
        m.nack(delay=0)
    pytest.fail("no matching message came")


def committed(t, name="g"):
    return {k: v["committed"] for k, v in t.stats()["groups"][name].items()}


# ----------------------------------------------------------------------------
# delivering and completing
# ----------------------------------------------------------------------------
def test_get_delivers_each_record_once_with_count_1_and_ack_commits(topic, group):
    t = topic(partitions=2)
    for i in range(6):
        t.send(b"v%d" % i, partition=i % 2, key=b"k", headers={"h": b"%d" % i}, correlation_id=f"c{i}")
    c = group(t)
    got = c.get_many(100, timeout=5)
    while len(got) < 6:
        got += c.get_many(100, timeout=5)
    assert sorted((m.partition, m.offset) for m in got) == [(p, o) for p in (0, 1) for o in range(3)]
    assert all(m.delivery_count == 1 for m in got)
    m = got[0]
    assert m.key == b"k" and m.correlation_id.startswith("c") and set(m.headers) == {"h"}
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.05)   # everything is leased to us
    assert t.stats()["groups"]["g"][0]["pending"] == 3
    for m in got:
        m.ack()
    assert committed(t) == {0: 3, 1: 3}
    assert c.lag() == {0: 0, 1: 0}
    assert all(v["pending"] == 0 for v in t.stats()["groups"]["g"].values())


def test_second_ack_is_a_noop_and_ack_after_nack_is_stale(topic, group):
    t = topic()
    t.send_many([b"a", b"b"])
    c = group(t, retry=FAST)
    a, b = c.get_many(2, timeout=5)
    a.ack()
    a.ack()                      # no-op
    with pytest.raises(pyqmem.StaleAck):
        a.nack()                 # the lease is done
    with pytest.raises(pyqmem.StaleAck):
        a.extend(10)
    b.nack(delay=0)
    with pytest.raises(pyqmem.StaleAck):
        b.ack()
    with pytest.raises(pyqmem.StaleAck):
        b.nack(delay=0)
    again = c.get(timeout=5)
    assert (again.offset, again.delivery_count) == (1, 2)
    again.ack()
    assert committed(t) == {0: 2}


def test_nack_delay_holds_the_record_back_and_default_delay_uses_the_retry_policy(topic, group):
    t = topic()
    t.send_many([b"a", b"b"])
    c = group(t, retry=RetryPolicy(initial=LONG, maximum=LONG, jitter=0))
    a, b = c.get_many(2, timeout=5)
    a.nack(delay=LONG)
    b.nack()                     # RetryPolicy: LONG as well
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.2)
    st = t.stats()["groups"]["g"][0]
    assert st["pending"] == 2 and st["committed"] == 0
    c2 = group(t, retry=FAST)
    with pytest.raises(pyqmem.Empty):   # the delay is the group's, not this member's
        c2.get(timeout=0.1)


def test_nack_with_zero_delay_redelivers_with_a_growing_count(topic, group):
    t = topic()
    t.send(b"x")
    c = group(t, max_deliveries=None, retry=FAST)
    counts = []
    for _ in range(4):
        m = c.get(timeout=5)
        counts.append(m.delivery_count)
        m.nack()
    assert counts == [1, 2, 3, 4]
    assert t.stats()["groups"]["g"][0]["redelivered"] == 3


def test_an_expired_lease_is_redelivered_and_the_old_ack_extend_nack_are_stale(topic, group):
    t = topic()
    t.send(b"x")
    c = group(t, visibility_timeout=0.05)
    first = c.get(timeout=5)
    second = get_until(c, lambda m: m.delivery_count == 2)
    assert second.offset == first.offset
    for op in (first.ack, lambda: first.extend(5), lambda: first.nack(delay=0)):
        with pytest.raises(pyqmem.StaleAck):
            op()
    second.ack()
    assert committed(t) == {0: 1}


def test_extend_keeps_the_lease(topic, group):
    t = topic()
    t.send(b"x")
    c = group(t, visibility_timeout=1.0)
    m = c.get(timeout=5)
    m.extend(LONG)
    time.sleep(1.3)              # past the original lease
    other = group(t)
    with pytest.raises(pyqmem.Empty):
        other.get(timeout=0.2)
    m.ack()                      # still ours
    assert committed(t) == {0: 1}


def test_ack_many_acks_a_batch_and_counts_the_stale_ones(topic, group):
    t = topic()
    t.send_many([b"%d" % i for i in range(10)])
    c = group(t, retry=FAST)
    ms = c.get_many(10, timeout=5)
    assert len(ms) == 10
    ms[3].nack(delay=LONG)
    ms[0].ack()
    assert c.ack_many(ms) == 1   # ms[3]; ms[0] was already acked
    assert c.ack_many(ms[:5]) == 1   # acked ones are skipped, the nacked one stays stale
    st = t.stats()["groups"]["g"][0]
    assert st["committed"] == 3 and st["pending"] == 1


def test_ack_many_rejects_a_foreign_message_before_acking_anything(topic, group):
    t = topic()
    t.send_many([b"a", b"b"])
    c1, c2 = group(t), group(t, name="other")
    m1 = c1.get(timeout=5)
    m2 = c2.get(timeout=5)
    with pytest.raises(ValueError):
        c1.ack_many([m1, m2])
    with pytest.raises(TypeError):
        c1.ack_many([m1, "not a message"])
    assert committed(t) == {0: 0}
    m1.ack()


def test_close_gives_leases_back_with_their_counts_and_later_acks_are_stale(topic, group):
    t = topic()
    t.send(b"x")
    c = group(t)
    m = c.get(timeout=5)
    c.close()
    with pytest.raises(pyqmem.StaleAck):
        m.ack()
    assert c.ack_many([m]) == 1
    c2 = group(t)
    m2 = c2.get(timeout=5)
    assert (m2.offset, m2.delivery_count) == (0, 2)
    m2.ack()


def test_a_new_member_resumes_at_the_committed_offset(topic, group):
    t = topic()
    t.send_many([b"%d" % i for i in range(5)])
    c = group(t)
    for m in c.get_many(3, timeout=5):
        m.ack()
    c.close()
    c2 = group(t, start="latest")   # ignored: the group exists
    assert [m.offset for m in c2.get_many(10, timeout=5)] == [3, 4]


def test_start_latest_and_start_offset_apply_when_the_group_is_created(topic, group):
    t = topic(partitions=2)
    for i in range(4):
        t.send(b"x", partition=0)
        t.send(b"y", partition=1)
    late = group(t, name="late", start="latest")
    with pytest.raises(pyqmem.Empty):
        late.get(timeout=0.05)
    t.send(b"new", partition=1)
    assert late.get(timeout=5).value == b"new"
    mid = group(t, name="mid", start={0: 3})
    got = sorted((m.partition, m.offset) for m in mid.get_many(20, timeout=5))
    while len(got) < 6:
        got += sorted((m.partition, m.offset) for m in mid.get_many(20, timeout=5))
    assert sorted(got) == [(0, 3)] + [(1, o) for o in range(5)]


# ----------------------------------------------------------------------------
# at-most-once
# ----------------------------------------------------------------------------
def test_at_most_once_completes_on_delivery_and_never_redelivers(topic, group):
    t = topic()
    t.send_many([b"a", b"b"])
    c = group(t, mode="at_most_once", visibility_timeout=0.01)
    a = c.get(timeout=5)
    assert a.delivery_count == 1
    assert committed(t) == {0: 1}
    a.nack(delay=0)              # no-op
    a.ack()                      # no-op
    a.extend(1)                  # no-op
    b = c.get(timeout=5)
    assert b.offset == 1
    c.close()
    c2 = group(t, mode="at_most_once")
    with pytest.raises(pyqmem.Empty):
        c2.get(timeout=0.2)
    assert committed(t) == {0: 2}


# ----------------------------------------------------------------------------
# dead letters
# ----------------------------------------------------------------------------
def _nack_until_dead(c, n):
    for i in range(n):
        m = c.get(timeout=5)
        assert m.delivery_count == i + 1
        m.nack(delay=0, error=RuntimeError(f"attempt {i + 1}"))


def test_a_record_past_max_deliveries_goes_to_the_dlq_with_its_content(topic, group, topic_dir, tname,
                                                                      tracked):
    t = topic(partitions=3)
    md = t.send(b"payload", key=b"key-1", headers={"trace": b"abc"}, correlation_id="corr",
                partition=2)
    c = group(t, max_deliveries=2, retry=FAST)
    _nack_until_dead(c, 2)
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.2)       # the third claim dead-letters it instead
    st = t.stats()["groups"]["g"][2]
    assert st["dead_lettered"] == 1 and st["committed"] == 1 and st["pending"] == 0
    dlq = tracked(pyqmem.Topic(f"{tname}.dlq", backend=t.backend, create=False))
    assert dlq.partitions == 3
    d = tracked(dlq.consumer()).get(timeout=5)
    assert (d.partition, d.key, d.value, d.correlation_id) == (2, b"key-1", b"payload", "corr")
    assert d.headers["trace"] == b"abc"
    info = deadletter.info(d.headers)
    assert info.topic == tname and info.group == "g"
    assert (info.partition, info.offset, info.delivery_count) == (2, md.offset, 2)
    assert info.error == "RuntimeError: attempt 2"


def test_dead_letter_to_a_named_topic_or_dropped(topic, group, topic_dir, tname, tracked):
    t = topic()
    t.send_many([b"a", b"b"])
    c = group(t, max_deliveries=1, dead_letter="graveyard", retry=FAST)
    c.get(timeout=5).nack(delay=0)
    c2 = group(t, name="g2", max_deliveries=1, dead_letter=False, retry=FAST)
    c2.get(timeout=5).nack(delay=0)
    assert c.get(timeout=5).offset == 1      # offset 0 went to the graveyard on the way
    assert c2.get(timeout=5).offset == 1     # and was dropped for g2
    g = tracked(pyqmem.Topic("graveyard", backend=t.backend, create=False))
    assert tracked(g.consumer()).get(timeout=5).value == b"a"
    assert not pyqmem.Topic.exists(f"{tname}.dlq", backend=t.backend)
    groups = t.stats()["groups"]
    assert groups["g"][0]["dead_lettered"] == 1 and groups["g2"][0]["dead_lettered"] == 1


def test_max_deliveries_none_never_dead_letters(topic, group):
    t = topic()
    t.send(b"x")
    c = group(t, max_deliveries=None, retry=FAST)
    for _ in range(8):
        c.get(timeout=5).nack(delay=0)
    assert c.get(timeout=5).delivery_count == 9


def test_run_acks_on_return_nacks_on_exception_and_records_the_error(topic, group, topic_dir,
                                                                   tname, tracked):
    t = topic()
    t.send_many([b"ok", b"bad", b"ok2"])
    c = group(t, max_deliveries=2, retry=FAST)
    stop = threading.Event()
    seen = []

    def handler(m):
        seen.append((m.value, m.delivery_count))
        if m.value == b"bad":
            raise KeyError("nope")
        if len([v for v, _ in seen if v != b"bad"]) == 2 and sum(v == b"bad" for v, _ in seen) == 2:
            stop.set()

    result = []
    th = threading.Thread(target=lambda: result.append(c.run(handler, stop=stop)))
    th.start()
    th.join(30)
    stop.set()
    th.join(5)
    assert not th.is_alive()
    assert result == [2]
    # the bad record: delivered twice, then dead-lettered by the claim after
    deadline = time.monotonic() + 10
    while t.stats()["groups"]["g"][0]["dead_lettered"] == 0 and time.monotonic() < deadline:
        try:
            c.get(timeout=0.1)
        except pyqmem.Empty:
            pass
    assert committed(t) == {0: 3}
    d = tracked(tracked(pyqmem.Topic(f"{tname}.dlq", backend=t.backend, create=False)).consumer())
    assert deadletter.info(d.get(timeout=5).headers).error == "KeyError: 'nope'"


def test_run_returns_when_the_consumer_is_closed(topic, group):
    t = topic()
    c = group(t)
    th = threading.Thread(target=c.run, args=(lambda m: None,))
    th.start()
    time.sleep(0.1)
    c.close()
    th.join(10)
    assert not th.is_alive()


# ----------------------------------------------------------------------------
# ordered
# ----------------------------------------------------------------------------
def test_ordered_delivers_one_record_at_a_time_per_partition(topic, group):
    t = topic()
    t.send_many([b"0", b"1", b"2"])
    c = group(t, ordered=True, retry=FAST)
    a = c.get(timeout=5)
    assert a.offset == 0
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.1)       # the next waits for the ack
    a.nack(delay=0)
    again = c.get(timeout=5)
    assert (again.offset, again.delivery_count) == (0, 2)
    again.ack()
    assert c.get(timeout=5).offset == 1


def test_ordered_partition_has_one_owner_until_it_closes(topic, group):
    t = topic()
    t.send_many([b"0", b"1"])
    owner = group(t, ordered=True)
    m = owner.get(timeout=5)
    m.ack()
    other = group(t, ordered=True)
    with pytest.raises(pyqmem.Empty):
        other.get(timeout=0.3)   # the owner is alive, even with nothing in flight
    owner.close()
    assert other.get(timeout=5).offset == 1


def test_ordered_is_fixed_when_the_group_is_created(topic, group):
    t = topic()
    group(t, ordered=True)
    with pytest.raises(ValueError, match="ordered=True"):
        t.consumer(group="g", ordered=False)


# ----------------------------------------------------------------------------
# partitions, lag, stats, seek
# ----------------------------------------------------------------------------
def test_a_member_claims_only_its_partitions(topic, group):
    t = topic(partitions=3)
    for p in range(3):
        t.send(b"x", partition=p)
    c = group(t, partitions=[2])
    assert [m.partition for m in c.get_many(10, timeout=5)] == [2]
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.05)
    assert c.partitions == [2] and set(c.lag()) == {2}


def test_lag_and_stats_follow_acks_and_match_topic_stats(topic, group):
    t = topic(partitions=2)
    t.send_many([b"x"] * 4)      # round-robin: 2 per partition
    t.send(b"y", partition=0)
    c = group(t)
    assert sum(c.lag().values()) == 5
    ms = c.get_many(10, timeout=5)
    for m in ms:
        if m.partition == 0:
            m.ack()
    lag = c.lag()
    assert lag[0] == 0 and lag[1] == 2
    st = c.stats()
    assert st == t.stats()["groups"]["g"]
    assert set(st[0]) == {"committed", "pending", "lag", "redelivered", "dead_lettered", "skipped"}
    assert st[1]["pending"] == 2 and st[1]["lag"] == 2 and st[0]["lag"] == 0


def test_stats_list_every_group_of_the_topic(topic, group):
    t = topic()
    assert t.stats()["groups"] == {}
    group(t, name="a")
    group(t, name="b")
    assert sorted(t.stats()["groups"]) == ["a", "b"]


def test_seek_replays_for_the_group_and_older_leases_become_stale(topic, group):
    t = topic()
    t.send_many([b"%d" % i for i in range(4)])
    c = group(t)
    for m in c.get_many(4, timeout=5):
        m.ack()
    assert committed(t) == {0: 4}
    c.seek(0, 1)
    assert committed(t) == {0: 1}
    m = c.get(timeout=5)
    assert m.offset == 1
    c.seek(0, 3)
    with pytest.raises(pyqmem.StaleAck):
        m.ack()
    assert c.get(timeout=5).offset == 3


def test_seek_clamps_to_the_log_and_validates(topic, group):
    t = topic()
    t.send_many([b"a", b"b"])
    c = group(t)
    c.seek(0, 10**6)
    assert committed(t) == {0: 2}
    for bad, exc in (((1, 0), ValueError), ((-1, 0), ValueError), ((0, -1), ValueError),
                     (("0", 0), TypeError), ((0, 1.5), TypeError)):
        with pytest.raises(exc):
            c.seek(*bad)
    assert committed(t) == {0: 2}


def test_a_gap_left_by_a_dead_writer_is_completed_silently(topic, group, topic_dir, tname):
    # a writer that dies mid-record leaves an abandoned offset; recovery on the
    # next lone open abandons it.  Simulated here with a child killed while its
    # record is WRITING is heavy; instead check the retention path: records
    # removed before the group read them are skipped, not delivered.
    t = topic(segment_bytes=64 * 1024, retention_bytes=1)
    c = group(t)
    big = b"z" * 20000
    for _ in range(12):
        t.send(big)
    t.retain()
    start = t.stats()["partitions"][0]["start_offset"]
    assert start > 0
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            ms = c.get_many(100, timeout=0.2)
        except pyqmem.Empty:
            if got:
                break
            continue
        got += ms
        c.ack_many(ms)
    assert [m.offset for m in got] == list(range(start, 12))
    st = t.stats()["groups"]["g"][0]
    assert st["skipped"] == start and st["committed"] == 12


# ----------------------------------------------------------------------------
# blocking and closing
# ----------------------------------------------------------------------------
def test_a_blocked_get_wakes_for_a_new_record(topic, group):
    t = topic()
    c = group(t)
    out = []
    th = threading.Thread(target=lambda: out.append(c.get(timeout=20)))
    th.start()
    time.sleep(0.2)
    t.send(b"late")
    th.join(20)
    assert [m.value for m in out] == [b"late"]


def test_close_from_another_thread_ends_a_blocked_get_and_iteration(topic, group):
    t = topic()
    c = group(t)
    errors = []

    def it():
        try:
            for _ in c:
                pass
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)
    th = threading.Thread(target=it)
    th.start()
    time.sleep(0.2)
    c.close()
    th.join(10)
    assert not th.is_alive() and errors == []
    with pytest.raises(pyqmem.Closed):
        c.get(timeout=0)


# ----------------------------------------------------------------------------
# validation: typed errors, nothing created
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("kw, exc", [
    ({"visibility_timeout": 0}, ValueError),
    ({"visibility_timeout": "1"}, TypeError),
    ({"max_deliveries": 0}, ValueError),
    ({"max_deliveries": 1.5}, TypeError),
    ({"dead_letter": "bad name!"}, ValueError),
    ({"dead_letter": 1}, TypeError),
    ({"retry": 0.5}, TypeError),
    ({"mode": "exactly_once"}, ValueError),
    ({"ordered": 1}, TypeError),
    ({"partitions": [5]}, ValueError),
    ({"start": "middle"}, ValueError),
    ({"check_crcs": "no"}, TypeError),
])
def test_bad_arguments_raise_before_anything_is_created(topic, kw, exc):
    t = topic()
    with pytest.raises(exc):
        t.consumer(group="g", **kw)
    assert not os.path.exists(os.path.join(t.path, "groups", "g.grp"))
    assert t.stats()["groups"] == {}


def test_bad_group_names_and_call_arguments(topic, group):
    t = topic()
    with pytest.raises(ValueError):
        t.consumer(group="../x")
    with pytest.raises(TypeError):
        t.consumer(group=5)
    t.send(b"x")
    c = group(t)
    with pytest.raises(ValueError):
        c.get_many(0)
    with pytest.raises(TypeError):
        c.run("not callable")
    m = c.get(timeout=5)
    for bad, exc in ((-1, ValueError), ("1", TypeError)):
        with pytest.raises(exc):
            m.nack(delay=bad)
    for bad, exc in ((0, ValueError), (None, TypeError)):
        with pytest.raises(exc):
            m.extend(bad)
    m.ack()                      # nothing above changed the lease


def test_independent_subscriber_messages_keep_noop_ack_nack_extend(topic):
    t = topic()
    t.send(b"x")
    c = t.consumer()
    m = c.get(timeout=5)
    assert m.delivery_count == 1
    m.ack()
    m.ack()
    m.nack(delay=0)
    m.extend(1)
    c.close()
