"""Wall-clock jumps (reliability-matrix.md row F5), with libfaketime.

What the code uses (checked in csrc/ and pyqmem/):

- Leases, visibility timeouts, retry delays, blocking deadlines and the group's sweep
  clock are CLOCK_MONOTONIC (qm_now_ns); a group file also records the boot id, so a
  monotonic clock from another boot is never compared with this one.  A jump of the wall
  clock (settimeofday, NTP step, a VM resume) therefore moves no lease: no member sees a
  lease expire early or late.
- Record timestamps of a Topic are the sender's CLOCK_REALTIME at send (like Kafka's
  CreateTime): a sender whose clock is off stamps its records with its own time; offsets
  and order are unaffected.
- Retention by age compares a closed segment's newest timestamp with the wall clock of
  the process that runs retention: a clock stepped forward ages segments early, one
  stepped back keeps them longer; the active segment is never deleted.  Retention walks
  the segments oldest first and stops at the first it keeps, so one record stamped in
  the future (a sender whose clock ran ahead) holds back age retention of its segment
  and of every later one until the wall clock has passed it by the retention time
  (Kafka behaves the same; it bounds the skew with message.timestamp.difference.max.ms).

libfaketime runs in a child with FAKETIME_DONT_FAKE_MONOTONIC=1 (a real wall-clock jump
leaves CLOCK_MONOTONIC alone; libfaketime's default would shift that too, which no real
clock step does) and FAKETIME_TIMESTAMP_FILE + FAKETIME_NO_CACHE=1, so the test moves
the child's wall clock while it runs.  The child avoids time.sleep (libfaketime breaks
Python's absolute-monotonic sleep after a jump; pyqmem's waits are raw futex calls).
"""
from __future__ import annotations

import glob
import os
import select
import subprocess
import sys
import textwrap
import time

import pytest

import pyqmem
from helpers.tools import require_tool


def _libfaketime() -> str:
    require_tool("faketime")
    for pattern in ("/usr/lib/*/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1",
                    "/usr/local/lib/faketime/libfaketime.so.1", "/usr/lib64/faketime/libfaketime.so.1"):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    pytest.fail("faketime is installed but libfaketime.so.1 was not found")


_MEMBER = textwrap.dedent("""
    import sys, time
    import pyqmem
    topic_dir, name, group, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    def say(*a):
        sys.stdout.write(" ".join(str(x) for x in a) + "\\n"); sys.stdout.flush()
    t = pyqmem.Topic(name, dir=topic_dir, create=False)
    c = t.consumer(group=group, visibility_timeout=20)
    held = []
    while len(held) < n:
        held.append(c.get(timeout=5))
    say("held", len(held), "%.3f" % time.time())
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "poll":            # a get in this process runs the sweep with our clock
            try:
                m = c.get(timeout=float(cmd[1]))
                say("got", m.offset, m.delivery_count, "%.3f" % time.time())
            except pyqmem.Empty:
                say("none", "%.3f" % time.time())
        elif cmd[0] == "send":          # a record stamped with our clock
            md = t.send(b"from-child", partition=0)
            say("sent", md.offset, "%.3f" % md.timestamp, "%.3f" % time.time())
        elif cmd[0] == "retain":
            say("retained", t.retain(), "%.3f" % time.time())
        elif cmd[0] == "ack":
            stale = 0
            for m in held:
                try:
                    m.ack()
                except pyqmem.StaleAck:
                    stale += 1
            held.clear()
            say("acked", stale)
        elif cmd[0] == "bye":
            break
    c.close(); t.close()
    say("bye")
""")


class Child:
    """A Python child under libfaketime whose wall-clock offset the test sets."""

    def __init__(self, clock_file, args):
        self.clock_file = clock_file
        self.set_offset("+0")
        # after what is preloaded already (a sanitizer runtime must stay first)
        preload = " ".join(x for x in (os.environ.get("LD_PRELOAD", ""), _libfaketime()) if x)
        env = dict(os.environ, LD_PRELOAD=preload, FAKETIME_TIMESTAMP_FILE=clock_file,
                   FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        env.pop("FAKETIME", None)
        self.p = subprocess.Popen([sys.executable, "-c", _MEMBER, *args], env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def set_offset(self, spec):
        with open(self.clock_file + ".tmp", "w") as f:
            f.write(spec + "\n")
        os.replace(self.clock_file + ".tmp", self.clock_file)

    def ask(self, cmd, timeout=15.0):
        if cmd is not None:
            self.p.stdin.write((cmd + "\n").encode())
            self.p.stdin.flush()
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline().decode().split() if r else []
        assert line, f"child said nothing to {cmd!r}: rc={self.p.poll()} {self.stderr()}"
        return line

    def stderr(self):
        if self.p.poll() is None:
            return ""
        return self.p.stderr.read().decode(errors="replace")[-2000:]

    def close(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            f.close()


@pytest.mark.timeout(60)
def test_lease_holder_whose_wall_clock_jumps_an_hour_either_way_keeps_its_leases(
    topic_dir, tname, tracked, tmp_path
):
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, create=True, retention_bytes=None))
    for i in range(3):
        t.send(b"r%d" % i, partition=0)
    other = tracked(t.consumer(group="g", visibility_timeout=20))   # a member on the real clock
    child = Child(str(tmp_path / "clock"), [topic_dir, tname, "g", "3"])
    try:
        held = child.ask(None)
        assert held[:2] == ["held", "3"], held
        seen = []
        for spec, hours in (("+1h", 1), ("-1h", -1), ("+0", 0)):
            child.set_offset(spec)
            line = child.ask("poll 0.3")               # the holder sweeps with the jumped clock
            assert line[0] == "none", f"after {spec} the holder was given {line}"
            seen.append(round((float(line[-1]) - time.time()) / 3600))
            with pytest.raises(pyqmem.Empty):          # and the other member gets nothing
                m = other.get(timeout=0.3)
                pytest.fail(f"after {spec}: offset {m.offset} redelivered (delivery {m.delivery_count})")
        assert seen == [1, -1, 0], f"the child's wall clock did not move as set: {seen}"
        assert child.ask("ack") == ["acked", "0"], "acks after the jumps were refused as stale"
        assert child.ask("bye")[0] == "bye"
    finally:
        child.close()
    g = t.stats()["groups"]["g"][0]
    assert (g["committed"], g["pending"], g["redelivered"]) == (3, 0, 0), g
    print(f"\nF5 group: holder's wall clock +1h, -1h, back: 0 redeliveries, 3 acks accepted; "
          f"child clock offsets seen (h): {seen}")


@pytest.mark.timeout(60)
def test_sender_with_a_jumped_clock_stamps_its_own_time_and_retention_uses_the_wall_clock_of_who_runs_it(
    topic_dir, tname, tracked, tmp_path
):
    # segments of 64 KiB, records of 20 KiB: every third send rolls a segment
    t = tracked(pyqmem.Topic(tname, dir=topic_dir, partitions=1, segment_bytes=1 << 16,
                             retention_seconds=1800, create=True, retention_bytes=None))
    t.consumer(group="g").close()

    def fill(n):
        return [t.send(b"x" * 20_000, partition=0).offset for _ in range(n)]

    child = Child(str(tmp_path / "clock"), [topic_dir, tname, "g", "0"])
    try:
        assert child.ask(None)[0] == "held"
        # 1. retention by age follows the wall clock of the process that runs it
        fill(9)
        segs0 = t.stats()["partitions"][0]["segments"]
        assert t.retain() == 0                    # real clock: nothing is 30 min old
        child.set_offset("+1h")
        deleted_ahead = int(child.ask("retain")[1])
        st = t.stats()["partitions"][0]
        assert deleted_ahead == segs0 - 1 and st["segments"] == 1, (deleted_ahead, segs0, st)
        assert st["start_offset"] > 0 and st["end_offset"] == 9, st
        # 2. a sender an hour ahead, one an hour behind: each record carries its
        #    sender's wall clock; offsets and order are unaffected
        stamps, offsets = {}, []
        for spec, hours in (("+1h", 1), ("-1h", -1), ("+0", 0)):
            child.set_offset(spec)
            line = child.ask("send")
            offsets.append(int(line[1]))
            stamps[hours] = float(line[2]) - time.time()
        assert offsets == [9, 10, 11], offsets
        assert [round(stamps[h] / 3600) for h in (1, -1, 0)] == [1, -1, 0], stamps
        with t.consumer(start={0: 9}, partitions=[0]) as r:
            ts = [r.get(timeout=5).timestamp - time.time() for _ in range(3)]
        assert [round(x / 3600) for x in ts] == [1, -1, 0], f"stored timestamps {ts}"
        # 3. the record stamped an hour ahead keeps its segment, and (oldest first)
        #    every later one, from age retention until the wall clock passes it
        fill(9)
        segs1 = t.stats()["partitions"][0]["segments"]
        child.set_offset("+1h")
        deleted_pinned = int(child.ask("retain")[1])
        assert child.ask("bye")[0] == "bye"
    finally:
        child.close()
    assert deleted_pinned == 0 and t.stats()["partitions"][0]["segments"] == segs1, (deleted_pinned, segs1)
    print(f"\nF5 topic: retention (30 min) on the real clock deleted 0 of {segs0} segments, run by a "
          f"process 1 h ahead {deleted_ahead} (every closed one); record timestamps are the "
          f"sender's wall clock (+1h/-1h/0 kept, offsets in order); a record stamped 1 h ahead "
          f"keeps its segment and the {segs1 - 1} after it from age retention (deleted: {deleted_pinned})")
