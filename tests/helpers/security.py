"""Tools of the security tests (reliability-matrix.md rows C7, D1-D5).

- ``Canary``: a file or folder a planted link points at; ``untouched()`` says whether
  it was read, written, replaced or listed since it was armed (content, mtime, inode,
  size and atime: the atime is set 10 days before the mtime, so on a ``relatime``
  mount any read, mmap or directory listing moves it).
- ``as_user``: run a function in a forked child that dropped every privilege to
  another uid (``setgroups([])``, ``setgid``, ``setuid``): root bypasses file modes, so
  permission tests need a real other user.  Returns what the function returned or
  the exception it raised (both picklable), never lets the child return into pytest.
- ``drop_privileges_supported()``: True when this process can do that (it is root).
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
import re
import select
import signal
import stat
import time

import pytest

NOBODY = 65534          # the attacker's uid/gid

_OLD = 10 * 86400 * 10**9


class Canary:
    """A file (or folder) that must stay exactly as it is."""

    def __init__(self, path, *, folder=False, content=b"canary: must never be read or written\n" * 64):
        self.path = str(path)
        self.folder = folder
        if folder:
            os.mkdir(self.path, 0o700)
            with open(os.path.join(self.path, "inside"), "wb") as f:
                f.write(content)
        else:
            with open(self.path, "wb") as f:
                f.write(content)
            os.chmod(self.path, 0o600)
        self.arm()

    def arm(self):
        """Age the atime and take the snapshot (call again after planting links:
        a hard link changes the inode's ctime and link count, not what we compare)."""
        st = os.stat(self.path)
        os.utime(self.path, ns=(st.st_mtime_ns - _OLD, st.st_mtime_ns))
        self._before = self._snapshot()

    def _snapshot(self):
        st = os.stat(self.path)
        if self.folder:
            content = tuple(sorted(os.listdir(self.path)))
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))   # listing it here is us
        else:
            with open(self.path, "rb") as f:
                content = hashlib.sha256(f.read()).hexdigest()
            os.utime(self.path, ns=(st.st_atime_ns, st.st_mtime_ns))   # so is reading it
        return {"content": content, "mtime": st.st_mtime_ns, "atime": st.st_atime_ns,
                "ino": st.st_ino, "size": st.st_size, "mode": stat.S_IMODE(st.st_mode)}

    def changes(self):
        """{field: (before, after)} for every field that changed (empty: untouched)."""
        after = self._snapshot()
        return {k: (v, after[k]) for k, v in self._before.items() if after[k] != v}


def drop_privileges_supported() -> bool:
    return os.geteuid() == 0 and hasattr(os, "setgroups")


def require_root():
    """Permission tests need root to become another user; skipped (with the reason) otherwise."""
    if not drop_privileges_supported():
        pytest.skip("needs root to switch to another uid (root bypasses file modes, so the "
                    "attacker runs as uid 65534 in a child)")


def as_user(uid, fn, *args, umask=None, timeout=30.0):
    """fn(*args) in a forked child running as `uid` (gid = uid, no groups).
    Returns ("ok", value) or ("raised", exception)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: never return into the parent's code
        status = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if umask is not None:
                os.umask(umask)
            try:
                out = ("ok", fn(*args))
            except BaseException as exc:   # reported to the parent
                out = ("raised", exc)
            try:
                data = pickle.dumps(out)
            except Exception as exc:
                data = pickle.dumps(("raised", RuntimeError(f"unpicklable result: {exc!r}: {out!r}")))
            with os.fdopen(w, "wb") as f:
                f.write(data)
        except BaseException:
            status = 70
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(r, "rb") as f:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"child as uid {uid} did not finish in {timeout} s")
            ready, _, _ = select.select([f], [], [], left)
            if ready:
                chunk = os.read(f.fileno(), 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert status == 0, f"child as uid {uid} failed before reporting (wait status {status})"
    return pickle.loads(b"".join(chunks))


def tree(path):
    """{relative path: (kind, mode, uid)} of everything under `path` (not following links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
            out[os.path.relpath(p, path)] = (kind, stat.S_IMODE(st.st_mode), st.st_uid)
    return out


# ----------------------------------------------------------------------------
# names (row D1)
# ----------------------------------------------------------------------------
NAME_RE = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_PIECES = ["..", ".", "/", "//", "\\", "\0", "a", "etc", "passwd", "%2e%2e", "%2f", " ", "-", "_",
           "~", "*", "\n", "\u2024", "\uff0e", "\u2215", "\u0430", "\u00e9", "\ud800", "p0", "groups",
           "x.dlq", "control", "pyqmem.0.q.", ".grp"]


def name_strategies():
    """(valid names, hostile str names, non-str names) as hypothesis strategies."""
    from hypothesis import strategies as st

    valid = st.from_regex(NAME_RE, fullmatch=True)
    ok_chars = st.sampled_from("abcXYZ019._-")
    hostile = st.one_of(
        st.text(max_size=40),                                     # anything at all
        st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8).map("".join),   # path-like
        st.tuples(valid, st.sampled_from(_PIECES), valid).map(lambda t: t[0][:60] + t[1] + t[2][:60]),
        st.text(ok_chars, min_size=129, max_size=300).map(lambda s: "a" + s),      # too long
        st.sampled_from(["", ".", "..", "...", ".hidden", "-x", "_x", "/abs", "a/b", "../../etc/passwd",
                         "x\0y", "\u0430bc", "a" * 129]),
    ).filter(lambda s: re.fullmatch(NAME_RE, s) is None)
    other = st.one_of(st.binary(max_size=20), st.integers(), st.none(), st.floats(),
                      st.lists(st.text(max_size=3), max_size=2), st.builds(pathlib.PurePosixPath, valid))
    return valid, hostile, other


SEG = 64 * 1024


def _close(obj):
    close = getattr(obj, "close", None)
    if callable(close):
        close()


class NameCalls:
    """Every public call that takes a queue, topic, group or dead-letter topic name,
    run against topics under `root`; ``src`` is a topic the group calls use."""

    def __init__(self, root):
        import pyqmem

        self.pyqmem = pyqmem
        self.root = root
        self.src = pyqmem.Topic("src", dir=root, segment_bytes=SEG, retention_bytes=None)
        P, r = pyqmem, root
        self.calls = {
            "Queue": lambda n: P.Queue(n, capacity=4096),
            "Queue create=True": lambda n: P.Queue(n, capacity=4096, create=True),
            "Queue create=False": lambda n: P.Queue(n, create=False),
            "Queue.exists": lambda n: P.Queue.exists(n),
            "Topic": lambda n: P.Topic(n, dir=r, segment_bytes=SEG, retention_bytes=None),
            "Topic create=False": lambda n: P.Topic(n, dir=r, create=False),
            "Topic.exists": lambda n: P.Topic.exists(n, dir=r),
            "consumer(group=)": lambda n: self.src.consumer(group=n),
            "consumer(dead_letter=)": lambda n: self.src.consumer(group="g", dead_letter=n),
            "dead-letter topic": self.dead_letter,
            "redrive(source)": lambda n: P.redrive(n, dir=r),
            "redrive(dead_letter=)": lambda n: P.redrive("src", dir=r, dead_letter=n),
        }

    def dead_letter(self, n):
        """A record of topic `n` dead-lettered into "<n>.dlq" (ValueError if that
        name is too long, before anything is touched; AssertionError if the record
        did not get there)."""
        P = self.pyqmem
        if len(n) + 4 <= 128:   # small segments (the group would make 64 MiB ones)
            P.Topic(f"{n}.dlq", dir=self.root, segment_bytes=SEG, retention_bytes=None).close()
        with P.Topic(n, dir=self.root, segment_bytes=SEG, retention_bytes=None) as t:
            with t.consumer(group="g", max_deliveries=1, retry=P.RetryPolicy(0, jitter=0)) as c:
                t.send(b"poison")
                c.get(timeout=5).nack()
                try:
                    c.get(timeout=0)   # dead-letters the record first
                except P.Empty:
                    pass
        with P.Topic(f"{n}.dlq", dir=self.root, create=False) as dlq:
            if dlq.stats()["partitions"][0]["end_offset"] != 1:
                raise AssertionError(f"{n}: the record was not dead-lettered")

    # None is no name but the default for these
    NONE_MEANS_DEFAULT = ("consumer(group=)", "redrive(dead_letter=)")
    # calls that derive a name: valid names longer than 128 - len(suffix) are refused there
    DERIVED = {"dead-letter topic": len(".dlq"), "redrive(source)": len(".redrive")}

    def applies(self, label, name):
        if label == "Queue" and (name is None or type(name) is int):
            return False   # no name: Queue() and Queue(maxsize) make an anonymous queue
        return not (name is None and label in self.NONE_MEANS_DEFAULT)

    def run(self, label, name):
        """("ok", None) or ("raised", exception type name), objects closed."""
        try:
            _close(self.calls[label](name))
        except Exception as exc:
            return type(exc).__name__
        return "ok"

    def cleanup(self, name):
        """Remove whatever a valid `name` created (outside any watched window)."""
        import shutil

        if not isinstance(name, str) or re.fullmatch(NAME_RE, name) is None:
            return
        try:
            q = self.pyqmem.Queue(name, create=False)
            q.unlink()
            q.close()
        except Exception:
            pass
        for folder in (name, f"{name}.dlq"):
            if name != "src":
                shutil.rmtree(os.path.join(self.root, folder), ignore_errors=True)
        for p in (os.path.join(self.root, "src", "groups", f"{name}.grp"),):
            if os.path.exists(p):
                os.unlink(p)

    def close(self):
        self.src.close()


def strace_child_main(argv):
    """Child run under strace: generate names with hypothesis, then call every name
    call with them between two marker stats (``/pyqmem-mark-<tag>-begin|end``), so
    that only pyqmem's own file activity falls between the markers."""
    import json

    from hypothesis import HealthCheck, Phase, given, settings

    root, n_examples, report = argv[0], int(argv[1]), argv[2]
    valid_st, hostile_st, other_st = name_strategies()
    batches = {"invalid": [], "valid": []}

    def collect(strategy, into):
        @settings(max_examples=n_examples, database=None, phases=[Phase.generate], deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(x):
            into.append(x)
        one()

    collect(hostile_st, batches["invalid"])
    collect(other_st, batches["invalid"])
    n_examples = max(n_examples // 5, 5)   # valid names cost far more (files made and removed)
    collect(valid_st, batches["valid"])
    calls = NameCalls(root)
    for label in calls.calls:   # warm up: every lazy import and first-use path before the window
        calls.run(label, "warmup")
        calls.run(label, "../warm")
        calls.cleanup("warmup")
    outcomes = {"invalid": {}, "valid": {}}
    for batch in ("invalid", "valid"):
        try:
            os.stat(f"/pyqmem-mark-{batch}-begin")
        except FileNotFoundError:
            pass
        for name in batches[batch]:
            for label in calls.calls:
                if not calls.applies(label, name):
                    continue
                got = calls.run(label, name)
                outcomes[batch].setdefault(label, {}).setdefault(got, 0)
                outcomes[batch][label][got] += 1
            if batch == "valid":
                calls.cleanup(name)   # pyqmem's own paths too
        try:
            os.stat(f"/pyqmem-mark-{batch}-end")
        except FileNotFoundError:
            pass
    calls.close()
    with open(report, "w") as f:
        json.dump({"counts": {k: len(v) for k, v in batches.items()}, "outcomes": outcomes,
                   "valid_names": batches["valid"]}, f)
