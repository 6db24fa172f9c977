/*
 * adversary.c - a peer that scribbles over shared bytes at full speed while
 * this process reads them (reliability-matrix.md C3, double fetch / XSA-155).
 *
 * Ring: formatted in a heap block of exactly its size (aligned_alloc), so
 * AddressSanitizer reports any read or write even one byte outside it.  An
 * adversary thread XORs random bits into record words and lengths (at
 * granule starts), the cursor/wake lines and member slots, and XORs them
 * back a moment later, while the main thread puts and gets.  Every get
 * must hand out a record that lies inside the data area (checked here, and
 * by ASan when the payload is copied), or a typed status.  Damage that a
 * CAS baked in can leave the ring refusing everything: after a streak of
 * errors the adversary pauses and the ring is formatted anew (counted).
 *
 * Log: a segment of records mapped a second time by the test; the adversary
 * XORs bits of record headers and payloads and flips them back while the
 * main thread seeks and reads the log from the start over and over.  Every
 * record delivered must have lengths inside the segment; its bytes are
 * copied (touched) and compared, and one that passed its CRC but changed
 * afterwards (zero-copy: the value is read in place, after the check) is
 * counted, not failed.
 *
 * PYQMEM_ADVERSARY_SECONDS (default 2) per object; PYQMEM_ADVERSARY_READS
 * caps the reads (10**7 for the row's figure).  An alarm() watchdog turns a
 * hang into a failure.
 */
#include "sweep_common.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

static atomic_int stop, pause_req, paused;
static atomic_long flips;

typedef struct adv {
    uint8_t *mem;
    size_t len;
    /* byte ranges to hit: [lo, hi) with a granule pattern */
    size_t lo[4], hi[4];
    size_t granule;     /* 0: any byte; else only bytes at offset < 16 of each granule */
    int nranges;
    uint64_t seed;
    const _Atomic uint64_t *hot;   /* ring: range 0 is the 4 KiB after this position */
    uint64_t hot_mask;
} adv_t;

static uint64_t xs(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static void *adversary(void *arg) {
    adv_t *a = arg;
    uint64_t s = a->seed | 1;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        if (atomic_load_explicit(&pause_req, memory_order_acquire)) {
            atomic_store_explicit(&paused, 1, memory_order_release);
            while (atomic_load_explicit(&pause_req, memory_order_acquire) &&
                   !atomic_load_explicit(&stop, memory_order_relaxed))
                sched_yield();
            atomic_store_explicit(&paused, 0, memory_order_release);
            continue;
        }
        uint64_t r = xs(&s);
        int ri = (int)(r % (uint64_t)a->nranges);
        size_t span = a->hi[ri] - a->lo[ri];
        size_t at = a->lo[ri] + (size_t)((r >> 8) % span);
        if (a->hot && ri == 0)
            at = a->lo[0] + ((atomic_load_explicit(a->hot, memory_order_relaxed) +
                              ((r >> 8) & 4095)) & a->hot_mask);
        if (a->granule && ri == 0) at = (at & ~(a->granule - 1)) | ((r >> 40) & 15);
        if (at >= a->len) continue;
        uint8_t mask = (uint8_t)(xs(&s) | 1);
        _Atomic uint8_t *p = (_Atomic uint8_t *)(a->mem + at);
        atomic_fetch_xor_explicit(p, mask, memory_order_relaxed);
        /* hold the damage a while (up to a few microseconds), so that
         * reads see it between their checks and their uses */
        for (int k = (int)(r >> 52); k > 0; k--) __asm__ volatile("" ::: "memory");
        atomic_fetch_xor_explicit(p, mask, memory_order_relaxed);
        atomic_fetch_add_explicit(&flips, 1, memory_order_relaxed);
    }
    return NULL;
}

static void adversary_pause(void) {
    atomic_store_explicit(&pause_req, 1, memory_order_release);
    while (!atomic_load_explicit(&paused, memory_order_acquire)) sched_yield();
}
static void adversary_resume(void) {
    atomic_store_explicit(&pause_req, 0, memory_order_release);
    while (atomic_load_explicit(&paused, memory_order_acquire)) sched_yield();
}

static double seconds;
static long max_reads;

/* ----- ring ------------------------------------------------------------------- */
#define CAP 65536u

static void ring_reads_survive_a_scribbling_peer(void) {
    uint64_t len = qm_ring_memory_size(CAP);
    uint8_t *mem = aligned_alloc(4096, len);
    CHECK(mem);
    memset(mem, 0, len);
    CHECK_RC(qm_ring_format_memory(mem, len, CAP, 0), QM_OK);
    qm_ring_t *prod, *cons;
    CHECK_RC(qm_ring_attach_memory(mem, len, &prod), QM_OK);
    CHECK_RC(qm_ring_attach_memory(mem, len, &cons), QM_OK);
    const uint8_t *data_lo = mem + QM_DATA_OFFSET, *data_hi = mem + len;

    adv_t a = {.mem = mem, .len = len, .granule = QM_REC_GRANULE, .seed = sw_rand()};
    a.lo[0] = QM_DATA_OFFSET, a.hi[0] = len;                 /* record words + lengths */
    a.lo[1] = 256, a.hi[1] = 1024;                           /* cursor, wake lines, counters */
    a.lo[2] = QM_MEMBERS_OFFSET, a.hi[2] = QM_MEMBERS_OFFSET + 4 * QM_MEMBER_BYTES;
    a.nranges = 3;
    a.hot = &((qm_ring_ctl_t *)mem)->read.pos;
    a.hot_mask = CAP - 1;
    atomic_store(&stop, 0);
    atomic_store(&flips, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, adversary, &a) == 0);

    static uint8_t payload[CAP / 4], copy[CAP / 4];
    for (size_t j = 0; j < sizeof payload; j++) payload[j] = (uint8_t)(j * 7 + 1);
    long reads = 0, got = 0, intact = 0, altered = 0, corrupt = 0, other = 0, reformats = 0,
         out_of_bounds = 0, streak = 0, puts = 0;
    uint64_t s = 12345;
    int64_t t_end = qm_now_ns() + (int64_t)(seconds * 1e9);
    alarm((unsigned)seconds + 60);
    while (reads < max_reads && (reads & 1023 || qm_now_ns() < t_end)) {
        uint64_t r = xs(&s);
        size_t n = 1 + (size_t)(r % 2048);
        if (r & (1ull << 40)) n = 1 + (size_t)((r >> 16) % (CAP / 4));
        qm_iovec_t v = {payload, n};
        int rc = qm_ring_put(prod, &v, 1, QM_NOWAIT);
        puts += rc == 0;
        qm_record_t rec;
        rc = qm_ring_get_begin(cons, &rec, QM_NOWAIT);
        reads++;
        if (rc == QM_OK) {
            got++;
            const uint8_t *d = rec.data;
            if (d < data_lo || rec.len > (uint64_t)(data_hi - d)) {
                out_of_bounds++;
                fprintf(stderr, "ring: record at %td, %llu bytes: outside the data area\n",
                        d - mem, (unsigned long long)rec.len);
            } else {
                memcpy(copy, d, rec.len < sizeof copy ? rec.len : sizeof copy);   /* ASan checks */
                if (rec.len <= sizeof copy && memcmp(copy, payload, rec.len) == 0) intact++;
                else altered++;
            }
            rc = qm_ring_get_end(cons, &rec);
        }
        if (rc == QM_OK || rc == QM_EAGAIN) {
            streak = rc == QM_OK ? 0 : streak + 1;
        } else {
            streak++;
            if (rc == QM_ECORRUPT) corrupt++;
            else other++;
        }
        if (streak > 200) {   /* damage baked in by a CAS: start over */
            adversary_pause();
            qm_ring_close(prod);
            qm_ring_close(cons);
            memset(mem, 0, len);
            rc = qm_ring_format_memory(mem, len, CAP, 0);
            if (!rc) rc = qm_ring_attach_memory(mem, len, &prod);
            if (!rc) rc = qm_ring_attach_memory(mem, len, &cons);
            adversary_resume();
            if (rc) {
                fprintf(stderr, "ring: cannot start over: %s\n", qm_status_str(rc));
                check_failures++;
                break;
            }
            reformats++;
            streak = 0;
        }
    }
    alarm(0);
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    fprintf(stderr, "C3 ring: %ld gets (%ld puts) under %ld flips: delivered %ld (intact %ld, "
            "altered %ld), corrupt-error %ld, other-error %ld, started over %ld times, "
            "out of bounds %ld\n", reads, puts, (long)atomic_load(&flips), got, intact, altered,
            corrupt, other, reformats, out_of_bounds);
    qm_ring_close(prod);
    qm_ring_close(cons);
    free(mem);
    CHECK(out_of_bounds == 0);
    CHECK(got > 0);
}

/* ----- log -------------------------------------------------------------------- */
#define SEG (64u << 10)
static size_t vlen(uint64_t i) { return (size_t)(40 + (i * 211) % 900); }
static uint8_t vbyte(uint64_t i, size_t j) { return (uint8_t)(i + j * 5); }

static void log_reads_survive_a_scribbling_peer(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/advlog", check_dir);
    qm_log_config_t cfg = {SEG, 0, 0, 0};
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg), QM_OK);
    static uint8_t buf[4096];
    uint64_t nrec = 0, off;
    for (; nrec < 60; nrec++) {
        for (size_t j = 0; j < vlen(nrec); j++) buf[j] = vbyte(nrec, j);
        qm_iovec_t v = {buf, vlen(nrec)};
        qm_log_entry_t e = {"k", 1, "h", 1, &v, 1, 0};
        CHECK_RC(qm_log_append(lg, &e, &off), QM_OK);
    }
    char seg[700];
    snprintf(seg, sizeof seg, "%s/00000000000000000000.log", dir);
    int fd = open(seg, O_RDWR);
    CHECK(fd >= 0);
    uint8_t *m = mmap(NULL, SEG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    CHECK(m != MAP_FAILED);
    uint8_t *image = malloc(SEG);
    memcpy(image, m, SEG);
    /* where the records are: the first 2/3 of the segment */
    adv_t a = {.mem = m, .len = SEG, .seed = sw_rand()};
    size_t used = QM_SEGMENT_HEADER;
    for (uint64_t i = 0; i < nrec; i++) used += (QM_RECORD_HEADER + 2 + vlen(i) + 7) & ~(size_t)7;
    a.lo[0] = QM_SEGMENT_HEADER, a.hi[0] = used + 64;
    a.nranges = 1;
    atomic_store(&stop, 0);
    atomic_store(&flips, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, adversary, &a) == 0);

    long reads = 0, got = 0, intact = 0, altered = 0, corrupt = 0, other = 0, restores = 0,
         bad_len = 0, streak = 0;
    int64_t t_end = qm_now_ns() + (int64_t)(seconds * 1e9);
    alarm((unsigned)seconds + 60);
    qm_log_cursor_t cur = {0};
    int rc = qm_log_seek(lg, &cur, 0);
    while (reads < max_reads && (reads & 1023 || qm_now_ns() < t_end)) {
        qm_log_record_t r;
        if (rc == QM_OK) rc = qm_log_read(lg, &cur, &r, QM_NOWAIT);
        reads++;
        if (rc == QM_OK) {
            got++;
            if (r.value_len > SEG || r.key_len > SEG || r.headers_len > SEG) {
                bad_len++;
            } else {
                memcpy(buf, r.value, r.value_len < sizeof buf ? r.value_len : sizeof buf);
                int same = r.offset < nrec && r.value_len == vlen(r.offset);
                for (size_t j = 0; same && j < r.value_len; j++) same = buf[j] == vbyte(r.offset, j);
                if (same) intact++;
                else altered++;
            }
            streak = 0;
            continue;
        }
        if (rc == QM_EAGAIN) {   /* the end: again from the start */
            rc = qm_log_seek(lg, &cur, 0);
            continue;
        }
        if (rc == QM_ECORRUPT) corrupt++;
        else other++;
        /* a reader that found a WRITING word of a dead writer abandons it (a
         * CAS): such damage stays; put the segment back now and then */
        if (++streak > 50) {
            adversary_pause();
            memcpy(m, image, SEG);
            adversary_resume();
            restores++;
            streak = 0;
        }
        rc = qm_log_seek(lg, &cur, 0);
    }
    alarm(0);
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    fprintf(stderr, "C3 log: %ld reads under %ld flips: delivered %ld (intact %ld, altered "
            "after the CRC check %ld), corrupt-error %ld, other-error %ld, restored %ld times, "
            "lengths out of bounds %ld\n", reads, (long)atomic_load(&flips), got, intact, altered,
            corrupt, other, restores, bad_len);
    memcpy(m, image, SEG);
    munmap(m, SEG);
    free(image);
    qm_log_close(lg);
    CHECK(bad_len == 0);
    CHECK(got > 0);
}

int main(void) {
    check_use_private_shm_dir("adversary");
    sw_seed_from_env();
    seconds = (double)sw_env_long("PYQMEM_ADVERSARY_SECONDS", 2);
    max_reads = sw_env_long("PYQMEM_ADVERSARY_READS", 10000000);
    RUN(ring_reads_survive_a_scribbling_peer);
    RUN(log_reads_survive_a_scribbling_peer);
    CHECK_EXIT();
}
