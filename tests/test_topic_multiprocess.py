"""pyqmem.Topic across processes: concurrent producers and independent subscribers,
persistence after every process exited, and retention overtaking a slow reader.

Children report through multiprocessing Pipes (never the topic under test); values are
helpers.msgs frames carrying (producer, seq) and a CRC.  PYQMEM_STRESS_SCALE scales N.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from multiprocessing.connection import wait as mp_wait

import pytest

import pyqmem
from helpers import msgs, topic_workers
from helpers.topic_fixtures import assert_nothing_more, drain, mp_ctx

SCALE = float(os.environ.get("PYQMEM_STRESS_SCALE", "1"))
N = max(100, int(SCALE * 2500))  # records per producer
BUDGET = 120 * max(1.0, SCALE)


def _start(reaper, ctx, target, args):
    p = ctx.Process(target=target, args=args, daemon=True)
    reaper.add(p)
    p.start()
    return p


def _pump(conns: dict, handle, until, deadline: float) -> None:
    """Read reports from `conns` (Connection -> label) into handle(label, msg) until
    until() is true, every pipe reached EOF, or the deadline passes."""
    live = dict(conns)
    while live and not until() and time.monotonic() < deadline:
        for r in mp_wait(list(live), timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
            try:
                msg = r.recv()
            except (EOFError, OSError):
                del live[r]
                continue
            handle(live[r], msg)


# ----------------------------------------------------------------------------
# 4 producers x 3 independent subscribers
# ----------------------------------------------------------------------------
@pytest.mark.timeout(BUDGET + 60)
def test_every_subscriber_gets_every_record_once_in_partition_order_and_reopen_sees_all(
    topic_dir, tname, tracked, reaper
):
    ctx = mp_ctx()
    n_prod, n_sub, parts = 4, 3, 4
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, segment_bytes=2**20, create=True))
    deadline = time.monotonic() + BUDGET

    conns = {}
    for s in range(n_sub):
        r, w = ctx.Pipe(duplex=False)
        _start(reaper, ctx, topic_workers.stress_subscriber,
               (topic_dir, tname, f"s{s}", parts, n_prod * N, w, BUDGET))
        w.close()
        conns[r] = f"s{s}"
    for p in range(n_prod):
        r, w = ctx.Pipe(duplex=False)
        _start(reaper, ctx, topic_workers.stress_producer,
               (topic_dir, tname, p, N, 7000 + p, parts, w, BUDGET))
        w.close()
        conns[r] = f"p{p}"

    acks = {}                          # (partition, offset) -> (producer, seq)
    ack_count = defaultdict(int)
    deliveries = defaultdict(list)     # sub -> [(partition, offset, producer, seq)]
    errors, torn, done = [], [], {}

    def handle(label, msg):
        kind = msg[0]
        if kind == "acks":
            for seq, part, off in msg[2]:
                assert (part, off) not in acks, f"two sends got {part}@{off}"
                acks[(part, off)] = (msg[1], seq)
                ack_count[msg[1]] += 1
        elif kind == "deliver":
            deliveries[msg[1]].extend(msg[2])
        elif kind == "torn":
            torn.append(msg[1:])
        elif kind == "error":
            errors.append(msg[1:])
        elif kind == "done":
            done[label] = msg[2]

    _pump(conns, handle, lambda: len(done) == n_prod + n_sub, deadline)
    assert errors == [], errors[:3]
    assert torn == [], torn[:5]
    assert len(done) == n_prod + n_sub, f"children still running at the deadline: done={done}"

    # producers: every send returned, offsets dense from 0 in every partition, all used
    assert dict(ack_count) == {p: N for p in range(n_prod)}
    by_part = defaultdict(list)
    for (part, off), (prod, seq) in acks.items():
        by_part[part].append((off, prod, seq))
    assert sorted(by_part) == list(range(parts)), "random keys did not reach every partition"
    ends = {}
    for part, items in by_part.items():
        items.sort()
        assert [o for o, _, _ in items] == list(range(len(items))), f"p{part}: offsets not dense from 0"
        ends[part] = len(items)
        last = {}
        for off, prod, seq in items:  # per-producer order within the partition
            assert seq > last.get(prod, -1), f"p{part}@{off}: producer {prod} seq {seq} after {last[prod]}"
            last[prod] = seq
    st = t.stats()["partitions"]
    assert {k: st[k]["end_offset"] for k in range(parts)} == ends

    # subscribers: each got every record exactly once, in offset order per partition
    for s in range(n_sub):
        got = deliveries[f"s{s}"]
        keys = [(part, off) for part, off, _, _ in got]
        assert len(keys) == len(set(keys)), f"s{s} got {len(keys) - len(set(keys))} records twice"
        missing = set(acks) - set(keys)
        assert not missing, f"s{s} missed {len(missing)} records, e.g. {sorted(missing)[:5]}"
        assert len(keys) == n_prod * N
        for part, off, prod, seq in got:
            assert acks[(part, off)] == (prod, seq), f"s{s}: {part}@{off} holds {(prod, seq)}"
        per_part = defaultdict(list)
        for part, off, _, _ in got:
            per_part[part].append(off)
        for part, offs in per_part.items():
            assert offs == list(range(ends[part])), f"s{s}: p{part} not delivered in offset order"

    # every process exited: a fresh handle sees every record
    t.close()
    t2 = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=parts, create=False))
    st2 = t2.stats()["partitions"]
    assert {k: (st2[k]["start_offset"], st2[k]["end_offset"]) for k in range(parts)} == {
        k: (0, ends[k]) for k in range(parts)
    }
    c = tracked(t2.consumer(start="earliest"))
    seen = {}
    for m in drain(c, n_prod * N, timeout=60):
        prod, seq, _t, _size = msgs.decode(m.data)
        seen[(m.partition, m.offset)] = (prod, seq)
    assert seen == acks
    assert_nothing_more(c)


# ----------------------------------------------------------------------------
# retention overtaking a slow reader
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_slow_reader_behind_retention_jumps_forward_and_counts_skipped_while_fast_reader_sees_all(
    topic_dir, tname, tracked, reaper
):
    ctx = mp_ctx()
    seg = 65536
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, segment_bytes=seg,
                             retention_bytes=4 * seg, create=True))
    slow = tracked(t.consumer(start="earliest"))
    fast = tracked(t.consumer(start="earliest"))
    batches, per_batch, size = 12, 60, 1000   # 720 records of ~1 KiB: ~11 segments
    parent, child = ctx.Pipe(duplex=True)
    _start(reaper, ctx, topic_workers.lockstep_producer,
           (topic_dir, tname, 1, child, batches, per_batch, size, 90))
    child.close()

    sent_offsets, fast_got, slow_got = [], [], []
    deadline = time.monotonic() + 90
    for i in range(batches):
        assert parent.poll(max(0.0, deadline - time.monotonic())), f"producer silent before batch {i}"
        kind, idx, offs = parent.recv()
        assert kind == "batch", (kind, idx, offs)
        sent_offsets.extend(offs)
        # the fast reader keeps up: it reads each batch before the next is written
        for m in drain(fast, per_batch, timeout=30):
            prod, seq, _t, _size = msgs.decode(m.data)
            fast_got.append((m.offset, seq))
        if i == 0:  # the slow reader reads a few records, then stalls
            for m in drain(slow, 5):
                slow_got.append(m.offset)
        parent.send("go")
    assert parent.poll(30)
    final = parent.recv()
    assert final[0] == "done", final

    total = batches * per_batch
    assert sent_offsets == list(range(total))
    assert fast_got == [(o, o) for o in range(total)], "fast reader missed or reordered records"
    assert fast.skipped() == {0: 0}

    t.retain()
    st = t.stats()["partitions"][0]
    start, end = st["start_offset"], st["end_offset"]
    assert end == total
    assert start > 5, f"retention removed nothing the slow reader needed (start_offset {start})"
    assert st["segments"] <= 4

    # the slow reader resumes: it jumps to the log start and reports what it lost
    rest = drain(slow, end - start, timeout=30)
    slow_got.extend(m.offset for m in rest)
    for m in rest:
        prod, seq, _t, _size = msgs.decode(m.data)
        assert seq == m.offset
    del rest
    assert_nothing_more(slow)
    assert slow_got == list(range(5)) + list(range(start, end))
    assert slow.skipped() == {0: start - 5}
    assert len(slow_got) + slow.skipped()[0] == total
    assert slow.lag() == {0: 0}


@pytest.mark.timeout(120)
def test_retention_skips_are_counted_per_partition(make_topic):
    seg = 65536
    t = make_topic(partitions=2, segment_bytes=seg, retention_bytes=2 * seg)
    c = t.consumer(start="earliest")
    for i in range(300):
        t.send(msgs.encode(0, i, 1500), partition=0)
    t.send(msgs.encode(1, 0, 10), partition=1)
    t.retain()
    s0 = t.stats()["partitions"][0]["start_offset"]
    assert s0 > 0 and t.stats()["partitions"][1]["start_offset"] == 0
    got = drain(c, 300 - s0 + 1)
    assert sorted((m.partition, m.offset) for m in got)[0] == (0, s0)
    del got
    assert c.skipped() == {0: s0, 1: 0}
    c.close()


@pytest.mark.timeout(120)
def test_zero_copy_data_survives_retention_deleting_its_segment(topic_dir, tname):
    # in a child interpreter: if the mapping were unmapped under the view, only it dies
    code = (
        "import sys; from helpers import topic_workers as w; "
        "w.zero_copy_after_retention(sys.argv[1], sys.argv[2])"
    )
    out = subprocess.run([sys.executable, "-c", code, topic_dir, tname],
                         capture_output=True, text=True, timeout=90, cwd=topic_dir)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-3000:])


# ----------------------------------------------------------------------------
# processes racing to create and grow one topic
# ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("counts", [(4,) * 6, (2, 3, 4, 5, 6, 2)], ids=["same-count", "growing"])
def test_processes_racing_to_create_or_grow_a_topic_end_with_one_topic_holding_every_record(
    topic_dir, tname, tracked, reaper, counts
):
    ctx = mp_ctx()
    n = 50
    barrier = ctx.Barrier(len(counts))
    conns = {}
    for who, parts in enumerate(counts):
        r, w = ctx.Pipe(duplex=False)
        _start(reaper, ctx, topic_workers.racing_opener, (topic_dir, tname, parts, who, barrier, n, w))
        w.close()
        conns[r] = who
    acks, errors, seen, refused = {}, [], {}, {}

    def handle(label, msg):
        if msg[0] == "valueerror":
            refused[label] = msg[2]
        elif msg[0] == "acks":
            for seq, part, off in msg[2]:
                assert (part, off) not in acks, f"{part}@{off} acknowledged twice"
                acks[(part, off)] = (msg[1], seq)
        elif msg[0] == "error":
            errors.append(msg[1:])
        elif msg[0] == "done":
            seen[label] = msg[2]

    _pump(conns, handle, lambda: False, time.monotonic() + 90)
    assert errors == [], errors[:2]
    final = max(counts)
    # only an opener asking for fewer partitions than the topic has by then may be refused
    assert all(counts[who] < final for who in refused), refused
    assert len(seen) + len(refused) == len(counts)
    for who, parts in seen.items():
        assert seen[who] >= counts[who], f"opener {who} asked for {counts[who]} partitions, got {seen[who]}"
    assert set(os.listdir(os.path.join(topic_dir, tname))) >= {"topic.json"} | {f"p{k}" for k in range(final)}
    assert not os.path.exists(os.path.join(topic_dir, tname, f"p{final}"))
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=final, create=False))
    st = t.stats()["partitions"]
    assert len(st) == final
    c = tracked(t.consumer())
    got = {}
    for m in drain(c, len(seen) * n, timeout=30):
        prod, seq, _t, _size = msgs.decode(m.data)
        got[(m.partition, m.offset)] = (prod, seq)
    assert got == acks
    assert_nothing_more(c)
