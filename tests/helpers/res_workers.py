"""Child-process programs of tests/test_resource_bounds.py.

Run as ``python -m helpers.res_workers <program> <args...>``; each prints one JSON
line (its last line of output) for the test to check.  Kept out of the test
process because a wrong implementation of what they probe (copying a 2**40-byte
message, hanging at exit) must not hurt the test runner.
"""
from __future__ import annotations

import json
import mmap
import os
import sys
import threading
import time
import tracemalloc


def rss_kib() -> int:
    """This process's resident set (VmRSS of /proc/self/status), KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# ----------------------------------------------------------------------------
# E1: messages that claim 2**40 bytes (or up to 2**63 - 1) without occupying them
# ----------------------------------------------------------------------------
def _huge_objects(scratch: str) -> dict:
    """Bytes-like objects whose buffer claims far more memory than the machine has."""
    import numpy as np

    fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, 2**40)   # sparse: no block is ever allocated
        sparse = mmap.mmap(fd, 2**40, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
        os.unlink(scratch)
    one = np.zeros(1, dtype=np.uint8)
    objs = {
        "sparse-mmap-2**40": (sparse, 2**40),
        "numpy-2**40": (np.broadcast_to(one, (2**40,)), 2**40),
        "numpy-2**62": (np.broadcast_to(one, (2**62,)), 2**62),
        "numpy-2**63-1": (np.broadcast_to(one, (2**63 - 1,)), 2**63 - 1),
    }
    for name, (obj, size) in objs.items():
        assert memoryview(obj).nbytes == size, name
    return {name: obj for name, (obj, _size) in objs.items()}


class _ReturnsHuge:
    """A custom serializer whose dumps returns the huge object it is given."""

    @staticmethod
    def dumps(obj):
        return obj

    @staticmethod
    def loads(buf):
        return bytes(buf)


def _e1_cases(name: str, objs: dict):
    """(case, call, state) triples: `call(obj)` must raise MessageTooLarge,
    `state()` must read the same before and after."""
    import pickle

    import pyqmem

    cases = []
    qraw = pyqmem.Queue(name + "-raw", capacity=2**20, serializer=None)
    qpkl = pyqmem.Queue(name + "-pickle", capacity=2**20)
    qcus = pyqmem.Queue(name + "-custom", capacity=2**20, serializer=_ReturnsHuge())
    traw = pyqmem.Topic(name + "-traw", segment_bytes=2**20)
    tpkl = pyqmem.Topic(name + "-tpickle", segment_bytes=2**20, serializer="pickle")
    handles = [qraw, qpkl, qcus, traw, tpkl]

    def qstate(q):
        return lambda: (q.qsize(), q.stats()["put"])

    def tstate(t):
        return lambda: [(p["start_offset"], p["end_offset"]) for p in t.stats()["partitions"].values()]

    for q, label in ((qraw, "queue-raw"), (qpkl, "queue-pickle"), (qcus, "queue-custom")):
        cases += [
            (f"{label}.put", lambda o, q=q: q.put(o, timeout=1), qstate(q)),
            (f"{label}.put_nowait", lambda o, q=q: q.put_nowait(o), qstate(q)),
            (f"{label}.put_many", lambda o, q=q: q.put_many([b"ok", o], timeout=1), qstate(q)),
        ]
    cases.append(("queue-pickle.put(PickleBuffer)", lambda o: qpkl.put(pickle.PickleBuffer(o), timeout=1),
                  qstate(qpkl)))
    for t, label in ((traw, "topic-raw"), (tpkl, "topic-pickle")):
        cases += [
            (f"{label}.send", lambda o, t=t: t.send(o), tstate(t)),
            (f"{label}.send(partition=0)", lambda o, t=t: t.send(o, partition=0), tstate(t)),
            (f"{label}.send_many", lambda o, t=t: t.send_many([b"ok", o]), tstate(t)),
            (f"{label}.send(key=huge)", lambda o, t=t: t.send(b"v", key=o), tstate(t)),
            (f"{label}.send_many(key=huge)", lambda o, t=t: t.send_many([b"v"], key=o), tstate(t)),
            (f"{label}.send(headers=huge)", lambda o, t=t: t.send(b"v", headers={"h": o}), tstate(t)),
            (f"{label}.send(headers=huge, key=str)",
             lambda o, t=t: t.send(b"v", key="k", headers={"a": b"1", "h": o}), tstate(t)),
        ]
    return cases, handles


def e1(name: str, scratch: str) -> None:
    import pyqmem

    objs = _huge_objects(scratch)
    cases, handles = _e1_cases(name, objs)
    results = []
    for case, call, state in cases:
        call(b"warm-up" if "key" not in case and "headers" not in case else b"k")  # same path, accepted
        for label, obj in objs.items():
            before = state()
            rss0 = rss_kib()
            tracemalloc.start()
            t0 = time.perf_counter()
            try:
                call(obj)
                outcome = "accepted"
            except pyqmem.MessageTooLarge as exc:
                outcome = "MessageTooLarge"
                detail = str(exc)[:160]
            except BaseException as exc:   # noqa: BLE001 - reported to the test
                outcome = f"{type(exc).__name__}"
                detail = str(exc)[:160]
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            results.append({"case": case, "object": label, "outcome": outcome,
                            "detail": detail if outcome != "accepted" else "",
                            "seconds": seconds, "tracemalloc_peak": peak,
                            "rss_growth_kib": rss_kib() - rss0, "unchanged": state() == before})
    for h in handles:
        h.close()
    print(json.dumps(results))


# ----------------------------------------------------------------------------
# I4: exit with open handles, daemon threads blocked in pyqmem calls, leases held
# ----------------------------------------------------------------------------
def exit_holding(qname: str, tname: str, how: str) -> None:
    """Open a queue, a topic and group members, take leases, park daemon threads in
    blocking calls, print one JSON line, then exit as `how` says, closing nothing."""
    import pyqmem

    q = pyqmem.Queue(qname, maxsize=1)
    q.put("occupant")
    empty = pyqmem.Queue(qname + "-empty")
    t = pyqmem.Topic(tname, retention_bytes=None)
    member = t.consumer(group="g", visibility_timeout=120)
    leased = member.get_many(10, timeout=5)          # the parent sent 3 records
    idle_member = t.consumer(group="g", visibility_timeout=120)
    subscriber = t.consumer(start="latest")
    blocked = [lambda: empty.get(), lambda: q.put("no room"), lambda: idle_member.get(),
               lambda: subscriber.get(), lambda: pyqmem.Queue(qname + "-empty").get()]
    threads = [threading.Thread(target=fn, daemon=True) for fn in blocked]
    for th in threads:
        th.start()
    time.sleep(0.2)   # every thread is inside its blocking call
    print(json.dumps({"leased": [m.offset for m in leased],
                      "blocked": sum(th.is_alive() for th in threads)}), flush=True)
    if how == "sys.exit":
        sys.exit(0)
    if how == "os._exit":
        os._exit(0)
    # "return": fall off the end of the program; the interpreter finalizes


# ----------------------------------------------------------------------------
# E5: hold member slots until killed
# ----------------------------------------------------------------------------
def open_member(kind: str, name: str):
    """One more handle of `kind` on `name` that takes one member slot: of the queue
    `name`, or of the group "g" of the topic folder `name` (a bare group handle, as
    each group consumer opens one)."""
    import pyqmem
    from pyqmem import _core

    if kind == "queue":
        return pyqmem.Queue(name, capacity=4096, create=False)
    return _core.Group.open(name, "g", _core.OPEN_ONLY)


def hold_members(kind: str, name: str, count: str) -> None:
    """Open `count` handles (all there is room for if "fill"), report how many and
    the error that stopped it, then hold them until killed (or stdin closes)."""
    import pyqmem

    want = 1100 if count == "fill" else int(count)
    held, error = [], None
    while len(held) < want:
        try:
            held.append(open_member(kind, name))
        except pyqmem.QmemError as exc:
            error = [type(exc).__name__, str(exc)]
            break
    print(json.dumps({"opened": len(held), "error": error}), flush=True)
    sys.stdin.read()


# ----------------------------------------------------------------------------
# E3: a flooding producer beside a normal pair
# ----------------------------------------------------------------------------
def echo(qin: str, qout: str) -> None:
    """Put back every message of `qin` on `qout` until None comes (bounded: 60 s)."""
    import pyqmem

    with pyqmem.Queue(qin, create=False) as a, pyqmem.Queue(qout, create=False) as b:
        print(json.dumps({"ready": True}), flush=True)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                item = a.get(timeout=1)
            except pyqmem.Empty:
                continue
            b.put(item)
            if item is None:
                break


def flood(qname: str, tname: str, seconds: str) -> None:
    """Flood the queue `qname` and the topic `tname` for `seconds`: blocking puts
    with a 0.2 s timeout until Full, then put_nowait and sends as fast as they go.
    Reports the puts, the Fulls and how long each blocking put took to give up."""
    import pyqmem

    payload = b"f" * 4096
    q = pyqmem.Queue(qname, create=False, serializer=None)
    t = pyqmem.Topic(tname, create=False)
    print(json.dumps({"ready": True}), flush=True)
    puts = fulls = sent = 0
    waits = []
    while len(waits) < 5:   # blocking puts: each either fits or gives up with Full
        t0 = time.perf_counter()
        try:
            q.put(payload, timeout=0.2)
            puts += 1
        except pyqmem.Full:
            waits.append(time.perf_counter() - t0)
    end = time.monotonic() + float(seconds)
    while time.monotonic() < end:
        for _ in range(100):
            try:
                q.put_nowait(payload)
                puts += 1
            except pyqmem.Full:
                fulls += 1
            t.send(payload)
            sent += 1
    q.close()
    t.close()
    print(json.dumps({"puts": puts, "fulls": fulls + len(waits), "full_waits": waits,
                      "sent": sent}), flush=True)


if __name__ == "__main__":
    program, *args = sys.argv[1:]
    programs = {"e1": e1, "exit_holding": exit_holding, "hold_members": hold_members,
                "echo": echo, "flood": flood}
    programs[program](*args)
