"""Kill everything, restart, repeat (reliability-matrix.md rows A9 and A12).

Each iteration starts, as separate processes, a queue producer, a queue consumer, a topic
sender and a consumer-group member; lets them run for a random few milliseconds; then
SIGKILLs all of them at once (a random moment of their work) and restarts "cold": this
process attaches to the queue, the topic and the group again, takes what the queue holds,
and checks every object is usable and holds no stale state (no live member left behind,
a put/get round trip, a send read back).  After the loop the checks that need the whole
history:

- Queue: every message whose put returned was delivered (to a child or to the restart),
  except at most one per killed consumer (the message it had taken when it died; the
  Queue is at-most-once for a consumer that dies holding one); none twice, none torn,
  none that was never put, FIFO per producer (tests/helpers/history.py).
- Topic: every record whose send returned is in the log, once, intact.
- Group: every record whose send returned was delivered to the group (a child member or
  the final drain) or dead-lettered (members died holding it max_deliveries times: a
  member is often killed inside its first get, holding the oldest redelivered record),
  nothing unexpected; when the drain ends nothing is pending or lagging.

PYQMEM_RESTART_ITERATIONS (default 200) and PYQMEM_RESTART_SECONDS (default 20) bound the
loop (whichever comes first); PYQMEM_RESTART_SEED fixes the randomness.
"""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

import pyqmem
from helpers import live_workers as lw
from helpers.history import History

ITERATIONS = int(os.environ.get("PYQMEM_RESTART_ITERATIONS", "200"))
SECONDS = float(os.environ.get("PYQMEM_RESTART_SECONDS", "20"))
SEED = int(os.environ.get("PYQMEM_RESTART_SEED", str(time.time_ns() % 2**31)))
INFO = f"(PYQMEM_RESTART_SEED={SEED})"
MIN_ITERATIONS = 20      # fewer within the time bound means the machine is too slow to judge


@pytest.mark.timeout(SECONDS + 120)
def test_every_process_killed_and_restarted_over_and_over_loses_nothing_committed(
    qname, topic_dir, tname
):
    rng = random.Random(SEED)
    group = "g"
    q0 = pyqmem.Queue(qname, capacity=1 << 20, serializer=None, create=True)
    q0.close()
    t0 = pyqmem.Topic(tname, dir=topic_dir, partitions=2, segment_bytes=1 << 16, create=True, retention_bytes=None)
    t0.consumer(group=group, start="earliest").close()
    t0.close()

    qh = History()
    sent = {}               # (it, seq) -> (partition, offset), send returned
    gdelivered = set()      # (it, seq) delivered to the group
    gdeliveries = 0
    torn = []
    consumer_kills = 0
    restart_s = []
    it = 0
    t_start = time.monotonic()
    while it < ITERATIONS and time.monotonic() - t_start < SECONDS:
        rep = lw.Reports()
        pids = []
        try:
            fd = rep.writer()
            pids.append(lw.fork_child(lw.r_qprod, qname, it, fd, 10.0))
            pids.append(lw.fork_child(lw.r_qcons, qname, it, fd, 10.0))
            pids.append(lw.fork_child(lw.r_tsend, topic_dir, tname, it, fd, 10.0))
            pids.append(lw.fork_child(lw.r_member, topic_dir, tname, group, it, fd, 10.0))
            run_end = time.monotonic() + rng.uniform(0.002, 0.03)
            while time.monotonic() < run_end:     # keep the pipe from filling up
                rep.pump(max(0.0, run_end - time.monotonic()))
            for p in pids:                       # all of them, as fast as we can
                os.kill(p, signal.SIGKILL)
            for p in pids:
                assert lw.reap(p, 10) is not None, f"child {p} did not die"
            consumer_kills += 1
            rep.pump(0)
            rep.pump(0)
        finally:
            for p in pids:
                lw.kill_and_reap(p)
            rep.close()
        last_put = -1
        for line in rep.lines:
            kind, args = line[0], [int(x) for x in line[1:]]
            if kind == "qa":
                qh.ack(f"q{args[0]}", args[1])
                last_put = args[1]
            elif kind == "qd":
                qh.deliver(f"c{args[0]}", f"q{args[1]}", args[2])
                if not args[3]:
                    torn.append(("queue", args[1], args[2]))
            elif kind == "ta":
                sent[(args[0], args[1])] = (args[2], args[3])
            elif kind == "gd":
                gdelivered.add((args[1], args[2]))
                gdeliveries += 1
        qh.maybe(f"q{it}", last_put + 1)        # the put it may have been inside

        # ---- cold restart ------------------------------------------------------
        tr = time.monotonic()
        q = pyqmem.Queue(qname, serializer=None, create=False)
        try:
            st = q.stats()
            assert st["members"] == 1, f"iteration {it}: stale members after restart: {st} {INFO}"
            while True:
                try:
                    m = q.get_nowait()
                except pyqmem.Empty:
                    break
                p, s, pad = m.split(b":")
                qh.deliver("restart", f"q{int(p)}", int(s))
                if pad != b"p" * (int(s) % 300):
                    torn.append(("queue", int(p), int(s)))
            q.put(b"marker")
            assert q.get(timeout=5) == b"marker", f"iteration {it}: queue round trip {INFO}"
            assert q.qsize() == 0
        finally:
            q.close()
        t = pyqmem.Topic(tname, dir=topic_dir, create=False)
        try:
            c = t.consumer(group=group)          # the group opens; nothing stale blocks it
            c.close()
            md = t.send(b"restart:%d" % it)
            with t.consumer(start={md.partition: md.offset}, partitions=[md.partition]) as r:
                m = r.get(timeout=5)
                assert bytes(m.data) == b"restart:%d" % it, f"iteration {it}: topic round trip {INFO}"
                del m
        finally:
            t.close()
        restart_s.append(time.monotonic() - tr)
        it += 1

    elapsed = time.monotonic() - t_start

    # ---- the whole history ---------------------------------------------------------
    res = qh.check()
    # topic: every acknowledged send is in the log, once, intact
    t = pyqmem.Topic(tname, dir=topic_dir, create=False)
    try:
        in_log = {}
        with t.consumer(start="earliest") as r:
            while True:
                try:
                    m = r.get(timeout=0.2)
                except pyqmem.Empty:
                    break
                v = bytes(m.data)
                if not v.startswith(b"restart:"):
                    p, s = v.split(b":")
                    key = (int(p), int(s))
                    assert key not in in_log, f"{key} twice in the log {INFO}"
                    in_log[key] = (m.partition, m.offset)
                del m
        missing = [k for k, where in sent.items() if in_log.get(k) != where]
        # group: drain what is left; every acknowledged send was delivered to the group
        final = 0
        with t.consumer(group=group) as c:
            while True:
                try:
                    m = c.get(timeout=0.5)
                except pyqmem.Empty:
                    break
                v = bytes(m.data)
                if not v.startswith(b"restart:"):
                    p, s = v.split(b":")
                    gdelivered.add((int(p), int(s)))
                final += 1
                m.ack()
                del m
        dlq = {}
        if pyqmem.Topic.exists(tname + ".dlq", dir=topic_dir):
            with pyqmem.Topic(tname + ".dlq", dir=topic_dir, create=False) as dt:
                with dt.consumer(start="earliest") as r:
                    while True:
                        try:
                            m = r.get(timeout=0.2)
                        except pyqmem.Empty:
                            break
                        p, s = bytes(m.data).split(b":")
                        dlq[(int(p), int(s))] = dict(m.headers)
                        del m
        # a record whose deliveries all died (members killed holding it) is dead-lettered
        # after max_deliveries: accounted for, not lost
        glost = [k for k in sent if k not in gdelivered and k not in dlq]
        gunexpected = [k for k in gdelivered if k not in in_log]
        gstats = t.stats()
        pending = {p: (g["pending"], g["lag"]) for p, g in gstats["groups"][group].items()}
    finally:
        t.close()

    print(f"\nA9/A12: {it} iterations in {elapsed:.1f} s (each: 4 processes started, all "
          f"SIGKILLed, cold restart); restart+checks {min(restart_s) * 1e3:.1f}/"
          f"{sorted(restart_s)[len(restart_s) // 2] * 1e3:.1f}/{max(restart_s) * 1e3:.1f} ms "
          f"min/median/max; queue {res.summary()}; topic {len(sent)} acked sends, "
          f"{len(missing)} missing; group {len(gdelivered)} delivered ({gdeliveries} deliveries "
          f"to killed members, {final} in the final drain, {len(dlq)} dead-lettered after "
          f"members died holding them max_deliveries times), {len(glost)} lost, "
          f"{len(gunexpected)} unexpected {INFO}")
    assert it >= min(MIN_ITERATIONS, ITERATIONS), f"only {it} iterations in {elapsed:.1f} s {INFO}"
    assert torn == [], torn
    assert res.ok(max_lost=consumer_kills), res.summary()
    assert missing == [], f"acknowledged sends not in the log: {missing[:10]} {INFO}"
    assert glost == [] and gunexpected == [], (
        [(k, sent[k]) for k in glost[:10]], gunexpected[:10], pending, INFO)
    assert all(p == (0, 0) for p in pending.values()), f"group not drained: {pending} {INFO}"
