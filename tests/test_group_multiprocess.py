"""Consumer groups across processes, black-box against docs/design/group-consumer.md:
members of one group share the records (each processed by exactly one member), different
groups each get everything, nack delays and run()'s retry backoff are honoured across
processes, and the group's position survives every process exiting.

Children report through multiprocessing Pipes (tests/helpers/group_workers.py), never
through the topic under test; values are helpers.msgs frames carrying (producer, seq) and
a CRC.  PYQMEM_GROUP_SCALE scales the 100k-record test (default 1).
"""
from __future__ import annotations

import os
import time
from collections import Counter

import pytest

import pyqmem
import pyqmem.deadletter
from helpers import group_workers as gw
from helpers import msgs
from pyqmem.retry import RetryPolicy

if not gw.groups_implemented():
    pytest.skip("consumer groups not implemented (Topic.consumer(group=...) raises "
                "NotImplementedError)", allow_module_level=True)

SCALE = float(os.environ.get("PYQMEM_GROUP_SCALE", "1"))
N = max(2000, int(100_000 * SCALE))
EPS = 0.005          # clock epsilon for lower bounds on delays (both sides read CLOCK_MONOTONIC)


def _pipe(ctx, rep, label):
    r, w = ctx.Pipe(duplex=False)
    rep.add(r, label)
    return w


def _group_stats(t, group):
    st = t.stats()
    assert group in st["groups"], f"stats()['groups'] has no {group!r}: {sorted(st['groups'])}"
    return st["groups"][group], st["partitions"]


def _assert_all_committed(t, group):
    gs, parts = _group_stats(t, group)
    for p, ps in parts.items():
        g = gs[p]
        assert g["committed"] == ps["end_offset"], f"{group} p{p}: committed {g['committed']} of {ps['end_offset']}: {g}"
        assert g["lag"] == 0 and g["pending"] == 0, f"{group} p{p}: {g}"


# ----------------------------------------------------------------------------
# 4 members x 2 groups, N records
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60 + 120 * SCALE)
def test_four_members_process_every_record_exactly_once_and_each_group_gets_all(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    parts, n_prod = 4, 2
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, segment_bytes=4 * 2**20, create=True))
    budget = 50 + 100 * SCALE
    rep = gw.Reports()
    stop = ctx.Event()
    groups = {"A": False, "B": True}     # group -> use c.ack_many
    for g, use_many in groups.items():
        for i in range(4):
            who = f"{g}{i}"
            gw.start(reaper, ctx, gw.throughput_member,
                     (topic_dir, tname, g, who, {}, _pipe(ctx, rep, who), stop, budget, use_many))
    assert rep.pump(30, lambda: len(rep.ready) == 8), f"members did not start: {rep.errors[:2]}"
    per = N // n_prod
    for p in range(n_prod):
        gw.start(reaper, ctx, gw.bulk_producer,
                 (topic_dir, tname, p, per, 100 + p, _pipe(ctx, rep, f"p{p}"), budget))

    def processed(g):
        return sum(len(v) for who, v in rep.batches.items() if who.startswith(g))

    rep.pump(budget, lambda: rep.errors or all(processed(g) >= per * n_prod for g in groups))
    assert rep.errors == [], rep.errors[:3]
    rep.pump(0.5)                        # anything delivered twice would show up now
    stop.set()
    rep.pump(30, lambda: len(rep.done) == 8 + n_prod)
    assert rep.errors == [], rep.errors[:3]
    assert rep.torn == [], rep.torn[:5]
    assert len(rep.done) == 8 + n_prod, f"children still running: done={sorted(rep.done)}"
    assert len(rep.sent) == per * n_prod
    for g in groups:
        seen = Counter()
        by_member = Counter()
        for who, items in rep.batches.items():
            if not who.startswith(g):
                continue
            by_member[who] += len(items)
            for part, off, dc, prod, seq in items:
                seen[(prod, seq)] += 1
                assert rep.sent[(prod, seq)] == (part, off), (
                    f"group {g}: {who} got {(prod, seq)} at {part}@{off}, sent to {rep.sent[(prod, seq)]}")
                assert dc == 1, f"group {g}: {who} got {part}@{off} with delivery_count {dc}; no member died"
        missing = set(rep.sent) - set(seen)
        dups = [(k, c) for k, c in seen.items() if c > 1]
        assert not missing, f"group {g}: {len(missing)} records never processed, e.g. {sorted(missing)[:5]}"
        assert not dups, f"group {g}: {len(dups)} records processed more than once, e.g. {dups[:5]}"
        assert sum(rep.done[f"{g}{i}"] for i in range(4)) == len(rep.sent)
        _assert_all_committed(t, g)
        print(f"\ngroup {g}: {len(seen)} records, per member {dict(sorted(by_member.items()))}")


# ----------------------------------------------------------------------------
# nack delays and run()'s backoff, across processes
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_nacked_records_are_not_redelivered_to_another_member_before_their_delay(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=2, create=True, retention_bytes=None))
    t.send(msgs.encode(1, 0, 10), partition=0)
    t.send(msgs.encode(1, 1, 10), partition=1)
    c = tracked(t.consumer(group="g", visibility_timeout=30))
    held = [c.get(timeout=5), c.get(timeout=5)]
    assert sorted((m.partition, m.offset, m.delivery_count) for m in held) == [(0, 0, 1), (1, 0, 1)]
    rep = gw.Reports()
    # the other member blocks in get with a long timeout: it must wake when a delay ends
    gw.start(reaper, ctx, gw.member,
             (topic_dir, tname, "g", "B", {"visibility_timeout": 30}, _pipe(ctx, rep, "B"), None, 30),
             {"get_timeout": 10.0, "max_acks": 2})
    assert rep.pump(20, lambda: "B" in rep.ready), rep.errors
    time.sleep(0.3)                       # B is blocked in get by now (nothing deliverable)
    assert rep.deliveries == [], f"delivered while both leases were held: {rep.deliveries}"
    delays = {0: 0.2, 1: 0.45}
    nacked_at = {}
    for m in held:
        nacked_at[m.partition] = time.monotonic()
        m.nack(delay=delays[m.partition])
    del held, m
    assert rep.pump(15, lambda: len(rep.acks) == 2 or rep.errors), f"not redelivered: {rep.deliveries} {rep.errors}"
    assert rep.errors == []
    got = {d[3]: d for d in rep.deliveries}
    assert sorted(got) == [0, 1] and len(rep.deliveries) == 2, rep.deliveries
    for part, d in got.items():
        waited = d[8] - nacked_at[part]
        assert waited >= delays[part] - EPS, (
            f"p{part}: nack(delay={delays[part]}) redelivered after {waited:.3f} s")
        assert d[5] == 2, f"p{part}: redelivery has delivery_count {d[5]}"
    rep.pump(10, lambda: "B" in rep.done)
    _assert_all_committed(t, "g")


@pytest.mark.timeout(60)
def test_run_backs_off_per_retry_policy_then_dead_letters_with_the_last_error(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, create=True, retention_bytes=None))
    bad = msgs.encode(5, 0, 40)
    t.send(msgs.encode(1, 0, 10), partition=0)
    md_bad = t.send(bad, partition=0, key=b"bad-key", headers={"user": b"h1"})
    for seq in range(1, 4):
        t.send(msgs.encode(1, seq, 10), partition=0)
    max_deliveries = 4
    kw = {"visibility_timeout": 30, "max_deliveries": max_deliveries,
          "retry": {"initial": 0.05, "multiplier": 2.0, "maximum": 10.0, "jitter": 0.0}}
    rep = gw.Reports()
    stop = ctx.Event()
    gw.start(reaper, ctx, gw.run_member,
             (topic_dir, tname, "g", "R", kw, _pipe(ctx, rep, "R"), stop, 40), {"fail_producers": (5,)})
    dlq_name = tname + ".dlq"
    dl = []
    end = time.monotonic() + 20
    dlc = None
    while not dl and time.monotonic() < end and not rep.errors:
        rep.pump(0.05)
        if dlc is None and pyqmem.Topic.exists(dlq_name, dir=topic_dir):
            dlq = tracked(pyqmem.Topic(dlq_name, dir=topic_dir, create=False))
            dlc = tracked(dlq.consumer(start="earliest"))
        if dlc is not None:
            try:
                dl.append(dlc.get(timeout=0.05))
            except pyqmem.Empty:
                pass
    assert rep.errors == [], rep.errors
    assert dl, f"nothing reached {dlq_name!r}; deliveries: {[d[3:6] for d in rep.deliveries]}"
    rep.pump(1.0, lambda: len(rep.acks) >= 4)
    stop.set()
    rep.pump(10, lambda: "R" in rep.done)
    assert rep.errors == [], rep.errors

    tries = sorted((d for d in rep.deliveries if d[6] == 5), key=lambda d: d[8])
    assert [d[5] for d in tries] == list(range(1, max_deliveries + 1)), (
        f"the failing record's delivery counts: {[d[5] for d in tries]}")
    policy = RetryPolicy(initial=0.05, multiplier=2.0, maximum=10.0, jitter=0.0)
    gaps = [b[8] - a[8] for a, b in zip(tries, tries[1:])]
    for n, gap in enumerate(gaps, start=1):
        assert gap >= policy.delay(n) - EPS, f"retry {n} came {gap:.3f} s after the failure, policy says {policy.delay(n)}"
    print(f"\nbackoff gaps {[round(g, 3) for g in gaps]}")

    m = dl[0]
    info = pyqmem.deadletter.info(m.headers)
    assert info is not None, m.headers
    assert (info.topic, info.group, info.partition, info.offset) == (tname, "g", 0, md_bad.offset)
    assert info.delivery_count == max_deliveries
    assert info.error == f"RuntimeError: boom {max_deliveries}"
    assert bytes(m.data) == bad and m.key in (b"bad-key", "bad-key") and m.headers.get("user") == b"h1"
    with pytest.raises(pyqmem.Empty):
        dlc.get(timeout=0.3)
    good = sorted((a[5], a[6]) for a in rep.acks)
    assert good == [(1, s) for s in range(4)], good
    assert rep.done["R"] == 4, f"run() returned {rep.done['R']}, 4 records were handled successfully"
    gs, _ = _group_stats(t, "g")
    assert gs[0]["dead_lettered"] == 1 and gs[0]["lag"] == 0 and gs[0]["committed"] == 5, gs[0]


# ----------------------------------------------------------------------------
# durable position
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_group_resumes_at_committed_after_every_member_process_exited(topic_dir, tname, tracked, reaper):
    ctx = gw.group_ctx()
    parts, per = 2, 20
    t = pyqmem.Topic(tname, dir=topic_dir, partitions=parts, create=True, retention_bytes=None)
    for seq in range(parts * per):
        t.send(msgs.encode(1, seq, 20), partition=seq % parts)
    t.close()                            # the parent holds nothing of the topic from here on
    rep = gw.Reports()
    kw = {"visibility_timeout": 30}
    # A acks 10 records one by one and exits
    gw.start(reaper, ctx, gw.member, (topic_dir, tname, "g", "A", kw, _pipe(ctx, rep, "A"), None, 30),
             {"max_acks": 10, "get_timeout": 5.0})
    assert rep.pump(30, lambda: "A" in rep.done and "A" in rep.eof), rep.errors
    assert rep.errors == [] and rep.done["A"] == 10
    # H leases 3 more and closes without acking: they go back with their counts kept
    r, w = ctx.Pipe()
    rep.add(r, "H")
    gw.start(reaper, ctx, gw.holder, (topic_dir, tname, "g", "H", kw, w, 3, 30))
    w.close()
    assert rep.pump(30, lambda: any(o[0] == "holding" for o in rep.other)), rep.errors
    r.send("close")
    assert rep.pump(30, lambda: "H" in rep.eof), rep.errors
    assert os.path.isfile(os.path.join(topic_dir, tname, "groups", "g.grp"))
    first = {(d[3], d[4]) for d in rep.deliveries if d[1] == "A"}
    held = {(d[3], d[4]) for d in rep.deliveries if d[1] == "H"}
    assert len(first) == 10 and len(held) == 3 and not first & held, (first, held)

    # every process that used the group is gone; a new one resumes at the committed offsets
    left = parts * per - 10
    gw.start(reaper, ctx, gw.member, (topic_dir, tname, "g", "C", kw, _pipe(ctx, rep, "C"), None, 30),
             {"max_acks": left, "get_timeout": 5.0})
    assert rep.pump(30, lambda: "C" in rep.done), rep.errors
    assert rep.errors == []
    later = [(d[3], d[4], d[5]) for d in rep.deliveries if d[1] == "C"]
    assert len(later) == left and len({(p, o) for p, o, _ in later}) == left, later
    assert not {(p, o) for p, o, _ in later} & first, "records acked before the restart were delivered again"
    for p, o, dc in later:
        want = 2 if (p, o) in held else 1
        assert dc == want, f"{p}@{o}: delivery_count {dc}, want {want} ({'released at close' if want == 2 else 'new'})"
    t2 = tracked(pyqmem.Topic(tname, dir=topic_dir, create=False))
    _assert_all_committed(t2, "g")
    c = tracked(t2.consumer(group="g"))
    with pytest.raises(pyqmem.Empty):
        c.get(timeout=0.3)


@pytest.mark.timeout(60)
def test_new_group_at_latest_skips_old_records_and_an_existing_group_ignores_start(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=3, create=True, retention_bytes=None))
    for seq in range(30):
        t.send(msgs.encode(1, seq, 20))
    late = tracked(t.consumer(group="late", start="latest"))
    with pytest.raises(pyqmem.Empty):
        m = late.get(timeout=0.3)
        pytest.fail(f"a new group at 'latest' got an old record {m.partition}@{m.offset}")
    assert sum(late.lag().values()) == 0, late.lag()
    news = [t.send(msgs.encode(2, seq, 20)) for seq in range(3)]
    rep = gw.Reports()
    # another process opens the existing group asking for "earliest": it resumes instead
    gw.start(reaper, ctx, gw.member,
             (topic_dir, tname, "late", "X", {"start": "earliest"}, _pipe(ctx, rep, "X"), None, 30),
             {"max_acks": 3, "get_timeout": 5.0})
    assert rep.pump(30, lambda: "X" in rep.done), rep.errors
    assert rep.errors == []
    got = sorted((d[3], d[4]) for d in rep.deliveries)
    assert got == sorted((md.partition, md.offset) for md in news), got
    with pytest.raises(pyqmem.Empty):
        late.get(timeout=0.3)
    # a brand-new group at "earliest" sees all 33
    early = tracked(t.consumer(group="early", start="earliest"))
    seen = set()
    end = time.monotonic() + 10
    while len(seen) < 33 and time.monotonic() < end:
        try:
            for m in early.get_many(64, timeout=0.5):
                seen.add((m.partition, m.offset))
                m.ack()
        except pyqmem.Empty:
            pass
    assert len(seen) == 33
    _assert_all_committed(t, "late")
    _assert_all_committed(t, "early")
