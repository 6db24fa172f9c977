/*
 * os_linux.c - the operating-system seam: futexes, OFD locks, space
 * reservation, clocks.  Everything else in the core is portable C11; a
 * macOS port replaces this file (ulock / os_sync_wait_on_address,
 * F_OFD_SETLK equivalents via flock on per-slot files).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long futex(_Atomic uint32_t *word, int op, uint32_t val,
                  const struct timespec *ts, uint32_t val3) {
    return syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, val3);
}

/* An absolute deadline as a timespec, or NULL for QM_FOREVER. */
static struct timespec *deadline_ts(int64_t deadline_ns, struct timespec *ts) {
    if (deadline_ns == QM_FOREVER) return NULL;
    if (deadline_ns < 0) deadline_ns = 0;
    ts->tv_sec = (time_t)(deadline_ns / 1000000000);
    ts->tv_nsec = (long)(deadline_ns % 1000000000);
    return ts;
}

int qm__os_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns) {
    struct timespec ts, *tsp = deadline_ts(deadline_ns, &ts);
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline.  Never
     * FUTEX_PRIVATE_FLAG: the word is shared between processes. */
    if (futex(word, FUTEX_WAIT_BITSET, expected, tsp, FUTEX_BITSET_MATCH_ANY) == 0)
        return QM_OK;
    switch (errno) {
    case EAGAIN: return QM_OK;          /* the word changed before we slept */
    /* the word's page is gone (file truncated under the mapping): the
     * caller's next access faults, and fault.c turns that into QM_ECORRUPT */
    case EFAULT: return QM_OK;
    case ETIMEDOUT: return QM_ETIMEDOUT;
    case EINTR: return QM_EINTR;
    default: return -errno;
    }
}

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449   /* same number on every architecture (5.16+) */
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
#endif

struct qm_futex_waitv {   /* the kernel's struct futex_waitv */
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

int qm__os_futex_waitv(_Atomic uint32_t *const *words, const uint32_t *expected, size_t n,
                       int64_t deadline_ns) {
    struct qm_futex_waitv w[128];
    if (n == 0 || n > 128) return QM_EINVAL;
    for (size_t i = 0; i < n; i++) {
        w[i].val = expected[i];
        w[i].uaddr = (uint64_t)(uintptr_t)words[i];
        w[i].flags = FUTEX_32;   /* shared: never FUTEX_PRIVATE_FLAG */
        w[i].reserved = 0;
    }
    struct timespec ts, *tsp = deadline_ts(deadline_ns, &ts);
    long rc = syscall(SYS_futex_waitv, w, (unsigned)n, 0u, tsp, CLOCK_MONOTONIC);
    if (rc >= 0) return QM_OK;
    switch (errno) {
    case EAGAIN: return QM_OK;
    case EFAULT: return QM_OK;   /* as in qm__os_futex_wait */
    case ETIMEDOUT: return QM_ETIMEDOUT;
    case EINTR: return QM_EINTR;
    case ENOSYS: return -ENOSYS;
    default: return -errno;
    }
}

/* Async-signal-safe (raw syscalls, no libc state, no sanitizer
 * interceptors): for fault.c's SIGBUS handler. */
int qm__os_map_zero(void *addr, size_t len, int prot) {
    long p = syscall(SYS_mmap, addr, len, prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0L);
    return p == (long)(uintptr_t)addr ? 0 : -1;
}

long qm__os_tid(void) { return syscall(SYS_gettid); }

int qm__os_datasync(int fd) {
    int rc;
    do {
        rc = fdatasync(fd);
    } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : 0;
}

void qm__os_futex_wake_all(_Atomic uint32_t *word) {
    futex(word, FUTEX_WAKE, INT_MAX, NULL, 0);
}

static int ofd_lock(int fd, int cmd, short type, int64_t offset, struct flock *out) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);          /* l_pid must be 0 for OFD locks */
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)offset;
    fl.l_len = 1;
    int rc;
    do {
        rc = fcntl(fd, cmd, &fl);
    } while (rc < 0 && errno == EINTR);
    if (out) *out = fl;
    return rc < 0 ? -errno : 0;
}

int qm__os_lock_byte(int fd, int64_t offset) {
    int rc = ofd_lock(fd, F_OFD_SETLK, F_WRLCK, offset, NULL);
    if (rc == -EAGAIN || rc == -EACCES) return QM_EAGAIN;
    return rc;
}

int qm__os_lock_byte_shared(int fd, int64_t offset) {
    int rc = ofd_lock(fd, F_OFD_SETLK, F_RDLCK, offset, NULL);
    if (rc == -EAGAIN || rc == -EACCES) return QM_EAGAIN;
    return rc;
}

void qm__os_unlock_byte(int fd, int64_t offset) {
    (void)ofd_lock(fd, F_OFD_SETLK, F_UNLCK, offset, NULL);
}

int qm__os_byte_locked(int fd, int64_t offset) {
    struct flock fl;
    int rc = ofd_lock(fd, F_OFD_GETLK, F_WRLCK, offset, &fl);
    if (rc < 0) return rc;
    return fl.l_type != F_UNLCK;
}

int qm__os_reserve(int fd, uint64_t size) { return qm__os_reserve_range(fd, 0, size); }

int qm__os_reserve_range(int fd, uint64_t offset, uint64_t len) {
    int rc;
    do {
        rc = posix_fallocate(fd, (off_t)offset, (off_t)len);   /* returns the error */
    } while (rc == EINTR);
    return -rc;
}

int qm_path_in_ram(const char *path) {
    struct statfs st;
    int rc;
    do {
        rc = statfs(path, &st);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) return -errno;
    return st.f_type == TMPFS_MAGIC || st.f_type == RAMFS_MAGIC;
}

int qm__os_memfd(const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int qm__os_reopen(int fd) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int nfd = open(path, O_RDWR | O_CLOEXEC);
    return nfd < 0 ? -errno : nfd;
}

int64_t qm__os_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t qm__os_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The boot id as two words, or 0s if it cannot be read. */
void qm__os_boot_id(uint64_t id[2]) {
    id[0] = id[1] = 0;
    char buf[64];
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    int k = 0;
    for (ssize_t i = 0; i < n && k < 32; i++) {
        char ch = buf[i];
        int v = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (v < 0) continue;
        id[k / 16] = id[k / 16] << 4 | (uint64_t)v;
        k++;
    }
}
