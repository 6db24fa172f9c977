# Log, Cursor: one C handle on a partition log (qm_log_*), read through cursors.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

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
        """After close(): free the handle once no call and no view uses it;
        while only views do, leave the log's members already (a message kept
        alive must not keep its topic "open", e.g. for Topic.delete)."""
        cdef qm_log_t *lg = self._log
        if not self._closed or self._busy != 0 or lg == NULL:
            return
        if self._views == 0:
            self._log = NULL
            with nogil:
                qm_log_close(lg)
        else:
            qm_log_leave(lg)

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
