"""Children for the liveness, restart and time tests (test_liveness.py,
test_restart_loop.py, test_time_jumps.py).

Most children are plain ``os.fork()`` children of the test process (pyqmem is already
imported there, so a child costs a millisecond or two): ``fork_child(fn, *args)`` runs
``fn(*args)`` in the child and always ends it with ``os._exit`` (0 if fn returned, 1 if it
raised, after printing the traceback), so a child never returns into pytest.  A child
opens its own handles: a handle opened before the fork is not used across it.

Children report through a pipe, one line per event (``Reports``): a line is written with
one ``os.write`` of at most PIPE_BUF bytes, so a SIGKILL never leaves half a line.

Every loop is bounded in count and in time.
"""
from __future__ import annotations

import mmap
import os
import select
import signal
import struct
import sys
import time
import traceback
import warnings

# ----------------------------------------------------------------------------
# forked children and their reports
# ----------------------------------------------------------------------------


def fork_child(fn, *args) -> int:
    """Run fn(*args) in a forked child; returns the child's pid."""
    with warnings.catch_warnings():
        # Python >= 3.12 warns when forking a process with threads (the test guard's
        # faulthandler watchdog is one); the child only runs fn and _exits
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, 0)
            fn(*args)
            code = 0
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 10.0) -> int | None:
    """waitpid with a time bound: the raw wait status, or None if it did not end."""
    end = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got == pid:
            return status
        if time.monotonic() > end:
            return None
        time.sleep(0.001)


def kill_and_reap(pid: int, sig=signal.SIGKILL) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    reap(pid)


class Reports:
    """The read end of a pipe children write report lines to ("word arg arg ...")."""

    def __init__(self):
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.buf = b""
        self.lines: list[list[str]] = []

    def writer(self) -> int:
        return self.w

    def pump(self, timeout: float = 0.0) -> int:
        """Read what is there (waiting up to `timeout` for something); returns lines added."""
        n0 = len(self.lines)
        end = time.monotonic() + timeout
        while True:
            left = max(0.0, end - time.monotonic())
            r, _, _ = select.select([self.r], [], [], left)
            if not r:
                break
            try:
                chunk = os.read(self.r, 65536)
            except BlockingIOError:
                chunk = b""
            if not chunk:
                break
            self.buf += chunk
            *full, self.buf = self.buf.split(b"\n")
            self.lines.extend(line.decode().split() for line in full)
            if len(self.lines) > n0:
                timeout = 0.0
                end = time.monotonic()
        return len(self.lines) - n0

    def wait_for(self, pred, timeout: float):
        """Pump until some line satisfies pred(line); returns it, or None after `timeout`."""
        end = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if pred(line):
                    return line
            seen = len(self.lines)
            left = end - time.monotonic()
            if left <= 0:
                return None
            self.pump(min(left, 0.05))

    def close(self):
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def say(fd: int, *words) -> None:
    """One report line (atomic up to PIPE_BUF bytes)."""
    os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())


# ----------------------------------------------------------------------------
# looking at a ring from outside (docs/design/ring-format.md, csrc/src/layout.h)
# ----------------------------------------------------------------------------
RING_READ_POS = 384
RING_DATA_OFFSET = 69632
RING_CAP_LOG2 = 92
ST_WRITING = 1


class RingPeek:
    """Reads the record word at a ring's read position, from outside (a read-only map)."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            self.m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        (cap_log2,) = struct.unpack_from("<I", self.m, RING_CAP_LOG2)
        self.mask = (1 << cap_log2) - 1

    def state_at_read(self) -> tuple[int, int]:
        """(state, owner slot) of the record word at the read position."""
        (rd,) = struct.unpack_from("<Q", self.m, RING_READ_POS)
        (w,) = struct.unpack_from("<Q", self.m, RING_DATA_OFFSET + (rd & self.mask))
        return (w >> 29) & 7, (w >> 19) & 1023

    def close(self):
        self.m.close()


# ----------------------------------------------------------------------------
# queue children
# ----------------------------------------------------------------------------
def big_producer(name: str, size: int, n: int, fd: int, deadline_s: float, stop=None) -> None:
    """Put n messages of `size` bytes (first 8 bytes: the sequence number) until n, the
    deadline, or `stop` (an anonymous shared mmap made before the fork) holds a
    nonzero byte (no syscall per put: time outside the ring copy is kept small); then
    report "done count".  Big messages: most of the time is the copy into the ring,
    so a stop at a random moment usually lands inside a reservation."""
    import pyqmem

    q = pyqmem.Queue(name, serializer=None, create=False)
    buf = bytearray(size)
    end = time.monotonic() + deadline_s
    say(fd, "ready", os.getpid())
    done = 0
    for seq in range(n):
        if time.monotonic() > end:
            break
        if stop is not None and stop[0]:
            break
        struct.pack_into("<Q", buf, 0, seq)
        q.put(buf, timeout=max(0.0, end - time.monotonic()))
        done = seq + 1
    say(fd, "done", done)
    q.close()


def lease_holder(topic_dir: str, tname: str, group: str, n: int, vt: float, fd: int,
                 deadline_s: float) -> None:
    """Claim n records of the group (no ack), report "held p off" for each, then sleep."""
    import pyqmem

    t = pyqmem.Topic(tname, dir=topic_dir, create=False)
    c = t.consumer(group=group, visibility_timeout=vt)
    held = []
    end = time.monotonic() + deadline_s
    while len(held) < n and time.monotonic() < end:
        try:
            m = c.get(timeout=0.2)
        except pyqmem.Empty:
            continue
        held.append(m)
        say(fd, "held", m.partition, m.offset)
    say(fd, "holding", len(held))
    time.sleep(max(0.0, end - time.monotonic()))


# ----------------------------------------------------------------------------
# a process that takes over a given pid (A7)
# ----------------------------------------------------------------------------
PID_TAKER = r"""
import os, sys, threading, time
target, max_forks, max_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
allow_set = sys.argv[4] == "any"
end = time.monotonic() + max_s
LAST = "/proc/sys/kernel/ns_last_pid"
forks = threads = 0
method = "fork-loop"

def last_pid():
    try:
        with open(LAST) as f:
            return int(f.read())
    except OSError:
        return None

def burn_with_threads():
    # Threads take ids from the same space and cost far less than forks: use them
    # to come close below the target, then fork.
    global threads
    while time.monotonic() < end:
        last = last_pid()
        if last is None or 0 <= target - last <= 16:
            return
        th = threading.Thread(target=lambda: None)
        th.start(); th.join()
        threads += 1

def set_last(v):
    # root: write the namespace's last pid (as CRIU does); the next fork gets v + 1
    try:
        with open(LAST, "w") as f:
            f.write(str(v))
        return True
    except OSError:
        return False

while forks < max_forks and time.monotonic() < end:
    if allow_set and set_last(target - 1):
        method = "ns_last_pid"
    else:
        burn_with_threads()
    pid = os.fork()
    forks += 1
    if pid == 0:
        if os.getpid() == target:
            sys.stdout.write("took %d %d %d %s\n" % (target, forks, threads, method)); sys.stdout.flush()
            sys.stdin.read()          # live on until the test closes our stdin
        os._exit(0)
    if pid == target:
        os._exit(0)                   # the taker lives on, reparented
    os.waitpid(pid, 0)
sys.stdout.write("gave_up %d %d %d %s\n" % (target, forks, threads, method)); sys.stdout.flush()
"""


def main(argv):   # pragma: no cover - children started as python -m helpers.live_workers
    raise SystemExit(f"unknown command {argv!r}")


if __name__ == "__main__":   # pragma: no cover
    main(sys.argv[1:])


# ----------------------------------------------------------------------------
# creation killed midway, attachers racing (A6)
# ----------------------------------------------------------------------------
def open_object(kind: str, name: str, topic_dir: str | None, group: str | None):
    """Create-or-attach the object of `kind`; returns the handles to close (outermost last)."""
    import pyqmem

    if kind == "queue":
        return [pyqmem.Queue(name, capacity=16 << 20, serializer=None)]
    t = pyqmem.Topic(name, dir=topic_dir, partitions=8, segment_bytes=1 << 20, retention_bytes=None)
    if kind == "topic":
        return [t]
    try:
        return [t.consumer(group=group, start="earliest"), t]
    except BaseException:
        t.close()
        raise


def creator(kind: str, name: str, topic_dir: str | None, group: str | None, fd: int) -> None:
    say(fd, "ready")
    t0 = time.monotonic()
    hs = open_object(kind, name, topic_dir, group)
    say(fd, "created", "%.6f" % (time.monotonic() - t0))
    for h in hs:
        h.close()


def attacher(kind: str, name: str, topic_dir: str | None, group: str | None, fd: int, go_fd: int,
             who: int) -> None:
    """Wait for the go (a byte on go_fd), then open the object and use it once; report
    "ok secs" or "err ErrorType secs message"."""
    import pyqmem

    select.select([go_fd], [], [], 10)
    t0 = time.monotonic()
    try:
        hs = open_object(kind, name, topic_dir, group)
        h = hs[0]
        if kind == "queue":
            h.put(b"a%d" % who, timeout=5)
            h.get(timeout=5)
        elif kind == "topic":
            md = h.send(b"a%d" % who, partition=who % 8)
            with h.consumer(start={md.partition: md.offset}, partitions=[md.partition]) as c:
                m = c.get(timeout=5)
                assert bytes(m.data) == b"a%d" % who, bytes(m.data)
                del m
        for x in hs:
            x.close()
        say(fd, "ok", "%.6f" % (time.monotonic() - t0))
    except pyqmem.QmemError as e:
        say(fd, "err", type(e).__name__, "%.6f" % (time.monotonic() - t0), str(e).replace("\n", " ")[:200])


# ----------------------------------------------------------------------------
# restart loop (A9, A12): roles that run until SIGKILLed (bounded by a deadline)
# ----------------------------------------------------------------------------
def r_qprod(qname: str, it: int, fd: int, deadline_s: float) -> None:
    import pyqmem

    q = pyqmem.Queue(qname, serializer=None, create=False)
    end = time.monotonic() + deadline_s
    seq = 0
    while time.monotonic() < end:
        q.put(b"%d:%d:" % (it, seq) + b"p" * (seq % 300), timeout=max(0.0, end - time.monotonic()))
        say(fd, "qa", it, seq)
        seq += 1
        if seq % 8 == 0:
            time.sleep(0.0005)   # a few hundred per run: the restarts are the point


def r_qcons(qname: str, it: int, fd: int, deadline_s: float) -> None:
    import pyqmem

    q = pyqmem.Queue(qname, serializer=None, create=False)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            m = q.get(timeout=0.05)
        except pyqmem.Empty:
            continue
        p, s, pad = m.split(b":")
        say(fd, "qd", it, int(p), int(s), int(len(pad) == int(s) % 300 and pad == b"p" * len(pad)))


def r_tsend(topic_dir: str, tname: str, it: int, fd: int, deadline_s: float) -> None:
    import pyqmem

    t = pyqmem.Topic(tname, dir=topic_dir, create=False)
    end = time.monotonic() + deadline_s
    seq = 0
    while time.monotonic() < end:
        md = t.send(b"%d:%d" % (it, seq))
        say(fd, "ta", it, seq, md.partition, md.offset)
        seq += 1
        if seq % 8 == 0:
            time.sleep(0.0005)


def r_member(topic_dir: str, tname: str, group: str, it: int, fd: int, deadline_s: float) -> None:
    import pyqmem

    t = pyqmem.Topic(tname, dir=topic_dir, create=False)
    c = t.consumer(group=group, visibility_timeout=30)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            m = c.get(timeout=0.05)
        except pyqmem.Empty:
            continue
        p, s = bytes(m.data).split(b":")
        if p != b"restart":
            say(fd, "gd", it, int(p), int(s), m.partition, m.offset)
        m.ack()
        say(fd, "gk", it, m.partition, m.offset)
        del m


# ----------------------------------------------------------------------------
# lost wakeups (G4): both sides block
# ----------------------------------------------------------------------------
class WaitStats:
    """Durations of blocking calls: count, max, how many took >= `slow` s."""

    def __init__(self, slow: float = 0.05):
        self.slow = slow
        self.n = 0
        self.max = 0.0
        self.slow_count = 0
        self.total = 0.0
        self.slow_ones: list[float] = []

    def add(self, d: float) -> None:
        self.n += 1
        self.total += d
        if d > self.max:
            self.max = d
        if d >= self.slow:
            self.slow_count += 1
            if len(self.slow_ones) < 10:
                self.slow_ones.append(d)

    def words(self):
        return [self.n, "%.6f" % self.max, self.slow_count, "%.6f" % self.total,
                ",".join("%.4f" % d for d in self.slow_ones) or "-"]


def handoff_producer(qname: str, n: int, timeout: float, fd: int, deadline_s: float) -> None:
    """Put 0..n-1 into a maxsize=1 queue with put(timeout), one at a time (so it sleeps
    whenever the consumer has not taken the last one); report "done" + WaitStats words
    or "stalled seq secs" if a put ran out of time."""
    import pyqmem

    q = pyqmem.Queue(qname, create=False)
    ws = WaitStats()
    end = time.monotonic() + deadline_s
    now = time.monotonic
    for seq in range(n):
        t0 = now()
        try:
            q.put(seq, timeout=timeout)
        except pyqmem.Full:
            say(fd, "stalled", seq, "%.6f" % (now() - t0))
            return
        ws.add(now() - t0)
        if t0 > end:
            break
    q.put(None, timeout=timeout)
    say(fd, "done", *ws.words())


def pingpong_reader(topic_dir: str, tname: str, reply: str, n: int, timeout: float, fd: int) -> None:
    """Read records 0..n-1 of a one-partition topic with get(timeout), answering each
    on the queue `reply`; report "done" + WaitStats words, or "stalled seq secs"."""
    import pyqmem

    t = pyqmem.Topic(tname, dir=topic_dir, create=False)
    q = pyqmem.Queue(reply, create=False)
    ws = WaitStats()
    now = time.monotonic
    with t.consumer(start="earliest") as c:
        for seq in range(n):
            t0 = now()
            try:
                m = c.get(timeout=timeout)
            except pyqmem.Empty:
                say(fd, "stalled", seq, "%.6f" % (now() - t0))
                return
            ws.add(now() - t0)
            if m.offset != seq:
                say(fd, "wrong", seq, m.offset)
                return
            if bytes(m.data) == b"end":
                q.put(seq)
                break
            del m
            q.put(seq)
    say(fd, "done", *ws.words())


# ----------------------------------------------------------------------------
# SIGINT during blocking calls (I1)
# ----------------------------------------------------------------------------
def sigint_target(qget: str, qput: str, topic_dir: str, tname: str, group: str, modes: list,
                  fd: int) -> None:
    """For each mode of `modes` (a trial): say "ready i mode", then repeat that blocking
    call (no timeout) until SIGINT raises KeyboardInterrupt; say "caught i mode t".
    What the calls returned is kept in lists (an append is not cut short by a signal:
    CPython runs handlers after a call, not before it) and reported at the end, with
    SIGINT ignored: "qgot x", "qput seq" (put returned), "qput_int seq" (a put that
    raised: it may or may not have put), "tgot offset", "gdeliv offset" (get returned),
    "ggot offset" (ack returned)."""
    import pyqmem

    qg = pyqmem.Queue(qget, create=False)
    qp = pyqmem.Queue(qput, create=False)
    t = pyqmem.Topic(tname, dir=topic_dir, create=False)
    tc = t.consumer(start="earliest")
    gc = t.consumer(group=group, start="earliest", visibility_timeout=60)
    qgot, qput_ok, qput_int, tgot, gdeliv, ggot = [], [], [], [], [], []
    seq = 0
    for i, mode in enumerate(modes):
        say(fd, "ready", i, mode)
        try:
            while True:
                if mode == "qget":
                    qgot.append(qg.get())
                elif mode == "qput":
                    s, seq = seq, seq + 1      # never put twice, whatever is interrupted
                    try:
                        qp.put(s)
                    except KeyboardInterrupt:
                        qput_int.append(s)
                        raise
                    qput_ok.append(s)
                elif mode == "tget":
                    tgot.append(tc.get().offset)
                else:
                    m = gc.get()
                    gdeliv.append(m.offset)
                    m.ack()
                    ggot.append(m.offset)
                    del m
        except KeyboardInterrupt:
            say(fd, "caught", i, mode, "%.9f" % time.monotonic())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # what the handles kept from gets a signal ended (and whatever else is there)
    while True:
        try:
            qgot.append(qg.get_nowait())
        except pyqmem.Empty:
            break
    while True:
        try:
            tgot.append(tc.get(timeout=0).offset)
        except pyqmem.Empty:
            break
    for word, xs in (("qgot", qgot), ("qput", qput_ok), ("qput_int", qput_int), ("tgot", tgot),
                     ("gdeliv", gdeliv), ("ggot", ggot)):
        for x in xs:
            say(fd, word, x)
    gc.close()
    tc.close()
    t.close()
    say(fd, "bye")
