/*
 * log_append.c - the partition log: appending and rolling.
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

static int roll_lock(qm_log_t *lg) {
    for (int i = 0; i < 20000; i++) {   /* the holder only creates one file */
        int rc = qm__os_lock_byte(lg->mb.fd, QM_LOG_ROLL_LOCK);
        if (rc != QM_EAGAIN) return rc;
        usleep(100);
    }
    return qm__fail(QM_ETIMEDOUT, "segment qm__log_roll lock held for 2 s");
}

/* Close the segment of generation `gen12` (END claimed at its append
 * position) and open the next.  Returns when the append word has moved on. */
int qm__log_roll(qm_log_t *lg, uint32_t gen12) {
    int rc = roll_lock(lg);
    if (rc) return rc;
    qm_log_ctl_t *c = lg->ctl;
    uint64_t a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
    if (QM_APPEND_GEN(a) == gen12) {
        /* [L1] acquire: pairs with [L3] of an earlier roller (maybe dead) */
        uint64_t gen = atomic_load_explicit(&c->active_gen, memory_order_acquire);
        uint64_t base = atomic_load_explicit(&c->active_base, memory_order_acquire);
        uint64_t next_gen = gen, next_base = base;
        if ((gen & 0xfff) == gen12) {   /* not published yet (or a roller died before) */
            next_gen = gen + 1;
            next_base = base + QM_APPEND_COUNT(a);
            rc = qm__log_seg_create(lg, next_base, next_gen);
            if (!rc) {
                atomic_store_explicit(&c->active_base, next_base, memory_order_relaxed);
                /* [L3] release: the new base (and the segment file) before
                 * the generation; pairs with [L1] */
                atomic_store_explicit(&c->active_gen, next_gen, memory_order_release);
            }
        }
        /* also when finishing a dead roller's qm__log_roll: it may have died before */
        if (!rc) rc = qm__log_sync_control(lg);
        if (!rc) {
            QM_KILLPOINT("log.roll_before_append");
            /* [L4] release: pairs with [L0]; a writer that sees the new gen
             * sees the active segment it names */
            atomic_compare_exchange_strong_explicit(
                &c->append.pos, &a, QM_APPEND(next_gen, 0, QM_SEGMENT_HEADER),
                memory_order_acq_rel, memory_order_relaxed);   /* [L4] */
            atomic_fetch_add_explicit(&c->rolls, 1, memory_order_relaxed);
        }
    }
    qm__os_unlock_byte(lg->mb.fd, QM_LOG_ROLL_LOCK);
    if (!rc && (lg->cfg.retention_bytes || lg->cfg.retention_ns)) rc = qm__log_retain(lg, NULL);
    return rc;
}

/* The append word's generation lags active_gen: a roller published the next
 * segment and has not moved the append word yet, or died before it could.
 * Finish that qm__log_roll (qm__log_roll() waits for a live roller's lock, then moves the
 * word only if nobody did).  QM_ECORRUPT if the generations disagree in a
 * way no qm__log_roll leaves them. */
int qm__log_finish_roll(qm_log_t *lg) {
    qm_log_ctl_t *c = lg->ctl;
    for (int tries = 0; tries < 3; tries++) {
        uint64_t a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
        uint64_t gen = atomic_load_explicit(&c->active_gen, memory_order_acquire); /* [L1] */
        uint32_t ahead = ((uint32_t)gen - QM_APPEND_GEN(a)) & 0xfff;
        if (ahead == 0) return QM_OK;   /* finished meanwhile */
        if (ahead == 1) return qm__log_roll(lg, QM_APPEND_GEN(a));
        /* two rolls between our two loads, or damage: look again */
    }
    return qm__fail(QM_ECORRUPT, "append generation and active segment generation disagree");
}

/* Map the active segment for append word `a` (`for_append`: see qm__log_seg_load).
 * QM_EAGAIN while a qm__log_roll is between publishing the segment and moving the
 * append word. */
int qm__log_active_segment(qm_log_t *lg, uint64_t a, uint64_t *base, uint8_t **seg,
                          bool for_append) {
    /* [L1] acquire: pairs with [L3] */
    uint64_t gen = atomic_load_explicit(&lg->ctl->active_gen, memory_order_acquire);
    if ((gen & 0xfff) != QM_APPEND_GEN(a)) return QM_EAGAIN;
    *base = atomic_load_explicit(&lg->ctl->active_base, memory_order_relaxed);
    int rc = qm__log_seg_load(lg, *base, seg, for_append);
    if ((rc == QM_ENOTFOUND || rc == QM_ENOTREADY) &&
        (QM_APPEND_COUNT(a) || QM_APPEND_POS(a) != QM_SEGMENT_HEADER))
        /* a qm__log_roll publishes a segment complete before it names it active:
         * one that holds records cannot be missing or unpublished */
        return qm__fail(QM_ECORRUPT, "active segment %llu is missing or truncated, but the "
                        "log says it holds %u records", (unsigned long long)*base,
                        QM_APPEND_COUNT(a));
    if (rc == QM_ENOTFOUND || rc == QM_ENOTREADY) {
        /* creator of the log died before its first segment: make it */
        rc = roll_lock(lg);
        if (rc) return rc;
        rc = qm__log_seg_create(lg, *base, gen);
        if (!rc) rc = qm__log_sync_control(lg);
        qm__os_unlock_byte(lg->mb.fd, QM_LOG_ROLL_LOCK);
        if (!rc) rc = qm__log_seg_get(lg, *base, seg);
    }
    return rc;
}

int qm__log_bad_len(uint64_t pos, uint64_t len, uint64_t segment_bytes) {
    return len < QM_RECORD_HEADER || (len & 7) || len > segment_bytes ||
           pos + len + END_ROOM > segment_bytes;
}

int qm__log_append(qm_log_t *lg, const qm_log_entry_t *e, uint64_t *offset_out) {
    if (!lg) return QM_ECLOSED;
    int rc = qm__member_ensure(&lg->mb);
    if (rc) return rc;
    if ((lg->cfg.flags & QM_LOG_FSYNC) && (rc = qm__log_sync_failed(lg))) return rc;
    qm__log_seg_trim(lg);
    uint64_t value_len = 0;
    for (int i = 0; i < e->value_cnt; i++) value_len += e->value[i].len;
    uint64_t body = (uint64_t)e->key_len + e->headers_len + value_len;
    /* a value of up to half a segment always fits, with key and headers of
     * up to a quarter beside it (3/4 + record header + END < a segment) */
    if (value_len > lg->segment_bytes / 2)
        return qm__fail(QM_ETOOBIG, "value of %llu bytes exceeds %llu (segment_bytes / 2)",
                        (unsigned long long)value_len, (unsigned long long)lg->segment_bytes / 2);
    if ((uint64_t)e->key_len + e->headers_len > lg->segment_bytes / 4)
        return qm__fail(QM_ETOOBIG, "key and headers of %llu bytes exceed %llu (segment_bytes / 4)",
                        (unsigned long long)e->key_len + e->headers_len,
                        (unsigned long long)lg->segment_bytes / 4);
    uint64_t need = align8(QM_RECORD_HEADER + body);
    qm_log_ctl_t *c = lg->ctl;
    for (int round = 0; round < LOG_ROUNDS; round++) {
        /* [L0] acquire: pairs with [L4] and with [L2] of helpers */
        uint64_t a = atomic_load_explicit(&c->append.pos, memory_order_acquire);
        uint32_t count = QM_APPEND_COUNT(a);
        uint64_t pos = QM_APPEND_POS(a), base;
        uint8_t *seg;
        rc = qm__log_active_segment(lg, a, &base, &seg, true);
        if (rc == QM_EAGAIN) {   /* mid-qm__log_roll: let the roller finish, or finish for it */
            if (round % 1024 == 1023 && (rc = qm__log_finish_roll(lg))) return rc;
            qm_cpu_relax();
            continue;
        }
        if (rc) return rc;
        if (pos < QM_SEGMENT_HEADER || (pos & 7) || pos + END_ROOM > lg->segment_bytes)
            return qm__fail(QM_ECORRUPT, "append position %llu", (unsigned long long)pos);
        _Atomic uint64_t *wp = word_at(seg, pos);
        /* [L7a] acquire: pairs with [L5]; a claimed word comes with its length */
        uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
        if (w != 0) {   /* claimed: help the append word past it, or qm__log_roll */
            if (QM_REC_STATE(w) == QM_REC_END) {
                if (count == 0)   /* rolling would name this segment again */
                    return qm__fail(QM_ECORRUPT, "segment %llu closed before its first record",
                                    (unsigned long long)base);
                rc = qm__log_roll(lg, QM_APPEND_GEN(a));
                if (rc) return rc;
                continue;
            }
            if (qm__log_bad_len(pos, QM_REC_LEN(w), lg->segment_bytes)) {
                if (atomic_load_explicit(&c->append.pos, memory_order_acquire) != a)   /* [L0] */
                    continue;
                return qm__fail(QM_ECORRUPT, "record at %llu has bad length %u",
                                (unsigned long long)pos, QM_REC_LEN(w));
            }
            /* [L2] acq_rel: helpers publish only what they read */
            atomic_compare_exchange_strong_explicit(
                &c->append.pos, &a, QM_APPEND(QM_APPEND_GEN(a), count + 1, pos + QM_REC_LEN(w)),
                memory_order_acq_rel, memory_order_relaxed);
            continue;
        }
        if (pos + need + END_ROOM > lg->segment_bytes || count >= QM_SEGMENT_MAX_RECORDS) {
            uint64_t zero = 0;   /* [L5] acq_rel: exactly one writer ends the segment */
            if (atomic_compare_exchange_strong_explicit(wp, &zero,
                                                        QM_REC_WORD(QM_REC_END, lg->mb.slot, 0),
                                                        memory_order_acq_rel,
                                                        memory_order_relaxed)) {
                rc = qm__log_roll(lg, QM_APPEND_GEN(a));
                if (rc) return rc;
            }
            continue;
        }
        if (pos + need + END_ROOM > qm__seg_reserved(seg, lg->segment_bytes)) {
            /* allocate before claiming: a full disk is this call's error, and
             * nothing is claimed (the END word a roll writes at the next
             * position is inside the reservation too) */
            rc = qm__log_seg_reserve(lg, base, seg, pos + need + END_ROOM);
            if (rc) return rc;
            continue;
        }
        uint64_t offset = base + count;
        uint64_t claim = QM_REC_WORD(QM_REC_WRITING, lg->mb.slot, need);
        atomic_store_explicit(&lg->mb.me->inflight, offset | QM_INFLIGHT_VALID,
                              memory_order_relaxed);
        uint64_t zero = 0;
        /* [L5] acq_rel: the claim; exactly one writer owns pos */
        if (!atomic_compare_exchange_strong_explicit(wp, &zero, claim, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        QM_KILLPOINT("log.after_claim");
        atomic_compare_exchange_strong_explicit(   /* [L2]: as a helper would */
            &c->append.pos, &a, QM_APPEND(QM_APPEND_GEN(a), count + 1, pos + need),
            memory_order_acq_rel, memory_order_relaxed);
        qm_record_header_t *h = (qm_record_header_t *)(seg + pos);
        h->key_len = e->key_len;
        h->offset = offset;
        h->timestamp_ns = e->timestamp_ns ? e->timestamp_ns : qm__os_realtime_ns();
        h->headers_len = e->headers_len;
        h->value_len = (uint32_t)value_len;
        uint8_t *p = seg + pos + QM_RECORD_HEADER;
        uint32_t crc = qm_crc32c(0, (uint8_t *)h + 12, QM_RECORD_HEADER - 12);
        if (e->key_len) memcpy(p, e->key, e->key_len);
        crc = qm_crc32c(crc, p, e->key_len);
        p += e->key_len;
        if (e->headers_len) memcpy(p, e->headers, e->headers_len);
        crc = qm_crc32c(crc, p, e->headers_len);
        p += e->headers_len;
        for (int i = 0; i < e->value_cnt; i++) {
            if (e->value[i].len) memcpy(p, e->value[i].base, e->value[i].len);
            crc = qm_crc32c(crc, p, e->value[i].len);
            p += e->value[i].len;
            if (i == 0) QM_KILLPOINT("log.mid_copy");
        }
        h->crc = crc;
        QM_KILLPOINT("log.before_commit");
        /* [L6] release: record bytes before COMMITTED; pairs with [L7] */
        uint64_t expect = claim;
        if (!atomic_compare_exchange_strong_explicit(
                wp, &expect, QM_REC_WORD(QM_REC_COMMITTED, lg->mb.slot, need),
                memory_order_release, memory_order_relaxed))   /* [L6] */
            return qm__fail(QM_ECORRUPT, "record %llu taken from its writer",
                            (unsigned long long)offset);
        atomic_store_explicit(&lg->mb.me->inflight, 0, memory_order_relaxed);
        qm__log_idx_note(qm__log_seg_cached(lg, base)->idx, base, offset, pos, need, h->timestamp_ns);
        qm_member_t *me = lg->mb.me;
        atomic_store_explicit(&me->put_count,
                              atomic_load_explicit(&me->put_count, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        qm__member_publish_role(&lg->mb, QM_MEMBER_PRODUCER);
        qm__wake(&c->data_wake);
        *offset_out = offset;
        return (lg->cfg.flags & QM_LOG_FSYNC) ? qm__log_wait_durable(lg, base) : QM_OK;
    }
    return qm__fail(QM_ECORRUPT, "append made no progress in %d rounds", LOG_ROUNDS);
}
