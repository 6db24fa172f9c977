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
static qm_ring_t *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&registry_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&registry_lock); }
static void atfork_child(void) {
    for (qm_ring_t *r = registry; r; r = r->reg_next) {
        if (r->fd >= 0) {
            int nfd = qm__os_reopen(r->fd);
            if (nfd >= 0) {
                dup2(nfd, r->fd);   /* keeps the number; the old description stays the parent's */
                close(nfd);
            }
        }
        r->slot = 0;
        r->me = NULL;
        r->roles = 0;
    }
    pthread_mutex_unlock(&registry_lock);
}
static void atfork_install(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

void qm__registry_add(qm_ring_t *ring) {
    pthread_once(&atfork_once, atfork_install);
    pthread_mutex_lock(&registry_lock);
    ring->reg_prev = NULL;
    ring->reg_next = registry;
    if (registry) registry->reg_prev = ring;
    registry = ring;
    pthread_mutex_unlock(&registry_lock);
}

void qm__registry_remove(qm_ring_t *ring) {
    pthread_mutex_lock(&registry_lock);
    if (ring->reg_prev) ring->reg_prev->reg_next = ring->reg_next;
    else if (registry == ring) registry = ring->reg_next;
    if (ring->reg_next) ring->reg_next->reg_prev = ring->reg_prev;
    ring->reg_prev = ring->reg_next = NULL;
    pthread_mutex_unlock(&registry_lock);
}

static void hwm_raise(qm_ring_t *ring, uint32_t slot) {
    uint32_t cur = atomic_load_explicit(&ring->ctl->members_hwm, memory_order_relaxed);
    while (cur < slot && !atomic_compare_exchange_weak_explicit(
                             &ring->ctl->members_hwm, &cur, slot, memory_order_relaxed,
                             memory_order_relaxed)) {
    }
}

/* Caller memory has no lock file: slots are taken by CAS on `roles` bit 31
 * and every member counts as alive. */
#define QM_ROLE_TAKEN_MEM (UINT32_C(1) << 31)

int qm__member_join(qm_ring_t *ring) {
    for (uint32_t k = 1; k < QM_MEMBER_SLOTS; k++) {
        qm_member_t *m = &ring->members[k];
        if (ring->fd < 0) {
            uint32_t expect = 0;
            if (!atomic_compare_exchange_strong_explicit(&m->roles, &expect, QM_ROLE_TAKEN_MEM,
                                                         memory_order_acq_rel,
                                                         memory_order_relaxed))
                continue;
        } else {
            int rc = qm__os_lock_byte(ring->fd, QM_LOCK_BASE + k);
            if (rc == QM_EAGAIN) continue;
            if (rc) return rc;
            /* The previous owner (if any) is dead: settle what it left. */
            uint64_t inflight = atomic_load_explicit(&m->inflight, memory_order_acquire);
            ring->slot = k;
            ring->me = m;
            if (inflight & QM_INFLIGHT_VALID) qm__ring_resolve_inflight(ring, k, inflight);
            atomic_store_explicit(&m->roles, 0, memory_order_relaxed);
        }
        ring->slot = k;
        ring->me = m;
        ring->roles = 0;
        atomic_store_explicit(&m->inflight, 0, memory_order_relaxed);
        atomic_store_explicit(&m->pid, (uint32_t)getpid(), memory_order_relaxed);
        atomic_fetch_add_explicit(&m->generation, 1, memory_order_relaxed);
        hwm_raise(ring, k);
        return QM_OK;
    }
    ring->slot = 0;
    ring->me = NULL;
    return qm__fail(QM_EMEMBERS, "all %u member slots are taken by live handles",
                    QM_MEMBER_SLOTS - 1);
}

void qm__member_leave(qm_ring_t *ring) {
    if (!ring->slot) return;
    qm_member_t *m = ring->me;
    atomic_store_explicit(&m->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&m->inflight, 0, memory_order_relaxed);
    if (ring->fd < 0) {
        atomic_store_explicit(&m->roles, 0, memory_order_release);
    } else {
        atomic_store_explicit(&m->roles, 0, memory_order_relaxed);
        qm__os_unlock_byte(ring->fd, QM_LOCK_BASE + ring->slot);
    }
    ring->slot = 0;
    ring->me = NULL;
}

bool qm__member_alive(qm_ring_t *ring, uint32_t slot) {
    if (slot == 0 || slot >= QM_MEMBER_SLOTS) return false;
    if (ring->fd < 0 || slot == ring->slot) return true;
    int rc = qm__os_byte_locked(ring->fd, QM_LOCK_BASE + slot);
    return rc != 0;   /* an error counts as alive: never abandon on doubt */
}
