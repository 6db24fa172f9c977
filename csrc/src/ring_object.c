/*
 * ring_object.c - the ring as a named object: its path, header format and
 * validation, and opening, duplicating and closing ring handles.  The
 * generic create/open/publish logic is region.c; the algorithm is ring.c.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define QM_MIN_CAPACITY_LOG2 12u   /* 4 KiB */
#define QM_MAX_CAPACITY_LOG2 40u   /* 1 TiB */

/* ----- names ------------------------------------------------------------------ */
/* $PYQMEM_DIR (the folder of every queue and topic), else the deprecated
 * $PYQMEM_SHM_DIR (the Python layer warns about it), else /dev/shm. */
static const char *shm_dir(void) {
    const char *d = getenv("PYQMEM_DIR");
    if (d && d[0]) return d;
    d = getenv("PYQMEM_SHM_DIR");
    return (d && d[0]) ? d : "/dev/shm";
}

int qm_ring_path(const char *name, char *buf, size_t buflen) {
    int rc = qm_name_check(name);
    if (rc) return rc;
    int n = snprintf(buf, buflen, "%s/pyqmem.%u.q.%s", shm_dir(), (unsigned)geteuid(), name);
    if (n < 0 || (size_t)n >= buflen) return qm__fail(QM_EINVAL, "path too long");
    return n;
}

/* ----- header ---------------------------------------------------------------- */
int qm__capacity_round(uint64_t capacity, unsigned *log2_out) {
    if (capacity == 0 || capacity > (UINT64_C(1) << QM_MAX_CAPACITY_LOG2))
        return qm__fail(QM_EINVAL, "capacity must be between 4096 and 2**40 bytes");
    unsigned l = QM_MIN_CAPACITY_LOG2;
    while ((UINT64_C(1) << l) < capacity) l++;
    *log2_out = l;
    return QM_OK;
}

uint64_t qm_ring_memory_size(uint64_t capacity) {
    unsigned l = 0;
    if (qm__capacity_round(capacity, &l)) return 0;
    return QM_DATA_OFFSET + (UINT64_C(1) << l);
}

int qm__ring_header_check(const void *image, uint64_t len, uint64_t file_size,
                          qm_geometry_t *out) {
    if (len < sizeof(qm_header_t)) return qm__fail(QM_ECORRUPT, "header truncated");
    qm_header_t h;
    memcpy(&h, image, sizeof h);   /* one read of every field: no double fetch */
    uint64_t magic = (uint64_t)atomic_load_explicit(&h.magic, memory_order_relaxed);
    if (magic == 0) return QM_ENOTREADY;
    if (magic == __builtin_bswap64(QM_MAGIC_RING))
        return qm__fail(QM_EINCOMPAT, "ring written with the other byte order");
    if (magic != QM_MAGIC_RING) return qm__fail(QM_ECORRUPT, "bad magic %#llx",
                                                (unsigned long long)magic);
    if (h.format_major != QM_FORMAT_MAJOR)
        return qm__fail(QM_EINCOMPAT, "ring format %u.%u, this build reads %u.x",
                        h.format_major, h.format_minor, QM_FORMAT_MAJOR);
    if (h.layout_fingerprint != qm__layout_fingerprint())
        return qm__fail(QM_EINCOMPAT, "layout fingerprint %#llx, this build has %#llx",
                        (unsigned long long)h.layout_fingerprint,
                        (unsigned long long)qm__layout_fingerprint());
    if (h.feature_flags != 0)
        return qm__fail(QM_EINCOMPAT, "unknown feature flags %#llx",
                        (unsigned long long)h.feature_flags);
    if (h.object_kind != QM_KIND_RING)
        return qm__fail(QM_EINCOMPAT, "object kind %u is not a ring", h.object_kind);
    if (h.header_bytes != QM_HEADER_BYTES || h.members_offset != QM_MEMBERS_OFFSET ||
        h.member_slots != QM_MEMBER_SLOTS || h.member_bytes != QM_MEMBER_BYTES ||
        h.data_offset != QM_DATA_OFFSET || h.granule_log2 != QM_REC_GRANULE_LOG2)
        return qm__fail(QM_ECORRUPT, "header offsets do not match the format");
    if (h.capacity_log2 < QM_MIN_CAPACITY_LOG2 || h.capacity_log2 > QM_MAX_CAPACITY_LOG2 ||
        h.data_bytes != (UINT64_C(1) << h.capacity_log2))
        return qm__fail(QM_ECORRUPT, "bad capacity");
    if (h.total_bytes != QM_DATA_OFFSET + h.data_bytes || h.total_bytes != file_size)
        return qm__fail(QM_ECORRUPT, "object size %llu does not match header size %llu",
                        (unsigned long long)file_size, (unsigned long long)h.total_bytes);
    if (h.max_message != h.data_bytes / 4) return qm__fail(QM_ECORRUPT, "bad max_message");
    for (size_t i = 0; i < sizeof h.reserved / sizeof h.reserved[0]; i++)
        if (h.reserved[i]) return qm__fail(QM_EINCOMPAT, "reserved header words in use");
    out->total_bytes = h.total_bytes;
    out->capacity = h.data_bytes;
    out->capacity_log2 = h.capacity_log2;
    out->max_message = h.max_message;
    out->maxsize = h.maxsize;
    return QM_OK;
}

int qm__ring_format(uint8_t *base, uint64_t len, unsigned cap_log2, uint64_t maxsize,
                    bool publish) {
    uint64_t cap = UINT64_C(1) << cap_log2;
    if (len < QM_DATA_OFFSET + cap) return qm__fail(QM_EINVAL, "memory too small");
    qm_ring_ctl_t *ctl = (qm_ring_ctl_t *)base;
    atomic_store_explicit(&ctl->header.magic, 0, memory_order_relaxed);
    memset((uint8_t *)ctl + sizeof(ctl->header.magic), 0,
           QM_DATA_OFFSET - sizeof(ctl->header.magic));
    qm_header_t *h = &ctl->header;
    h->format_major = QM_FORMAT_MAJOR;
    h->format_minor = QM_RING_FORMAT_MINOR;
    h->header_bytes = QM_HEADER_BYTES;
    h->layout_fingerprint = qm__layout_fingerprint();
    h->object_kind = QM_KIND_RING;
    h->creator_pid = (uint32_t)getpid();
    h->created_unix_ns = (uint64_t)qm__os_realtime_ns();
    h->total_bytes = QM_DATA_OFFSET + cap;
    h->members_offset = QM_MEMBERS_OFFSET;
    h->member_slots = QM_MEMBER_SLOTS;
    h->member_bytes = QM_MEMBER_BYTES;
    h->data_offset = QM_DATA_OFFSET;
    h->data_bytes = cap;
    h->granule_log2 = QM_REC_GRANULE_LOG2;
    h->capacity_log2 = cap_log2;
    h->max_message = cap / 4;
    h->maxsize = maxsize;
    /* Every granule of free space holds FREE(lap 0); this also touches
     * every page now, so first use does not fault. */
    uint8_t *data = base + QM_DATA_OFFSET;
    for (uint64_t off = 0; off < cap; off += QM_REC_GRANULE)
        atomic_store_explicit((_Atomic uint64_t *)(data + off), QM_WORD_FREE(0),
                              memory_order_relaxed);
    if (publish)   /* [O1] release: everything above before the magic; pairs with [O2] */
        atomic_store_explicit(&h->magic, QM_MAGIC_RING, memory_order_release);
    return QM_OK;
}

/* ----- handles ---------------------------------------------------------------- */
static void settle_inflight(void *ring, uint32_t slot, uint64_t inflight) {
    qm__ring_resolve_inflight(ring, slot, inflight);
}

static qm_ring_t *handle_new(void) {
    qm_ring_t *r = calloc(1, sizeof *r);
    if (r) {
        r->mb.fd = -1;
        r->stall_ns = QM_RING_STALL_DEFAULT_NS;
        r->mb.settle = settle_inflight;
        r->mb.object = r;
    }
    return r;
}

static void handle_free(qm_ring_t *r) {
    if (!r) return;
    if (r->owns_mapping) qm__unmap(r->base, r->map_len);
    if (r->mb.fd >= 0) close(r->mb.fd);
    free(r);
}

int qm__ring_bind(qm_ring_t *ring, uint8_t *base, uint64_t len) {
    qm_geometry_t g;
    /* [O2] acquire: pairs with [O1]; only then are the fields meaningful. */
    uint64_t magic = atomic_load_explicit(&((qm_header_t *)base)->magic, memory_order_acquire);
    if (magic == 0) return QM_ENOTREADY;
    int rc = qm__ring_header_check(base, len, len, &g);
    if (rc) return rc;
    ring->base = base;
    ring->map_len = len;
    ring->ctl = (qm_ring_ctl_t *)base;
    ring->mb.members = (qm_member_t *)(base + QM_MEMBERS_OFFSET);
    ring->mb.hwm = &ring->ctl->members_hwm;
    ring->data = base + QM_DATA_OFFSET;
    ring->cap = g.capacity;
    ring->cap_log2 = g.capacity_log2;
    ring->max_message = g.max_message;
    ring->maxsize = g.maxsize;
    uint64_t granules = (QM_REC_HEADER + g.max_message + QM_REC_GRANULE - 1) >> QM_REC_GRANULE_LOG2;
    /* the extent code may round up by < 2^-13; allow for it */
    ring->max_extent = (granules + (granules >> 12) + 2) << QM_REC_GRANULE_LOG2;
    if (ring->max_extent > ring->cap) ring->max_extent = ring->cap;
    return QM_OK;
}

/* Finish a new handle: validate and bind the mapping, register it for
 * fork handling, give it a member slot; on failure free it. */
static int handle_finish(qm_ring_t *r, uint8_t *base, uint64_t len, qm_ring_t **out) {
    int rc = qm__ring_bind(r, base, len);
    if (!rc) {
        qm__registry_add(&r->mb);
        rc = qm__member_join(&r->mb);
        /* the file was truncated while we read or joined it */
        if (!rc && (rc = qm__fault_check(&r->fault, r->path, QM_OK))) qm__member_leave(&r->mb);
        if (rc) qm__registry_remove(&r->mb);
    }
    rc = qm__fault_check(&r->fault, r->path, rc);
    if (rc) {
        handle_free(r);
        return rc;
    }
    *out = r;
    return QM_OK;
}

/* Finish a new handle on the object file `obj` it opened or created. */
static int handle_finish_object(qm_ring_t *r, const qm_object_t *obj, qm_ring_t **out) {
    r->mb.fd = obj->fd;
    r->base = obj->base;
    r->map_len = obj->len;
    r->owns_mapping = true;
    return handle_finish(r, obj->base, obj->len, out);
}

typedef struct ring_params {
    unsigned cap_log2;
    uint64_t maxsize;
} ring_params_t;

static void ring_format_cb(uint8_t *base, uint64_t len, const void *arg) {
    const ring_params_t *p = arg;
    qm__ring_format(base, len, p->cap_log2, p->maxsize, false);
}

int qm_ring_open(const char *name, qm_open_mode_t mode, uint64_t capacity, uint64_t maxsize,
                 qm_ring_t **out) {
    *out = NULL;
    unsigned cap_log2 = 0;
    if (mode == QM_OPEN_ONLY && capacity == 0)
        capacity = UINT64_C(16) << 20;   /* only used to re-create a half-made ring */
    int rc = qm__capacity_round(capacity, &cap_log2);
    if (rc) return rc;
    qm_ring_t *r = handle_new();
    if (!r) return -ENOMEM;
    rc = qm_ring_path(name, r->path, sizeof r->path);
    if (rc < 0) goto fail;
    ring_params_t params = {cap_log2, maxsize};
    qm_object_spec_t spec = {QM_DATA_OFFSET + (UINT64_C(1) << cap_log2), QM_MAGIC_RING,
                             ring_format_cb, &params, &r->fault, QM_FAULT_FILE};
    qm_object_t obj;
    rc = qm__object_open(AT_FDCWD, r->path, mode, &spec, &obj);
    if (rc) goto fail;
    return handle_finish_object(r, &obj, out);
fail:
    handle_free(r);
    return rc;
}

#define QM_ANONYMOUS_PATH "(anonymous queue)"

int qm_ring_create_anonymous(uint64_t capacity, uint64_t maxsize, qm_ring_t **out) {
    *out = NULL;
    unsigned cap_log2 = 0;
    int rc = qm__capacity_round(capacity, &cap_log2);
    if (rc) return rc;
    qm_ring_t *r = handle_new();
    if (!r) return -ENOMEM;
    snprintf(r->path, sizeof r->path, "%s", QM_ANONYMOUS_PATH);
    int fd = qm__os_memfd("pyqmem-queue");
    if (fd < 0) {
        rc = qm__fail(fd, "memfd_create");
        goto fail;
    }
    ring_params_t params = {cap_log2, maxsize};
    qm_object_spec_t spec = {QM_DATA_OFFSET + (UINT64_C(1) << cap_log2), QM_MAGIC_RING,
                             ring_format_cb, &params, &r->fault, QM_FAULT_FILE};
    qm_object_t obj;
    rc = qm__object_create_fd(fd, &spec, &obj);
    if (rc) {
        close(fd);
        goto fail;
    }
    return handle_finish_object(r, &obj, out);
fail:
    handle_free(r);
    return rc;
}

int qm_ring_open_fd(int fd, qm_ring_t **out) {
    *out = NULL;
    qm_ring_t *r = handle_new();
    if (!r) return -ENOMEM;
    snprintf(r->path, sizeof r->path, "%s", QM_ANONYMOUS_PATH);
    int rc;
    /* a description of our own: liveness locks are per open file description */
    r->mb.fd = qm__os_reopen(fd);
    if (r->mb.fd < 0) {
        rc = qm__fail(r->mb.fd, "cannot reopen descriptor %d", fd);
        r->mb.fd = -1;
        goto fail;
    }
    struct stat st;
    rc = qm__check_file(r->mb.fd, &st);
    if (rc) goto fail;
    if ((uint64_t)st.st_size < QM_DATA_OFFSET + (UINT64_C(1) << QM_MIN_CAPACITY_LOG2)) {
        rc = qm__fail(QM_ECORRUPT, "file of %llu bytes is no ring", (unsigned long long)st.st_size);
        goto fail;
    }
    uint8_t *base = NULL;
    rc = qm__map(r->mb.fd, (uint64_t)st.st_size, true, &r->fault, QM_FAULT_FILE, &base);
    if (rc) goto fail;
    r->base = base;
    r->map_len = (uint64_t)st.st_size;
    r->owns_mapping = true;
    return handle_finish(r, base, (uint64_t)st.st_size, out);
fail:
    handle_free(r);
    return rc;
}

int qm_ring_fd(const qm_ring_t *ring) { return ring && ring->mb.fd >= 0 ? ring->mb.fd : QM_ECLOSED; }

int qm_ring_dup(qm_ring_t *ring, qm_ring_t **out) {
    *out = NULL;
    if (!ring) return QM_ECLOSED;
    int rc = qm__fault_check(&ring->fault, ring->path, QM_OK);
    if (rc) return rc;
    qm_ring_t *r = handle_new();
    if (!r) return -ENOMEM;
    memcpy(r->path, ring->path, sizeof r->path);
    r->stall_ns = ring->stall_ns;
    if (ring->mb.fd >= 0) {
        r->mb.fd = qm__os_reopen(ring->mb.fd);
        if (r->mb.fd < 0) {
            rc = r->mb.fd;
            r->mb.fd = -1;
            goto fail;
        }
        uint8_t *base = NULL;
        rc = qm__map(r->mb.fd, ring->map_len, true, &r->fault, QM_FAULT_FILE, &base);
        if (rc) goto fail;
        r->owns_mapping = true;
        r->base = base;   /* freed by handle_free on failure */
        return handle_finish(r, base, ring->map_len, out);
    }
    return handle_finish(r, ring->base, ring->map_len, out);
fail:
    handle_free(r);
    return rc;
}

int qm_ring_format_memory(void *mem, uint64_t len, uint64_t capacity, uint64_t maxsize) {
    unsigned l = 0;
    int rc = qm__capacity_round(capacity, &l);
    if (rc) return rc;
    if (!mem || ((uintptr_t)mem & 4095)) return qm__fail(QM_EINVAL, "memory not page aligned");
    return qm__ring_format(mem, len, l, maxsize, true);
}

int qm_ring_attach_memory(void *mem, uint64_t len, qm_ring_t **out) {
    *out = NULL;
    if (!mem || ((uintptr_t)mem & 4095)) return qm__fail(QM_EINVAL, "memory not page aligned");
    qm_ring_t *r = handle_new();
    if (!r) return -ENOMEM;
    return handle_finish(r, mem, len, out);
}

void qm_ring_close(qm_ring_t *ring) {
    if (!ring) return;
    qm__ring_release_held(ring);   /* a held record is dropped, not stranded */
    qm__registry_remove(&ring->mb);
    qm__member_leave(&ring->mb);
    handle_free(ring);
}

int qm_ring_unlink(const char *name) {
    char path[QM_PATH_MAX];
    int rc = qm_ring_path(name, path, sizeof path);
    if (rc < 0) return rc;
    if (unlink(path) < 0) return errno == ENOENT ? QM_ENOTFOUND : -errno;
    return QM_OK;
}

int qm_ring_exists(const char *name) {
    char path[QM_PATH_MAX];
    int rc = qm_ring_path(name, path, sizeof path);
    if (rc < 0) return rc;
    struct stat st;
    return lstat(path, &st) == 0;
}
