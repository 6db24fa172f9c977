"""Queue: a FIFO between processes over a shared-memory ring.

Point-to-point with competing consumers: every message goes to exactly one
``get`` while no process dies.  A drop-in for ``multiprocessing.Queue`` and
``queue.Queue`` (same method names, ``Full``/``Empty`` derive from theirs).

The C handle is per thread: the creating thread uses the handle opened by
the constructor, every other thread lazily gets its own ``dup()`` of it on
first use (released when that thread ends, or by ``close()``).
"""

import os
import sys
import threading
import warnings
import weakref
from multiprocessing import reduction
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Tuple,
    Type,
    Union,
    overload,
)

from ._args import check_int as _check_int
from ._args import check_timeout
from ._dual import dualmethod
from ._native import _core
from .errors import Closed, Full, QmemError
from .naming import check_name
from .serializers import RawSerializer, resolve

if TYPE_CHECKING:
    from .serializers import Serializer

__all__ = ["Queue"]

_MODES = {None: _core.OPEN_OR_CREATE, True: _core.CREATE_ONLY, False: _core.OPEN_ONLY}


_FOREVER = _core.FOREVER
_DEFAULT_CAPACITY = 16 * 2**20


def _check_attached(
    ring: _core.Ring, name: str, capacity: Optional[int], maxsize: Optional[int]
) -> None:
    """ValueError if the queue `ring` opened has another capacity or maxsize
    than the ones asked for (None: any)."""
    if capacity is not None:
        rounded = 1 << max(12, (capacity - 1).bit_length())
        if ring.capacity != rounded:
            raise ValueError(
                f"queue {name!r} exists with capacity {ring.capacity}, not {rounded}: "
                "leave capacity=None to attach to it, or unlink it first"
            )
    if maxsize is not None and ring.maxsize != maxsize:
        raise ValueError(
            f"queue {name!r} exists with maxsize {ring.maxsize}, not {maxsize}: "
            "leave maxsize=None to attach to it, or unlink it first"
        )


def _warn_old_dir_variable() -> None:
    """DeprecationWarning while $PYQMEM_SHM_DIR is set: $PYQMEM_DIR names
    the folder of queues and topics alike (the C core reads it first)."""
    if os.environ.get("PYQMEM_SHM_DIR"):
        if os.environ.get("PYQMEM_DIR"):
            what = "is ignored: $PYQMEM_DIR is set and wins"
        else:
            what = "is deprecated: set $PYQMEM_DIR, the folder of every queue and topic"
        warnings.warn(f"$PYQMEM_SHM_DIR {what}", DeprecationWarning, stacklevel=3)


def _deadline(block: bool, timeout: Optional[float]) -> int:
    """Absolute deadline for queue.Queue-style `block` and `timeout` (seconds)."""
    if not block:
        return _core.NOWAIT
    if timeout is None:
        return _core.FOREVER
    kind = type(timeout)
    if (kind is float or kind is int) and 0 <= timeout < 1e9:  # the common case, fast
        return _core.now_ns() + int(timeout * 1e9)
    return _core.deadline_ns(check_timeout(timeout))


def _keep_if_interrupted(ring: _core.Ring, items: List[Any], exc: BaseException) -> None:
    """A get took `items` but deserializing them raised `exc`.  Ctrl-C (or
    another signal handler's KeyboardInterrupt or SystemExit) that lands
    there must not lose them: they go back to the handle, and its next get
    returns them.  A record that cannot be deserialized (an Exception) is
    not given back: it would fail every later get."""
    if not isinstance(exc, Exception):
        ring.keep(items)


def _attach(name: str, serializer: Any, stall_timeout: Optional[float] = 5.0) -> "Queue":
    """Unpickle a Queue token: attach to the existing queue by name."""
    return Queue(name, serializer=serializer, create=False, stall_timeout=stall_timeout)


def _attach_fd(dup: Any, serializer: Any, stall_timeout: Optional[float]) -> "Queue":
    """Unpickle an anonymous Queue's token: attach through the descriptor
    multiprocessing passed along (``reduction.DupFd``)."""
    fd = dup.detach()
    try:
        ring = _core.Ring.open_fd(fd)
    finally:
        os.close(fd)  # the handle opened a description of its own
    q = Queue.__new__(Queue)
    q._setup(ring, None, serializer, resolve(serializer), stall_timeout, _stall_ns(stall_timeout))
    return q


def _stall_ns(stall_timeout: object) -> int:
    """Nanoseconds of a `stall_timeout` in seconds (None or 0: never fence)."""
    if stall_timeout is None:
        return 0
    if isinstance(stall_timeout, bool) or not isinstance(stall_timeout, (int, float)):
        raise TypeError(
            f"stall_timeout must be a number of seconds or None, not {type(stall_timeout).__name__}"
        )
    if not 0 <= stall_timeout <= 86400 * 365:  # NaN fails both comparisons
        raise ValueError(
            f"stall_timeout must be between 0 and one year (seconds), got {stall_timeout!r}"
        )
    return int(stall_timeout * 1e9)


def _unlink_queue(self: "Queue", missing_ok: bool = False) -> None:
    """Remove the queue's name so it can no longer be attached; handles
    already attached (in any process) keep working until closed.  Raises
    NotFound if there is none, unless `missing_ok`.  Also works after
    close().  An anonymous queue has no name: nothing to do (it goes when
    its last handle does).  Also ``Queue.unlink(name, missing_ok=False)``
    without opening it."""
    if self._name is not None:
        _unlink_name(self._name, missing_ok)


def _unlink_named(cls: "Type[Queue]", name: str, missing_ok: bool = False) -> None:
    """Remove the name of the queue `name` without opening it (attached
    handles keep working); NotFound if there is none, unless `missing_ok`.
    Also ``q.unlink(missing_ok=False)`` on an open Queue."""
    name = check_name(name, "queue name")
    _warn_old_dir_variable()  # (an open queue warned when it was opened)
    _unlink_name(name, missing_ok)


def _unlink_name(name: str, missing_ok: bool) -> None:
    try:
        _core.unlink(name)
    except FileNotFoundError:
        if not missing_ok:
            raise


for _form in (_unlink_queue, _unlink_named):  # as help() and tracebacks name them
    _form.__name__, _form.__qualname__ = "unlink", "Queue.unlink"


class Queue:
    """A FIFO of Python objects in shared memory, usable from any process.

    ``Queue(name=None, *, capacity=None, maxsize=None, serializer="pickle",
    create=None, stall_timeout=5.0)``, or ``Queue(maxsize)``.

    - `name`: None (or an int, taken as `maxsize`, as ``multiprocessing.Queue(10)``)
      makes an anonymous queue: no file anywhere, shared with other processes
      by passing the Queue object to them (``Process`` arguments, pool
      initargs, or anything multiprocessing pickles), and gone when the last
      process holding it closes it or exits, killed or not.  A name makes a
      named queue in ``$PYQMEM_DIR`` (else /dev/shm) that any process can
      attach by name and that stays, with its messages, until ``unlink()``.

    - `capacity`: ring bytes (rounded up to a power of two, 4096 to 2**40;
      None: 16 MiB when creating); any message up to ``capacity // 4`` bytes
      after serialization fits.  The ring's memory is reserved when the queue
      is created: 100 default queues take 1.6 GiB of /dev/shm, so give many
      small queues a small capacity.
    - `maxsize`: bound on the number of messages (None or 0: only the bytes
      bound).
    - `serializer`: ``"pickle"``, ``"json"``, ``None``/``"raw"`` (bytes-like
      in, bytes out) or an object with ``dumps(obj) -> bytes-like or str``
      and ``loads(bytes) -> obj``.
    - `create`: ``None`` create or attach, ``True`` must create
      (AlreadyExists), ``False`` must attach (NotFound).  Attaching keeps the
      existing queue's capacity and maxsize; giving another one is a
      ValueError (leave them None to attach to whatever is there).
    - `stall_timeout` (extension): seconds this handle's gets wait behind a
      message whose producer is alive but frozen inside ``put`` (SIGSTOP, a
      debugger) before skipping it; when that producer resumes, its ``put``
      starts again, so the message arrives later, once.  A dead producer's
      message is skipped as soon as its death is seen.  ``None`` or 0: wait
      for the producer however long it takes.
    """

    @overload
    def __init__(
        self,
        name: Optional[str] = None,
        *,
        capacity: Optional[int] = None,
        maxsize: Optional[int] = None,
        serializer: Any = "pickle",
        create: Optional[bool] = None,
        stall_timeout: Optional[float] = 5.0,
    ) -> None: ...
    @overload
    def __init__(
        self,
        maxsize: int,
        /,
        *,
        capacity: Optional[int] = None,
        serializer: Any = "pickle",
        stall_timeout: Optional[float] = 5.0,
    ) -> None: ...
    def __init__(
        self,
        name: Union[str, int, None] = None,
        *,
        capacity: Optional[int] = None,
        maxsize: Optional[int] = None,
        serializer: Any = "pickle",
        create: Optional[bool] = None,
        stall_timeout: Optional[float] = 5.0,
    ) -> None:
        if isinstance(name, int) and not isinstance(name, bool):  # Queue(maxsize), as mp.Queue
            if maxsize is not None:
                raise TypeError("Queue() got maxsize twice (positionally and by keyword)")
            name, maxsize = None, name
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(
                    "a queue's name must be a str (or an int: the maxsize of an anonymous "
                    f"queue), not {type(name).__name__}"
                )
            name = check_name(name, "queue name")
            _warn_old_dir_variable()
        elif create is not None:
            raise ValueError("create= is for named queues: an anonymous queue is always new")
        if capacity is not None:
            _check_int("capacity", capacity, 4096, 2**40)
        if maxsize is not None:
            _check_int("maxsize", maxsize, 0, 2**63 - 1)
        stall_ns = _stall_ns(stall_timeout)
        if create is not None and not isinstance(create, bool):
            raise TypeError(f"create must be None, True or False, not {type(create).__name__}")
        serializer_obj = resolve(serializer)
        size = _DEFAULT_CAPACITY if capacity is None else capacity
        if name is None:
            ring = _core.Ring.create_anonymous(size, maxsize or 0)
        else:
            ring = _core.Ring.open(name, _MODES[create], size, maxsize or 0)
            try:
                _check_attached(ring, name, capacity, maxsize)
            except BaseException:
                ring.close()
                raise
        self._setup(ring, name, serializer, serializer_obj, stall_timeout, stall_ns)

    def _setup(
        self,
        ring: _core.Ring,
        name: Optional[str],
        serializer: Any,
        serializer_obj: "Serializer",
        stall_timeout: Optional[float],
        stall_ns: int,
    ) -> None:
        """Become the Queue of the open handle `ring`."""
        self._serializer = serializer_obj
        self._raw = isinstance(serializer_obj, RawSerializer)
        self._serializer_spec = serializer
        self._name = name
        self._label = ring.label  # "queue 'jobs'" or "the anonymous queue", for messages
        self._lock = threading.Lock()
        self._closed = False
        self._origin = ring
        self._origin.set_stall_timeout(stall_ns)
        self._stall_timeout = stall_timeout
        self._others: weakref.WeakSet[_core.Ring] = weakref.WeakSet()
        self._local = threading.local()
        self._local.ring = self._origin
        self._capacity = self._origin.capacity
        self._max_message = self._origin.max_message

    def _ring(self) -> _core.Ring:
        """This thread's handle."""
        local: Dict[str, _core.Ring] = self._local.__dict__  # a dict lookup is the cheapest way in
        if "ring" in local:
            return local["ring"]
        with self._lock:
            if self._closed:
                raise Closed(f"{self._label} is closed")
            ring = self._origin.dup()
            self._others.add(ring)
        self._local.ring = ring
        return ring

    # ----- properties ---------------------------------------------------
    @property
    def name(self) -> Optional[str]:
        """The queue's name (None for an anonymous queue)."""
        return self._name

    @property
    def capacity(self) -> int:
        """Ring bytes."""
        return self._capacity

    @property
    def max_message(self) -> int:
        """Largest serialized message accepted, in bytes (capacity // 4)."""
        return self._max_message

    @property
    def maxsize(self) -> int:
        """Bound on the number of messages, 0 = only the bytes bound.
        Assignable, as in queue.Queue: the new bound holds for every handle
        in every process (messages already in stay; a smaller bound holds
        puts back until enough are taken)."""
        return self._ring().maxsize

    @maxsize.setter
    def maxsize(self, value: int) -> None:
        _check_int("maxsize", value, 0, 2**63 - 1)
        self._ring().set_maxsize(value)

    @property
    def closed(self) -> bool:
        """True after close()."""
        return self._closed

    # ----- put ------------------------------------------------------------
    def put(self, obj: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Put `obj`, waiting for room if `block` (at most `timeout` seconds;
        None = forever).  Raises Full when there is no room in time."""
        deadline = _FOREVER if block and timeout is None else _deadline(block, timeout)
        ring = self._ring()
        if self._raw and type(obj) is bytes:
            ring.put(obj, deadline)  # the core refuses an oversize one before copying
        else:
            ring.put(self._serializer.encode(obj, self._max_message), deadline)

    def put_nowait(self, obj: Any) -> None:
        """Put `obj` if there is room now, else raise Full."""
        self.put(obj, False)

    def put_many(
        self, objs: Iterable[Any], block: bool = True, timeout: Optional[float] = None
    ) -> None:
        """Put every object of `objs`, in order.  Every object is serialized
        (and checked against max_message) before the first is put.  When the
        time runs out, raises Full with ``.count`` = how many were put."""
        deadline = _FOREVER if block and timeout is None else _deadline(block, timeout)
        ring = self._ring()
        if type(objs) is not list:
            objs = list(objs)  # once: a generator is read one time only
        if self._raw:
            records = objs
            try:  # bytes-like objects go straight to the ring (it checks every size first)
                ring.put_many(records, deadline)
                return
            except (BufferError, ValueError) as exc:
                # a non-contiguous buffer (BufferError, or numpy's ValueError) was
                # refused before anything was put: let encode() check and copy it
                if isinstance(exc, QmemError):
                    raise
        encode = self._serializer.encode
        records = [encode(obj, self._max_message) for obj in objs]
        done = start = 0
        try:
            while start < len(records):
                if isinstance(records[start], list):  # a gathered record
                    ring.put(records[start], deadline)
                    done, start = done + 1, start + 1
                    continue
                end = start + 1
                while end < len(records) and not isinstance(records[end], list):
                    end += 1
                done += ring.put_many(records[start:end], deadline)
                start = end
        except Full as exc:
            exc.count = done + (exc.count or 0)
            raise

    # ----- get ------------------------------------------------------------
    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the next object, waiting for one if `block` (at
        most `timeout` seconds; None = forever).  Raises Empty if none came."""
        deadline = _FOREVER if block and timeout is None else _deadline(block, timeout)
        ring = self._ring()
        if self._raw:
            return ring.get(deadline)
        serializer = self._serializer
        item = ring.get_frame(deadline) if serializer.frames else ring.get(deadline)
        try:
            return serializer.decode(item)
        except BaseException as exc:
            _keep_if_interrupted(ring, [item], exc)
            raise

    def get_nowait(self) -> Any:
        """Remove and return the next object if there is one, else raise Empty."""
        return self.get(False)

    def get_many(
        self, max_messages: int, block: bool = True, timeout: Optional[float] = None
    ) -> List[Any]:
        """Remove and return up to `max_messages` objects as a list: waits (as
        get) for the first, then takes what is already there.  Raises Empty
        if none came."""
        _check_int("max_messages", max_messages, 1, sys.maxsize)
        deadline = _FOREVER if block and timeout is None else _deadline(block, timeout)
        ring = self._ring()
        serializer = self._serializer
        items = ring.get_many(max_messages, deadline, serializer.frames)
        if self._raw:
            return items
        try:
            return [serializer.decode(item) for item in items]
        except BaseException as exc:
            _keep_if_interrupted(ring, items, exc)
            raise

    # ----- tasks ----------------------------------------------------------
    def task_done(self) -> None:
        """Say that a message got from the queue has been processed, as in
        ``queue.Queue`` and ``multiprocessing.JoinableQueue``: the count of
        unfinished tasks lives in the queue, so any process may call it.
        ValueError if called more times than messages were got."""
        self._ring().task_done(1)

    def join(self, timeout: Optional[float] = None) -> bool:
        """Block until every message ever put has been got and marked done
        with task_done() (in any process), or `timeout` seconds pass (None:
        forever).  True when all are done, False on timeout.  A message lost
        with a consumer killed inside its get counts as done; one whose
        consumer was killed after its get and before task_done() stays
        unfinished, so give join a timeout where workers may be killed."""
        deadline = _FOREVER if timeout is None else _deadline(True, timeout)
        return bool(self._ring().join(deadline))

    @property
    def unfinished_tasks(self) -> int:
        """Messages put and not yet marked done (see join)."""
        return self._ring().unfinished()

    # ----- state ----------------------------------------------------------
    def qsize(self) -> int:
        """Messages in the queue at the instant of the call."""
        return self._ring().depth()

    def __len__(self) -> int:
        return self.qsize()

    def empty(self) -> bool:
        """True if the queue holds no message at the instant of the call."""
        return self.qsize() == 0

    def __bool__(self) -> bool:
        """Always True: a queue is an object, not a container to test for
        emptiness (``len(q)`` and ``empty()`` say that)."""
        return True

    def full(self) -> bool:
        """True if maxsize > 0 and the queue holds maxsize messages or more."""
        depth = self.qsize()
        maxsize = self.maxsize
        return maxsize > 0 and depth >= maxsize

    def stats(self) -> Dict[str, int]:
        """Counters as a dict: put, got, bytes_put, bytes_got, depth,
        depth_bytes, used_bytes, capacity, max_message, maxsize, producers,
        consumers, members (queue-wide) and abandoned, reclaimed, member_slot
        (this thread's handle)."""
        return self._ring().stats()

    # ----- lifetime -------------------------------------------------------
    def join_thread(self) -> None:
        """Nothing to wait for (``multiprocessing.Queue`` waits for its feeder
        thread here; a put here is in the queue when it returns)."""

    def cancel_join_thread(self) -> None:
        """Nothing to cancel (see join_thread): a process may exit at once
        after a put, and the message stays in the queue."""

    def close(self) -> None:
        """Release this process's handles (idempotent); later calls raise
        Closed, also calls blocked in other threads.  The queue itself stays
        (see unlink)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            rings = [self._origin, *self._others]
        for ring in rings:
            ring.close()

    # q.unlink(missing_ok=False) and Queue.unlink(name, missing_ok=False)
    unlink = dualmethod(_unlink_queue).on_class(_unlink_named)

    @staticmethod
    def exists(name: str) -> bool:
        """True if a queue called `name` exists."""
        check_name(name, "queue name")
        _warn_old_dir_variable()
        return _core.exists(name)

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> Tuple[Callable[..., "Queue"], Tuple[Any, ...]]:
        if self._closed:
            raise Closed(f"{self._label} is closed")
        if self._name is None:
            # the descriptor travels with the pickle: inherited by a child being
            # spawned, else sent over a Unix socket by multiprocessing's
            # resource sharer (fetched once, by the one who unpickles it)
            dup = reduction.DupFd(self._origin.fd())
            return _attach_fd, (dup, self._serializer_spec, self._stall_timeout)
        return _attach, (self._name, self._serializer_spec, self._stall_timeout)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        name = "anonymous" if self._name is None else repr(self._name)
        return f"<pyqmem.Queue {name} capacity={self._capacity}{state}>"
