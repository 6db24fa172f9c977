/*
 * log_image.c - the partition log: the test entry point over an image in memory (not in the wheel).
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

static void image_read(qm_log_t *lg, uint64_t base, uint64_t flags, uint64_t *n, int *rc_out,
                       qm_log_cursor_t *cur) {
    *cur = (qm_log_cursor_t){.base = base, .pos = QM_SEGMENT_HEADER, .next_offset = base,
                             .flags = flags};
    qm_log_record_t rec;
    uint32_t blocked = 0;
    int rc;
    *n = 0;
    while ((rc = qm__log_try_read(lg, cur, &rec, &blocked)) == QM_OK && *n < (UINT64_C(1) << 20)) {
        /* touch every byte handed out: out of bounds shows under ASan */
        uint32_t crc = qm_crc32c(0, rec.key, rec.key_len);
        crc = qm_crc32c(crc, rec.headers, rec.headers_len);
        (void)qm_crc32c(crc, rec.value, rec.value_len);
        ++*n;
    }
    *rc_out = rc;
}

int qm__log_image_run(uint8_t *seg, uint64_t segment_bytes, qm_index_entry_t *idx,
                      uint64_t append, uint64_t seek_offset, int64_t seek_ts,
                      qm_log_image_result_t *res) {
    memset(res, 0, sizeof *res);
    uint64_t base = 0;
    if (segment_bytes >= sizeof(qm_segment_header_t))
        memcpy(&base, seg + offsetof(qm_segment_header_t, base_offset), sizeof base);
    res->check = qm__segment_check(seg, segment_bytes, base, segment_bytes);
    if (res->check) return res->check;   /* qm__log_seg_load() maps nothing else */
    qm_log_t *lg = calloc(1, sizeof *lg);
    uint8_t *ctl = aligned_alloc(4096, QM_DATA_OFFSET);
    if (!lg || !ctl) {
        free(lg);
        free(ctl);
        return -ENOMEM;
    }
    /* a log with no folder (dirfd -1: every other segment is absent) and
     * no lock file (every member counts alive) */
    lg->dirfd = lg->obj.fd = lg->mb.fd = -1;
    lg->cfg = (qm_log_config_t){segment_bytes, 0, 0, 0};
    qm__log_ctl_format(ctl, QM_DATA_OFFSET, &lg->cfg);
    lg->segment_bytes = segment_bytes;
    lg->ctl = (qm_log_ctl_t *)ctl;
    /* the image is the active segment: the control names its generation,
     * and so does the append word (mod 4096).  Taking the generation from
     * the append word instead made the header's look older than the
     * active one, i.e. a closed segment, which the reader judges by other
     * rules (an empty word in it is damage) */
    uint64_t generation;
    memcpy(&generation, seg + offsetof(qm_segment_header_t, generation), sizeof generation);
    append = QM_APPEND(generation, QM_APPEND_COUNT(append), QM_APPEND_POS(append));
    atomic_store_explicit(&lg->ctl->append.pos, append, memory_order_relaxed);
    atomic_store_explicit(&lg->ctl->active_base, base, memory_order_relaxed);
    atomic_store_explicit(&lg->ctl->active_gen, generation, memory_order_relaxed);
    atomic_store_explicit(&lg->ctl->header.magic, QM_MAGIC_LOG_CTL, memory_order_relaxed);
    lg->mb.members = (qm_member_t *)(ctl + QM_MEMBERS_OFFSET);
    lg->mb.hwm = &lg->ctl->members_hwm;
    int rc = qm__log_seg_remember(lg, base, seg, idx);
    if (rc) goto out;
    seg_map_t *m = lg->segs[0];
    qm_log_cursor_t cur;
    image_read(lg, base, 0, &res->read_records, &res->read_rc, &cur);
    image_read(lg, base, QM_CURSOR_NO_CRC, &res->read_records_nocrc, &res->read_rc_nocrc, &cur);
    res->newest_ts = qm__log_newest_in(lg, seg);
    /* qm_log_seek() within the segment: index entry, then qm__log_walk */
    cur = (qm_log_cursor_t){.base = base, .pos = QM_SEGMENT_HEADER, .next_offset = base};
    if (seek_offset > base && m->idx) qm__log_seek_entry(lg, &cur, m, qm__log_idx_find_offset(lg, m, seek_offset));
    res->seek_rc = qm__log_walk(lg, &cur, seek_offset, INT64_MAX);
    res->seek_next = cur.next_offset;
    cur = (qm_log_cursor_t){.base = base, .pos = QM_SEGMENT_HEADER, .next_offset = base};
    res->seek_time_rc = qm__log_seek_time_in(lg, &cur, m, seek_ts);
    /* the lone opener's recovery, twice: the second must change nothing */
    res->recover_rc = qm__log_recover(lg);
    uint8_t *copy = malloc(segment_bytes);
    if (copy) {
        memcpy(copy, seg, segment_bytes);
        uint64_t a = atomic_load_explicit(&lg->ctl->append.pos, memory_order_relaxed);
        res->recover2_rc = qm__log_recover(lg);
        res->recover_changed =
            memcmp(copy, seg, segment_bytes) != 0 ||
            a != atomic_load_explicit(&lg->ctl->append.pos, memory_order_relaxed);
        free(copy);
    }
    image_read(lg, base, 0, &res->reread_records, &res->reread_rc, &cur);
    /* an append after recovery, read back where the reader stopped */
    static const uint8_t value[] = "fuzz";
    qm_iovec_t v = {value, sizeof value};
    qm_log_entry_t e = {.value = &v, .value_cnt = 1, .timestamp_ns = 1};
    uint64_t off = 0;
    res->append_rc = qm__log_append(lg, &e, &off);
    if (res->append_rc == QM_OK) {
        qm_log_record_t rec;
        uint32_t blocked = 0;
        res->append_read_rc = qm__log_try_read(lg, &cur, &rec, &blocked);
        res->append_read_match = res->append_read_rc == QM_OK && rec.offset == off &&
                                 rec.value_len == sizeof value &&
                                 memcmp(rec.value, value, sizeof value) == 0;
    }
    qm__member_leave(&lg->mb);
out:
    for (size_t i = 0; i < lg->nsegs; i++) free(lg->segs[i]);   /* caller's memory: not unmapped */
    free(lg->segs);
    free(ctl);
    free(lg);
    return rc;
}
