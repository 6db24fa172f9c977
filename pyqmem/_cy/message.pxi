# RecordMetadata (what send returns) and Message (what a consumer gets).
# Included by pyqmem/_core.pyx (one extension module; see the order there).

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
    (``f"{partition}-{offset}"``), ``delivery_count``, ``key_str`` (the key
    decoded from UTF-8); ``ack()``, ``nack(delay=None, error=None)``,
    ``extend(seconds)`` (group members; no-ops for an independent subscriber).
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

    @property
    def key_str(self):
        """The key decoded from UTF-8, or None: a str key is stored as its
        UTF-8 bytes and ``key`` gives those bytes back.  UnicodeDecodeError
        if the key is not UTF-8."""
        cdef object key = self.key
        return None if key is None else key.decode("utf-8")

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
            self._group._nack(self, delay, error)

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
