/*
 * log.c - the append-only log of one topic partition, on memory-mapped
 * segment files (docs/design/format.md).
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
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

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

#define LOG_MIN_SEGMENT (UINT64_C(64) << 10)
#define LOG_ROLL_LOCK (QM_LOCK_BASE + QM_MEMBER_SLOTS)
#define LOG_SYNC_LOCK (QM_LOCK_BASE + QM_MEMBER_SLOTS + 1)
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
    bool populated;           /* every page mapped (for appending) */
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

_Atomic uint64_t *qm__log_fault(qm_log_t *lg) { return &lg->fault; }

static inline uint64_t align8(uint64_t x) { return (x + 7) & ~UINT64_C(7); }
static inline _Atomic uint64_t *word_at(uint8_t *seg, uint64_t pos) {
    return (_Atomic uint64_t *)(seg + pos);
}

/* ----- control object ------------------------------------------------------- */
static void ctl_format(uint8_t *base, uint64_t len, const void *arg) {
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

/* ----- segments ---------------------------------------------------------------- */
static void seg_name(uint64_t base, char *buf, size_t n) {
    snprintf(buf, n, "%020" PRIu64 ".log", base);
}
static void idx_name(uint64_t base, char *buf, size_t n) {
    snprintf(buf, n, "%020" PRIu64 ".idx", base);
}
static inline uint64_t idx_entries(const qm_log_t *lg) {
    return lg->segment_bytes / QM_INDEX_INTERVAL;
}
static inline uint64_t idx_bytes(const qm_log_t *lg) {
    return (idx_entries(lg) * sizeof(qm_index_entry_t) + 4095) & ~UINT64_C(4095);
}

/* Map the index of segment `base`, or NULL (absent or not ours: seeks then
 * scan records instead). */
static qm_index_entry_t *idx_map(qm_log_t *lg, uint64_t base) {
    char name[32];
    idx_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return NULL;
    struct stat st;
    uint8_t *mem = NULL;
    if (qm__check_file(fd, &st) == QM_OK && (uint64_t)st.st_size == idx_bytes(lg))
        qm__map(fd, idx_bytes(lg), true, &lg->fault, QM_FAULT_INDEX | base, &mem);
    close(fd);
    return (qm_index_entry_t *)mem;
}

/* Create the zeroed index of segment `base` (roll lock held; idempotent). */
static int idx_create(qm_log_t *lg, uint64_t base) {
    char name[32];
    idx_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == ELOOP ? qm__fail(QM_EPERM, "refusing to follow a symlink: %s", name)
                              : -errno;
    struct stat st;
    int rc = qm__check_file(fd, &st);
    if (!rc && fchmod(fd, 0600) < 0) rc = -errno;
    if (!rc && (uint64_t)st.st_size != idx_bytes(lg) && (rc = qm__os_reserve(fd, idx_bytes(lg))))
        rc = qm__fail(rc, "cannot reserve a %llu-byte segment index",
                      (unsigned long long)idx_bytes(lg));
    close(fd);
    return rc;
}

/* Record the committed record [pos, pos+len) at `offset` in the index. */
static void idx_note(qm_index_entry_t *idx, uint64_t base, uint64_t offset, uint64_t pos,
                     uint64_t len, int64_t ts) {
    if (!idx) return;
    uint64_t where = ((offset - base + 1) << 32) | pos;
    for (uint64_t k = (pos + QM_INDEX_INTERVAL - 1) / QM_INDEX_INTERVAL;
         k * QM_INDEX_INTERVAL < pos + len; k++) {
        atomic_store_explicit(&idx[k].timestamp_ns, ts, memory_order_relaxed);
        QM_KILLPOINT("log.index_write");
        /* [L9] release: the timestamp before the entry; pairs with [L10] */
        atomic_store_explicit(&idx[k].where, where, memory_order_release);
    }
}

/* The last entry at or before k that is written, or -1. */
static int64_t idx_written_at_or_before(const qm_index_entry_t *idx, int64_t k, int64_t lo) {
    for (; k >= lo; k--)
        if (atomic_load_explicit(&idx[k].where, memory_order_acquire))   /* [L10] */
            return k;
    return -1;
}

int qm__segment_check(const void *image, uint64_t file_size, uint64_t base,
                      uint64_t segment_bytes) {
    qm_segment_header_t h;
    if (file_size < sizeof h) return qm__fail(QM_ECORRUPT, "segment truncated");
    /* [S2] acquire: pairs with [S1]; the magic first, then the header it
     * publishes (read the other way round, a segment published between the
     * two reads would look corrupt) */
    uint64_t magic = atomic_load_explicit((_Atomic uint64_t *)image, memory_order_acquire);
    if (magic == 0) return QM_ENOTREADY;
    memcpy(&h, image, sizeof h);
    if (magic != QM_MAGIC_SEGMENT)
        return qm__fail(QM_ECORRUPT, "bad segment magic %#llx", (unsigned long long)magic);
    if (h.format_major != QM_FORMAT_MAJOR)
        return qm__fail(QM_EINCOMPAT, "segment format %u.%u, this build reads %u.x",
                        h.format_major, h.format_minor, QM_FORMAT_MAJOR);
    if (h.layout_fingerprint != qm__layout_fingerprint() ||
        h.header_bytes != QM_SEGMENT_HEADER)
        return qm__fail(QM_EINCOMPAT, "segment layout differs from this build");
    if (h.base_offset != base || h.segment_bytes != segment_bytes || file_size != segment_bytes)
        return qm__fail(QM_ECORRUPT, "segment %llu: header says base %llu, %llu bytes",
                        (unsigned long long)base, (unsigned long long)h.base_offset,
                        (unsigned long long)h.segment_bytes);
    return QM_OK;
}

static int seg_remember(qm_log_t *lg, uint64_t base, uint8_t *mem, qm_index_entry_t *idx) {
    if (lg->nsegs == lg->capsegs) {
        size_t cap = lg->capsegs ? lg->capsegs * 2 : 8;
        seg_map_t **n = realloc(lg->segs, cap * sizeof *n);
        if (!n) return -ENOMEM;
        lg->segs = n;
        lg->capsegs = cap;
    }
    seg_map_t *m = malloc(sizeof *m);
    if (!m) return -ENOMEM;
    *m = (seg_map_t){.base = base, .mem = mem, .idx = idx, .last_use = ++lg->lookups};
    atomic_init(&m->holds, 0);
    lg->segs[lg->nsegs++] = m;
    return QM_OK;
}

static void seg_unmap(qm_log_t *lg, seg_map_t *m) {
    qm__unmap(m->mem, lg->segment_bytes);
    qm__unmap(m->idx, idx_bytes(lg));
    free(m);
}

static bool seg_held(seg_map_t *m) {
    /* [L12] acquire: pairs with [L13]; the holder's reads of the mapping
     * happen before we unmap it */
    return atomic_load_explicit(&m->holds, memory_order_acquire) != 0;
}

/* Drop mappings nobody holds: those of segments retention deleted (their
 * memory is freed only when the last mapping goes) and, beyond
 * QM_LOG_MAPPED_KEEP, the least recently used.  Called only on entry to a
 * public call, when no pointer from an earlier lookup in this call is live. */
static void seg_trim(qm_log_t *lg) {
    uint64_t start = atomic_load_explicit(&lg->ctl->start_offset, memory_order_relaxed);
    size_t n = 0;
    for (size_t i = 0; i < lg->nsegs; i++) {
        seg_map_t *m = lg->segs[i];
        if (m->base < start && !seg_held(m))
            seg_unmap(lg, m);
        else
            lg->segs[n++] = m;
    }
    lg->nsegs = n;
    while (lg->nsegs > QM_LOG_MAPPED_KEEP) {
        size_t lru = SIZE_MAX;
        for (size_t i = 0; i < lg->nsegs; i++)
            if (!seg_held(lg->segs[i]) &&
                (lru == SIZE_MAX || lg->segs[i]->last_use < lg->segs[lru]->last_use))
                lru = i;
        if (lru == SIZE_MAX) break;
        seg_unmap(lg, lg->segs[lru]);
        memmove(&lg->segs[lru], &lg->segs[lru + 1], (lg->nsegs - lru - 1) * sizeof *lg->segs);
        lg->nsegs--;
    }
}

void *qm_log_hold(const qm_log_record_t *rec) {
    seg_map_t *m = rec->mapping;
    atomic_fetch_add_explicit(&m->holds, 1, memory_order_relaxed);
    return m;
}

void *qm_log_hold_again(void *hold) {
    seg_map_t *m = hold;
    atomic_fetch_add_explicit(&m->holds, 1, memory_order_relaxed);
    return m;
}

void qm_log_release(void *hold) {
    seg_map_t *m = hold;
    /* [L13] release: pairs with [L12] */
    if (m) atomic_fetch_sub_explicit(&m->holds, 1, memory_order_release);
}

static seg_map_t *seg_cached(qm_log_t *lg, uint64_t base) {
    for (size_t i = lg->nsegs; i-- > 0;)
        if (lg->segs[i]->base == base) {
            lg->segs[i]->last_use = ++lg->lookups;
            return lg->segs[i];
        }
    return NULL;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23   /* Linux 5.14 */
#endif

/* Map segment `base` (cached until seg_trim drops it). QM_ENOTFOUND if the
 * file does not exist, QM_ENOTREADY while its creator is still writing it.
 * `for_append`: map every page now (MAP_POPULATE, or MADV_POPULATE_WRITE
 * for a mapping a reader made), as the appender will write them all; a
 * reader's faults map 16 pages at a time (fault-around), which costs less
 * than populating a segment it may read only part of, and an open that
 * only checks the active segment exists maps nothing (a 64 MiB populate
 * costs ~10 ms). */
static int seg_load(qm_log_t *lg, uint64_t base, uint8_t **out, bool for_append) {
    seg_map_t *m = seg_cached(lg, base);
    if (m) {
        if (for_append && !m->populated) {   /* best effort: faults work too */
            (void)madvise(m->mem, lg->segment_bytes, MADV_POPULATE_WRITE);
            m->populated = true;
        }
        *out = m->mem;
        return QM_OK;
    }
    char name[32];
    seg_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? QM_ENOTFOUND
               : errno == ELOOP ? qm__fail(QM_EPERM, "refusing to follow a symlink: %s", name)
                                : -errno;
    struct stat st;
    uint8_t *mem = NULL;
    int rc = qm__check_file(fd, &st);
    if (!rc && (uint64_t)st.st_size != lg->segment_bytes) {
        /* a segment is published (magic set) only at full size: a shorter
         * one with a magic was truncated */
        uint64_t magic = 0;
        if ((uint64_t)st.st_size >= sizeof magic && pread(fd, &magic, sizeof magic, 0) != 8)
            magic = 0;
        rc = (uint64_t)st.st_size < lg->segment_bytes && magic == 0
                 ? QM_ENOTREADY
                 : qm__fail(QM_ECORRUPT, "segment %llu is %llu bytes, not %llu",
                            (unsigned long long)base, (unsigned long long)st.st_size,
                            (unsigned long long)lg->segment_bytes);
    }
    if (!rc)
        rc = qm__map_flags(fd, lg->segment_bytes, true, for_append ? MAP_POPULATE : 0, &lg->fault,
                           QM_FAULT_SEGMENT | base, &mem);
    close(fd);
    if (rc) return rc;
    rc = qm__segment_check(mem, lg->segment_bytes, base, lg->segment_bytes);
    qm_index_entry_t *idx = rc ? NULL : idx_map(lg, base);
    if (!rc) rc = seg_remember(lg, base, mem, idx);
    if (!rc) lg->segs[lg->nsegs - 1]->populated = for_append;
    if (rc) {
        qm__unmap(mem, lg->segment_bytes);
        qm__unmap(idx, idx_bytes(lg));
        return rc;
    }
    *out = mem;
    return QM_OK;
}

static int seg_get(qm_log_t *lg, uint64_t base, uint8_t **out) {
    return seg_load(lg, base, out, false);
}

/* ----- durability (QM_LOG_FSYNC) ----------------------------------------------- */
/* A failed fdatasync turns the partition read-only for good: the kernel may
 * have dropped the dirty pages it could not write and marked them clean, so
 * a retry could report success for data that is gone (fsyncgate).  Returns
 * the error every later append of any handle returns. */
static int sync_broke(qm_log_t *lg, int rc) {
    /* [L17] release: pairs with [L18]; every later append sees it */
    atomic_store_explicit(&lg->ctl->sync_error, -rc, memory_order_release);
    return qm__fail(-EIO, "fdatasync failed (%s): partition is now read-only",
                    qm_status_str(rc));
}

/* fdatasync the file behind fd (and the folder, for a new name).  Only a
 * failed sync is sticky; not getting to sync (a failed open) is not. */
static int sync_fd(qm_log_t *lg, int fd, bool with_dir) {
    int rc = qm__os_datasync(fd);
    if (!rc && with_dir) rc = qm__os_datasync(lg->dirfd);
    return rc ? sync_broke(lg, rc) : QM_OK;
}

/* Create segment `base` (roll lock held).  Idempotent: a file left by a
 * roller that died is completed or validated; with QM_LOG_FSYNC it is
 * synced again, as its roller may have died (or failed to open it) before
 * syncing it. */
static int seg_create(qm_log_t *lg, uint64_t base, uint64_t generation) {
    char name[32];
    seg_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == ELOOP ? qm__fail(QM_EPERM, "refusing to follow a symlink: %s", name)
                              : -errno;
    struct stat st;
    uint8_t *mem = NULL;
    int rc = qm__check_file(fd, &st);
    if (!rc && fchmod(fd, 0600) < 0) rc = -errno;
    if (!rc && (uint64_t)st.st_size >= sizeof(qm_segment_header_t)) {
        /* exists: finished if its magic is set */
        uint8_t *peek;
        if (qm__map(fd, (uint64_t)st.st_size, false, NULL, 0, &peek) == QM_OK) {
            uint64_t magic =   /* [S2] */
                atomic_load_explicit((_Atomic uint64_t *)peek, memory_order_acquire);
            /* published by a roller that died before naming it active: then
             * it must be this very segment; anything else is damage, and
             * naming it active would break every later append and open */
            int check = magic ? qm__segment_check(peek, (uint64_t)st.st_size, base,
                                                   lg->segment_bytes)
                              : QM_OK;
            /* ... and empty: nothing is appended before it is active */
            if (magic && !check &&
                atomic_load_explicit(word_at(peek, QM_SEGMENT_HEADER), memory_order_relaxed))
                check = qm__fail(QM_ECORRUPT, "segment %llu holds records but was never the "
                                 "active segment", (unsigned long long)base);
            qm__unmap(peek, (uint64_t)st.st_size);
            if (magic != 0) {
                rc = check ? check
                           : (lg->cfg.flags & QM_LOG_FSYNC) ? sync_fd(lg, fd, true) : QM_OK;
                close(fd);
                return rc;
            }
        }
    }
    if (!rc) rc = idx_create(lg, base);   /* a published segment has its index */
    if (!rc) {
        rc = qm__os_reserve(fd, lg->segment_bytes);
        if (rc) rc = qm__fail(rc, "cannot reserve a %llu-byte segment",
                              (unsigned long long)lg->segment_bytes);
    }
    if (!rc) rc = qm__map(fd, lg->segment_bytes, true, &lg->fault, QM_FAULT_SEGMENT | base, &mem);
    if (rc) {
        close(fd);
        unlinkat(lg->dirfd, name, 0);
        return rc;
    }
    qm_segment_header_t *h = (qm_segment_header_t *)mem;
    h->format_major = QM_FORMAT_MAJOR;
    h->format_minor = QM_FORMAT_MINOR;
    h->header_bytes = QM_SEGMENT_HEADER;
    h->layout_fingerprint = qm__layout_fingerprint();
    h->base_offset = base;
    h->segment_bytes = lg->segment_bytes;
    h->generation = generation;
    h->created_unix_ns = (uint64_t)qm__os_realtime_ns();
    QM_KILLPOINT("log.roll_before_publish");
    /* [S1] release: header before magic; pairs with [S2] */
    atomic_store_explicit((_Atomic uint64_t *)mem, QM_MAGIC_SEGMENT, memory_order_release);
    qm__unmap(mem, lg->segment_bytes);
    /* the file and its name survive power loss */
    rc = (lg->cfg.flags & QM_LOG_FSYNC) ? sync_fd(lg, fd, true) : QM_OK;
    close(fd);
    return rc;
}

/* fsync mode: the control file names the active segment.  Synced when a
 * log gets its first segment and before a roll lets anyone append to the
 * next one, so after power loss it never names a segment older than one
 * holding an acknowledged record (recovery rebuilds the append position
 * from the segment itself). */
static int sync_control(qm_log_t *lg) {
    if (!(lg->cfg.flags & QM_LOG_FSYNC)) return QM_OK;
    return sync_fd(lg, lg->obj.fd, false);   /* like a failed segment sync: read-only */
}

static int roll_lock(qm_log_t *lg) {
    for (int i = 0; i < 20000; i++) {   /* the holder only creates one file */
        int rc = qm__os_lock_byte(lg->mb.fd, LOG_ROLL_LOCK);
        if (rc != QM_EAGAIN) return rc;
        usleep(100);
    }
    return qm__fail(QM_ETIMEDOUT, "segment roll lock held for 2 s");
}

/* Close the segment of generation `gen12` (END claimed at its append
 * position) and open the next.  Returns when the append word has moved on. */
static int roll(qm_log_t *lg, uint32_t gen12) {
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
            rc = seg_create(lg, next_base, next_gen);
            if (!rc) {
                atomic_store_explicit(&c->active_base, next_base, memory_order_relaxed);
                /* [L3] release: the new base (and the segment file) before
                 * the generation; pairs with [L1] */
                atomic_store_explicit(&c->active_gen, next_gen, memory_order_release);
            }
        }
        /* also when finishing a dead roller's roll: it may have died before */
        if (!rc) rc = sync_control(lg);
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
    qm__os_unlock_byte(lg->mb.fd, LOG_ROLL_LOCK);
    if (!rc && (lg->cfg.retention_bytes || lg->cfg.retention_ns)) rc = qm_log_retain(lg, NULL);
    return rc;
}

/* The append word's generation lags active_gen: a roller published the next
 * segment and has not moved the append word yet, or died before it could.
 * Finish that roll (roll() waits for a live roller's lock, then moves the
 * word only if nobody did).  QM_ECORRUPT if the generations disagree in a
 * way no roll leaves them. */
static int finish_roll(qm_log_t *lg) {
    qm_log_ctl_t *c = lg->ctl;
    for (int tries = 0; tries < 3; tries++) {
        uint64_t a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
        uint64_t gen = atomic_load_explicit(&c->active_gen, memory_order_acquire); /* [L1] */
        uint32_t ahead = ((uint32_t)gen - QM_APPEND_GEN(a)) & 0xfff;
        if (ahead == 0) return QM_OK;   /* finished meanwhile */
        if (ahead == 1) return roll(lg, QM_APPEND_GEN(a));
        /* two rolls between our two loads, or damage: look again */
    }
    return qm__fail(QM_ECORRUPT, "append generation and active segment generation disagree");
}

/* Map the active segment for append word `a` (`for_append`: see seg_load).
 * QM_EAGAIN while a roll is between publishing the segment and moving the
 * append word. */
static int active_segment(qm_log_t *lg, uint64_t a, uint64_t *base, uint8_t **seg,
                          bool for_append) {
    /* [L1] acquire: pairs with [L3] */
    uint64_t gen = atomic_load_explicit(&lg->ctl->active_gen, memory_order_acquire);
    if ((gen & 0xfff) != QM_APPEND_GEN(a)) return QM_EAGAIN;
    *base = atomic_load_explicit(&lg->ctl->active_base, memory_order_relaxed);
    int rc = seg_load(lg, *base, seg, for_append);
    if ((rc == QM_ENOTFOUND || rc == QM_ENOTREADY) &&
        (QM_APPEND_COUNT(a) || QM_APPEND_POS(a) != QM_SEGMENT_HEADER))
        /* a roll publishes a segment complete before it names it active:
         * one that holds records cannot be missing or unpublished */
        return qm__fail(QM_ECORRUPT, "active segment %llu is missing or truncated, but the "
                        "log says it holds %u records", (unsigned long long)*base,
                        QM_APPEND_COUNT(a));
    if (rc == QM_ENOTFOUND || rc == QM_ENOTREADY) {
        /* creator of the log died before its first segment: make it */
        rc = roll_lock(lg);
        if (rc) return rc;
        rc = seg_create(lg, *base, gen);
        if (!rc) rc = sync_control(lg);
        qm__os_unlock_byte(lg->mb.fd, LOG_ROLL_LOCK);
        if (!rc) rc = seg_get(lg, *base, seg);
    }
    return rc;
}

static int bad_len(uint64_t pos, uint64_t len, uint64_t segment_bytes) {
    return len < QM_RECORD_HEADER || (len & 7) || len > segment_bytes ||
           pos + len + END_ROOM > segment_bytes;
}

/* ----- group commit (QM_LOG_FSYNC) ------------------------------------------------ */
static int list_base(qm_log_t *lg, bool largest_below, uint64_t below, uint64_t *out);

static int sync_segment(qm_log_t *lg, uint64_t base) {
    char name[32];
    seg_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)   /* not synced, nothing lost: this call fails, the next tries again */
        return errno == ENOENT ? QM_OK   /* deleted by retention */
                               : qm__fail(-errno, "cannot open segment %s to fdatasync it", name);
    int rc = sync_fd(lg, fd, false);
    close(fd);
    return rc;
}

static int sync_failed(qm_log_t *lg) {
    /* [L18] acquire: pairs with [L17]; a failed sync is seen by every later append */
    int err = atomic_load_explicit(&lg->ctl->sync_error, memory_order_acquire);
    return err ? qm__fail(-EIO, "an earlier fdatasync failed (%s): partition is read-only",
                          qm_status_str(-err))
               : QM_OK;
}

/* Return once a fdatasync that started after our commit has finished (group
 * commit: one process syncs for everyone waiting; the others sleep). */
static int wait_durable(qm_log_t *lg, uint64_t base) {
    qm_log_ctl_t *c = lg->ctl;
    /* any sync numbered >= need starts after this load, so after our commit
     * ([L15] acquire: pairs with [L16]) */
    uint64_t need = atomic_load_explicit(&c->sync_started, memory_order_acquire) + 1;
    for (;;) {
        int rc = sync_failed(lg);
        if (rc) return rc;
        /* [L19] acquire: pairs with [L8]; the sync we need finished */
        if (atomic_load_explicit(&c->sync_done, memory_order_acquire) >= need) break;
        rc = qm__os_lock_byte(lg->mb.fd, LOG_SYNC_LOCK);
        if (rc == QM_OK) {
            if (atomic_load_explicit(&c->sync_done, memory_order_acquire) < need) {   /* [L19] */
                /* [L16] acq_rel: numbers this sync after every commit that
                 * read the old number */
                uint64_t n = atomic_fetch_add_explicit(&c->sync_started, 1, memory_order_acq_rel) + 1;
                /* [L20] acquire: a base no older than any commit this sync
                 * covers (older ones: sync_low_base below) */
                uint64_t active = atomic_load_explicit(&c->active_base, memory_order_acquire);
                uint64_t low = active, prev;
                rc = sync_segment(lg, active);
                if (!rc && active > 0 && list_base(lg, true, active - 1, &prev) == QM_OK) {
                    low = prev;
                    rc = sync_segment(lg, prev);
                }
                if (!rc) {   /* a failed one is never retried into a false success */
                    atomic_store_explicit(&c->sync_low_base, low, memory_order_relaxed);
                    /* [L8] release: pairs with the acquire loads above */
                    atomic_store_explicit(&c->sync_done, n, memory_order_release);
                    atomic_fetch_add_explicit(&c->syncs, 1, memory_order_relaxed);
                }
            }
            qm__os_unlock_byte(lg->mb.fd, LOG_SYNC_LOCK);
            qm__wake(&c->sync_wake);
            if (rc) return rc;   /* read-only now (sync_broke), or could not open */
            continue;
        }
        if (rc != QM_EAGAIN) return rc;
        /* someone is syncing: sleep until it finishes (or dies: its lock goes) */
        uint32_t seq = qm__sleep_prepare(&c->sync_wake);
        if (atomic_load_explicit(&c->sync_done, memory_order_acquire) >= need) break;   /* [L19] */
        qm__sleep(&c->sync_wake, seq, qm__os_monotonic_ns() + 10 * INT64_C(1000000));
    }
    /* the covering sync synced the active segment and the one before; ours
     * may be older if rolls overtook a slow append */
    if (base < atomic_load_explicit(&c->sync_low_base, memory_order_relaxed)) {
        int rc = sync_segment(lg, base);
        if (rc) return rc;
    }
    atomic_fetch_add_explicit(&c->synced_appends, 1, memory_order_relaxed);
    return QM_OK;
}

/* ----- appending ------------------------------------------------------------------ */
int qm__log_append(qm_log_t *lg, const qm_log_entry_t *e, uint64_t *offset_out) {
    if (!lg) return QM_ECLOSED;
    int rc = qm__member_ensure(&lg->mb);
    if (rc) return rc;
    if ((lg->cfg.flags & QM_LOG_FSYNC) && (rc = sync_failed(lg))) return rc;
    seg_trim(lg);
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
        rc = active_segment(lg, a, &base, &seg, true);
        if (rc == QM_EAGAIN) {   /* mid-roll: let the roller finish, or finish for it */
            if (round % 1024 == 1023 && (rc = finish_roll(lg))) return rc;
            qm__cpu_relax();
            continue;
        }
        if (rc) return rc;
        if (pos < QM_SEGMENT_HEADER || (pos & 7) || pos + END_ROOM > lg->segment_bytes)
            return qm__fail(QM_ECORRUPT, "append position %llu", (unsigned long long)pos);
        _Atomic uint64_t *wp = word_at(seg, pos);
        /* [L7a] acquire: pairs with [L5]; a claimed word comes with its length */
        uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
        if (w != 0) {   /* claimed: help the append word past it, or roll */
            if (QM_REC_STATE(w) == QM_REC_END) {
                if (count == 0)   /* rolling would name this segment again */
                    return qm__fail(QM_ECORRUPT, "segment %llu closed before its first record",
                                    (unsigned long long)base);
                rc = roll(lg, QM_APPEND_GEN(a));
                if (rc) return rc;
                continue;
            }
            if (bad_len(pos, QM_REC_LEN(w), lg->segment_bytes)) {
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
                rc = roll(lg, QM_APPEND_GEN(a));
                if (rc) return rc;
            }
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
        idx_note(seg_cached(lg, base)->idx, base, offset, pos, need, h->timestamp_ns);
        qm_member_t *me = lg->mb.me;
        atomic_store_explicit(&me->put_count,
                              atomic_load_explicit(&me->put_count, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        qm__member_publish_role(&lg->mb, QM_MEMBER_PRODUCER);
        qm__wake(&c->data_wake);
        *offset_out = offset;
        return (lg->cfg.flags & QM_LOG_FSYNC) ? wait_durable(lg, base) : QM_OK;
    }
    return qm__fail(QM_ECORRUPT, "append made no progress in %d rounds", LOG_ROUNDS);
}

/* ----- reading ----------------------------------------------------------------- */
typedef struct read_ctx {
    qm_log_t *lg;
    qm_log_cursor_t *cur;
    qm_log_record_t *rec;
    uint32_t blocked_on;   /* owner of the WRITING record we wait behind */
} read_ctx_t;

static int try_read(qm_log_t *lg, qm_log_cursor_t *cur, qm_log_record_t *rec, uint32_t *blocked) {
    for (int round = 0; round < LOG_ROUNDS; round++) {
        /* behind retention: the records up to the start are gone */
        /* [L22] acquire: pairs with [L21] */
        uint64_t start = atomic_load_explicit(&lg->ctl->start_offset, memory_order_acquire);
        if (cur->next_offset < start) {
            uint64_t base;
            if (list_base(lg, false, 0, &base) == QM_OK && base >= start) {
                cur->skipped += base - cur->next_offset;
                cur->base = cur->next_offset = base;
                cur->pos = QM_SEGMENT_HEADER;
            }
        }
        uint8_t *seg;
        int rc = seg_get(lg, cur->base, &seg);
        if (rc == QM_ENOTFOUND) {
            /* Either the next segment is being rolled in, or retention
             * deleted this one before we read it: then jump to the start. */
            uint64_t start;
            if (list_base(lg, false, 0, &start) == QM_OK && start > cur->base) {
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
        if (bad_len(pos, len, lg->segment_bytes))
            return qm__fail(QM_ECORRUPT, "record at %llu has bad length %u",
                            (unsigned long long)pos, len);
        if (st == QM_REC_WRITING) {   /* in order: wait for it (recover checks its writer) */
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
        rec->mapping = seg_cached(lg, cur->base);
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
    return try_read(r->lg, r->cur, r->rec, &r->blocked_on);
}
/* The record at the cursor is WRITING: if its writer is dead, abandon it. */
static int abandon_at(qm_log_t *lg, const qm_log_cursor_t *cur) {
    uint8_t *seg;
    if (seg_get(lg, cur->base, &seg) != QM_OK) return 0;
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
    seg_trim(lg);
    read_ctx_t ctx = {lg, cur, rec, 0};
    qm_waiter_t w = {&lg->ctl->data_wake, read_attempt, read_recover, read_watch, &ctx,
                     &lg->interrupted, &lg->fault};
    return qm__wait_loop(&w, deadline);
}

/* ----- segments on disk -------------------------------------------------------- */
static int list_all(qm_log_t *lg, uint64_t **out, size_t *n);

/* Smallest segment base present (largest_below: the largest base <= below),
 * or QM_ENOTFOUND. */
static int list_base(qm_log_t *lg, bool largest_below, uint64_t below, uint64_t *out) {
    uint64_t *bases;
    size_t n;
    int rc = list_all(lg, &bases, &n);
    if (rc) return rc;
    rc = QM_ENOTFOUND;
    for (size_t i = 0; i < n; i++) {
        if (largest_below && bases[i] > below) break;
        *out = bases[i];
        rc = QM_OK;
        if (!largest_below) break;
    }
    free(bases);
    return rc;
}

/* Advance `cur` record by record (across segments) until its next offset
 * reaches `offset`, or it stands on a committed record with a timestamp >=
 * `timestamp_ns`, or the end of what is written. */
static int walk(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t offset, int64_t timestamp_ns) {
    while (cur->next_offset < offset) {
        uint8_t *seg;
        int rc = seg_get(lg, cur->base, &seg);
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
        if (bad_len(cur->pos, QM_REC_LEN(w), lg->segment_bytes))
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
static void seek_entry(qm_log_t *lg, qm_log_cursor_t *cur, const seg_map_t *m, int64_t k) {
    if (k < 0) return;
    uint64_t where = atomic_load_explicit(&m->idx[k].where, memory_order_acquire);   /* [L10] */
    uint64_t rel1 = where >> 32, pos = where & 0xffffffffu;
    if (!rel1 || pos < QM_SEGMENT_HEADER || (pos & 7) || pos + END_ROOM > lg->segment_bytes)
        return;
    uint64_t w = atomic_load_explicit(word_at(m->mem, pos), memory_order_acquire);   /* [L7] */
    if (QM_REC_STATE(w) != QM_REC_COMMITTED || bad_len(pos, QM_REC_LEN(w), lg->segment_bytes))
        return;
    uint64_t off;
    memcpy(&off, m->mem + pos + offsetof(qm_record_header_t, offset), sizeof off);
    if (off != m->base + rel1 - 1) return;
    cur->pos = pos;
    cur->next_offset = off;
}

/* The last index entry of segment m whose record offset is <= offset. */
static int64_t idx_find_offset(const qm_log_t *lg, const seg_map_t *m, uint64_t offset) {
    uint64_t target = offset - m->base + 1;
    int64_t lo = 0, hi = (int64_t)idx_entries(lg) - 1, best = -1;
    while (lo <= hi) {   /* binary search, stepping left over unwritten entries */
        int64_t mid = lo + (hi - lo) / 2;
        int64_t k = idx_written_at_or_before(m->idx, mid, lo);
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
    seg_trim(lg);
    uint64_t start;
    int rc = list_base(lg, false, 0, &start);
    if (rc) return rc;
    if (offset < start)
        return qm__fail(QM_ENOTFOUND, "offset %llu is before the log start %llu",
                        (unsigned long long)offset, (unsigned long long)start);
    uint64_t base;
    rc = list_base(lg, true, offset, &base);
    if (rc) return rc;
    cur->base = base;
    cur->pos = QM_SEGMENT_HEADER;
    cur->next_offset = base;
    cur->skipped = 0;
    uint8_t *mem;
    if (offset > base && seg_get(lg, base, &mem) == QM_OK) {
        seg_map_t *m = seg_cached(lg, base);
        if (m->idx) seek_entry(lg, cur, m, idx_find_offset(lg, m, offset));
    }
    /* walk the rest: less than one index interval and one record */
    return walk(lg, cur, offset, INT64_MAX);
}

/* Every segment base on disk, ascending (caller frees). */
static int list_all(qm_log_t *lg, uint64_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    int fd = openat(lg->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    size_t cap = 0;
    struct dirent *de;
    int rc = QM_OK;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (strlen(nm) != 24 || strcmp(nm + 20, ".log") != 0) continue;
        uint64_t b = 0;
        bool digits = true;
        for (int i = 0; i < 20; i++) {
            if (nm[i] < '0' || nm[i] > '9') digits = false;
            else b = b * 10 + (uint64_t)(nm[i] - '0');
        }
        if (!digits) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(*out, cap * sizeof **out);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            *out = grown;
        }
        (*out)[(*n)++] = b;
    }
    closedir(d);
    for (size_t i = 1; i < *n; i++)   /* insertion sort: segments are few */
        for (size_t j = i; j > 0 && (*out)[j - 1] > (*out)[j]; j--) {
            uint64_t t = (*out)[j];
            (*out)[j] = (*out)[j - 1];
            (*out)[j - 1] = t;
        }
    return rc;
}

/* Newest timestamp of the committed records in the segment image `mem`;
 * INT64_MIN if none. */
static int64_t newest_in(const qm_log_t *lg, const uint8_t *mem) {
    int64_t newest = INT64_MIN;
    for (uint64_t pos = QM_SEGMENT_HEADER; pos + END_ROOM <= lg->segment_bytes;) {
        /* [L7] */
        uint64_t w = atomic_load_explicit(word_at((uint8_t *)mem, pos), memory_order_acquire);
        uint32_t st8 = QM_REC_STATE(w);
        if (st8 == QM_REC_EMPTY || st8 == QM_REC_END || bad_len(pos, QM_REC_LEN(w), lg->segment_bytes))
            break;
        if (st8 == QM_REC_COMMITTED) {
            int64_t ts;
            memcpy(&ts, mem + pos + offsetof(qm_record_header_t, timestamp_ns), sizeof ts);
            if (ts > newest) newest = ts;
        }
        pos += QM_REC_LEN(w);
    }
    return newest;
}

/* Newest timestamp of the committed records of segment `base`, read through
 * a temporary mapping (it may be about to be deleted); INT64_MIN if none. */
static int64_t newest_timestamp(qm_log_t *lg, uint64_t base) {
    char name[32];
    seg_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return INT64_MIN;
    uint8_t *mem = NULL;
    struct stat st;
    int rc = qm__check_file(fd, &st);
    if (!rc && (uint64_t)st.st_size == lg->segment_bytes)
        rc = qm__map(fd, lg->segment_bytes, false, &lg->fault, QM_FAULT_SEGMENT | base, &mem);
    close(fd);
    if (rc || !mem) return INT64_MIN;
    int64_t newest = INT64_MIN;
    if (qm__segment_check(mem, lg->segment_bytes, base, lg->segment_bytes) == QM_OK)
        newest = newest_in(lg, mem);
    qm__unmap(mem, lg->segment_bytes);
    return newest;
}

int qm__log_retain(qm_log_t *lg, uint64_t *deleted) {
    if (!lg) return QM_ECLOSED;
    if (deleted) *deleted = 0;
    if (!lg->cfg.retention_bytes && !lg->cfg.retention_ns) return QM_OK;
    uint64_t *bases;
    size_t n;
    int rc = list_all(lg, &bases, &n);
    if (rc) return rc;
    /* [L20]: retention never deletes the active segment or a later one */
    uint64_t active = atomic_load_explicit(&lg->ctl->active_base, memory_order_acquire);
    uint64_t total = (uint64_t)n * lg->segment_bytes;
    int64_t cutoff = qm__os_realtime_ns() - lg->cfg.retention_ns;
    size_t i = 0;
    for (; i < n && bases[i] < active; i++) {   /* oldest first, never the active */
        bool drop = lg->cfg.retention_bytes && total > lg->cfg.retention_bytes;
        if (!drop && lg->cfg.retention_ns) drop = newest_timestamp(lg, bases[i]) < cutoff;
        if (!drop) break;
        /* publish the new start first: readers stop using the segment
         * ([L21] release: pairs with [L22]) */
        uint64_t next = i + 1 < n ? bases[i + 1] : active;
        uint64_t cur = atomic_load_explicit(&lg->ctl->start_offset, memory_order_relaxed);
        while (cur < next && !atomic_compare_exchange_weak_explicit(
                                 &lg->ctl->start_offset, &cur, next, memory_order_release,
                                 memory_order_relaxed)) {
        }
        char name[32];
        seg_name(bases[i], name, sizeof name);
        QM_KILLPOINT("log.retention_delete");
        if (unlinkat(lg->dirfd, name, 0) == 0 && deleted) (*deleted)++;
        idx_name(bases[i], name, sizeof name);
        unlinkat(lg->dirfd, name, 0);
        total -= lg->segment_bytes;
    }
    free(bases);
    return QM_OK;
}

/* `cur` stands at the start of segment m (NULL: not mapped): move it to the
 * first record with a timestamp >= timestamp_ns, or the end written. */
static int seek_time_in(qm_log_t *lg, qm_log_cursor_t *cur, const seg_map_t *m,
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
        if (first > 0) seek_entry(lg, cur, m, idx_written_at_or_before(m->idx, first - 1, 0));
    }
    return walk(lg, cur, UINT64_MAX, timestamp_ns);   /* the last stretch */
}

int qm__log_seek_time(qm_log_t *lg, qm_log_cursor_t *cur, int64_t timestamp_ns) {
    if (!lg) return QM_ECLOSED;
    seg_trim(lg);
    uint64_t *bases;
    size_t n;
    int rc = list_all(lg, &bases, &n);
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
        seg_trim(lg);   /* a long log: keep only the last few segments looked at mapped */
        cur->base = cur->next_offset = bases[i];
        cur->pos = QM_SEGMENT_HEADER;
        uint8_t *mem;
        seg_map_t *m = seg_get(lg, bases[i], &mem) == QM_OK ? seg_cached(lg, bases[i]) : NULL;
        if (!m || !m->idx || i + 1 == n) break;
        int64_t last = idx_written_at_or_before(m->idx, (int64_t)idx_entries(lg) - 1, 0);
        if (last >= 0 &&
            atomic_load_explicit(&m->idx[last].timestamp_ns, memory_order_relaxed) >= timestamp_ns)
            break;
    }
    seg_map_t *m = seg_cached(lg, bases[i]);
    free(bases);
    return seek_time_in(lg, cur, m, timestamp_ns);
}

/* 1: something to do at the cursor (a record, a skip, a segment change);
 * 0: nothing yet; 2: a record still being written. */
static int peek(qm_log_t *lg, const qm_log_cursor_t *cur) {
    uint8_t *seg;
    int rc = seg_get(lg, cur->base, &seg);
    if (rc == QM_ENOTFOUND) {
        uint64_t start;
        return list_base(lg, false, 0, &start) == QM_OK && start > cur->base;
    }
    if (rc || cur->pos < QM_SEGMENT_HEADER || (cur->pos & 7) ||
        cur->pos + END_ROOM > lg->segment_bytes)
        return rc == QM_ENOTREADY ? 0 : 1;   /* let read report the problem */
    uint64_t w = atomic_load_explicit(word_at(seg, cur->pos), memory_order_acquire);   /* [L7] */
    uint32_t st = QM_REC_STATE(w);
    return st == QM_REC_EMPTY ? 0 : st == QM_REC_WRITING ? 2 : 1;
}

int qm__log_wait_any(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n,
                    int64_t deadline) {
    if (n == 0 || n > 128) return qm__fail(QM_EINVAL, "wait on 1..128 logs");
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
        int p = peek(logs[i], &cursors[i]);
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

int qm__log_bounds(qm_log_t *lg, uint64_t *start, uint64_t *end) {
    if (!lg) return QM_ECLOSED;
    *start = atomic_load_explicit(&lg->ctl->start_offset, memory_order_acquire);   /* [L22] */
    for (int round = 0; round < 16 * 1024; round++) {
        uint64_t a = atomic_load_explicit(&lg->ctl->append.pos, memory_order_acquire);
        uint64_t gen = atomic_load_explicit(&lg->ctl->active_gen, memory_order_acquire);
        if ((gen & 0xfff) != QM_APPEND_GEN(a)) {   /* mid-roll */
            int rc = round % 1024 == 1023 ? finish_roll(lg) : QM_OK;
            if (rc) return rc;
            qm__cpu_relax();
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
    int rc = qm_log_bounds(lg, &st->start_offset, &st->end_offset);
    if (rc) return rc;
    st->segments_rolled = atomic_load_explicit(&lg->ctl->rolls, memory_order_relaxed);
    st->abandoned = atomic_load_explicit(&lg->ctl->abandoned, memory_order_relaxed);
    st->segment_bytes = lg->segment_bytes;
    st->member_slot = lg->mb.slot;
    uint64_t *bases;
    size_t n;
    if (list_all(lg, &bases, &n) == QM_OK) {
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

/* ----- recovery -------------------------------------------------------------------- */
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
    uint64_t from = bad_len(pos, bad, lg->segment_bytes) ? pos + 8 : pos + bad;
    for (uint64_t p = from; p + END_ROOM <= end; p += 8) {
        uint64_t w = atomic_load_explicit(word_at(seg, p), memory_order_relaxed);
        uint32_t len = QM_REC_LEN(w);
        if (QM_REC_STATE(w) != QM_REC_COMMITTED || bad_len(p, len, lg->segment_bytes)) continue;
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
static int recover(qm_log_t *lg) {
    qm_log_ctl_t *c = lg->ctl;
    uint64_t a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
    uint64_t gen = atomic_load_explicit(&c->active_gen, memory_order_acquire);   /* [L1] */
    if ((gen & 0xfff) != QM_APPEND_GEN(a)) {   /* a roller died after publishing */
        int rc = roll(lg, QM_APPEND_GEN(a));
        if (rc) return rc;
        a = atomic_load_explicit(&c->append.pos, memory_order_acquire);   /* [L0] */
    }
    uint64_t base;
    uint8_t *seg;
    int rc = active_segment(lg, a, &base, &seg, false);
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
        if (bad_len(pos, len, lg->segment_bytes) ||
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
            if (bad_len(p, len, lg->segment_bytes)) {
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
        seg_map_t *m = seg_cached(lg, base);
        if (m->idx)
            for (uint64_t k = (pos + QM_INDEX_INTERVAL - 1) / QM_INDEX_INTERVAL;
                 k < idx_entries(lg); k++)
                atomic_store_explicit(&m->idx[k].where, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->tail_cuts, 1, memory_order_relaxed);
        if (lg->cfg.flags & QM_LOG_FSYNC) {
            rc = sync_segment(lg, base);
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

/* ----- open/close ---------------------------------------------------------------- */
/* A new owner of a dead writer's slot: abandon the record it was writing
 * (its offset is in `inflight`), so no reader waits on it forever. */
static void settle_inflight(void *object, uint32_t slot, uint64_t inflight) {
    qm_log_t *lg = object;
    uint64_t offset = inflight & ~QM_INFLIGHT_VALID;
    qm_log_cursor_t cur = {0};
    if (qm_log_seek(lg, &cur, offset) != QM_OK || cur.next_offset != offset) return;
    uint8_t *seg;
    if (seg_get(lg, cur.base, &seg) != QM_OK) return;
    _Atomic uint64_t *wp = word_at(seg, cur.pos);
    uint64_t w = atomic_load_explicit(wp, memory_order_acquire);   /* [L7] */
    if (QM_REC_STATE(w) != QM_REC_WRITING || QM_REC_OWNER(w) != slot) return;
    if (atomic_compare_exchange_strong_explicit(
            /* [L23] */
            wp, &w, QM_REC_WORD(QM_REC_ABANDONED, 0, QM_REC_LEN(w)), memory_order_acq_rel,
            memory_order_relaxed))
        atomic_fetch_add_explicit(&lg->ctl->abandoned, 1, memory_order_relaxed);
}

void qm_log_close(qm_log_t *lg) {
    if (!lg) return;
    if (lg->ctl) {
        qm__registry_remove(&lg->mb);
        qm__member_leave(&lg->mb);
    }
    for (size_t i = 0; i < lg->nsegs; i++) seg_unmap(lg, lg->segs[i]);
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
    qm_object_spec_t spec = {QM_DATA_OFFSET, QM_MAGIC_LOG_CTL, ctl_format, cfg, &lg->fault,
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
        rc = recover(lg);
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
        rc = active_segment(lg, atomic_load_explicit(&lg->ctl->append.pos, memory_order_acquire),
                            &base, &seg, false);
        if (rc != QM_EAGAIN || atomic_load_explicit(&lg->fault, memory_order_relaxed)) break;
        /* mid-roll: let the roller finish, or finish for it (it may have
         * died between publishing the segment and moving the append word,
         * while others keep the log open, so recover() did not run) */
        if (round % 1024 == 1023 && (rc = finish_roll(lg))) break;
        qm__cpu_relax();
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

/* ----- test entry: the record walks over an image in caller memory ---------------- */
static void image_read(qm_log_t *lg, uint64_t base, uint64_t flags, uint64_t *n, int *rc_out,
                       qm_log_cursor_t *cur) {
    *cur = (qm_log_cursor_t){.base = base, .pos = QM_SEGMENT_HEADER, .next_offset = base,
                             .flags = flags};
    qm_log_record_t rec;
    uint32_t blocked = 0;
    int rc;
    *n = 0;
    while ((rc = try_read(lg, cur, &rec, &blocked)) == QM_OK && *n < (UINT64_C(1) << 20)) {
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
    if (res->check) return res->check;   /* seg_load() maps nothing else */
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
    ctl_format(ctl, QM_DATA_OFFSET, &lg->cfg);
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
    int rc = seg_remember(lg, base, seg, idx);
    if (rc) goto out;
    seg_map_t *m = lg->segs[0];
    qm_log_cursor_t cur;
    image_read(lg, base, 0, &res->read_records, &res->read_rc, &cur);
    image_read(lg, base, QM_CURSOR_NO_CRC, &res->read_records_nocrc, &res->read_rc_nocrc, &cur);
    res->newest_ts = newest_in(lg, seg);
    /* qm_log_seek() within the segment: index entry, then walk */
    cur = (qm_log_cursor_t){.base = base, .pos = QM_SEGMENT_HEADER, .next_offset = base};
    if (seek_offset > base && m->idx) seek_entry(lg, &cur, m, idx_find_offset(lg, m, seek_offset));
    res->seek_rc = walk(lg, &cur, seek_offset, INT64_MAX);
    res->seek_next = cur.next_offset;
    cur = (qm_log_cursor_t){.base = base, .pos = QM_SEGMENT_HEADER, .next_offset = base};
    res->seek_time_rc = seek_time_in(lg, &cur, m, seek_ts);
    /* the lone opener's recovery, twice: the second must change nothing */
    res->recover_rc = recover(lg);
    uint8_t *copy = malloc(segment_bytes);
    if (copy) {
        memcpy(copy, seg, segment_bytes);
        uint64_t a = atomic_load_explicit(&lg->ctl->append.pos, memory_order_relaxed);
        res->recover2_rc = recover(lg);
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
        res->append_read_rc = try_read(lg, &cur, &rec, &blocked);
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
