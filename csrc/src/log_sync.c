/*
 * log_sync.c - the partition log: durability (QM_LOG_FSYNC): fdatasync, group commit.
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
int qm__log_sync_fd(qm_log_t *lg, int fd, bool with_dir) {
    int rc = qm__os_datasync(fd);
    if (!rc && with_dir) rc = qm__os_datasync(lg->dirfd);
    return rc ? sync_broke(lg, rc) : QM_OK;
}

/* fsync mode: the control file names the active segment.  Synced when a
 * log gets its first segment and before a qm__log_roll lets anyone append to the
 * next one, so after power loss it never names a segment older than one
 * holding an acknowledged record (recovery rebuilds the append position
 * from the segment itself). */
int qm__log_sync_control(qm_log_t *lg) {
    if (!(lg->cfg.flags & QM_LOG_FSYNC)) return QM_OK;
    return qm__log_sync_fd(lg, lg->obj.fd, false);   /* like a failed segment sync: read-only */
}

int qm__log_sync_segment(qm_log_t *lg, uint64_t base) {
    char name[32];
    qm__log_seg_name(base, name, sizeof name);
    int fd = openat(lg->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)   /* not synced, nothing lost: this call fails, the next tries again */
        return errno == ENOENT ? QM_OK   /* deleted by retention */
                               : qm__fail(-errno, "cannot open segment %s to fdatasync it", name);
    int rc = qm__log_sync_fd(lg, fd, false);
    close(fd);
    return rc;
}

int qm__log_sync_failed(qm_log_t *lg) {
    /* [L18] acquire: pairs with [L17]; a failed sync is seen by every later append */
    int err = atomic_load_explicit(&lg->ctl->sync_error, memory_order_acquire);
    return err ? qm__fail(-EIO, "an earlier fdatasync failed (%s): partition is read-only",
                          qm_status_str(-err))
               : QM_OK;
}

/* Return once a fdatasync that started after our commit has finished (group
 * commit: one process syncs for everyone waiting; the others sleep). */
int qm__log_wait_durable(qm_log_t *lg, uint64_t base) {
    qm_log_ctl_t *c = lg->ctl;
    /* any sync numbered >= need starts after this load, so after our commit
     * ([L15] acquire: pairs with [L16]) */
    uint64_t need = atomic_load_explicit(&c->sync_started, memory_order_acquire) + 1;
    for (;;) {
        int rc = qm__log_sync_failed(lg);
        if (rc) return rc;
        /* [L19] acquire: pairs with [L8]; the sync we need finished */
        if (atomic_load_explicit(&c->sync_done, memory_order_acquire) >= need) break;
        rc = qm__os_lock_byte(lg->mb.fd, QM_LOG_SYNC_LOCK);
        if (rc == QM_OK) {
            if (atomic_load_explicit(&c->sync_done, memory_order_acquire) < need) {   /* [L19] */
                /* [L16] acq_rel: numbers this sync after every commit that
                 * read the old number */
                uint64_t n = atomic_fetch_add_explicit(&c->sync_started, 1, memory_order_acq_rel) + 1;
                /* [L20] acquire: a base no older than any commit this sync
                 * covers (older ones: sync_low_base below) */
                uint64_t active = atomic_load_explicit(&c->active_base, memory_order_acquire);
                uint64_t low = active, prev;
                rc = qm__log_sync_segment(lg, active);
                if (!rc && active > 0 && qm__log_list_base(lg, true, active - 1, &prev) == QM_OK) {
                    low = prev;
                    rc = qm__log_sync_segment(lg, prev);
                }
                if (!rc) {   /* a failed one is never retried into a false success */
                    atomic_store_explicit(&c->sync_low_base, low, memory_order_relaxed);
                    /* [L8] release: pairs with the acquire loads above */
                    atomic_store_explicit(&c->sync_done, n, memory_order_release);
                    atomic_fetch_add_explicit(&c->syncs, 1, memory_order_relaxed);
                }
            }
            qm__os_unlock_byte(lg->mb.fd, QM_LOG_SYNC_LOCK);
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
        int rc = qm__log_sync_segment(lg, base);
        if (rc) return rc;
    }
    atomic_fetch_add_explicit(&c->synced_appends, 1, memory_order_relaxed);
    return QM_OK;
}
