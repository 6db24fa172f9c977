# Group: one C handle on a consumer group file (qm_group_*), and the ack/extend of one message.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

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
    _ERRORS_MAX = 65536          # last errors remembered per consumer (oldest dropped)


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
        if r.errors:
            r.errors.pop((m.partition, m.offset), None)
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
