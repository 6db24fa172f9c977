# GroupReader: the hot paths of a consumer group member.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

@cython.final
@cython.auto_pickle(False)
cdef class GroupReader:
    """The hot paths of ``pyqmem.group.GroupConsumer``, held by it (its
    ``get``, ``get_many`` and ``ack_many`` are bound to these methods):
    claim leases, read their records into Messages, ack them, and wait for
    new records, for redeliveries coming due and for the 100 ms liveness
    tick.  A lock serializes get calls from several threads;
    Message.ack/nack/extend take no lock (they only CAS the lease's entry).

    The policy comes in as callables (none of them refers back to the
    GroupConsumer, so dropping it frees everything at once):
    ``retry_delay(delivery_count) -> seconds`` for a nack without a delay,
    ``error_text(error) -> str`` for the last error a nack remembers, and
    ``dead_letter(reader, msgs)`` to give up on records claimed past
    max_deliveries (it publishes them, then acks them and counts them with
    ``reader.count_dead_lettered``)."""

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
    cdef bint _closed
    cdef readonly dict errors        # (partition, offset) -> last error text
    cdef public Py_ssize_t stale_acks   # counted by the owner's run()
    cdef object _retry_delay
    cdef object _error_text
    cdef object _on_dead_letter
    cdef list _parked                # per partition: [(offset, epoch, count)] claimed
                                     # while still being written, kept leased (a give-
                                     # back would count a delivery nobody got)
    cdef uint32_t _pseek[128]        # seeks this consumer made, per partition number

    def __cinit__(self, *args, **kwargs):
        self._glock = PyThread_allocate_lock()
        if self._glock == NULL:
            raise MemoryError()
        self.errors = {}

    def __dealloc__(self):
        free(self._block)
        if self._glock != NULL:
            PyThread_free_lock(self._glock)

    def __init__(self, str topic, Group group not None, list partitions, list logs,
                 serializer, bint raw, double visibility_timeout, bint at_most_once,
                 bint ordered, uint32_t max_deliveries, bint check_crcs, *, retry_delay,
                 error_text, dead_letter):
        """`logs` (own handles) of `partitions`, in the order to try them;
        the callables as in the class docstring."""
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
        self._retry_delay = retry_delay
        self._error_text = error_text
        self._on_dead_letter = dead_letter

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

    @property
    def group(self):
        """The Group handle."""
        return self._grp

    def close(self):
        """Later calls raise Closed (the owner closes the handles, which
        gives the leases back and interrupts a blocked get)."""
        self._closed = True

    def count_dead_lettered(self, uint32_t partition, uint64_t n=1):
        """Count `n` records of `partition` as dead-lettered in the group."""
        self._grp.count_dead_lettered(partition, n)

    def lock(self, int64_t deadline_ns=QM_FOREVER):
        """Take the consumer's lock (for seek, lag, stats): see _acquire."""
        self._acquire(deadline_ns)

    def unlock(self):
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

    cdef list _fetch(self, Py_ssize_t limit, object block, object timeout):
        cdef int64_t deadline = QM_FOREVER
        cdef list out = []
        cdef list dead = []
        cdef int timed_out
        if not block:
            deadline = QM_NOWAIT   # queue.Queue's rule: the timeout is ignored
        elif timeout is not None:
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
                        self._on_dead_letter(self, dead)
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

    def get(self, block=True, timeout=None):
        """The next message for this member, waiting for one if `block` (at
        most `timeout` seconds; None: forever).  Raises Empty if none came."""
        return self._fetch(1, block, timeout)[0]

    def get_nowait(self):
        """The next message if one is there now, else raise Empty."""
        return self._fetch(1, False, None)[0]

    def get_many(self, max_messages, block=True, timeout=None):
        """Up to `max_messages` messages: waits (as get) for the first, then
        claims what is already there.  Raises Empty if none came."""
        if type(max_messages) is not int or not 1 <= max_messages <= PY_SSIZE_T_MAX:
            _py_check_int("max_messages", max_messages, 1, PY_SSIZE_T_MAX)
        return self._fetch(max_messages, block, timeout)

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
                    if self.errors:
                        self.errors.pop((m.partition, m.offset), None)
                elif status == QM_ESTALE:
                    stale += 1
                elif failed == QM_OK:
                    failed = status
            if failed != QM_OK:
                grp._check(failed)
            return stale
        finally:
            free(heap)

    cdef int _nack(self, Message m, object delay, object error) except -1:
        """Message.nack() (`delay` validated): due again after `delay`
        seconds or the retry policy's delay; `error` remembered as text."""
        if delay is None:
            delay = self._retry_delay(m.delivery_count)
        self._group_nack(m, qm_now_ns() + round(delay * 1e9))
        if error is not None:
            self._remember_error((m.partition, m.offset), self._error_text(error))
        return 0

    cdef int _remember_error(self, tuple key, str text) except -1:
        cdef dict errors = self.errors
        errors.pop(key, None)
        if len(errors) >= _ERRORS_MAX:
            errors.pop(next(iter(errors)))
        errors[key] = text
        return 0

    cdef int _group_nack(self, Message m, int64_t not_before_ns) except -1:
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
        return 0

    def after_seek(self, uint32_t partition):
        """The group was seeked on `partition`: re-check retention there."""
        cdef Py_ssize_t idx
        if partition < 128:
            self._pseek[partition] += 1
        for idx in range(self._n):
            if self._gparts[idx] == partition:
                del self._parked[idx][:]
                self._starts_seen[idx] = 0
                self._flags[idx] &= ~1
