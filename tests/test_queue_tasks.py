"""task_done()/join() and an assignable maxsize, across processes: the count of
unfinished tasks and the bound live in the queue, so a JoinableQueue-style pipeline
works with workers in other processes, and a killed worker is a documented case."""
from __future__ import annotations

import multiprocessing as mp
import threading

import pytest

import pyqmem
from helpers import queue_children


@pytest.mark.timeout(120)
def test_join_waits_until_workers_in_other_processes_mark_every_task_done(reaper):
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with pyqmem.Queue() as jobs, pyqmem.Queue() as results:
        procs = [ctx.Process(target=queue_children.double_until_none, args=(jobs, results)) for _ in range(3)]
        for p in procs:
            p.start()
            reaper.add(p)
        jobs.put_many(range(300))
        jobs.put_many([None] * 3)
        assert jobs.join(timeout=60) is True
        assert jobs.unfinished_tasks == 0
        # join returned: every result was put before its task was marked done
        assert sorted(results.get_nowait() for _ in range(300)) == [2 * i for i in range(300)]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0


def test_join_times_out_while_a_task_is_unfinished_and_task_done_is_bounded(make_queue):
    q = make_queue()
    assert q.join(timeout=0) is True  # nothing was ever put
    q.put("a")
    q.put("b")
    assert q.unfinished_tasks == 2
    assert q.join(timeout=0.01) is False
    q.get(timeout=5)
    with pytest.raises(ValueError, match="more times than messages were got"):
        q.task_done()
        q.task_done()
    assert q.unfinished_tasks == 1  # the refused call counted nothing
    q.get(timeout=5)
    q.task_done()
    assert q.join(timeout=5) is True


def test_join_returns_when_another_thread_finishes_the_last_task(make_queue):
    q = make_queue()
    q.put(1)
    item = q.get(timeout=5)
    timer = threading.Timer(0.05, q.task_done)
    timer.start()
    try:
        assert item == 1 and q.join(timeout=30) is True
    finally:
        timer.join()


@pytest.mark.timeout(120)
def test_a_worker_killed_between_get_and_task_done_leaves_its_task_unfinished(reaper):
    with pyqmem.Queue() as q, pyqmem.Queue() as ready:
        q.put("job")
        queue_children.kill_a_child_holding_one(q, ready, reaper)
        assert q.unfinished_tasks == 1  # documented: join needs a timeout where workers die
        assert q.join(timeout=0.05) is False
        q.put("next")
        q.get(timeout=5)
        q.task_done()  # any process may mark tasks done, so a supervisor can settle it
        q.task_done()
        assert q.join(timeout=5) is True


def test_an_assigned_maxsize_holds_for_every_handle_and_lets_waiting_puts_in(make_queue, qname):
    q = make_queue(maxsize=1)
    other = pyqmem.Queue(qname)  # another handle, as another process would have
    try:
        q.put(1)
        with pytest.raises(pyqmem.Full):
            other.put_nowait(2)
        done = []
        t = threading.Thread(target=lambda: done.append(other.put(2, timeout=30)))
        t.start()
        q.maxsize = 2  # wakes the waiting put
        t.join(30)
        assert done == [None] and other.maxsize == 2 and q.qsize() == 2
        with pytest.raises(ValueError):
            q.maxsize = -1
        with pytest.raises(TypeError):
            q.maxsize = "3"
        assert q.maxsize == 2
    finally:
        other.close()
