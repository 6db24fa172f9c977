"""Crash tests (reliability-matrix.md rows A1, A3/F1, I-level counts): SIGKILL producers and consumers at
random points while others keep working; a history checker (helpers/history.py) decides.

Producers report every sequence number whose put returned through a multiprocessing Pipe
(never the queue under test); consumers report what they received; messages carry their own
CRC.  Survivors and the consumer live across all trials; each victim is a fresh process
(forkserver, so a trial costs milliseconds).  PYQMEM_CRASH_TRIALS (default 200) sets the number
of kills of the first two tests (the bounded-queue test kills 3x as many, quickly).

Victims never touch a multiprocessing Event/Lock shared with survivors: a process killed while
holding one wedges every other user of it (the very failure pyqmem must not have).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import statistics
import time

import pytest

import pyqmem
from helpers import msgs, workers
from helpers.collector import Collector
from helpers.history import History
from helpers.stopflag import StopFlag

TRIALS = int(os.environ.get("PYQMEM_CRASH_TRIALS", "200"))
RECOVERY_LIMIT = 1.0      # consumers must receive post-kill messages within 1 s of a kill
WAIT_LIMIT = 5.0          # how long we look before calling the queue wedged
BUDGET = 150 + TRIALS * 0.5


def _ctx():
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["helpers.workers", "helpers.msgs", "pyqmem"])
    return ctx


class Rig:
    """Starts children with a report pipe wired into one Collector."""

    def __init__(self, ctx, reaper, collector):
        self.ctx, self.reaper, self.col = ctx, reaper, collector

    def start(self, label, target, *args):
        r, w = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=target, args=tuple(w if a is _W else a for a in args), daemon=True)
        self.reaper.add(p)
        p.start()
        w.close()
        eof = self.col.add(r, label)
        return p, eof


_W = object()  # placeholder for "this child's report pipe"


def _assert_clean(col, where):
    torn, errors = col.snapshot_problems()
    assert torn == [], f"{where}: torn messages delivered: {torn[:5]}"
    assert errors == [], f"{where}: child errors: {errors[:3]}"


def _kill_and_reap(proc, eof):
    t_kill = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL, f"victim exit code {proc.exitcode} (died before the kill?)"
    assert eof.wait(10), "victim's report pipe never reached EOF"
    return t_kill


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def _dump_stacks(procs, col):
    """On a wedge: describe every child, and ask live ones for their Python stacks (to stderr)."""
    torn, errors = col.snapshot_problems()
    lines = [f"collector alive: {col.is_alive()}, child errors: {errors[:3]}, torn: {torn[:3]}"]
    for p in procs:
        if p.is_alive():
            state = _read(f"/proc/{p.pid}/stat").split(") ")[-1][:1]
            lines.append(f"pid {p.pid} alive, state {state}, wchan {_read(f'/proc/{p.pid}/wchan')}")
            try:
                os.kill(p.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
        else:
            lines.append(f"pid {p.pid} DEAD, exit code {p.exitcode}")
    time.sleep(0.5)
    return "; ".join(lines)


def _drain_and_check_size(q, col):
    """After every child has stopped: take what is left (into the history).  A killed process
    may leave the size count too LOW by one (documented: producers count after committing,
    consumers before taking) but never too high: the drained queue reports 0, and after three
    puts it reports at most 3 (a phantom would shrink a maxsize queue for good)."""
    leftovers = []
    for _ in range(100_000):
        try:
            b = q.get_nowait()
        except pyqmem.Empty:
            break
        leftovers.append(msgs.decode(b)[:2])
    with col.lock:
        col.history.deliver_many("parent-drain", leftovers)
    phantom = q.qsize()
    q.put_many([b"m1", b"m2", b"m3"])
    after = q.qsize()
    got = [q.get_nowait() for _ in range(3)]
    assert got == [b"m1", b"m2", b"m3"]
    assert phantom == 0 and 0 <= after <= 3, (
        f"qsize() invents messages after the crashes: {phantom} on an empty queue, {after} after "
        f"3 puts; stats {q.stats()}")
    return leftovers


def _describe(recoveries):
    if not recoveries:
        return "no trials"
    s = sorted(recoveries)
    return (f"n={len(s)} median={statistics.median(s) * 1e3:.1f} ms "
            f"p99={s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3:.1f} ms max={s[-1] * 1e3:.1f} ms")


@pytest.mark.timeout(BUDGET)
def test_producer_sigkill_at_random_points_never_tears_loses_duplicates_or_wedges(qname, make_queue, reaper):
    ctx = _ctx()
    q = make_queue(capacity=2**20, serializer=None, create=True)
    hist = History()
    col = Collector(hist)
    col.start()
    rig = Rig(ctx, reaper, col)
    rng = random.Random(20240601)
    prod_stop, cons_stop = StopFlag(ctx), StopFlag(ctx)
    try:
        consumer, cons_eof = rig.start("consumer", workers.report_consumer, qname, "c0", _W, cons_stop, 0.0, BUDGET)
        survivors = [0, 1, 2]
        surv = [rig.start(("producer", p), workers.report_producer, qname, p, _W, prod_stop,
                          0.001, 16 * 1024, 100 + p, BUDGET) for p in survivors]
        assert col.wait_until(lambda: all(col.max_acked(p) >= 0 for p in survivors), 30), "survivors never produced"

        recoveries = []
        victim_acked = 0
        for trial in range(TRIALS):
            vid = 1000 + trial
            victim, eof = rig.start(("victim", vid), workers.victim_producer, qname, vid, _W,
                                    64 * 1024, 5000 + trial, 30.0)
            assert col.wait_until(lambda: col.max_acked(vid) >= 0, 20), f"trial {trial}: victim never completed a put"
            if rng.random() < 0.8:
                time.sleep(rng.uniform(0, 0.02))
            t_kill = time.monotonic()
            col.watch(t_kill, survivors)
            _kill_and_reap(victim, eof)
            last = col.max_acked(vid)
            with col.lock:
                hist.maybe(vid, last + 1)  # the put in flight at the kill may or may not have landed
            victim_acked += last + 1
            if not col.wait_until(lambda: col.watch_hit() is not None, WAIT_LIMIT):
                pytest.fail(f"trial {trial}: no survivor message put after the kill was delivered within "
                            f"{WAIT_LIMIT} s: queue wedged (survivor Full timeouts: {dict(col.full)}); "
                            + _dump_stacks([consumer] + [p for p, _ in surv], col))
            recoveries.append(col.watch_hit()[0] - t_kill)
            _assert_clean(col, f"trial {trial}")

        prod_stop.set()
        for p, eof in surv:
            p.join(30)
            assert p.exitcode == 0
            assert eof.wait(10)
        assert col.wait_until(lambda: col.undelivered_acked() == 0, 30), (
            f"{col.undelivered_acked()} acknowledged messages still undelivered 30 s after producers stopped")
        cons_stop.set()
        consumer.join(30)
        assert consumer.exitcode == 0
        assert cons_eof.wait(10)
        leftovers = _drain_and_check_size(q, col)
    finally:
        prod_stop.set()
        cons_stop.set()
        col.stop()

    _assert_clean(col, "end")
    with col.lock:
        res = hist.check()
    assert res.ok(), res.summary()
    assert leftovers == [], f"the consumer stopped with messages it could not take: {leftovers[:5]}"
    assert victim_acked > 0, "no victim ever completed a put: the kills tested nothing"
    assert max(recoveries) <= RECOVERY_LIMIT, f"recovery after producer kill: {_describe(recoveries)}"
    print(f"\nproducer-kill trials: {TRIALS}, victim puts acked: {victim_acked}, "
          f"in-flight recovered: {len(res.recovered)}, recovery {_describe(recoveries)}")


@pytest.mark.timeout(BUDGET)
def test_consumer_sigkill_mid_get_loses_at_most_the_in_flight_message_and_never_duplicates(qname, make_queue, reaper):
    ctx = _ctx()
    q = make_queue(capacity=2**18, serializer=None, create=True)  # small: leaked space would wedge fast
    hist = History()
    col = Collector(hist)
    col.start()
    rig = Rig(ctx, reaper, col)
    rng = random.Random(20240602)
    prod_stop, cons_stop = StopFlag(ctx), StopFlag(ctx)
    kills = 0
    try:
        producer, prod_eof = rig.start(("producer", 0), workers.report_producer, qname, 0, _W, prod_stop,
                                       0.0, 60 * 1024, 7, BUDGET)
        consumer, cons_eof = rig.start("survivor", workers.report_consumer, qname, "survivor", _W, cons_stop,
                                       0.001, BUDGET)
        assert col.wait_until(lambda: col.delivered_by("survivor") > 0, 30), "survivor consumer never received"

        recoveries = []
        victim_got = 0
        for trial in range(TRIALS):
            cid = f"v{trial}"
            victim, eof = rig.start(("victim", cid), workers.victim_consumer, qname, cid, _W, 30.0)
            assert col.wait_until(lambda: col.delivered_by(cid) > 0, 20), f"trial {trial}: victim never received"
            if rng.random() < 0.8:
                time.sleep(rng.uniform(0, 0.02))
            t_kill = time.monotonic()
            col.watch(t_kill, [0])
            _kill_and_reap(victim, eof)
            kills += 1
            victim_got += col.delivered_by(cid)
            if not col.wait_until(lambda: col.watch_hit() is not None, WAIT_LIMIT):
                pytest.fail(f"trial {trial}: no message put after the kill was delivered within {WAIT_LIMIT} s: "
                            f"queue wedged (producer Full timeouts: {dict(col.full)}, depth {q.qsize()}, "
                            f"stats {q.stats()}); " + _dump_stacks([producer, consumer], col))
            recoveries.append(col.watch_hit()[0] - t_kill)
            _assert_clean(col, f"trial {trial}")

        prod_stop.set()
        producer.join(30)
        assert producer.exitcode == 0
        assert prod_eof.wait(10)
        end = time.monotonic() + 10
        while q.qsize() and time.monotonic() < end:  # let the survivor drain (qsize may be wrong: checked below)
            time.sleep(0.01)
        cons_stop.set()
        consumer.join(30)
        assert consumer.exitcode == 0
        assert cons_eof.wait(10)
        leftovers = _drain_and_check_size(q, col)
    finally:
        prod_stop.set()
        cons_stop.set()
        col.stop()

    _assert_clean(col, "end")
    with col.lock:
        res = hist.check()
    assert res.duplicated == [], res.summary()
    assert res.unexpected == [], res.summary()
    assert res.reordered == [], res.summary()
    assert len(res.lost) <= kills, f"{len(res.lost)} lost with {kills} consumers killed\n{res.summary()}"
    assert leftovers == [], f"the survivor stopped with messages it could not take: {leftovers[:5]}"
    assert victim_got > 0
    assert max(recoveries) <= RECOVERY_LIMIT, f"recovery after consumer kill: {_describe(recoveries)}"
    print(f"\nconsumer-kill trials: {TRIALS}, lost in flight: {len(res.lost)}, victims received {victim_got}, "
          f"recovery {_describe(recoveries)}")


@pytest.mark.timeout(BUDGET)
@pytest.mark.parametrize("victim", ["consumer", "producer"])
def test_sigkilled_processes_never_leave_a_bounded_queue_miscounted(qname, make_queue, reaper, victim):
    """Many quick kills of busy consumers (steady side: two producers) or of busy producers
    (steady side: two consumers) on a maxsize-bounded ring.  Afterwards the drained queue reports
    qsize() == 0 and still accepts at least maxsize messages: a killed process may leave the count
    one too low per kill in its few-instruction window (the queue then admits a little more, as
    documented), never too high, which would shrink a bounded queue for good.  qsize() never
    exceeds what was really put.  No steady process may fail and no message may be torn."""
    ctx = _ctx()
    maxsize = 64
    q = make_queue(capacity=2**18, maxsize=maxsize, serializer=None, create=True)
    col = Collector()
    col.start()
    rig = Rig(ctx, reaper, col)
    rng = random.Random(20240603)
    stop = StopFlag(ctx)
    kills = 3 * TRIALS
    try:
        if victim == "consumer":
            steady = [rig.start(("producer", i), workers.blast_producer, qname, i, _W, stop, BUDGET)
                      for i in range(2)]
        else:
            steady = [rig.start(("consumer", i), workers.blast_consumer, qname, f"c{i}", _W, stop, 0.0, BUDGET)
                      for i in range(2)]
        for k in range(kills):
            # victims get stop=None: they must never hold a lock shared with the survivors
            if victim == "producer":
                who = 1000 + k
                proc, eof = rig.start(("victim", k), workers.blast_producer, qname, who, _W, None, 30.0, True)
            else:
                who = f"v{k}"
                proc, eof = rig.start(("victim", k), workers.blast_consumer, qname, who, _W, None, 0.0, 30.0, True)
            col.wait_until(lambda: col.said_hello(who), 10)  # usually up within ms; kill anyway after
            time.sleep(rng.uniform(0, 0.004))
            _kill_and_reap(proc, eof)
            if k % 25 == 0:
                _assert_clean(col, f"after {k + 1} kills")
                assert all(p.is_alive() for p, _ in steady), _dump_stacks([p for p, _ in steady], col)
        stop.set()
        for p, eof in steady:
            p.join(30)
            assert p.exitcode == 0
            assert eof.wait(10)
    finally:
        stop.set()
        col.stop()
    _assert_clean(col, "end")
    for _ in range(10 * maxsize):
        try:
            msgs.decode(q.get_nowait())
        except pyqmem.Empty:
            break
    phantom = q.qsize()
    accepted = 0
    for _ in range(2 * maxsize):
        try:
            q.put_nowait(b"after")
        except pyqmem.Full:
            break
        accepted += 1
    final = q.qsize()
    assert phantom == 0 and maxsize <= accepted < 2 * maxsize and final <= accepted, (
        f"after {kills} {victim} kills the drained queue reports qsize()={phantom}, accepts {accepted} puts "
        f"for maxsize={maxsize}, then reports qsize()={final}; stats {q.stats()}")
