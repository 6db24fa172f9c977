/*
 * region.c - named shared objects: creating, opening and mapping the file
 * behind a ring or a partition log.  With ring_object.c and log_segment.c, the only
 * code that opens or maps files.
 *
 * Creation: openat(O_CREAT|O_EXCL|O_NOFOLLOW) 0600 (fchmod too, whatever
 * the umask), the creation lock (OFD byte QM_LOCK_BASE+0) held throughout,
 * posix_fallocate of the whole size, the object formatted, its 64-bit magic
 * (first word of the file) release-stored last [O1].  Opening:
 * O_NOFOLLOW, fstat (regular file, our uid, no group/other bits, one link),
 * acquire-load of the magic [O2]: 0 means "being created" - we wait while
 * the creation lock is held and re-create in place if the creator died.
 * The caller then validates every header field before use.
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

#define QM_CREATE_WAIT_NS (2 * INT64_C(1000000000))

int qm_name_check(const char *name) {
    if (!name) return qm__fail(QM_EINVAL, "name is NULL");
    size_t n = strlen(name);
    if (n == 0 || n > 128) return qm__fail(QM_EINVAL, "name must be 1..128 characters");
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return qm__fail(QM_EINVAL, "name may only contain A-Z a-z 0-9 . _ - and must "
                                       "start with a letter or digit");
    }
    return QM_OK;
}

/* Open folder `path` (relative to `at`, or AT_FDCWD), first making it
 * 0700 unless `mode` is QM_OPEN_ONLY.  Symlinks are not followed and the
 * folder must belong to us with no group/other bits: QM_EPERM otherwise,
 * QM_ENOTFOUND if it does not exist. */
int qm__dir_open(int at, const char *path, qm_open_mode_t mode, int *out) {
    if (mode != QM_OPEN_ONLY && mkdirat(at, path, 0700) < 0 && errno != EEXIST) return -errno;
    int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? QM_ENOTFOUND
               : errno == ELOOP || errno == ENOTDIR
                   ? qm__fail(QM_EPERM, "not a folder (or a symlink): %s", path)
                   : -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 077)) {
        close(fd);
        return qm__fail(QM_EPERM, "folder %s is not private to this user", path);
    }
    *out = fd;
    return QM_OK;
}

/* FNV-1a over 64-bit words: the mix of every layout fingerprint. */
uint64_t qm__fingerprint_mix(const uint64_t *parts, size_t n) {
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        h ^= parts[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

uint64_t qm__layout_fingerprint(void) {
    /* Every size and offset a peer relies on, mixed (FNV-1a over words).
     * Builds that disagree on any of them refuse each other's objects. */
    const uint64_t parts[] = {
        sizeof(qm_header_t), sizeof(qm_ring_ctl_t), sizeof(qm_member_t),
        offsetof(qm_ring_ctl_t, tail), offsetof(qm_ring_ctl_t, read),
        offsetof(qm_ring_ctl_t, head), offsetof(qm_ring_ctl_t, data_wake),
        offsetof(qm_ring_ctl_t, space_wake), offsetof(qm_ring_ctl_t, members_hwm),
        offsetof(qm_ring_ctl_t, abandoned), offsetof(qm_ring_ctl_t, reclaimed),
        offsetof(qm_member_t, inflight), offsetof(qm_member_t, put_count),
        offsetof(qm_member_t, reading),
        QM_HOT_LINE, QM_MEMBER_SLOTS, QM_REC_GRANULE, QM_REC_HEADER, QM_FREE_MAGIC,
        QM_CODE_MANTISSA_BITS, (uint64_t)QM_LOCK_BASE,
        sizeof(qm_log_ctl_t), offsetof(qm_log_ctl_t, append), offsetof(qm_log_ctl_t, active_base),
        offsetof(qm_log_ctl_t, data_wake), offsetof(qm_log_ctl_t, members_hwm),
        offsetof(qm_log_ctl_t, retention_ns), offsetof(qm_log_ctl_t, sync_wake),
        offsetof(qm_log_ctl_t, start_offset), offsetof(qm_log_ctl_t, tail_cuts), (uint64_t)QM_GATE_LOCK, sizeof(qm_index_entry_t), QM_INDEX_INTERVAL,
        sizeof(qm_segment_header_t), offsetof(qm_segment_header_t, base_offset),
        sizeof(qm_record_header_t), offsetof(qm_record_header_t, crc),
        offsetof(qm_record_header_t, value_len),
    };
    return qm__fingerprint_mix(parts, sizeof parts / sizeof parts[0]);
}

int qm__map(int fd, uint64_t size, bool writable, _Atomic uint64_t *fault, uint64_t tag,
            uint8_t **out) {
    return qm__map_flags(fd, size, writable, 0, fault, tag, out);
}

/* Every mapping of a file is registered with fault.c, so that the file
 * being truncated under it is an error of the handle (`fault` set to `tag`)
 * instead of a SIGBUS that kills the process.
 *
 * The mapping is made through an open file description of its own, never
 * through `fd`'s: a mapping keeps its description alive, and fork() copies
 * mappings into the child.  Were it `fd`'s, the liveness locks held on that
 * description (liveness.c) would outlive a member that died while a child
 * it had forked lived on, and its in-flight records would never come back.
 * (pthread_atfork gives the child's copy of `fd` a description of its own;
 * this covers the mapping.)  Without /proc, it falls back to `fd`. */
int qm__map_flags(int fd, uint64_t size, bool writable, int extra_flags, _Atomic uint64_t *fault,
                  uint64_t tag, uint8_t **out) {
    int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
    int own = qm__os_reopen(fd);
    void *p = mmap(NULL, (size_t)size, prot, MAP_SHARED | extra_flags, own >= 0 ? own : fd, 0);
    int err = errno;
    if (own >= 0) close(own);
    if (p == MAP_FAILED) return -err;
    int rc = qm__fault_register(p, (size_t)size, prot, fault, tag);
    if (rc) {
        munmap(p, (size_t)size);
        return rc;
    }
    *out = p;
    return QM_OK;
}

void qm__unmap(void *p, uint64_t size) {
    if (!p) return;
    qm__fault_unregister(p);   /* before the range can be reused by another mapping */
    munmap(p, (size_t)size);
}

int qm__check_file(int fd, struct stat *st) {
    if (fstat(fd, st) < 0) return -errno;
    if (!S_ISREG(st->st_mode)) return qm__fail(QM_EPERM, "not a regular file");
    if (st->st_uid != geteuid())
        return qm__fail(QM_EPERM, "owned by uid %u, not %u", (unsigned)st->st_uid,
                        (unsigned)geteuid());
    if (st->st_mode & 077)
        return qm__fail(QM_EPERM, "mode %03o is open to group or others",
                        (unsigned)(st->st_mode & 0777));
    if (st->st_nlink > 1) return qm__fail(QM_EPERM, "file has %lu links",
                                          (unsigned long)st->st_nlink);
    return QM_OK;
}

/* Format the file behind fd (creation lock held by the caller).  The file
 * is never shrunk below a page: an opener may have it mapped to peek at the
 * magic, and a shrink under a mapping is SIGBUS for it. */
static int create_in(int fd, const qm_object_spec_t *spec, uint8_t **base_out,
                     uint64_t *len_out) {
    struct stat st;
    if (fstat(fd, &st) < 0) return -errno;
    if ((uint64_t)st.st_size > spec->size && ftruncate(fd, (off_t)spec->size) < 0) return -errno;
    int rc = qm__os_reserve(fd, spec->size);
    if (rc) return qm__fail(rc, "cannot reserve %llu bytes", (unsigned long long)spec->size);
    uint8_t *base = NULL;
    rc = qm__map(fd, spec->size, true, spec->fault, spec->fault_tag, &base);
    if (rc) return rc;
    spec->format(base, spec->size, spec->arg);
    QM_KILLPOINT("create.before_publish");
    /* [O1] release: every byte formatted before the magic; pairs with [O2] */
    atomic_store_explicit((_Atomic uint64_t *)base, spec->magic, memory_order_release);
    *base_out = base;
    *len_out = spec->size;
    return QM_OK;
}

static uint64_t published_magic(const uint8_t *base) {
    /* [O2] acquire: pairs with [O1]; the header behind it is complete. */
    return atomic_load_explicit((_Atomic uint64_t *)base, memory_order_acquire);
}

static int open_existing(int fd, const qm_object_spec_t *spec, uint8_t **base_out,
                         uint64_t *len_out) {
    int64_t give_up = qm__os_monotonic_ns() + QM_CREATE_WAIT_NS;
    for (;;) {
        struct stat st;
        int rc = qm__check_file(fd, &st);
        if (rc) return rc;
        uint64_t size = (uint64_t)st.st_size;
        if (size >= QM_HEADER_BYTES) {
            uint8_t *base = NULL;
            rc = qm__map(fd, size, true, spec->fault, spec->fault_tag, &base);
            if (rc) return rc;
            if (published_magic(base) != 0) {
                *base_out = base;
                *len_out = size;
                return QM_OK;   /* the caller validates the header */
            }
            qm__unmap(base, size);
        }
        /* Not ready: is the creator still at work? */
        rc = qm__os_lock_byte(fd, QM_LOCK_BASE);
        if (rc == QM_OK) {
            /* The creator died before publishing: re-create in place.  The
             * magic is re-checked under the lock (a creator may have
             * finished between our look and our lock). */
            uint8_t *base = NULL;
            if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= QM_HEADER_BYTES &&
                qm__map(fd, (uint64_t)st.st_size, false, NULL, 0, &base) == QM_OK) {
                uint64_t m = published_magic(base);   /* 0 if truncated meanwhile */
                qm__unmap(base, (uint64_t)st.st_size);
                if (m != 0) {
                    qm__os_unlock_byte(fd, QM_LOCK_BASE);
                    continue;
                }
            }
            rc = create_in(fd, spec, base_out, len_out);
            qm__os_unlock_byte(fd, QM_LOCK_BASE);
            return rc;
        }
        if (rc != QM_EAGAIN) return rc;
        if (qm__os_monotonic_ns() > give_up)
            return qm__fail(QM_ENOTREADY, "creator still initialising after 2 s");
        usleep(1000);
    }
}

static int refuse_link(void) { return qm__fail(QM_EPERM, "refusing to follow a symlink"); }

int qm__object_open(int dirfd, const char *name, qm_open_mode_t mode,
                    const qm_object_spec_t *spec, qm_object_t *out) {
    out->fd = -1;
    out->base = NULL;
    out->len = 0;
    if (mode != QM_OPEN_OR_CREATE && mode != QM_CREATE_ONLY && mode != QM_OPEN_ONLY)
        return qm__fail(QM_EINVAL, "bad open mode");
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd, rc;
        if (mode != QM_OPEN_ONLY) {
            fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd >= 0) {
                QM_KILLPOINT("create.after_open");
                /* Between our O_EXCL and our lock an opener may have taken
                 * the file for the leftover of a dead creator and begun to
                 * create it itself: then it is that opener's, and we open
                 * it like anyone else. */
                rc = fchmod(fd, 0600) < 0 ? -errno : qm__os_lock_byte(fd, QM_LOCK_BASE);
                if (rc == QM_OK) {
                    struct stat st;
                    uint8_t *peek = NULL;
                    bool published = false;
                    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= QM_HEADER_BYTES &&
                        qm__map(fd, (uint64_t)st.st_size, false, NULL, 0, &peek) == QM_OK) {
                        published = published_magic(peek) != 0;
                        qm__unmap(peek, (uint64_t)st.st_size);
                    }
                    if (!published) rc = create_in(fd, spec, &out->base, &out->len);
                    qm__os_unlock_byte(fd, QM_LOCK_BASE);
                    if (!rc && published) rc = open_existing(fd, spec, &out->base, &out->len);
                    else if (!rc) out->created = true;
                    if (rc && !published)
                        unlinkat(dirfd, name, 0);   /* nothing half-created is left behind */
                } else if (rc == QM_EAGAIN) {
                    rc = open_existing(fd, spec, &out->base, &out->len);
                }
                if (rc) {
                    close(fd);
                    return rc;
                }
                out->fd = fd;
                return QM_OK;
            }
            if (errno == ELOOP) return refuse_link();
            if (errno != EEXIST) return -errno;
            if (mode == QM_CREATE_ONLY) return QM_EEXIST;
        }
        fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            if (errno == ELOOP) return refuse_link();
            if (errno != ENOENT) return -errno;
            if (mode == QM_OPEN_ONLY) return QM_ENOTFOUND;
            continue;   /* unlinked between our create and our open: retry */
        }
        rc = open_existing(fd, spec, &out->base, &out->len);
        if (rc) {
            close(fd);
            return rc;
        }
        out->fd = fd;
        out->created = false;
        return QM_OK;
    }
    return qm__fail(QM_ENOTFOUND, "object keeps disappearing while being opened");
}

int qm__object_create_fd(int fd, const qm_object_spec_t *spec, qm_object_t *out) {
    out->fd = -1;
    out->base = NULL;
    out->len = 0;
    if (fchmod(fd, 0600) < 0) return -errno;   /* a memfd starts as 0777 */
    int rc = create_in(fd, spec, &out->base, &out->len);
    if (rc) return rc;
    out->fd = fd;
    out->created = true;
    return QM_OK;
}

void qm__object_close(qm_object_t *obj) {
    qm__unmap(obj->base, obj->len);
    if (obj->fd >= 0) close(obj->fd);
    obj->base = NULL;
    obj->fd = -1;
}
