# Ring: one C handle on a shared ring (qm_ring_*), and ring names.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

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


cdef object _ring_error(Ring ring, int status, bint putting):
    """The exception for `status` of a call on `ring`: a put or get that
    could not finish in time says so in the words Topic uses too."""
    if status == QM_EAGAIN or status == QM_ETIMEDOUT:
        if putting:
            return Full(f"{ring.label} is full")
        return Empty(f"no message on {ring.label}")
    return _error(status, ring.name, putting)


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
    cdef readonly str label   # for messages: "queue 'jobs'" or "the anonymous queue"
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
        ring.label = f"queue {name!r}"
        return ring

    @staticmethod
    def create_anonymous(uint64_t capacity, uint64_t maxsize):
        """A new ring with no name (qm_ring_create_anonymous): it lives until
        its last handle and descriptor in every process are gone."""
        cdef qm_ring_t *handle = NULL
        cdef Ring ring = Ring.__new__(Ring)
        cdef int status
        with nogil:
            status = qm_ring_create_anonymous(capacity, maxsize, &handle)
        if status < 0:
            raise _error(status, "(anonymous queue)", False)
        ring._ring = handle
        ring.name = "(anonymous queue)"   # for messages
        ring.label = "the anonymous queue"
        return ring

    @staticmethod
    def open_fd(int fd):
        """Attach to the ring behind the descriptor `fd` (qm_ring_open_fd);
        `fd` stays the caller's."""
        cdef qm_ring_t *handle = NULL
        cdef Ring ring = Ring.__new__(Ring)
        cdef int status
        with nogil:
            status = qm_ring_open_fd(fd, &handle)
        if status < 0:
            raise _error(status, "(anonymous queue)", False)
        ring._ring = handle
        ring.name = "(anonymous queue)"   # for messages
        ring.label = "the anonymous queue"
        return ring

    def fd(self):
        """The descriptor of this handle's file, to pass to another process
        (valid until close)."""
        cdef int fd = qm_ring_fd(self._enter())
        self._leave()
        if fd < 0:
            raise _error(fd, self.name, False)
        return fd

    cdef qm_ring_t *_handle(self) except NULL:
        if self._closed:
            raise Closed(f"{self.label} is closed")
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
            raise _ring_error(self, status, False)
        other._ring = handle
        other.name = self.name
        other.label = self.label
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
            raise _ring_error(self, status, True)

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

    def set_maxsize(self, uint64_t maxsize):
        """Change the count bound for every handle (qm_ring_set_maxsize)."""
        cdef int status = qm_ring_set_maxsize(self._enter(), maxsize)
        self._leave()
        if status < 0:
            raise _ring_error(self, status, False)

    def task_done(self, uint64_t n):
        """Count `n` tasks done (qm_ring_task_done)."""
        cdef int status = qm_ring_task_done(self._enter(), n)
        self._leave()
        if status == QM_EINVAL:
            raise ValueError("task_done() called more times than messages were got")
        if status < 0:
            raise _ring_error(self, status, False)

    def unfinished(self):
        """Messages put and not yet counted done (qm_ring_unfinished)."""
        cdef uint64_t n = 0
        cdef int status = qm_ring_unfinished(self._enter(), &n)
        self._leave()
        if status < 0:
            raise _ring_error(self, status, False)
        return n

    def join(self, int64_t deadline_ns):
        """Wait until every task is done (qm_ring_join); False if the
        deadline passed first.  Signal handlers run while it waits."""
        cdef qm_ring_t *r = self._enter()
        cdef int status
        try:
            while True:
                with nogil:
                    status = qm_ring_join(r, _slice_end(deadline_ns))
                if not _again(status, deadline_ns):
                    break
        finally:
            self._leave()
        if status == QM_OK:
            return True
        if status == QM_ETIMEDOUT:
            return False
        raise _ring_error(self, status, False)

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
            exc = _ring_error(self, status, True)
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
            raise _ring_error(self, status, False)
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

    def keep(self, list items):
        """Give back `items` this handle's get returned but the caller could
        not hand on (a signal handler raised while it deserialized them): the
        handle's next get returns them first, in order."""
        if self._stash is None:
            self._stash = []
        self._stash[:0] = items

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
            raise _ring_error(self, status, False)
        return depth

    def stats(self):
        """Counters of the ring and of this handle, as a dict (qm_ring_stats_t)."""
        cdef qm_ring_stats_t st
        cdef int status = qm_ring_stats(self._handle(), &st)
        if status < 0:
            raise _ring_error(self, status, False)
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
