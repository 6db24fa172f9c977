/*
 * wait.c - sleeping on a shared futex word without losing a wakeup.
 *
 * The handshake is a store-buffering pattern, so both sides need a
 * sequentially consistent fence:
 *
 *   sleeper                          waker
 *   sleepers = 1          [W1]       publish (release)      (ring.c)
 *   fence(seq_cst)        [W2]       fence(seq_cst)         [W3]
 *   s = seq                          if (xchg(sleepers, 0))  [W4]
 *   re-check condition                   seq += 1; wake all  [W5]
 *   futex_wait(seq == s)
 *
 * Either the waker sees sleepers != 0 (and bumps seq, so the futex wait
 * returns at once or is woken), or the sleeper's re-check sees the
 * published state.  No syscall happens on the fast path when nobody sleeps.
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
    /* [W1] announce; [W2] seq_cst fence pairs with [W3]. */
    atomic_store_explicit(&line->sleepers, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    return atomic_load_explicit(&line->seq, memory_order_acquire);
}

int qm__sleep(qm_wake_line_t *line, uint32_t seq, int64_t deadline_ns) {
    return qm__os_futex_wait(&line->seq, seq, deadline_ns);
}
