# cython: language_level=3, embedsignature=True
"""Adapter between pyqmem's Python layer and the C core (csrc/include/qmem.h).

It owns C handles (``Ring``: a shared ring; ``Log``: one partition log, read
through ``Cursor`` objects), turns status codes into exceptions (``_error``),
and releases the GIL around every wait.  It holds no policy: serialization,
defaults, argument checks and per-thread handles live in ``pyqmem.queue``,
``pyqmem.topic`` and ``pyqmem.consumer``.  The exception is the topic hot
paths at the end of this file (``TopicSender``, ``TopicReader``, ``Message``,
``RecordMetadata``): the common case of ``Topic.send``/``send_many`` and
``Consumer.get``/``get_many`` runs here without a Python frame per record,
and everything else is handed back to the Python layer.

Deadlines are absolute ``now_ns()`` nanoseconds; ``NOWAIT`` never blocks and
``FOREVER`` waits until done.  A wait runs in C for at most 50 ms at a time,
then Python's signal handlers run (Ctrl-C raises ``KeyboardInterrupt``).
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_FillInfo,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EEXIST, ENOENT, EPERM
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject_RichCompare
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8
from cpython.pythread cimport (
    NOWAIT_LOCK,
    PY_LOCK_ACQUIRED,
    PyLockStatus,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_get_thread_ident,
    PyThread_release_lock,
    PyThread_type_lock,
)
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from pyqmem._qmem cimport *

import os

from pyqmem.errors import (
    AlreadyExists,
    Closed,
    CorruptError,
    Empty,
    Full,
    IncompatibleError,
    MessageTooLarge,
    NotFound,
    QmemError,
    StaleAck,
)

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

cdef extern from "pythread.h":
    ctypedef long long PY_TIMEOUT_T
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, PY_TIMEOUT_T microseconds,
                                             int intr_flag) nogil

cdef extern from *:
    """
    static inline void qmpy_cpu_relax(void) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
    }
    """
    void qmpy_cpu_relax() nogil

NOWAIT = QM_NOWAIT
FOREVER = QM_FOREVER
OPEN_OR_CREATE = QM_OPEN_OR_CREATE
CREATE_ONLY = QM_CREATE_ONLY
OPEN_ONLY = QM_OPEN_ONLY
LOG_FSYNC = QM_LOG_FSYNC
ENOTREADY = QM_ENOTREADY    # the .status of a QmemError: an object still being created
EMEMBERS = QM_EMEMBERS      # the .status of a QmemError: member table full

cdef enum:
    _SLICE_NS = 50000000        # longest stay in C before signal handlers run
    _GIL_COPY_MAX = 65536       # records up to this size are first tried holding the GIL
    _TAG_BYTES = 0x42           # b"B": the rest of the payload is one bytes
    _TAG_OUT_OF_BAND = 0x4F     # b"O": the rest is a pickle frame (writable)


_DETAILED = frozenset((QM_ETOOBIG, QM_ECORRUPT, QM_EINCOMPAT, QM_EINVAL, QM_EPERM,
                       QM_EMEMBERS, QM_ENOTREADY))


cdef object _error(int status, object name, bint putting):
    """The exception for the negative `status` of a call on object `name`.

    Would-block and timeout mean Full when `putting`, else Empty.
    """
    cdef str text = qm_status_str(status).decode("utf-8", "replace")
    cdef str msg = f"{text}: {name!r}"
    if status in _DETAILED:   # these always leave the reason in qm_last_error()
        msg = f"{msg} ({qm_last_error().decode('utf-8', 'replace')})"
    if status == QM_EAGAIN or status == QM_ETIMEDOUT:
        return Full(msg) if putting else Empty(msg)
    if status == QM_ETOOBIG:
        return MessageTooLarge(msg)
    if status == QM_ECORRUPT or status == QM_EGONE:
        return CorruptError(msg)
    if status == QM_EINCOMPAT:
        return IncompatibleError(msg)
    if status == QM_ENOTFOUND:
        return NotFound(ENOENT, text, name)
    if status == QM_EEXIST:
        return AlreadyExists(EEXIST, text, name)
    if status == QM_EINVAL:
        return ValueError(msg)
    if status == QM_EPERM:   # the reason (symlink, owner, mode, links) in the message
        return PermissionError(EPERM, f"{text} ({qm_last_error().decode('utf-8', 'replace')})",
                               name)
    if status == QM_ECLOSED:
        return Closed(msg)
    if status == QM_ESTALE:
        return StaleAck(msg)
    if status == QM_EFULL:
        return Full(f"{msg}: the group's pending window is full (the oldest pending "
                    "record must be acked first)")
    if status > -30000:
        if putting:   # qm_log_append clears the detail first: any there is its own
            detail = qm_last_error().decode("utf-8", "replace")
            if detail:
                text = f"{text} ({detail})"
        return OSError(-status, text, name)
    exc = QmemError(msg)
    exc.status = status   # e.g. ENOTREADY (being created) vs EMEMBERS (member table full)
    return exc


cdef inline int64_t _slice_end(int64_t deadline_ns) noexcept nogil:
    """The deadline for one stay in C: `deadline_ns`, or 50 ms from now."""
    cdef int64_t end = qm_now_ns() + _SLICE_NS
    return deadline_ns if deadline_ns < end else end


cdef bint _again(int status, int64_t deadline_ns) except -1:
    """After a wait returned `status`: run signal handlers and say whether to
    wait again (a signal arrived, or only the 50 ms slice ended)."""
    if status == QM_EINTR or (status == QM_ETIMEDOUT and qm_now_ns() < deadline_ns):
        PyErr_CheckSignals()
        return True
    return False


cdef bytes _cname(str name):
    cdef bytes b = name.encode("ascii")
    if b"\0" in b:
        raise ValueError(f"invalid name {name!r}")
    return b


# Buffers of the pieces of a put, held while the GIL is released.
cdef struct _Gather:
    Py_buffer *views
    qm_iovec_t *iov
    Py_ssize_t held


cdef int _gather(tuple pieces, _Gather *g) except -1:
    """Acquire a contiguous buffer of every piece; fill g.iov. Undo with _release."""
    cdef Py_ssize_t n = len(pieces)
    g.views = <Py_buffer *>malloc((n if n > 0 else 1) * (sizeof(Py_buffer) + sizeof(qm_iovec_t)))
    if g.views == NULL:
        raise MemoryError()
    g.iov = <qm_iovec_t *>(g.views + n)
    while g.held < n:
        PyObject_GetBuffer(pieces[g.held], &g.views[g.held], PyBUF_SIMPLE)
        g.iov[g.held].base = g.views[g.held].buf
        g.iov[g.held].len = <size_t>g.views[g.held].len
        g.held += 1
    return 0


cdef void _release(_Gather *g) noexcept:
    cdef Py_ssize_t i
    for i in range(g.held):
        PyBuffer_Release(&g.views[i])
    free(g.views)


cdef object _copy_out(qm_ring_t *r, qm_record_t *rec, bint frame, object name):
    """Copy the record begun in `rec` out of the ring, then always end it.

    Returns bytes, or ``(tag, obj)`` when `frame` (see Ring.get_frame)."""
    cdef char *p = <char *>rec.data
    cdef Py_ssize_t n = <Py_ssize_t>rec.len
    cdef int tag = (<unsigned char *>p)[0] if n > 0 else -1
    cdef int status
    try:
        if not frame:
            out = PyBytes_FromStringAndSize(p, n)
        elif tag == _TAG_BYTES:
            out = (tag, PyBytes_FromStringAndSize(p + 1, n - 1))
        elif tag == _TAG_OUT_OF_BAND:
            out = (tag, PyByteArray_FromStringAndSize(p + 1, n - 1))
        else:
            out = (tag, PyBytes_FromStringAndSize(p, n))
    finally:
        status = qm_ring_get_end(r, rec)
    # QM_ECLOSED: close() in another thread interrupted the handle after the
    # copy; the record is taken either way, so it is delivered here.
    if status < 0 and status != QM_ECLOSED:
        raise _error(status, name, False)
    return out


cdef class Ring:
    """One C handle (``qm_ring_t``) on a shared ring.

    Use a handle from one thread at a time; ``dup()`` makes one for another
    thread.  ``close()`` may be called from any thread, also while a call is
    blocked in C: that call then raises Closed.
    """

    cdef qm_ring_t *_ring
    cdef int _busy          # calls inside C right now (changed with the GIL held)
    cdef bint _closed
    cdef list _stash        # taken by a get a signal handler then ended: returned next
    cdef readonly str name
    cdef object __weakref__

    def __init__(self):
        raise TypeError("use Ring.open() or Ring.dup()")

    def __dealloc__(self):
        if self._ring != NULL:
            qm_ring_close(self._ring)

    def __repr__(self):
        return f"<pyqmem._core.Ring {self.name!r}{' closed' if self._closed else ''}>"

    @staticmethod
    def open(str name, int mode, uint64_t capacity, uint64_t maxsize):
        """Open the ring `name` (mode: OPEN_OR_CREATE, CREATE_ONLY or
        OPEN_ONLY); `capacity` and `maxsize` apply only when it is created."""
        cdef bytes cname = _cname(name)
        cdef const char *c = cname
        cdef qm_ring_t *handle = NULL
        cdef Ring ring = Ring.__new__(Ring)
        cdef int status
        with nogil:
            status = qm_ring_open(c, <qm_open_mode_t>mode, capacity, maxsize, &handle)
        if status < 0:
            raise _error(status, name, False)
        ring._ring = handle
        ring.name = name
        return ring

    cdef qm_ring_t *_handle(self) except NULL:
        if self._closed:
            raise Closed(f"queue {self.name!r} is closed")
        return self._ring

    cdef qm_ring_t *_enter(self) except NULL:
        """The handle, counted busy until _leave(): close() defers freeing it."""
        cdef qm_ring_t *r = self._handle()
        self._busy += 1
        return r

    cdef void _leave(self) noexcept:
        cdef qm_ring_t *r = self._ring
        self._busy -= 1
        if self._closed and self._busy == 0 and r != NULL:
            self._ring = NULL
            with nogil:
                qm_ring_close(r)

    def set_stall_timeout(self, int64_t ns):
        """Fence a live producer's record after `ns` without a commit (0: never);
        qm_ring_set_stall_timeout.  Handles made by dup() inherit it."""
        qm_ring_set_stall_timeout(self._enter(), ns)
        self._leave()

    def dup(self):
        """A new handle on the same ring (own member slot), for another thread."""
        cdef Ring other = Ring.__new__(Ring)
        cdef qm_ring_t *handle = NULL
        cdef qm_ring_t *r = self._enter()
        cdef int status
        try:
            with nogil:
                status = qm_ring_dup(r, &handle)
        finally:
            self._leave()
        if status < 0:
            raise _error(status, self.name, False)
        other._ring = handle
        other.name = self.name
        return other

    def put(self, pieces, int64_t deadline_ns):
        """Put one record: a bytes-like object, or a list/tuple of them
        gathered into one record.  Raises Full when the deadline passes."""
        cdef _Gather g = _Gather(NULL, NULL, 0)
        cdef Py_buffer view
        cdef qm_iovec_t one
        cdef qm_ring_t *r = self._enter()
        cdef int status
        try:
            if type(pieces) is list or type(pieces) is tuple:
                _gather(tuple(pieces), &g)
                status = self._put(r, g.iov, <int>g.held, deadline_ns)
            else:   # one buffer: no tuple, no allocation
                PyObject_GetBuffer(pieces, &view, PyBUF_SIMPLE)
                try:
                    one.base = view.buf
                    one.len = <size_t>view.len
                    status = self._put(r, &one, 1, deadline_ns)
                finally:
                    PyBuffer_Release(&view)
        finally:
            _release(&g)
            self._leave()
        if status < 0:
            raise _error(status, self.name, True)

    cdef int _put(self, qm_ring_t *r, qm_iovec_t *iov, int n, int64_t deadline_ns) except? -1:
        """qm_ring_put: a small record is tried once with the GIL held (most
        puts succeed at once, and dropping the GIL costs more than the copy);
        then wait with the GIL released, in slices."""
        cdef int status = QM_EAGAIN
        cdef size_t size = 0
        cdef int i
        for i in range(n):
            size += iov[i].len
        if size <= _GIL_COPY_MAX:
            status = qm_ring_put(r, iov, n, QM_NOWAIT)
        if status == QM_EAGAIN and deadline_ns != QM_NOWAIT:
            while True:
                with nogil:
                    status = qm_ring_put(r, iov, n, _slice_end(deadline_ns))
                if not _again(status, deadline_ns):
                    break
        return status

    def put_many(self, items, int64_t deadline_ns):
        """Put each bytes-like object of `items` as one record, in order, and
        return how many were put.  When the deadline passes part way, raises
        Full with ``.count`` set to how many were put."""
        cdef _Gather g = _Gather(NULL, NULL, 0)
        cdef qm_ring_t *r = self._enter()
        cdef size_t total = 0, done = 0
        cdef int status = QM_OK
        try:
            _gather(tuple(items), &g)
            while total < <size_t>g.held:
                with nogil:
                    status = qm_ring_put_many(r, g.iov + total, <size_t>g.held - total,
                                              _slice_end(deadline_ns), &done)
                total += done
                if status == QM_OK or not _again(status, deadline_ns):
                    break
        finally:
            _release(&g)
            self._leave()
        if status < 0:
            exc = _error(status, self.name, True)
            if isinstance(exc, Full):
                exc.count = total
            raise exc
        return total

    cdef int _begin(self, qm_ring_t *r, qm_record_t *rec, int64_t deadline_ns) except -1:
        # Try once with the GIL held: when a record is there this is cheaper
        # than dropping and retaking the GIL.  Then wait without it.
        cdef int status = qm_ring_get_begin(r, rec, QM_NOWAIT)
        if status == QM_EAGAIN and deadline_ns != QM_NOWAIT:
            while True:
                with nogil:
                    status = qm_ring_get_begin(r, rec, _slice_end(deadline_ns))
                if not _again(status, deadline_ns):
                    break
        if status < 0:
            raise _error(status, self.name, False)
        return 0

    cdef int _keep(self, list items) except -1:
        """Run signal handlers now, before the taken `items` are returned: a
        signal that came while this call took them would otherwise raise
        (KeyboardInterrupt) only after we returned, and Python would drop
        them, taken from the ring and never handed out.  If a handler raises,
        the items are kept for this handle's next get and it propagates."""
        try:
            PyErr_CheckSignals()
        except BaseException:
            if self._stash is None:
                self._stash = []
            self._stash.extend(items)
            raise
        return 0

    cdef object _get(self, int64_t deadline_ns, bint frame):
        cdef qm_record_t rec
        cdef qm_ring_t *r = self._handle()
        cdef object item
        if self._stash:
            return self._stash.pop(0)
        r = self._enter()
        try:
            self._begin(r, &rec, deadline_ns)
            item = _copy_out(r, &rec, frame, self.name)
        finally:
            self._leave()
        self._keep([item])
        return item

    def get(self, int64_t deadline_ns):
        """Take the next record as bytes.  Raises Empty when the deadline passes."""
        return self._get(deadline_ns, False)

    def get_frame(self, int64_t deadline_ns):
        """Take the next record as ``(tag, obj)``.  `tag` is its first byte (-1
        if empty); tag ``ord("B")``: obj is the rest as bytes; tag ``ord("O")``:
        obj is the rest as a writable bytearray; otherwise obj is the whole
        record as bytes.  Raises Empty when the deadline passes."""
        return self._get(deadline_ns, True)

    def get_many(self, Py_ssize_t n, int64_t deadline_ns, bint frames):
        """Take up to `n` records (as get(), or get_frame() when `frames`):
        wait for the first, then take only what is already there.  Raises
        Empty only if there was none."""
        cdef qm_record_t rec
        cdef list out = []
        cdef qm_ring_t *r = self._handle()
        if self._stash:
            out = self._stash[:n]
            del self._stash[:n]
            return out
        r = self._enter()
        try:
            self._begin(r, &rec, deadline_ns)
            out.append(_copy_out(r, &rec, frames, self.name))
            # After the first record any failure ends the batch: what was
            # taken is returned, and the failure recurs on the next call.
            while len(out) < n and qm_ring_get_begin(r, &rec, QM_NOWAIT) == QM_OK:
                out.append(_copy_out(r, &rec, frames, self.name))
        finally:
            self._leave()
        self._keep(out)
        return out

    def depth(self):
        """Messages committed and not yet taken, at the instant of the call."""
        cdef uint64_t depth
        cdef int status = qm_ring_depth(self._handle(), &depth)
        if status < 0:
            raise _error(status, self.name, False)
        return depth

    def stats(self):
        """Counters of the ring and of this handle, as a dict (qm_ring_stats_t)."""
        cdef qm_ring_stats_t st
        cdef int status = qm_ring_stats(self._handle(), &st)
        if status < 0:
            raise _error(status, self.name, False)
        return st

    @property
    def capacity(self):
        """Data bytes of the ring."""
        return qm_ring_capacity(self._handle())

    @property
    def max_message(self):
        """Largest record accepted, in bytes."""
        return qm_ring_max_message(self._handle())

    @property
    def maxsize(self):
        """Message-count bound, 0 = bytes only."""
        return qm_ring_maxsize(self._handle())

    def interrupt(self):
        """Make calls blocked on this handle, and every later call, raise Closed."""
        qm_ring_interrupt(self._handle())

    def close(self):
        """Release the handle (idempotent).  A call blocked in another thread
        raises Closed, and the handle is freed when it leaves C."""
        cdef qm_ring_t *r = self._ring
        if self._closed:
            return
        self._closed = True
        qm_ring_interrupt(r)
        if self._busy == 0:
            self._ring = NULL
            with nogil:
                qm_ring_close(r)


cdef bytes _cpath(object path):
    cdef bytes b = os.fsencode(path)
    if b"\0" in b:
        raise ValueError(f"invalid path {path!r}")
    return b


cdef int _buffer(object obj, Py_buffer *view, const char *what) except -1:
    """A contiguous buffer of `obj`, checked to fit a u32 length field."""
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    if <uint64_t>view.len > 0xffffffffu:
        PyBuffer_Release(view)
        raise MessageTooLarge(f"{what.decode()} of {view.len} bytes does not fit a record")
    return 0


cdef class Log:
    """One C handle (``qm_log_t``) on a partition log folder.

    Use a handle from one thread at a time (open another handle for another
    thread).  Records are read through ``Cursor`` objects of this handle;
    a record's value is handed out as a read-only ``memoryview`` into the
    mapping, and the handle's mappings stay valid while any such view lives:
    ``close()`` (callable from any thread, also while a call is blocked in
    C, which then raises Closed) frees the handle only when no call is
    inside C and no view is alive.
    """

    cdef qm_log_t *_log
    cdef int _busy          # calls inside C right now (changed with the GIL held)
    cdef Py_ssize_t _views  # live _Payload objects pointing into the mappings
    cdef bint _closed
    cdef bint _fsync        # appends wait for fdatasync: always drop the GIL
    cdef readonly str path
    cdef object __weakref__

    def __init__(self):
        raise TypeError("use Log.open()")

    def __dealloc__(self):
        if self._log != NULL:
            qm_log_close(self._log)

    def __repr__(self):
        return f"<pyqmem._core.Log {self.path!r}{' closed' if self._closed else ''}>"

    @staticmethod
    def open(str path, int mode, uint64_t segment_bytes, uint64_t retention_bytes,
             int64_t retention_ns, uint32_t flags):
        """Open the partition log in folder `path` (mode: OPEN_OR_CREATE,
        CREATE_ONLY or OPEN_ONLY).  The configuration (retention 0 = none;
        flags: LOG_FSYNC or 0) applies only when the log is created."""
        cdef bytes cpath = _cpath(path)
        cdef const char *c = cpath
        cdef qm_log_config_t cfg
        cdef qm_log_t *handle = NULL
        cdef Log log = Log.__new__(Log)
        cdef int status
        cfg.segment_bytes = segment_bytes
        cfg.retention_bytes = retention_bytes
        cfg.retention_ns = retention_ns
        cfg.flags = flags
        with nogil:
            status = qm_log_open(c, <qm_open_mode_t>mode, &cfg, &handle)
            if status == QM_OK:
                status = qm_log_config(handle, &cfg)
        log._log = handle   # freed by __dealloc__ if the config read failed
        log.path = path
        if status < 0:
            raise _error(status, path, False)
        log._fsync = (cfg.flags & QM_LOG_FSYNC) != 0
        return log

    cdef qm_log_t *_enter(self) except NULL:
        """The handle, counted busy until _leave(): close() defers freeing it."""
        if self._closed:
            raise Closed(f"partition log {self.path!r} is closed")
        self._busy += 1
        return self._log

    cdef void _leave(self) noexcept:
        self._busy -= 1
        self._free_if_unused()

    cdef void _free_if_unused(self) noexcept:
        """After close(): free the handle once no call and no view uses it."""
        cdef qm_log_t *lg = self._log
        if self._closed and self._busy == 0 and self._views == 0 and lg != NULL:
            self._log = NULL
            with nogil:
                qm_log_close(lg)

    def config(self):
        """The log's configuration (qm_log_config_t) as a dict: segment_bytes,
        retention_bytes, retention_ns, flags."""
        cdef qm_log_config_t cfg
        cdef int status = qm_log_config(self._enter(), &cfg)
        self._leave()
        if status < 0:
            raise _error(status, self.path, False)
        return cfg

    @property
    def max_record(self):
        """Largest value of one record, in bytes (segment_bytes / 2); key
        and headers may add up to segment_bytes / 4 beside it."""
        cdef uint64_t n = qm_log_max_record(self._enter())
        self._leave()
        return n

    cdef int _append1(self, const void *key, uint32_t key_len, const void *headers,
                      uint32_t headers_len, const void *value, size_t value_len,
                      int64_t timestamp_ns, uint64_t *offset) except -1:
        """Append one record from raw pointers (the fast path of
        TopicSender): the GIL is kept as in append()."""
        cdef qm_log_entry_t e
        cdef qm_iovec_t one
        cdef int status
        cdef qm_log_t *lg = self._enter()
        e.key = key
        e.key_len = key_len
        e.headers = headers
        e.headers_len = headers_len
        one.base = value
        one.len = value_len
        e.value = &one
        e.value_cnt = 1
        e.timestamp_ns = timestamp_ns
        if value_len + key_len + headers_len <= _GIL_COPY_MAX and not self._fsync:
            status = qm_log_append(lg, &e, offset)
        else:
            with nogil:
                status = qm_log_append(lg, &e, offset)
        self._leave()
        if status < 0:
            raise _error(status, self.path, True)
        return 0

    def append(self, key, headers, value, int64_t timestamp_ns):
        """Append one record and return its offset.  `key`: bytes-like or
        None; `headers`: bytes-like; `value`: a bytes-like object, or a
        list/tuple of them gathered into one value; `timestamp_ns`: unix
        nanoseconds, 0 = now.  Raises MessageTooLarge if it can never fit."""
        cdef _Gather g = _Gather(NULL, NULL, 0)
        cdef Py_buffer kview, hview, vview
        cdef bint have_key = False, have_headers = False, have_value = False
        cdef qm_log_entry_t e
        cdef qm_iovec_t one
        cdef uint64_t offset = 0
        cdef uint64_t size
        cdef int status, i
        cdef qm_log_t *lg = self._enter()
        try:
            memset(&e, 0, sizeof(e))
            if key is not None:
                _buffer(key, &kview, "key")
                have_key = True
                if kview.len > 0xffffffff:   # would be cut by the 32-bit length
                    raise MessageTooLarge(f"key of {kview.len} bytes does not fit a record")
                e.key = kview.buf
                e.key_len = <uint32_t>kview.len
            _buffer(headers, &hview, "headers")
            have_headers = True
            if hview.len > 0xffffffff:
                raise MessageTooLarge(f"headers of {hview.len} bytes do not fit a record")
            e.headers = hview.buf
            e.headers_len = <uint32_t>hview.len
            if type(value) is list or type(value) is tuple:
                _gather(tuple(value), &g)
                e.value = g.iov
                e.value_cnt = <int>g.held
            else:   # one buffer: no tuple, no allocation
                PyObject_GetBuffer(value, &vview, PyBUF_SIMPLE)
                have_value = True
                one.base = vview.buf
                one.len = <size_t>vview.len
                e.value = &one
                e.value_cnt = 1
            e.timestamp_ns = timestamp_ns
            size = <uint64_t>e.key_len + e.headers_len
            for i in range(e.value_cnt):
                size += e.value[i].len
            if size <= _GIL_COPY_MAX and not self._fsync:   # cheaper than dropping the GIL
                status = qm_log_append(lg, &e, &offset)
            else:
                with nogil:
                    status = qm_log_append(lg, &e, &offset)
        finally:
            if have_key:
                PyBuffer_Release(&kview)
            if have_headers:
                PyBuffer_Release(&hview)
            if have_value:
                PyBuffer_Release(&vview)
            _release(&g)
            self._leave()
        if status < 0:
            raise _error(status, self.path, True)
        return offset

    def append_many(self, key, values, int64_t timestamp_ns):
        """Append each bytes-like object of the list `values` as one record
        (same key, no headers, one timestamp), in order, dropping the GIL
        once for the batch (never, without fsync, for a small batch).
        Returns the list of offsets; on failure raises, the records before
        the failing one staying appended."""
        cdef _Gather g = _Gather(NULL, NULL, 0)
        cdef Py_buffer kview
        cdef bint have_key = False
        cdef qm_log_entry_t e
        cdef uint64_t *offsets = NULL
        cdef size_t n, i, done = 0, size = 0
        cdef int status = 0
        cdef qm_log_t *lg = self._enter()
        try:
            memset(&e, 0, sizeof(e))
            if key is not None:
                _buffer(key, &kview, "key")
                have_key = True
                if kview.len > 0xffffffff:   # would be cut by the 32-bit length
                    raise MessageTooLarge(f"key of {kview.len} bytes does not fit a record")
                e.key = kview.buf
                e.key_len = <uint32_t>kview.len
            e.timestamp_ns = timestamp_ns
            e.value_cnt = 1
            _gather(tuple(values), &g)
            n = <size_t>g.held
            offsets = <uint64_t *>malloc((n if n > 0 else 1) * sizeof(uint64_t))
            if offsets == NULL:
                raise MemoryError()
            for i in range(n):
                size += g.iov[i].len
            if size <= _GIL_COPY_MAX and not self._fsync:
                while done < n and status == 0:
                    e.value = &g.iov[done]
                    status = qm_log_append(lg, &e, &offsets[done])
                    if status == 0:
                        done += 1
            else:
                with nogil:
                    while done < n and status == 0:
                        e.value = &g.iov[done]
                        status = qm_log_append(lg, &e, &offsets[done])
                        if status == 0:
                            done += 1
            result = [offsets[i] for i in range(done)]
        finally:
            free(offsets)
            if have_key:
                PyBuffer_Release(&kview)
            _release(&g)
            self._leave()
        if status < 0:
            raise _error(status, self.path, True)
        return result

    def read(self, Cursor cursor, int64_t deadline_ns):
        """Read the record at `cursor` (of this log) and advance past it.

        Returns ``(offset, timestamp_ns, key, headers, value)``: key is bytes
        or None (empty), headers bytes, value a read-only memoryview into the
        mapping (zero-copy).  Returns None when no record came by the
        deadline."""
        cdef qm_log_record_t rec
        cdef qm_log_t *lg
        cdef int status
        if cursor.log is not self:
            raise ValueError("the cursor belongs to another log handle")
        if not cursor._placed:
            raise ValueError("the cursor was never placed: call seek() or seek_time()")
        lg = self._enter()
        try:
            # Try once with the GIL held: cheaper when a record is there.
            status = qm_log_read(lg, &cursor._cur, &rec, QM_NOWAIT)
            if status == QM_EAGAIN and deadline_ns != QM_NOWAIT:
                while True:
                    with nogil:
                        status = qm_log_read(lg, &cursor._cur, &rec, _slice_end(deadline_ns))
                    if not _again(status, deadline_ns):
                        break
            if status == QM_EAGAIN or status == QM_ETIMEDOUT:
                return None
            if status < 0:
                raise _error(status, self.path, False)
            return (
                rec.offset,
                rec.timestamp_ns,
                PyBytes_FromStringAndSize(<const char *>rec.key, rec.key_len) if rec.key_len else None,
                PyBytes_FromStringAndSize(<const char *>rec.headers, rec.headers_len),
                _payload(self, qm_log_hold(&rec), <const char *>rec.value,
                         <Py_ssize_t>rec.value_len),
            )
        finally:
            self._leave()

    def bounds(self):
        """``(start, end)``: the first offset still stored and the next
        offset to be assigned."""
        cdef uint64_t start = 0, end = 0
        cdef qm_log_t *lg = self._enter()
        cdef int status
        try:
            with nogil:
                status = qm_log_bounds(lg, &start, &end)
        finally:
            self._leave()
        if status < 0:
            raise _error(status, self.path, False)
        return start, end

    def stats(self):
        """Counters of the log and of this handle, as a dict (qm_log_stats_t)."""
        cdef qm_log_stats_t st
        cdef qm_log_t *lg = self._enter()
        cdef int status
        try:
            with nogil:
                status = qm_log_stats(lg, &st)
        finally:
            self._leave()
        if status < 0:
            raise _error(status, self.path, False)
        return st

    def retain(self):
        """Apply the retention configuration now; returns how many segments
        were deleted."""
        cdef uint64_t deleted = 0
        cdef qm_log_t *lg = self._enter()
        cdef int status
        try:
            with nogil:
                status = qm_log_retain(lg, &deleted)
        finally:
            self._leave()
        if status < 0:
            raise _error(status, self.path, False)
        return deleted

    def interrupt(self):
        """Make calls blocked on this handle, and every later call, raise Closed."""
        qm_log_interrupt(self._enter())
        self._leave()

    def close(self):
        """Release the handle (idempotent).  A call blocked in another thread
        raises Closed; the handle is freed when no call is inside C and no
        value view of it is alive."""
        if self._closed:
            return
        self._closed = True
        qm_log_interrupt(self._log)
        self._free_if_unused()


@cython.final
cdef class Cursor:
    """A reader's position in one Log (``qm_log_cursor_t``).  Place it with
    seek() or seek_time() before reading; use it from one thread at a time."""

    cdef qm_log_cursor_t _cur
    cdef bint _placed
    cdef readonly Log log

    def __init__(self, Log log not None, bint check_crcs=True):
        """`check_crcs=False`: read without verifying each record's CRC-32C
        (headers and lengths are still validated; QM_CURSOR_NO_CRC)."""
        self.log = log
        memset(&self._cur, 0, sizeof(self._cur))
        if not check_crcs:
            self._cur.flags = QM_CURSOR_NO_CRC

    def __repr__(self):
        where = self._cur.next_offset if self._placed else "unplaced"
        return f"<pyqmem._core.Cursor {self.log.path!r} at {where}>"

    def seek(self, uint64_t offset):
        """Place the cursor at the first record with offset >= `offset` (at
        the end if none yet).  NotFound if `offset` is before the log start."""
        self._place(False, offset, 0)

    def seek_time(self, int64_t timestamp_ns):
        """Place the cursor at the first record, in offset order, whose
        timestamp (unix ns) is >= `timestamp_ns` (at the end if none)."""
        self._place(True, 0, timestamp_ns)

    cdef int _place(self, bint by_time, uint64_t offset, int64_t timestamp_ns) except -1:
        cdef qm_log_cursor_t cur = self._cur   # keeps `skipped`; committed on success
        cdef qm_log_t *lg = self.log._enter()
        cdef int status
        try:
            with nogil:
                if by_time:
                    status = qm_log_seek_time(lg, &cur, timestamp_ns)
                else:
                    status = qm_log_seek(lg, &cur, offset)
        finally:
            self.log._leave()
        if status < 0:
            raise _error(status, self.log.path, False)
        self._cur = cur
        self._placed = True
        return 0

    @property
    def position(self):
        """Offset of the next record this cursor reads."""
        return self._cur.next_offset

    @property
    def skipped(self):
        """Records retention removed before this cursor read them."""
        return self._cur.skipped


@cython.final
@cython.freelist(64)
@cython.no_gc
cdef class _Payload:
    """A record's value in place in its log's mapping, exported as a
    read-only buffer.  While it lives its Log keeps the handle and its
    hold (qm_log_hold) keeps the segment mapped."""

    cdef Log _log
    cdef void *_hold
    cdef const char *_data
    cdef Py_ssize_t _len

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        PyBuffer_FillInfo(buffer, self, <void *>self._data, self._len, 1, flags)

    def __dealloc__(self):
        qm_log_release(self._hold)
        if self._log is not None:
            self._log._views -= 1
            self._log._free_if_unused()


cdef object _payload(Log log, void *hold, const char *data, Py_ssize_t n):
    """A read-only memoryview of `n` bytes at `data` in `log`'s mapping;
    it takes over `hold` (a qm_log_hold of the segment)."""
    cdef _Payload p = _Payload.__new__(_Payload)
    p._log = log
    p._hold = hold
    p._data = data
    p._len = n
    log._views += 1
    return PyMemoryView_FromObject(p)


def wait_any(cursors, int64_t deadline_ns):
    """Block until a record may be at any of `cursors` (placed Cursor
    objects, of any logs): True; False when the deadline passed first.  The
    caller then reads each with NOWAIT.  Raises Closed if a log is closed."""
    return _wait_any(list(cursors), deadline_ns)


cdef bint _wait_any(list items, int64_t deadline_ns) except -1:
    cdef Py_ssize_t n = len(items), entered = 0, i
    cdef qm_log_t **logs
    cdef qm_log_cursor_t *curs
    cdef Cursor c
    cdef int status = QM_OK
    if n == 0:
        raise ValueError("wait_any needs at least one cursor")
    logs = <qm_log_t **>malloc(n * (sizeof(qm_log_t *) + sizeof(qm_log_cursor_t)))
    if logs == NULL:
        raise MemoryError()
    curs = <qm_log_cursor_t *>(logs + n)
    try:
        for i in range(n):
            c = items[i]
            if not c._placed:
                raise ValueError("the cursor was never placed: call seek() or seek_time()")
            logs[i] = c.log._enter()
            entered += 1
            curs[i] = c._cur
        while True:
            with nogil:
                status = qm_log_wait_any(logs, curs, <size_t>n, _slice_end(deadline_ns))
            if not _again(status, deadline_ns):
                break
    finally:
        for i in range(entered):
            (<Cursor>items[i]).log._leave()
        free(logs)
    if status == QM_OK:
        return True
    if status == QM_ETIMEDOUT:
        return False
    raise _error(status, [(<Cursor>x).log.path for x in items], False)


def unlink(str name):
    """Remove the ring `name` (NotFound if there is none); handles stay usable."""
    cdef int status = qm_ring_unlink(_cname(name))
    if status < 0:
        raise _error(status, name, False)


def exists(str name):
    """True if the ring `name` exists."""
    cdef int status = qm_ring_exists(_cname(name))
    if status < 0:
        raise _error(status, name, False)
    return status == 1


def now_ns():
    """CLOCK_MONOTONIC now, in nanoseconds: the clock of every deadline."""
    return qm_now_ns()


# ======================================================================
# Topic hot paths: records in and out without a Python frame per record.
# The policy (validation, partitioning by key, serializers, headers,
# per-thread handles) stays in pyqmem.topic / pyqmem.consumer; these
# classes only take the common case -- or hand the call back to Python.
# ======================================================================

import numbers

from pyqmem.headers import decode as _decode_headers

cdef enum:
    _SPIN_ROUNDS = 256   # NOWAIT rounds over a multi-partition consumer before sleeping


cdef inline int64_t _realtime_ns() noexcept nogil:
    """time.time_ns(): CLOCK_REALTIME in nanoseconds."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef uint32_t _murmur2(const unsigned char *data, size_t length) noexcept nogil:
    """Kafka's murmur2 (pyqmem.partitioning.murmur2 as an unsigned 32-bit value)."""
    cdef uint32_t m = 0x5BD1E995u
    cdef uint32_t h = 0x9747B28Cu ^ <uint32_t>length
    cdef uint32_t k
    cdef size_t i, whole = length // 4, tail = length & 3
    cdef const unsigned char *q
    for i in range(whole):
        q = data + 4 * i
        k = <uint32_t>q[0] | (<uint32_t>q[1] << 8) | (<uint32_t>q[2] << 16) | (<uint32_t>q[3] << 24)
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
    q = data + 4 * whole
    if tail == 3:
        h ^= <uint32_t>q[2] << 16
    if tail >= 2:
        h ^= <uint32_t>q[1] << 8
    if tail:
        h ^= <uint32_t>q[0]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


def _murmur2_unsigned(bytes data):
    """_murmur2 for tests: the unsigned 32-bit hash of `data`."""
    return _murmur2(<const unsigned char *>PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))


cdef bytes _CID_NAME = b"qm.correlation_id"


cdef inline void _put_u16(char *p, uint32_t v) noexcept:
    p[0] = <char>(v & 0xff)
    p[1] = <char>((v >> 8) & 0xff)


cdef inline void _put_u32(char *p, uint64_t v) noexcept:
    p[0] = <char>(v & 0xff)
    p[1] = <char>((v >> 8) & 0xff)
    p[2] = <char>((v >> 16) & 0xff)
    p[3] = <char>((v >> 24) & 0xff)


cdef object _encode_headers(object headers, object correlation_id, Py_ssize_t limit):
    """pyqmem.headers.encode for the common case -- a dict of str names (not
    "qm.") to bytes and a str correlation id -- in C; anything else, and
    every error (MessageTooLarge beyond `limit` bytes included, found before
    anything is copied), goes to pyqmem.headers.encode (same bytes, same
    errors)."""
    cdef list names = []
    cdef list values = []
    cdef Py_ssize_t size = 2, count, i
    cdef bytes raw_name, raw_value, out
    cdef char *p
    if headers is not None and type(headers) is not dict:
        return _encode_headers_py(headers, correlation_id, limit)
    if correlation_id is not None and type(correlation_id) is not str:
        return _encode_headers_py(headers, correlation_id, limit)
    try:
        if headers is not None:
            for name, value in (<dict>headers).items():
                if type(name) is not str or type(value) is not bytes or (<str>name).startswith("qm."):
                    return _encode_headers_py(headers, correlation_id, limit)
                names.append(name)
                values.append(value)
        if correlation_id is not None:
            raw_value = PyUnicode_AsUTF8String(correlation_id)
        count = len(names) + (correlation_id is not None)
        if count == 0:
            return b""
        if count > 0xffff:
            return _encode_headers_py(headers, correlation_id, limit)
        for i in range(len(names)):
            raw_name = PyUnicode_AsUTF8String(names[i])
            if len(raw_name) > 0xffff or len(<bytes>values[i]) > 0xffffffff:
                return _encode_headers_py(headers, correlation_id, limit)
            names[i] = raw_name
            size += 6 + len(raw_name) + len(<bytes>values[i])
        if correlation_id is not None:
            names.append(_CID_NAME)
            values.append(raw_value)
            size += 6 + len(_CID_NAME) + len(raw_value)
    except Exception:
        return _encode_headers_py(headers, correlation_id, limit)
    if size > limit:
        return _encode_headers_py(headers, correlation_id, limit)
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    _put_u16(p, <uint32_t>count)
    p += 2
    for i in range(count):
        raw_name = names[i]
        raw_value = values[i]
        _put_u16(p, <uint32_t>len(raw_name))
        memcpy(p + 2, PyBytes_AS_STRING(raw_name), len(raw_name))
        p += 2 + len(raw_name)
        _put_u32(p, <uint64_t>len(raw_value))
        memcpy(p + 4, PyBytes_AS_STRING(raw_value), len(raw_value))
        p += 4 + len(raw_value)
    return out


cdef object _encode_headers_py(object headers, object correlation_id, Py_ssize_t limit):
    from pyqmem.headers import encode
    return encode(headers, correlation_id, limit)


cdef tuple _decode_header_block(const unsigned char *data, Py_ssize_t size):
    """pyqmem.headers.decode of the `size` (> 0) bytes at `data`, in C;
    a malformed block goes to pyqmem.headers.decode for its CorruptError."""
    cdef Py_ssize_t pos = 2, name_len, value_len
    cdef uint32_t count, j
    cdef dict headers = {}
    cdef object correlation_id = None
    cdef object name
    if size < 2:
        return _decode_headers(PyBytes_FromStringAndSize(<const char *>data, size))
    count = <uint32_t>data[0] | (<uint32_t>data[1] << 8)
    try:
        for j in range(count):
            if pos + 2 > size:
                raise ValueError
            name_len = <Py_ssize_t>data[pos] | (<Py_ssize_t>data[pos + 1] << 8)
            pos += 2
            if pos + name_len + 4 > size:
                raise ValueError
            name = PyUnicode_DecodeUTF8(<const char *>data + pos, name_len, NULL)
            pos += name_len
            value_len = (<Py_ssize_t>data[pos] | (<Py_ssize_t>data[pos + 1] << 8)
                         | (<Py_ssize_t>data[pos + 2] << 16) | (<Py_ssize_t>data[pos + 3] << 24))
            pos += 4
            if pos + value_len > size:
                raise ValueError
            if name == "qm.correlation_id":
                correlation_id = PyUnicode_DecodeUTF8(<const char *>data + pos, value_len, NULL)
            elif not name.startswith("qm."):   # other reserved names: skipped
                headers[name] = PyBytes_FromStringAndSize(<const char *>data + pos, value_len)
            pos += value_len
        if pos != size:
            raise ValueError
    except ValueError:   # also UnicodeDecodeError: the Python decoder says what is wrong
        return _decode_headers(PyBytes_FromStringAndSize(<const char *>data, size))
    return headers, correlation_id


@cython.final
@cython.freelist(256)
@cython.no_gc
@cython.auto_pickle(False)
cdef class RecordMetadata:
    """Where ``send`` put a record: ``partition``, ``offset``, ``timestamp``
    (float seconds since the epoch, UTC) and ``id`` (``f"{partition}-{offset}"``,
    unique within the topic).  Behaves as the named tuple
    ``(partition, offset, timestamp, id)``: unpacking, indexing, equality
    and hashing as that tuple, ``_asdict()``, ``_replace()``, ``_fields``."""

    cdef readonly Py_ssize_t partition
    cdef readonly uint64_t offset
    cdef readonly double timestamp
    cdef str _id     # made on first use

    _fields = ("partition", "offset", "timestamp", "id")
    __match_args__ = _fields

    def __init__(self, Py_ssize_t partition, uint64_t offset, double timestamp, str id):
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self._id = id

    @property
    def id(self):
        """``f"{partition}-{offset}"``: unique within the topic."""
        if self._id is None:
            self._id = f"{self.partition}-{self.offset}"
        return self._id

    cdef tuple _tuple(self):
        return (self.partition, self.offset, self.timestamp, self.id)

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return self._tuple()[index]

    def __iter__(self):
        return iter(self._tuple())

    def __hash__(self):
        return hash(self._tuple())

    def __richcmp__(self, other, int op):
        if isinstance(other, RecordMetadata):
            other = (<RecordMetadata>other)._tuple()
        elif not isinstance(other, tuple):
            return NotImplemented
        return PyObject_RichCompare(self._tuple(), other, op)

    def _asdict(self):
        """``{"partition": ..., "offset": ..., "timestamp": ..., "id": ...}``."""
        return dict(zip(self._fields, self._tuple()))

    def _replace(self, **changes):
        """A copy with the given fields replaced."""
        fields = self._asdict()
        unknown = set(changes) - set(fields)
        if unknown:
            raise ValueError(f"Got unexpected field names: {sorted(unknown)!r}")
        fields.update(changes)
        return RecordMetadata(**fields)

    def __reduce__(self):
        return RecordMetadata, self._tuple()

    def __repr__(self):
        return (f"RecordMetadata(partition={self.partition!r}, offset={self.offset!r}, "
                f"timestamp={self.timestamp!r}, id={self.id!r})")


cdef inline RecordMetadata _metadata(Py_ssize_t partition, uint64_t offset, int64_t now_ns):
    cdef RecordMetadata md = RecordMetadata.__new__(RecordMetadata)
    md.partition = partition
    md.offset = offset
    md.timestamp = <double>now_ns / 1e9   # as now_ns / 1e9 in Python
    return md


@cython.final
@cython.freelist(256)
@cython.no_gc_clear
@cython.auto_pickle(False)
cdef class Message:
    """One record delivered to a consumer.

    ``data``: a read-only memoryview of the value in place in the log's
    mapping (zero-copy), valid while it or the message is referenced;
    ``value``: the deserialized value (computed on first use, then cached);
    ``key`` (bytes or None), ``headers`` (dict str -> bytes),
    ``correlation_id`` (str or None), ``partition``, ``offset``,
    ``timestamp`` (float seconds since the epoch, UTC), ``id``
    (``f"{partition}-{offset}"``), ``delivery_count``; ``ack()``, ``nack()``.
    Key, headers, data and value are made from the mapping only when first
    used: the message keeps its log's mapping alive."""

    cdef Log _log                # holds one of _log._views: the handle stays
    cdef void *_hold             # qm_log_hold of the segment: the mapping stays
    cdef const char *_key
    cdef const char *_value_ptr
    cdef Py_ssize_t _value_len
    cdef uint32_t _key_len
    cdef readonly Py_ssize_t partition
    cdef readonly uint64_t offset
    cdef int64_t _timestamp_ns
    cdef object _serializer      # None: the raw serializer (value is bytes)
    cdef object _data            # the memoryview, once made
    cdef object _key_obj
    cdef const unsigned char *_hdr_ptr   # the header block in the mapping
    cdef Py_ssize_t _hdr_len     # 0: none, or decoded already (into _headers)
    cdef object _headers         # dict, or None until first used
    cdef object _correlation_id
    cdef object _value
    cdef bint _have_value
    # Consumer groups (at-least-once) only; an independent subscriber's
    # messages leave them zero/None, so that path pays nothing for them.
    cdef GroupReader _group      # None: ack/nack/extend are no-ops
    cdef uint64_t _epoch         # the lease word (qm_group_lease_t.epoch)
    cdef uint32_t _dcount        # the lease's delivery count
    cdef int _settled            # _PENDING, _ACKED or _NACKED
    cdef uint32_t _seekgen       # its consumer's seeks of the partition before delivery

    def __init__(self):
        raise TypeError("Message objects come from Consumer.get() and get_many()")

    def __dealloc__(self):
        cdef Log log = self._log
        qm_log_release(self._hold)
        if log is not None:
            log._views -= 1
            log._free_if_unused()

    @property
    def data(self):
        """Read-only memoryview of the value in the log's mapping (zero-copy)."""
        if self._data is None:
            self._data = _payload(self._log, qm_log_hold_again(self._hold), self._value_ptr,
                                  self._value_len)
        return self._data

    @property
    def value(self):
        """The deserialized value (computed on first use, then cached)."""
        if not self._have_value:
            if self._serializer is None:
                self._value = PyBytes_FromStringAndSize(self._value_ptr, self._value_len)
            else:
                self._value = self._serializer.decode_view(self.data)
            self._have_value = True
        return self._value

    @property
    def key(self):
        """The record's key as bytes, or None."""
        if self._key_len == 0:
            return None
        if self._key_obj is None:
            self._key_obj = PyBytes_FromStringAndSize(self._key, self._key_len)
        return self._key_obj

    cdef int _decode_headers(self) except -1:
        # decoded on first use; a malformed block is that access's
        # CorruptError (every time), never the get's: the record is
        # delivered, and a group member can still ack or dead-letter it
        if self._hdr_len:
            self._headers, self._correlation_id = _decode_header_block(
                self._hdr_ptr, self._hdr_len)
            self._hdr_len = 0
        elif self._headers is None:
            self._headers = {}
        return 0

    @property
    def headers(self):
        """The record's headers: dict str -> bytes.  CorruptError if the
        record's header block is malformed."""
        if self._headers is None:
            self._decode_headers()
        return self._headers

    @property
    def correlation_id(self):
        """``send(correlation_id=...)`` of the record, or None.  CorruptError
        if the record's header block is malformed."""
        if self._headers is None:
            self._decode_headers()
        return self._correlation_id

    @property
    def timestamp(self):
        """Float seconds since the epoch, UTC."""
        return <double>self._timestamp_ns / 1e9

    @property
    def id(self):
        """``f"{partition}-{offset}"``: unique within the topic."""
        return f"{self.partition}-{self.offset}"

    @property
    def delivery_count(self):
        """Deliveries of this record to its consumer group so far, this one
        included (1 on first delivery); always 1 outside a group."""
        return self._dcount if self._group is not None else 1

    def ack(self):
        """Complete the delivery.  In a consumer group (at-least-once) this
        completes the lease: StaleAck if it moved on (expired and was
        redelivered, the member was declared dead or closed, a seek passed
        it, or the message was nacked); a second ack() is a no-op.  A no-op
        for an independent subscriber and at-most-once."""
        if self._group is not None:
            _group_ack1(self._group, self)

    def nack(self, delay=None, error=None):
        """Give the delivery back: the record is delivered again after
        `delay` seconds (None: the consumer's RetryPolicy delay for this
        delivery count).  `error` (an exception or str) is remembered as
        the record's last error for its dead-letter headers.  StaleAck as
        for ack().  A no-op for an independent subscriber and at-most-once."""
        if delay is not None:
            if not isinstance(delay, numbers.Real) or isinstance(delay, bool):
                raise TypeError(f"delay must be None or a number, not {type(delay).__name__}")
            if not 0 <= delay < 1e9:
                raise ValueError(f"delay must be in [0, 1e9) seconds, got {delay}")
        if self._group is not None:
            self._group._nack_message(self, delay, error)

    def extend(self, seconds):
        """Keep working on the record: its lease now ends `seconds` from now
        (SQS's ChangeMessageVisibility).  StaleAck if the lease already
        moved on.  A no-op for an independent subscriber and at-most-once."""
        if not isinstance(seconds, numbers.Real) or isinstance(seconds, bool):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        if not 0 < seconds < 1e9:
            raise ValueError(f"seconds must be in (0, 1e9), got {seconds}")
        if self._group is not None:
            _group_extend1(self._group, self, <int64_t>(seconds * 1e9))

    def __repr__(self):
        return f"<pyqmem.Message {self.id} key={self.key!r} {self._value_len} bytes>"


cdef Message _message(Log log, qm_log_record_t *rec, Py_ssize_t partition, object serializer):
    """The Message of the record just read through `log` (its handle entered)."""
    cdef Message m = Message.__new__(Message)
    m._log = log
    m._hold = qm_log_hold(rec)
    log._views += 1
    m._key = <const char *>rec.key
    m._key_len = rec.key_len
    m._value_ptr = <const char *>rec.value
    m._value_len = <Py_ssize_t>rec.value_len
    m.partition = partition
    m.offset = rec.offset
    m._timestamp_ns = rec.timestamp_ns
    m._serializer = serializer
    m._hdr_ptr = <const unsigned char *>rec.headers   # decoded on first use
    m._hdr_len = <Py_ssize_t>rec.headers_len
    return m


@cython.auto_pickle(False)
cdef class TopicSender:
    """The hot paths of ``pyqmem.Topic.send``/``send_many`` (Topic derives
    from this class): raw ``bytes`` values without key, headers, partition
    or correlation id, from the thread that opened the topic, are appended
    here; every other call goes to the Python methods ``_send`` and
    ``_send_many`` of the subclass."""

    cdef list _owner_logs       # the opening thread's handles, one per partition
    cdef long _owner            # that thread's ident
    cdef Py_ssize_t _nparts
    cdef uint64_t _rr           # round-robin counter
    cdef public bint _closed
    cdef public bint _raw
    cdef public Py_ssize_t _max_value

    def _sender_setup(self, list logs, Py_ssize_t partitions, uint64_t round_robin_start):
        """Called by the opening thread with its handles."""
        if len(logs) != partitions or partitions < 1:
            raise ValueError("one handle per partition")
        self._owner_logs = logs
        self._owner = PyThread_get_thread_ident()
        self._nparts = partitions
        self._rr = round_robin_start

    def _round_robin(self):
        """The next round-robin partition (shared with the fast paths)."""
        cdef uint64_t k = self._rr
        self._rr += 1
        return <Py_ssize_t>(k % <uint64_t>self._nparts)

    cdef inline bint _fast(self):
        return (self._raw and not self._closed and self._owner_logs is not None
                and PyThread_get_thread_ident() == self._owner)

    def send(self, value, *, key=None, headers=None, partition=None, correlation_id=None):
        """Append `value` and return its RecordMetadata.

        `key` (str, bytes-like or None) picks the partition by Kafka's
        murmur2 unless `partition` is given; without either, round-robin.
        `headers`: dict str -> bytes-like (names starting with "qm." are
        reserved).  `correlation_id`: a str carried to
        ``Message.correlation_id``."""
        cdef Py_ssize_t p, n
        cdef uint64_t offset = 0
        cdef int64_t now
        cdef object raw_key = None, head = None
        cdef const char *key_ptr = NULL
        cdef const char *head_ptr = NULL
        cdef Py_ssize_t key_len = 0, head_len = 0
        # The common cases; anything else (another serializer or value
        # type, a value too large, a bytes-like key other than bytes, a bad
        # partition, another thread, a closed topic) takes the Python path,
        # which checks in the same order and raises the same errors.
        if type(value) is not bytes or not self._fast():
            return self._send(value, key, headers, partition, correlation_id)
        n = PyBytes_GET_SIZE(value)
        if n > self._max_value:
            return self._send(value, key, headers, partition, correlation_id)
        if key is not None:
            if type(key) is str:
                raw_key = PyUnicode_AsUTF8String(key)
            elif type(key) is bytes:
                raw_key = key
            else:
                return self._send(value, key, headers, partition, correlation_id)
            key_len = PyBytes_GET_SIZE(raw_key)
            if key_len > self._max_value // 2:   # the Python path raises MessageTooLarge
                return self._send(value, key, headers, partition, correlation_id)
            key_ptr = PyBytes_AS_STRING(raw_key)
        if partition is not None:
            if type(partition) is not int or not 0 <= partition < self._nparts:
                return self._send(value, key, headers, partition, correlation_id)
            p = partition
        elif raw_key is not None:
            p = <Py_ssize_t>((_murmur2(<const unsigned char *>key_ptr, <size_t>key_len)
                              & 0x7fffffffu) % <uint32_t>self._nparts)
        else:
            p = <Py_ssize_t>(self._rr % <uint64_t>self._nparts)
            self._rr += 1
        if headers is not None or correlation_id is not None:
            head = _encode_headers(headers, correlation_id, self._max_value // 2 - key_len)
            head_len = PyBytes_GET_SIZE(head)
            if head_len > 0xffffffff:
                raise MessageTooLarge(f"headers of {head_len} bytes do not fit a record")
            head_ptr = PyBytes_AS_STRING(head)
        now = _realtime_ns()
        (<Log>self._owner_logs[p])._append1(key_ptr, <uint32_t>key_len, head_ptr,
                                            <uint32_t>head_len, PyBytes_AS_STRING(value),
                                            <size_t>n, now, &offset)
        return _metadata(p, offset, now)

    def send_many(self, values, *, key=None):
        """Send each of `values` (each partition chosen as by send) and
        return their RecordMetadata in order.  Every value is serialized and
        checked before the first is appended; if an append fails, the values
        before it stay appended."""
        cdef list items = values if type(values) is list else list(values)
        cdef Py_ssize_t n = len(items), i, size
        cdef uint64_t total = 0
        cdef object v
        if key is not None or not self._fast():
            return self._send_many(items, key)
        for i in range(n):
            v = items[i]
            if type(v) is not bytes:
                return self._send_many(items, key)
            size = PyBytes_GET_SIZE(v)
            if size > self._max_value:
                return self._send_many(items, key)
            total += <uint64_t>size
        if total <= _GIL_COPY_MAX and self._nparts == 1 and not (<Log>self._owner_logs[0])._fsync:
            return self._append_held(items, n)
        return self._append_released(tuple(items), n)

    cdef list _append_held(self, list items, Py_ssize_t n):
        """A small batch on one partition, appended holding the GIL (cheaper
        than dropping it); the records before a failure stay appended."""
        cdef Log log = self._owner_logs[0]
        cdef qm_log_t *lg = log._enter()
        cdef qm_log_entry_t e
        cdef qm_iovec_t one
        cdef uint64_t offset = 0
        cdef int64_t now = _realtime_ns()
        cdef int status = QM_OK
        cdef list out = [None] * n
        cdef Py_ssize_t i
        cdef object v
        memset(&e, 0, sizeof(e))
        e.value = &one
        e.value_cnt = 1
        e.timestamp_ns = now
        self._rr += <uint64_t>n   # every record takes its round-robin turn
        try:
            for i in range(n):
                v = items[i]
                one.base = PyBytes_AS_STRING(v)
                one.len = <size_t>PyBytes_GET_SIZE(v)
                status = qm_log_append(lg, &e, &offset)
                if status < 0:
                    break
                out[i] = _metadata(0, offset, now)
        finally:
            log._leave()
        if status < 0:
            raise _error(status, log.path, True)
        return out

    cdef list _append_released(self, tuple items, Py_ssize_t n):
        """Any batch: partitions chosen round-robin, appended in order with
        the GIL dropped once (`items` holds the values meanwhile)."""
        cdef Py_ssize_t nparts = self._nparts, i, done = 0, entered = 0
        cdef qm_log_t **lgs = NULL
        cdef qm_iovec_t *iov = NULL
        cdef uint64_t *offsets = NULL
        cdef Py_ssize_t *parts = NULL
        cdef qm_log_entry_t e
        cdef int64_t now = _realtime_ns()
        cdef int status = QM_OK
        cdef object v
        cdef list out
        cdef Log failed = None
        memset(&e, 0, sizeof(e))
        e.value_cnt = 1
        e.timestamp_ns = now
        lgs = <qm_log_t **>malloc(nparts * sizeof(qm_log_t *) + (n + 1) * (
            sizeof(qm_iovec_t) + sizeof(uint64_t) + sizeof(Py_ssize_t)))
        if lgs == NULL:
            raise MemoryError()
        iov = <qm_iovec_t *>(lgs + nparts)
        offsets = <uint64_t *>(iov + n + 1)
        parts = <Py_ssize_t *>(offsets + n + 1)
        try:
            for i in range(n):
                v = items[i]
                iov[i].base = PyBytes_AS_STRING(v)
                iov[i].len = <size_t>PyBytes_GET_SIZE(v)
                parts[i] = <Py_ssize_t>(self._rr % <uint64_t>nparts)
                self._rr += 1
            for i in range(nparts):
                lgs[i] = (<Log>self._owner_logs[i])._enter()
                entered += 1
            with nogil:
                while done < n:
                    e.value = &iov[done]
                    status = qm_log_append(lgs[parts[done]], &e, &offsets[done])
                    if status < 0:
                        break
                    done += 1
            if status < 0:
                failed = self._owner_logs[parts[done]]
            out = [_metadata(parts[i], offsets[i], now) for i in range(done)]
        finally:
            for i in range(entered):
                (<Log>self._owner_logs[i])._leave()
            free(lgs)
        if status < 0:
            raise _error(status, failed.path, True)
        return out


@cython.auto_pickle(False)
cdef class TopicReader:
    """The hot paths of ``pyqmem.Consumer`` (which derives from this class):
    ``get`` and ``get_many`` over the consumer's partition handles, making
    Message objects here.  A lock serializes calls from several threads."""

    cdef list _rlogs             # Log per partition read, in order
    cdef list _rcursors          # Cursor per partition read
    cdef Py_ssize_t *_rparts     # partition numbers
    cdef Py_ssize_t _n
    cdef Py_ssize_t _rnext       # index to try first
    cdef object _rserializer     # None for the raw serializer
    cdef str _rtopic
    cdef PyThread_type_lock _rlock
    cdef public bint _closed
    cdef list _rstash            # read by a get a signal handler then ended: returned next

    def __cinit__(self, *args, **kwargs):
        self._rlock = PyThread_allocate_lock()
        if self._rlock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._rparts)
        if self._rlock != NULL:
            PyThread_free_lock(self._rlock)

    def _reader_setup(self, str topic, list partitions, list logs, list cursors, serializer,
                      bint raw):
        """`logs` and `cursors` (placed) of `partitions`, in the order to try them."""
        cdef Py_ssize_t i, n = len(partitions)
        if n < 1 or len(logs) != n or len(cursors) != n:
            raise ValueError("one log and one cursor per partition")
        for i in range(n):
            if (<Cursor?>cursors[i]).log is not logs[i]:
                raise ValueError("the cursor belongs to another log handle")
        free(self._rparts)
        self._rparts = <Py_ssize_t *>malloc(n * sizeof(Py_ssize_t))
        if self._rparts == NULL:
            raise MemoryError()
        for i in range(n):
            self._rparts[i] = partitions[i]
        self._rlogs = logs
        self._rcursors = cursors
        self._n = n
        self._rnext = 0
        self._rserializer = None if raw else serializer
        self._rtopic = topic

    # ----- the lock ------------------------------------------------------
    cdef int _acquire(self, int64_t deadline_ns) except -1:
        """Take the consumer's lock, waiting at most until `deadline_ns`
        (Empty then); Closed if the consumer is closed."""
        cdef PyLockStatus got
        cdef int64_t now, wait
        if self._closed:
            raise Closed(f"consumer of topic {self._rtopic!r} is closed")
        if PyThread_acquire_lock(self._rlock, NOWAIT_LOCK) == PY_LOCK_ACQUIRED:
            return 0
        while True:
            now = qm_now_ns()
            if deadline_ns != QM_FOREVER and now >= deadline_ns:
                raise Empty(f"topic {self._rtopic!r}: the consumer is busy in another thread")
            wait = _slice_end(deadline_ns) - now
            with nogil:
                got = PyThread_acquire_lock_timed(self._rlock, <PY_TIMEOUT_T>(wait // 1000 + 1), 0)
            if got == PY_LOCK_ACQUIRED:
                return 0
            PyErr_CheckSignals()

    def _lock(self, int64_t deadline_ns=QM_FOREVER):
        """Take the consumer's lock (for seek, lag): see _acquire."""
        self._acquire(deadline_ns)

    def _unlock(self):
        PyThread_release_lock(self._rlock)

    # ----- reading ---------------------------------------------------------
    @cython.boundscheck(False)
    @cython.wraparound(False)
    cdef Message _poll(self):
        """The next record of any partition, without waiting, or None.  The
        partition after the one that served last is tried first."""
        cdef Py_ssize_t n = self._n, i, idx
        cdef qm_log_record_t rec
        cdef Log log
        cdef Cursor cur
        cdef qm_log_t *lg
        cdef int status
        idx = self._rnext
        for i in range(n):
            if idx >= n:
                idx -= n
            log = <Log>self._rlogs[idx]
            cur = <Cursor>self._rcursors[idx]
            lg = log._enter()
            status = qm_log_read(lg, &cur._cur, &rec, QM_NOWAIT)
            if status == QM_OK:
                try:
                    self._rnext = idx + 1
                    return _message(log, &rec, self._rparts[idx], self._rserializer)
                finally:
                    log._leave()
            log._leave()
            if status != QM_EAGAIN and status != QM_ETIMEDOUT:
                raise _error(status, log.path, False)
            idx += 1
        return None

    cdef Message _wait_one(self, int64_t deadline_ns):
        """The only partition's next record, waiting until `deadline_ns` (in
        C: it spins briefly, then sleeps); None if none came."""
        cdef Log log = <Log>self._rlogs[0]
        cdef Cursor cur = <Cursor>self._rcursors[0]
        cdef qm_log_record_t rec
        cdef qm_log_t *lg = log._enter()
        cdef int status = QM_EAGAIN
        try:
            while True:
                with nogil:
                    status = qm_log_read(lg, &cur._cur, &rec, _slice_end(deadline_ns))
                if not _again(status, deadline_ns):
                    break
            if status == QM_OK:
                return _message(log, &rec, self._rparts[0], self._rserializer)
        finally:
            log._leave()
        if status == QM_ETIMEDOUT or status == QM_EAGAIN:
            return None
        raise _error(status, log.path, False)

    cdef bint _spin(self) except -1:
        """Before sleeping on several partitions: poll them a while with the
        GIL dropped (a producer that is running fills them soon).  True if
        some partition has a record to read."""
        cdef Py_ssize_t n = self._n, i, entered = 0
        cdef int round_, found = 0
        cdef qm_log_t **lgs = <qm_log_t **>malloc(n * sizeof(qm_log_t *))
        cdef const qm_log_cursor_t **curs = <const qm_log_cursor_t **>malloc(
            n * sizeof(qm_log_cursor_t *))
        cdef qm_log_cursor_t probe
        cdef qm_log_record_t rec
        try:
            if lgs == NULL or curs == NULL:
                raise MemoryError()
            for i in range(n):
                lgs[i] = (<Log>self._rlogs[i])._enter()
                entered += 1
                curs[i] = &(<Cursor>self._rcursors[i])._cur
            with nogil:
                for round_ in range(_SPIN_ROUNDS):
                    for i in range(n):
                        probe = curs[i][0]   # a copy: the real read happens under the GIL
                        if qm_log_read(lgs[i], &probe, &rec, QM_NOWAIT) != QM_EAGAIN:
                            found = 1
                            break
                    if found:
                        break
                    qmpy_cpu_relax()
        finally:
            for i in range(entered):
                (<Log>self._rlogs[i])._leave()
            free(lgs)
            free(curs)
        return found

    cdef Message _get(self, int64_t deadline_ns):
        """The next message (polled first), waiting until `deadline_ns`;
        Empty if none came."""
        cdef Message m = self._poll()
        if m is not None:
            return m
        if self._n == 1:
            m = self._wait_one(deadline_ns)
            if m is None:
                raise Empty(f"no message on topic {self._rtopic!r}")
            return m
        if deadline_ns != QM_NOWAIT and self._spin():
            m = self._poll()
            if m is not None:
                return m
        while True:
            if not _wait_any(self._rcursors, deadline_ns):
                raise Empty(f"no message on topic {self._rtopic!r}")
            m = self._poll()
            if m is not None:
                return m

    def get(self, timeout=None):
        """The next message, waiting up to `timeout` seconds (None: forever).
        Raises Empty if none came in time."""
        cdef int64_t deadline = QM_FOREVER
        cdef double secs = -1.0
        cdef Message m
        if timeout is not None:
            if (type(timeout) is float or type(timeout) is int) and 0 <= timeout < 1e9:
                secs = timeout   # the deadline is computed only if we must wait
            else:
                deadline = _py_deadline(timeout)
        if PyThread_acquire_lock(self._rlock, NOWAIT_LOCK) == PY_LOCK_ACQUIRED:
            self._check_open()
        else:
            self._acquire(deadline if secs < 0 else qm_now_ns() + <int64_t>(secs * 1e9))
        try:
            if self._rstash:
                return self._rstash.pop(0)
            m = self._poll()
            if m is None:
                if secs >= 0:
                    deadline = qm_now_ns() + <int64_t>(secs * 1e9)
                m = self._get(deadline)
            self._keep([m])
            return m
        finally:
            PyThread_release_lock(self._rlock)

    cdef int _keep(self, list msgs) except -1:
        """As Ring._keep: run signal handlers before returning `msgs`, which
        moved the cursors already; if a handler raises they are returned by
        the next get instead of being skipped."""
        try:
            PyErr_CheckSignals()
        except BaseException:
            if self._rstash is None:
                self._rstash = []
            self._rstash.extend(msgs)
            raise
        return 0

    cdef int _check_open(self) except -1:
        """After taking the lock without waiting: Closed (lock released) if
        the consumer is closed."""
        if self._closed:
            PyThread_release_lock(self._rlock)
            raise Closed(f"consumer of topic {self._rtopic!r} is closed")
        return 0

    def get_many(self, max_messages, timeout=None):
        """Up to `max_messages` messages: waits (as get) for the first, then
        takes what is already there, one partition after another.  Raises
        Empty if none came."""
        cdef int64_t deadline = QM_FOREVER
        cdef double secs = -1.0
        cdef Py_ssize_t limit
        cdef Message m
        cdef list out
        if type(max_messages) is not int or not 1 <= max_messages <= PY_SSIZE_T_MAX:
            _py_check_int("max_messages", max_messages, 1, PY_SSIZE_T_MAX)
        limit = max_messages
        if timeout is not None:
            if (type(timeout) is float or type(timeout) is int) and 0 <= timeout < 1e9:
                secs = timeout
            else:
                deadline = _py_deadline(timeout)
        if PyThread_acquire_lock(self._rlock, NOWAIT_LOCK) == PY_LOCK_ACQUIRED:
            self._check_open()
        else:
            self._acquire(deadline if secs < 0 else qm_now_ns() + <int64_t>(secs * 1e9))
        try:
            if self._rstash:
                out = self._rstash[:limit]
                del self._rstash[:limit]
                return out
            m = self._poll()
            if m is None:
                if secs >= 0:
                    deadline = qm_now_ns() + <int64_t>(secs * 1e9)
                m = self._get(deadline)
            out = [m]
            while len(out) < limit:
                m = self._poll()
                if m is None:
                    break
                out.append(m)
            self._keep(out)
            return out
        finally:
            PyThread_release_lock(self._rlock)


cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


cdef int64_t _py_deadline(object timeout) except? -1:
    """The deadline of an unusual `timeout` (validated as Queue does)."""
    from pyqmem.queue import _deadline
    return _deadline(True, timeout)


cdef int _py_check_int(str what, object value, object low, object high) except -1:
    from pyqmem.queue import _check_int
    _check_int(what, value, low, high)
    return 0


# ======================================================================
# Consumer groups: the C group core (qm_group_*) and the group hot path.
# The policy (arguments, start positions, dead letters, retries, run())
# is pyqmem.group; GroupReader claims, reads and acks records here without
# a Python frame per record.
# ======================================================================

GROUP_ORDERED = QM_GROUP_ORDERED
CLAIM_COMPLETE = QM_CLAIM_COMPLETE
GROUP_SWEEP_NS = QM_GROUP_SWEEP_NS

cdef enum:
    _PENDING = 0
    _ACKED = 1
    _NACKED = 2
    _LEASE_BUF = 256             # leases claimed per qm_group_claim call at most
    _TICK_NS = 100000000         # liveness sweep / ordered acquire period when idle


@cython.final
@cython.auto_pickle(False)
cdef class Group:
    """One C handle (``qm_group_t``) on a consumer group file,
    ``<topic folder>/groups/<name>.grp``.

    ack/ack_many/nack/extend only touch shared words (the lease's entry)
    and may be called from any thread; the other calls use the handle's
    member slot and belong to one thread at a time (pyqmem.group serializes
    them).  ``close()`` gives this member's leases back; it frees the handle
    once no call is inside C."""

    cdef qm_group_t *_g
    cdef int _busy
    cdef bint _closed
    cdef readonly str path
    cdef readonly str name
    cdef readonly uint32_t partitions
    cdef readonly uint32_t window
    cdef readonly uint32_t flags
    cdef readonly bint created
    cdef object __weakref__

    def __init__(self):
        raise TypeError("use Group.open()")

    def __dealloc__(self):
        if self._g != NULL:
            qm_group_close(self._g)

    def __repr__(self):
        return (f"<pyqmem._core.Group {self.name!r} of {self.path!r}"
                f"{' closed' if self._closed else ''}>")

    @staticmethod
    def open(str topic_dir, str name, int mode, uint32_t partitions=0, uint32_t window=0,
             uint32_t flags=0, starts=None):
        """Open (mode OPEN_OR_CREATE / CREATE_ONLY) or attach (OPEN_ONLY) the
        group `name` of the topic in folder `topic_dir`.  `partitions`,
        `window` (0: 4096), `flags` (GROUP_ORDERED) and `starts` (one start
        offset per partition, or None for 0) apply only when it is created."""
        cdef bytes cdir = _cpath(topic_dir)
        cdef bytes cname = _cname(name)
        cdef const char *d = cdir
        cdef const char *c = cname
        cdef qm_group_config_t cfg
        cdef qm_group_config_t got
        cdef const qm_group_config_t *pcfg = NULL
        cdef qm_group_t *handle = NULL
        cdef uint64_t *first = NULL
        cdef Group grp = Group.__new__(Group)
        cdef int status, created = 0
        cdef Py_ssize_t i
        if mode != QM_OPEN_ONLY:
            cfg.partitions = partitions
            cfg.window = window
            cfg.flags = flags
            cfg.start = NULL
            if starts is not None:
                if len(starts) != partitions:
                    raise ValueError(f"{len(starts)} start offsets for {partitions} partitions")
                first = <uint64_t *>malloc((partitions if partitions else 1) * sizeof(uint64_t))
                if first == NULL:
                    raise MemoryError()
                try:
                    for i in range(partitions):
                        first[i] = starts[i]
                except BaseException:
                    free(first)
                    raise
                cfg.start = first
            pcfg = &cfg
        try:
            with nogil:
                status = qm_group_open(d, c, <qm_open_mode_t>mode, pcfg, &handle, &created)
                if status == QM_OK:
                    status = qm_group_config(handle, &got)
        finally:
            free(first)
        grp._g = handle   # freed by __dealloc__ if reading the config failed
        grp.path = topic_dir
        grp.name = name
        if status < 0:
            raise _error(status, f"{topic_dir}/groups/{name}.grp", False)
        grp.partitions = got.partitions
        grp.window = got.window
        grp.flags = got.flags
        grp.created = created != 0
        return grp

    cdef inline qm_group_t *_handle(self) except NULL:
        if self._closed or self._g == NULL:
            raise Closed(f"consumer group {self.name!r} is closed")
        return self._g

    cdef qm_group_t *_enter(self) except NULL:
        """The handle, counted busy until _leave(): close() defers freeing it."""
        cdef qm_group_t *g = self._handle()
        self._busy += 1
        return g

    cdef void _leave(self) noexcept:
        cdef qm_group_t *g = self._g
        self._busy -= 1
        if self._closed and self._busy == 0 and g != NULL:
            self._g = NULL
            with nogil:
                qm_group_close(g)

    @property
    def closed(self):
        return self._closed

    def close(self):
        """Release the handle (idempotent): this member's leases become
        deliverable at once (their counts kept), its ordered partitions
        ownerless."""
        if self._closed:
            return
        self._closed = True
        self._busy += 1
        self._leave()

    cdef int _check(self, int status) except -1:
        if status < 0:
            raise _error(status, f"{self.path}/groups/{self.name}.grp", False)
        return 0

    def claim(self, uint32_t partition, uint64_t end, int64_t now_ns, int64_t lease_ns,
              uint32_t flags, size_t max):
        """Up to `max` leases of `partition` (qm_group_claim) as a list of
        ``(offset, epoch, delivery_count)``; [] if nothing is deliverable;
        Full if the pending window is full."""
        cdef qm_group_lease_t *out
        cdef size_t got = 0, i
        cdef int status
        cdef qm_group_t *g
        if max == 0:
            raise ValueError("max must be >= 1")
        out = <qm_group_lease_t *>malloc(max * sizeof(qm_group_lease_t))
        if out == NULL:
            raise MemoryError()
        g = self._enter()
        try:
            with nogil:
                status = qm_group_claim(g, partition, end, now_ns, lease_ns, flags, out, max, &got)
            if status == QM_EAGAIN:
                return []
            self._check(status)
            return [(out[i].offset, out[i].epoch, out[i].delivery_count) for i in range(got)]
        finally:
            self._leave()
            free(out)

    def ack(self, uint32_t partition, uint64_t offset, uint64_t epoch):
        """Complete a lease; StaleAck if it moved on."""
        self._check(qm_group_ack(self._handle(), partition, offset, epoch))

    def ack_many(self, leases):
        """Ack each ``(partition, offset, epoch)`` of `leases`; returns how
        many were stale (those raise nothing)."""
        cdef list items = list(leases)
        cdef Py_ssize_t n = len(items), i, stale = 0
        cdef qm_group_lease_t *ls
        cdef int *st
        cdef int status
        if n == 0:
            return 0
        ls = <qm_group_lease_t *>malloc(n * (sizeof(qm_group_lease_t) + sizeof(int)))
        if ls == NULL:
            raise MemoryError()
        st = <int *>(ls + n)
        try:
            for i in range(n):
                p, off, epoch = items[i]
                ls[i].partition = p
                ls[i].offset = off
                ls[i].epoch = epoch
                ls[i].delivery_count = 0
            qm_group_ack_many(self._handle(), ls, <size_t>n, st)
            for i in range(n):
                status = st[i]
                if status == QM_ESTALE:
                    stale += 1
                else:
                    self._check(status)
            return stale
        finally:
            free(ls)

    def nack(self, uint32_t partition, uint64_t offset, uint64_t epoch, int64_t not_before_ns):
        """Give a lease back, deliverable again from `not_before_ns`."""
        self._check(qm_group_nack(self._handle(), partition, offset, epoch, not_before_ns))

    def extend(self, uint32_t partition, uint64_t offset, uint64_t epoch, int64_t deadline_ns):
        """Move a lease's deadline; StaleAck if it moved on."""
        self._check(qm_group_extend(self._handle(), partition, offset, epoch, deadline_ns))

    def seek(self, uint32_t partition, uint64_t offset):
        """Replay from `offset` for the whole group (pending leases go stale)."""
        cdef int status
        cdef qm_group_t *g = self._enter()
        try:
            with nogil:
                status = qm_group_seek(g, partition, offset)
        finally:
            self._leave()
        self._check(status)

    def skip_to(self, uint32_t partition, uint64_t log_start):
        """Retention: move the committed offset up to `log_start`; returns
        how many offsets were skipped."""
        cdef uint64_t skipped = 0
        self._check(qm_group_skip_to(self._handle(), partition, log_start, &skipped))
        return skipped

    def count_dead_lettered(self, uint32_t partition, uint64_t n=1):
        self._check(qm_group_count_dead_lettered(self._handle(), partition, n))

    def acquire(self, uint32_t partition):
        """Ordered groups: take `partition` if it has no live owner.  True if
        this member owns it now."""
        cdef int status
        cdef qm_group_t *g = self._enter()
        try:
            with nogil:
                status = qm_group_acquire(g, partition)
        finally:
            self._leave()
        if status == QM_EAGAIN:
            return False
        self._check(status)
        return True

    def release(self, uint32_t partition):
        self._check(qm_group_release(self._handle(), partition))

    def sweep(self, int64_t now_ns):
        """Run the liveness sweep now; returns how many leases of dead
        members were released."""
        cdef uint64_t released = 0
        cdef int status
        cdef qm_group_t *g = self._enter()
        try:
            with nogil:
                status = qm_group_sweep(g, now_ns, &released)
        finally:
            self._leave()
        self._check(status)
        return released

    def next_due(self, uint32_t partition):
        """Earliest time (now_ns clock) a pending record of `partition` may
        come due; FOREVER if none is pending."""
        cdef int64_t due = 0
        self._check(qm_group_next_due(self._handle(), partition, &due))
        return due

    def partition_stats(self, uint32_t partition):
        """qm_group_partition_stats_t of `partition` as a dict."""
        cdef qm_group_partition_stats_t st
        cdef int status
        cdef qm_group_t *g = self._enter()
        try:
            with nogil:
                status = qm_group_partition_stats(g, partition, &st)
        finally:
            self._leave()
        self._check(status)
        return st

    def stats(self):
        """qm_group_stats_t as a dict."""
        cdef qm_group_stats_t st
        cdef int status
        cdef qm_group_t *g = self._enter()
        try:
            with nogil:
                status = qm_group_stats(g, &st)
        finally:
            self._leave()
        self._check(status)
        return st


cdef int _group_ack1(GroupReader r, Message m) except -1:
    """Message.ack() in a group: complete the lease (GIL held: a CAS)."""
    cdef Group grp = r._grp
    cdef int status
    if m._settled == _ACKED:
        return 0
    if grp._closed or grp._g == NULL:
        raise StaleAck(f"message {m.partition}-{m.offset}: the consumer was closed and "
                       "gave its leases back")
    if m._seekgen != r._pseek[m.partition]:
        raise StaleAck(f"message {m.partition}-{m.offset}: a seek passed it")
    status = qm_group_ack(grp._g, <uint32_t>m.partition, m.offset, m._epoch)
    if status == QM_OK:
        m._settled = _ACKED
        if r._errors:
            r._errors.pop((m.partition, m.offset), None)
        return 0
    if status == QM_ESTALE:
        raise StaleAck(f"message {m.partition}-{m.offset}: the lease moved on (expired and "
                       "redelivered, nacked, or passed by a seek)")
    grp._check(status)
    return 0


cdef int _group_extend1(GroupReader r, Message m, int64_t ns) except -1:
    cdef Group grp = r._grp
    cdef int status
    if grp._closed or grp._g == NULL:
        raise StaleAck(f"message {m.partition}-{m.offset}: the consumer was closed and "
                       "gave its leases back")
    if m._settled != _PENDING:
        raise StaleAck(f"message {m.partition}-{m.offset} was already "
                       f"{'acked' if m._settled == _ACKED else 'nacked'}")
    if m._seekgen != r._pseek[m.partition]:
        raise StaleAck(f"message {m.partition}-{m.offset}: a seek passed it")
    status = qm_group_extend(grp._g, <uint32_t>m.partition, m.offset, m._epoch,
                             _add_sat(qm_now_ns(), ns))
    if status == QM_ESTALE:
        raise StaleAck(f"message {m.partition}-{m.offset}: the lease moved on")
    grp._check(status)
    return 0


cdef inline int64_t _add_sat(int64_t a, int64_t b) noexcept nogil:
    if b > 0 and a > QM_FOREVER - b:
        return QM_FOREVER
    return a + b


@cython.auto_pickle(False)
cdef class GroupReader:
    """The hot paths of ``pyqmem.group.GroupConsumer`` (which derives from
    this class): claim leases, read their records into Messages, ack them,
    and wait for new records, for redeliveries coming due and for the
    100 ms liveness tick.  A lock serializes get calls from several
    threads; Message.ack/nack/extend take no lock (they only CAS the
    lease's entry).  The subclass provides ``_dead_letter(msgs)`` (give up
    on records past max_deliveries) and ``_nack_message(msg, delay, error)``."""

    cdef readonly Group _grp
    cdef void *_block                # malloc'd: the arrays below
    cdef list _glogs                 # Log per partition read, in order
    cdef uint32_t *_gparts           # partition numbers
    cdef qm_log_cursor_t *_curs      # read cursor per partition
    cdef qm_log_cursor_t *_probes    # wait cursor per partition, placed at the log end
    cdef uint64_t *_starts_seen      # log start last passed to qm_group_skip_to
    cdef uint64_t *_claim_end        # `end` of the last claim: where the probe waits
    cdef int64_t *_acquire_after     # ordered: next qm_group_acquire try
    cdef char *_flags                # per partition: 1 read cursor placed, 2 probe placed, 4 owned
    cdef qm_group_lease_t *_leases
    cdef Py_ssize_t _n
    cdef Py_ssize_t _gnext
    cdef object _gserializer
    cdef str _gtopic
    cdef int64_t _lease_ns
    cdef uint32_t _claim_flags
    cdef bint _at_most_once
    cdef bint _ordered
    cdef uint32_t _max_deliveries    # 0: never dead-letter
    cdef int64_t _next_tick
    cdef PyThread_type_lock _glock
    cdef public bint _closed
    cdef public dict _errors         # (partition, offset) -> last error text
    cdef public Py_ssize_t _stale_acks
    cdef list _parked                # per partition: [(offset, epoch, count)] claimed
                                     # while still being written, kept leased (a give-
                                     # back would count a delivery nobody got)
    cdef uint32_t _pseek[128]        # seeks this consumer made, per partition number

    def __cinit__(self, *args, **kwargs):
        self._glock = PyThread_allocate_lock()
        if self._glock == NULL:
            raise MemoryError()
        self._errors = {}

    def __dealloc__(self):
        free(self._block)
        if self._glock != NULL:
            PyThread_free_lock(self._glock)

    def _group_setup(self, str topic, Group group not None, list partitions, list logs,
                     serializer, bint raw, double visibility_timeout, bint at_most_once,
                     bint ordered, uint32_t max_deliveries, bint check_crcs):
        """`logs` (own handles) of `partitions`, in the order to try them."""
        cdef Py_ssize_t i, n = len(partitions)
        cdef size_t size
        if n < 1 or n > 128 or len(logs) != n:
            raise ValueError("one log per partition, 1..128 partitions")
        if self._block != NULL:
            raise ValueError("already set up")
        size = (n * (2 * sizeof(qm_log_cursor_t) + 2 * sizeof(uint64_t) + sizeof(int64_t)
                     + sizeof(uint32_t) + sizeof(char))
                + _LEASE_BUF * sizeof(qm_group_lease_t))
        self._block = malloc(size)
        if self._block == NULL:
            raise MemoryError()
        memset(self._block, 0, size)
        # one block, the 8-byte aligned arrays first
        self._curs = <qm_log_cursor_t *>self._block
        self._probes = self._curs + n
        self._starts_seen = <uint64_t *>(self._probes + n)
        self._claim_end = self._starts_seen + n
        self._acquire_after = <int64_t *>(self._claim_end + n)
        self._leases = <qm_group_lease_t *>(self._acquire_after + n)
        self._gparts = <uint32_t *>(self._leases + _LEASE_BUF)
        self._flags = <char *>(self._gparts + n)
        for i in range(n):
            self._gparts[i] = partitions[i]
            if not check_crcs:
                self._curs[i].flags = QM_CURSOR_NO_CRC
            self._probes[i].flags = QM_CURSOR_NO_CRC
        self._grp = group
        self._glogs = [(<Log?>x) for x in logs]
        self._n = n
        self._gnext = 0
        self._gserializer = None if raw else serializer
        self._gtopic = topic
        self._lease_ns = <int64_t>(visibility_timeout * 1e9)
        if self._lease_ns < 1:
            self._lease_ns = 1
        self._at_most_once = at_most_once
        self._claim_flags = QM_CLAIM_COMPLETE if at_most_once else 0
        self._ordered = ordered
        self._max_deliveries = max_deliveries
        self._next_tick = 0
        self._parked = [[] for _ in range(n)]

    # ----- the lock (as TopicReader's) -----------------------------------
    cdef int _acquire(self, int64_t deadline_ns) except -1:
        """Take the consumer's lock, waiting at most until `deadline_ns`
        (Empty then); Closed if the consumer is closed."""
        cdef PyLockStatus got
        cdef int64_t now, wait
        if self._closed:
            raise Closed(f"consumer of topic {self._gtopic!r} is closed")
        if PyThread_acquire_lock(self._glock, NOWAIT_LOCK) == PY_LOCK_ACQUIRED:
            if self._closed:
                PyThread_release_lock(self._glock)
                raise Closed(f"consumer of topic {self._gtopic!r} is closed")
            return 0
        while True:
            now = qm_now_ns()
            if deadline_ns != QM_FOREVER and now >= deadline_ns:
                raise Empty(f"topic {self._gtopic!r}: the consumer is busy in another thread")
            wait = _slice_end(deadline_ns) - now
            with nogil:
                got = PyThread_acquire_lock_timed(self._glock, <PY_TIMEOUT_T>(wait // 1000 + 1), 0)
            if got == PY_LOCK_ACQUIRED:
                if self._closed:
                    PyThread_release_lock(self._glock)
                    raise Closed(f"consumer of topic {self._gtopic!r} is closed")
                return 0
            PyErr_CheckSignals()

    def _lock(self, int64_t deadline_ns=QM_FOREVER):
        """Take the consumer's lock (for seek, lag, stats): see _acquire."""
        self._acquire(deadline_ns)

    def _unlock(self):
        PyThread_release_lock(self._glock)

    # ----- claiming and reading ------------------------------------------
    cdef int _settle_gap(self, Py_ssize_t idx, qm_log_t *lg, qm_group_t *g,
                         qm_group_lease_t *l, bint retention) except -1:
        """Complete a claimed offset with no record to deliver: a gap (its
        writer died) or, when `retention`, an offset retention removed
        (then the group's committed offset also skips to the log start)."""
        cdef uint64_t start = 0, end = 0
        cdef uint32_t p = self._gparts[idx]
        cdef int status
        if retention:
            status = qm_log_bounds(lg, &start, &end)
            if status == QM_OK:
                status = qm_group_skip_to(g, p, start, NULL)
                if start > self._starts_seen[idx]:
                    self._starts_seen[idx] = start
            if status < 0:
                self._grp._check(status)
        if not self._at_most_once:
            status = qm_group_ack(g, p, l.offset, l.epoch)
            if status < 0 and status != QM_ESTALE:
                self._grp._check(status)
        return 0

    cdef int _deliver(self, Py_ssize_t idx, Log log, qm_log_t *lg, qm_group_t *g,
                      qm_group_lease_t *l, list out, list dead, int64_t deadline) except -1:
        """Read the record of lease `l` into a Message (appended to `out`, or
        to `dead` past max_deliveries), or complete a gap.  Returns 1 if the
        record is still being written at `deadline` (the lease untouched)."""
        cdef qm_log_cursor_t *cur = &self._curs[idx]
        cdef qm_log_record_t rec
        cdef uint64_t skipped_before
        cdef uint64_t offset = l.offset
        cdef int status
        cdef Message m
        if not (self._flags[idx] & 1) or cur.next_offset != offset:
            with nogil:
                status = qm_log_seek(lg, cur, offset)
            if status < 0:
                self._flags[idx] &= ~1
                if status == QM_ENOTFOUND:   # before the log start: retention removed it
                    return self._settle_gap(idx, lg, g, l, True)
                raise _error(status, log.path, False)
            self._flags[idx] |= 1
        while True:
            skipped_before = cur.skipped
            status = qm_log_read(lg, cur, &rec, QM_NOWAIT)
            if status == QM_EAGAIN and deadline != QM_NOWAIT:
                # claimed below the log end, so its writer is at work (or died:
                # the read then finds it abandoned and skips it)
                while True:
                    with nogil:
                        status = qm_log_read(lg, cur, &rec, _slice_end(deadline))
                    if not _again(status, deadline):
                        break
            if status == QM_EAGAIN or status == QM_ETIMEDOUT:
                return 1
            if status < 0:
                self._flags[idx] &= ~1
                raise _error(status, log.path, False)
            if rec.offset >= offset:
                break
            # an earlier record: the seek stopped at one still being written
            # (qm_log_seek places the cursor there); read on to ours
        if rec.offset != offset:   # abandoned, or removed by retention meanwhile
            return self._settle_gap(idx, lg, g, l, cur.skipped != skipped_before)
        m = _message(log, &rec, <Py_ssize_t>self._gparts[idx], self._gserializer)
        if self._at_most_once:
            out.append(m)
            return 0
        m._group = self
        m._epoch = l.epoch
        m._dcount = l.delivery_count
        m._seekgen = self._pseek[self._gparts[idx]]
        if self._max_deliveries != 0 and l.delivery_count > self._max_deliveries:
            dead.append(m)
        else:
            out.append(m)
        return 0

    cdef void _give_back_leases(self, qm_group_t *g, qm_group_lease_t *ls, size_t n) noexcept:
        """Leases claimed but not delivered: deliverable again at once."""
        cdef size_t i
        if self._at_most_once:
            return
        for i in range(n):
            qm_group_nack(g, ls[i].partition, ls[i].offset, ls[i].epoch, 0)

    cdef int _give_back(self, list msgs) except -1:
        """Messages made but not handed out (an exception ends the get):
        their leases become deliverable again at once."""
        cdef Message m
        cdef Group grp = self._grp
        for x in msgs:
            m = <Message>x
            if m._group is None or m._settled != _PENDING:
                continue
            m._settled = _NACKED
            if not grp._closed and grp._g != NULL:
                qm_group_nack(grp._g, <uint32_t>m.partition, m.offset, m._epoch, 0)
        return 0

    cdef int _claim_partition(self, Py_ssize_t idx, Py_ssize_t want, list out, list dead,
                              int64_t now, int64_t deadline) except -1:
        """Claim up to `want` records of partition index `idx` and deliver
        them.  Returns 1 if a record was still being written at `deadline`."""
        cdef Log log = <Log>self._glogs[idx]
        cdef qm_log_t *lg = log._enter()
        cdef qm_group_t *g
        cdef uint32_t p = self._gparts[idx]
        cdef uint64_t start = 0, end = 0
        cdef size_t got = 0, i = 0
        cdef int status, timed_out = 0
        cdef list parked
        try:
            g = self._grp._enter()
        except BaseException:
            log._leave()
            raise
        try:
            status = qm_log_bounds(lg, &start, &end)
            if status < 0:
                raise _error(status, log.path, False)
            if start > self._starts_seen[idx]:   # retention moved the log start
                self._grp._check(qm_group_skip_to(g, p, start, NULL))
                self._starts_seen[idx] = start
            if self._parked[idx]:
                want -= self._unpark(idx, log, lg, g, want, out, dead, now, deadline)
                if self._parked[idx] or want <= 0:
                    return 1 if self._parked[idx] else 0
            if want > _LEASE_BUF:
                want = _LEASE_BUF
            self._claim_end[idx] = end
            self._flags[idx] |= 8
            status = qm_group_claim(g, p, end, now, self._lease_ns, self._claim_flags,
                                    self._leases, <size_t>want, &got)
            if status == QM_EAGAIN or status == QM_EFULL:
                return 0
            self._grp._check(status)
            try:
                while i < got:
                    if self._deliver(idx, log, lg, g, &self._leases[i], out, dead, deadline):
                        timed_out = 1
                        break
                    i += 1
            finally:
                if i < got and not timed_out:   # an exception: give them back
                    self._give_back_leases(g, &self._leases[i], got - i)
            if timed_out:   # a record still being written: keep the rest leased
                parked = self._parked[idx]
                while i < got:
                    parked.append((self._leases[i].offset, self._leases[i].epoch,
                                   self._leases[i].delivery_count))
                    i += 1
            return timed_out
        finally:
            self._grp._leave()
            log._leave()

    cdef Py_ssize_t _unpark(self, Py_ssize_t idx, Log log, qm_log_t *lg, qm_group_t *g,
                            Py_ssize_t want, list out, list dead, int64_t now,
                            int64_t deadline) except -1:
        """Deliver parked leases of partition index `idx` (in offset order)
        whose records are written now; each lease is renewed first (one that
        moved on meanwhile is dropped).  Returns how many were handled."""
        cdef list parked = self._parked[idx]
        cdef qm_group_lease_t l
        cdef Py_ssize_t done = 0
        cdef int status
        while parked and done < want:
            l.offset, l.epoch, l.delivery_count = parked[0]
            l.partition = self._gparts[idx]
            status = qm_group_extend(g, l.partition, l.offset, l.epoch,
                                     _add_sat(now, self._lease_ns))
            if status == QM_ESTALE:
                del parked[0]
                continue
            self._grp._check(status)
            if self._deliver(idx, log, lg, g, &l, out, dead, deadline):
                break
            del parked[0]
            done += 1
        return done

    cdef bint _try_acquire(self, Py_ssize_t idx, int64_t now) except -1:
        """Ordered groups: own partition index `idx` if it has no live owner."""
        cdef qm_group_t *g = self._grp._enter()
        cdef uint32_t p = self._gparts[idx]
        cdef int status
        try:
            with nogil:
                status = qm_group_acquire(g, p)
        finally:
            self._grp._leave()
        if status == QM_OK:
            self._flags[idx] |= 4
            return True
        if status != QM_EAGAIN:
            self._grp._check(status)
        self._acquire_after[idx] = now + _TICK_NS
        return False

    cdef int _poll(self, Py_ssize_t limit, list out, list dead, int64_t deadline) except -1:
        """Claim and deliver up to `limit` records without waiting for new
        ones, partitions in turn from the one after the last that served.
        Returns 1 if a claimed record was still being written at `deadline`."""
        cdef Py_ssize_t n = self._n, k, idx = self._gnext, before
        cdef int64_t now = qm_now_ns()
        for k in range(n):
            if len(out) >= limit:
                break
            if idx >= n:
                idx -= n
            if self._ordered and not (self._flags[idx] & 4):
                if now < self._acquire_after[idx] or not self._try_acquire(idx, now):
                    idx += 1
                    continue
            before = len(out)
            if self._claim_partition(idx, limit - len(out), out, dead, now, deadline):
                return 1
            if len(out) > before:
                self._gnext = idx + 1
            idx += 1
        return 0

    cdef int _place_probes(self, qm_log_t **lgs) except -1:
        """Put each partition's wait cursor at the end its last claim saw:
        a record there (or past it) is new to the group."""
        cdef Py_ssize_t idx
        cdef uint64_t start = 0, end
        cdef qm_log_cursor_t *pr
        cdef int status
        for idx in range(self._n):
            pr = &self._probes[idx]
            end = self._claim_end[idx]
            if not (self._flags[idx] & 8):   # never claimed (ordered, not owned)
                status = qm_log_bounds(lgs[idx], &start, &end)
                if status < 0:
                    raise _error(status, (<Log>self._glogs[idx]).path, False)
            if (self._flags[idx] & 2) and pr.next_offset == end:
                continue
            if (self._flags[idx] & 1) and self._curs[idx].next_offset == end:
                pr[0] = self._curs[idx]
                pr.flags = QM_CURSOR_NO_CRC
                self._flags[idx] |= 2
                continue
            with nogil:
                status = qm_log_seek(lgs[idx], pr, end)
            if status < 0:
                self._flags[idx] &= ~2
                raise _error(status, (<Log>self._glogs[idx]).path, False)
            self._flags[idx] |= 2
        return 0

    cdef int _wait(self, int64_t deadline) except -1:
        """After a poll found nothing: run the liveness tick if due, else
        sleep until a new record, a redelivery coming due, the tick or
        `deadline` (at most 50 ms at a time; then signal handlers run)."""
        cdef Py_ssize_t n = self._n, idx, entered = 0
        cdef int64_t now = qm_now_ns(), wake, due
        cdef qm_group_t *g
        cdef qm_log_t *lgs[128]
        cdef int status
        if now >= self._next_tick:
            self._next_tick = now + _TICK_NS
            g = self._grp._enter()
            try:
                with nogil:
                    status = qm_group_sweep(g, now, NULL)
            finally:
                self._grp._leave()
            self._grp._check(status)
            return 0   # poll again: the sweep may have released leases
        wake = deadline if deadline < self._next_tick else self._next_tick
        if not self._at_most_once:
            g = self._grp._handle()
            for idx in range(n):
                if self._ordered and not (self._flags[idx] & 4):
                    continue
                if qm_group_next_due(g, self._gparts[idx], &due) == QM_OK and due < wake:
                    wake = due
            if wake <= now:   # a stale lower bound: the poll just found nothing due
                wake = now + 1000000
                if wake > deadline:
                    wake = deadline
        try:
            for idx in range(n):
                lgs[idx] = (<Log>self._glogs[idx])._enter()
                entered += 1
            self._place_probes(lgs)
            with nogil:
                status = qm_log_wait_any(lgs, self._probes, <size_t>n, _slice_end(wake))
        finally:
            for idx in range(entered):
                (<Log>self._glogs[idx])._leave()
        if status == QM_OK or status == QM_ETIMEDOUT or status == QM_EINTR:
            PyErr_CheckSignals()
            return 0
        raise _error(status, self._gtopic, False)

    cdef list _fetch(self, Py_ssize_t limit, object timeout):
        cdef int64_t deadline = QM_FOREVER
        cdef list out = []
        cdef list dead = []
        cdef int timed_out
        if timeout is not None:
            if (type(timeout) is float or type(timeout) is int) and 0 <= timeout < 1e9:
                deadline = qm_now_ns() + <int64_t>(<double>timeout * 1e9)
            else:
                deadline = _py_deadline(timeout)
        self._acquire(deadline)
        try:
            while True:
                try:
                    timed_out = self._poll(limit, out, dead, deadline)
                    if dead:
                        self._dead_letter(dead)
                        del dead[:]
                    if out:
                        # a signal that came while we claimed: its handler runs
                        # now, and if it raises the leases go back at once
                        # (raised after we returned, the messages would be
                        # dropped and their leases held to the timeout)
                        PyErr_CheckSignals()
                except BaseException:
                    self._give_back(out)
                    self._give_back(dead)
                    raise
                if out:
                    return out
                if timed_out or qm_now_ns() >= deadline:
                    raise Empty(f"no message on topic {self._gtopic!r}")
                self._wait(deadline)
        finally:
            PyThread_release_lock(self._glock)

    def get(self, timeout=None):
        """The next message for this member, waiting up to `timeout` seconds
        (None: forever).  Raises Empty if none came in time."""
        return self._fetch(1, timeout)[0]

    def get_many(self, max_messages, timeout=None):
        """Up to `max_messages` messages: waits (as get) for the first, then
        claims what is already there.  Raises Empty if none came."""
        if type(max_messages) is not int or not 1 <= max_messages <= PY_SSIZE_T_MAX:
            _py_check_int("max_messages", max_messages, 1, PY_SSIZE_T_MAX)
        return self._fetch(max_messages, timeout)

    def ack_many(self, msgs):
        """Ack every message of `msgs` (of this consumer) in one call.
        Returns how many were stale (their leases had moved on: they raise
        nothing); already acked ones are skipped, and at-most-once ones are
        no-ops."""
        cdef list items = msgs if type(msgs) is list else list(msgs)
        cdef Py_ssize_t n = len(items), i, k = 0, stale = 0
        cdef qm_group_lease_t stack_ls[64]
        cdef int stack_st[64]
        cdef Py_ssize_t stack_ix[64]
        cdef qm_group_lease_t *ls = stack_ls
        cdef int *st = stack_st
        cdef Py_ssize_t *ix = stack_ix
        cdef void *heap = NULL
        cdef Message m
        cdef Group grp = self._grp
        cdef int status, failed = QM_OK
        for i in range(n):   # check everything before changing anything
            m = <Message?>items[i]
            if m._group is not None and m._group is not self:
                raise ValueError(f"message {m.partition}-{m.offset} was delivered by another consumer")
        if n > 64:
            heap = malloc(n * (sizeof(qm_group_lease_t) + sizeof(int) + sizeof(Py_ssize_t)))
            if heap == NULL:
                raise MemoryError()
            ls = <qm_group_lease_t *>heap
            ix = <Py_ssize_t *>(ls + n)
            st = <int *>(ix + n)
        try:
            for i in range(n):
                m = <Message>items[i]
                if m._group is None or m._settled == _ACKED:
                    continue
                if m._seekgen != self._pseek[m.partition]:
                    stale += 1   # a seek of this consumer passed it
                    continue
                ls[k].partition = <uint32_t>m.partition
                ls[k].offset = m.offset
                ls[k].epoch = m._epoch
                ix[k] = i
                k += 1
            if k == 0:
                return stale
            if grp._closed or grp._g == NULL:   # the leases were given back at close
                return stale + k
            qm_group_ack_many(grp._g, ls, <size_t>k, st)
            for i in range(k):
                status = st[i]
                if status == QM_OK:
                    m = <Message>items[ix[i]]
                    m._settled = _ACKED
                    if self._errors:
                        self._errors.pop((m.partition, m.offset), None)
                elif status == QM_ESTALE:
                    stale += 1
                elif failed == QM_OK:
                    failed = status
            if failed != QM_OK:
                grp._check(failed)
            return stale
        finally:
            free(heap)

    def _group_nack(self, Message m not None, int64_t not_before_ns):
        """qm_group_nack of `m`'s lease (the policy computed the time)."""
        cdef Group grp = self._grp
        cdef int status
        if m._group is not self:
            raise ValueError(f"message {m.partition}-{m.offset} was delivered by another consumer")
        if m._settled == _ACKED:
            raise StaleAck(f"message {m.partition}-{m.offset} was already acked")
        if grp._closed or grp._g == NULL:
            raise StaleAck(f"message {m.partition}-{m.offset}: the consumer was closed and "
                           "gave its leases back")
        if m._seekgen != self._pseek[m.partition]:
            raise StaleAck(f"message {m.partition}-{m.offset}: a seek passed it")
        status = qm_group_nack(grp._g, <uint32_t>m.partition, m.offset, m._epoch, not_before_ns)
        if status == QM_ESTALE:
            raise StaleAck(f"message {m.partition}-{m.offset}: the lease moved on (expired and "
                           "redelivered, nacked, or passed by a seek)")
        grp._check(status)
        m._settled = _NACKED

    def _after_seek(self, uint32_t partition):
        """The group was seeked on `partition`: re-check retention there."""
        cdef Py_ssize_t idx
        if partition < 128:
            self._pseek[partition] += 1
        for idx in range(self._n):
            if self._gparts[idx] == partition:
                del self._parked[idx][:]
                self._starts_seen[idx] = 0
                self._flags[idx] &= ~1
