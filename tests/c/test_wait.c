/*
 * test_wait.c - the sleep/wake handshake of wait.c never loses a wakeup.
 *
 * model/ring.pml found the bug this guards against: qm__sleep_prepare
 * announced itself (sleepers = 1) and only then read seq.  A waker that ran
 * in between cleared the flag and bumped seq before the read, so the
 * sleeper slept on the new value with no flag set; the next publisher saw
 * no sleeper and did not wake it (only the slice timeout ended the sleep).
 * The invariant checked here: once a waker has consumed our announcement
 * (the flag we set reads 0 again), seq differs from the value we sleep on.
 */
#include "check.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define ROUNDS 200000
#define SETTLE_NS (2 * INT64_C(1000000000))   /* a waker between its W4 and W5 */

static qm_wake_line_t line __attribute__((aligned(128)));
static atomic_int stop;

static void *waker(void *arg) {
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) qm__wake(&line);
    return NULL;
}

static void test_a_consumed_announcement_always_comes_with_a_new_seq(void) {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, waker, NULL) == 0);
    long consumed = 0, lost = 0;
    for (long i = 0; i < ROUNDS && !lost; i++) {
        uint32_t s = qm__sleep_prepare(&line);
        int64_t until = qm_now_ns() + SETTLE_NS;
        for (;;) {
            uint32_t flag = atomic_load_explicit(&line.sleepers, memory_order_acquire);
            uint32_t now_seq = atomic_load_explicit(&line.seq, memory_order_acquire);
            if (now_seq != s) {   /* a futex wait on s would return at once */
                consumed += flag == 0;
                break;
            }
            if (flag) break;       /* the announcement stands: the next waker sees it */
            if (qm_now_ns() > until) {
                lost++;            /* flag consumed, seq unchanged: the sleep is lost */
                break;
            }
        }
    }
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    fprintf(stderr, "  announcements consumed by the waker: %ld, lost: %ld\n", consumed, lost);
    CHECK(lost == 0);
}

int main(void) {
    RUN(test_a_consumed_announcement_always_comes_with_a_new_seq);
    CHECK_EXIT();
}
