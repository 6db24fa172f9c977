"""Tools of the security tests (reliability.md rows C7, D1-D5).

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
import pickle
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
