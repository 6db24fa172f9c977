# TopicSender: the hot paths of Topic.send/send_many.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

@cython.final
@cython.auto_pickle(False)
cdef class TopicSender:
    """The hot paths of ``pyqmem.Topic.send``/``send_many``, held by the
    Topic (which binds its ``send``/``send_many`` to these methods): raw
    ``bytes`` values, with a str/bytes key, headers, partition or
    correlation id, from the thread that opened the topic, are appended
    here; every other call goes to the general path the Topic gave:
    ``send(value, key, headers, partition, correlation_id)`` and
    ``send_many(values, key)`` (a list).

    The general path is held through weak references (``weakref.WeakMethod``
    or any callable returning the function or None): the Topic holds this
    object, and a strong reference back would keep a dropped Topic's
    handles open until a garbage collection.  Once the Topic is gone, a
    call that needs the general path raises Closed."""

    cdef list _owner_logs       # the opening thread's handles, one per partition
    cdef long _owner            # that thread's ident
    cdef Py_ssize_t _nparts
    cdef uint64_t _rr           # round-robin counter
    cdef bint _closed
    cdef bint _raw
    cdef Py_ssize_t _max_value
    cdef object _general_send       # weak: () -> send(value, key, headers, partition, cid)
    cdef object _general_send_many  # weak: () -> send_many(values, key)
    cdef str _topic

    def __init__(self, str topic, list logs, Py_ssize_t partitions, uint64_t round_robin_start,
                 Py_ssize_t max_value, bint raw, general_send, general_send_many):
        """Made by the opening thread, with its handles (one per partition)."""
        if len(logs) != partitions or partitions < 1:
            raise ValueError("one handle per partition")
        self._topic = topic
        self._owner_logs = logs
        self._owner = PyThread_get_thread_ident()
        self._nparts = partitions
        self._rr = round_robin_start
        self._max_value = max_value
        self._raw = raw
        self._general_send = general_send
        self._general_send_many = general_send_many

    def close(self):
        """Later sends take the general path (which raises Closed)."""
        self._closed = True

    def round_robin(self):
        """The next round-robin partition (shared with the fast paths)."""
        cdef uint64_t k = self._rr
        self._rr += 1
        return <Py_ssize_t>(k % <uint64_t>self._nparts)

    cdef object _send(self, value, key, headers, partition, correlation_id):
        fn = self._general_send()
        if fn is None:
            raise Closed(f"topic {self._topic!r} is closed (the Topic object is gone)")
        return fn(value, key, headers, partition, correlation_id)

    cdef object _send_many(self, list items, key):
        fn = self._general_send_many()
        if fn is None:
            raise Closed(f"topic {self._topic!r} is closed (the Topic object is gone)")
        return fn(items, key)

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
            p = <Py_ssize_t>((qm_murmur2(key_ptr, <size_t>key_len) & 0x7fffffffu)
                             % <uint32_t>self._nparts)
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
