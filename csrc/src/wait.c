/*
 * wait.c - sleeping on a shared futex word without losing a wakeup.
 *
 * The handshake is a store-buffering pattern, so both sides need a
 * sequentially consistent fence:
 *
 *   sleeper                          waker
 *   s = seq (acquire)     [W0]       publish (release)      (ring.c)
 *   sleepers = 1          [W1]       fence(seq_cst)         [W3]
 *   fence(seq_cst)        [W2]       if (xchg(sleepers, 0))  [W4]
 *   re-check condition                   seq += 1; wake all  [W5]
 *   futex_wait(seq == s)
 *
 * Either the waker sees sleepers != 0 (and bumps seq, so the futex wait
 * returns at once or is woken), or the sleeper's re-check sees the
 * published state.  No syscall happens on the fast path when nobody sleeps.
 *
 * seq is read *before* announcing: any waker that consumes our announcement
 * then bumps seq past s.  Read after announcing (as this code once did), a
 * stale waker could clear our flag and bump seq in between; we would sleep
 * on the new value with no flag set, and the next publisher would not wake
 * us (a lost wakeup, ended only by the slice timeout).  model/ring.pml
 * found it (docs/design/models.md).
 */
#include "internal.h"

int64_t qm_now_ns(void) { return qm__os_monotonic_ns(); }

void qm__wake(qm_wake_line_t *line) {
    /* [W3] seq_cst: the publish before us is ordered before the flag read;
     * pairs with [W2]. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&line->sleepers, memory_order_relaxed) == 0) return;
    /* [W4] acq_rel exchange: only one waker pays for the syscall. */
    if (atomic_exchange_explicit(&line->sleepers, 0, memory_order_acq_rel) == 0) return;
    /* [W5] release: a sleeper that reads the new seq sees the publish. */
    atomic_fetch_add_explicit(&line->seq, 1, memory_order_release);
    qm__os_futex_wake_all(&line->seq);
}

uint32_t qm__sleep_prepare(qm_wake_line_t *line) {
    /* [W0] acquire, before announcing: a waker that clears our flag bumps
     * seq after this read (pairs with [W5]). */
    uint32_t seq = atomic_load_explicit(&line->seq, memory_order_acquire);
    /* [W1] announce; [W2] seq_cst fence pairs with [W3]. */
    atomic_store_explicit(&line->sleepers, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    return seq;
}

int qm__sleep(qm_wake_line_t *line, uint32_t seq, int64_t deadline_ns) {
    return qm__os_futex_wait(&line->seq, seq, deadline_ns);
}

#define SPIN_TRIES 256
#define LIVENESS_SLICE_NS (10 * INT64_C(1000000))
#define IDLE_SLICE_NS (100 * INT64_C(1000000))

/* Spin briefly, then sleep on the wake line, re-trying after every wake.
 * While `watch` says a peer's death could be what blocks us, sleep in
 * 10 ms slices and run `recover` (liveness checks) when a slice ends;
 * otherwise sleep until woken or the deadline. */
int qm__wait_loop(const qm_waiter_t *w, int64_t deadline) {
    int rc = w->attempt(w->ctx);
    if (rc != QM_EAGAIN) return rc;
    if (w->recover(w->ctx)) {
        rc = w->attempt(w->ctx);
        if (rc != QM_EAGAIN) return rc;
    }
    if (deadline == QM_NOWAIT) return QM_EAGAIN;
    for (int spin = 0; spin < SPIN_TRIES; spin++) {
        qm_cpu_relax();
        rc = w->attempt(w->ctx);
        if (rc != QM_EAGAIN) return rc;
    }
    int64_t last_recover = qm__os_monotonic_ns();
    for (;;) {
        uint32_t seq = qm__sleep_prepare(w->line);
        /* after announcing: an interrupt that bumped seq before our read of
         * it is seen here (its flag store precedes its seq bump) */
        if (atomic_load_explicit(w->interrupted, memory_order_relaxed)) return QM_ECLOSED;
        /* the file was truncated under us: what we wait for will never come
         * (the caller's guard adds the details) */
        if (w->fault && atomic_load_explicit(w->fault, memory_order_relaxed)) return QM_ECORRUPT;
        rc = w->attempt(w->ctx);
        if (rc != QM_EAGAIN) return rc;
        int64_t now = qm__os_monotonic_ns();
        if (now >= deadline) return QM_ETIMEDOUT;
        /* Liveness checks run every slice while a dead peer could be the
         * cause, however the sleep ends (wakes by others must not starve
         * them).  Otherwise sleep in long slices: a peer killed between
         * publishing and waking costs at most one of them. */
        bool watching = w->watch(w->ctx);
        if (watching && now - last_recover >= LIVENESS_SLICE_NS) {
            last_recover = now;
            if (w->recover(w->ctx)) continue;
        }
        int64_t slice = watching ? LIVENESS_SLICE_NS : IDLE_SLICE_NS;
        int64_t until = deadline - now > slice ? now + slice : deadline;
        rc = qm__sleep(w->line, seq, until);
        if (rc == QM_EINTR) return QM_EINTR;
        if (rc != QM_OK && rc != QM_ETIMEDOUT) return rc;
        rc = w->attempt(w->ctx);
        if (rc != QM_EAGAIN) return rc;
    }
}
