"""Topic benchmarks: pyqmem.Topic between real processes, beside
multiprocessing.Queue and memcpy measured in the same run.

Scenarios (1 producer process; subscribers are separate processes with
group=None; 64 B values, durability "os" on /dev/shm unless said):

  t1  single send -> single get             records/s, ratio to mp.Queue put/get
  t2  send_many(64) -> get_many(64)         records/s
  t3  send_many(64) with 1 and with 3 subscribers: producer records/s and its
      CPU time per record (the wall rate also counts the cores the subscribers take)
  t4  1 MiB values read zero-copy (msg.data copied once into a buffer), MB/s
      beside memcpy of the same bytes: replay with warm and cold mappings, with
      and without CRC checks, and a live producer -> subscriber pipeline
  t5  durability="fsync" on disk (a folder under /tmp unless --fsync-dir):
      4 sender processes, records/s and records per fdatasync
  g1  consumer group: send_many(64) -> one group member (at-least-once,
      get_many(64) + ack_many of every batch) beside a plain subscriber
      (get_many(64)) in the same run; acked records/s and the ratio

Every row checks the record count (and for t1/t2 the content of every 256th
record), and reports the median of --repeats runs.  The t1/t2 subscribers
take ``msg.data`` (the zero-copy view of the value) of every record, as a
consumer that reads its messages does: Message makes its fields on first
use, so a bench that never touched them would flatter the topic beside
mp.Queue, whose get() always hands over the value.  Usage:
    python bench/topic_compare.py [--quick] [--only t1,t4] [--json out.json]
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time

import pyqmem

SMALL = 64
BATCH = 64
MIB = 1 << 20


def _topic(spec, **kw):
    return pyqmem.Topic(spec["name"], dir=spec["dir"], create=False, **kw)


# ---------------------------------------------------------------- children
def producer(spec, n, mode, ready, go, out):
    t = _topic(spec)
    value = b"p" * SMALL if mode != "large" else b"L" * MIB
    values = [bytes([i & 0xFF]) * SMALL for i in range(256)]
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if mode == "single":
        send = t.send
        for i in range(n):
            send(values[i & 255])
    elif mode == "batch":
        batch = values[:BATCH]
        for _ in range(n // BATCH):
            t.send_many(batch)
    elif mode == "large":
        for _ in range(n):
            t.send(value)
    out.put(("producer", n, time.perf_counter() - t0, time.process_time() - cpu0))
    t.close()


def subscriber(spec, n, mode, ready, out):
    t = _topic(spec)
    c = t.consumer(start="earliest")
    buf = bytearray(MIB)
    ready.wait()
    got = bad = 0
    t0 = None
    if mode == "batch":
        while got < n:
            msgs = c.get_many(BATCH, timeout=30)
            if t0 is None:
                t0 = time.perf_counter()
            for m in msgs:
                data = m.data  # every record's value is looked at
                if not (got & 255) and bytes(data) != bytes([got % BATCH]) * SMALL:
                    bad += 1  # the producer sends values[:BATCH] over and over
                got += 1
    elif mode == "large":
        while got < n:
            m = c.get(timeout=30)
            if t0 is None:
                t0 = time.perf_counter()
            buf[:] = m.data  # one memcpy out of the mapping
            got += 1
    else:
        while got < n:
            m = c.get(timeout=30)
            if t0 is None:
                t0 = time.perf_counter()
            data = m.data  # every record's value is looked at
            if not (got & 255) and bytes(data) != bytes([got & 0xFF]) * SMALL:
                bad += 1
            got += 1
    out.put(("subscriber", got, time.perf_counter() - t0, bad))
    c.close()
    t.close()


def group_member(spec, n, ready, out):
    """One member of a fresh consumer group: get_many(64), look at every
    record's data, ack the batch with ack_many."""
    t = _topic(spec)
    c = t.consumer(group="bench")
    ready.wait()
    got = bad = stale = 0
    t0 = None
    while got < n:
        msgs = c.get_many(BATCH, timeout=30)
        if t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            data = m.data
            if not (got & 255) and bytes(data) != bytes([got % BATCH]) * SMALL:
                bad += 1
            got += 1
        stale += c.ack_many(msgs)
    elapsed = time.perf_counter() - t0
    committed = sum(v["committed"] for v in c.stats().values())
    out.put(("group", got, elapsed, bad + stale + (committed != n)))
    c.close()
    t.close()


def fsync_sender(spec, seconds, go, out):
    t = _topic(spec)
    go.wait()
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        t.send(b"d" * SMALL)
        n += 1
    out.put(n)
    t.close()


def mp_pair(n, out_q, ready, go):
    """multiprocessing.Queue single put/get of 64 B, for the ratio."""
    q = mp.Queue(maxsize=4096)

    def consume(q, n, res):
        t0 = None
        for i in range(n):
            q.get()
            if t0 is None:
                t0 = time.perf_counter()
        res.put(n / (time.perf_counter() - t0))

    res = mp.Queue()
    c = mp.Process(target=consume, args=(q, n, res))
    c.start()
    v = b"m" * SMALL
    for _ in range(n):
        q.put(v)
    rate = res.get(timeout=120)
    c.join()
    return rate


# ---------------------------------------------------------------- runner
class Bench:
    def __init__(self, args):
        self.args = args
        self.ctx = mp.get_context("fork")
        self.root = tempfile.mkdtemp(prefix="qmbench-", dir="/dev/shm")
        os.chmod(self.root, 0o700)
        self.seq = 0
        self.rows = []

    def new_topic(self, dir=None, **kw):
        self.seq += 1
        spec = {"name": f"t{os.getpid()}-{self.seq}", "dir": dir or self.root}
        t = pyqmem.Topic(spec["name"], dir=spec["dir"], create=True, **kw)
        return spec, t

    def run_pair(self, n, mode, subscribers=1, **topic_kw):
        spec, t = self.new_topic(**topic_kw)
        out = self.ctx.Queue()
        ready = self.ctx.Barrier(subscribers + 1)
        go = self.ctx.Event()
        subs = [
            self.ctx.Process(target=subscriber, args=(spec, n, mode, ready, out))
            for _ in range(subscribers)
        ]
        for p in subs:
            p.start()
        prod = self.ctx.Process(target=producer, args=(spec, n, mode, ready, go, out))
        prod.start()
        go.set()
        results = [out.get(timeout=300) for _ in range(subscribers + 1)]
        for p in subs + [prod]:
            p.join(60)
        t.close()
        shutil.rmtree(os.path.join(spec["dir"], spec["name"]), ignore_errors=True)
        prod = next(r for r in results if r[0] == "producer")
        self.last_producer_cpu_ns = prod[3] / prod[1] * 1e9  # CPU ns per record
        subs_res = [r for r in results if r[0] == "subscriber"]
        for r in subs_res:
            if r[1] != n or r[3]:
                raise SystemExit(f"{mode}: subscriber got {r[1]} of {n}, {r[3]} bad")
        return prod[1] / prod[2], statistics.median(r[1] / r[2] for r in subs_res)

    def median(self, fn):
        vals = [fn() for _ in range(self.args.repeats)]
        return statistics.median(vals), vals

    def row(self, scen, what, value, unit, note=""):
        self.rows.append(
            {"scenario": scen, "what": what, "value": value, "unit": unit, "note": note}
        )
        print(f"{scen:3} {what:52} {value:>14,.0f} {unit:10} {note}", flush=True)

    def t1(self, n, n_mp):
        mp_rate, _ = self.median(lambda: mp_pair(n_mp, None, None, None))
        self.row("t1", "multiprocessing.Queue put/get 64 B", mp_rate, "msg/s")
        rate, _ = self.median(lambda: self.run_pair(n, "single")[1])
        self.row(
            "t1",
            "Topic send -> get 64 B (1 subscriber)",
            rate,
            "rec/s",
            f"= {rate / mp_rate:.1f}x mp.Queue (target >= 10x)",
        )

    def t2(self, n):
        rate, _ = self.median(lambda: self.run_pair(n, "batch")[1])
        self.row(
            "t2", "Topic send_many(64) -> get_many(64)", rate, "rec/s", "(target >= 2,000,000)"
        )

    def t3(self, n):
        """Wall rate is bounded by the cores (4 busy processes on this
        machine's count); the producer's own CPU time per record shows what
        subscribers cost it (readers write nothing the producer reads,
        except the sleepers flag of the wake line)."""

        def run(subs):
            rate = self.run_pair(n, "batch", subs)[0]
            return rate, self.last_producer_cpu_ns

        one = [run(1) for _ in range(self.args.repeats)]
        three = [run(3) for _ in range(self.args.repeats)]
        r1, r3 = (statistics.median(r for r, _ in x) for x in (one, three))
        c1, c3 = (statistics.median(c for _, c in x) for x in (one, three))
        self.row(
            "t3",
            "producer send_many, 1 subscriber",
            r1,
            "rec/s",
            f"producer CPU {c1:.0f} ns/record",
        )
        self.row(
            "t3",
            "producer send_many, 3 subscribers",
            r3,
            "rec/s",
            f"producer CPU {c3:.0f} ns/record: cost {100 * (c3 / c1 - 1):+.1f}% CPU, "
            f"{100 * (1 - r3 / r1):.1f}% wall on {os.cpu_count()} cores "
            "(target < 10%)",
        )

    def t4(self, n):
        """1 MiB values.  The reference is memcpy of the same bytes in the
        same pattern: 1 MiB at a time from a buffer larger than the caches
        into one 1 MiB buffer.  Reads: a subscriber takes msg.data (zero
        copy) and copies it out once, so both sides move every byte once.
        "cold": a new consumer maps each segment for the first time (the
        kernel maps every 4 KiB page into the process); "warm": the same
        consumer reads again with its mappings in place (a live consumer
        reading what it has mapped).  With and without the CRC pass."""
        total = min(n, 256)  # 256 MiB: 4 segments, over the caches
        spec, t = self.new_topic()
        value = os.urandom(MIB)
        for _ in range(total):
            t.send(value)
        src = bytearray(total * MIB)
        for i in range(total):
            src[i * MIB : (i + 1) * MIB] = value
        view, dst = memoryview(src), bytearray(MIB)

        def memcpy():
            t0 = time.perf_counter()
            for i in range(total):
                dst[:] = view[i * MIB : (i + 1) * MIB]
            return total * MIB / (time.perf_counter() - t0) / 1e6

        def read(c):
            c.seek(0, 0)
            t0 = time.perf_counter()
            for _ in range(total):
                dst[:] = c.get(timeout=10).data
            rate = total * MIB / (time.perf_counter() - t0) / 1e6
            if bytes(dst) != value:
                raise SystemExit("t4: wrong bytes read")
            return rate

        ref, _ = self.median(memcpy)
        self.row("t4", f"memcpy {total} x 1 MiB from a {total} MiB buffer", ref, "MB/s")
        for crc in (True, False):

            def cold():
                with t.consumer(check_crcs=crc) as c:
                    return read(c)

            with t.consumer(check_crcs=crc) as c:
                read(c)  # maps every segment once
                warm, _ = self.median(lambda: read(c))
            cold_rate, _ = self.median(cold)
            what = "CRC checked" if crc else "check_crcs=False"
            self.row(
                "t4",
                f"replay 1 MiB zero-copy + 1 copy, warm, {what}",
                warm,
                "MB/s",
                f"= {warm / ref:.2f} of memcpy (target >= 0.80)",
            )
            self.row(
                "t4",
                f"replay 1 MiB zero-copy + 1 copy, cold, {what}",
                cold_rate,
                "MB/s",
                f"= {cold_rate / ref:.2f} of memcpy",
            )
        t.close()
        shutil.rmtree(os.path.join(spec["dir"], spec["name"]), ignore_errors=True)
        rate, _ = self.median(lambda: self.run_pair(n, "large")[1])
        mbs = rate * MIB / 1e6
        self.row(
            "t4",
            "live: producer process -> subscriber process, 1 MiB",
            mbs,
            "MB/s",
            f"= {mbs / ref:.2f} of memcpy (the producer writes fresh tmpfs pages)",
        )

    def t5(self, seconds):
        fdir = self.args.fsync_dir or tempfile.mkdtemp(prefix="qmbench-fsync-", dir="/tmp")
        os.chmod(fdir, 0o700)
        try:
            spec, t = self.new_topic(dir=fdir, durability="fsync")
            out = self.ctx.Queue()
            go = self.ctx.Event()
            ps = [
                self.ctx.Process(target=fsync_sender, args=(spec, seconds, go, out))
                for _ in range(4)
            ]
            for p in ps:
                p.start()
            time.sleep(0.2)
            go.set()
            total = sum(out.get(timeout=120) for _ in ps)
            for p in ps:
                p.join(60)
            st = t.stats()["partitions"][0]
            t.close()
            syncs = st.get("syncs") or 0
            appends = st.get("synced_appends") or total
            self.row(
                "t5",
                f"fsync on disk ({fdir}), 4 senders",
                total / seconds,
                "rec/s",
                f"{appends / syncs:.1f} records per fdatasync" if syncs else "",
            )
        finally:
            if not self.args.fsync_dir:
                shutil.rmtree(fdir, ignore_errors=True)

    def g1(self, n):
        """A producer, a plain subscriber and a group member, each its own
        process, in the same run: the member's acked rate beside the plain
        subscriber's read rate (both look at every record's data)."""

        def run():
            spec, t = self.new_topic()
            out = self.ctx.Queue()
            ready = self.ctx.Barrier(3)
            go = self.ctx.Event()
            procs = [
                self.ctx.Process(target=subscriber, args=(spec, n, "batch", ready, out)),
                self.ctx.Process(target=group_member, args=(spec, n, ready, out)),
                self.ctx.Process(target=producer, args=(spec, n, "batch", ready, go, out)),
            ]
            for p in procs:
                p.start()
            go.set()
            results = {r[0]: r for r in (out.get(timeout=300) for _ in procs)}
            for p in procs:
                p.join(60)
            t.close()
            shutil.rmtree(os.path.join(spec["dir"], spec["name"]), ignore_errors=True)
            for who in ("subscriber", "group"):
                r = results[who]
                if r[1] != n or r[3]:
                    raise SystemExit(f"g1: {who} got {r[1]} of {n}, {r[3]} bad/stale/uncommitted")
            return results["subscriber"][1] / results["subscriber"][2], results["group"][
                1
            ] / results["group"][2]

        runs = [run() for _ in range(self.args.repeats)]
        plain = statistics.median(p for p, _ in runs)
        group = statistics.median(g for _, g in runs)
        ratio = statistics.median(p / g for p, g in runs)
        self.row("g1", "plain subscriber get_many(64), same run", plain, "rec/s")
        self.row(
            "g1",
            "group member get_many(64) + ack_many, at-least-once",
            group,
            "rec/s",
            f"(target >= 500,000); plain / group = {ratio:.2f} (target < 2)",
        )
        # the consumers' own cost, without the producer setting the pace:
        # both drain the same stored records, one after the other
        spec, t = self.new_topic(segment_bytes=256 * MIB)
        batch = [bytes([i]) * SMALL for i in range(BATCH)]
        for _ in range(n // BATCH):
            t.send_many(batch)
        seq = [0]

        def drain(group):
            seq[0] += 1
            c = t.consumer(group=f"replay{seq[0]}" if group else None)
            got = 0
            t0 = time.perf_counter()
            while got < n:
                msgs = c.get_many(BATCH, timeout=10)
                for m in msgs:
                    m.data  # noqa: B018  (touch the zero-copy view)
                if group and c.ack_many(msgs):
                    raise SystemExit("g1: stale acks in replay")
                got += len(msgs)
            rate = n / (time.perf_counter() - t0)
            c.close()
            return rate

        pairs = [(drain(False), drain(True)) for _ in range(self.args.repeats)]
        t.close()
        shutil.rmtree(os.path.join(spec["dir"], spec["name"]), ignore_errors=True)
        plain = statistics.median(p for p, _ in pairs)
        group = statistics.median(g for _, g in pairs)
        ratio = statistics.median(p / g for p, g in pairs)
        self.row("g1", "replay: plain subscriber drains get_many(64)", plain, "rec/s")
        self.row(
            "g1",
            "replay: group member drains get_many(64) + ack_many",
            group,
            "rec/s",
            f"plain / group = {ratio:.2f}: the group bookkeeping alone",
        )

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="t1,t2,t3,t4,t5,g1")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json")
    ap.add_argument("--fsync-dir")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    scale = 1 if args.quick else 4
    b = Bench(args)
    print(
        f"pyqmem topic benchmarks: {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"median of {args.repeats}",
        flush=True,
    )
    try:
        only = set(args.only.split(","))
        if "t1" in only:  # enough records that one run lasts ~0.1 s or more
            b.t1(250_000 * scale, 12_500 * scale)
        if "t2" in only:
            b.t2(BATCH * 10_000 * scale)
        if "t3" in only:
            b.t3(BATCH * 5_000 * scale)
        if "t4" in only:
            b.t4(500 * scale)
        if "t5" in only:
            b.t5(1.0 if args.quick else 2.0)
        if "g1" in only:
            b.g1(BATCH * 10_000 * scale)
    finally:
        b.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b.rows, f, indent=1)


if __name__ == "__main__":
    main()
