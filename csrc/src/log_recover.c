/*
 * log_recover.c - the partition log: recovery by a lone opener.
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

/* Recovery is about to cut the active segment at `pos` (record `count`).
 * QM_ECORRUPT, saying so, if an intact committed record (CRC and offset
 * right) follows before the append position: cutting would drop it. */
static int intact_after(qm_log_t *lg, uint8_t *seg, uint64_t base, uint64_t pos,
                        uint64_t count, uint64_t a) {
    uint64_t ap = QM_APPEND_POS(a);
    uint64_t end = !(ap & 7) && ap + END_ROOM <= lg->segment_bytes ? ap : lg->segment_bytes;
    /* past the damaged record when its length is plausible: a record-like
     * pattern inside its own value is not a record that follows it */
    uint32_t bad = QM_REC_LEN(atomic_load_explicit(word_at(seg, pos), memory_order_relaxed));
    uint64_t from = qm__log_bad_len(pos, bad, lg->segment_bytes) ? pos + 8 : pos + bad;
    for (uint64_t p = from; p + END_ROOM <= end; p += 8) {
        uint64_t w = atomic_load_explicit(word_at(seg, p), memory_order_relaxed);
        uint32_t len = QM_REC_LEN(w);
        if (QM_REC_STATE(w) != QM_REC_COMMITTED || qm__log_bad_len(p, len, lg->segment_bytes)) continue;
        qm_record_header_t h;
        memcpy(&h, seg + p, sizeof h);
        uint64_t body = (uint64_t)h.key_len + h.headers_len + h.value_len;
        if (align8(QM_RECORD_HEADER + body) != len || h.offset <= base + count ||
            h.offset - base > QM_SEGMENT_MAX_RECORDS ||
            h.crc != qm_crc32c(qm_crc32c(0, (const uint8_t *)&h + 12, QM_RECORD_HEADER - 12),
                               seg + p + QM_RECORD_HEADER, body))
            continue;
        return qm__fail(QM_ECORRUPT,
                        "record %llu (byte %llu of segment %llu) is damaged, and intact "
                        "records follow it (offset %llu); with no reboot since the log was "
                        "last recovered this is not a torn tail, so it is not cut "
                        "(PYQMEM_LOG_SALVAGE=1 cuts there, dropping what follows in this "
                        "segment)",
                        (unsigned long long)(base + count), (unsigned long long)pos,
                        (unsigned long long)base, (unsigned long long)h.offset);
    }
    return QM_OK;
}

/* Run by an opener that has the log to itself: every writer is dead.  The
 * active segment is checked record by record (lengths, offsets, CRC);
 * records left WRITING are abandoned, and everything from the first
 * record that fails (a torn tail after power loss, or damage) is cut:
 * its bytes are zeroed back to "never claimed" and the append word points
 * there, so appends go on from the last good record. */
int qm__log_recover(qm_log_t *lg) {
    qm_log_ctl_t *c = lg->ctl;
    uint64_t a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
    uint64_t gen = atomic_load_explicit(&c->active_gen, memory_order_acquire);   /* [L1] */
    if ((gen & 0xfff) != QM_APPEND_GEN(a)) {   /* a roller died after publishing */
        int rc = qm__log_roll(lg, QM_APPEND_GEN(a));
        if (rc) return rc;
        a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
    }
    uint64_t base;
    uint8_t *seg;
    int rc = qm__log_active_segment(lg, a, &base, &seg, false);
    if (rc) return rc;
    /* The page cache survives every crash but a reboot (power loss, kernel
     * crash): only then can a write be lost or torn below the append
     * position.  The control records the boot of the last recovery. */
    uint64_t boot[2];
    qm__os_boot_id(boot);
    bool same_boot = (boot[0] | boot[1]) && c->recovered_boot[0] == boot[0] &&
                     c->recovered_boot[1] == boot[1];
    const char *salvage_env = getenv("PYQMEM_LOG_SALVAGE");
    bool salvage = salvage_env && salvage_env[0] && strcmp(salvage_env, "0") != 0;
    uint64_t pos = QM_SEGMENT_HEADER, count = 0;
    bool cut = false;
    while (pos + END_ROOM <= lg->segment_bytes) {
        _Atomic uint64_t *wp = word_at(seg, pos);
        uint64_t w = atomic_load_explicit(wp, memory_order_acquire);   /* [L7] */
        uint32_t st = QM_REC_STATE(w), len = QM_REC_LEN(w);
        if (w == 0) {   /* a hole below the append position: lost writes */
            cut = pos < QM_APPEND_POS(a);
            break;
        }
        /* closed: the next append rolls (a segment is never closed empty:
         * an END at its first record is damage, and is cut).  The append
         * word must point at the END (below: damage may have left it past
         * it, where an append would land unreachable behind the END) */
        if (st == QM_REC_END && count > 0) break;
        if (qm__log_bad_len(pos, len, lg->segment_bytes) ||
            (st != QM_REC_WRITING && st != QM_REC_COMMITTED && st != QM_REC_ABANDONED) ||
            (st == QM_REC_ABANDONED && QM_REC_OWNER(w) != 0)) {   /* abandoning clears it */
            cut = true;
            break;
        }
        if (st == QM_REC_WRITING) {
            /* [L25] */
            atomic_store_explicit(wp, QM_REC_WORD(QM_REC_ABANDONED, 0, len), memory_order_release);
            atomic_fetch_add_explicit(&c->abandoned, 1, memory_order_relaxed);
        } else if (st == QM_REC_COMMITTED) {
            qm_record_header_t h;
            memcpy(&h, seg + pos, sizeof h);
            uint64_t body = (uint64_t)h.key_len + h.headers_len + h.value_len;
            if (align8(QM_RECORD_HEADER + body) != len || h.offset != base + count ||
                h.crc != qm_crc32c(qm_crc32c(0, (uint8_t *)&h + 12, QM_RECORD_HEADER - 12),
                                   seg + pos + QM_RECORD_HEADER, body)) {
                cut = true;
                break;
            }
        }
        pos += len;
        count++;
    }
    if (cut && same_boot && !salvage && (rc = intact_after(lg, seg, base, pos, count, a))) {
        /* No reboot since the log was last recovered, so no write can have
         * been lost: this is damage, and cutting here would drop intact
         * records after it without a word.  Refuse (salvage: below). */
        return rc;
    }
    if (cut) {
        /* zero what follows up to where anything was ever claimed.  The
         * append word is shared bytes: trust its position only inside the
         * segment (a scribbled one would zero past the mapping's end). */
        uint64_t ap = QM_APPEND_POS(a);
        bool ap_valid = !(ap & 7) && ap + END_ROOM <= lg->segment_bytes;
        uint64_t end = ap_valid && ap > pos ? ap : pos;
        for (uint64_t p = end; p + END_ROOM <= lg->segment_bytes &&
                               atomic_load_explicit(word_at(seg, p), memory_order_relaxed);) {
            uint32_t len = QM_REC_LEN(atomic_load_explicit(word_at(seg, p), memory_order_relaxed));
            if (qm__log_bad_len(p, len, lg->segment_bytes)) {
                /* a word no writer leaves (damage): its extent is unknown,
                 * and it may be the very word at pos, so zero the rest of
                 * the segment - nothing past the cut is reachable */
                end = lg->segment_bytes;
                break;
            }
            p += len;
            end = p;
        }
        memset(seg + pos, 0, end - pos);
        seg_map_t *m = qm__log_seg_cached(lg, base);
        if (m->idx)
            for (uint64_t k = (pos + QM_INDEX_INTERVAL - 1) / QM_INDEX_INTERVAL;
                 k < idx_entries(lg); k++)
                atomic_store_explicit(&m->idx[k].where, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->tail_cuts, 1, memory_order_relaxed);
        if (lg->cfg.flags & QM_LOG_FSYNC) {
            rc = qm__log_sync_segment(lg, base);
            if (rc) return rc;
        }
    }
    /* also: a writer died before moving the word, or the word's count
     * disagrees with the records (damage: appends would take wrong offsets) */
    if (cut || QM_APPEND_POS(a) != pos || QM_APPEND_COUNT(a) != count)
        atomic_store_explicit(&c->append.pos,
                              QM_APPEND(QM_APPEND_GEN(a), (uint32_t)count, pos),
                              memory_order_release);   /* [L25] */
    c->recovered_boot[0] = boot[0];
    c->recovered_boot[1] = boot[1];
    atomic_fetch_add_explicit(&c->recoveries, 1, memory_order_relaxed);
    return QM_OK;
}
