/*
 * log_read.c - the partition log: reading, seeking by offset and time, waiting.
 * log_internal.h has the overview and what the log files share.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "log_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct read_ctx {
    qm_log_t *lg;
    qm_log_cursor_t *cur;
    qm_log_record_t *rec;
    uint32_t blocked_on;   /* owner of the WRITING record we wait behind */
} read_ctx_t;

int qm__log_try_read(qm_log_t *lg, qm_log_cursor_t *cur, qm_log_record_t *rec, uint32_t *blocked) {
    for (int round = 0; round < LOG_ROUNDS; round++) {
        /* behind retention: the records up to the start are gone */
        /* [L22] acquire: pairs with [L21] */
        uint64_t start = atomic_load_explicit(&lg->ctl->start_offset, memory_order_acquire);
        if (cur->next_offset < start) {
            uint64_t base;
            if (qm__log_list_base(lg, false, 0, &base) == QM_OK && base >= start) {
                cur->skipped += base - cur->next_offset;
                cur->base = cur->next_offset = base;
                cur->pos = QM_SEGMENT_HEADER;
            }
        }
        uint8_t *seg;
        int rc = qm__log_seg_get(lg, cur->base, &seg);
        if (rc == QM_ENOTFOUND) {
            /* Either the next segment is being rolled in, or retention
             * deleted this one before we read it: then jump to the start. */
            uint64_t start;
            if (qm__log_list_base(lg, false, 0, &start) == QM_OK && start > cur->base) {
                cur->skipped += start > cur->next_offset ? start - cur->next_offset : 0;
                cur->base = cur->next_offset = start;
                cur->pos = QM_SEGMENT_HEADER;
                continue;
            }
            return QM_EAGAIN;
        }
        if (rc == QM_ENOTREADY) return QM_EAGAIN;
        if (rc) return rc;
        uint64_t pos = cur->pos;
        if (pos < QM_SEGMENT_HEADER || (pos & 7) || pos + END_ROOM > lg->segment_bytes)
            return qm__fail(QM_ECORRUPT, "cursor position %llu", (unsigned long long)pos);
        _Atomic uint64_t *wp = word_at(seg, pos);
        /* [L7] acquire: pairs with [L6]; the record's bytes are complete */
        uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
        uint32_t st = QM_REC_STATE(w), len = QM_REC_LEN(w);
        if (st == QM_REC_EMPTY && w != 0)   /* free space is zero; claims are never empty */
            return qm__fail(QM_ECORRUPT, "record word %#llx at %llu has no state",
                            (unsigned long long)w, (unsigned long long)pos);
        if (st == QM_REC_EMPTY) {
            /* The end, for now - unless the segment is closed.  Every word
             * before a segment's END was claimed before the END was, and the
             * END before the next segment's generation was published, so an
             * empty word in an older segment is damage (a record length
             * that leads into free space), not a record still to come:
             * waiting for it would stall the reader for good. */
            uint64_t seg_gen;
            memcpy(&seg_gen, seg + offsetof(qm_segment_header_t, generation), sizeof seg_gen);
            /* [L1] acquire: pairs with [L3]; a later generation comes after our END */
            if (atomic_load_explicit(&lg->ctl->active_gen, memory_order_acquire) > seg_gen &&
                atomic_load_explicit(wp, memory_order_acquire) == 0)   /* [L7] */
                return qm__fail(QM_ECORRUPT, "segment %llu is closed, but its record at %llu "
                                "is empty (a damaged record length before it?)",
                                (unsigned long long)cur->base, (unsigned long long)pos);
            return QM_EAGAIN;
        }
        if (st == QM_REC_END) {   /* the next segment starts at our next offset */
            if (cur->next_offset == cur->base)   /* ... which is this one: never ends */
                return qm__fail(QM_ECORRUPT, "segment %llu closed before its first record",
                                (unsigned long long)cur->base);
            cur->base = cur->next_offset;
            cur->pos = QM_SEGMENT_HEADER;
            continue;
        }
        if (qm__log_bad_len(pos, len, lg->segment_bytes))
            return qm__fail(QM_ECORRUPT, "record at %llu has bad length %u",
                            (unsigned long long)pos, len);
        if (st == QM_REC_WRITING) {   /* in order: wait for it (qm__log_recover checks its writer) */
            /* this handle is reading, so it writes nothing: a record being
             * written in its name is damage, and waiting would never end
             * (its liveness lock is ours, held) */
            if (QM_REC_OWNER(w) == lg->mb.slot)
                return qm__fail(QM_ECORRUPT, "record at %llu is being written by this very "
                                "handle (damaged record word or length)", (unsigned long long)pos);
            *blocked = QM_REC_OWNER(w);
            return QM_EAGAIN;
        }
        if (st == QM_REC_ABANDONED) {
            /* abandoning clears the owner; one left there is a committed
             * record whose state bits were damaged: not a gap to skip */
            if (QM_REC_OWNER(w) != 0)
                return qm__fail(QM_ECORRUPT, "record at %llu is abandoned but names writer %u "
                                "(a damaged record word)", (unsigned long long)pos,
                                QM_REC_OWNER(w));
            cur->pos += len;
            cur->next_offset++;
            continue;
        }
        if (st != QM_REC_COMMITTED)
            return qm__fail(QM_ECORRUPT, "record at %llu has unknown state %u",
                            (unsigned long long)pos, st);
        qm_record_header_t h;
        memcpy(&h, seg + pos, sizeof h);   /* every field read once */
        uint64_t body = (uint64_t)h.key_len + h.headers_len + h.value_len;
        /* exactly as append sized it: the word's length is outside the CRC,
         * and a wrong one would move the cursor into another record's bytes */
        if (align8(QM_RECORD_HEADER + body) != len)
            return qm__fail(QM_ECORRUPT, "record %llu: lengths do not add up to the record",
                            (unsigned long long)cur->next_offset);
        if (h.offset != cur->next_offset)
            return qm__fail(QM_ECORRUPT, "record at %llu has offset %llu, expected %llu",
                            (unsigned long long)pos, (unsigned long long)h.offset,
                            (unsigned long long)cur->next_offset);
        const uint8_t *p = seg + pos + QM_RECORD_HEADER;
        if (!(cur->flags & QM_CURSOR_NO_CRC) &&
            qm_crc32c(qm_crc32c(0, (const uint8_t *)&h + 12, QM_RECORD_HEADER - 12), p, body) !=
                h.crc)
            return qm__fail(QM_ECORRUPT, "record %llu fails its CRC",
                            (unsigned long long)h.offset);
        rec->offset = h.offset;
        rec->mapping = qm__log_seg_cached(lg, cur->base);
        rec->timestamp_ns = h.timestamp_ns;
        rec->key = p;
        rec->key_len = h.key_len;
        rec->headers = p + h.key_len;
        rec->headers_len = h.headers_len;
        rec->value = p + h.key_len + h.headers_len;
        rec->value_len = h.value_len;
        cur->pos += len;
        cur->next_offset++;
        return QM_OK;
    }
    return QM_EAGAIN;
}

static int read_attempt(void *ctx) {
    read_ctx_t *r = ctx;
    r->blocked_on = 0;
    return qm__log_try_read(r->lg, r->cur, r->rec, &r->blocked_on);
}
/* The record at the cursor is WRITING: if its writer is dead, abandon it. */
static int abandon_at(qm_log_t *lg, const qm_log_cursor_t *cur) {
    uint8_t *seg;
    if (qm__log_seg_get(lg, cur->base, &seg) != QM_OK) return 0;
    _Atomic uint64_t *wp = word_at(seg, cur->pos);
    uint64_t w = atomic_load_explicit(wp, memory_order_acquire);   /* [L7] */
    if (QM_REC_STATE(w) != QM_REC_WRITING || qm__member_alive(&lg->mb, QM_REC_OWNER(w)))
        return 0;
    if (!atomic_compare_exchange_strong_explicit(
            /* [L23] */
            wp, &w, QM_REC_WORD(QM_REC_ABANDONED, 0, QM_REC_LEN(w)), memory_order_acq_rel,
            memory_order_relaxed))
        return 0;
    atomic_fetch_add_explicit(&lg->ctl->abandoned, 1, memory_order_relaxed);
    return 1;
}

static int read_recover(void *ctx) {
    read_ctx_t *r = ctx;
    return r->blocked_on ? abandon_at(r->lg, r->cur) : 0;
}
static bool read_watch(void *ctx) { return ((read_ctx_t *)ctx)->blocked_on != 0; }

int qm__log_read(qm_log_t *lg, qm_log_cursor_t *cur, qm_log_record_t *rec, int64_t deadline) {
    if (!lg) return QM_ECLOSED;
    int rc = qm__member_ensure(&lg->mb);
    if (rc) return rc;
    qm__log_seg_trim(lg);
    read_ctx_t ctx = {lg, cur, rec, 0};
    qm_waiter_t w = {&lg->ctl->data_wake, read_attempt, read_recover, read_watch, &ctx,
                     &lg->interrupted, &lg->fault};
    return qm__wait_loop(&w, deadline);
}

/* Advance `cur` record by record (across segments) until its next offset
 * reaches `offset`, or it stands on a committed record with a timestamp >=
 * `timestamp_ns`, or the end of what is written. */
int qm__log_walk(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t offset, int64_t timestamp_ns) {
    while (cur->next_offset < offset) {
        uint8_t *seg;
        int rc = qm__log_seg_get(lg, cur->base, &seg);
        if (rc) return rc == QM_ENOTFOUND || rc == QM_ENOTREADY ? QM_OK : rc;
        /* [L7] */
        uint64_t w = atomic_load_explicit(word_at(seg, cur->pos), memory_order_acquire);
        uint32_t st = QM_REC_STATE(w);
        if (st == QM_REC_EMPTY || st == QM_REC_WRITING) return QM_OK;   /* the end, for now */
        if (st == QM_REC_END) {
            if (cur->next_offset == cur->base)   /* the next segment would be this one */
                return qm__fail(QM_ECORRUPT, "segment %llu closed before its first record",
                                (unsigned long long)cur->base);
            cur->base = cur->next_offset;
            cur->pos = QM_SEGMENT_HEADER;
            continue;
        }
        if (qm__log_bad_len(cur->pos, QM_REC_LEN(w), lg->segment_bytes))
            return qm__fail(QM_ECORRUPT, "record at %llu has bad length",
                            (unsigned long long)cur->pos);
        if (st == QM_REC_COMMITTED && timestamp_ns != INT64_MAX) {
            int64_t ts;
            memcpy(&ts, seg + cur->pos + offsetof(qm_record_header_t, timestamp_ns), sizeof ts);
            if (ts >= timestamp_ns) return QM_OK;
        }
        cur->pos += QM_REC_LEN(w);
        cur->next_offset++;
    }
    return QM_OK;
}

/* Move `cur` (at the start of segment `base`) to the record index entry k
 * names, if the entry is written and the record there really is the
 * committed record it claims to be (entries are shared bytes). */
void qm__log_seek_entry(qm_log_t *lg, qm_log_cursor_t *cur, const seg_map_t *m, int64_t k) {
    if (k < 0) return;
    uint64_t where = atomic_load_explicit(&m->idx[k].where, memory_order_acquire);   /* [L10] */
    uint64_t rel1 = where >> 32, pos = where & 0xffffffffu;
    if (!rel1 || pos < QM_SEGMENT_HEADER || (pos & 7) || pos + END_ROOM > lg->segment_bytes)
        return;
    uint64_t w = atomic_load_explicit(word_at(m->mem, pos), memory_order_acquire);   /* [L7] */
    if (QM_REC_STATE(w) != QM_REC_COMMITTED || qm__log_bad_len(pos, QM_REC_LEN(w), lg->segment_bytes))
        return;
    uint64_t off;
    memcpy(&off, m->mem + pos + offsetof(qm_record_header_t, offset), sizeof off);
    if (off != m->base + rel1 - 1) return;
    cur->pos = pos;
    cur->next_offset = off;
}

/* The last index entry of segment m whose record offset is <= offset. */
int64_t qm__log_idx_find_offset(const qm_log_t *lg, const seg_map_t *m, uint64_t offset) {
    uint64_t target = offset - m->base + 1;
    int64_t lo = 0, hi = (int64_t)idx_entries(lg) - 1, best = -1;
    while (lo <= hi) {   /* binary search, stepping left over unwritten entries */
        int64_t mid = lo + (hi - lo) / 2;
        int64_t k = qm__log_idx_written_at_or_before(m->idx, mid, lo);
        if (k < 0) {
            lo = mid + 1;
            continue;
        }
        /* [L10] */
        if ((atomic_load_explicit(&m->idx[k].where, memory_order_acquire) >> 32) <= target) {
            best = k;
            lo = mid + 1;
        } else {
            hi = k - 1;
        }
    }
    return best;
}

int qm__log_seek(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t offset) {
    if (!lg) return QM_ECLOSED;
    qm__log_seg_trim(lg);
    uint64_t start;
    int rc = qm__log_list_base(lg, false, 0, &start);
    if (rc) return rc;
    if (offset < start)
        return qm__fail(QM_ENOTFOUND, "offset %llu is before the log start %llu",
                        (unsigned long long)offset, (unsigned long long)start);
    uint64_t base;
    rc = qm__log_list_base(lg, true, offset, &base);
    if (rc) return rc;
    cur->base = base;
    cur->pos = QM_SEGMENT_HEADER;
    cur->next_offset = base;
    cur->skipped = 0;
    uint8_t *mem;
    if (offset > base && qm__log_seg_get(lg, base, &mem) == QM_OK) {
        seg_map_t *m = qm__log_seg_cached(lg, base);
        if (m->idx) qm__log_seek_entry(lg, cur, m, qm__log_idx_find_offset(lg, m, offset));
    }
    /* qm__log_walk the rest: less than one index interval and one record */
    return qm__log_walk(lg, cur, offset, INT64_MAX);
}

/* `cur` stands at the start of segment m (NULL: not mapped): move it to the
 * first record with a timestamp >= timestamp_ns, or the end written. */
int qm__log_seek_time_in(qm_log_t *lg, qm_log_cursor_t *cur, const seg_map_t *m,
                        int64_t timestamp_ns) {
    if (m && m->idx) {
        int64_t first = -1;
        for (int64_t k = 0; k < (int64_t)idx_entries(lg); k++)
            if (atomic_load_explicit(&m->idx[k].where, memory_order_acquire) &&   /* [L10] */
                atomic_load_explicit(&m->idx[k].timestamp_ns, memory_order_relaxed) >=
                    timestamp_ns) {
                first = k;
                break;
            }
        if (first > 0) qm__log_seek_entry(lg, cur, m, qm__log_idx_written_at_or_before(m->idx, first - 1, 0));
    }
    return qm__log_walk(lg, cur, UINT64_MAX, timestamp_ns);   /* the last stretch */
}

int qm__log_seek_time(qm_log_t *lg, qm_log_cursor_t *cur, int64_t timestamp_ns) {
    if (!lg) return QM_ECLOSED;
    qm__log_seg_trim(lg);
    uint64_t *bases;
    size_t n;
    int rc = qm__log_list_all(lg, &bases, &n);
    if (rc) return rc;
    if (n == 0) {
        free(bases);
        return QM_ENOTFOUND;
    }
    /* Skip whole segments whose newest indexed record is older, then start
     * one index entry before the first that is not older. */
    size_t i = 0;
    cur->skipped = 0;
    for (;; i++) {
        qm__log_seg_trim(lg);   /* a long log: keep only the last few segments looked at mapped */
        cur->base = cur->next_offset = bases[i];
        cur->pos = QM_SEGMENT_HEADER;
        uint8_t *mem;
        seg_map_t *m = qm__log_seg_get(lg, bases[i], &mem) == QM_OK ? qm__log_seg_cached(lg, bases[i]) : NULL;
        if (!m || !m->idx || i + 1 == n) break;
        int64_t last = qm__log_idx_written_at_or_before(m->idx, (int64_t)idx_entries(lg) - 1, 0);
        if (last >= 0 &&
            atomic_load_explicit(&m->idx[last].timestamp_ns, memory_order_relaxed) >= timestamp_ns)
            break;
    }
    seg_map_t *m = qm__log_seg_cached(lg, bases[i]);
    free(bases);
    return qm__log_seek_time_in(lg, cur, m, timestamp_ns);
}

/* 1: something to do at the cursor (a record, a skip, a segment change);
 * 0: nothing yet; 2: a record still being written. */
int qm__log_peek(qm_log_t *lg, const qm_log_cursor_t *cur) {
    uint8_t *seg;
    int rc = qm__log_seg_get(lg, cur->base, &seg);
    if (rc == QM_ENOTFOUND) {
        uint64_t start;
        return qm__log_list_base(lg, false, 0, &start) == QM_OK && start > cur->base;
    }
    if (rc || cur->pos < QM_SEGMENT_HEADER || (cur->pos & 7) ||
        cur->pos + END_ROOM > lg->segment_bytes)
        return rc == QM_ENOTREADY ? 0 : 1;   /* let read report the problem */
    uint64_t w = atomic_load_explicit(word_at(seg, cur->pos), memory_order_acquire);   /* [L7] */
    uint32_t st = QM_REC_STATE(w);
    return st == QM_REC_EMPTY ? 0 : st == QM_REC_WRITING ? 2 : 1;
}

/* Rounds of peeks over every log before qm__log_wait_any sleeps: a running
 * producer usually fills one of them within a few microseconds, and a
 * sleep costs a futex round trip on both sides (the ring's wait loop spins
 * the same way). */
#define WAIT_ANY_SPIN_ROUNDS 256

static bool any_ready(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (qm__log_peek(logs[i], &cursors[i]) == 1) return true;
    return false;
}

int qm__log_wait_any(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n,
                    int64_t deadline) {
    if (n == 0 || n > 128) return qm__fail(QM_EINVAL, "wait on 1..128 logs");
    for (size_t i = 0; i < n; i++)
        if (!logs[i]) return QM_ECLOSED;
    if (deadline != QM_NOWAIT)
        for (int round = 0; round < WAIT_ANY_SPIN_ROUNDS; round++) {
            if (any_ready(logs, cursors, n)) return QM_OK;
            qm_cpu_relax();
        }
    _Atomic uint32_t *words[128];
    uint32_t seqs[128];
    bool writing = false;
    for (size_t i = 0; i < n; i++) {
        if (!logs[i]) return QM_ECLOSED;
        if (atomic_load_explicit(&logs[i]->interrupted, memory_order_relaxed)) return QM_ECLOSED;
        words[i] = &logs[i]->ctl->data_wake.seq;
        seqs[i] = qm__sleep_prepare(&logs[i]->ctl->data_wake);
    }
    for (size_t i = 0; i < n; i++) {   /* re-check after announcing */
        int p = qm__log_peek(logs[i], &cursors[i]);
        if (p == 1) return QM_OK;
        writing |= p == 2;
    }
    int64_t now = qm__os_monotonic_ns();
    if (now >= deadline) return QM_ETIMEDOUT;
    /* a record being written may belong to a writer that dies: come back
     * soon so the reader's liveness check runs */
    int64_t slice = writing ? 10 * INT64_C(1000000) : 100 * INT64_C(1000000);
    int64_t until = deadline - now > slice ? now + slice : deadline;
    int rc = qm__os_futex_waitv(words, seqs, n, until);
    if (rc == -ENOSYS) {   /* pre-5.16 kernel: sleep on the first, briefly */
        int64_t brief = now + 10 * INT64_C(1000000);
        rc = qm__sleep(&logs[0]->ctl->data_wake, seqs[0], brief < until ? brief : until);
    }
    if (rc == QM_ETIMEDOUT) return qm__os_monotonic_ns() >= deadline ? QM_ETIMEDOUT : QM_OK;
    return rc;
}
