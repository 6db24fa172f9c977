/*
 * test_ring_stalls.c - producers that stall at the worst instants.
 *
 *  - Between reading the tail and claiming its slot, for more than a lap of
 *    the ring, while the bytes at its stale position happen to equal the
 *    free word it expects (the ABA case): it must not write into the record
 *    that lives there now.
 *  - Inside its reservation (frozen: SIGSTOP, a debugger) for longer than
 *    the consumers' stall timeout: consumers fence its record and go on;
 *    when it resumes, its message is put again, once, intact.
 *
 * Needs the kill-point build (-DQMEM_KILLPOINTS=ON): the test acts at the
 * "ring.before_claim" / "ring.before_commit" points through
 * qm__killpoint_hook, i.e. exactly in those windows.
 */
#include "check.h"
#include "internal.h"

#include <stdint.h>
#include <sys/mman.h>

#define CAP 4096u
#define VICTIM_LEN 112u               /* 16 + 112 = two 64-byte granules */

static qm_ring_t *other;              /* the handle that laps the ring */
static int hook_calls, hook_failed;

static int put_bytes(qm_ring_t *r, const void *p, size_t n) {
    qm_iovec_t iov = {p, n};
    return qm_ring_put(r, &iov, 1, QM_NOWAIT);
}

static int64_t get_bytes(qm_ring_t *r, void *buf, size_t cap) {
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, QM_NOWAIT);
    if (rc) return rc;
    int64_t n = rec.len <= cap ? (int64_t)rec.len : -1;
    if (n >= 0) memcpy(buf, rec.data, rec.len);
    rc = qm_ring_get_end(r, &rec);
    return rc ? rc : n;
}

static void victim_payload(uint8_t *p) {
    for (unsigned i = 0; i < VICTIM_LEN; i++) p[i] = (uint8_t)(0xa0 + i);
    /* The record starts at a lap boundary; its second granule (payload
     * offset 64 - 16 = 48) sits where the stalled producer expects the
     * free word of lap 0. */
    uint64_t free0 = QM_WORD_FREE(0);
    memcpy(p + 48, &free0, sizeof free0);
}

/* Runs inside the first producer's put, after its tail check: lap the ring
 * with the other handle and leave a committed record whose payload holds
 * the stale producer's expected word at its stale position. */
static void lap_the_ring(const char *name) {
    if (strcmp(name, "ring.before_claim") != 0 || hook_calls++) return;
    uint8_t small[8] = {0}, buf[CAP];
    /* one-granule records from position 64 to the end of lap 0 */
    for (unsigned pos = 64; pos < CAP; pos += 64) {
        if (put_bytes(other, small, sizeof small) || get_bytes(other, buf, sizeof buf) != 8) {
            hook_failed = 1;
            return;
        }
    }
    uint8_t victim[VICTIM_LEN];
    victim_payload(victim);
    if (put_bytes(other, victim, sizeof victim)) hook_failed = 1;
}

static void stale_claim_never_writes_into_a_later_laps_record(void) {
    uint64_t len = qm_ring_memory_size(CAP);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    CHECK_RC(qm_ring_format_memory(mem, len, CAP, 0), QM_OK);
    qm_ring_t *stalled;
    CHECK_RC(qm_ring_attach_memory(mem, len, &stalled), QM_OK);
    CHECK_RC(qm_ring_attach_memory(mem, len, &other), QM_OK);
    uint8_t buf[CAP];
    /* one record through, so the stalled producer's position is 64: inside
     * a record once the ring has lapped (position 0 is always a record head) */
    uint8_t first[8] = {1};
    CHECK_RC(put_bytes(other, first, sizeof first), QM_OK);
    CHECK(get_bytes(other, buf, sizeof buf) == 8);

    qm__killpoint_hook = lap_the_ring;
    uint8_t mine[8] = {7, 7, 7, 7, 7, 7, 7, 7};
    int rc = put_bytes(stalled, mine, sizeof mine);
    qm__killpoint_hook = NULL;
    CHECK(hook_calls >= 1 && !hook_failed);
    CHECK_RC(rc, QM_OK);

    /* The victim comes out exactly as written, then the stalled message. */
    uint8_t want[VICTIM_LEN];
    victim_payload(want);
    CHECK(get_bytes(other, buf, sizeof buf) == VICTIM_LEN);
    CHECK(memcmp(buf, want, VICTIM_LEN) == 0);
    CHECK(get_bytes(other, buf, sizeof buf) == 8);
    CHECK(memcmp(buf, mine, 8) == 0);
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(other, &rec, QM_NOWAIT), QM_EAGAIN);
    qm_ring_close(stalled);
    qm_ring_close(other);
    munmap(mem, len);
}

static qm_ring_t *stall_consumer, *stall_producer2;
static int stall_calls, stall_failed;
static int64_t stall_waited_ns;

/* Runs inside the first producer's put, after it copied its payload and
 * before its commit: the producer is "frozen" here. */
static void freeze_before_commit(const char *name) {
    if (strcmp(name, "ring.before_commit") != 0 || stall_calls++) return;
    uint8_t q[8] = {'q', 'q', 'q', 'q', 'q', 'q', 'q', 'q'}, buf[64];
    if (put_bytes(stall_producer2, q, sizeof q)) { stall_failed = 1; return; }
    /* FIFO: the consumer waits behind the frozen record, then fences it */
    qm_record_t rec;
    int64_t t0 = qm_now_ns();
    int rc = qm_ring_get_begin(stall_consumer, &rec, t0 + INT64_C(5000000000));
    stall_waited_ns = qm_now_ns() - t0;
    if (rc || rec.len != 8 || memcmp(rec.data, q, 8)) { stall_failed = 2; return; }
    if (qm_ring_get_end(stall_consumer, &rec)) { stall_failed = 3; return; }
    if (get_bytes(stall_consumer, buf, sizeof buf) != QM_EAGAIN) stall_failed = 4;
}

static void frozen_producer_is_fenced_after_the_stall_timeout_and_puts_again(void) {
    uint64_t len = qm_ring_memory_size(CAP);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    CHECK_RC(qm_ring_format_memory(mem, len, CAP, 0), QM_OK);
    qm_ring_t *frozen;
    CHECK_RC(qm_ring_attach_memory(mem, len, &frozen), QM_OK);
    CHECK_RC(qm_ring_attach_memory(mem, len, &stall_producer2), QM_OK);
    CHECK_RC(qm_ring_attach_memory(mem, len, &stall_consumer), QM_OK);
    qm_ring_set_stall_timeout(stall_consumer, INT64_C(50000000));   /* 50 ms */

    qm__killpoint_hook = freeze_before_commit;
    uint8_t p[8] = {'p', 'p', 'p', 'p', 'p', 'p', 'p', 'p'}, buf[CAP];
    int rc = put_bytes(frozen, p, sizeof p);
    qm__killpoint_hook = NULL;
    CHECK(stall_calls >= 1);
    CHECK(stall_failed == 0);
    CHECK(stall_waited_ns >= INT64_C(50000000));   /* not fenced before its time */
    CHECK_RC(rc, QM_OK);   /* resumed: its put started again, transparently */
    CHECK(get_bytes(stall_consumer, buf, sizeof buf) == 8);
    CHECK(memcmp(buf, p, 8) == 0);
    CHECK(get_bytes(stall_consumer, buf, sizeof buf) == QM_EAGAIN);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(stall_consumer, &st), QM_OK);
    CHECK(st.abandoned == 1);
    /* the fenced space came back: many laps through the ring still work */
    for (uint32_t i = 0; i < 1000; i++) {
        CHECK_RC(put_bytes(frozen, &i, sizeof i), QM_OK);
        uint32_t got = ~i;
        CHECK(get_bytes(stall_consumer, &got, sizeof got) == sizeof got);
        CHECK(got == i);
    }
    qm_ring_close(frozen);
    qm_ring_close(stall_producer2);
    qm_ring_close(stall_consumer);
    munmap(mem, len);
}

int main(void) {
    RUN(stale_claim_never_writes_into_a_later_laps_record);
    RUN(frozen_producer_is_fenced_after_the_stall_timeout_and_puts_again);
    CHECK_EXIT();
}
