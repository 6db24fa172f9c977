/*
 * log_segment.c - the partition log: segment files and their index: names, mappings, holds, creation, listing, retention.
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

void qm__log_seg_name(uint64_t base, char *buf, size_t n) {
    snprintf(buf, n, "%020" PRIu64 ".log", base);
}
static void idx_name(uint64_t base, char *buf, size_t n) {
    snprintf(buf, n, "%020" PRIu64 ".idx", base);
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

/* Bytes of the index that cover the first `seg_bytes` of its segment. */
static uint64_t idx_cover(const qm_log_t *lg, uint64_t seg_bytes) {
    uint64_t n = (seg_bytes + QM_INDEX_INTERVAL - 1) / QM_INDEX_INTERVAL * sizeof(qm_index_entry_t);
    n = (n + 4095) & ~UINT64_C(4095);
    return n < idx_bytes(lg) ? n : idx_bytes(lg);
}

/* Create the zeroed index of segment `base` (qm__log_roll lock held;
 * idempotent): full size, its space allocated for the segment's first
 * reservation (qm__log_seg_reserve allocates the rest in step). */
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
    if (!rc && (uint64_t)st.st_size != idx_bytes(lg) && ftruncate(fd, (off_t)idx_bytes(lg)) < 0)
        rc = -errno;
    if (!rc && (rc = qm__os_reserve(fd, idx_cover(lg, QM_SEGMENT_FIRST_RESERVE))))
        rc = qm__fail(rc, "cannot reserve a segment index");
    close(fd);
    return rc;
}

/* Record the committed record [pos, pos+len) at `offset` in the index. */
void qm__log_idx_note(qm_index_entry_t *idx, uint64_t base, uint64_t offset, uint64_t pos,
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
int64_t qm__log_idx_written_at_or_before(const qm_index_entry_t *idx, int64_t k, int64_t lo) {
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

int qm__log_seg_remember(qm_log_t *lg, uint64_t base, uint8_t *mem, qm_index_entry_t *idx) {
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

void qm__log_seg_unmap(qm_log_t *lg, seg_map_t *m) {
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
void qm__log_seg_trim(qm_log_t *lg) {
    uint64_t start = atomic_load_explicit(&lg->ctl->start_offset, memory_order_relaxed);
    size_t n = 0;
    for (size_t i = 0; i < lg->nsegs; i++) {
        seg_map_t *m = lg->segs[i];
        if (m->base < start && !seg_held(m))
            qm__log_seg_unmap(lg, m);
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
        qm__log_seg_unmap(lg, lg->segs[lru]);
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

seg_map_t *qm__log_seg_cached(qm_log_t *lg, uint64_t base) {
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

/* Map the allocated pages of `m` not mapped yet, as the appender will write
 * them all (best effort: faults work too).  Never past the reservation: in
 * tmpfs a page touched is a page of RAM. */
static void populate(qm_log_t *lg, seg_map_t *m) {
    uint64_t to = qm__seg_reserved(m->mem, lg->segment_bytes);
    if (to > m->populated_to) {
        (void)madvise(m->mem + m->populated_to, to - m->populated_to, MADV_POPULATE_WRITE);
        m->populated_to = to;
    }
}

int qm__log_seg_reserve(qm_log_t *lg, uint64_t base, uint8_t *seg, uint64_t want) {
    uint64_t have = qm__seg_reserved(seg, lg->segment_bytes);
    if (want <= have) return QM_OK;
    uint64_t to = have * 2;   /* doubling: a handful of calls per segment */
    while (to < want) to *= 2;
    if (to > lg->segment_bytes) to = lg->segment_bytes;
    char name[32];
    qm__log_seg_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return errno == ELOOP ? qm__fail(QM_EPERM, "refusing to follow a symlink: %s", name)
                                      : -errno;
    struct stat st;
    int rc = qm__check_file(fd, &st);
    if (!rc && (rc = qm__os_reserve_range(fd, have, to - have)))
        rc = qm__fail(rc, "cannot reserve %llu more bytes of segment %llu",
                      (unsigned long long)(to - have), (unsigned long long)base);
    close(fd);
    if (!rc) {
        idx_name(base, name, sizeof name);
        fd = openat(lg->dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {   /* no index (damaged or removed): seeks scan instead */
            if (qm__check_file(fd, &st) == QM_OK && (uint64_t)st.st_size == idx_bytes(lg))
                rc = qm__os_reserve(fd, idx_cover(lg, to));
            close(fd);
            if (rc) rc = qm__fail(rc, "cannot reserve a segment index");
        }
    }
    if (rc) return rc;
    _Atomic uint64_t *word = &((qm_segment_header_t *)seg)->reserved_to;
    uint64_t cur = atomic_load_explicit(word, memory_order_relaxed);
    /* [S3] release: the allocation before the word that says so; pairs with [S4] */
    while (cur != 0 && cur < to &&
           !atomic_compare_exchange_weak_explicit(word, &cur, to, memory_order_release,
                                                  memory_order_relaxed)) {
    }
    seg_map_t *m = qm__log_seg_cached(lg, base);
    if (m && m->populated_to) populate(lg, m);
    return QM_OK;
}

/* Map segment `base` (cached until qm__log_seg_trim drops it). QM_ENOTFOUND if the
 * file does not exist, QM_ENOTREADY while its creator is still writing it.
 * `for_append`: map every page now (MAP_POPULATE, or MADV_POPULATE_WRITE
 * for a mapping a reader made), as the appender will write them all; a
 * reader's faults map 16 pages at a time (fault-around), which costs less
 * than populating a segment it may read only part of, and an open that
 * only checks the active segment exists maps nothing (a 64 MiB populate
 * costs ~10 ms). */
int qm__log_seg_load(qm_log_t *lg, uint64_t base, uint8_t **out, bool for_append) {
    seg_map_t *m = qm__log_seg_cached(lg, base);
    if (m) {
        if (for_append) populate(lg, m);
        *out = m->mem;
        return QM_OK;
    }
    char name[32];
    qm__log_seg_name(base, name, sizeof name);
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
        rc = qm__map(fd, lg->segment_bytes, true, &lg->fault, QM_FAULT_SEGMENT | base, &mem);
    close(fd);
    if (rc) return rc;
    rc = qm__segment_check(mem, lg->segment_bytes, base, lg->segment_bytes);
    qm_index_entry_t *idx = rc ? NULL : idx_map(lg, base);
    if (!rc) rc = qm__log_seg_remember(lg, base, mem, idx);
    if (!rc && for_append) populate(lg, lg->segs[lg->nsegs - 1]);
    if (rc) {
        qm__unmap(mem, lg->segment_bytes);
        qm__unmap(idx, idx_bytes(lg));
        return rc;
    }
    *out = mem;
    return QM_OK;
}

int qm__log_seg_get(qm_log_t *lg, uint64_t base, uint8_t **out) {
    return qm__log_seg_load(lg, base, out, false);
}

/* Create segment `base` (qm__log_roll lock held).  Idempotent: a file left by a
 * roller that died is completed or validated; with QM_LOG_FSYNC it is
 * synced again, as its roller may have died (or failed to open it) before
 * syncing it. */
int qm__log_seg_create(qm_log_t *lg, uint64_t base, uint64_t generation) {
    char name[32];
    qm__log_seg_name(base, name, sizeof name);
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
        uint8_t *qm__log_peek;
        if (qm__map(fd, (uint64_t)st.st_size, false, NULL, 0, &qm__log_peek) == QM_OK) {
            uint64_t magic =   /* [S2] */
                atomic_load_explicit((_Atomic uint64_t *)qm__log_peek, memory_order_acquire);
            /* published by a roller that died before naming it active: then
             * it must be this very segment; anything else is damage, and
             * naming it active would break every later append and open */
            int check = magic ? qm__segment_check(qm__log_peek, (uint64_t)st.st_size, base,
                                                   lg->segment_bytes)
                              : QM_OK;
            /* ... and empty: nothing is appended before it is active */
            if (magic && !check &&
                atomic_load_explicit(word_at(qm__log_peek, QM_SEGMENT_HEADER), memory_order_relaxed))
                check = qm__fail(QM_ECORRUPT, "segment %llu holds records but was never the "
                                 "active segment", (unsigned long long)base);
            qm__unmap(qm__log_peek, (uint64_t)st.st_size);
            if (magic != 0) {
                rc = check ? check
                           : (lg->cfg.flags & QM_LOG_FSYNC) ? qm__log_sync_fd(lg, fd, true) : QM_OK;
                close(fd);
                return rc;
            }
        }
    }
    if (!rc) rc = idx_create(lg, base);   /* a published segment has its index */
    uint64_t first = QM_SEGMENT_FIRST_RESERVE < lg->segment_bytes ? QM_SEGMENT_FIRST_RESERVE
                                                                  : lg->segment_bytes;
    /* full size at once (a published segment is never shorter), its space
     * allocated only for the first stretch: an empty partition costs that,
     * and qm__log_seg_reserve allocates more, before any writer needs it */
    if (!rc && ftruncate(fd, (off_t)lg->segment_bytes) < 0) rc = -errno;
    if (!rc && (rc = qm__os_reserve(fd, first)))
        rc = qm__fail(rc, "cannot reserve %llu bytes of a segment", (unsigned long long)first);
    if (!rc) rc = qm__map(fd, lg->segment_bytes, true, &lg->fault, QM_FAULT_SEGMENT | base, &mem);
    if (rc) {
        close(fd);
        unlinkat(lg->dirfd, name, 0);
        return rc;
    }
    qm_segment_header_t *h = (qm_segment_header_t *)mem;
    h->format_major = QM_FORMAT_MAJOR;
    h->format_minor = QM_SEGMENT_FORMAT_MINOR;
    h->header_bytes = QM_SEGMENT_HEADER;
    atomic_store_explicit(&h->reserved_to, first, memory_order_relaxed);   /* published by [S1] */
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
    rc = (lg->cfg.flags & QM_LOG_FSYNC) ? qm__log_sync_fd(lg, fd, true) : QM_OK;
    close(fd);
    return rc;
}

/* Smallest segment base present (largest_below: the largest base <= below),
 * or QM_ENOTFOUND. */
int qm__log_list_base(qm_log_t *lg, bool largest_below, uint64_t below, uint64_t *out) {
    uint64_t *bases;
    size_t n;
    int rc = qm__log_list_all(lg, &bases, &n);
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

/* Every segment base on disk, ascending (caller frees). */
int qm__log_list_all(qm_log_t *lg, uint64_t **out, size_t *n) {
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
int64_t qm__log_newest_in(const qm_log_t *lg, const uint8_t *mem) {
    int64_t newest = INT64_MIN;
    for (uint64_t pos = QM_SEGMENT_HEADER; pos + END_ROOM <= lg->segment_bytes;) {
        /* [L7] */
        uint64_t w = atomic_load_explicit(word_at((uint8_t *)mem, pos), memory_order_acquire);
        uint32_t st8 = QM_REC_STATE(w);
        if (st8 == QM_REC_EMPTY || st8 == QM_REC_END || qm__log_bad_len(pos, QM_REC_LEN(w), lg->segment_bytes))
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
    qm__log_seg_name(base, name, sizeof name);
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
        newest = qm__log_newest_in(lg, mem);
    qm__unmap(mem, lg->segment_bytes);
    return newest;
}

int qm__log_retain(qm_log_t *lg, uint64_t *deleted) {
    if (!lg) return QM_ECLOSED;
    if (deleted) *deleted = 0;
    if (!lg->cfg.retention_bytes && !lg->cfg.retention_ns) return QM_OK;
    uint64_t *bases;
    size_t n;
    int rc = qm__log_list_all(lg, &bases, &n);
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
        qm__log_seg_name(bases[i], name, sizeof name);
        QM_KILLPOINT("log.retention_delete");
        if (unlinkat(lg->dirfd, name, 0) == 0 && deleted) (*deleted)++;
        idx_name(bases[i], name, sizeof name);
        unlinkat(lg->dirfd, name, 0);
        total -= lg->segment_bytes;
    }
    free(bases);
    return QM_OK;
}
