/*
 * test_ring.c - the ring's behaviour, one case per behaviour, over caller
 * memory (no files, no other processes).
 */
#include "check.h"
#include "internal.h"

#include <stdint.h>
#include <sys/mman.h>

static void *mem;
static uint64_t mem_len;

static qm_ring_t *fresh(uint64_t capacity, uint64_t maxsize) {
    if (mem) munmap(mem, mem_len);
    mem_len = qm_ring_memory_size(capacity);
    mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) abort();
    if (qm_ring_format_memory(mem, mem_len, capacity, maxsize)) abort();
    qm_ring_t *r;
    if (qm_ring_attach_memory(mem, mem_len, &r)) abort();
    return r;
}

static int put_bytes(qm_ring_t *r, const void *p, size_t n, int64_t deadline) {
    qm_iovec_t iov = {p, n};
    return qm_ring_put(r, &iov, 1, deadline);
}

/* Take one record into buf; returns its length or a negative status. */
static int64_t get_bytes(qm_ring_t *r, void *buf, size_t cap, int64_t deadline) {
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, deadline);
    if (rc) return rc;
    int64_t n = (int64_t)rec.len;
    if (rec.len <= cap) memcpy(buf, rec.data, rec.len);
    else n = -1;
    rc = qm_ring_get_end(r, &rec);
    return rc ? rc : n;
}

static void fill(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed * 131u + i * 7u);
}
static int same(const uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(seed * 131u + i * 7u)) return 0;
    return 1;
}

static void get_on_empty_ring_returns_eagain(void) {
    qm_ring_t *r = fresh(4096, 0);
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_EAGAIN);
    qm_ring_close(r);
}

static void get_returns_messages_in_put_order(void) {
    qm_ring_t *r = fresh(1 << 16, 0);
    for (uint32_t i = 0; i < 100; i++) CHECK_RC(put_bytes(r, &i, sizeof i, QM_NOWAIT), 0);
    for (uint32_t i = 0; i < 100; i++) {
        uint32_t v = 0;
        CHECK(get_bytes(r, &v, sizeof v, QM_NOWAIT) == sizeof v);
        CHECK(v == i);
    }
    uint64_t depth = 1;
    CHECK_RC(qm_ring_depth(r, &depth), 0);
    CHECK(depth == 0);
    qm_ring_close(r);
}

static void zero_length_message_round_trips(void) {
    qm_ring_t *r = fresh(4096, 0);
    CHECK_RC(put_bytes(r, "", 0, QM_NOWAIT), 0);
    char b[4];
    CHECK(get_bytes(r, b, sizeof b, QM_NOWAIT) == 0);
    qm_ring_close(r);
}

static void gathered_pieces_arrive_as_one_message(void) {
    qm_ring_t *r = fresh(4096, 0);
    qm_iovec_t iov[3] = {{"ab", 2}, {"", 0}, {"cde", 3}};
    CHECK_RC(qm_ring_put(r, iov, 3, QM_NOWAIT), 0);
    char b[8] = {0};
    CHECK(get_bytes(r, b, sizeof b, QM_NOWAIT) == 5);
    CHECK(memcmp(b, "abcde", 5) == 0);
    qm_ring_close(r);
}

static void oversize_message_is_refused_before_reserving(void) {
    qm_ring_t *r = fresh(4096, 0);
    CHECK(qm_ring_max_message(r) == 1024);
    static uint8_t big[1025];
    uint64_t tail = atomic_load(&r->ctl->tail.pos);
    CHECK_RC(put_bytes(r, big, sizeof big, QM_NOWAIT), QM_ETOOBIG);
    CHECK(atomic_load(&r->ctl->tail.pos) == tail);
    /* a 2^62-byte claim is refused the same way, without touching memory */
    qm_iovec_t huge = {big, UINT64_C(1) << 62};
    CHECK_RC(qm_ring_put(r, &huge, 1, QM_NOWAIT), QM_ETOOBIG);
    qm_iovec_t two[2] = {{big, 1024}, {big, 1}};
    CHECK_RC(qm_ring_put(r, two, 2, QM_NOWAIT), QM_ETOOBIG);
    qm_ring_close(r);
}

static void largest_message_fits_at_any_position(void) {
    qm_ring_t *r = fresh(4096, 0);
    static uint8_t big[1024], out[1024];
    for (uint32_t i = 0; i < 50; i++) {
        /* shift the start with a small message so the big one wraps */
        uint8_t small[40];
        fill(small, (i * 13) % 40, i);
        CHECK_RC(put_bytes(r, small, (i * 13) % 40, QM_NOWAIT), 0);
        CHECK(get_bytes(r, out, sizeof out, QM_NOWAIT) == (int64_t)((i * 13) % 40));
        fill(big, sizeof big, i);
        CHECK_RC(put_bytes(r, big, sizeof big, QM_NOWAIT), 0);
        CHECK(get_bytes(r, out, sizeof out, QM_NOWAIT) == (int64_t)sizeof big);
        CHECK(same(out, sizeof out, i));
    }
    qm_ring_close(r);
}

static void full_ring_refuses_until_a_get_frees_space(void) {
    qm_ring_t *r = fresh(4096, 0);
    uint8_t m[100];
    int n = 0;
    while (put_bytes(r, m, sizeof m, QM_NOWAIT) == 0) n++;
    CHECK(n == 4096 / 128);   /* 16 B header + 100 B -> two granules */
    CHECK_RC(put_bytes(r, m, sizeof m, QM_NOWAIT), QM_EAGAIN);
    int64_t t0 = qm_now_ns();
    CHECK_RC(put_bytes(r, m, sizeof m, qm_now_ns() + 30000000), QM_ETIMEDOUT);
    CHECK(qm_now_ns() - t0 >= 30000000);
    CHECK(get_bytes(r, m, sizeof m, QM_NOWAIT) == (int64_t)sizeof m);
    CHECK_RC(put_bytes(r, m, sizeof m, QM_NOWAIT), 0);
    qm_ring_close(r);
}

static void get_with_deadline_times_out_on_empty_ring(void) {
    qm_ring_t *r = fresh(4096, 0);
    char b[4];
    int64_t t0 = qm_now_ns();
    CHECK(get_bytes(r, b, sizeof b, t0 + 20000000) == QM_ETIMEDOUT);
    CHECK(qm_now_ns() - t0 >= 20000000);
    qm_ring_close(r);
}

static void wrapping_many_laps_keeps_order_and_content(void) {
    qm_ring_t *r = fresh(8192, 0);
    static uint8_t buf[2048], out[2048];
    uint32_t next_put = 0, next_get = 0;
    for (int step = 0; step < 20000; step++) {
        size_t n = (next_put * 2654435761u) % 2049;
        fill(buf, n, next_put);
        int rc = put_bytes(r, buf, n, QM_NOWAIT);
        if (rc == 0) {
            next_put++;
            continue;
        }
        CHECK(rc == QM_EAGAIN);
        while (next_get < next_put) {
            size_t want = (next_get * 2654435761u) % 2049;
            CHECK(get_bytes(r, out, sizeof out, QM_NOWAIT) == (int64_t)want);
            CHECK(same(out, want, next_get));
            next_get++;
        }
    }
    CHECK(next_put > 1000);
    CHECK(atomic_load(&r->ctl->tail.pos) > 8192 * 100);   /* many laps */
    qm_ring_close(r);
}

static void maxsize_bounds_the_message_count(void) {
    qm_ring_t *r = fresh(1 << 16, 3);
    for (int i = 0; i < 3; i++) CHECK_RC(put_bytes(r, "x", 1, QM_NOWAIT), 0);
    CHECK_RC(put_bytes(r, "x", 1, QM_NOWAIT), QM_EAGAIN);
    char b[2];
    CHECK(get_bytes(r, b, sizeof b, QM_NOWAIT) == 1);
    CHECK_RC(put_bytes(r, "x", 1, QM_NOWAIT), 0);
    qm_ring_close(r);
}

static void put_many_reports_how_many_fit(void) {
    qm_ring_t *r = fresh(4096, 0);
    static uint8_t m[100];
    qm_iovec_t msgs[64];
    for (int i = 0; i < 64; i++) msgs[i] = (qm_iovec_t){m, sizeof m};
    size_t done = 0;
    CHECK_RC(qm_ring_put_many(r, msgs, 64, QM_NOWAIT, &done), QM_EAGAIN);
    CHECK(done == 32);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(r, &st), 0);
    CHECK(st.put == 32 && st.depth == 32 && st.depth_bytes == 3200);
    CHECK(st.producers == 1 && st.consumers == 0);
    qm_ring_close(r);
}

static void two_handles_share_one_ring(void) {
    qm_ring_t *a = fresh(4096, 0), *b;
    CHECK_RC(qm_ring_attach_memory(mem, mem_len, &b), 0);
    CHECK(a->mb.slot != b->mb.slot);
    CHECK_RC(put_bytes(a, "hello", 5, QM_NOWAIT), 0);
    char out[8];
    CHECK(get_bytes(b, out, sizeof out, QM_NOWAIT) == 5);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(a, &st), 0);
    CHECK(st.members == 2 && st.producers == 1 && st.consumers == 1);
    CHECK(st.put == 1 && st.got == 1 && st.depth == 0);
    qm_ring_close(b);
    qm_ring_close(a);
}

static void task_done_counts_against_gets_and_join_waits_for_every_task(void) {
    qm_ring_t *r = fresh(4096, 0);
    uint64_t n = 99;
    CHECK_RC(qm_ring_task_done(r, 1), QM_EINVAL);   /* nothing got yet */
    CHECK_RC(qm_ring_join(r, QM_NOWAIT), 0);         /* nothing put */
    CHECK_RC(put_bytes(r, "a", 1, QM_NOWAIT), 0);
    CHECK_RC(put_bytes(r, "b", 1, QM_NOWAIT), 0);
    CHECK_RC(qm_ring_unfinished(r, &n), 0);
    CHECK(n == 2);
    CHECK_RC(qm_ring_join(r, qm_now_ns() + 5000000), QM_ETIMEDOUT);
    char out[4];
    CHECK(get_bytes(r, out, sizeof out, QM_NOWAIT) == 1);
    CHECK_RC(qm_ring_task_done(r, 2), QM_EINVAL);    /* only one was got: nothing counted */
    CHECK_RC(qm_ring_task_done(r, 1), 0);
    CHECK_RC(qm_ring_task_done(r, 1), QM_EINVAL);
    CHECK_RC(qm_ring_unfinished(r, &n), 0);
    CHECK(n == 1);
    CHECK(get_bytes(r, out, sizeof out, QM_NOWAIT) == 1);
    CHECK_RC(qm_ring_task_done(r, 1), 0);
    CHECK_RC(qm_ring_unfinished(r, &n), 0);
    CHECK(n == 0);
    CHECK_RC(qm_ring_join(r, QM_NOWAIT), 0);
    qm_ring_close(r);
}

static void maxsize_can_be_changed_for_every_handle(void) {
    qm_ring_t *r = fresh(4096, 1), *b;
    CHECK_RC(qm_ring_attach_memory(mem, mem_len, &b), 0);
    CHECK_RC(put_bytes(r, "a", 1, QM_NOWAIT), 0);
    CHECK_RC(put_bytes(r, "b", 1, QM_NOWAIT), QM_EAGAIN);
    CHECK_RC(qm_ring_set_maxsize(b, 3), 0);
    CHECK(qm_ring_maxsize(r) == 3);
    CHECK_RC(put_bytes(r, "b", 1, QM_NOWAIT), 0);
    CHECK_RC(put_bytes(r, "c", 1, QM_NOWAIT), 0);
    CHECK_RC(put_bytes(r, "d", 1, QM_NOWAIT), QM_EAGAIN);
    CHECK_RC(qm_ring_set_maxsize(r, 2), 0);   /* smaller than the depth: puts wait */
    char out[4];
    CHECK(get_bytes(b, out, sizeof out, QM_NOWAIT) == 1);
    CHECK_RC(put_bytes(r, "d", 1, QM_NOWAIT), QM_EAGAIN);
    CHECK_RC(qm_ring_set_maxsize(r, 0), 0);   /* no bound */
    CHECK_RC(put_bytes(r, "d", 1, QM_NOWAIT), 0);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(b, &st), 0);
    CHECK(st.maxsize == 0 && st.depth == 3);
    CHECK_RC(qm_ring_set_maxsize(r, UINT64_C(1) << 63), QM_EINVAL);
    qm_ring_close(b);
    qm_ring_close(r);
}

static void scribbled_record_word_is_reported_not_followed(void) {
    qm_ring_t *r = fresh(4096, 0);
    CHECK_RC(put_bytes(r, "abc", 3, QM_NOWAIT), 0);
    /* an extent far past the lap end */
    _Atomic uint64_t *w = (_Atomic uint64_t *)r->data;
    uint64_t good = atomic_load(w);
    atomic_store(w, QM_WORD(0, QM_ST_COMMITTED, 1, 0x3fff));
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_ECORRUPT);
    /* an unknown state */
    atomic_store(w, QM_WORD(0, 7, 1, 1));
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_ECORRUPT);
    /* a length longer than the record */
    atomic_store(w, good);
    atomic_store((_Atomic uint64_t *)(r->data + 8), UINT64_C(1) << 40);
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_ECORRUPT);
    /* misaligned cursors */
    atomic_store(&r->ctl->read.pos, 13);
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_ECORRUPT);
    atomic_store(&r->ctl->tail.pos, 13);
    CHECK_RC(put_bytes(r, "x", 1, QM_NOWAIT), QM_ECORRUPT);
    /* tail more than a lap past head */
    atomic_store(&r->ctl->tail.pos, UINT64_C(1) << 20);
    CHECK_RC(put_bytes(r, "x", 1, QM_NOWAIT), QM_ECORRUPT);
    qm_ring_close(r);
}

static void header_validation_rejects_every_bad_field(void) {
    qm_ring_t *r = fresh(4096, 0);
    uint64_t size = mem_len;
    qm_geometry_t g;
    static uint8_t img[4096];
    memcpy(img, mem, sizeof img);
    CHECK_RC(qm__ring_header_check(img, sizeof img, size, &g), 0);
    CHECK(g.capacity == 4096 && g.max_message == 1024);
    qm_header_t *h = (qm_header_t *)img;
#define MUTATE(stmt, want)                                              \
    do {                                                                \
        memcpy(img, mem, sizeof img);                                   \
        stmt;                                                           \
        CHECK_RC(qm__ring_header_check(img, sizeof img, size, &g), want); \
    } while (0)
    MUTATE(atomic_store(&h->magic, 0), QM_ENOTREADY);
    MUTATE(atomic_store(&h->magic, 12345), QM_ECORRUPT);
    MUTATE(atomic_store(&h->magic, __builtin_bswap64(QM_MAGIC_RING)), QM_EINCOMPAT);
    MUTATE(h->format_major = 2, QM_EINCOMPAT);
    CHECK(strstr(qm_last_error(), "2.1") != NULL);
    MUTATE(h->layout_fingerprint ^= 1, QM_EINCOMPAT);
    MUTATE(h->feature_flags = 1, QM_EINCOMPAT);
    MUTATE(h->object_kind = 9, QM_EINCOMPAT);
    MUTATE(h->header_bytes = 8192, QM_ECORRUPT);
    MUTATE(h->members_offset = 0, QM_ECORRUPT);
    MUTATE(h->member_slots = 1, QM_ECORRUPT);
    MUTATE(h->data_offset = 4096, QM_ECORRUPT);
    MUTATE(h->granule_log2 = 3, QM_ECORRUPT);
    MUTATE(h->capacity_log2 = 63, QM_ECORRUPT);
    MUTATE(h->capacity_log2 = 13, QM_ECORRUPT);
    MUTATE(h->data_bytes = 1 << 20, QM_ECORRUPT);
    MUTATE(h->total_bytes += 4096, QM_ECORRUPT);
    MUTATE(h->max_message = 4096, QM_ECORRUPT);
    MUTATE(h->reserved[3] = 1, QM_EINCOMPAT);
    CHECK_RC(qm__ring_header_check(mem, sizeof(qm_header_t) - 1, size, &g), QM_ECORRUPT);
    CHECK_RC(qm__ring_header_check(mem, 4096, size + 1, &g), QM_ECORRUPT);
#undef MUTATE
    qm_ring_close(r);
}

static void capacity_is_rounded_up_and_bounded(void) {
    CHECK(qm_ring_memory_size(5000) == QM_DATA_OFFSET + 8192);
    CHECK(qm_ring_memory_size(1) == QM_DATA_OFFSET + 4096);
    CHECK(qm_ring_memory_size(0) == 0);
    CHECK(qm_ring_memory_size((UINT64_C(1) << 40) + 1) == 0);
}


static void one_record_at_a_time_per_handle(void) {
    qm_ring_t *r = fresh(4096, 0);
    CHECK_RC(put_bytes(r, "a", 1, QM_NOWAIT), 0);
    CHECK_RC(put_bytes(r, "b", 1, QM_NOWAIT), 0);
    qm_record_t rec, other;
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), 0);
    CHECK_RC(qm_ring_get_begin(r, &other, QM_NOWAIT), QM_EINVAL);
    qm_record_t fake = rec;
    fake.pos += 64;
    CHECK_RC(qm_ring_get_end(r, &fake), QM_EINVAL);
    CHECK_RC(qm_ring_get_end(r, &rec), 0);
    CHECK_RC(qm_ring_get_end(r, &rec), QM_EINVAL);   /* not twice */
    qm_ring_close(r);
}

static void closing_a_handle_that_holds_a_record_frees_its_space(void) {
    qm_ring_t *a = fresh(4096, 0), *b;
    CHECK_RC(qm_ring_attach_memory(mem, mem_len, &b), 0);
    static uint8_t m[1000];
    CHECK_RC(put_bytes(a, m, sizeof m, QM_NOWAIT), 0);
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(b, &rec, QM_NOWAIT), 0);
    qm_ring_close(b);
    int n = 0;
    while (put_bytes(a, m, sizeof m, QM_NOWAIT) == 0) n++;
    CHECK(n == 4);   /* the whole ring is free again */
    qm_ring_close(a);
}

static void misaligned_head_is_reported_when_a_producer_needs_it(void) {
    qm_ring_t *r = fresh(4096, 0);
    static uint8_t m[1000];
    for (int i = 0; i < 4; i++) CHECK_RC(put_bytes(r, m, sizeof m, QM_NOWAIT), 0);
    /* a scribbled head would point an 8-byte load past the mapping */
    atomic_store(&r->ctl->head.pos, 4095);
    CHECK_RC(put_bytes(r, m, sizeof m, QM_NOWAIT), QM_ECORRUPT);
    qm_ring_close(r);
}

int main(void) {
    RUN(get_on_empty_ring_returns_eagain);
    RUN(get_returns_messages_in_put_order);
    RUN(zero_length_message_round_trips);
    RUN(gathered_pieces_arrive_as_one_message);
    RUN(oversize_message_is_refused_before_reserving);
    RUN(largest_message_fits_at_any_position);
    RUN(full_ring_refuses_until_a_get_frees_space);
    RUN(get_with_deadline_times_out_on_empty_ring);
    RUN(wrapping_many_laps_keeps_order_and_content);
    RUN(maxsize_bounds_the_message_count);
    RUN(put_many_reports_how_many_fit);
    RUN(two_handles_share_one_ring);
    RUN(task_done_counts_against_gets_and_join_waits_for_every_task);
    RUN(maxsize_can_be_changed_for_every_handle);
    RUN(scribbled_record_word_is_reported_not_followed);
    RUN(header_validation_rejects_every_bad_field);
    RUN(capacity_is_rounded_up_and_bounded);
    RUN(one_record_at_a_time_per_handle);
    RUN(misaligned_head_is_reported_when_a_producer_needs_it);
    RUN(closing_a_handle_that_holds_a_record_frees_its_space);
    CHECK_EXIT();
}
