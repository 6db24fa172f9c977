/*
 * liveness.c - who is alive, without trusting PIDs.
 *
 * Each handle takes a slot k in the member table and holds an OFD write
 * lock on byte QM_LOCK_BASE + k of the object file.  The kernel drops the
 * lock when the process dies, however it dies, so "is k alive?" is one
 * F_OFD_GETLK.  A free slot is simply one whose lock can be taken; taking
 * over the slot of a dead member first resolves the record it left in
 * flight.  PIDs are stored for display only.
 *
 * fork(): the child inherits the parent's open file description, and with
 * it the parent's locks.  An atfork handler gives every handle in the child
 * a fresh open file description (so closing it in the child cannot drop
 * the parent's lock, and the parent's death is still seen) and makes the
 * handle re-join on its next call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <pthread.h>
#include <unistd.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static qm_membership_t *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&registry_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&registry_lock); }
static void atfork_child(void) {
    for (qm_membership_t *m = registry; m; m = m->reg_next) {
        if (m->fd >= 0) {
            int nfd = qm__os_reopen(m->fd);
            if (nfd >= 0) {
                dup2(nfd, m->fd);   /* keeps the number; the old description stays the parent's */
                close(nfd);
            } else {
                /* Without a description of our own we would share the
                 * parent's locks (and could take its slot): the handle is
                 * unusable in this child. */
                close(m->fd);
                m->fd = -1;
                m->poisoned = true;
            }
        }
        m->slot = 0;
        m->me = NULL;
        m->roles = 0;
    }
    pthread_mutex_unlock(&registry_lock);
}
static void atfork_install(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

void qm__registry_add(qm_membership_t *m) {
    pthread_once(&atfork_once, atfork_install);
    pthread_mutex_lock(&registry_lock);
    m->reg_prev = NULL;
    m->reg_next = registry;
    if (registry) registry->reg_prev = m;
    registry = m;
    pthread_mutex_unlock(&registry_lock);
}

void qm__registry_remove(qm_membership_t *m) {
    pthread_mutex_lock(&registry_lock);
    if (m->reg_prev) m->reg_prev->reg_next = m->reg_next;
    else if (registry == m) registry = m->reg_next;
    if (m->reg_next) m->reg_next->reg_prev = m->reg_prev;
    m->reg_prev = m->reg_next = NULL;
    pthread_mutex_unlock(&registry_lock);
}

static void hwm_raise(qm_membership_t *m, uint32_t slot) {
    uint32_t cur = atomic_load_explicit(m->hwm, memory_order_relaxed);
    while (cur < slot && !atomic_compare_exchange_weak_explicit(m->hwm, &cur, slot,
                                                                memory_order_relaxed,
                                                                memory_order_relaxed)) {
    }
}

/* Take the shared gate lock (waiting while a lone opener repairs the
 * object under the exclusive one; the kernel drops it if that one dies). */
static int gate_enter(int fd) {
    for (int i = 0; i < 30000; i++) {
        int rc = qm__os_lock_byte_shared(fd, QM_GATE_LOCK);
        if (rc != QM_EAGAIN) return rc;
        usleep(1000);
    }
    return qm__fail(QM_ENOTREADY, "object held exclusively for 30 s (being repaired?)");
}

int qm__gate_try_exclusive(int fd) { return qm__os_lock_byte(fd, QM_GATE_LOCK); }

/* Caller memory has no lock file: slots are taken by CAS on `roles` bit 31
 * and a member counts as alive while it holds its slot. */
#define QM_ROLE_TAKEN_MEM (UINT32_C(1) << 31)

int qm__member_join(qm_membership_t *mb) {
    if (mb->poisoned)
        return qm__fail(QM_EGONE, "could not re-open the object after fork(); open it anew");
    for (uint32_t k = 1; k < QM_MEMBER_SLOTS; k++) {
        qm_member_t *m = &mb->members[k];
        if (mb->fd < 0) {
            uint32_t expect = 0;
            if (!atomic_compare_exchange_strong_explicit(&m->roles, &expect, QM_ROLE_TAKEN_MEM,
                                                         memory_order_acq_rel,
                                                         memory_order_relaxed))
                continue;
        } else {
            int rc = qm__os_lock_byte(mb->fd, QM_LOCK_BASE + k);
            if (rc == QM_EAGAIN) continue;
            if (rc) return rc;
            rc = gate_enter(mb->fd);
            if (rc) {
                qm__os_unlock_byte(mb->fd, QM_LOCK_BASE + k);
                return rc;
            }
            /* The previous owner (if any) is dead: settle what it left. */
            uint64_t inflight = atomic_load_explicit(&m->inflight, memory_order_acquire);
            uint64_t reading = atomic_load_explicit(&m->reading, memory_order_acquire);
            mb->slot = k;
            mb->me = m;
            if (mb->settle) {
                if (inflight & QM_INFLIGHT_VALID) mb->settle(mb->object, k, inflight);
                if (reading & QM_INFLIGHT_VALID) mb->settle(mb->object, k, reading);
            }
            atomic_store_explicit(&m->reading, 0, memory_order_relaxed);
            atomic_store_explicit(&m->roles, 0, memory_order_relaxed);
        }
        mb->slot = k;
        mb->me = m;
        mb->roles = 0;
        atomic_store_explicit(&m->inflight, 0, memory_order_relaxed);
        atomic_store_explicit(&m->pid, (uint32_t)getpid(), memory_order_relaxed);
        atomic_fetch_add_explicit(&m->generation, 1, memory_order_relaxed);
        hwm_raise(mb, k);
        return QM_OK;
    }
    mb->slot = 0;
    mb->me = NULL;
    return qm__fail(QM_EMEMBERS, "all %u member slots are taken by live handles",
                    QM_MEMBER_SLOTS - 1);
}

void qm__member_leave(qm_membership_t *mb) {
    if (!mb->slot) return;
    qm_member_t *m = mb->me;
    atomic_store_explicit(&m->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&m->inflight, 0, memory_order_relaxed);
    atomic_store_explicit(&m->reading, 0, memory_order_relaxed);
    if (mb->fd < 0) {
        atomic_store_explicit(&m->roles, 0, memory_order_release);
    } else {
        atomic_store_explicit(&m->roles, 0, memory_order_relaxed);
        qm__os_unlock_byte(mb->fd, QM_LOCK_BASE + mb->slot);
        qm__os_unlock_byte(mb->fd, QM_GATE_LOCK);
    }
    mb->slot = 0;
    mb->me = NULL;
}

void qm__member_publish_role(qm_membership_t *mb, uint32_t role) {
    if (mb->roles & role) return;
    mb->roles |= role;
    atomic_fetch_or_explicit(&mb->me->roles, role, memory_order_relaxed);
}

bool qm__member_alive(const qm_membership_t *mb, uint32_t slot) {
    if (slot == 0 || slot >= QM_MEMBER_SLOTS) return false;
    if (slot == mb->slot) return true;
    if (mb->fd < 0)
        return (atomic_load_explicit(&mb->members[slot].roles, memory_order_acquire) &
                QM_ROLE_TAKEN_MEM) != 0;
    int rc = qm__os_byte_locked(mb->fd, QM_LOCK_BASE + slot);
    return rc != 0;   /* an error counts as alive: never abandon on doubt */
}
