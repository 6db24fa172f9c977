#!/usr/bin/env python3
"""Comparative benchmark: pyqmem.Queue vs multiprocessing.Queue vs faster_fifo.Queue.

Every figure is measured between REAL processes: one producer process and one
consumer process, started with the multiprocessing start method "spawn" (the
default on macOS/Windows and the most conservative one: children inherit
nothing but what is pickled to them).  ``--start-method fork`` is available.

Scenarios (see bench/README.md for the details):
  a  64 B raw bytes, single put/get          pyqmem(raw), mp.Queue, faster-fifo
  b  64 B raw bytes, batches of 64           pyqmem put_many/get_many, faster-fifo;
                                             mp.Queue single-op as the baseline
  c  1 MiB raw bytes, single put/get         all three, in MB/s, beside memcpy
  d  pickled small tuple (int, str, float)   pyqmem(pickle), mp.Queue, faster-fifo
  e  idle consumer CPU                       a consumer blocked on an empty queue

Each row is the median of R timed repeats (default 5) after one untimed warm-up
repeat that checks every byte (CRC32 on both sides).  A timed repeat sends for
--duration seconds, then a sentinel; its time runs from the producer's start
(after a barrier) to the consumer's receipt of the sentinel, so it includes
draining the queue.  Producer and consumer each count messages; the parent
refuses to report a speed when the counts differ or any check failed.

Usage:  python bench/compare.py [--quick] [--json PATH] [--only a,c] ...
Only the standard library and pyqmem are required.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import multiprocessing as mp
import os
import platform
import queue as std_queue
import random
import resource
import signal
import statistics
import struct
import sys
import time
import traceback
import zlib

# --------------------------------------------------------------------------
# constants

MB = 1e6  # MB/s means 10**6 bytes per second
CAPACITY = 16 * 2**20  # bytes of queue storage for every implementation
SMALL = 64  # bytes, scenarios a and b
LARGE = 2**20  # bytes, scenario c
BATCH = 64  # messages per put_many/get_many, scenario b
SMALL_POOL = 256  # distinct 64 B messages cycled by the producer
LARGE_POOL = 8  # distinct 1 MiB messages cycled by the producer
STOP = b"STOP"  # raw sentinel: its length differs from every payload
TEXT = "the quick brown fox"  # str field of the pickled tuple
GET_TIMEOUT = 60.0  # a consumer waiting this long reports an error
BARRIER_TIMEOUT = 120.0

SCENARIOS = {
    "a": "64 B raw, single put/get",
    "b": "64 B raw, batches of 64",
    "c": "1 MiB raw, single put/get",
    "d": "pickled (int, str, float), single",
    "e": "idle consumer CPU (blocked get)",
}

perf = time.perf_counter  # CLOCK_MONOTONIC on Linux: comparable across processes


# --------------------------------------------------------------------------
# payloads (built identically in every process, so both sides know them)


def small_pool():
    out = []
    for i in range(SMALL_POOL):
        body = bytes((i * 7 + j) & 0xFF for j in range(SMALL - 8))
        out.append(struct.pack("<Q", i) + body)
    return out


def large_pool():
    out = []
    for i in range(LARGE_POOL):
        stamp = struct.pack("<QQ", i, 0x7071_6D65_6D00 + i)
        body = random.Random(i).randbytes(LARGE - 32)
        out.append(stamp + body + stamp)
    return out


# faster-fifo pickles by default; these make it move raw bytes like
# pyqmem(serializer=None).  Module-level so they pickle by reference (spawn).
def ff_raw_dumps(x):
    return x


def ff_raw_loads(buf):
    return bytes(buf)


# --------------------------------------------------------------------------
# endpoints: a picklable spec -> (queue object, close function) in a child


def open_endpoint(spec):
    kind = spec["kind"]
    if kind == "pyqmem":
        import pyqmem

        ser = None if spec["raw"] else "pickle"
        q = pyqmem.Queue(spec["name"], create=False, serializer=ser)
        return q, q.close
    return spec["obj"], (lambda: None)


def bind_ops(kind, q):
    """Bound put/get/put_many/get_many(BATCH) with the cheapest call path."""
    put, get = q.put, q.get
    if kind == "pyqmem":
        get_many = functools.partial(q.get_many, BATCH)
        put_many = q.put_many
    elif kind == "ff":
        get_many = functools.partial(q.get_many, max_messages_to_get=BATCH)
        put_many = q.put_many
    else:
        get_many = put_many = None
    return put, get, put_many, get_many


# --------------------------------------------------------------------------
# producer loops: return (messages sent, crc32 of their bytes or checksum)


def send_single(put, pool, deadline, verify):
    n = 0
    crc = 0
    step = len(pool)
    while True:
        for m in pool:
            put(m)
        n += step
        if verify:
            for m in pool:
                crc = zlib.crc32(m, crc)
        if perf() >= deadline:
            break
    put(STOP)
    return n, crc


def send_batches(put, put_many, batches, deadline, verify):
    n = 0
    crc = 0
    step = len(batches) * BATCH
    while True:
        for b in batches:
            put_many(b)
        n += step
        if verify:
            for b in batches:
                for m in b:
                    crc = zlib.crc32(m, crc)
        if perf() >= deadline:
            break
    put(STOP)
    return n, crc


def send_pickle(put, deadline):
    i = 0
    chunk = range(256)
    text = TEXT
    while True:
        for _ in chunk:
            put((i, text, i * 0.5))
            i += 1
        if perf() >= deadline:
            break
    put(None)
    return i, i * (i - 1) // 2


# --------------------------------------------------------------------------
# consumer loops: return (messages received, crc/checksum, errors, last)


def recv_small(get, pool, verify):
    n = bad = crc = 0
    mask = len(pool) - 1
    if verify:  # warm-up: every message compared and CRC'd
        while True:
            m = get()
            if len(m) != SMALL:
                break
            if m != pool[n & mask]:
                bad += 1
            crc = zlib.crc32(m, crc)
            n += 1
    else:  # timed: length of every message, content of every 256th
        p0 = pool[0]
        while True:
            m = get()
            if len(m) != SMALL:
                break
            if not (n & mask) and m != p0:
                bad += 1
            n += 1
    return n, crc, bad, m


def recv_large(get, pool, verify):
    n = bad = crc = 0
    mask = len(pool) - 1
    heads = [p[:16] for p in pool]
    while True:
        m = get()
        if len(m) != LARGE:
            break
        # every message: its 16-byte stamp at both ends (order + no truncation)
        h = heads[n & mask]
        if m[:16] != h or m[-16:] != h:
            bad += 1
        if verify:
            if m != pool[n & mask]:
                bad += 1
            crc = zlib.crc32(m, crc)
        n += 1
    return n, crc, bad, m


def recv_batches(get, get_many, pool, verify):
    n = bad = crc = 0
    mask = len(pool) - 1
    last = None
    while True:
        batch = get_many()
        k = len(batch)
        if k == 0:
            bad += 1
            continue
        if len(batch[-1]) != SMALL:  # sentinel is always the very last message
            last = batch[-1]
            batch = batch[:-1]
            k -= 1
        if k:
            if batch[0] != pool[n & mask]:
                bad += 1
            if sum(map(len, batch)) != k * SMALL:
                bad += 1
            if verify:
                for j, m in enumerate(batch):
                    if m != pool[(n + j) & mask]:
                        bad += 1
                    crc = zlib.crc32(m, crc)
            n += k
        if last is not None:
            break
    return n, crc, bad, last


def recv_pickle(get, verify):
    n = bad = s = 0
    text = TEXT
    while True:
        o = get()
        if o is None:
            break
        if o[0] != n:  # exact FIFO order, nothing lost or duplicated
            bad += 1
        if verify and (o[1] != text or o[2] != n * 0.5):
            bad += 1
        s += o[0]
        n += 1
    return n, s, bad, None


# --------------------------------------------------------------------------
# child entry points


def _report_error(resq, who):
    try:
        resq.put((who, "error", traceback.format_exc()))
    except Exception:
        pass


def producer_main(spec, scen, barrier, resq, reps, duration, warm):
    try:
        q, close = open_endpoint(spec)
        put, _get, put_many, _gm = bind_ops(spec["kind"], q)
        if scen in ("a", "c"):
            pool = small_pool() if scen == "a" else large_pool()
        elif scen == "b":
            pool = small_pool()
            batches = [pool[i : i + BATCH] for i in range(0, len(pool), BATCH)]
        for rep in range(-1, reps):
            verify = rep < 0
            dur = warm if verify else duration
            barrier.wait(BARRIER_TIMEOUT)
            t0 = perf()
            if scen in ("a", "c"):
                n, crc = send_single(put, pool, t0 + dur, verify)
            elif scen == "b":
                n, crc = send_batches(put, put_many, batches, t0 + dur, verify)
            else:
                n, crc = send_pickle(put, t0 + dur)
            resq.put(("P", rep, n, crc, t0))
        close()
    except BaseException:
        _report_error(resq, "P")


def consumer_main(spec, scen, barrier, resq, reps):
    try:
        q, close = open_endpoint(spec)
        kind = spec["kind"]
        # every implementation blocks with the same finite timeout, so a lost
        # message ends in an error report instead of a hang
        get = functools.partial(q.get, True, GET_TIMEOUT)
        if kind == "pyqmem":
            get_many = functools.partial(q.get_many, BATCH, True, GET_TIMEOUT)
        elif kind == "ff":
            get_many = functools.partial(q.get_many, True, GET_TIMEOUT, max_messages_to_get=BATCH)
        else:
            get_many = None
        pool = large_pool() if scen == "c" else small_pool()
        for rep in range(-1, reps):
            verify = rep < 0
            barrier.wait(BARRIER_TIMEOUT)
            if scen == "a":
                n, crc, bad, last = recv_small(get, pool, verify)
            elif scen == "c":
                n, crc, bad, last = recv_large(get, pool, verify)
            elif scen == "b":
                n, crc, bad, last = recv_batches(get, get_many, pool, verify)
            else:
                n, crc, bad, last = recv_pickle(get, verify)
            t1 = perf()
            if scen != "d" and bytes(last) != STOP:
                bad += 1
            resq.put(("C", rep, n, crc, t1, bad))
        close()
    except BaseException:
        _report_error(resq, "C")


def idle_consumer_main(spec, mode, resq, idle):
    try:
        q, close = open_endpoint(spec)
        resq.put(("ready", "ok"))
        time.sleep(0.05)  # let the result queue's feeder thread flush
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        w0 = perf()
        got = True
        try:
            if mode == "wake":
                q.get()  # blocks until the parent puts after `idle` s
            else:
                q.get(True, idle)  # expect Empty after `idle` s
        except std_queue.Empty:
            got = False
        w1 = perf()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        resq.put(
            (
                "idle",
                cpu,
                w1 - w0,
                w1,
                got,
                ru1.ru_nvcsw - ru0.ru_nvcsw,
                ru1.ru_nivcsw - ru0.ru_nivcsw,
            )
        )
        close()
    except BaseException:
        _report_error(resq, "C")


# --------------------------------------------------------------------------
# parent side


class RowFailed(Exception):
    pass


class Runner:
    def __init__(self, args):
        self.args = args
        self.ctx = mp.get_context(args.start_method)
        self.created = []  # pyqmem handles created by us (unlinked at exit)
        self.children = []
        self.seq = 0
        import pyqmem

        self.pyqmem = pyqmem
        self.ff = None
        self.ff_note = ""
        if not args.no_faster_fifo:
            try:
                import faster_fifo
                import faster_fifo_reduction  # noqa: F401  (makes it picklable for spawn)

                self.ff = faster_fifo
            except Exception as e:  # ImportError or a broken install
                self.ff_note = (
                    f"faster-fifo not importable ({type(e).__name__}: {e}); its rows skipped"
                )
        else:
            self.ff_note = "faster-fifo disabled (--no-faster-fifo)"

    # ---- queue factories -------------------------------------------------
    def new_name(self, tag):
        self.seq += 1
        return f"bench-{os.getpid()}-{self.seq}-{tag}"

    def make(self, kind, scen, raw=True):
        size = {"a": SMALL, "b": SMALL, "c": LARGE}.get(scen, 48)
        if kind == "pyqmem":
            name = self.new_name(f"{scen}")
            q = self.pyqmem.Queue(
                name, capacity=CAPACITY, serializer=None if raw else "pickle", create=True
            )
            self.created.append(q)
            return {"kind": kind, "name": name, "raw": raw}, q
        if kind == "mp":
            # bounded to about the same bytes as the 16 MiB pyqmem ring
            q = self.ctx.Queue(maxsize=max(4, CAPACITY // (size + 32)))
            return {"kind": kind, "obj": q}, q
        if kind == "ff":
            kw = {"max_size_bytes": CAPACITY}
            if raw:
                kw.update(loads=ff_raw_loads, dumps=ff_raw_dumps)
            q = self.ff.Queue(**kw)
            return {"kind": kind, "obj": q}, q
        raise ValueError(kind)

    def release(self, kind, q):
        if kind == "pyqmem":
            try:
                q.unlink()
            except Exception:
                pass
            try:
                q.close()
            except Exception:
                pass
            if q in self.created:
                self.created.remove(q)
        elif kind == "mp":
            q.close()
            q.join_thread()

    def cleanup(self):
        for p in self.children:
            if p.is_alive():
                p.kill()
                p.join(5)
        for q in list(self.created):
            self.release("pyqmem", q)

    # ---- process management ------------------------------------------------
    def start(self, target, args, name):
        p = self.ctx.Process(target=target, args=args, daemon=True, name=name)
        p.start()
        self.children.append(p)
        return p

    def stop(self, procs, grace=5.0):
        for p in procs:
            p.join(grace)
            if p.is_alive():
                p.kill()
                p.join(5)
            if p in self.children:
                self.children.remove(p)

    def collect(self, resq, procs, want, deadline, what):
        """Read `want` messages from resq; fail fast on a child error or death."""
        out = []
        dead_since = None
        while len(out) < want:
            if perf() > deadline:
                raise RowFailed(
                    f"{what}: timed out (hang?) after {len(out)}/{want} results; "
                    f"children alive={[p.is_alive() for p in procs]}"
                )
            try:
                msg = resq.get(timeout=0.25)
            except std_queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                exited = [p for p in procs if p.exitcode is not None]
                if dead or len(exited) == len(procs):
                    dead_since = dead_since or perf()
                    if perf() - dead_since > 2.0:  # give the result queue time to drain
                        codes = {p.name: p.exitcode for p in procs}
                        raise RowFailed(f"{what}: child exited early, exit codes {codes}") from None
                continue
            if msg[1] == "error":
                hint = ""
                if "IncompatibleError" in msg[2]:
                    hint = (
                        "\n(hint: the child loaded a different pyqmem build than the parent: "
                        "was pyqmem rebuilt while the benchmark ran?)"
                    )
                raise RowFailed(f"{what}: {msg[0]} raised:\n{msg[2]}{hint}")
            out.append(msg)
        return out

    # ---- one throughput row ------------------------------------------------
    def throughput(self, kind, scen, raw=True):
        a = self.args
        spec, q = self.make(kind, scen, raw)
        procs = []
        try:
            barrier = self.ctx.Barrier(2)
            resq = self.ctx.Queue()
            reps = a.repeats
            warm = max(0.05, min(0.25, a.duration / 4))
            cons = self.start(consumer_main, (spec, scen, barrier, resq, reps), "consumer")
            prod = self.start(
                producer_main, (spec, scen, barrier, resq, reps, a.duration, warm), "producer"
            )
            procs = [cons, prod]
            budget = 60 + (reps + 1) * (4 * a.duration + 30)
            msgs = self.collect(
                resq, procs, 2 * (reps + 1), perf() + budget, f"{kind} scenario {scen}"
            )
            self.stop(procs)
            P = {m[1]: m for m in msgs if m[0] == "P"}
            C = {m[1]: m for m in msgs if m[0] == "C"}
            rates, total = [], 0
            for rep in range(-1, reps):
                _, _, n_p, crc_p, t0 = P[rep]
                _, _, n_c, crc_c, t1, bad = C[rep]
                total += n_p
                if n_p != n_c:
                    raise RowFailed(
                        f"{kind} {scen} rep {rep}: producer sent {n_p}, consumer got {n_c}"
                    )
                if bad:
                    raise RowFailed(f"{kind} {scen} rep {rep}: {bad} corrupt/out-of-order messages")
                if (rep < 0 or scen == "d") and crc_p != crc_c:
                    raise RowFailed(
                        f"{kind} {scen} rep {rep}: checksum mismatch {crc_p:#x} != {crc_c:#x}"
                    )
                if rep >= 0:
                    rates.append(n_p / (t1 - t0))
            note = ""
            if kind == "pyqmem":
                note = self.check_stats(q, total + reps + 1)
            resq.close()
            return {"rates": rates, "note": note}
        finally:
            self.stop(procs, grace=0.5)
            self.release(kind, q)

    def check_stats(self, q, expected):
        try:
            st = q.stats()
        except Exception as e:
            return f"stats() raised {type(e).__name__}: {e}"
        probs = []
        for key in ("put", "got"):
            if key in st and st[key] != expected:
                probs.append(f"stats[{key!r}]={st[key]} expected {expected}")
        if st.get("depth", 0) != 0:
            probs.append(f"stats['depth']={st['depth']} after drain")
        return "; ".join(probs)

    # ---- idle consumer -----------------------------------------------------
    def idle(self, kind, mode):
        a = self.args
        spec, q = self.make(kind, "e", raw=(kind == "pyqmem"))
        procs = []
        try:
            resq = self.ctx.Queue()
            p = self.start(idle_consumer_main, (spec, mode, resq, a.idle), "idle-consumer")
            procs = [p]
            self.collect(resq, procs, 1, perf() + 60, f"{kind} idle start")
            t_put = None
            if mode == "wake":
                time.sleep(a.idle + 0.05)
                t_put = perf()
                q.put(b"wake")
            msg = self.collect(resq, procs, 1, perf() + a.idle + 30, f"{kind} idle")[0]
            _, cpu, wall, w1, got, nvcsw, nivcsw = msg
            if mode == "wake" and not got:
                raise RowFailed(f"{kind} idle: blocked get() returned nothing")
            if mode == "timeout" and got:
                raise RowFailed(f"{kind} idle: get() on an empty queue returned a message")
            if mode == "timeout" and abs(wall - a.idle) > 0.5:
                raise RowFailed(f"{kind} idle: get(timeout={a.idle}) returned after {wall:.3f} s")
            res = {
                "cpu_s": cpu,
                "wall_s": wall,
                "cpu_pct": 100.0 * cpu / wall,
                "voluntary_switches": nvcsw,
                "involuntary_switches": nivcsw,
            }
            if t_put is not None:
                res["wake_latency_us"] = (w1 - t_put) * 1e6
            resq.close()
            self.stop(procs)
            return res
        finally:
            self.stop(procs, grace=0.5)
            self.release(kind, q)


# --------------------------------------------------------------------------
# measurements in the parent


def memcpy_bandwidth(repeats, size=64 * 2**20, copies=4):
    """Single-core memcpy (ctypes.memmove) of a 64 MiB buffer; MB/s per repeat."""
    src = (ctypes.c_char * size)()
    dst = (ctypes.c_char * size)()
    ctypes.memset(src, 0x5A, size)
    ctypes.memset(dst, 0, size)
    ctypes.memmove(dst, src, size)  # fault everything in
    out = []
    for _ in range(repeats):
        t = perf()
        for _ in range(copies):
            ctypes.memmove(dst, src, size)
        out.append(size * copies / (perf() - t) / MB)
    return out


def memcpy_ring_bandwidth(repeats, msg=LARGE, ring=CAPACITY, copies=64):
    """Single-core memcpy of one 1 MiB message into successive slots of a 16 MiB
    buffer: the copy a producer does, with the same cache footprint."""
    src = (ctypes.c_char * msg)()
    dst = (ctypes.c_char * ring)()
    ctypes.memset(src, 0x5A, msg)
    ctypes.memset(dst, 0, ring)
    base = ctypes.addressof(dst)
    slots = ring // msg
    out = []
    for _ in range(repeats):
        t = perf()
        for i in range(copies):
            ctypes.memmove(base + (i % slots) * msg, src, msg)
        out.append(msg * copies / (perf() - t) / MB)
    return out


def machine_info(start_method):
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    vers = {}
    from importlib import metadata

    for pkg in ("pyqmem", "faster-fifo"):
        try:
            vers[pkg] = metadata.version(pkg)
        except Exception:
            vers[pkg] = None
    return {
        "nproc": affinity or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
        "start_method": start_method,
        "versions": vers,
    }


def summarize(rates):
    med = statistics.median(rates)
    spread = (max(rates) - min(rates)) / med * 100 if med else 0.0
    return med, spread


# --------------------------------------------------------------------------
# table


def fmt_int(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_mb(x):
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def print_table(rows, out=sys.stdout):
    hdr = ("scenario", "implementation", "msgs/s", "MB/s", "spread", "ratios / notes")
    lines = []
    for r in rows:
        if r.get("kind") == "idle":
            if r.get("error"):
                lines.append(
                    (r["scenario"], r["impl"], "FAILED", "", "", r["error"].splitlines()[0][:90])
                )
                continue
            extra = (
                f"CPU {r['cpu_pct']:.2f}% of a core over {r['wall_s']:.2f} s; "
                f"{r['voluntary_switches']} wakeups"
            )
            if "wake_latency_us" in r:
                extra += f"; wake latency {r['wake_latency_us']:.0f} us"
            verdict = "OK" if r["cpu_pct"] < 1.0 else "OVER 1% TARGET"
            lines.append((r["scenario"], r["impl"], "", "", "", f"{extra} [{verdict}]"))
            continue
        if r.get("error"):
            lines.append(
                (r["scenario"], r["impl"], "FAILED", "", "", r["error"].splitlines()[0][:90])
            )
            continue
        if r.get("skipped"):
            lines.append((r["scenario"], r["impl"], "skipped", "", "", r["skipped"]))
            continue
        lines.append(
            (
                r["scenario"],
                r["impl"],
                fmt_int(r.get("msgs_s")),
                fmt_mb(r.get("mb_s")),
                f"±{r['spread_pct'] / 2:.0f}%" if r.get("spread_pct") is not None else "",
                r.get("notes", ""),
            )
        )
    widths = [max(len(str(x[i])) for x in lines + [hdr]) for i in range(len(hdr))]
    align = ["<", "<", ">", ">", ">", "<"]

    def fmt(row):
        return "  ".join(f"{str(v):{a}{w}}" for v, a, w in zip(row, align, widths)).rstrip()

    print(fmt(hdr), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    prev = None
    for row in lines:
        if prev is not None and row[0] != prev:
            print("", file=out)
        print(fmt(row), file=out)
        prev = row[0]


# --------------------------------------------------------------------------
# main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="3 repeats of 0.3 s, 1 s idle (whole run < 60 s)"
    )
    ap.add_argument("--repeats", type=int, help="timed repeats per row (default 5; quick 3)")
    ap.add_argument(
        "--duration", type=float, help="seconds of traffic per repeat (default 1.5; quick 0.3)"
    )
    ap.add_argument(
        "--idle", type=float, help="seconds the idle consumer blocks (default 2; quick 1)"
    )
    ap.add_argument("--only", help="comma-separated scenarios out of a,b,c,d,e")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--start-method", choices=("spawn", "fork", "forkserver"), default="spawn")
    ap.add_argument(
        "--no-faster-fifo", action="store_true", help="skip faster-fifo even if installed"
    )
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.duration is None:
        args.duration = 0.3 if args.quick else 1.5
    if args.idle is None:
        args.idle = 1.0 if args.quick else 2.0
    if args.repeats < 1 or args.duration <= 0 or args.idle <= 0:
        ap.error("--repeats, --duration and --idle must be positive")
    only = set("abcde") if not args.only else {s.strip() for s in args.only.split(",") if s.strip()}
    if not only <= set(SCENARIOS):
        ap.error(f"--only takes scenarios out of {','.join(SCENARIOS)}")

    # SIGTERM/SIGHUP -> SystemExit so the finally below unlinks our queues
    def _die(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _die)
    signal.signal(signal.SIGHUP, _die)

    t_start = perf()
    info = machine_info(args.start_method)
    runner = Runner(args)
    if runner.ff is None:
        info["versions"]["faster-fifo"] = "not used"
    print(f"pyqmem bench/compare.py  --  {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(
        f"machine: nproc={info['nproc']} (cpu_count={info['cpu_count']}), CPU: {info['cpu_model']}, "
        f"loadavg {' '.join(f'{x:.2f}' for x in info['loadavg'])}"
    )
    print(
        f"python {info['python']} ({info['implementation']}) on {info['platform']}; "
        f"pyqmem {info['versions']['pyqmem']}, faster-fifo {info['versions']['faster-fifo']}"
    )
    print(
        f"method: 1 producer process -> 1 consumer process, start method '{args.start_method}', "
        f"median of {args.repeats} repeats x {args.duration:g} s (+1 verified warm-up); "
        f"queues bounded to 16 MiB; MB = 10^6 bytes",
        flush=True,
    )

    if runner.ff_note:
        print("note:", runner.ff_note)
    print(flush=True)

    rows = []
    failures = 0
    results = {}  # (scen, impl) -> row

    def add(scen, impl, kind, fn):
        nonlocal failures
        row = {"scenario": f"{scen} {SCENARIOS[scen]}", "id": scen, "impl": impl, "kind": kind}
        try:
            row.update(fn())
        except RowFailed as e:
            row["error"] = str(e)
            failures += 1
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            failures += 1
        rows.append(row)
        results[(scen, impl)] = row
        status = "FAILED: " + row["error"] if row.get("error") else "done"
        print(f"  [{perf() - t_start:6.1f} s] {scen} {impl}: {status}", file=sys.stderr, flush=True)
        return row

    def tp(scen, kind, size, raw=True):
        def fn():
            res = runner.throughput(kind, scen, raw)
            med, spread = summarize(res["rates"])
            d = {
                "msgs_s": med,
                "spread_pct": spread,
                "rates": res["rates"],
                "mb_s": med * size / MB if size else None,
            }
            if res["note"]:
                d["notes"] = "WARNING " + res["note"]
            return d

        return fn

    def skip_ff(scen, impl):
        rows.append(
            {
                "scenario": f"{scen} {SCENARIOS[scen]}",
                "id": scen,
                "impl": impl,
                "kind": "tp",
                "skipped": "faster-fifo not available",
            }
        )

    def ratio_notes(scen, pq_impl, others):
        pq = results.get((scen, pq_impl))
        if not pq or "msgs_s" not in pq:
            return
        parts = []
        for label, row in others:
            if row and row.get("msgs_s"):
                parts.append(f"{pq['msgs_s'] / row['msgs_s']:.2f}x {label}")
        if parts:
            pq["ratios"] = parts
            pq["notes"] = (
                "pyqmem = " + ", ".join(parts) + ("; " + pq["notes"] if pq.get("notes") else "")
            )

    try:
        mp_single = None
        if "a" in only:
            add("a", "pyqmem (serializer=None)", "pyqmem", tp("a", "pyqmem", SMALL))
            mp_single = add("a", "multiprocessing.Queue", "mp", tp("a", "mp", SMALL))
            if runner.ff:
                add("a", "faster_fifo.Queue (raw)", "ff", tp("a", "ff", SMALL))
            else:
                skip_ff("a", "faster_fifo.Queue (raw)")
            ratio_notes(
                "a",
                "pyqmem (serializer=None)",
                [
                    ("mp.Queue", results.get(("a", "multiprocessing.Queue"))),
                    ("faster-fifo", results.get(("a", "faster_fifo.Queue (raw)"))),
                ],
            )
        if "b" in only:
            add("b", "pyqmem put_many/get_many", "pyqmem", tp("b", "pyqmem", SMALL))
            if runner.ff:
                add("b", "faster_fifo put_many/get_many", "ff", tp("b", "ff", SMALL))
            else:
                skip_ff("b", "faster_fifo put_many/get_many")
            if mp_single is None:
                mp_single = add("a", "multiprocessing.Queue", "mp", tp("a", "mp", SMALL))
                rows.pop()  # shown under b only
            base = dict(mp_single)
            base.update(
                {
                    "scenario": f"b {SCENARIOS['b']}",
                    "id": "b",
                    "impl": "mp.Queue single put/get (no batch API)",
                    "notes": "baseline (single ops)",
                }
            )
            rows.append(base)
            results[("b", "mp-baseline")] = base
            ratio_notes(
                "b",
                "pyqmem put_many/get_many",
                [
                    ("mp.Queue single", base),
                    ("faster-fifo batch", results.get(("b", "faster_fifo put_many/get_many"))),
                ],
            )
        if "c" in only:
            bw = memcpy_bandwidth(max(3, args.repeats))
            med_bw, spread_bw = summarize(bw)
            bw_ring = memcpy_ring_bandwidth(max(3, args.repeats))
            med_ring, spread_ring = summarize(bw_ring)
            rows.append(
                {
                    "scenario": f"c {SCENARIOS['c']}",
                    "id": "c",
                    "kind": "memcpy",
                    "impl": "memcpy 64 MiB, 1 core (ctypes.memmove)",
                    "msgs_s": None,
                    "mb_s": med_bw,
                    "spread_pct": spread_bw,
                    "rates_mb_s": bw,
                    "notes": "the reference for 'of memcpy'",
                }
            )
            rows.append(
                {
                    "scenario": f"c {SCENARIOS['c']}",
                    "id": "c",
                    "kind": "memcpy",
                    "impl": "memcpy 1 MiB into 16 MiB ring, 1 core",
                    "msgs_s": None,
                    "mb_s": med_ring,
                    "spread_pct": spread_ring,
                    "rates_mb_s": bw_ring,
                    "notes": f"{med_ring / med_bw:.2f} of memcpy (cache-warmer copies)",
                }
            )
            add("c", "pyqmem (serializer=None)", "pyqmem", tp("c", "pyqmem", LARGE))
            add("c", "multiprocessing.Queue", "mp", tp("c", "mp", LARGE))
            if runner.ff:
                add("c", "faster_fifo.Queue (raw)", "ff", tp("c", "ff", LARGE))
            else:
                skip_ff("c", "faster_fifo.Queue (raw)")
            for r in rows:
                if r.get("id") == "c" and r.get("mb_s") and r.get("kind") != "memcpy":
                    r["vs_memcpy"] = r["mb_s"] / med_bw
                    r["notes"] = f"{r['vs_memcpy']:.2f} of memcpy" + (
                        "; " + r["notes"] if r.get("notes") else ""
                    )
            ratio_notes(
                "c",
                "pyqmem (serializer=None)",
                [
                    ("mp.Queue", results.get(("c", "multiprocessing.Queue"))),
                    ("faster-fifo", results.get(("c", "faster_fifo.Queue (raw)"))),
                ],
            )
        if "d" in only:
            add("d", "pyqmem (serializer='pickle')", "pyqmem", tp("d", "pyqmem", None, raw=False))
            add("d", "multiprocessing.Queue", "mp", tp("d", "mp", None, raw=False))
            if runner.ff:
                add("d", "faster_fifo.Queue (pickle)", "ff", tp("d", "ff", None, raw=False))
            else:
                skip_ff("d", "faster_fifo.Queue (pickle)")
            ratio_notes(
                "d",
                "pyqmem (serializer='pickle')",
                [
                    ("mp.Queue", results.get(("d", "multiprocessing.Queue"))),
                    ("faster-fifo", results.get(("d", "faster_fifo.Queue (pickle)"))),
                ],
            )
        if "e" in only:
            add("e", "pyqmem get() woken by a put", "idle", lambda: runner.idle("pyqmem", "wake"))
            add(
                "e",
                f"pyqmem get(timeout={args.idle:g}) -> Empty",
                "idle",
                lambda: runner.idle("pyqmem", "timeout"),
            )
            add(
                "e",
                "multiprocessing.Queue get() (reference)",
                "idle",
                lambda: runner.idle("mp", "wake"),
            )
    finally:
        runner.cleanup()

    print()
    print_table(rows)
    elapsed = perf() - t_start
    print(f"\ntotal {elapsed:.1f} s; spread = ±half of (max-min)/median over the repeats")
    for r in rows:
        if r.get("error"):
            print(f"\nFAILED {r['scenario']} / {r['impl']}:\n{r['error']}")

    if args.json:
        doc = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items()},
            "elapsed_s": elapsed,
            "rows": rows,
            "units": {"msgs_s": "messages per second", "mb_s": "10^6 bytes per second"},
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; queues unlinked", file=sys.stderr)
        sys.exit(130)
