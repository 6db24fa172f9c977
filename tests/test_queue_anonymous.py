"""Anonymous queues: ``pyqmem.Queue()`` and ``pyqmem.Queue(maxsize)`` behave like
``multiprocessing.Queue()``: no name, no file in /dev/shm or $PYQMEM_DIR, shared by
handing the object to other processes (Process arguments under every start method,
pool initargs, pool task arguments), and gone with the last process that holds it,
whether it exits or is killed."""
from __future__ import annotations

import concurrent.futures
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap

import pytest

import pyqmem
from helpers import queue_children


def _shm_snapshot():
    """Every pyqmem file of this user in /dev/shm and in $PYQMEM_DIR."""
    found = set()
    for folder in {"/dev/shm", os.environ.get("PYQMEM_DIR") or "/dev/shm"}:
        for entry in os.listdir(folder):
            if entry.startswith(f"pyqmem.{os.geteuid()}.") or folder != "/dev/shm":
                found.add(os.path.join(folder, entry))
    return found


def test_an_anonymous_queue_has_no_name_and_no_file():
    before = _shm_snapshot()
    with pyqmem.Queue() as q:
        q.put({"a": 1})
        assert q.get(timeout=5) == {"a": 1}
        assert q.name is None and "anonymous" in repr(q)
        assert _shm_snapshot() == before
        q.unlink()  # nothing to unlink: no error
        q.put(2)
        assert q.get(timeout=5) == 2


def test_queue_of_an_int_is_maxsize_as_in_multiprocessing():
    with pyqmem.Queue(2) as q:
        assert q.maxsize == 2 and q.name is None
        q.put(1)
        q.put(2)
        assert q.full()
        with pytest.raises(pyqmem.Full):
            q.put_nowait(3)


@pytest.mark.parametrize("kw, exc, text", [
    (dict(maxsize=3), TypeError, "maxsize twice"),
    (dict(create=True), ValueError, "create= is for named queues"),
])
def test_anonymous_queue_arguments_are_checked(kw, exc, text):
    with pytest.raises(exc, match=text):
        pyqmem.Queue(5 if "maxsize" in kw else None, **kw)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_anonymous_queues_pass_to_children_under_every_start_method(reaper, method):
    ctx = mp.get_context(method)
    q_in, q_out = pyqmem.Queue(), pyqmem.Queue()
    try:
        procs = [ctx.Process(target=queue_children.echo, args=(q_in, q_out, 5)) for _ in range(2)]
        for p in procs:
            p.start()
            reaper.add(p)
        for i in range(10):
            q_in.put(i)
        got = sorted(q_out.get(timeout=30)[2] for _ in range(10))
        assert got == list(range(10))
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        q_in.close()
        q_out.close()


@pytest.mark.timeout(120)
def test_anonymous_queues_pass_as_pool_initargs_and_as_task_arguments():
    ctx = mp.get_context("spawn")
    with pyqmem.Queue() as q, concurrent.futures.ProcessPoolExecutor(
            2, mp_context=ctx, initializer=queue_children.pool_init, initargs=(q,)) as pool:
        assert sorted(pool.map(queue_children.pool_task, range(6))) == list(range(6))
        assert sorted(q.get(timeout=30) for _ in range(6)) == [i * i for i in range(6)]
        # a task argument travels through the pool's pipe: the descriptor goes by
        # multiprocessing's resource sharer
        assert pool.submit(queue_children.pool_task_with_queue, q, 7).result(timeout=60) == 7
        assert q.get(timeout=30) == -7


_CREATOR = textwrap.dedent("""
    import sys, pyqmem
    q = pyqmem.Queue()
    q.put(b"x" * 1000)
    print("ready", flush=True)
    if sys.argv[1] == "wait":
        sys.stdin.read()
""")


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_nothing_is_left_behind_when_the_creator_exits_or_is_killed(how):
    before = _shm_snapshot()
    child = subprocess.Popen([sys.executable, "-c", _CREATOR, "wait" if how == "sigkill" else "exit"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"
        if how == "sigkill":
            child.send_signal(signal.SIGKILL)
        assert child.wait(30) in (0, -signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert _shm_snapshot() == before


@pytest.mark.timeout(120)
def test_a_killed_child_attached_to_an_anonymous_queue_wedges_nothing(reaper):
    with pyqmem.Queue() as q, pyqmem.Queue() as ready:
        q.put("for the child")
        queue_children.kill_a_child_holding_one(q, ready, reaper)
        q.put("after")
        assert q.get(timeout=5) == "after"
        assert q.stats()["members"] == 1
