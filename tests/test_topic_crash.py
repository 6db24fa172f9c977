"""Crash tests for pyqmem.Topic: SIGKILL writer processes at random points of their sends
(and of topic creation); afterwards every acknowledged record is present and intact,
nothing torn or duplicated, and the topic keeps working.

Writers report every send that returned, at once, through a multiprocessing Pipe (never
the topic under test); values are helpers.msgs frames (producer, seq, CRC).  A live
subscriber reads during the kills; a fresh handle re-reads everything afterwards.
PYQMEM_CRASH_TRIALS (default 50) sets the kills; PYQMEM_CRASH_SEED fixes the randomness.
"""
from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from multiprocessing.connection import wait as mp_wait

import pytest

import pyqmem
from helpers import msgs, topic_workers
from helpers.history import History
from helpers.stopflag import StopFlag
from helpers.topic_fixtures import assert_nothing_more, mp_ctx

TRIALS = int(os.environ.get("PYQMEM_CRASH_TRIALS", "50"))
SEED = int(os.environ.get("PYQMEM_CRASH_SEED", str(time.time_ns() % 2**31)))
PARTS = 3
SEG = 65536           # small segments: kills land in rolls too
MAX_SIZE = 24000      # < SEG // 2
BUDGET = 60 + TRIALS * 0.5


def _start(reaper, ctx, target, args):
    p = ctx.Process(target=target, args=args, daemon=True)
    reaper.add(p)
    p.start()
    return p


class Reports:
    """Parent side of the children's pipes: acks, deliveries, problems."""

    def __init__(self):
        self.history = History()
        self.acks = {}                        # (partition, offset) -> (writer, seq)
        self.where = {}                       # (writer, seq) -> (partition, offset)
        self.max_seq = defaultdict(lambda: -1)
        self.deliveries = defaultdict(list)   # sub -> [(partition, offset, writer, seq)]
        self.errors, self.torn = [], []
        self.ready, self.done = {}, {}
        self.conns = {}                       # Connection -> label

    def add(self, conn, label):
        self.conns[conn] = label

    def _ack(self, writer, seq, part, off):
        key = (part, off)
        if key in self.acks and self.acks[key] != (writer, seq):
            self.errors.append(("double-ack", key, self.acks[key], (writer, seq)))
        self.acks[key] = (writer, seq)
        self.where[(writer, seq)] = key
        self.history.ack(writer, seq)
        self.max_seq[writer] = max(self.max_seq[writer], seq)

    def handle(self, label, msg):
        kind = msg[0]
        if kind == "ack":
            self._ack(msg[1], msg[2], msg[3], msg[4])
        elif kind == "acks":
            for seq, part, off in msg[2]:
                self._ack(msg[1], seq, part, off)
        elif kind == "deliver":
            sub = msg[1]
            self.deliveries[sub].extend(msg[2])
            for part, off, writer, seq in msg[2]:
                self.history.deliver((sub, part), writer, seq)
        elif kind == "torn":
            self.torn.append(msg[1:])
        elif kind == "error":
            self.errors.append(msg[1:])
        elif kind == "ready":
            self.ready[label] = msg[2]
        elif kind == "done":
            self.done[label] = msg[2]

    def pump(self, deadline, until=lambda: False, only=None):
        """Read every pipe until until(), the deadline, or (for `only`) EOF of that pipe."""
        while self.conns and time.monotonic() < deadline and not until():
            if only is not None and only not in self.conns:
                return
            left = max(0.0, deadline - time.monotonic())
            for r in mp_wait(list(self.conns), timeout=min(0.05, left)):
                try:
                    msg = r.recv()
                except (EOFError, OSError):
                    del self.conns[r]
                    continue
                self.handle(self.conns[r], msg)


def _check_deliveries(rep, sub, got, where):
    """got: [(partition, offset, writer, seq)] in receipt order."""
    seen = set()
    last = {}
    for part, off, writer, seq in got:
        assert (part, off) not in seen, f"{where}: {sub} got {part}@{off} twice"
        seen.add((part, off))
        assert off > last.get(part, -1), f"{where}: {sub} p{part}: offset {off} after {last[part]}"
        last[part] = off
        if (part, off) in rep.acks:
            assert rep.acks[(part, off)] == (writer, seq), (
                f"{where}: {part}@{off} holds {(writer, seq)}, acked as {rep.acks[(part, off)]}")
        if (writer, seq) in rep.where:
            assert rep.where[(writer, seq)] == (part, off), (
                f"{where}: {(writer, seq)} found at {part}@{off}, acked at {rep.where[(writer, seq)]}")
    return seen


@pytest.mark.timeout(BUDGET + 60)
def test_killed_writers_lose_no_acknowledged_record_and_tear_none(topic_dir, tname, tracked, reaper):
    ctx = mp_ctx()
    rng = random.Random(SEED)
    info = f"(PYQMEM_CRASH_SEED={SEED}, trials={TRIALS})"
    deadline = time.monotonic() + BUDGET
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=PARTS, segment_bytes=SEG, create=True, retention_bytes=None))
    rep = Reports()

    r, w = ctx.Pipe(duplex=False)
    _start(reaper, ctx, topic_workers.sentinel_subscriber, (topic_dir, tname, PARTS, "live", w, BUDGET))
    w.close()
    rep.add(r, "live")
    stop = StopFlag(ctx)
    r, w = ctx.Pipe(duplex=False)
    _start(reaper, ctx, topic_workers.survivor_writer,
           (topic_dir, tname, PARTS, 0, SEED, w, stop, BUDGET, MAX_SIZE))
    w.close()
    rep.add(r, "w0")
    rep.pump(time.monotonic() + 30, until=lambda: len(rep.ready) == 2)
    assert set(rep.ready) == {"live", "w0"}, f"helpers did not start: {rep.errors[:2]}"

    killed_before_ready = 0
    for trial in range(TRIALS):
        assert time.monotonic() < deadline, f"out of time after {trial} trials {info}"
        wid = trial + 1
        label = f"w{wid}"
        r, w = ctx.Pipe(duplex=False)
        p = _start(reaper, ctx, topic_workers.crash_writer,
                   (topic_dir, tname, PARTS, wid, SEED * 1000 + wid, w, 1_000_000, 30, MAX_SIZE))
        w.close()
        rep.add(r, label)
        if rng.random() < 0.2:
            # anywhere from process start through opening the topic and the first sends
            rep.pump(time.monotonic() + rng.uniform(0, 0.03))
        else:
            rep.pump(time.monotonic() + 20, until=lambda: label in rep.ready)
            assert label in rep.ready, f"{label} never became ready: {rep.errors[-2:]} {info}"
            rep.pump(time.monotonic() + rng.choice([rng.uniform(0, 0.002), rng.uniform(0, 0.05)]))
        killed_before_ready += label not in rep.ready
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL, f"{label} exit code {p.exitcode} before the kill {rep.errors[-2:]}"
        rep.pump(time.monotonic() + 10, only=r)   # its last acks, up to EOF
        assert r not in rep.conns, f"{label}'s pipe never reached EOF {info}"
        rep.history.maybe(wid, rep.max_seq[wid] + 1)
        assert rep.errors == [], f"{rep.errors[:3]} {info}"

    # stop the survivor, then mark the end of every partition for the live subscriber
    stop.set()
    rep.pump(time.monotonic() + 30, until=lambda: "w0" in rep.done)
    assert "w0" in rep.done, f"survivor did not stop {info}"
    ends_before = {}
    for k in range(PARTS):
        ends_before[k] = t.send(msgs.sentinel(), partition=k).offset
    rep.pump(time.monotonic() + 60, until=lambda: "live" in rep.done)
    assert rep.errors == [], f"{rep.errors[:3]} {info}"
    assert rep.torn == [], f"torn records delivered: {rep.torn[:5]} {info}"
    assert rep.done.get("live") == list(range(PARTS)), (
        f"live subscriber stuck: saw the end of partitions {rep.done.get('live')} {info}")
    res = rep.history.check()
    assert res.ok(), f"live subscriber: {res.summary()} {info}"
    live = _check_deliveries(rep, "live", rep.deliveries["live"], "live")
    assert len(rep.acks) > TRIALS, f"too few acknowledged records to mean anything: {len(rep.acks)}"

    # every process is gone: a fresh handle sees every acknowledged record, intact
    t.close()
    t2 = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=PARTS, create=False))
    st = t2.stats()["partitions"]
    assert {k: st[k]["end_offset"] for k in range(PARTS)} == {k: ends_before[k] + 1 for k in range(PARTS)}
    c = tracked(t2.consumer(start="earliest"))
    again, sentinels = [], set()
    limit = time.monotonic() + 60
    while len(sentinels) < PARTS and time.monotonic() < limit:
        try:
            batch = c.get_many(512, timeout=1)
        except pyqmem.Empty:
            continue
        for m in batch:
            try:
                writer, seq, _t, _size = msgs.decode(m.data)
            except msgs.TornMessage as e:
                pytest.fail(f"torn record at p{m.partition}@{m.offset} after reopen: {e} {info}")
            if writer == msgs.SENTINEL_PRODUCER:
                sentinels.add(m.partition)
                continue
            assert m.headers is not None and m.headers.get("w") in (None, b"%d" % writer)
            again.append((m.partition, m.offset, writer, seq))
        del batch
    assert sentinels == set(range(PARTS)), f"reopened reader saw ends of {sorted(sentinels)} {info}"
    assert_nothing_more(c)
    reopened = _check_deliveries(rep, "reopen", again, "after reopen")
    h2 = History()
    for (writer, seq) in rep.where:
        h2.ack(writer, seq)
    for wid in range(1, TRIALS + 1):
        h2.maybe(wid, rep.max_seq[wid] + 1)
    for part, off, writer, seq in again:
        h2.deliver(("reopen", part), writer, seq)
    res2 = h2.check()
    assert res2.ok(), f"after reopen: {res2.summary()} {info}"
    assert reopened == live, f"the reopened log differs from what the live reader saw {info}"
    # gaps: only records whose writer died mid-send (at most one per killed writer)
    gaps = sum(ends_before[k] for k in range(PARTS)) - len(reopened)
    assert 0 <= gaps <= TRIALS, f"{gaps} offsets missing for {TRIALS} killed writers {info}"
    print(f"\n{TRIALS} kills ({killed_before_ready} before ready), {len(rep.acks)} acked, "
          f"{len(reopened)} stored, {gaps} gaps, {res.counts['recovered']} unacked-but-stored, "
          f"segments {[st[k]['segments'] for k in range(PARTS)]} {info}")

    # the topic keeps accepting sends, in every partition, after the sentinels
    for k in range(PARTS):
        md = t2.send(msgs.encode(99, k, 100), partition=k)
        assert md.offset == ends_before[k] + 1
    newer = []
    for _ in range(PARTS):
        m = c.get(timeout=10)
        newer.append((m.partition, m.offset, msgs.decode(m.data)[:2]))
        del m
    assert sorted(newer) == [(k, ends_before[k] + 1, (99, k)) for k in range(PARTS)]
    assert_nothing_more(c)


CPARTS, CSEG = 8, 4 * 2**20   # enough creation work (8 preallocated segments) to land kills in it


@pytest.mark.timeout(90)
def test_topic_whose_creator_was_killed_midway_opens_and_works(topic_dir, tname, tracked, reaper):
    ctx = mp_ctx()
    rng = random.Random(SEED + 1)
    info = f"(PYQMEM_CRASH_SEED={SEED})"
    trials = max(5, min(20, TRIALS // 3))
    outcomes = defaultdict(int)
    for i in range(trials):
        name = f"{tname[:80]}-{i}"
        r, w = ctx.Pipe(duplex=False)
        p = _start(reaper, ctx, topic_workers.create_victim, (topic_dir, name, CPARTS, CSEG, w))
        w.close()
        got = {}
        end = time.monotonic() + 20
        while "ready" not in got and time.monotonic() < end:
            if r.poll(0.05):
                msg = r.recv()
                got[msg[0]] = msg
        assert "ready" in got, f"creator {i} never started {got}"
        time.sleep(rng.uniform(0, 0.02))  # creating takes ~10 ms here
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:  # finished first (forkserver children are reaped elsewhere)
            pass
        p.join(10)
        try:
            while r.poll(1):
                msg = r.recv()
                got[msg[0]] = msg
        except EOFError:
            pass
        r.close()
        assert "error" not in got, got["error"]
        outcomes["acked" if "ack" in got else "created" if "created" in got
                 else "killed while creating" if os.path.exists(os.path.join(topic_dir, name))
                 else "killed before creating"] += 1

        t = tracked(pyqmem.Topic(name, dir=topic_dir, partitions=CPARTS, segment_bytes=CSEG, retention_bytes=None))
        assert len(t.stats()["partitions"]) == CPARTS
        for k in range(CPARTS):
            t.send(b"after-%d" % k, partition=k)
        c = tracked(t.consumer(start="earliest"))
        vals = []
        for _ in range(CPARTS + 5):  # the CPARTS "after" records come last in their partitions
            if sum(v[1].startswith(b"after-") for v in vals) == CPARTS:
                break
            try:
                m = c.get(timeout=5)
            except pyqmem.Empty:
                break
            vals.append((m.partition, bytes(m.value)))
            del m
        try:
            m = c.get(timeout=0.1)
            vals.append((m.partition, bytes(m.value)))
            del m
        except pyqmem.Empty:
            pass
        after = sorted(v for v in vals if v[1].startswith(b"after-"))
        assert after == [(k, b"after-%d" % k) for k in range(CPARTS)], f"trial {i}: {vals} {info}"
        others = [v for v in vals if not v[1].startswith(b"after-")]
        assert others in ([], [(0, b"from-creator")]), f"trial {i}: {vals} {info}"
        if "ack" in got:
            assert (0, b"from-creator") in vals, f"trial {i}: acknowledged record lost {info}"
        c.close()
        t.close()
    assert sum(outcomes.values()) == trials
    print(f"\ncreator kills: {dict(outcomes)} {info}")


@pytest.mark.timeout(120)
def test_forked_writers_killed_mid_send_leave_no_torn_record_and_do_not_wedge_readers(
    topic_dir, tname, tracked, reaper
):
    # Under fork the child inherits the parent's open handle; its death must still be
    # seen as a dead writer (the parent, alive, holds the same file descriptions).
    ctx = mp_ctx("fork")
    rng = random.Random(SEED + 2)
    info = f"(PYQMEM_CRASH_SEED={SEED})"
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=2, segment_bytes=SEG, create=True, retention_bytes=None))
    t.send(msgs.encode(0, 0, 10), partition=0)  # the parent has used its handles
    t.send(msgs.encode(0, 1, 10), partition=1)
    rep = Reports()
    rep._ack(0, 0, 0, 0)
    rep._ack(0, 1, 1, 0)
    trials = max(5, TRIALS // 5)
    for trial in range(trials):
        wid = trial + 1
        r, w = ctx.Pipe(duplex=False)
        p = _start(reaper, ctx, topic_workers.forked_writer, (t, wid, w, 1_000_000, 30))
        w.close()
        label = f"w{wid}"
        rep.add(r, label)
        rep.pump(time.monotonic() + 20, until=lambda: label in rep.ready)
        assert label in rep.ready, f"{label} never became ready {rep.errors[-2:]}"
        rep.pump(time.monotonic() + rng.uniform(0, 0.03))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL, f"{label} exit code {p.exitcode} {rep.errors[-2:]}"
        rep.pump(time.monotonic() + 10, only=r)
        rep.history.maybe(wid, rep.max_seq[wid] + 1)
    assert rep.errors == [], rep.errors[:2]
    # the parent (still holding the inherited descriptions) keeps writing and reading
    ends = {k: t.send(msgs.sentinel(), partition=k).offset for k in range(2)}
    c = tracked(t.consumer())
    got, sentinels = [], set()
    limit = time.monotonic() + 30
    while len(sentinels) < 2 and time.monotonic() < limit:
        try:
            batch = c.get_many(512, timeout=1)
        except pyqmem.Empty:
            continue
        for m in batch:
            writer, seq, _t, _size = msgs.decode(m.data)
            if writer == msgs.SENTINEL_PRODUCER:
                sentinels.add(m.partition)
            else:
                got.append((m.partition, m.offset, writer, seq))
                rep.history.deliver(("parent", m.partition), writer, seq)
        del batch
    assert sentinels == {0, 1}, f"reader wedged before the end of partitions {sorted({0, 1} - sentinels)} {info}"
    _check_deliveries(rep, "parent", got, "forked")
    res = rep.history.check()
    assert res.ok(), f"{res.summary()} {info}"
    gaps = sum(ends.values()) - len(got)
    assert 0 <= gaps <= trials, f"{gaps} gaps for {trials} killed writers {info}"
