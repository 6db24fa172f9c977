"""The epilogue every worker process of the crash and multi-process tests shares.

A worker reports through a pipe: ``("error", who, traceback)`` when its body
raised, then ``("done", who, result)`` after it closed what it opened; a worker
killed with SIGKILL sends neither, and the parent sees the pipe's EOF.
"""
from __future__ import annotations

import contextlib
import traceback


def send(conn, *msg):
    """conn.send(msg), ignoring a parent that is gone."""
    try:
        conn.send(msg)
    except (BrokenPipeError, OSError):
        pass


@contextlib.contextmanager
def reporting(conn, who, result=lambda: None):
    """Run the body; report an exception it raised (and swallow it: the parent
    decides), close every object the body registered with the yielded
    ``closing(obj)`` (newest first), send ``("done", who, result())`` and close
    the pipe."""
    opened = []

    def closing(obj):
        opened.append(obj)
        return obj

    try:
        yield closing
    except BaseException:
        send(conn, "error", who, traceback.format_exc())
    finally:
        for obj in reversed(opened):
            obj.close()
        send(conn, "done", who, result())
        conn.close()
