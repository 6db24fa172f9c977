/*
 * guard.c - the public data-path calls of rings, partition logs and
 * consumer groups: each checks the handle's fault word (fault.c) before
 * and after doing its work (ring.c, the log_*.c files, group.c).
 *
 * Before: a handle whose file was truncated while mapped is dead; every
 * call says so (QM_ECORRUPT, naming the file) without touching the
 * mapping.  After: the call during which the truncation was discovered
 * ran on zero pages for part of its work, so whatever it computed is
 * void; it reports QM_ECORRUPT too instead of a result (a put whose bytes
 * went to private memory must not report success).  Each check is one
 * relaxed load of a word of the handle.
 */
#include "internal.h"

#define GUARDED(handle, fault, object, call)                     \
    do {                                                         \
        if (!(handle)) return QM_ECLOSED;                        \
        int rc_ = qm__fault_check((fault), (object), QM_OK);     \
        if (rc_) return rc_;                                     \
        rc_ = (call);                                            \
        return qm__fault_check((fault), (object), rc_);          \
    } while (0)

#define RING(call) GUARDED(r, &r->fault, r->path, call)
#define LOG(call) GUARDED(lg, qm__log_fault(lg), "partition log", call)
#define GROUP(call) GUARDED(g, &g->fault, "consumer group", call)

/* ----- rings ---------------------------------------------------------------------- */
int qm_ring_put(qm_ring_t *r, const qm_iovec_t *iov, int iovcnt, int64_t deadline) {
    RING(qm__ring_put(r, iov, iovcnt, deadline));
}

int qm_ring_put_many(qm_ring_t *r, const qm_iovec_t *msgs, size_t count, int64_t deadline,
                     size_t *done) {
    *done = 0;
    RING(qm__ring_put_many(r, msgs, count, deadline, done));
}

int qm_ring_get_begin(qm_ring_t *r, qm_record_t *rec, int64_t deadline) {
    RING(qm__ring_get_begin(r, rec, deadline));
}

int qm_ring_get_end(qm_ring_t *r, qm_record_t *rec) { RING(qm__ring_get_end(r, rec)); }
int qm_ring_depth(qm_ring_t *r, uint64_t *depth) { RING(qm__ring_depth(r, depth)); }
int qm_ring_stats(qm_ring_t *r, qm_ring_stats_t *st) { RING(qm__ring_stats(r, st)); }
int qm_ring_set_maxsize(qm_ring_t *r, uint64_t maxsize) { RING(qm__ring_set_maxsize(r, maxsize)); }
int qm_ring_task_done(qm_ring_t *r, uint64_t n) { RING(qm__ring_task_done(r, n)); }
int qm_ring_unfinished(qm_ring_t *r, uint64_t *out) { RING(qm__ring_unfinished(r, out)); }
int qm_ring_join(qm_ring_t *r, int64_t deadline_ns) { RING(qm__ring_join(r, deadline_ns)); }

/* ----- partition logs -------------------------------------------------------------- */
int qm_log_append(qm_log_t *lg, const qm_log_entry_t *entry, uint64_t *offset) {
    /* an -errno of an append ("... partition is read-only", "cannot reserve
     * a segment") leaves its reason, and only this call's */
    qm__clear_error();
    LOG(qm__log_append(lg, entry, offset));
}

int qm_log_read(qm_log_t *lg, qm_log_cursor_t *cur, qm_log_record_t *rec, int64_t deadline) {
    LOG(qm__log_read(lg, cur, rec, deadline));
}

int qm_log_seek(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t offset) {
    LOG(qm__log_seek(lg, cur, offset));
}

int qm_log_seek_time(qm_log_t *lg, qm_log_cursor_t *cur, int64_t timestamp_ns) {
    LOG(qm__log_seek_time(lg, cur, timestamp_ns));
}

int qm_log_retain(qm_log_t *lg, uint64_t *deleted) { LOG(qm__log_retain(lg, deleted)); }
int qm_log_bounds(qm_log_t *lg, uint64_t *start, uint64_t *end) {
    LOG(qm__log_bounds(lg, start, end));
}
int qm_log_stats(qm_log_t *lg, qm_log_stats_t *st) { LOG(qm__log_stats(lg, st)); }

/* The first broken log of the set, if any, is the answer. */
static int logs_check(qm_log_t *const *logs, size_t n, int rc) {
    for (size_t i = 0; i < n && i < 128; i++)
        if (logs[i]) {
            rc = qm__fault_check(qm__log_fault(logs[i]), "partition log", rc);
            if (rc == QM_ECORRUPT) return rc;
        }
    return rc;
}

int qm_log_wait_any(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n,
                    int64_t deadline) {
    int rc = logs_check(logs, n, QM_OK);
    if (rc) return rc;
    return logs_check(logs, n, qm__log_wait_any(logs, cursors, n, deadline));
}

/* ----- consumer groups --------------------------------------------------------------- */
int qm_group_claim(qm_group_t *g, uint32_t p, uint64_t end, int64_t now, int64_t lease_ns,
                   uint32_t flags, qm_group_lease_t *out, size_t max, size_t *got) {
    *got = 0;
    GROUP(qm__group_claim(g, p, end, now, lease_ns, flags, out, max, got));
}

int qm_group_ack(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch) {
    GROUP(qm__group_ack(g, p, off, epoch));
}

int qm_group_ack_many(qm_group_t *g, const qm_group_lease_t *leases, size_t n, int *status) {
    int rc = g ? qm__fault_check(&g->fault, "consumer group", QM_OK) : QM_OK;
    if (rc == QM_OK) {
        rc = qm__group_ack_many(g, leases, n, status);
        if (!g || !atomic_load_explicit(&g->fault, memory_order_relaxed)) return rc;
        rc = qm__fault_check(&g->fault, "consumer group", rc);
    }
    for (size_t i = 0; status && i < n; i++) status[i] = rc;
    return rc;
}

int qm_group_nack(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, int64_t not_before) {
    GROUP(qm__group_nack(g, p, off, epoch, not_before));
}

int qm_group_extend(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, int64_t deadline) {
    GROUP(qm__group_extend(g, p, off, epoch, deadline));
}

int qm_group_seek(qm_group_t *g, uint32_t p, uint64_t off) { GROUP(qm__group_seek(g, p, off)); }

int qm_group_skip_to(qm_group_t *g, uint32_t p, uint64_t log_start, uint64_t *skipped) {
    if (skipped) *skipped = 0;
    GROUP(qm__group_skip_to(g, p, log_start, skipped));
}

int qm_group_count_dead_lettered(qm_group_t *g, uint32_t p, uint64_t n) {
    GROUP(qm__group_count_dead_lettered(g, p, n));
}

int qm_group_acquire(qm_group_t *g, uint32_t p) { GROUP(qm__group_acquire(g, p)); }
int qm_group_release(qm_group_t *g, uint32_t p) { GROUP(qm__group_release(g, p)); }

int qm_group_sweep(qm_group_t *g, int64_t now_ns, uint64_t *released) {
    if (released) *released = 0;
    GROUP(qm__group_sweep(g, now_ns, released));
}

int qm_group_next_due(qm_group_t *g, uint32_t p, int64_t *due) {
    GROUP(qm__group_next_due(g, p, due));
}

int qm_group_partition_stats(qm_group_t *g, uint32_t p, qm_group_partition_stats_t *st) {
    GROUP(qm__group_partition_stats(g, p, st));
}

int qm_group_stats(qm_group_t *g, qm_group_stats_t *st) { GROUP(qm__group_stats(g, st)); }
