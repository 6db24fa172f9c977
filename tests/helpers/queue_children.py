"""Entry points for the child processes of the anonymous-queue and task tests
(importable by every start method: tests/ is on the children's path, test modules
are not)."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

_POOL_QUEUE = None


def echo(q_in, q_out, n):
    """Answer n items of q_in on q_out, tagged with this process's pid."""
    for _ in range(n):
        q_out.put(("echo", os.getpid(), q_in.get(timeout=30)), timeout=30)


def pool_init(q):
    global _POOL_QUEUE
    _POOL_QUEUE = q


def pool_task(i):
    _POOL_QUEUE.put(i * i, timeout=30)
    return i


def pool_task_with_queue(q, i):
    q.put(-i, timeout=30)
    return i


def take_one_and_die(q, ready):
    """Get one message, say so, and die by SIGKILL (no task_done, no close)."""
    q.get(timeout=30)
    ready.put("took")
    os.kill(os.getpid(), signal.SIGKILL)


def double_until_none(jobs, results):
    """A JoinableQueue-style worker: results.put(2 * item), then task_done."""
    for item in iter(jobs.get, None):
        results.put(item * 2)
        jobs.task_done()
    jobs.task_done()  # the sentinel is a task too


def kill_a_child_holding_one(q, ready, reaper):
    """Parent side: a child (forkserver, else spawn) takes one message of `q`
    with take_one_and_die; returns once it is dead of SIGKILL."""
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    p = mp.get_context(method).Process(target=take_one_and_die, args=(q, ready))
    p.start()
    reaper.add(p)
    assert ready.get(timeout=30) == "took"
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
