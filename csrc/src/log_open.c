/*
 * log_open.c - the partition log: open and close, the control object, bounds and stats.
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

_Atomic uint64_t *qm__log_fault(qm_log_t *lg) { return &lg->fault; }

void qm__log_ctl_format(uint8_t *base, uint64_t len, const void *arg) {
    const qm_log_config_t *cfg = arg;
    uint64_t segment_bytes = cfg->segment_bytes;
    /* everything but the magic: a dead creator may have left bytes behind */
    memset(base + sizeof(uint64_t), 0, len - sizeof(uint64_t));
    qm_log_ctl_t *c = (qm_log_ctl_t *)base;
    qm_header_t *h = &c->header;
    h->format_major = QM_FORMAT_MAJOR;
    h->format_minor = QM_FORMAT_MINOR;
    h->header_bytes = QM_HEADER_BYTES;
    h->layout_fingerprint = qm__layout_fingerprint();
    h->object_kind = QM_KIND_LOG;
    h->creator_pid = (uint32_t)getpid();
    h->created_unix_ns = (uint64_t)qm__os_realtime_ns();
    h->total_bytes = QM_DATA_OFFSET;
    h->members_offset = QM_MEMBERS_OFFSET;
    h->member_slots = QM_MEMBER_SLOTS;
    h->member_bytes = QM_MEMBER_BYTES;
    h->data_offset = QM_DATA_OFFSET;
    h->data_bytes = segment_bytes;
    h->granule_log2 = 3;
    h->max_message = segment_bytes / 2;
    c->flags = cfg->flags;
    c->retention_bytes = cfg->retention_bytes;
    c->retention_ns = cfg->retention_ns;
    atomic_store_explicit(&c->append.pos, QM_APPEND(0, 0, QM_SEGMENT_HEADER),
                          memory_order_relaxed);
}

static int config_check(const qm_log_config_t *cfg) {
    if (cfg->segment_bytes < LOG_MIN_SEGMENT || cfg->segment_bytes > QM_SEGMENT_MAX_BYTES ||
        cfg->segment_bytes % 4096)
        return qm__fail(QM_EINVAL, "segment_bytes must be a multiple of 4096 in [64 KiB, 4 GiB]");
    if (cfg->retention_ns < 0) return qm__fail(QM_EINVAL, "retention_ns must be >= 0");
    if (cfg->flags & ~QM_LOG_FSYNC) return qm__fail(QM_EINVAL, "unknown log flags");
    return QM_OK;
}

int qm__log_ctl_check(const void *image, uint64_t len, uint64_t file_size,
                      qm_log_config_t *cfg) {
    if (len < sizeof(qm_header_t)) return qm__fail(QM_ECORRUPT, "control header truncated");
    qm_header_t h;
    memcpy(&h, image, sizeof h);   /* one read of every field */
    uint64_t magic = (uint64_t)atomic_load_explicit(&h.magic, memory_order_relaxed);
    if (magic == __builtin_bswap64(QM_MAGIC_LOG_CTL))
        return qm__fail(QM_EINCOMPAT, "log written with the other byte order");
    if (magic != QM_MAGIC_LOG_CTL)
        return qm__fail(QM_ECORRUPT, "bad log control magic %#llx", (unsigned long long)magic);
    if (h.format_major != QM_FORMAT_MAJOR)
        return qm__fail(QM_EINCOMPAT, "log format %u.%u, this build reads %u.x",
                        h.format_major, h.format_minor, QM_FORMAT_MAJOR);
    if (h.layout_fingerprint != qm__layout_fingerprint() || h.feature_flags != 0 ||
        h.object_kind != QM_KIND_LOG)
        return qm__fail(QM_EINCOMPAT, "log layout, features or kind differ from this build");
    if (h.header_bytes != QM_HEADER_BYTES || h.members_offset != QM_MEMBERS_OFFSET ||
        h.member_slots != QM_MEMBER_SLOTS || h.member_bytes != QM_MEMBER_BYTES ||
        h.data_offset != QM_DATA_OFFSET || h.total_bytes != QM_DATA_OFFSET ||
        h.total_bytes != file_size || h.granule_log2 != 3)
        return qm__fail(QM_ECORRUPT, "log control offsets or size do not match the format");
    if (h.data_bytes < LOG_MIN_SEGMENT || h.data_bytes > QM_SEGMENT_MAX_BYTES ||
        h.data_bytes % 4096 || h.max_message != h.data_bytes / 2)
        return qm__fail(QM_ECORRUPT, "bad segment size %llu", (unsigned long long)h.data_bytes);
    for (size_t i = 0; i < sizeof h.reserved / sizeof h.reserved[0]; i++)
        if (h.reserved[i]) return qm__fail(QM_EINCOMPAT, "reserved header words in use");
    if (len < sizeof(qm_log_ctl_t)) return qm__fail(QM_ECORRUPT, "control page truncated");
    const qm_log_ctl_t *c = image;
    qm_log_config_t got = {h.data_bytes, c->retention_bytes, c->retention_ns, c->flags};
    if (got.flags & ~QM_LOG_FSYNC || got.retention_ns < 0)
        return qm__fail(QM_EINCOMPAT, "unknown log flags or bad retention");
    *cfg = got;
    return QM_OK;
}

int qm__log_bounds(qm_log_t *lg, uint64_t *start, uint64_t *end) {
    if (!lg) return QM_ECLOSED;
    *start = atomic_load_explicit(&lg->ctl->start_offset, memory_order_acquire);   /* [L22] */
    for (int round = 0; round < 16 * 1024; round++) {
        uint64_t a = atomic_load_explicit(&lg->ctl->append.pos, memory_order_acquire);
        uint64_t gen = atomic_load_explicit(&lg->ctl->active_gen, memory_order_acquire);
        if ((gen & 0xfff) != QM_APPEND_GEN(a)) {   /* mid-qm__log_roll */
            int rc = round % 1024 == 1023 ? qm__log_finish_roll(lg) : QM_OK;
            if (rc) return rc;
            qm_cpu_relax();
            continue;
        }
        *end = atomic_load_explicit(&lg->ctl->active_base, memory_order_relaxed) +
               QM_APPEND_COUNT(a);
        return QM_OK;
    }
    return qm__fail(QM_ECORRUPT, "append word and active segment never agree");
}

int qm__log_stats(qm_log_t *lg, qm_log_stats_t *st) {
    if (!lg) return QM_ECLOSED;
    memset(st, 0, sizeof *st);
    int rc = qm__log_bounds(lg, &st->start_offset, &st->end_offset);
    if (rc) return rc;
    st->segments_rolled = atomic_load_explicit(&lg->ctl->rolls, memory_order_relaxed);
    st->abandoned = atomic_load_explicit(&lg->ctl->abandoned, memory_order_relaxed);
    st->segment_bytes = lg->segment_bytes;
    st->member_slot = lg->mb.slot;
    uint64_t *bases;
    size_t n;
    if (qm__log_list_all(lg, &bases, &n) == QM_OK) {
        st->segments = n;
        st->bytes = (uint64_t)n * lg->segment_bytes;
        free(bases);
    }
    st->syncs = atomic_load_explicit(&lg->ctl->syncs, memory_order_relaxed);
    st->recoveries = atomic_load_explicit(&lg->ctl->recoveries, memory_order_relaxed);
    st->tail_cuts = atomic_load_explicit(&lg->ctl->tail_cuts, memory_order_relaxed);
    st->synced_appends = atomic_load_explicit(&lg->ctl->synced_appends, memory_order_relaxed);
    uint32_t hwm = atomic_load_explicit(&lg->ctl->members_hwm, memory_order_relaxed);
    for (uint32_t k = 1; k <= hwm && k < QM_MEMBER_SLOTS; k++)
        st->members += qm__member_alive(&lg->mb, k);
    return QM_OK;
}

uint64_t qm_log_max_record(const qm_log_t *lg) { return lg ? lg->segment_bytes / 2 : 0; }

int qm_log_config(const qm_log_t *lg, qm_log_config_t *cfg) {
    if (!lg) return QM_ECLOSED;
    *cfg = lg->cfg;
    return QM_OK;
}

void qm_log_interrupt(qm_log_t *lg) {
    if (!lg) return;
    atomic_store_explicit(&lg->interrupted, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&lg->ctl->data_wake.seq, 1, memory_order_release);   /* [L24] */
    qm__os_futex_wake_all(&lg->ctl->data_wake.seq);
}

/* A new owner of a dead writer's slot: abandon the record it was writing
 * (its offset is in `inflight`), so no reader waits on it forever. */
static void settle_inflight(void *object, uint32_t slot, uint64_t inflight) {
    qm_log_t *lg = object;
    uint64_t offset = inflight & ~QM_INFLIGHT_VALID;
    qm_log_cursor_t cur = {0};
    if (qm__log_seek(lg, &cur, offset) != QM_OK || cur.next_offset != offset) return;
    uint8_t *seg;
    if (qm__log_seg_get(lg, cur.base, &seg) != QM_OK) return;
    _Atomic uint64_t *wp = word_at(seg, cur.pos);
    uint64_t w = atomic_load_explicit(wp, memory_order_acquire);   /* [L7] */
    if (QM_REC_STATE(w) != QM_REC_WRITING || QM_REC_OWNER(w) != slot) return;
    if (atomic_compare_exchange_strong_explicit(
            /* [L23] */
            wp, &w, QM_REC_WORD(QM_REC_ABANDONED, 0, QM_REC_LEN(w)), memory_order_acq_rel,
            memory_order_relaxed))
        atomic_fetch_add_explicit(&lg->ctl->abandoned, 1, memory_order_relaxed);
}

void qm_log_leave(qm_log_t *lg) {
    if (!lg || !lg->ctl) return;
    qm__registry_remove(&lg->mb);   /* both idempotent: close may follow */
    qm__member_leave(&lg->mb);
}

void qm_log_close(qm_log_t *lg) {
    if (!lg) return;
    qm_log_leave(lg);
    for (size_t i = 0; i < lg->nsegs; i++) qm__log_seg_unmap(lg, lg->segs[i]);
    free(lg->segs);
    qm__object_close(&lg->obj);
    if (lg->dirfd >= 0) close(lg->dirfd);
    free(lg);
}

int qm_log_open(const char *dir, qm_open_mode_t mode, const qm_log_config_t *cfg,
                qm_log_t **out) {
    *out = NULL;
    qm_log_config_t defaults = {UINT64_C(64) << 20, 0, 0, 0};
    if (!cfg) cfg = &defaults;
    int rc = config_check(cfg);
    if (rc) return rc;
    qm_log_t *lg = calloc(1, sizeof *lg);
    if (!lg) return -ENOMEM;
    lg->dirfd = -1;
    lg->obj.fd = -1;
    lg->mb.fd = -1;
    rc = dir && dir[0] ? qm__dir_open(AT_FDCWD, dir, mode, &lg->dirfd)
                       : qm__fail(QM_EINVAL, "no log folder given");
    if (rc) goto fail;
    qm_object_spec_t spec = {QM_DATA_OFFSET, QM_MAGIC_LOG_CTL, qm__log_ctl_format, cfg, &lg->fault,
                             QM_FAULT_CONTROL};
    rc = qm__object_open(lg->dirfd, "control", mode, &spec, &lg->obj);
    if (rc) goto fail;
    rc = qm__log_ctl_check(lg->obj.base, lg->obj.len, lg->obj.len, &lg->cfg);
    if (rc) goto fail;
    lg->segment_bytes = lg->cfg.segment_bytes;
    lg->ctl = (qm_log_ctl_t *)lg->obj.base;
    lg->mb.fd = lg->obj.fd;
    lg->mb.members = (qm_member_t *)(lg->obj.base + QM_MEMBERS_OFFSET);
    lg->mb.hwm = &lg->ctl->members_hwm;
    lg->mb.settle = settle_inflight;
    lg->mb.object = lg;
    if (qm__gate_try_exclusive(lg->mb.fd) == QM_OK) {   /* nobody else has it open */
        rc = qm__log_recover(lg);
        if (rc) goto fail;
    }
    qm__registry_add(&lg->mb);
    rc = qm__member_join(&lg->mb);   /* turns an exclusive gate lock shared */
    if (rc) goto fail_registered;
    /* make sure the active segment exists (its creator may have died) */
    uint64_t base;
    uint8_t *seg;
    for (int round = 0;; round++) {
        /* [L0] */
        rc = qm__log_active_segment(lg, atomic_load_explicit(&lg->ctl->append.pos, memory_order_acquire),
                            &base, &seg, false);
        if (rc != QM_EAGAIN || atomic_load_explicit(&lg->fault, memory_order_relaxed)) break;
        /* mid-qm__log_roll: let the roller finish, or finish for it (it may have
         * died between publishing the segment and moving the append word,
         * while others keep the log open, so qm__log_recover() did not run) */
        if (round % 1024 == 1023 && (rc = qm__log_finish_roll(lg))) break;
        qm_cpu_relax();
    }
    rc = qm__fault_check(&lg->fault, "partition log", rc);   /* truncated while we opened it */
    if (rc) goto fail_registered;
    *out = lg;
    return QM_OK;
fail_registered:
    qm__registry_remove(&lg->mb);
    qm__member_leave(&lg->mb);
fail:
    lg->ctl = NULL;
    qm_log_close(lg);
    return rc;
}
