"""Consumer groups under SIGKILL and SIGSTOP, black-box against
docs/design/group-consumer.md: a dead member's leases come back within a second (also
while a child it forked lives on), a frozen one loses its lease at the visibility timeout
and its late ack is stale, a record whose handler always dies is dead-lettered after
exactly max_deliveries deliveries, a record a frozen writer is still writing is not
counted as delivered, at-most-once never redelivers, ordered partitions keep their order
and a single live owner across kills, a group whose creator was killed opens, the
stats()["groups"] counters, and a randomised history check over many small trials
(producers and members SIGKILLed during at-least-once consumption) that finds nothing
lost or unexpected and duplicates only of records a killed member had leased.

Members report every delivery (right after get returned, before processing) and every
ack (after it returned) over a Pipe, one atomic write each (tests/helpers/group_workers.py).
PYQMEM_GROUP_TRIALS (default 200) sets the randomised trials; PYQMEM_GROUP_SEED fixes
their randomness.
"""
from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict

import pytest

import pyqmem
import pyqmem.deadletter
from helpers import group_workers as gw
from helpers import msgs

if not gw.groups_implemented():
    pytest.skip("consumer groups not implemented (Topic.consumer(group=...) raises "
                "NotImplementedError)", allow_module_level=True)

TRIALS = int(os.environ.get("PYQMEM_GROUP_TRIALS", "200"))
SEED = int(os.environ.get("PYQMEM_GROUP_SEED", str(time.time_ns() % 2**31)))
EPS = 0.005


def _pipe(ctx, rep, label):
    r, w = ctx.Pipe(duplex=False)
    rep.add(r, label)
    return w


def _duplex(ctx, rep, label):
    r, w = ctx.Pipe()
    rep.add(r, label)
    return r, w


def _kill(p, sig=signal.SIGKILL):
    t = time.monotonic()
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:   # it had exited (and was reaped by the forkserver)
        pass
    return t


def _group_stats(t, group):
    st = t.stats()
    assert group in st["groups"], f"stats()['groups'] has no {group!r}: {sorted(st['groups'])}"
    return st["groups"][group], st["partitions"]


def _assert_all_committed(t, group, where=""):
    gs, parts = _group_stats(t, group)
    for p, ps in parts.items():
        g = gs[p]
        assert g["committed"] == ps["end_offset"] and g["lag"] == 0 and g["pending"] == 0, (
            f"{where} {group} p{p}: end_offset {ps['end_offset']}, group {g}")


def _read_dlq(topic_dir, name, want, timeout):
    """The first `want` records of the dead-letter topic `name` (fewer if they do not come)."""
    out = []
    end = time.monotonic() + timeout
    t = c = None
    try:
        while len(out) < want and time.monotonic() < end:
            if c is None:
                if not pyqmem.Topic.exists(name, dir=topic_dir):
                    time.sleep(0.02)
                    continue
                t = pyqmem.Topic(name, dir=topic_dir, create=False)
                c = t.consumer(start="earliest")
            try:
                m = c.get(timeout=0.05)
            except pyqmem.Empty:
                continue
            out.append((m.partition, m.offset, bytes(m.data), m.key, dict(m.headers or {})))
            del m
    finally:
        if c is not None:
            c.close()
        if t is not None:
            t.close()
    return out


# ----------------------------------------------------------------------------
# a SIGKILLed member's leases
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_leases_of_a_sigkilled_member_are_redelivered_to_another_member_within_1s(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    parts, per, held_n = 2, 10, 4
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, create=True, retention_bytes=None))
    for seq in range(parts * per):
        t.send(msgs.encode(1, seq, 30), partition=seq % parts)
    kw = {"visibility_timeout": 30.0}
    rep = gw.Reports()
    r, w = _duplex(ctx, rep, "A")
    a = gw.start(reaper, ctx, gw.holder, (topic_dir, tname, "g", "A", kw, w, held_n, 30))
    w.close()
    assert rep.pump(20, lambda: any(o[0] == "holding" for o in rep.other) or rep.errors), rep.errors
    held = {(d[3], d[4]) for d in rep.deliveries if d[1] == "A"}
    assert len(held) == held_n
    # B blocks in get(timeout=10): its get must wake by itself to notice the death
    gw.start(reaper, ctx, gw.member, (topic_dir, tname, "g", "B", kw, _pipe(ctx, rep, "B"), None, 40),
             {"get_timeout": 10.0, "max_acks": parts * per})
    rest = parts * per - held_n
    assert rep.pump(20, lambda: len(rep.acks) >= rest or rep.errors), (rep.errors, len(rep.acks))
    rep.pump(0.4)                        # B is blocked now; A is alive, its 30 s leases hold
    early = [(d[3], d[4]) for d in rep.deliveries if d[1] == "B" and (d[3], d[4]) in held]
    assert early == [], f"leases of a live member were delivered to another: {early}"
    t_kill = _kill(a)
    a.join(10)
    assert rep.pump(10, lambda: "B" in rep.done or rep.errors), f"B: {len(rep.acks)} acks {rep.errors}"
    assert rep.errors == []
    again = {(d[3], d[4]): d for d in rep.deliveries if d[1] == "B" and (d[3], d[4]) in held}
    assert set(again) == held, f"redelivered {sorted(again)} of the held {sorted(held)}"
    late = {k: round(d[8] - t_kill, 3) for k, d in again.items()}
    assert all(v < 1.0 for v in late.values()), f"redelivered only after (s from the kill): {late}"
    assert {k: d[5] for k, d in again.items()} == {k: 2 for k in held}, "delivery_count of a redelivery must be 2"
    b_got = [(d[3], d[4]) for d in rep.deliveries if d[1] == "B"]
    assert len(b_got) == len(set(b_got)) == parts * per, f"B got {len(b_got)} deliveries, {len(set(b_got))} distinct"
    print(f"\nredelivered after the kill (s): {sorted(late.values())}")
    gs, _ = _group_stats(t, "g")
    assert sum(gs[p]["redelivered"] for p in gs) == held_n, gs
    _assert_all_committed(t, "g")


@pytest.mark.timeout(60)
def test_leases_of_a_sigkilled_member_come_back_within_1s_even_while_a_child_it_forked_lives(
    topic_dir, tname, tracked, reaper
):
    # A worker that fork()ed a helper process (multiprocessing "fork", os.fork) and then
    # died is dead: the helper never joined the group and must not keep its leases.
    ctx = gw.group_ctx()
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, create=True, retention_bytes=None))
    for seq in range(3):
        t.send(msgs.encode(1, seq, 30), partition=0)
    kw = {"visibility_timeout": 30.0}
    rep = gw.Reports()
    r, w = _duplex(ctx, rep, "A")
    a = gw.start(reaper, ctx, gw.holder, (topic_dir, tname, "g", "A", kw, w, 2, 30), {"fork_helper": True})
    w.close()
    helper = None
    try:
        assert rep.pump(20, lambda: any(o[0] == "holding" for o in rep.other) or rep.errors), rep.errors
        helper = next(o[2] for o in rep.other if o[0] == "helper")
        held = {(d[3], d[4]) for d in rep.deliveries if d[1] == "A"}
        gw.start(reaper, ctx, gw.member, (topic_dir, tname, "g", "B", kw, _pipe(ctx, rep, "B"), None, 30),
                 {"get_timeout": 10.0, "max_acks": 3})
        assert rep.pump(10, lambda: len(rep.acks) >= 1 or rep.errors), rep.errors
        rep.pump(0.3)
        t_kill = _kill(a)
        a.join(10)
        rep.pump(3, lambda: "B" in rep.done or rep.errors)
        assert rep.errors == [], rep.errors
        again = {(d[3], d[4]): round(d[8] - t_kill, 3) for d in rep.deliveries if d[1] == "B" and (d[3], d[4]) in held}
        assert set(again) == held and all(v < 1.0 for v in again.values()), (
            f"leases of the dead member {sorted(held)} redelivered (s after the kill): {again} "
            f"while its forked helper {helper} is alive")
    finally:
        if helper is not None:
            try:
                os.kill(helper, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ----------------------------------------------------------------------------
# a SIGSTOPped member past its visibility timeout
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_sigstopped_member_loses_its_lease_at_the_visibility_timeout_and_its_late_ack_is_stale(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    vt = 0.5
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, create=True, retention_bytes=None))
    for seq in range(3):
        t.send(msgs.encode(1, seq, 30), partition=0)
    kw = {"visibility_timeout": vt}
    rep = gw.Reports()
    r, w = _duplex(ctx, rep, "A")
    a = gw.start(reaper, ctx, gw.holder, (topic_dir, tname, "g", "A", kw, w, 1, 30))
    w.close()
    assert rep.pump(20, lambda: any(o[0] == "holding" for o in rep.other) or rep.errors), rep.errors
    (da,) = rep.deliveries
    assert (da[3], da[4], da[5]) == (0, 0, 1)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        gw.start(reaper, ctx, gw.member, (topic_dir, tname, "g", "B", kw, _pipe(ctx, rep, "B"), None, 30),
                 {"get_timeout": 5.0, "max_acks": 3})
        assert rep.pump(10, lambda: "B" in rep.done or rep.errors), rep.errors
        assert rep.errors == []
        again = [d for d in rep.deliveries if d[1] == "B" and (d[3], d[4]) == (0, 0)]
        assert len(again) == 1, f"p0@0 delivered to B {len(again)} times"
        waited = again[0][8] - da[9]     # from before A's get began: the lease started later
        assert waited >= vt - EPS, f"redelivered {waited:.3f} s after the lease began (timeout {vt})"
        assert again[0][5] == 2
        time.sleep(0.2)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    for cmd in ("ack", "nack", "extend"):
        r.send(cmd)
        assert rep.pump(10, lambda: sum(o[0] == "cmd_done" for o in rep.other) >= 1 or rep.errors), rep.errors
        rep.other = [o for o in rep.other if o[0] != "cmd_done"]
    r.send("close")
    assert rep.pump(10, lambda: "A" in rep.done), rep.errors
    assert rep.errors == []
    a_acks = [x for x in rep.acks if x[1] == "A"]
    assert a_acks == [], f"A's late ack succeeded: {a_acks}"
    assert [s[5] for s in rep.stale] == ["ack", "nack", "extend"], (
        f"late ack/nack/extend outcomes: {rep.stale} {rep.other}")
    b_acks = sorted((x[3], x[4]) for x in rep.acks if x[1] == "B")
    assert b_acks == [(0, 0), (0, 1), (0, 2)], b_acks
    # completed exactly once: nothing pending, nothing delivered again
    _assert_all_committed(t, "g")
    c = tracked(t.consumer(group="g", visibility_timeout=vt))
    with pytest.raises(pyqmem.Empty):
        m = c.get(timeout=2 * vt + 0.3)
        pytest.fail(f"{m.partition}@{m.offset} delivered again (count {m.delivery_count})")


# ----------------------------------------------------------------------------
# a poison record whose handler kills its process
# ----------------------------------------------------------------------------
@pytest.mark.timeout(90)
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_record_whose_handler_always_dies_is_dead_lettered_after_max_deliveries_and_the_group_goes_on(
    topic_dir, tname, tracked, reaper, ordered
):
    ctx = gw.group_ctx()
    max_deliveries = 3
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=2, create=True, retention_bytes=None))
    for seq in range(8):
        t.send(msgs.encode(1, seq, 30), partition=0)
    t.send(msgs.encode(2, 0, 30), partition=1)
    poison = msgs.encode(gw.POISON, 0, 50)
    md_poison = t.send(poison, partition=1, key=b"pk", headers={"trace": b"x1"})
    for seq in range(1, 6):
        t.send(msgs.encode(2, seq, 30), partition=1)
    kw = {"visibility_timeout": 30.0, "max_deliveries": max_deliveries, "ordered": ordered}
    rep = gw.Reports()
    stop = gw.StopFlag(ctx)
    procs = {}
    exits = []

    def spawn(i):
        who = f"m{i}"
        procs[who] = gw.start(reaper, ctx, gw.member,
                              (topic_dir, tname, "g", who, kw, _pipe(ctx, rep, who), stop, 60),
                              {"get_timeout": 0.2, "seed": i})

    for i in range(2):
        spawn(i)
    spawned = 2
    dl = []
    end = time.monotonic() + 60
    while time.monotonic() < end and not rep.errors:
        rep.pump(0.05)
        for who, p in list(procs.items()):
            if p.exitcode is not None and who not in {e[0] for e in exits}:
                exits.append((who, p.exitcode))
                assert spawned < 12, f"members kept dying: {exits}"
                spawn(spawned)              # the test restarts a dead member
                spawned += 1
        if not dl and pyqmem.Topic.exists(tname + ".dlq", dir=topic_dir):
            dl = _read_dlq(topic_dir, tname + ".dlq", 1, 0.05)
            if dl:   # the group goes on: records sent after the dead-lettering are processed too
                [t.send(msgs.encode(3, seq, 30), partition=1) for seq in range(3)]
        goods = {(a[5], a[6]) for a in rep.acks}
        if dl and len(goods) == 8 + 6 + 3:
            break
    assert rep.errors == [], rep.errors
    stop.set()
    for p in procs.values():
        p.join(10)
    rep.pump(5, lambda: all(who in rep.eof for who in procs))
    exits = [(who, p.exitcode) for who, p in procs.items()]

    tries = sorted((d for d in rep.deliveries if d[6] == gw.POISON), key=lambda d: d[8])
    assert [d[5] for d in tries] == list(range(1, max_deliveries + 1)), (
        f"poison deliveries (count, member): {[(d[5], d[1]) for d in tries]}")
    assert len({d[1] for d in tries}) == max_deliveries, "each delivery killed its member"
    assert sorted(e[1] for e in exits) == [0] * (len(exits) - max_deliveries) + [1] * max_deliveries, (
        f"member exits: {exits}")
    assert dl, f"nothing in {tname}.dlq; poison deliveries {[(d[5], d[1]) for d in tries]}"
    assert len(_read_dlq(topic_dir, tname + ".dlq", 2, 0.5)) == 1, "dead-lettered more than once"
    part, _off, data, key, headers = dl[0]
    info = pyqmem.deadletter.info(headers)
    assert info is not None, headers
    assert (info.topic, info.group, info.partition, info.offset, info.delivery_count) == (
        tname, "g", 1, md_poison.offset, max_deliveries), info
    assert info.error == "", f"no member saw an error (they died), yet dlq.error = {info.error!r}"
    assert part == 1 and data == poison and key in (b"pk", "pk") and headers.get("trace") == b"x1"

    acked = defaultdict(list)
    for a in rep.acks:
        acked[(a[5], a[6])].append(a)
    want = {(1, s) for s in range(8)} | {(2, s) for s in range(6)} | {(3, s) for s in range(3)}
    assert set(acked) == want, f"missing {sorted(want - set(acked))}, extra {sorted(set(acked) - want)}"
    assert all(len(v) == 1 for v in acked.values()), "a record was acked twice"
    good = [d for d in rep.deliveries if d[6] != gw.POISON]
    assert all(d[5] == 1 for d in good), "a member that died held only the poison record"
    if ordered:
        after = [d for d in good if d[3] == 1 and d[4] > md_poison.offset]
        assert all(d[8] > tries[-1][8] for d in after), (
            "ordered: a record after the poison was delivered before the poison was dead-lettered")
    gs, _ = _group_stats(t, "g")
    assert gs[1]["dead_lettered"] == 1 and gs[0]["dead_lettered"] == 0, gs
    _assert_all_committed(t, "g")


# ----------------------------------------------------------------------------
# a writer frozen in the middle of a record
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_record_still_being_written_by_a_stalled_writer_is_neither_counted_as_delivered_nor_dead_lettered(
    topic_dir, tname, tracked, reaper
):
    # A record whose (live) writer is frozen mid-copy was delivered to nobody: polling
    # it must not use up its deliveries.  Once written it comes with delivery_count 1.
    ctx = gw.group_ctx()
    rng = random.Random(SEED + 7)
    size, n, max_deliveries = 8 << 20, 40, 2
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, segment_bytes=1 << 28, create=True, retention_bytes=None))
    c = tracked(t.consumer(group="g", visibility_timeout=30.0, max_deliveries=max_deliveries, check_crcs=False))
    rep = gw.Reports()
    got = []

    def poll(times):
        for _ in range(times):
            try:
                ms = c.get_many(8, timeout=0)
            except pyqmem.Empty:
                continue
            for m in ms:
                got.append((m.offset, m.delivery_count, m.headers.get("seq")))
                m.ack()
            ms = m = None

    sub = tracked(t.consumer(start="earliest", check_crcs=False))   # what is readable so far
    readable = 0
    stops, frozen = 0, []
    for rnd in range(3):                  # another writer if this one was never caught mid-record
        label = f"w{rnd}"
        w = gw.start(reaper, ctx, gw.big_writer,
                     (topic_dir, tname, size, n, _pipe(ctx, rep, label), 60), {"first_seq": rnd * n})
        assert rep.pump(20, lambda: label in rep.ready), rep.errors
        while w.exitcode is None and label not in rep.eof and stops < 300 * (rnd + 1):
            rep.pump(rng.uniform(0.0, 0.002))
            try:
                os.kill(w.pid, signal.SIGSTOP)
            except ProcessLookupError:
                break
            stops += 1
            try:
                while True:
                    try:
                        readable = sub.get_many(64, timeout=0)[-1].offset + 1
                    except pyqmem.Empty:
                        break
                if t.stats()["partitions"][0]["end_offset"] > readable:
                    frozen.append(readable)   # the writer is (likely) frozen inside this record
                    poll(max_deliveries + 1)  # each poll may wait a short while for it
                else:
                    poll(1)
            finally:
                try:
                    os.kill(w.pid, signal.SIGCONT)
                except ProcessLookupError:   # it had exited (the stop hit a zombie) and was reaped
                    pass
            if _group_stats(t, "g")[0][0]["redelivered"]:
                break                         # counted already: no need to go on
        rep.pump(30, lambda: label in rep.eof)
        assert rep.errors == [], rep.errors
        if frozen:
            break
    end = time.monotonic() + 20
    while sum(c.lag().values()) and time.monotonic() < end:
        poll(1)
        time.sleep(0.01)
    gs, _ = _group_stats(t, "g")
    dl = _read_dlq(topic_dir, tname + ".dlq", n, 0.2)
    assert gs[0]["dead_lettered"] == 0 and dl == [], (
        f"records never delivered to anyone were dead-lettered: {[pyqmem.deadletter.info(x[4]) for x in dl][:3]}, "
        f"group {gs[0]}; the writer was frozen inside offsets {frozen} ({stops} stops)")
    counts = {o: dc for o, dc, _ in got}
    assert sorted(counts) == list(range(len(rep.sent))), f"offsets received: {sorted(counts)}"
    assert {o: dc for o, dc in counts.items() if dc != 1} == {}, "first deliveries must have delivery_count 1"
    assert all(int(head) == o for o, _, head in got)
    assert gs[0]["redelivered"] == 0, gs[0]
    if not frozen:
        pytest.skip(f"the writer was never caught inside a record ({stops} stops, {len(rep.sent)} sent)")


# ----------------------------------------------------------------------------
# dead letters while members are killed
# ----------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_failing_records_reach_the_dead_letter_topic_at_least_once_while_members_are_killed(
    topic_dir, tname, tracked, reaper
):
    # run() members; records of producer 9 always raise.  Members are SIGKILLed at random
    # and replaced.  A crash between the dead-letter append and the ack may put a record
    # in the DLQ twice, never zero times; everything else is completed.
    ctx = gw.group_ctx()
    rng = random.Random(SEED + 5)
    info = f"(PYQMEM_GROUP_SEED={SEED})"
    max_deliveries = 2
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=2, create=True, retention_bytes=None))
    where = {}
    for seq in range(480):
        prod = 9 if seq % 2 == 0 else 1
        md = t.send(msgs.encode(prod, seq, 40), partition=seq % 2)
        where[(prod, seq)] = (md.partition, md.offset)
    bad = {k for k in where if k[0] == 9}
    kw = {"visibility_timeout": 30.0, "max_deliveries": max_deliveries,
          "retry": {"initial": 0.005, "multiplier": 2.0, "maximum": 0.05, "jitter": 0.0}}
    rep = gw.Reports()
    stop = gw.StopFlag(ctx)
    procs, killed = {}, {}

    def spawn(i):
        who = f"r{i}"
        procs[who] = gw.start(reaper, ctx, gw.run_member,
                              (topic_dir, tname, "g", who, kw, _pipe(ctx, rep, who), stop, 60),
                              {"fail_producers": (9,), "work": 0.004, "seed": SEED + i})

    for i in range(3):
        spawn(i)
    spawned = 3

    def completed():
        gs = t.stats()["groups"].get("g", {})
        return gs and all(v["lag"] == 0 and v["pending"] == 0 for v in gs.values())

    end = time.monotonic() + 40
    while time.monotonic() < end and not rep.errors and not completed():
        rep.pump(rng.uniform(0.01, 0.08))
        if spawned < 60:
            live = [w for w, p in procs.items() if p.pid not in killed]
            victim = procs[rng.choice(live)]
            killed[victim.pid] = _kill(victim)
            spawn(spawned)
            spawned += 1
    assert rep.errors == [], rep.errors
    assert completed(), f"not every record was completed: {t.stats()['groups'].get('g')} {info}"
    stop.set()
    for p in procs.values():
        p.join(10)
    rep.pump(5, lambda: all(w in rep.eof for w in procs))
    dl = _read_dlq(topic_dir, tname + ".dlq", len(bad) * 2, 3)
    in_dlq = defaultdict(int)
    for part, _off, data, _key, headers in dl:
        prod, seq = msgs.decode(data)[:2]
        dinfo = pyqmem.deadletter.info(headers)
        assert (dinfo.partition, dinfo.offset) == where[(prod, seq)] and part == dinfo.partition, (dinfo, prod, seq)
        if prod == 9:
            assert dinfo.error.startswith("RuntimeError: boom") or dinfo.error == "", dinfo
        in_dlq[(prod, seq)] += 1
    missing = sorted(bad - set(in_dlq))
    assert not missing, f"failing records dead-lettered zero times: {missing[:10]} {info}"
    delivered = rep.delivered_records()
    for key in set(in_dlq) - bad:   # a good record may only get there if members died holding it
        assert any(d[2] in killed for d in delivered.get(key, [])) or len(delivered.get(key, [])) < max_deliveries, (
            f"good record {key} dead-lettered after deliveries {[(d[1], d[5]) for d in delivered[key]]} {info}")
    handled = {(a[5], a[6]) for a in rep.acks}
    unhandled = sorted(k for k in where if k not in bad and k not in handled and k not in in_dlq)
    assert not unhandled, f"good records completed without a handler returning: {unhandled[:10]} {info}"
    twice = sum(1 for v in in_dlq.values() if v > 1)
    gs, _ = _group_stats(t, "g")
    assert sum(v["dead_lettered"] for v in gs.values()) <= len(in_dlq), gs
    print(f"\n{len(killed)} member kills: {len(in_dlq)} records dead-lettered ({len(bad)} failing, "
          f"{twice} twice), {len(handled)} handled {info}")


# ----------------------------------------------------------------------------
# at-most-once
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_at_most_once_record_of_a_killed_member_is_never_redelivered(topic_dir, tname, tracked, reaper):
    ctx = gw.group_ctx()
    parts, total, held_n = 2, 40, 3
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, create=True, retention_bytes=None))
    sent = {}
    for seq in range(total):
        md = t.send(msgs.encode(1, seq, 30), partition=seq % parts)
        sent[(md.partition, md.offset)] = seq
    kw = {"mode": "at_most_once", "visibility_timeout": 0.3}
    rep = gw.Reports()
    r, w = _duplex(ctx, rep, "A")
    a = gw.start(reaper, ctx, gw.holder, (topic_dir, tname, "g", "A", kw, w, held_n, 30))
    w.close()
    assert rep.pump(20, lambda: any(o[0] == "holding" for o in rep.other) or rep.errors), rep.errors
    _kill(a)
    a.join(10)
    held = {(d[3], d[4]) for d in rep.deliveries if d[1] == "A"}
    assert len(held) == held_n
    stop = gw.StopFlag(ctx)
    gw.start(reaper, ctx, gw.member, (topic_dir, tname, "g", "B", kw, _pipe(ctx, rep, "B"), stop, 30),
             {"get_timeout": 0.1, "max_batch": 4})
    rep.pump(15, lambda: len(rep.acks) >= total - held_n or rep.errors)
    rep.pump(1.5)                        # >> the liveness sweep and the visibility timeout
    stop.set()
    rep.pump(10, lambda: "B" in rep.done)
    assert rep.errors == [] and rep.stale == [], (rep.errors, rep.stale)
    got = [(d[3], d[4]) for d in rep.deliveries if d[1] == "B"]
    assert not set(got) & held, f"at-most-once records redelivered after their member died: {sorted(set(got) & held)}"
    assert len(got) == len(set(got)), "a record was delivered twice"
    assert set(got) == set(sent) - held, f"missing {sorted(set(sent) - held - set(got))}"
    assert all(d[5] == 1 for d in rep.deliveries)
    _assert_all_committed(t, "g")


# ----------------------------------------------------------------------------
# ordered
# ----------------------------------------------------------------------------
def _check_ordered(rep, kills, parts_end):
    """Per partition: offsets delivered in order (the in-flight one of a killed member may
    come again, next), each after the previous one's ack began, and a partition moves to
    another member only after its owner was killed."""
    acks = {}
    for a in rep.acks:
        acks.setdefault((a[2], a[3], a[4]), a)          # (pid, p, o) -> first ack
    by_part = defaultdict(list)
    for d in rep.deliveries:
        by_part[d[3]].append(d)
    problems = []
    for p, ds in by_part.items():
        ds.sort(key=lambda d: d[8])
        if ds[0][4] != 0:
            problems.append(f"p{p}: first delivery is offset {ds[0][4]}")
        for prev, cur in zip(ds, ds[1:]):
            ppid, poff, pdc = prev[2], prev[4], prev[5]
            cpid, coff, ct, cdc = cur[2], cur[4], cur[8], cur[5]
            ack = acks.get((ppid, p, poff))
            if coff == poff + 1:
                if ack is not None:
                    if ack[7] > ct:
                        problems.append(f"p{p}@{coff} delivered at {ct:.4f} before @{poff}'s ack began at {ack[7]:.4f}")
                elif ppid not in kills:
                    problems.append(f"p{p}@{coff} delivered though @{poff} (live member {ppid}) was never acked")
            elif coff == poff:
                if ppid not in kills or ack is not None:
                    problems.append(f"p{p}@{coff} delivered again (member {ppid} {'acked it' if ack else 'alive'})")
                elif cdc != pdc + 1:
                    problems.append(f"p{p}@{coff} redelivered with count {cdc} after {pdc}")
            else:
                problems.append(f"p{p}: offset {coff} delivered after {poff}")
            if cpid != ppid:
                if ppid not in kills:
                    problems.append(f"p{p}@{coff}: moved from live member {ppid} to {cpid}")
                elif ct <= kills[ppid]:
                    problems.append(f"p{p}@{coff}: delivered to {cpid} before owner {ppid} was killed")
        # the pid of a partition never comes back once it moved away
        owners = [ds[0][2]] + [b[2] for a, b in zip(ds, ds[1:]) if b[2] != a[2]]
        if len(owners) != len(set(owners)):
            problems.append(f"p{p}: owners {owners}")
        last = ds[-1]
        if last[4] != parts_end[p] - 1:
            problems.append(f"p{p}: last delivery @{last[4]} of {parts_end[p]}")
    return problems


@pytest.mark.timeout(90)
def test_ordered_partitions_keep_order_and_one_live_owner_across_member_kills(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    rng = random.Random(SEED)
    info = f"(PYQMEM_GROUP_SEED={SEED})"
    parts, per = 3, 60
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, create=True, retention_bytes=None))
    for seq in range(parts * per):
        t.send(msgs.encode(1, seq, 30), partition=seq % parts)
    kw = {"visibility_timeout": 30.0, "ordered": True}
    rep = gw.Reports()
    stop = gw.StopFlag(ctx)
    procs = {}

    def spawn(i):
        who = f"m{i}"
        procs[who] = gw.start(reaper, ctx, gw.member,
                              (topic_dir, tname, "g", who, kw, _pipe(ctx, rep, who), stop, 60),
                              {"get_timeout": 0.1, "seed": SEED + i, "max_batch": 2, "work": (0.0005, 0.004)})

    for i in range(3):
        spawn(i)
    spawned = 3
    kills = {}                            # pid -> time of the kill
    for at in (25, 90):
        at += rng.randint(0, 10)
        rep.pump(30, lambda: len(rep.deliveries) >= at or rep.errors)
        assert rep.errors == [], rep.errors
        # the member that got the latest delivery owns a partition with a record in flight (likely)
        victim = max((d for d in rep.deliveries if d[2] not in kills), key=lambda d: d[8])[1]
        kills[procs[victim].pid] = _kill(procs[victim])
        procs[victim].join(10)
        spawn(spawned)
        spawned += 1

    def finished():
        top = defaultdict(lambda: -1)
        for a in rep.acks:
            top[a[3]] = max(top[a[3]], a[4])
        return all(top[p] == per - 1 for p in range(parts))

    assert rep.pump(40, lambda: finished() or rep.errors), f"not every partition was acked to its end {info}"
    stop.set()
    rep.pump(10, lambda: all(f"m{i}" in rep.done or procs[f"m{i}"].pid in kills for i in range(spawned)))
    assert rep.errors == [], rep.errors
    problems = _check_ordered(rep, kills, {p: per for p in range(parts)})
    assert problems == [], f"{problems[:10]} {info}"
    redo = len(rep.deliveries) - len({(d[3], d[4]) for d in rep.deliveries})
    assert redo <= 2 * 2, f"{redo} redeliveries for 2 kills (at most one in flight per partition each)"
    _assert_all_committed(t, "g")
    print(f"\nordered: {len(rep.deliveries)} deliveries, {redo} redelivered, kills {len(kills)}")


# ----------------------------------------------------------------------------
# a group whose creator was killed
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_group_whose_creator_was_killed_midway_opens_and_works(topic_dir, tname, tracked, reaper):
    ctx = gw.group_ctx()
    rng = random.Random(SEED + 3)
    info = f"(PYQMEM_GROUP_SEED={SEED})"
    parts = 64                            # a bigger group file: kills land inside its creation
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, segment_bytes=65536, create=True, retention_bytes=None))
    t.send(msgs.encode(1, 0, 10), partition=0)
    outcomes = defaultdict(int)
    for i in range(25):
        group = f"g{i}"
        rep = gw.Reports()
        p = gw.start(reaper, ctx, gw.group_creator, (topic_dir, tname, group, _pipe(ctx, rep, "c")))
        assert rep.pump(20, lambda: "c" in rep.ready or rep.errors), rep.errors
        time.sleep(rng.uniform(0, 0.004))
        _kill(p)
        p.join(10)
        rep.pump(2, lambda: "c" in rep.eof)
        assert rep.errors == [], rep.errors
        path = os.path.join(topic_dir, tname, "groups", group + ".grp")
        state = ("created" if any(o[0] == "created" for o in rep.other)
                 else "killed while creating" if os.path.exists(path) else "killed before creating")
        outcomes[state] += 1
        try:
            c = t.consumer(group=group, start="earliest")
        except Exception as e:
            pytest.fail(f"{group} ({state}): t.consumer(group=...) raised {e!r} {dict(outcomes)} {info}")
        tracked(c)
        m = c.get(timeout=5)
        assert (m.partition, m.offset, m.delivery_count) == (0, 0, 1), (state, m.partition, m.offset, m.delivery_count)
        m.ack()
        del m
        with pytest.raises(pyqmem.Empty):
            c.get(timeout=0.1)
        c.close()
        assert group in t.stats()["groups"], f"{group} ({state}) missing from stats()['groups'] {info}"
    print(f"\ngroup creator kills: {dict(outcomes)} {info}")


# ----------------------------------------------------------------------------
# stats()["groups"]
# ----------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_group_stats_count_committed_pending_lag_redelivered_and_dead_lettered(
    topic_dir, tname, tracked, reaper
):
    ctx = gw.group_ctx()
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=2, create=True, retention_bytes=None))
    n0, n1 = 20, 3
    for seq in range(n0):
        t.send(msgs.encode(1, seq, 20), partition=0)
    for seq in range(n1):
        t.send(msgs.encode(2, seq, 20), partition=1)
    rep = gw.Reports()
    r, w = _duplex(ctx, rep, "A")
    a = gw.start(reaper, ctx, gw.holder,
                 (topic_dir, tname, "g", "A", {"visibility_timeout": 30.0, "partitions": [0]}, w, 2, 30))
    w.close()
    assert rep.pump(20, lambda: any(o[0] == "holding" for o in rep.other) or rep.errors), rep.errors
    _kill(a)
    a.join(10)
    time.sleep(0.25)
    c0 = tracked(t.consumer(group="g", partitions=[0], visibility_timeout=30.0))
    seen, redelivered, held = set(), set(), []
    end = time.monotonic() + 10
    while len(redelivered) < 2 and time.monotonic() < end:
        try:
            m = c0.get(timeout=0.2)
        except pyqmem.Empty:
            continue
        assert m.partition == 0
        if m.delivery_count == 2:
            redelivered.add(m.offset)
        seen.add(m.offset)
        m.ack()
    assert redelivered == {0, 1}, f"the killed member's leases were not redelivered: {redelivered}"
    k = len(seen)
    assert seen == set(range(k)) and k + 2 <= n0, seen
    held = [c0.get(timeout=2), c0.get(timeout=2)]
    assert [m.offset for m in held] == [k, k + 1]
    c1 = tracked(t.consumer(group="g", partitions=[1], visibility_timeout=30.0, max_deliveries=1))
    m = c1.get(timeout=2)
    assert (m.partition, m.offset, m.delivery_count) == (1, 0, 1)
    m.nack(delay=0)
    got1 = []
    for _ in range(2):
        m = c1.get(timeout=2)
        got1.append((m.offset, m.delivery_count))
        m.ack()
    assert got1 == [(1, 1), (2, 1)], f"p1@0 should have been dead-lettered (max_deliveries=1): {got1}"
    with pytest.raises(pyqmem.Empty):
        c1.get(timeout=0.2)

    keys = {"committed", "pending", "lag", "redelivered", "dead_lettered", "skipped"}
    gs, _ = _group_stats(t, "g")
    assert set(gs) == {0, 1} and all(keys <= set(v) for v in gs.values()), gs
    assert {x: gs[0][x] for x in ("committed", "pending", "lag", "redelivered", "dead_lettered")} == {
        "committed": k, "pending": 2, "lag": n0 - k, "redelivered": 2, "dead_lettered": 0}, gs[0]
    assert {x: gs[1][x] for x in ("committed", "pending", "lag", "dead_lettered")} == {
        "committed": n1, "pending": 0, "lag": 0, "dead_lettered": 1}, gs[1]
    assert c0.lag() == {0: n0 - k} and c1.lag() == {1: 0}
    assert c0.stats()[0] == gs[0] and c1.stats()[1] == gs[1], (c0.stats(), c1.stats(), gs)
    dl = _read_dlq(topic_dir, tname + ".dlq", 1, 2)
    assert len(dl) == 1 and pyqmem.deadletter.info(dl[0][4]).offset == 0
    for m in held:
        m.ack()
    gs, _ = _group_stats(t, "g")
    assert gs[0]["committed"] == k + 2 and gs[0]["pending"] == 0


# ----------------------------------------------------------------------------
# randomised history check
# ----------------------------------------------------------------------------
class Trial:
    """One small run: producers and members started together, some of them SIGKILLed at
    random moments (killed members are replaced), then drained and checked."""

    def __init__(self, ctx, reaper, topic_dir, name, rng, n):
        self.ctx, self.reaper, self.dir, self.name, self.rng, self.n = ctx, reaper, topic_dir, name, rng, n
        self.rep = gw.Reports()
        self.stop = gw.StopFlag(ctx)
        self.members = {}                 # who -> Process
        self.producers = {}
        self.killed_members = {}          # pid -> kill time
        self.killed_producers = set()
        self.parts = rng.choice([1, 2, 3])
        self.spawned = 0
        self.kw = {"visibility_timeout": 30.0}

    def spawn_member(self):
        who = f"m{self.spawned}"
        self.spawned += 1
        self.members[who] = gw.start(
            self.reaper, self.ctx, gw.member,
            (self.dir, self.name, "g", who, self.kw, _pipe(self.ctx, self.rep, who), self.stop, 30),
            {"get_timeout": 0.05, "seed": self.rng.getrandbits(32), "max_batch": self.rng.choice([1, 1, 4, 8]),
             "work": (0.0, self.rng.choice([0.0005, 0.002]))})

    def run(self):
        rng, rep = self.rng, self.rep
        t = pyqmem.Topic(self.name, dir=self.dir, partitions=self.parts, segment_bytes=2**18, create=True)
        try:
            n_prod = rng.choice([1, 2, 2, 3])
            for i in range(n_prod):
                self.producers[i] = gw.start(
                    self.reaper, self.ctx, gw.slow_producer,
                    (self.dir, self.name, i, rng.randint(40, 200), rng.getrandbits(32), _pipe(self.ctx, rep, f"p{i}"), 30),
                    {"pause": (0.0, 0.004), "every": 3})
            for _ in range(rng.choice([2, 3])):
                self.spawn_member()
            assert rep.pump(20, lambda: len(rep.ready) == n_prod + len(self.members) or rep.errors), rep.errors
            t0 = time.monotonic()
            events = sorted(rng.uniform(0, 0.2) for _ in range(rng.randint(1, 4)))
            for i, at in enumerate(events):
                rep.pump(max(0.0, t0 + at - time.monotonic()))
                live_p = [k for k, p in self.producers.items() if k not in self.killed_producers and p.exitcode is None]
                if i > 0 and live_p and rng.random() < 0.5:
                    k = rng.choice(live_p)
                    _kill(self.producers[k])
                    self.killed_producers.add(k)
                    continue
                live_m = [w for w, p in self.members.items() if p.pid not in self.killed_members]
                # prefer a member that has something in flight: it got a delivery it did not ack yet
                busy = self._busy(live_m)
                who = rng.choice(busy or live_m)
                p = self.members[who]
                self.killed_members[p.pid] = _kill(p)
                self.spawn_member()
            for k, p in self.producers.items():
                p.join(20)
                assert k in self.killed_producers or p.exitcode == 0, f"producer {k} exit {p.exitcode}"
            rep.pump(5, lambda: all(f"p{k}" in rep.eof for k in self.producers))
            assert all(f"p{k}" in rep.eof for k in self.producers), "a producer pipe stayed open"

            def drained():
                if not set(rep.sent) <= {(a[5], a[6]) for a in rep.acks} | self._acked_unreported():
                    return False
                gs = t.stats()["groups"].get("g", {})
                return all(v["lag"] == 0 for v in gs.values())

            rep.pump(10, lambda: drained() or rep.errors)
            self.stop.set()
            for who, p in self.members.items():
                p.join(10)
            rep.pump(5, lambda: all(w in rep.eof for w in self.members))
            gs = t.stats()["groups"].get("g")
            ends = {k: v["end_offset"] for k, v in t.stats()["partitions"].items()}
        finally:
            t.close()
        return gs, ends

    def _acked_unreported(self):
        """Records a killed member may have acked without living to report it: for each
        killed member, its first delivery (in report order) without an ack report, if no
        one else got that record later.  (A member reports the deliveries of a batch, then
        acks them one by one in that order; a stale ack is a failure by itself.)"""
        rep = self.rep
        acked = {(a[2], a[3], a[4]) for a in rep.acks}
        out = set()
        for pid in self.killed_members:
            for d in rep.deliveries:
                if d[2] == pid and (pid, d[3], d[4]) not in acked:
                    key = (d[6], d[7])
                    if not any(e[2] != pid and (e[6], e[7]) == key and e[8] > d[8] for e in rep.deliveries):
                        out.add(key)
                    break
        return out

    def _busy(self, live):
        done = {(a[2], a[3], a[4]) for a in self.rep.acks}
        busy = {d[1] for d in self.rep.deliveries if (d[2], d[3], d[4]) not in done}
        return [w for w in live if w in busy]

    def check(self, gs, ends):
        rep = self.rep
        problems = []
        if rep.errors:
            problems.append(f"errors: {rep.errors[:2]}")
        if rep.torn:
            problems.append(f"torn: {rep.torn[:3]}")
        maybe = {(k, rep.max_seq[k] + 1) for k in self.killed_producers}
        killed = self.killed_members
        acks = rep.acked_records()
        deliveries = rep.delivered_records()
        unreported = self._acked_unreported()
        lost = sorted(set(rep.sent) - set(acks) - unreported)
        unexpected = sorted(k for k in deliveries if k not in rep.sent and k not in maybe)
        bad_dups, allowed_dups, twice_acked = [], 0, []
        for key, ds in deliveries.items():
            if len(ds) > 1:
                live = [d for d in ds if d[2] not in killed]
                if len(live) > 1:
                    bad_dups.append((key, [(d[1], d[5]) for d in ds]))
                else:
                    allowed_dups += 1
                dcs = [d[5] for d in ds]
                if len(set(dcs)) != len(dcs):
                    bad_dups.append((key, "same delivery_count twice", dcs))
            for a in acks.get(key, ()):
                after = [d for d in ds if d[8] > a[8]]
                if after:
                    bad_dups.append((key, f"delivered again after {a[1]}'s ack returned", [(d[1], d[5]) for d in after]))
        for key, a in acks.items():
            if len(a) > 1:
                twice_acked.append((key, [x[1] for x in a]))
        for key, ds in deliveries.items():
            if not killed and any(d[5] != 1 for d in ds):
                bad_dups.append((key, "delivery_count > 1 with no member killed", [d[5] for d in ds]))
        if lost:
            problems.append(f"lost={len(lost)} {lost[:5]}")
        if unexpected:
            problems.append(f"unexpected={len(unexpected)} {unexpected[:5]}")
        if bad_dups:
            problems.append(f"duplicates not explained by a killed member: {bad_dups[:5]}")
        if twice_acked:
            problems.append(f"acked twice: {twice_acked[:5]}")
        if rep.stale:
            problems.append(f"stale acks with a 30 s lease: {rep.stale[:3]}")
        if gs is None:
            problems.append("no stats for group g")
        else:
            for p, end in ends.items():
                g = gs.get(p, {})
                if g.get("committed") != end or g.get("pending") != 0 or g.get("lag") != 0:
                    problems.append(f"p{p}: end_offset {end}, group {g}")
        return problems, {"sent": len(rep.sent), "delivered": sum(len(v) for v in deliveries.values()),
                          "acked_unreported": len(set(rep.sent) & unreported - set(acks)),
                          "dups": allowed_dups, "member_kills": len(killed),
                          "producer_kills": len(self.killed_producers)}


@pytest.mark.timeout(60 + TRIALS * 1.2)
def test_random_kills_during_at_least_once_consumption_lose_nothing_and_duplicate_only_leased_records(
    topic_dir, tname, reaper
):
    ctx = gw.group_ctx()
    info = f"(PYQMEM_GROUP_SEED={SEED}, trials={TRIALS})"
    totals = defaultdict(int)
    started = time.monotonic()
    for trial in range(TRIALS):
        rng = random.Random(SEED * 1000 + trial)
        tr = Trial(ctx, reaper, topic_dir, f"{tname[:70]}-{trial}", rng, trial)
        gs, ends = tr.run()
        problems, counts = tr.check(gs, ends)
        assert problems == [], f"trial {trial}: {problems} {info}"
        for k, v in counts.items():
            totals[k] += v
        reaper.kill_all()
        reaper.procs.clear()
    took = time.monotonic() - started
    assert totals["member_kills"] >= TRIALS and totals["sent"] > TRIALS * 40
    print(f"\n{TRIALS} trials in {took:.1f} s: {dict(totals)} {info}")
