"""The shared-memory backend's files: the root folder, a topic's folder,
its ``topic.json`` and the lock that guards it (docs/design/format.md).

Root folder
    ``dir`` if given, else ``$PYQMEM_DIR`` if set, else
    ``/dev/shm/pyqmem-<uid>`` (created 0700, and refused with
    PermissionError if it is a symlink, not ours, or open to group/others).
    An explicit or ``$PYQMEM_DIR`` folder is created (0700) if missing,
    unless the topic is opened with ``create=False``.

A topic
    is the folder ``<root>/<name>`` (0700); partition ``k`` is the C
    partition log folder ``<root>/<name>/p<k>``.  ``topic.json`` holds the
    configuration::

        {"format": 1, "partitions": N, "segment_bytes": ...,
         "retention_bytes": ... or null, "retention_seconds": ... or null,
         "durability": "os" | "fsync"}

    It is written atomically (temp file 0600, fsync, rename, fsync of the
    folder and of its parent) after the partition logs it names exist, so a
    topic exists exactly when its topic.json does.  Creating a topic or
    changing its metadata happens under ``flock`` on ``<root>/<name>/.lock``
    (0600).  topic.json and .lock are opened as the C core opens its files:
    never through a symlink, and refused (PermissionError, nothing read)
    unless a regular file of ours, closed to group/others, with one link.
    Reading validates topic.json (bad JSON or fields: CorruptError; another
    format number: IncompatibleError).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from typing import Optional, Tuple, Union

from .._args import (
    check_durability,
    check_int,
    check_retention_bytes,
    check_retention_seconds,
    check_segment_bytes,
)
from .._native import _core
from ..backend import TopicConfig
from ..errors import CorruptError, IncompatibleError

__all__ = [
    "FORMAT",
    "MAX_PARTITIONS",
    "META",
    "META_TMP",
    "dir_argument",
    "check_private",
    "is_volatile",
    "root",
    "open_private",
    "read_meta",
    "write_meta",
    "fsync_dir",
    "MetaLock",
    "partition_path",
    "log_args",
]

FORMAT = 1
MAX_PARTITIONS = 128  # the C core waits on at most 128 logs at once
META = "topic.json"
META_TMP = ".topic.json.tmp"
_LOCK = ".lock"
_DURABILITY = {"os": 0, "fsync": _core.LOG_FSYNC}


def log_args(config: TopicConfig) -> Tuple[int, int, int, int]:
    """The configuration arguments of ``_core.Log.open`` for a stored
    TopicConfig (retention_bytes resolved: an int or None)."""
    retention_bytes = config.retention_bytes
    if isinstance(retention_bytes, str):
        raise ValueError(f"unresolved retention_bytes {retention_bytes!r}")
    retention_ns = 0
    if config.retention_seconds is not None:
        retention_ns = max(1, min(round(config.retention_seconds * 1e9), 2**63 - 1))
    return (
        config.segment_bytes,
        retention_bytes or 0,
        retention_ns,
        _DURABILITY[config.durability],
    )


def dir_argument(dir: Union[str, os.PathLike[str], None]) -> Tuple[str, bool]:
    """The root folder named by the `dir` argument or the environment, and
    whether it is the per-user default (which gets the strict checks)."""
    if dir is None:
        env = os.environ.get("PYQMEM_DIR")
        if env:
            return os.path.abspath(env), False
        return f"/dev/shm/pyqmem-{os.geteuid()}", True
    if not isinstance(dir, (str, os.PathLike)) or isinstance(os.fspath(dir), bytes):
        raise TypeError(f"dir must be None, a str or a path, not {type(dir).__name__}")
    path = os.fspath(dir)
    if not path or "\0" in path:
        raise ValueError(f"invalid dir {path!r}")
    return os.path.abspath(path), False


def is_volatile(path: str) -> bool:
    """True if `path` is on a file system in RAM (tmpfs, ramfs): nothing on
    it survives a power loss or a reboot, fsync or not.  False if that
    cannot be told."""
    try:
        return _core.path_in_ram(path)
    except OSError:
        return False


def check_private(path: str, what: str) -> None:
    """PermissionError unless `path` is a real folder of ours, closed to others."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(errno.EPERM, f"{what} is not a folder (or is a symlink)", path)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(errno.EPERM, f"{what} is not private to this user", path)


def root(dir: Optional[str], make: bool) -> Optional[str]:
    """The absolute root folder, created (0700) when `make` and missing.
    Returns None if it does not exist and `make` is false."""
    path, default = dir_argument(dir)
    if make:
        if default:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
        else:
            os.makedirs(path, 0o700, exist_ok=True)
    elif not os.path.lexists(path):
        return None
    if default:
        check_private(path, "pyqmem's default topic folder")
    elif not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "topic root is not a folder", path)
    return path


def open_private(path: str, flags: int) -> int:
    """os.open of a file of ours in a topic folder: a symlink, anything but a
    regular file (a FIFO would block), a file of another user, open to
    group/others or with other hard links is PermissionError, never read."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(
                errno.EPERM,
                "object is not private to this user (refusing to follow a symlink)",
                path,
            ) from None
        raise
    st = os.fstat(fd)
    reason = None
    if not stat.S_ISREG(st.st_mode):
        reason = "not a regular file"
    elif st.st_uid != os.geteuid():
        reason = f"owned by uid {st.st_uid}, not {os.geteuid()}"
    elif st.st_mode & 0o077:
        reason = f"mode {st.st_mode & 0o777:03o} is open to group or others"
    elif st.st_nlink != 1:
        reason = f"file has {st.st_nlink} links"
    if reason is not None:
        os.close(fd)
        raise PermissionError(errno.EPERM, f"object is not private to this user ({reason})", path)
    return fd


def read_meta(folder: str) -> Optional[TopicConfig]:
    """The TopicConfig stored in `folder`, or None if there is no topic.json."""
    path = os.path.join(folder, META)
    try:
        fd = open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read()
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise CorruptError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CorruptError(f"{path}: not a JSON object")
    fmt = meta.get("format")
    if type(fmt) is not int:
        raise CorruptError(f"{path}: no integer 'format'")
    if fmt != FORMAT:
        raise IncompatibleError(f"{path}: topic format {fmt}, this pyqmem reads format {FORMAT}")
    try:
        config = TopicConfig(*(meta[field] for field in TopicConfig._fields))
        check_int("partitions", config.partitions, 1, MAX_PARTITIONS)
        check_segment_bytes(config.segment_bytes)
        if isinstance(config.retention_bytes, str):
            raise ValueError("retention_bytes is stored resolved, never as a word")
        check_retention_bytes(config.retention_bytes)
        check_retention_seconds(config.retention_seconds)
        check_durability(config.durability)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptError(f"{path}: bad topic metadata ({exc!r})") from None
    return config


def fsync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_meta(folder: str, config: TopicConfig) -> None:
    """Replace topic.json atomically and durably (the topic folder's own
    entry in its parent too: a topic whose records were fsynced must not
    lose its folder on power loss)."""
    tmp = os.path.join(folder, META_TMP)
    try:  # a leftover of a writer that died (or a planted link): never write through it
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps({"format": FORMAT, **config._asdict()}, indent=1).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, META))
    fsync_dir(folder)
    fsync_dir(os.path.dirname(os.path.abspath(folder)))


class MetaLock:
    """``flock`` on ``<topic>/.lock``: held while creating or changing metadata."""

    def __init__(self, folder: str) -> None:
        self._path = os.path.join(folder, _LOCK)

    def __enter__(self) -> MetaLock:
        self._fd = open_private(self._path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)  # releases the lock


def partition_path(folder: str, k: int) -> str:
    return os.path.join(folder, f"p{k}")
