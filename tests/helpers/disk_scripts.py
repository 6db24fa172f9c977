"""Child script of tests/test_disk_faults.py: one run of the I/O-error injection loop.

``python -m helpers.disk_scripts DIR DURABILITY REPORT``

Imports everything, opens REPORT (a file the parent sized) and maps it, prints
``ready`` and waits for a line on stdin: meanwhile the parent attaches
``strace -e inject=...`` to this process, so the injection counts only the
system calls of the work below, not those of interpreter start-up.  Then it
works on DIR (a Queue with PYQMEM_DIR=DIR/shm, a Topic ``t`` with small
segments, a consumer group ``g``) and writes what happened into the mapping
as JSON (no system call, so it cannot hit an injected ``write``).

Every step that raises is recorded (type, errno, message) and tried once more
on the same handles; every send that returned is recorded as acknowledged.
The child exits 0 whatever the steps raised; a crash is the parent's finding.
"""
from __future__ import annotations

import json
import mmap
import os
import sys
import traceback

import pyqmem
import pyqmem.consumer  # noqa: F401  (imported before the injection starts)
import pyqmem.group  # noqa: F401
import pyqmem.queue  # noqa: F401
import pyqmem.topic  # noqa: F401

SEGMENT = 64 * 1024
VALUE_BYTES = 8000        # 7 records a segment: a roll every 7 sends
SENDS = 24
REPORT_BYTES = 1 << 20


def value_of(i: int) -> bytes:
    return f"{i:06d}:".encode().ljust(VALUE_BYTES, b"v")


def index_of(value: bytes) -> int | None:
    """The i of value_of(i), or None for bytes no send ever wrote."""
    try:
        i = int(value[:6])
    except ValueError:
        return None
    return i if bytes(value) == value_of(i) else None


def describe(exc: BaseException) -> dict:
    return {
        "type": type(exc).__name__,
        "mro": [c.__name__ for c in type(exc).__mro__],
        "errno": getattr(exc, "errno", None),
        "message": str(exc),
    }


class Run:
    def __init__(self, out: mmap.mmap):
        self.out = out
        self.events: list[dict] = []   # every raise: step, attempt, error
        self.acked: list[list[int]] = []   # [i, offset] of every send that returned
        self.send_results: list[bool] = []  # per send attempt, in order: returned?
        self.group_acked: list[int] = []

    def step(self, name: str, fn, attempts: int = 2):
        for attempt in range(attempts):
            try:
                return True, fn()
            except Exception as exc:   # recorded; the parent judges the type
                self.events.append({"step": name, "attempt": attempt, **describe(exc)})
        return False, None

    def finish(self, **extra) -> None:
        doc = json.dumps({"events": self.events, "acked": self.acked,
                          "send_results": self.send_results,
                          "group_acked": self.group_acked, "done": True, **extra}).encode()
        self.out[: len(doc)] = doc


def work(run: Run, folder: str, durability: str) -> None:
    ok, q = run.step("queue_create", lambda: pyqmem.Queue("dq", capacity=64 * 1024))
    if ok:
        run.step("queue_put", lambda: q.put(b"q" * 100))
        run.step("queue_get", lambda: q.get(timeout=1))
        q.close()
    ok, t = run.step("topic_create", lambda: pyqmem.Topic(
        "t", dir=folder, segment_bytes=SEGMENT, durability=durability, retention_bytes=None))
    if not ok:
        return
    for i in range(SENDS):
        for attempt in range(2):
            try:
                md = t.send(value_of(i))
            except Exception as exc:
                run.events.append({"step": f"send {i}", "attempt": attempt, **describe(exc)})
                run.send_results.append(False)
                continue
            run.send_results.append(True)
            run.acked.append([i, md.offset])
            break
    ok, c = run.step("group_open", lambda: t.consumer(group="g", visibility_timeout=60))
    if ok:
        def take():
            for m in c.get_many(10, timeout=0.1):
                m.ack()
                run.group_acked.append(m.offset)
        run.step("group_take", take)
        run.step("group_close", c.close)
    run.step("topic_close", t.close)


def main() -> int:
    folder, durability, report = sys.argv[1:4]
    os.environ["PYQMEM_DIR"] = os.path.join(folder, "shm")
    os.makedirs(os.environ["PYQMEM_DIR"], mode=0o700, exist_ok=True)
    with open(report, "r+b") as f:
        out = mmap.mmap(f.fileno(), REPORT_BYTES)
    run = Run(out)
    try:   # let the parent's strace attach under Yama ptrace_scope=1 (not root)
        import ctypes
        ctypes.CDLL(None).prctl(0x59616D61, ctypes.c_ulong(-1), 0, 0, 0)   # PR_SET_PTRACER_ANY
    except (OSError, AttributeError):
        pass
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        work(run, folder, durability)
    except BaseException:   # a bug in this script, not a finding about pyqmem
        run.finish(script_error=traceback.format_exc())
        return 0
    run.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
