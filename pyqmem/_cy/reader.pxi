# TopicReader: the hot paths of an independent subscriber.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

@cython.final
@cython.auto_pickle(False)
cdef class TopicReader:
    """The hot paths of ``pyqmem.Consumer``, held by it (its ``get`` and
    ``get_many`` are bound to these methods): reads over the consumer's
    partition handles, making Message objects here.  A lock serializes
    calls from several threads."""

    cdef list _rlogs             # Log per partition read, in order
    cdef list _rcursors          # Cursor per partition read
    cdef Py_ssize_t *_rparts     # partition numbers
    cdef Py_ssize_t _n
    cdef Py_ssize_t _rnext       # index to try first
    cdef object _rserializer     # None for the raw serializer
    cdef str _rtopic
    cdef PyThread_type_lock _rlock
    cdef bint _closed
    cdef list _rstash            # read by a get a signal handler then ended: returned next

    def __cinit__(self, *args, **kwargs):
        self._rlock = PyThread_allocate_lock()
        if self._rlock == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self._rparts)
        if self._rlock != NULL:
            PyThread_free_lock(self._rlock)

    def __init__(self, str topic, list partitions, list logs, list cursors, serializer,
                 bint raw):
        """`logs` and `cursors` (placed) of `partitions`, in the order to try
        them; `serializer` makes Message.value unless `raw`."""
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

    def lock(self, int64_t deadline_ns=QM_FOREVER):
        """Take the consumer's lock (for seek, lag): waits at most until
        `deadline_ns` (Empty then); Closed if the reader is closed.
        Release with unlock()."""
        self._acquire(deadline_ns)

    def unlock(self):
        PyThread_release_lock(self._rlock)

    def close(self):
        """Later calls raise Closed (the owner closes the handles, which
        interrupts a get blocked in another thread)."""
        self._closed = True

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

    cdef Message _get(self, int64_t deadline_ns):
        """The next message (polled first), waiting until `deadline_ns`
        (qm_log_wait_any spins a while before it sleeps);
        Empty if none came."""
        cdef Message m = self._poll()
        if m is not None:
            return m
        if self._n == 1:
            m = self._wait_one(deadline_ns)
            if m is None:
                raise Empty(f"no message on topic {self._rtopic!r}")
            return m
        while True:
            if not _wait_any(self._rcursors, deadline_ns):
                raise Empty(f"no message on topic {self._rtopic!r}")
            m = self._poll()
            if m is not None:
                return m

    def get(self, block=True, timeout=None):
        """The next message, waiting for one if `block` (at most `timeout`
        seconds; None: forever).  Raises Empty if none came in time."""
        cdef int64_t deadline = QM_FOREVER
        cdef double secs = -1.0
        cdef Message m
        if not block:
            deadline = QM_NOWAIT   # queue.Queue's rule: the timeout is ignored
        elif timeout is not None:
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

    def get_nowait(self):
        """The next message if one is there now, else raise Empty."""
        return self.get(False)

    def get_many(self, max_messages, block=True, timeout=None):
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
        if not block:
            deadline = QM_NOWAIT
        elif timeout is not None:
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
