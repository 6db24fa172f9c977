/*
 * log_internal.h - what the files of the partition log share: the handle,
 * its segment mappings, and the functions one file calls in another.
 *
 * The partition log is the append-only log of one topic partition, on
 * memory-mapped segment files (docs/design/format.md):
 *
 *  - Appending: read the append word (gen, count, pos); CAS the record word
 *    at pos from 0 to WRITING(owner, len) - space is never reused, so 0
 *    means unclaimed and the CAS cannot hit old bytes; advance the append
 *    word (any writer helps, reading len from the record word); fill the
 *    record, CRC-32C included; CAS WRITING -> COMMITTED.  The record's
 *    offset is the segment's base + count: one CAS fixes bytes and offset.
 *  - Rolling: a writer that finds no room claims an END record at pos; then
 *    whoever sees END at the append position rolls, under the roll lock (an
 *    OFD lock the kernel drops if its holder dies): create the next segment
 *    (base = base + count), publish it, move the append word.  Every step
 *    is idempotent, so a roller that dies is finished by the next.
 *  - Reading: records in place, in offset order; stop at 0 (nothing more);
 *    wait at WRITING (abandon it if the writer's liveness lock is free);
 *    skip ABANDONED; follow END to the next segment.
 */
#ifndef QM_LOG_INTERNAL_H
#define QM_LOG_INTERNAL_H

#include "internal.h"

#define LOG_MIN_SEGMENT (UINT64_C(64) << 10)
#define LOG_ROUNDS 100000
#define END_ROOM 8u   /* every segment keeps room for its END word */

/* One mapped segment.  Heap-allocated so a hold can point at it while the
 * handle's table grows. */
typedef struct seg_map {
    uint64_t base;
    uint8_t *mem;
    qm_index_entry_t *idx;    /* NULL if the segment has no index file */
    uint64_t last_use;        /* handle's lookup count at the last lookup */
    _Atomic uint32_t holds;   /* qm_log_hold() not yet released */
    uint64_t populated_to;    /* pages below are mapped (for appending) */
} seg_map_t;

struct qm_log {
    int dirfd;
    qm_object_t obj;
    qm_log_ctl_t *ctl;
    qm_membership_t mb;
    uint64_t segment_bytes;
    qm_log_config_t cfg;      /* as stored in control, validated at open */
    seg_map_t **segs;         /* oldest mapped first */
    size_t nsegs, capsegs;
    uint64_t lookups;
    _Atomic int interrupted;
    _Atomic uint64_t fault;   /* set by fault.c: a file was truncated while mapped */
};

static inline uint64_t align8(uint64_t x) { return (x + 7) & ~UINT64_C(7); }

/* Bytes of segment `seg` whose space is allocated (0 in a 1.0 header: all). */
static inline uint64_t qm__seg_reserved(const uint8_t *seg, uint64_t segment_bytes) {
    /* [S4] acquire: pairs with [S3]; the space below is allocated */
    uint64_t r = atomic_load_explicit(&((qm_segment_header_t *)seg)->reserved_to,
                                      memory_order_acquire);
    return r == 0 || r > segment_bytes ? segment_bytes : r;
}
static inline _Atomic uint64_t *word_at(uint8_t *seg, uint64_t pos) {
    return (_Atomic uint64_t *)(seg + pos);
}
/* Entries and bytes of a segment's index file. */
static inline uint64_t idx_entries(const qm_log_t *lg) {
    return lg->segment_bytes / QM_INDEX_INTERVAL;
}
static inline uint64_t idx_bytes(const qm_log_t *lg) {
    return (idx_entries(lg) * sizeof(qm_index_entry_t) + 4095) & ~UINT64_C(4095);
}

/* ----- shared between the log_*.c files -------------------------------------------- */

/* log_open.c: open and close, the control object, bounds and stats */
void qm__log_ctl_format(uint8_t *base, uint64_t len, const void *arg);

/* log_segment.c: segment files and their index: names, mappings, holds, creation, listing, retention */
void qm__log_seg_name(uint64_t base, char *buf, size_t n);
void qm__log_idx_note(qm_index_entry_t *idx, uint64_t base, uint64_t offset, uint64_t pos,
                     uint64_t len, int64_t ts);
int64_t qm__log_idx_written_at_or_before(const qm_index_entry_t *idx, int64_t k, int64_t lo);
int qm__log_seg_remember(qm_log_t *lg, uint64_t base, uint8_t *mem, qm_index_entry_t *idx);
void qm__log_seg_unmap(qm_log_t *lg, seg_map_t *m);
void qm__log_seg_trim(qm_log_t *lg);
seg_map_t *qm__log_seg_cached(qm_log_t *lg, uint64_t base);
int qm__log_seg_load(qm_log_t *lg, uint64_t base, uint8_t **out, bool for_append);
int qm__log_seg_get(qm_log_t *lg, uint64_t base, uint8_t **out);
int qm__log_seg_create(qm_log_t *lg, uint64_t base, uint64_t generation);
/* Allocate segment `base` (mapped at `seg`) up to at least `want` bytes
 * before anyone writes there, then say so in its header: doubling the
 * reservation, at most to the segment's size.  Idempotent and safe to race
 * (fallocate twice is harmless; the word only grows).  Errors: -ENOSPC and
 * other -errno (nothing changed), QM_EPERM. */
int qm__log_seg_reserve(qm_log_t *lg, uint64_t base, uint8_t *seg, uint64_t want);
int qm__log_list_base(qm_log_t *lg, bool largest_below, uint64_t below, uint64_t *out);
int qm__log_list_all(qm_log_t *lg, uint64_t **out, size_t *n);
int64_t qm__log_newest_in(const qm_log_t *lg, const uint8_t *mem);

/* log_append.c: appending and rolling */
int qm__log_roll(qm_log_t *lg, uint32_t gen12);
int qm__log_finish_roll(qm_log_t *lg);
int qm__log_active_segment(qm_log_t *lg, uint64_t a, uint64_t *base, uint8_t **seg,
                          bool for_append);
int qm__log_bad_len(uint64_t pos, uint64_t len, uint64_t segment_bytes);

/* log_sync.c: durability (QM_LOG_FSYNC): fdatasync, group commit */
int qm__log_sync_fd(qm_log_t *lg, int fd, bool with_dir);
int qm__log_sync_control(qm_log_t *lg);
int qm__log_sync_segment(qm_log_t *lg, uint64_t base);
int qm__log_sync_failed(qm_log_t *lg);
int qm__log_wait_durable(qm_log_t *lg, uint64_t base);

/* log_read.c: reading, seeking by offset and time, waiting */
int qm__log_try_read(qm_log_t *lg, qm_log_cursor_t *cur, qm_log_record_t *rec, uint32_t *blocked);
int qm__log_walk(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t offset, int64_t timestamp_ns);
void qm__log_seek_entry(qm_log_t *lg, qm_log_cursor_t *cur, const seg_map_t *m, int64_t k);
int64_t qm__log_idx_find_offset(const qm_log_t *lg, const seg_map_t *m, uint64_t offset);
int qm__log_seek_time_in(qm_log_t *lg, qm_log_cursor_t *cur, const seg_map_t *m,
                        int64_t timestamp_ns);
int qm__log_peek(qm_log_t *lg, const qm_log_cursor_t *cur);

/* log_recover.c: recovery by a lone opener */
int qm__log_recover(qm_log_t *lg);

#endif /* QM_LOG_INTERNAL_H */
