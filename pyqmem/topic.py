"""Topic: a partitioned, persistent log on memory-mapped segment files (pub/sub).

Storage
    A topic is the folder ``<dir>/<name>`` (0700).  ``dir`` defaults to
    ``$PYQMEM_DIR`` if set, else ``/dev/shm/pyqmem-<uid>`` (created 0700, and
    refused with PermissionError if it is a symlink, not ours, or open to
    group/others).  An explicit or ``$PYQMEM_DIR`` folder is created (0700) if
    missing, unless ``create=False``.  Partition ``k`` is the C partition log
    folder ``<dir>/<name>/p<k>`` (docs/design/format.md).

    ``<dir>/<name>/topic.json`` holds the topic's configuration::

        {"format": 1, "partitions": N, "segment_bytes": ...,
         "retention_bytes": ... or null, "retention_seconds": ... or null,
         "durability": "os" | "fsync"}

    It is written atomically (temp file 0600, fsync, rename, fsync of the
    folder) after the partition logs it names exist, so a topic exists
    exactly when its topic.json does.  Creating a topic or changing its
    metadata happens under ``flock`` on ``<dir>/<name>/.lock`` (0600).
    topic.json and .lock are opened as the C core opens its files: never
    through a symlink, and refused (PermissionError, nothing read) unless a
    regular file of ours, closed to group/others, with one link.  A
    creator that died before writing topic.json leaves partition folders
    behind; the next creator removes them and starts afresh.  A creator that
    fails (a full disk: OSError ENOSPC) removes them itself.  Opening reads
    and validates topic.json (bad JSON or fields: CorruptError; another
    format number: IncompatibleError).

Existing topics
    The stored configuration wins over the arguments (as for Queue's
    capacity).  ``partitions`` (default: 1 when creating, the stored count
    when attaching) may grow an existing topic -- the new partition logs are
    created, then topic.json is rewritten -- but never shrink it
    (ValueError).  A Topic object keeps the partition count it opened with;
    reopen to see partitions another process added.  At most 128 partitions
    (the C core waits on at most 128 logs at once).

Producing
    ``send`` picks the partition (see pyqmem.partitioning: explicit, else
    Kafka's murmur2 of the key, else round-robin from a random start),
    appends one record and returns a RecordMetadata.  The message id is
    ``f"{partition}-{offset}"``, unique within the topic.  A value larger
    than ``segment_bytes // 2`` after serialization is MessageTooLarge, and
    so are a key and encoded headers that together exceed
    ``segment_bytes // 4`` (the C core's bounds: such a record always fits
    in one segment).  An empty key is stored as no key.

Handles
    Partition handles are per thread, as for Queue: the opening thread uses
    the handles opened by the constructor; another thread opens its own on
    its first send to a partition (released when the thread ends or by
    ``close()``).  Consumers open their own handles.  A Topic pickles to a
    token (name, absolute dir, serializer) that re-attaches with
    ``create=False``.  Retention runs in C after each segment roll;
    ``retain()`` runs it now.
"""

import errno
import fcntl
import json
import math
import numbers
import os
import random
import re
import shutil
import stat
import threading
import time
import weakref
from typing import NamedTuple

from ._args import check_int as _check_int
from ._native import _core
from . import headers as _headers
from .consumer import Consumer, check_consumer_args
from .deadletter import DeadLetters
from .errors import AlreadyExists, Closed, CorruptError, IncompatibleError, NotFound
from .group import GroupConsumer, topic_group_stats
from .naming import check_name
from .partitioning import key_bytes, partition_for_key
from .retry import RetryPolicy
from .serializers import RawSerializer, resolve

__all__ = ["Topic", "RecordMetadata"]

FORMAT = 1
MAX_PARTITIONS = 128
_META = "topic.json"
_META_TMP = ".topic.json.tmp"
_LOCK = ".lock"
_PARTITION_DIR = re.compile(r"p[0-9]+")
_DURABILITY = {"os": 0, "fsync": _core.LOG_FSYNC}
_SEGMENT_MIN = 64 * 1024
_SEGMENT_MAX = 4 * 2**30
_RETENTION_SECONDS_MAX = (2**63 - 1) / 1e9
_DLQ_SEGMENT_BYTES = 64 * 2**20   # the default segment size


# Where ``send`` put a record: partition, offset, timestamp (float seconds
# since the epoch, UTC), id (f"{partition}-{offset}", unique within the
# topic).  A C type that behaves as that named tuple; its id is made on
# first use.
RecordMetadata = _core.RecordMetadata


def _attach(name, dir, serializer):
    """Unpickle a Topic token: attach to the existing topic."""
    return Topic(name, dir=dir, serializer=serializer, create=False)


# ----- arguments ----------------------------------------------------------
def _check_segment_bytes(value):
    _check_int("segment_bytes", value, _SEGMENT_MIN, _SEGMENT_MAX)
    if value % 4096:
        raise ValueError(f"segment_bytes must be a multiple of 4096, got {value}")


def _check_retention_bytes(value):
    if value is not None:
        _check_int("retention_bytes", value, 1, 2**64 - 1)


def _check_retention_seconds(value):
    if value is None:
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"retention_seconds must be None or a number, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value) and value <= _RETENTION_SECONDS_MAX):
        raise ValueError(f"retention_seconds must be positive and finite, got {value}")


def _check_durability(value):
    if not isinstance(value, str):
        raise TypeError(f"durability must be 'os' or 'fsync', not {type(value).__name__}")
    if value not in _DURABILITY:
        raise ValueError(f"durability must be 'os' or 'fsync', got {value!r}")


def _check_create(create):
    if create is not None and not isinstance(create, bool):
        raise TypeError(f"create must be None, True or False, not {type(create).__name__}")


# ----- folders ------------------------------------------------------------
def _dir_argument(dir):
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


def _check_private(path, what):
    """PermissionError unless `path` is a real folder of ours, closed to others."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(errno.EPERM, f"{what} is not a folder (or is a symlink)", path)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(errno.EPERM, f"{what} is not private to this user", path)


def _root(dir, make):
    """The absolute root folder, created (0700) when `make` and missing.
    Returns None if it does not exist and `make` is false."""
    path, default = _dir_argument(dir)
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
        _check_private(path, "pyqmem's default topic folder")
    elif not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "topic root is not a folder", path)
    return path


class _Config(NamedTuple):
    partitions: int
    segment_bytes: int
    retention_bytes: object    # int or None
    retention_seconds: object  # number or None
    durability: str

    def meta(self):
        return {"format": FORMAT, **self._asdict()}

    def log_args(self):
        """The configuration arguments of ``_core.Log.open``."""
        retention_ns = 0
        if self.retention_seconds is not None:
            retention_ns = max(1, min(round(self.retention_seconds * 1e9), 2**63 - 1))
        return (self.segment_bytes, self.retention_bytes or 0, retention_ns,
                _DURABILITY[self.durability])


def _open_private(path, flags):
    """os.open of a file of ours in a topic folder: a symlink, anything but a
    regular file (a FIFO would block), a file of another user, open to
    group/others or with other hard links is PermissionError, never read."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, "object is not private to this user "
                                  "(refusing to follow a symlink)", path) from None
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


def _read_meta(folder):
    """The _Config stored in `folder`, or None if there is no topic.json."""
    path = os.path.join(folder, _META)
    try:
        fd = _open_private(path, os.O_RDONLY)
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
        config = _Config(*(meta[field] for field in _Config._fields))
        _check_int("partitions", config.partitions, 1, MAX_PARTITIONS)
        _check_segment_bytes(config.segment_bytes)
        _check_retention_bytes(config.retention_bytes)
        _check_retention_seconds(config.retention_seconds)
        _check_durability(config.durability)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptError(f"{path}: bad topic metadata ({exc!r})") from None
    return config


def _fsync_dir(path):
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_meta(folder, config):
    """Replace topic.json atomically and durably (the topic folder's own
    entry in its parent too: a topic whose records were fsynced must not
    lose its folder on power loss)."""
    tmp = os.path.join(folder, _META_TMP)
    try:   # a leftover of a writer that died (or a planted link): never write through it
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(config.meta(), indent=1).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, _META))
    _fsync_dir(folder)
    _fsync_dir(os.path.dirname(os.path.abspath(folder)))


class _MetaLock:
    """``flock`` on ``<topic>/.lock``: held while creating or changing metadata."""

    def __init__(self, folder):
        self._path = os.path.join(folder, _LOCK)

    def __enter__(self):
        self._fd = _open_private(self._path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            raise
        return self

    def __exit__(self, *exc_info):
        os.close(self._fd)   # releases the lock


def _partition_path(folder, k):
    return os.path.join(folder, f"p{k}")


class Topic:
    """A partitioned, persistent log of messages, readable by any number of
    independent subscribers.

    ``Topic(name, *, partitions=1, dir=None, segment_bytes=64 * 2**20,
    retention_bytes=None, retention_seconds=None, durability="os",
    serializer=None, create=None)``

    - `partitions`: partition count when creating (default 1); for an
      existing topic None attaches as it is, a larger count grows it, a
      smaller one is ValueError.
    - `dir`: root folder (see the module docstring).
    - `segment_bytes`: size of each segment file, a multiple of 4096 in
      [64 KiB, 4 GiB]; a value up to ``segment_bytes // 2`` always fits.
    - `retention_bytes` / `retention_seconds`: drop whole old segments
      beyond this many bytes per partition / older than this; None = keep.
    - `durability`: ``"os"`` (page cache; survives any process crash) or
      ``"fsync"`` (``send`` returns after fdatasync; concurrent senders share one).
    - `serializer`: None (bytes-like values; ``Message.value`` is bytes),
      ``"pickle"``, or an object with ``dumps``/``loads`` (as for Queue).
    - `create`: None create or attach, True must create (AlreadyExists),
      False must attach (NotFound).

    The configuration of an existing topic wins over these arguments.
    """

    def __init__(self, name, *, partitions=None, dir=None, segment_bytes=64 * 2**20,
                 retention_bytes=None, retention_seconds=None, durability="os",
                 serializer=None, create=None):
        check_name(name, "topic name")
        if partitions is not None:
            _check_int("partitions", partitions, 1, MAX_PARTITIONS)
        _check_segment_bytes(segment_bytes)
        _check_retention_bytes(retention_bytes)
        _check_retention_seconds(retention_seconds)
        _check_durability(durability)
        _check_create(create)
        _dir_argument(dir)
        self._serializer = resolve(serializer)
        self._raw = isinstance(self._serializer, RawSerializer)
        self._serializer_spec = serializer
        self._name = name
        self._lock = threading.Lock()
        self._closed = False
        self._handles = weakref.WeakSet()     # every partition handle of this object
        self._consumers = weakref.WeakSet()
        self._local = threading.local()

        root = _root(dir, make=create is not False)
        if root is None:
            raise NotFound(errno.ENOENT, f"no topic {name!r}: its folder does not exist", dir)
        self._dir = root
        self._folder = os.path.join(root, name)
        wanted = _Config(partitions or 1, segment_bytes, retention_bytes, retention_seconds,
                         durability)
        config = None
        if os.path.lexists(self._folder):
            _check_private(self._folder, f"topic folder of {name!r}")
            config = _read_meta(self._folder)
        if config is None and create is False:
            raise NotFound(errno.ENOENT, f"no topic {name!r}", self._folder)
        if config is not None and create is not True and not self._grows(config, partitions):
            self._config = config
            logs = self._open_logs(range(config.partitions))
        else:
            self._config, logs = self._create_or_grow(wanted, partitions, create)
        self._local.logs = logs
        self._max_value = logs[0].max_record
        # round-robin from a random start; the opening thread's handles
        # serve the fast paths of send and send_many, which this object's
        # send/send_many are bound to (no Python frame of ours on the way)
        self._sender = _core.TopicSender(
            name, logs, self._config.partitions, random.randrange(self._config.partitions),
            self._max_value, self._raw, weakref.WeakMethod(self._send),
            weakref.WeakMethod(self._send_many))
        self.send = self._sender.send
        self.send_many = self._sender.send_many

    # ----- opening ----------------------------------------------------------
    def _grows(self, config, partitions):
        """True if `partitions` asks to grow the stored topic; ValueError if
        it asks to shrink it."""
        if partitions is None:
            return False
        if partitions < config.partitions:
            raise ValueError(
                f"topic {self._name!r} has {config.partitions} partitions; "
                f"partitions can grow but never shrink (asked for {partitions})"
            )
        return partitions > config.partitions

    def _create_or_grow(self, wanted, partitions, create):
        """Under the metadata lock: create the topic, or grow an existing
        one to `partitions`.  Returns (config, this thread's handles)."""
        try:
            os.mkdir(self._folder, 0o700)
        except FileExistsError:
            pass
        _check_private(self._folder, f"topic folder of {self._name!r}")
        with _MetaLock(self._folder):
            config = _read_meta(self._folder)
            if config is not None and create is True:
                raise AlreadyExists(errno.EEXIST, f"topic {self._name!r} exists", self._folder)
            if config is None:
                if create is False:   # removed since we looked
                    raise NotFound(errno.ENOENT, f"no topic {self._name!r}", self._folder)
                self._remove_leftovers()
                config = wanted
                fresh = range(config.partitions)
            elif self._grows(config, partitions):
                fresh = range(config.partitions, partitions)
                config = config._replace(partitions=partitions)
            else:   # grown to this size by another process meanwhile
                fresh = range(0)
            self._config = config
            try:
                logs = self._open_logs(range(config.partitions), created=fresh)
            except BaseException:
                self._undo_create(fresh)
                raise
            if fresh:
                try:
                    _write_meta(self._folder, config)
                except BaseException:
                    for log in logs:
                        log.close()
                    self._undo_create(fresh)
                    raise
        return config, logs

    def _undo_create(self, fresh):
        """A new topic failed to be created (a full disk, ...): give back the
        space its partition folders took, unless topic.json made it visible."""
        if len(fresh) != self._config.partitions or os.path.exists(
                os.path.join(self._folder, _META)):
            return
        try:
            self._remove_leftovers()
            os.unlink(os.path.join(self._folder, _META_TMP))
        except OSError:
            pass

    def _remove_leftovers(self):
        """Partition folders of a creator that died before writing topic.json."""
        for entry in os.listdir(self._folder):
            if _PARTITION_DIR.fullmatch(entry):
                path = os.path.join(self._folder, entry)
                if os.path.islink(path):   # rmtree would refuse too, with a vaguer OSError
                    raise PermissionError(errno.EPERM, "object is not private to this user "
                                          "(refusing to follow a symlink)", path)
                shutil.rmtree(path)

    def _open_logs(self, partitions, created=range(0)):
        """Handles on `partitions`; those in `created` may be created."""
        logs = []
        try:
            for k in partitions:
                logs.append(self._open_log(k, k in created))
        except BaseException:
            for log in logs:
                log.close()
            raise
        return logs

    def _open_log(self, k, create=False):
        mode = _core.OPEN_OR_CREATE if create else _core.OPEN_ONLY
        path = _partition_path(self._folder, k)
        try:
            log = _core.Log.open(path, mode, *self._config.log_args())
        except NotFound:
            raise CorruptError(f"topic {self._name!r}: partition folder {path} is missing") from None
        if log.config()["segment_bytes"] != self._config.segment_bytes:
            log.close()
            raise CorruptError(f"topic {self._name!r}: partition {k} has another segment size "
                               "than topic.json")
        self._handles.add(log)
        return log

    def _log(self, partition):
        """This thread's handle on `partition`."""
        local = self._local.__dict__
        logs = local.get("logs")
        if logs is None or logs[partition] is None:
            with self._lock:
                if self._closed:
                    raise Closed(f"topic {self._name!r} is closed")
                if logs is None:
                    logs = local["logs"] = [None] * self._config.partitions
                logs[partition] = self._open_log(partition)
        return logs[partition]

    # ----- properties -----------------------------------------------------
    @property
    def name(self):
        """The topic's name."""
        return self._name

    @property
    def dir(self):
        """The absolute root folder the topic lives in."""
        return self._dir

    @property
    def path(self):
        """The topic's folder: ``dir/name``."""
        return self._folder

    @property
    def partitions(self):
        """Number of partitions (as of opening this Topic object)."""
        return self._config.partitions

    @property
    def segment_bytes(self):
        """Bytes of each segment file."""
        return self._config.segment_bytes

    @property
    def retention_bytes(self):
        """Per-partition bytes bound of retention, or None."""
        return self._config.retention_bytes

    @property
    def retention_seconds(self):
        """Age bound of retention in seconds, or None."""
        return self._config.retention_seconds

    @property
    def durability(self):
        """``"os"`` or ``"fsync"``."""
        return self._config.durability

    @property
    def max_message(self):
        """Largest serialized value accepted, in bytes (segment_bytes // 2)."""
        return self._max_value

    @property
    def closed(self):
        """True after close()."""
        return self._closed

    # ----- producing ------------------------------------------------------
    def _encode(self, value):
        """The record value of `value`; MessageTooLarge beyond max_message."""
        return self._serializer.encode(value, self._max_value)

    def _partition(self, partition, key):
        if partition is not None:
            _check_int("partition", partition, 0, self._config.partitions - 1)
            return partition
        if key is not None:
            return partition_for_key(key, self._config.partitions)
        return self._sender.round_robin()

    def _append(self, partition, key, head, record):
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        now = time.time_ns()
        offset = self._log(partition).append(key, head, record, now)
        return RecordMetadata(partition, offset, now / 1e9, None)

    # An open Topic's send and send_many are its _core.TopicSender's (bound
    # in __init__): they take raw bytes from the opening thread and hand
    # every other call to _send / _send_many.
    def send(self, value, *, key=None, headers=None, partition=None, correlation_id=None):
        """Append `value` and return its RecordMetadata.

        `key` (str, bytes-like or None) picks the partition by Kafka's
        murmur2 unless `partition` is given; without either, round-robin.
        `headers`: dict str -> bytes-like (names starting with "qm." are
        reserved).  `correlation_id`: a str carried to
        ``Message.correlation_id``."""
        return self._sender.send(value, key=key, headers=headers, partition=partition,
                                 correlation_id=correlation_id)

    def send_many(self, values, *, key=None):
        """Send each of `values` (each partition chosen as by send) and
        return their RecordMetadata in order.  Every value is serialized and
        checked before the first is appended; if an append fails, the values
        before it stay appended."""
        return self._sender.send_many(values, key=key)

    def _send(self, value, key, headers, partition, correlation_id):
        """send() in general."""
        limit = self._max_value // 2   # key and headers: segment_bytes // 4
        raw_key = None if key is None else key_bytes(key, limit)
        p = self._partition(partition, raw_key)
        head = _headers.encode(headers, correlation_id, limit - len(raw_key or b""))
        if self._raw and type(value) is bytes and len(value) <= self._max_value:
            return self._append(p, raw_key, head, value)   # nothing to encode or check
        return self._append(p, raw_key, head, self._encode(value))

    def _send_many(self, values, key):
        """send_many() in general (`values` is a list)."""
        raw_key = None if key is None else key_bytes(key, self._max_value // 2)
        limit = self._max_value
        if self._raw and all(type(v) is bytes and len(v) <= limit for v in values):
            records = values   # nothing to encode or check
        else:
            records = [self._encode(value) for value in values]
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        # one batch per partition, each in order (round-robin or by key)
        parts = [self._partition(None, raw_key) for _ in records]
        batches = {}
        for i, p in enumerate(parts):
            batches.setdefault(p, []).append(i)
        now = time.time_ns()
        offsets = [0] * len(records)
        for p, idx in batches.items():
            batch = records if len(idx) == len(records) else [records[i] for i in idx]
            for i, off in zip(idx, self._log(p).append_many(raw_key, batch, now)):
                offsets[i] = off
        ts = now / 1e9
        return [RecordMetadata(p, off, ts, None) for p, off in zip(parts, offsets)]

    # ----- consuming --------------------------------------------------------
    def consumer(self, group=None, *, start="earliest", mode="at_least_once",
                 visibility_timeout=30.0, max_deliveries=5, dead_letter=True, ordered=False,
                 partitions=None, retry=None, check_crcs=True):
        """A Consumer of this topic (see pyqmem.consumer), or with `group` a
        member of that consumer group (a GroupConsumer, see pyqmem.group and
        docs/design/group-consumer.md).

        ``check_crcs=False`` skips verifying each record's CRC-32C on read
        (as Kafka's ``check.crcs``): every header and length is still
        validated, so a damaged record cannot make a read go astray, but
        flipped payload bytes go unnoticed.  It saves a pass over every
        value, which matters for large values read zero-copy.

        ``group=None``: an independent subscriber that sees every record
        from `start` on; `mode`, `visibility_timeout`, `max_deliveries`,
        `dead_letter`, `ordered` and `retry` are validated and apply to
        groups only.  With a group: `start` applies when the group is
        created; `max_deliveries` an int >= 1 or None (never dead-letter);
        `dead_letter` True ("<topic>.dlq"), a topic name, or False (drop);
        `retry` a pyqmem.RetryPolicy (default RetryPolicy())."""
        if group is not None:
            check_name(group, "group name")
        chosen = check_consumer_args(
            self._config.partitions, start, mode, visibility_timeout, max_deliveries,
            dead_letter, ordered, partitions)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be None or a pyqmem.RetryPolicy, not "
                            f"{type(retry).__name__}")
        if not isinstance(check_crcs, bool):
            raise TypeError(f"check_crcs must be True or False, not {type(check_crcs).__name__}")
        if group is not None and dead_letter is True:
            check_name(f"{self._name}.dlq", "dead-letter topic name (topic name + '.dlq')")
        with self._lock:
            if self._closed:
                raise Closed(f"topic {self._name!r} is closed")
        if group is None:
            consumer = Consumer(self._name, [(k, _partition_path(self._folder, k)) for k in chosen],
                                self._config.log_args(), self._serializer, start,
                                check_crcs=check_crcs)
        else:
            consumer = GroupConsumer(
                self._name, self._folder, self._config.partitions, chosen,
                self._config.log_args(), self._serializer, group, start=start, mode=mode,
                visibility_timeout=visibility_timeout, max_deliveries=max_deliveries,
                dead_letters=self._dead_letters(group, dead_letter), ordered=ordered,
                retry=retry, check_crcs=check_crcs)
        with self._lock:
            if self._closed:   # closed meanwhile: do not leak the consumer
                consumer.close()
                raise Closed(f"topic {self._name!r} is closed")
            self._consumers.add(consumer)
        return consumer

    def _dead_letters(self, group, dead_letter):
        """The DeadLetters of a member of `group` (`dead_letter` as for
        consumer()).  The dead-letter topic is opened on first use, in this
        topic's root, created with as many partitions and segments at least
        as large as this topic's (so every value that fit here fits there)."""
        if dead_letter is False:
            return DeadLetters(self._name, group, None)
        name = f"{self._name}.dlq" if dead_letter is True else dead_letter
        root, partitions = self._dir, self._config.partitions
        segment_bytes = max(self._config.segment_bytes, _DLQ_SEGMENT_BYTES)

        def open_topic():
            try:
                return Topic(name, dir=root, partitions=partitions, segment_bytes=segment_bytes,
                             create=True)
            except AlreadyExists:
                return Topic(name, dir=root, create=False)
        return DeadLetters(self._name, group, open_topic)

    # ----- state ------------------------------------------------------------
    def stats(self):
        """``{"partitions": {k: {start_offset, end_offset, bytes, segments,
        segments_rolled, abandoned, syncs, synced_appends}}, "groups":
        {name: {k: {committed, pending, lag, redelivered, dead_lettered,
        skipped}}}}`` (every consumer group file of the topic)."""
        keys = ("start_offset", "end_offset", "bytes", "segments", "segments_rolled",
                "abandoned", "syncs", "synced_appends")
        parts = {}
        for k in range(self._config.partitions):
            st = self._log(k).stats()
            parts[k] = {key: st[key] for key in keys}

        def end(k):
            if k < self._config.partitions:
                return self._log(k).bounds()[1]
            return 0   # a partition another process added since this object opened
        return {"partitions": parts, "groups": topic_group_stats(self._folder, end)}

    def retain(self):
        """Apply retention now (it also runs after every segment roll);
        returns how many segment files were deleted."""
        return sum(self._log(k).retain() for k in range(self._config.partitions))

    @staticmethod
    def exists(name, dir=None):
        """True if a topic called `name` exists in `dir` (default as for Topic)."""
        check_name(name, "topic name")
        root = _root(dir, make=False)
        return root is not None and os.path.isfile(os.path.join(root, name, _META))

    # ----- lifetime ---------------------------------------------------------
    def close(self):
        """Release this object's handles and close its consumers
        (idempotent); later calls raise Closed, also calls blocked in other
        threads.  The topic's files stay."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles)
            consumers = list(self._consumers)
        self._sender.close()
        for consumer in consumers:
            consumer.close()
        for log in handles:
            log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __reduce__(self):
        if self._closed:
            raise Closed(f"topic {self._name!r} is closed")
        return _attach, (self._name, self._dir, self._serializer_spec)

    def __repr__(self):
        state = " closed" if self._closed else ""
        return (f"<pyqmem.Topic {self._name!r} dir={self._dir!r} "
                f"partitions={self._config.partitions}{state}>")
