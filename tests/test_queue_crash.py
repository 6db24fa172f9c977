"""Crash tests (reliability.md rows A1, A3/F1): SIGKILL producers and consumers at random
points while others keep working; a history checker decides.

Producers report every sequence number whose put returned through a multiprocessing Pipe
(never the queue under test); consumers report what they received; messages carry their
own CRC.  Long-lived survivors and consumer span all trials; each victim is a fresh process.
PYQMEM_CRASH_TRIALS (default 200) sets the number of kills per test.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import statistics
import time

import pytest

from helpers import workers
from helpers.collector import Collector
from helpers.history import History

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


def _describe(recoveries):
    if not recoveries:
        return "no trials"
    s = sorted(recoveries)
    return (f"n={len(s)} median={statistics.median(s) * 1e3:.1f} ms "
            f"p99={s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3:.1f} ms max={s[-1] * 1e3:.1f} ms")


@pytest.mark.timeout(BUDGET)
def test_producer_sigkill_at_random_points_never_tears_loses_duplicates_or_wedges(qname, make_queue, reaper):
    ctx = _ctx()
    make_queue(capacity=2**20, serializer=None, create=True)
    hist = History()
    col = Collector(hist)
    col.start()
    rig = Rig(ctx, reaper, col)
    rng = random.Random(20240601)
    prod_stop, cons_stop = ctx.Event(), ctx.Event()
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
    finally:
        prod_stop.set()
        cons_stop.set()
        col.stop()

    _assert_clean(col, "end")
    with col.lock:
        res = hist.check()
    assert res.ok(), res.summary()
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
    prod_stop, cons_stop = ctx.Event(), ctx.Event()
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
        end = time.monotonic() + 30
        while q.qsize() and time.monotonic() < end:
            time.sleep(0.01)
        if q.qsize():
            with col.lock:
                summary = hist.check().summary()
            pytest.fail(f"{q.qsize()} messages stuck in the queue 30 s after the producer stopped; stats "
                        f"{q.stats()}; history {summary}; " + _dump_stacks([consumer], col))
        cons_stop.set()
        consumer.join(30)
        assert consumer.exitcode == 0
        assert cons_eof.wait(10)
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
    assert victim_got > 0
    assert max(recoveries) <= RECOVERY_LIMIT, f"recovery after consumer kill: {_describe(recoveries)}"
    s = q.stats()
    assert s["depth"] == 0
    print(f"\nconsumer-kill trials: {TRIALS}, lost in flight: {len(res.lost)}, victims received {victim_got}, "
          f"recovery {_describe(recoveries)}")
