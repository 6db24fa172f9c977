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
    if status == QM_EPERM:
        return PermissionError(EPERM, text, name)
    if status == QM_ECLOSED:
        return Closed(msg)
    if status > -30000:
        return OSError(-status, text, name)
    return QmemError(msg)


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

    cdef object _get(self, int64_t deadline_ns, bint frame):
        cdef qm_record_t rec
        cdef qm_ring_t *r = self._enter()
        try:
            self._begin(r, &rec, deadline_ns)
            return _copy_out(r, &rec, frame, self.name)
        finally:
            self._leave()

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
        cdef qm_ring_t *r = self._enter()
        try:
            self._begin(r, &rec, deadline_ns)
            out.append(_copy_out(r, &rec, frames, self.name))
            # After the first record any failure ends the batch: what was
            # taken is returned, and the failure recurs on the next call.
            while len(out) < n and qm_ring_get_begin(r, &rec, QM_NOWAIT) == QM_OK:
                out.append(_copy_out(r, &rec, frames, self.name))
        finally:
            self._leave()
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
                e.key = kview.buf
                e.key_len = <uint32_t>kview.len
            _buffer(headers, &hview, "headers")
            have_headers = True
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


cdef object _encode_headers(object headers, object correlation_id):
    """pyqmem.headers.encode for the common case -- a dict of str names (not
    "qm.") to bytes and a str correlation id -- in C; anything else, and
    every error, goes to pyqmem.headers.encode (same bytes, same errors)."""
    cdef list names = []
    cdef list values = []
    cdef Py_ssize_t size = 2, count, i
    cdef bytes raw_name, raw_value, out
    cdef char *p
    if headers is not None and type(headers) is not dict:
        return _encode_headers_py(headers, correlation_id)
    if correlation_id is not None and type(correlation_id) is not str:
        return _encode_headers_py(headers, correlation_id)
    try:
        if headers is not None:
            for name, value in (<dict>headers).items():
                if type(name) is not str or type(value) is not bytes or (<str>name).startswith("qm."):
                    return _encode_headers_py(headers, correlation_id)
                names.append(name)
                values.append(value)
        if correlation_id is not None:
            raw_value = PyUnicode_AsUTF8String(correlation_id)
        count = len(names) + (correlation_id is not None)
        if count == 0:
            return b""
        if count > 0xffff:
            return _encode_headers_py(headers, correlation_id)
        for i in range(len(names)):
            raw_name = PyUnicode_AsUTF8String(names[i])
            if len(raw_name) > 0xffff or len(<bytes>values[i]) > 0xffffffff:
                return _encode_headers_py(headers, correlation_id)
            names[i] = raw_name
            size += 6 + len(raw_name) + len(<bytes>values[i])
        if correlation_id is not None:
            names.append(_CID_NAME)
            values.append(raw_value)
            size += 6 + len(_CID_NAME) + len(raw_value)
    except Exception:
        return _encode_headers_py(headers, correlation_id)
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


cdef object _encode_headers_py(object headers, object correlation_id):
    from pyqmem.headers import encode
    return encode(headers, correlation_id)


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
            else:
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
    cdef object _headers         # dict, or None until first used (no header block)
    cdef object _correlation_id
    cdef object _value
    cdef bint _have_value

    delivery_count = 1

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

    @property
    def headers(self):
        """The record's headers: dict str -> bytes."""
        if self._headers is None:
            self._headers = {}
        return self._headers

    @property
    def correlation_id(self):
        """``send(correlation_id=...)`` of the record, or None."""
        return self._correlation_id

    @property
    def timestamp(self):
        """Float seconds since the epoch, UTC."""
        return <double>self._timestamp_ns / 1e9

    @property
    def id(self):
        """``f"{partition}-{offset}"``: unique within the topic."""
        return f"{self.partition}-{self.offset}"

    def ack(self):
        """Complete the delivery (a no-op for an independent subscriber)."""

    def nack(self, delay=None):
        """Ask for redelivery after `delay` seconds (a no-op for an
        independent subscriber)."""
        if delay is not None:
            if not isinstance(delay, numbers.Real) or isinstance(delay, bool):
                raise TypeError(f"delay must be None or a number, not {type(delay).__name__}")
            if not delay >= 0:
                raise ValueError(f"delay must be >= 0, got {delay}")

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
    if rec.headers_len:   # decoded now: a malformed block is the get's CorruptError
        m._headers, m._correlation_id = _decode_header_block(
            <const unsigned char *>rec.headers, <Py_ssize_t>rec.headers_len)
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
            if key_len > 0xffffffff:
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
            head = _encode_headers(headers, correlation_id)
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
            m = self._poll()
            if m is None:
                if secs >= 0:
                    deadline = qm_now_ns() + <int64_t>(secs * 1e9)
                m = self._get(deadline)
            return m
        finally:
            PyThread_release_lock(self._rlock)

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
