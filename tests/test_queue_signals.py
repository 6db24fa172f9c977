"""Blocking calls and signals: Ctrl-C (SIGINT) interrupts a blocked get/put promptly,
and other signals neither cut a timeout short nor stretch it."""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyqmem

SIGINT_BUDGET = 0.100   # the contract: KeyboardInterrupt within 100 ms of Ctrl-C
TRIALS = 5

_CHILD = textwrap.dedent("""
    import signal, sys, time
    import pyqmem
    signal.signal(signal.SIGINT, signal.default_int_handler)
    name, mode, trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    q = pyqmem.Queue(name, create=False)
    def say(*a):
        sys.stdout.write(" ".join(str(x) for x in a) + "\\n"); sys.stdout.flush()
    for i in range(trials):
        say("ready", i)
        try:
            if mode == "get":
                item = q.get()
            else:
                q.put("blocked-put")
            say("returned", i)
            sys.exit(3)
        except KeyboardInterrupt:
            say("caught", "%.9f" % time.monotonic())
    say("bye")
""")


class LineReader:
    def __init__(self, proc):
        self.proc = proc
        self.buf = b""

    def line(self, timeout):
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"child said nothing within {timeout} s (rc={self.proc.poll()}); "
                                     f"stderr: {self._stderr()}")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"child exited (rc={self.proc.wait(5)}): {self._stderr()}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode().split()

    def _stderr(self):
        if self.proc.poll() is None:
            return "<still running>"
        return self.proc.stderr.read().decode(errors="replace")[-2000:]


def _spawn(reaper, name, mode, trials):
    p = subprocess.Popen([sys.executable, "-c", _CHILD, name, mode, str(trials)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    reaper.add(p)
    return p, LineReader(p)


def _interrupt_trials(p, rd, trials):
    rng = random.Random(7)
    latencies = []
    for i in range(trials):
        assert rd.line(30) == ["ready", str(i)]
        time.sleep(rng.uniform(0.15, 0.4))   # let it reach the blocking wait
        t_kill = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        words = rd.line(10)
        assert words[0] == "caught", f"blocked call did not raise KeyboardInterrupt: {words}"
        latencies.append(float(words[1]) - t_kill)
    assert rd.line(10) == ["bye"]
    assert p.wait(10) == 0
    return latencies


@pytest.mark.timeout(90)
def test_sigint_interrupts_blocked_get_without_timeout_within_100ms(qname, make_queue, reaper):
    q = make_queue()
    p, rd = _spawn(reaper, qname, "get", TRIALS)
    lat = _interrupt_trials(p, rd, TRIALS)
    assert max(lat) < SIGINT_BUDGET, f"KeyboardInterrupt latencies (s): {lat}"
    assert min(lat) >= 0
    # nothing was taken or left behind by the interrupted gets
    q.put("after")
    assert q.get(timeout=1) == "after"
    assert q.qsize() == 0


@pytest.mark.timeout(90)
def test_sigint_interrupts_blocked_put_on_full_queue_within_100ms(qname, make_queue, reaper):
    q = make_queue(maxsize=1)
    q.put("occupant")
    p, rd = _spawn(reaper, qname, "put", TRIALS)
    lat = _interrupt_trials(p, rd, TRIALS)
    assert max(lat) < SIGINT_BUDGET, f"KeyboardInterrupt latencies (s): {lat}"
    # an interrupted put leaves no half-written or extra record
    assert q.qsize() == 1
    assert q.get(timeout=1) == "occupant"
    with pytest.raises(pyqmem.Empty):
        q.get(timeout=0.1)
    q.put("x")
    assert q.get(timeout=1) == "x"


_TIMEOUT_CHILD = textwrap.dedent("""
    import signal, sys, time
    import pyqmem
    name, mode, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    hits = []
    signal.signal(signal.SIGUSR1, lambda s, f: hits.append(time.monotonic()))
    q = pyqmem.Queue(name, create=False)
    print("ready", flush=True)
    t0 = time.monotonic()
    try:
        if mode == "get":
            q.get(timeout=timeout)
        else:
            q.put("x", timeout=timeout)
        outcome = "returned"
    except pyqmem.Empty:
        outcome = "Empty"
    except pyqmem.Full:
        outcome = "Full"
    t1 = time.monotonic()
    print(outcome, "%.9f" % t0, "%.9f" % t1, len(hits), flush=True)
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["get", "put"])
def test_blocked_call_with_timeout_honours_the_timeout_despite_other_signals(qname, make_queue, reaper, mode):
    q = make_queue(maxsize=1)
    if mode == "put":
        q.put("occupant")
    timeout = 1.0
    p = subprocess.Popen([sys.executable, "-c", _TIMEOUT_CHILD, qname, mode, str(timeout)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    reaper.add(p)
    rd = LineReader(p)
    assert rd.line(30) == ["ready"]
    sent = 0
    for _ in range(5):  # SIGUSR1 every 0.15 s while the call is blocked
        time.sleep(0.15)
        if p.poll() is not None:
            break
        os.kill(p.pid, signal.SIGUSR1)
        sent += 1
    words = rd.line(10)
    assert p.wait(10) == 0, rd._stderr()
    outcome, t0, t1, hits = words[0], float(words[1]), float(words[2]), int(words[3])
    assert outcome == ("Empty" if mode == "get" else "Full")
    elapsed = t1 - t0
    assert timeout <= elapsed < timeout + 0.5, f"timeout {timeout} s took {elapsed:.3f} s"
    assert sent >= 3 and hits >= 1, "the Python signal handler never ran while blocked"


def test_exception_raised_by_a_signal_handler_propagates_out_of_a_blocked_get(make_queue):
    class Woken(Exception):
        pass

    def handler(signum, frame):
        raise Woken

    q = make_queue()
    old = signal.signal(signal.SIGUSR1, handler)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(Woken):
            q.get(timeout=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)
    q.put("still works")
    assert q.get(timeout=1) == "still works"


def test_get_with_timeout_in_main_thread_still_times_out_while_another_thread_waits(make_queue):
    q = make_queue()
    box = {}

    def other():
        try:
            box["v"] = q.get(timeout=5)
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=other)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(pyqmem.Empty):
        q.get(timeout=0.3)
    assert time.monotonic() - t0 >= 0.3
    q.put("for the thread")
    t.join(10)
    assert box.get("v") == "for the thread"


class _InterruptedLoads:
    """A serializer whose loads raises `exc` on the calls numbered in `fail_on`
    (from 1), as a Ctrl-C landing while a get deserializes would."""

    def __init__(self, exc, fail_on):
        self.exc, self.fail_on, self.calls = exc, set(fail_on), 0

    def dumps(self, obj):
        return obj.encode()

    def loads(self, buf):
        self.calls += 1
        if self.calls in self.fail_on:
            raise self.exc
        return bytes(buf).decode()


def test_ctrl_c_while_a_get_deserializes_keeps_its_message_for_the_next_get(make_queue):
    q = make_queue(serializer=_InterruptedLoads(KeyboardInterrupt(), {1}))
    for s in ("a", "b"):
        q.put(s)
    with pytest.raises(KeyboardInterrupt):
        q.get(timeout=1)
    assert [q.get(timeout=1), q.get(timeout=1)] == ["a", "b"]


def test_ctrl_c_while_get_many_deserializes_keeps_the_whole_batch_in_order(make_queue):
    q = make_queue(serializer=_InterruptedLoads(KeyboardInterrupt(), {2}))
    q.put_many(["a", "b", "c"])
    with pytest.raises(KeyboardInterrupt):
        q.get_many(3, timeout=1)
    assert q.get_many(3, timeout=1) == ["a", "b", "c"]


def test_a_record_that_fails_to_deserialize_is_not_given_back(make_queue):
    q = make_queue(serializer=_InterruptedLoads(ValueError("bad record"), {1}))
    for s in ("a", "b"):
        q.put(s)
    with pytest.raises(ValueError):
        q.get(timeout=1)
    assert q.get(timeout=1) == "b"   # "a" failed for good; it does not block the queue
