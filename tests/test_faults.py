"""A queue or topic file truncated while open is a CorruptError, never a crash.

Any process of the same user can ftruncate the files behind a Queue or a
Topic.  Touching a page past the new end of a mapping raises SIGBUS, which
used to kill the interpreter; the core now turns it into CorruptError on
that handle (csrc/src/fault.c, docs/design/faults.md).

Every scenario runs in a child interpreter, so that a crash fails the test
instead of killing pytest; the child runs with faulthandler enabled before
pyqmem is imported, as under pytest, and prints ALIVE when it got through.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

PRELUDE = textwrap.dedent(
    """
    import os, subprocess, sys, time, threading
    import pyqmem
    from pyqmem import CorruptError

    SHM = os.environ["PYQMEM_DIR"]

    def queue_file(name):
        return os.path.join(SHM, f"pyqmem.{os.geteuid()}.q.{name}")

    def truncate_elsewhere(path, size=0, delay=0.0):
        # another process does it: the kernel, not this interpreter, changes the file
        code = f"import os, time; time.sleep({delay}); os.truncate({path!r}, {size})"
        return subprocess.Popen([sys.executable, "-c", code])

    def expect_corrupt(call, what="truncated while mapped"):
        try:
            call()
        except CorruptError as exc:
            assert what in str(exc), str(exc)
            return exc
        raise AssertionError(f"{call} did not raise CorruptError")
    """
)


def run_child(body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    script = PRELUDE + textwrap.dedent(body) + "\nprint('ALIVE', flush=True)\n"
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_alive(proc: subprocess.CompletedProcess) -> None:
    detail = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, detail
    assert "ALIVE" in proc.stdout, detail


def test_queue_truncated_in_process_raises_corrupt_on_put_and_get(qname):
    assert_alive(run_child(f"""
        q = pyqmem.Queue({qname!r}, capacity=65536)
        q.put("before")
        os.truncate(queue_file({qname!r}), 0)
        exc = expect_corrupt(lambda: q.put("after"))
        assert queue_file({qname!r}) in str(exc), str(exc)
        expect_corrupt(lambda: q.get(timeout=1))
        expect_corrupt(lambda: q.get(block=False))
        q.close()
    """))


def test_queue_record_truncated_by_another_process_raises_corrupt_on_get(qname):
    assert_alive(run_child(f"""
        q = pyqmem.Queue({qname!r}, capacity=65536)
        q.put(b"x" * 1000)
        # keep the header page: only the data pages go
        truncate_elsewhere(queue_file({qname!r}), 4096 + 1024 * 64).wait()
        expect_corrupt(lambda: q.get(timeout=1))
        expect_corrupt(lambda: q.put("more"))
        q.close()
    """))


def test_blocked_get_raises_corrupt_when_another_process_truncates(qname):
    assert_alive(run_child(f"""
        q = pyqmem.Queue({qname!r}, capacity=65536)
        child = truncate_elsewhere(queue_file({qname!r}), 0, delay=0.2)
        t0 = time.monotonic()
        expect_corrupt(lambda: q.get(timeout=10))
        assert time.monotonic() - t0 < 5, time.monotonic() - t0
        child.wait()
        q.close()
    """))


def test_topic_segment_truncated_raises_corrupt_on_send_and_read(tmp_path):
    assert_alive(run_child(f"""
        t = pyqmem.Topic("events", partitions=1, dir={str(tmp_path)!r}, segment_bytes=65536, retention_bytes=None)
        for i in range(10):
            t.send(b"v" * 600)
        c = t.consumer(start="earliest")
        assert c.get(timeout=1).value == b"v" * 600
        seg = os.path.join(t.path, "p0", "00000000000000000000.log")
        truncate_elsewhere(seg, 0).wait()
        exc = expect_corrupt(lambda: t.send(b"after"))
        assert "00000000000000000000.log" in str(exc), str(exc)
        expect_corrupt(lambda: c.get(timeout=1))
        c.close()
        t.close()
    """))


def test_topic_control_file_truncated_raises_corrupt_on_send(tmp_path):
    assert_alive(run_child(f"""
        t = pyqmem.Topic("events", partitions=1, dir={str(tmp_path)!r}, segment_bytes=65536, retention_bytes=None)
        t.send(b"before")
        os.truncate(os.path.join(t.path, "p0", "control"), 0)
        exc = expect_corrupt(lambda: t.send(b"after"))
        assert "control file" in str(exc), str(exc)
        t.close()
    """))


@pytest.mark.parametrize("size", [0, 4, 100])
def test_reopening_a_topic_whose_active_segment_was_cut_is_corrupt_and_recreates_nothing(
        tmp_path, size):
    import pyqmem

    with pyqmem.Topic("events", partitions=1, dir=str(tmp_path), segment_bytes=65536, retention_bytes=None) as t:
        for i in range(10):
            t.send(b"v%d" % i)
        seg = os.path.join(t.path, "p0", "00000000000000000000.log")
    os.truncate(seg, size)
    with pytest.raises(pyqmem.CorruptError, match="segment 0 "):
        pyqmem.Topic("events", dir=str(tmp_path), retention_bytes=None)
    # not taken for an unfinished roll: the damaged file is left as it was
    assert os.path.getsize(seg) == size


def test_faulthandler_enabled_later_is_chained_once_pyqmem_maps_again(qname):
    # faulthandler.enable() after pyqmem's handler puts its own first; the
    # next mapping (here: opening a queue) puts pyqmem's back in front.
    assert_alive(run_child(f"""
        import faulthandler
        faulthandler.disable()
        first = pyqmem.Queue({qname!r} + "-a", capacity=65536)
        faulthandler.enable()
        q = pyqmem.Queue({qname!r}, capacity=65536)
        os.truncate(queue_file({qname!r}), 0)
        expect_corrupt(lambda: q.put("after"))
        q.close()
        first.close()
        os.unlink(queue_file({qname!r} + "-a"))
    """))


def test_sigbus_outside_pyqmem_still_kills_and_faulthandler_reports_it(qname, tmp_path):
    proc = run_child(f"""
        import mmap
        q = pyqmem.Queue({qname!r}, capacity=65536)   # pyqmem's handler is installed
        path = {str(tmp_path / "plain")!r}
        with open(path, "wb") as f:
            f.write(b"x" * 8192)
        f = open(path, "r+b")
        m = mmap.mmap(f.fileno(), 8192)
        os.truncate(path, 0)
        print("TOUCHING", flush=True)
        m[4096]    # not ours: SIGBUS, as without pyqmem
    """)
    assert proc.returncode == -signal.SIGBUS, (proc.returncode, proc.stdout, proc.stderr)
    assert "TOUCHING" in proc.stdout and "ALIVE" not in proc.stdout
    assert "Bus error" in proc.stderr, proc.stderr   # faulthandler was chained to


@pytest.mark.parametrize("size", [0, 4096])
def test_reopening_a_truncated_queue_is_an_error_or_a_fresh_queue(qname, size):
    # A shorter file fails the size checks; an empty one is what a creator that
    # died before writing anything leaves, and is created again.
    assert_alive(run_child(f"""
        q = pyqmem.Queue({qname!r}, capacity=65536)
        q.put("x")
        q.close()
        os.truncate(queue_file({qname!r}), {size})
        if {size}:
            expect_corrupt(lambda: pyqmem.Queue({qname!r}, create=False), "does not match")
        else:
            q = pyqmem.Queue({qname!r}, create=False)
            q.close()
    """))
