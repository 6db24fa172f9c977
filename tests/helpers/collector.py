"""Parent-side collector of child reports (multiprocessing Pipes, never the queue under test).

Children send tuples over their Connection:
    ("ack", producer, [seq, ...])                      puts that returned
    ("deliver", consumer, [(producer, seq, t_put, t_recv), ...])
    ("torn", consumer, text)                           a message failed its checksum
    ("full", producer, seq)                            a put timed out (diagnostic)
    ("error", who, text)                               unexpected exception in a child
    ("hello", who)                                     the child is up and working
    ("done", who, info)                                orderly exit
A background thread feeds them into a History under a lock.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from multiprocessing.connection import wait as mp_wait

from .history import History
from .msgs import SENTINEL_PRODUCER


class Collector(threading.Thread):
    def __init__(self, history: History | None = None):
        super().__init__(name="report-collector", daemon=True)
        self.history = history if history is not None else History()
        self.lock = threading.Lock()
        self._conns: dict = {}          # Connection -> label
        self._eof: dict = {}            # label -> Event
        self._halt = threading.Event()
        self.torn: list = []
        self.errors: list = []
        self.full = Counter()
        self.done: dict = {}
        self.hello: set = set()
        self.deliveries_by: Counter = Counter()
        self._watch = None              # (t_kill, producers)
        self._watch_hit = None          # (t_recv, consumer, producer, seq)

    # -- wiring ------------------------------------------------------------
    def add(self, conn, label) -> threading.Event:
        ev = threading.Event()
        with self.lock:
            self._conns[conn] = label
            self._eof[label] = ev
        return ev

    def stop(self, timeout: float = 5.0) -> None:
        self._halt.set()
        self.join(timeout)

    def run(self) -> None:
        while not self._halt.is_set():
            with self.lock:
                conns = list(self._conns)
            if not conns:
                time.sleep(0.005)
                continue
            try:
                ready = mp_wait(conns, timeout=0.02)
            except OSError:
                ready = []
            for c in ready:
                try:
                    msg = c.recv()
                except Exception as e:  # EOF, or a report cut short by SIGKILL
                    if not isinstance(e, (EOFError, OSError)):
                        with self.lock:
                            self.errors.append(("collector", f"bad report from {self._conns.get(c)}: {e!r}"))
                    with self.lock:
                        label = self._conns.pop(c, None)
                        ev = self._eof.get(label)
                    try:
                        c.close()
                    except OSError:
                        pass
                    if ev is not None:
                        ev.set()
                    continue
                with self.lock:
                    try:
                        self._handle(msg)
                    except Exception as e:  # keep draining: a dead collector blocks every child
                        self.errors.append(("collector", f"cannot handle {msg!r:.200}: {e!r}"))

    def _handle(self, msg) -> None:
        kind = msg[0]
        if kind == "ack":
            self.history.ack_many(msg[1], msg[2])
        elif kind == "deliver":
            consumer, batch = msg[1], msg[2]
            items = [(p, s) for (p, s, _tp, _tr) in batch if p != SENTINEL_PRODUCER]
            self.history.deliver_many(consumer, items)
            self.deliveries_by[consumer] += len(items)
            w = self._watch
            if w is not None and self._watch_hit is None:
                t_kill, producers = w
                for (p, s, tp, tr) in batch:
                    if p in producers and tp > t_kill:
                        self._watch_hit = (tr, consumer, p, s)
                        break
        elif kind == "torn":
            self.torn.append(msg[1:])
        elif kind == "full":
            self.full[msg[1]] += 1
        elif kind == "error":
            self.errors.append(msg[1:])
        elif kind == "hello":
            self.hello.add(msg[1])
        elif kind == "done":
            self.done[msg[1]] = msg[2] if len(msg) > 2 else None
        else:
            self.errors.append(("collector", f"unknown report {msg!r}"))

    # -- queries (all under the lock) ---------------------------------------
    def watch(self, t_kill: float, producers) -> None:
        """Start watching for the first delivery of a message put after t_kill by one of producers."""
        with self.lock:
            self._watch = (t_kill, frozenset(producers))
            self._watch_hit = None

    def watch_hit(self):
        with self.lock:
            return self._watch_hit

    def said_hello(self, who) -> bool:
        with self.lock:
            return who in self.hello

    def max_acked(self, producer) -> int:
        with self.lock:
            return self.history.max_acked(producer)

    def delivered_by(self, consumer) -> int:
        with self.lock:
            return self.deliveries_by[consumer]

    def undelivered_acked(self) -> int:
        with self.lock:
            return self.history.undelivered_acked()

    def snapshot_problems(self):
        with self.lock:
            return list(self.torn), list(self.errors)

    def wait_until(self, predicate, timeout: float, interval: float = 0.002) -> bool:
        """Poll predicate() (called without the lock) until true or timeout."""
        end = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(interval)
