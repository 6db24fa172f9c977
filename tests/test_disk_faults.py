"""Disk full and I/O errors: a typed error, nothing partial, nothing falsely durable.

reliability-matrix.md rows B5 (ENOSPC during append, roll, preallocation, offset
commit, group file creation), B6 (EIO from fdatasync/fsync: the partition
turns read-only, no later success is reported for unsynced data) and E4
(/dev/shm too small when a Queue is created: an error at create, never a
SIGBUS later).  docs/design/faults.md, "Disk full and I/O errors", says
what a caller sees.

Two methods:

- A real full file system: a 1 MiB tmpfs mounted for the test (CI runs as
  root; elsewhere the tests skip when mounting is not permitted).  The
  scenario runs in a child interpreter, so a SIGBUS fails the test instead
  of killing pytest.
- SQLite's ``ioerr`` loop: ``strace -e inject=SYSCALL:error=E:when=N`` makes
  the N-th call of SYSCALL fail, for N over the calls a small script makes
  (tests/helpers/disk_scripts.py: queue, topic with rolls, fsync
  durability, consumer group).  After each run the test reopens everything
  and checks: the child did not crash, every error was an OSError with the
  injected errno (never CorruptError), every acknowledged record is there
  with its bytes, nothing else is there, and either the failed step worked
  when tried again on the same handles (ENOSPC) or, after a failed sync,
  the partition stayed read-only (no later send returned).
  PYQMEM_DISK_FAULT_N (default 10) bounds how many N are tried per system
  call, spread evenly over 1..K where K is the count of a run without
  injection; set it high to try every N.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyqmem
from helpers import disk_scripts
from helpers.tools import require_tool

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FAULT_N = int(os.environ.get("PYQMEM_DISK_FAULT_N", "10"))
SYNC_CALLS = ("fdatasync", "fsync")


# ---------------------------------------------------------------------------
# a small file system
# ---------------------------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(path, size="1m"):
    """A tmpfs of `size` mounted on `path` (an empty folder) for the block."""
    why = None
    if os.geteuid() != 0:
        why = "mounting a tmpfs needs root"
    else:
        os.makedirs(path, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(path)], capture_output=True, text=True)
        if res.returncode:
            why = f"mount -t tmpfs failed: {res.stderr.strip()}"
    if why:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


PRELUDE = textwrap.dedent(
    """
    import errno, os, sys
    import pyqmem

    def expect_enospc(call):
        try:
            call()
        except pyqmem.CorruptError as exc:
            raise AssertionError(f"ENOSPC surfaced as CorruptError: {exc}")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, repr(exc)
            return exc
        raise AssertionError(f"{call} did not raise")

    def fill(folder, name="filler"):
        # take every free byte (tmpfs has no reserved blocks); return the path
        path = os.path.join(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                os.write(fd, b"f" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        return path
    """
)


def run_child(body, env=None, timeout=60):
    script = PRELUDE + textwrap.dedent(body) + "\nprint('ALIVE', flush=True)\n"
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail
    assert "ALIVE" in proc.stdout, detail
    return proc


def test_queue_larger_than_shm_is_enospc_at_create_and_a_fitting_one_never_sigbus(tmp_path):
    # E4: posix_fallocate at create; the pages of a created ring are all there
    with small_tmpfs(tmp_path / "shm") as shm:
        run_child("""
            shm = os.environ["PYQMEM_DIR"]
            exc = expect_enospc(lambda: pyqmem.Queue("big", capacity=4 * 2**20))
            assert "big" in str(exc), str(exc)
            assert os.listdir(shm) == [], os.listdir(shm)   # nothing half-created
            q = pyqmem.Queue("fits", capacity=256 * 1024)
            filler = fill(shm)
            expect_enospc(lambda: pyqmem.Queue("more", capacity=64 * 1024))
            # write every page of the ring twice over while the fs is full
            for rnd in range(2):
                n = 0
                while True:
                    try:
                        q.put(bytes([n % 251]) * 4000, block=False)
                    except pyqmem.Full:
                        break
                    n += 1
                assert n > 40, n
                got = [q.get(block=False) for _ in range(n)]
                assert got == [bytes([k % 251]) * 4000 for k in range(n)]
            os.unlink(filler)
            pyqmem.Queue("more", capacity=64 * 1024).close()   # space is back
            q.close()
        """, env={"PYQMEM_DIR": shm})


def test_topic_on_full_disk_raises_enospc_keeps_data_and_resumes_without_reopen(tmp_path):
    # B5: allocation at create and in steps while appending, roll, group file
    # creation, offset commits
    with small_tmpfs(tmp_path / "fs") as fs:
        run_child(f"""
            fs = {fs!r}
            # segments bigger than the disk: the topic is created (a segment's space is
            # allocated in steps), the send that needs space there is not raises ENOSPC
            # before it claims anything, and deleting the topic gives the space back
            big = pyqmem.Topic("big", dir=fs, segment_bytes=2 * 2**20)
            big_acked = 0
            while True:
                try:
                    big.send(b"b" * 60000)
                except OSError as exc:
                    assert not isinstance(exc, pyqmem.CorruptError), repr(exc)
                    assert exc.errno == errno.ENOSPC, repr(exc)
                    break
                big_acked += 1
                assert big_acked < 100
            assert big_acked >= 4, big_acked   # the first 256 KiB were there
            c = big.consumer()
            assert len(c.get_many(1000, timeout=1)) == big_acked   # nothing partial
            c.close()
            big.delete()
            assert not os.path.exists(os.path.join(fs, "big"))
            spare = os.path.join(fs, "spare")
            with open(spare, "wb") as f:
                f.write(b"s" * 300 * 1024)
            t = pyqmem.Topic("t", dir=fs, segment_bytes=128 * 1024, retention_bytes=None)
            g = t.consumer(group="early", visibility_timeout=60)
            acked = []
            while True:
                try:
                    md = t.send(b"%06d" % len(acked) + b"v" * 3000)
                except OSError as exc:
                    assert not isinstance(exc, pyqmem.CorruptError), repr(exc)
                    assert exc.errno == errno.ENOSPC, repr(exc)
                    break
                assert md.offset == len(acked), (md.offset, len(acked))
                acked.append(md.offset)
                assert len(acked) < 10000
            assert len(acked) > 50, len(acked)   # ~42 a segment: rolls happened
            # still full: the error repeats, a new group cannot be created,
            # the existing group commits offsets (its file is preallocated)
            expect_enospc(lambda: t.send(b"again"))
            expect_enospc(lambda: t.consumer(group="late"))
            for m in g.get_many(50, timeout=1):
                m.ack()
            def read_all(expected):
                c = t.consumer(start="earliest")
                got = []
                while len(got) < expected + 1:
                    try:
                        got.extend(c.get_many(500, timeout=0.3))
                    except pyqmem.Empty:
                        break
                c.close()
                return got
            got = read_all(len(acked))
            assert [m.offset for m in got] == acked   # nothing partial, nothing lost
            assert all(m.value == b"%06d" % k + b"v" * 3000 for k, m in enumerate(got))
            # space comes back: the same handle goes on, offsets continue
            os.unlink(spare)
            md = t.send(b"%06d" % len(acked) + b"v" * 3000)
            assert md.offset == len(acked), (md.offset, len(acked))
            acked.append(md.offset)
            got = read_all(len(acked))
            assert [m.offset for m in got] == acked
            late = t.consumer(group="late", start="earliest")
            assert late.get(timeout=1).offset == 0
            late.close()
            g.close()
            t.close()
            # a reopen sees the same
            t = pyqmem.Topic("t", dir=fs, create=False)
            assert [m.offset for m in read_all(len(acked))] == acked
            t.close()
            print("acked", len(acked))
        """)


# ---------------------------------------------------------------------------
# the injection loop
# ---------------------------------------------------------------------------
SYSCALL_LINE = re.compile(r"^\d+\s+(\w+)\(")


def traced_run(tmp_dir, durability, trace, inject=None):
    """One run of helpers.disk_scripts under strace attached after start-up.

    Returns (returncode, report dict or None, strace log text, stderr)."""
    strace = require_tool("strace")
    folder = tmp_dir / "data"
    folder.mkdir(mode=0o700)
    report = tmp_dir / "report.json"
    with open(report, "wb") as f:
        f.truncate(disk_scripts.REPORT_BYTES)
    log = tmp_dir / "strace.log"
    child = subprocess.Popen(
        [sys.executable, "-m", "helpers.disk_scripts", str(folder), durability, str(report)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tracer = None
    try:
        assert child.stdout.readline().strip() == "ready", child.communicate()
        cmd = [strace, "-f", "-qq", "-o", str(log), "-e", f"trace={','.join(trace)}"]
        if inject:
            cmd += ["-e", f"inject={inject}"]
        with open(tmp_dir / "strace.err", "w") as errf:
            tracer = subprocess.Popen(cmd + ["-p", str(child.pid)],
                                      stdout=subprocess.DEVNULL, stderr=errf)
        deadline = time.monotonic() + 10
        while not _traced(child.pid):
            if tracer.poll() is not None:   # e.g. ptrace not permitted here
                why = f"strace could not attach: {(tmp_dir / 'strace.err').read_text()}"
                if IN_CI:
                    pytest.fail(why)
                pytest.skip(why)
            assert time.monotonic() < deadline, "strace did not attach in 10 s"
            time.sleep(0.005)
        child.stdin.write("go\n")
        child.stdin.flush()
        _, err = child.communicate(timeout=60)
        tracer.wait(timeout=10)
    finally:
        for p in (child, tracer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    raw = report.read_bytes().rstrip(b"\0")
    return child.returncode, json.loads(raw) if raw else None, log.read_text(), err


def _traced(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1]) != 0
    return False


def spread(k, budget):
    """Up to `budget` values of 1..k, evenly spread, first and last included."""
    if k <= budget:
        return list(range(1, k + 1))
    if budget == 1:
        return [1]
    return sorted({1 + round(j * (k - 1) / (budget - 1)) for j in range(budget)})


def check_run(folder, rc, rep, err, syscall, error, durability):
    """The checks after one run; returns a tally of what happened."""
    assert rc == 0, f"child died (exit {rc}, {signal.Signals(-rc).name if rc < 0 else ''})\n{err}"
    assert rep and rep.get("done"), f"no report\n{err}"
    assert "script_error" not in rep, rep["script_error"]
    sync = syscall in SYNC_CALLS
    allowed = {getattr(errno, error)} | ({errno.EIO} if sync else set())
    for ev in rep["events"]:
        assert "CorruptError" not in ev["mro"], ev
        assert "OSError" in ev["mro"] and ev["errno"] in allowed, ev
    sends = rep["send_results"]
    first_fail = sends.index(False) if False in sends else None
    read_only = sync and durability == "fsync" and first_fail is not None
    if read_only:
        # never "retry fsync, report success": after a failed sync no send returns
        assert not any(sends[first_fail:]), (sends, rep["events"])
    else:
        # a one-off ENOSPC: the same step works when tried again on the same handles
        failed = {(ev["step"]) for ev in rep["events"] if ev["attempt"] == 0}
        twice = {(ev["step"]) for ev in rep["events"] if ev["attempt"] == 1}
        assert not twice, rep["events"]
        assert len(failed) <= 1, rep["events"]
    extra = _check_reopen(folder, rep, read_only)
    return {"errors": bool(rep["events"]), "read_only": read_only, "extra": extra}


def _check_reopen(folder, rep, read_only):
    acked = {off: i for i, off in rep["acked"]}
    try:
        t = pyqmem.Topic("t", dir=str(folder), create=False)
    except pyqmem.NotFound:
        assert not acked
        # a creator that failed left no topic; creating one now works
        t = pyqmem.Topic("t", dir=str(folder), segment_bytes=disk_scripts.SEGMENT, retention_bytes=None)
    try:
        c = t.consumer(start="earliest")
        seen = {}
        for _ in range(100):
            try:
                msgs = c.get_many(64, timeout=0.05)   # no writer: all there
            except pyqmem.Empty:
                break
            for m in msgs:
                i = disk_scripts.index_of(m.value)
                assert i is not None and m.offset not in seen, (m.offset, bytes(m.value[:16]))
                seen[m.offset] = i
        c.close()
        for off, i in acked.items():
            assert seen.get(off) == i, (off, i, seen.get(off))
        failed_sends = rep["send_results"].count(False)
        extra = len(seen) - len(acked)
        # a record whose send raised may be there (fsync failed after commit), no more
        assert 0 <= extra <= failed_sends, (sorted(seen), sorted(acked), rep["events"])
        with contextlib.suppress(pyqmem.NotFound):
            g = t.consumer(group="g")
            with contextlib.suppress(pyqmem.Empty):
                for m in g.get_many(64, timeout=0.05):
                    m.ack()
            g.close()
        if read_only:
            with pytest.raises(OSError) as ei:
                t.send(disk_scripts.value_of(999))
            assert ei.value.errno == errno.EIO and "read-only" in str(ei.value), ei.value
        else:
            md = t.send(disk_scripts.value_of(999))
            c = t.consumer(start={0: md.offset})
            assert c.get(timeout=1).value == disk_scripts.value_of(999)
            c.close()
    finally:
        t.close()
    return extra


# (syscall, errno, durability): ENOSPC wherever space or inodes are taken;
# EIO and ENOSPC from the syncs of fsync durability
INJECTIONS = [
    ("fallocate", "ENOSPC", "os"),
    ("openat", "ENOSPC", "os"),
    ("mkdir", "ENOSPC", "os"),
    ("mkdirat", "ENOSPC", "os"),
    ("write", "ENOSPC", "os"),
    ("rename", "ENOSPC", "os"),
    ("openat", "EMFILE", "fsync"),   # could not open a file to sync it: not sticky
    ("fdatasync", "EIO", "fsync"),
    ("fsync", "EIO", "fsync"),
    ("fdatasync", "ENOSPC", "fsync"),
]


@pytest.fixture(scope="module")
def baseline_counts(tmp_path_factory):
    """How often a run without injection makes each system call, per durability."""
    counts = {}
    for durability in ("os", "fsync"):
        tmp = tmp_path_factory.mktemp(f"baseline-{durability}")
        names = sorted({s for s, _, d in INJECTIONS if d == durability})
        rc, rep, log, err = traced_run(tmp, durability, names)
        check_run(tmp / "data", rc, rep, err, "none", "ENOSPC", durability)
        assert not rep["events"], rep["events"]
        assert len(rep["acked"]) == disk_scripts.SENDS
        per = dict.fromkeys(names, 0)
        for line in log.splitlines():
            m = SYSCALL_LINE.match(line)
            if m and m.group(1) in per:
                per[m.group(1)] += 1
        counts[durability] = per
    print("calls per run:", counts)
    return counts


@pytest.mark.timeout(300)
@pytest.mark.parametrize("syscall,error,durability", INJECTIONS,
                         ids=[f"{s}-{e}-{d}" for s, e, d in INJECTIONS])
def test_injected_io_error_is_typed_and_loses_no_acknowledged_record(
        tmp_path, baseline_counts, syscall, error, durability):
    k = baseline_counts[durability][syscall]
    if k == 0:
        pytest.skip(f"the script makes no {syscall} call")
    tally = {"runs": 0, "injected": 0, "errors": 0, "absorbed": 0, "read_only": 0, "extra": 0}
    for n in spread(k, FAULT_N):
        run_dir = tmp_path / f"n{n}"
        run_dir.mkdir()
        rc, rep, log, err = traced_run(run_dir, durability, [syscall],
                                       f"{syscall}:error={error}:when={n}")
        tally["runs"] += 1
        injected = "(INJECTED)" in log
        res = check_run(run_dir / "data", rc, rep, err, syscall, error, durability)
        tally["injected"] += injected
        tally["errors"] += res["errors"]
        tally["absorbed"] += injected and not res["errors"]
        tally["read_only"] += res["read_only"]
        tally["extra"] += res["extra"]
        if not injected:
            break   # the script completed without reaching call n
    print(f"{syscall}:{error} ({durability}): K={k} {tally}")
    assert tally["injected"] >= 1, tally
