/*
 * test_wrap.c - counters near their wrap (reliability-matrix.md row G5).
 *
 * The core has no test hook to start a ring's counters anywhere but 0, so
 * each case formats a fresh ring in caller memory and, before any handle is
 * attached, writes the counters through layout.h the way a ring that had
 * run for that long would hold them:
 *
 *   - the three 64-bit positions (tail, read, head) at a lap start P0, and
 *     every granule word re-marked FREE(lap(P0)) (the lap in which each will
 *     next be used), as ring-format.md says free space is marked;
 *   - the two 32-bit futex words (data_wake.seq, space_wake.seq) just below
 *     2^32.
 *
 * P0 = 2^64 - 8 laps wraps the 64-bit positions and the 32-bit lap tag in
 * the same step; P0 = (2^32 - 8) laps wraps only the lap tag.  Every case
 * then moves messages across the wrap and checks each one's bytes and FIFO
 * order, and that the counters did wrap.
 */
#include "check.h"
#include "internal.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define CAP 4096u            /* smallest ring: a lap every few messages */
#define CAP_LOG2 12u

static void *mem;
static uint64_t mem_len;

/* A fresh ring whose counters look as if it had run up to `p0` (a lap
 * start) and whose futex words are at `seq0`.  Nothing is attached yet. */
static void fresh_at(uint64_t p0, uint32_t seq0) {
    if (mem) munmap(mem, mem_len);
    mem_len = qm_ring_memory_size(CAP);
    mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) abort();
    if (qm_ring_format_memory(mem, mem_len, CAP, 0)) abort();
    if (p0 & (CAP - 1)) abort();
    qm_ring_ctl_t *ctl = mem;
    atomic_store(&ctl->tail.pos, p0);
    atomic_store(&ctl->read.pos, p0);
    atomic_store(&ctl->head.pos, p0);
    atomic_store(&ctl->data_wake.seq, seq0);
    atomic_store(&ctl->space_wake.seq, seq0);
    uint8_t *data = (uint8_t *)mem + QM_DATA_OFFSET;
    uint32_t lap = (uint32_t)(p0 >> CAP_LOG2);
    for (uint64_t off = 0; off < CAP; off += QM_REC_GRANULE)
        atomic_store((_Atomic uint64_t *)(data + off), QM_WORD_FREE(lap));
}

static qm_ring_t *attach(void) {
    qm_ring_t *r;
    if (qm_ring_attach_memory(mem, mem_len, &r)) abort();
    return r;
}

static uint64_t pos_of(qm_cursor_line_t *c) { return atomic_load(&c->pos); }

/* message i: length and bytes are functions of i */
static size_t len_of(uint32_t i) { return 4 + (i * 2654435761u >> 7) % (CAP / 4 - 4); }
static void fill(uint8_t *p, uint32_t i) {
    size_t n = len_of(i);
    memcpy(p, &i, 4);
    for (size_t k = 4; k < n; k++) p[k] = (uint8_t)(i * 131u + k * 7u);
}
static int good(const uint8_t *p, size_t n, uint32_t i) {
    uint32_t got;
    if (n != len_of(i)) return 0;
    memcpy(&got, p, 4);
    if (got != i) return 0;
    for (size_t k = 4; k < n; k++)
        if (p[k] != (uint8_t)(i * 131u + k * 7u)) return 0;
    return 1;
}

static int put_msg(qm_ring_t *r, uint32_t i, int64_t deadline) {
    uint8_t buf[CAP / 4];
    fill(buf, i);
    qm_iovec_t iov = {buf, len_of(i)};
    return qm_ring_put(r, &iov, 1, deadline);
}
/* 0 = message i came next, intact; 1 = something else; <0 a status */
static int get_msg(qm_ring_t *r, uint32_t i, int64_t deadline) {
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, deadline);
    if (rc) return rc;
    int ok = good(rec.data, rec.len, i);
    rc = qm_ring_get_end(r, &rec);
    return rc ? rc : !ok;
}

/* One process: fill the ring in bursts (until full), drain it, across the
 * wrap; `n` messages in all. */
static void run_bursts(uint64_t p0, uint32_t n) {
    fresh_at(p0, 0);
    qm_ring_t *r = attach();
    qm_ring_ctl_t *ctl = mem;
    uint32_t put = 0, got = 0, fulls = 0;
    while (got < n) {
        while (put < n) {
            int rc = put_msg(r, put, QM_NOWAIT);
            if (rc == QM_EAGAIN) {
                fulls++;
                break;
            }
            CHECK_RC(rc, 0);
            put++;
        }
        while (got < put) CHECK_RC(get_msg(r, got++, QM_NOWAIT), 0);
        CHECK_RC(get_msg(r, got, QM_NOWAIT), QM_EAGAIN);
    }
    uint64_t moved = pos_of(&ctl->tail) - p0;   /* modulo 2^64 */
    CHECK(moved > 16 * (uint64_t)CAP);          /* well past the wrap */
    CHECK(pos_of(&ctl->read) == pos_of(&ctl->tail));
    CHECK(fulls > 0);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(r, &st), 0);
    CHECK(st.depth == 0);
    qm_ring_close(r);
}

static void positions_wrap_past_2_64_with_every_message_intact_and_in_order(void) {
    uint64_t p0 = (uint64_t)0 - 8u * (uint64_t)CAP;   /* 8 laps before 2^64 */
    run_bursts(p0, 4000);
    qm_ring_ctl_t *ctl = mem;
    CHECK(pos_of(&ctl->tail) < p0);   /* it did wrap */
}

static void lap_tag_wraps_past_2_32_laps_with_every_message_intact_and_in_order(void) {
    uint64_t p0 = ((uint64_t)UINT32_MAX - 7u) << CAP_LOG2;   /* tag 2^32 - 8 */
    run_bursts(p0, 4000);
    qm_ring_ctl_t *ctl = mem;
    CHECK((uint32_t)(pos_of(&ctl->tail) >> CAP_LOG2) < 1000u);   /* tag wrapped */
    CHECK(pos_of(&ctl->tail) > p0);                              /* position did not */
}

/* Two threads, each with its own handle, hand messages over one at a time
 * through a ring that holds at most two of them, both sides blocking (and
 * sleeping on the futex words) across the wrap of the positions and of both
 * 32-bit futex words. */
#define HANDOFFS 10000u
#define PAUSE_EVERY 100u   /* each side pauses 2 ms this often: the other must sleep */
static void *consumer_thread(void *arg) {
    qm_ring_t *r = arg;
    uintptr_t bad = 0;
    for (uint32_t i = 0; i < HANDOFFS && !bad; i++) {
        qm_record_t rec;
        int rc = qm_ring_get_begin(r, &rec, qm_now_ns() + 5 * INT64_C(1000000000));
        if (rc) {
            bad = 1000000u + i;
            break;
        }
        uint32_t got = 0;
        if (rec.len == 1000) memcpy(&got, rec.data, 4);
        if (rec.len != 1000 || got != i) bad = 2000000u + i;
        if (qm_ring_get_end(r, &rec)) bad = 3000000u + i;
        if (i % PAUSE_EVERY == 0) usleep(2000);   /* the producer fills up and sleeps */
    }
    return (void *)bad;
}

static void blocking_handoffs_cross_the_futex_word_and_position_wraps(void) {
    uint64_t p0 = (uint64_t)0 - 4u * (uint64_t)CAP;
    uint32_t seq0 = UINT32_MAX - 20u;
    fresh_at(p0, seq0);
    qm_ring_t *prod = attach(), *cons = attach();
    pthread_t th;
    CHECK(pthread_create(&th, NULL, consumer_thread, cons) == 0);
    uint8_t buf[1000];   /* 4 records of 1024 bytes fill the ring: it is often full */
    memset(buf, 0x5a, sizeof buf);
    int failed = 0;
    for (uint32_t i = 0; i < HANDOFFS; i++) {
        memcpy(buf, &i, 4);
        qm_iovec_t iov = {buf, sizeof buf};
        if (i % PAUSE_EVERY == PAUSE_EVERY / 2) usleep(2000);   /* the consumer sleeps */
        int rc = qm_ring_put(prod, &iov, 1, qm_now_ns() + 5 * INT64_C(1000000000));
        if (rc) {
            fprintf(stderr, "put %u: %s [%s]\n", i, qm_status_str(rc), qm_last_error());
            failed = 1;
            break;
        }
    }
    void *res;
    if (failed) qm_ring_interrupt(cons);
    pthread_join(th, &res);
    qm_ring_ctl_t *ctl = mem;
    uint32_t ds = atomic_load(&ctl->data_wake.seq), ss = atomic_load(&ctl->space_wake.seq);
    fprintf(stderr, "  futex words from %u: data %u (%u wakes), space %u (%u wakes)\n", seq0, ds,
            ds - seq0, ss, ss - seq0);
    CHECK(!failed);
    CHECK((uintptr_t)res == 0);
    CHECK(pos_of(&ctl->tail) < p0);   /* positions wrapped */
    /* Both sides were made to sleep (the pauses) far more often than the 21
     * wakes that wrap a word started at 2^32 - 21; the counts are printed. */
    CHECK(ds < seq0 && ss < seq0);
    qm_ring_close(prod);
    qm_ring_close(cons);
}

/* The same across processes: a forked child consumes (its own handle on
 * the MAP_SHARED memory), the parent produces. */
static void blocking_handoffs_across_processes_cross_the_wraps(void) {
    uint64_t p0 = (uint64_t)0 - 4u * (uint64_t)CAP;
    uint32_t seq0 = UINT32_MAX - 20u;
    fresh_at(p0, seq0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        qm_ring_t *cons = attach();
        _exit(consumer_thread(cons) == NULL ? 0 : 1);
    }
    qm_ring_t *prod = attach();
    uint8_t buf[1000];
    memset(buf, 0x5a, sizeof buf);
    int failed = 0;
    for (uint32_t i = 0; i < HANDOFFS; i++) {
        memcpy(buf, &i, 4);
        qm_iovec_t iov = {buf, sizeof buf};
        if (i % PAUSE_EVERY == PAUSE_EVERY / 2) usleep(2000);   /* the consumer sleeps */
        int rc = qm_ring_put(prod, &iov, 1, qm_now_ns() + 5 * INT64_C(1000000000));
        if (rc) {
            fprintf(stderr, "put %u: %s [%s]\n", i, qm_status_str(rc), qm_last_error());
            failed = 1;
            break;
        }
    }
    int status = 0;
    if (failed) kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    qm_ring_ctl_t *ctl = mem;
    uint32_t ds = atomic_load(&ctl->data_wake.seq), ss = atomic_load(&ctl->space_wake.seq);
    fprintf(stderr, "  futex words from %u: data %u (%u wakes), space %u (%u wakes)\n", seq0, ds,
            ds - seq0, ss, ss - seq0);
    CHECK(!failed);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(pos_of(&ctl->tail) < p0);
    CHECK(ds < seq0 && ss < seq0);
    qm_ring_close(prod);
}

int main(void) {
    RUN(positions_wrap_past_2_64_with_every_message_intact_and_in_order);
    RUN(lap_tag_wraps_past_2_32_laps_with_every_message_intact_and_in_order);
    RUN(blocking_handoffs_cross_the_futex_word_and_position_wraps);
    RUN(blocking_handoffs_across_processes_cross_the_wraps);
    CHECK_EXIT();
}
