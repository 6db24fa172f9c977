/*
 * test_ring_aba.c - a producer that stalls between reading the tail and
 * claiming its slot for more than a lap of the ring, while the bytes at its
 * stale position happen to equal the free word it expects (the ABA case),
 * must not write into the record that lives there now.
 *
 * Needs the kill-point build (-DQMEM_KILLPOINTS=ON): the test acts at the
 * "ring.before_claim" point through qm__killpoint_hook, i.e. exactly in the
 * window between the producer's last tail check and its claim CAS.
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

int main(void) {
    RUN(stale_claim_never_writes_into_a_later_laps_record);
    CHECK_EXIT();
}
