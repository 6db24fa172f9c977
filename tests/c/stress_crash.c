/*
 * stress_crash.c - SIGKILL producers and consumers at random points and
 * check that the ring never wedges, never delivers a torn message, and
 * delivers every acknowledged message exactly once.
 *
 *  producers: 3 survivors produce throughout while a fresh victim producer
 *    is killed after a random 0-3 ms, TRIALS times.  One consumer (this
 *    process) checks per-producer order: each producer's messages must
 *    arrive as 0, 1, 2, ... with nothing skipped or repeated; a victim's
 *    last message may be missing only if its put had not returned.  After
 *    each kill a survivor's message must arrive within 1 s.
 *  consumers: 2 producers put a fixed set; victim consumers are killed
 *    mid-get at random; afterwards every message was delivered at most
 *    once and at most one per killed consumer is missing (its in-flight
 *    record: Queue is at-most-once for a consumer that dies holding it).
 *
 * PYQMEM_CRASH_TRIALS (default 200) sets the trial count of each part.
 */
#include "check.h"
#include "internal.h"
#include "stress_common.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SURVIVORS 3
#define CAP (1 << 16)

static long trials;
static _Atomic uint64_t *acked;        /* per producer id: puts that returned */
static _Atomic int *stop;

static void *shared_alloc(size_t n) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    memset(p, 0, n);
    return p;
}

static void producer_main(const char *name, uint32_t id, long limit) {
    qm_ring_t *r;
    if (qm_ring_open(name, QM_OPEN_ONLY, CAP, 0, &r)) _exit(2);
    static uint8_t buf[STRESS_MAX_MSG];
    for (uint64_t s = 0; !atomic_load(stop) && (limit < 0 || (long)s < limit); s++) {
        size_t n = stress_make(buf, id, s, STRESS_MAX_PAYLOAD);
        qm_iovec_t iov = {buf, n};
        int rc;
        do {
            rc = qm_ring_put(r, &iov, 1, qm_now_ns() + 50000000);
        } while (rc == QM_ETIMEDOUT && !atomic_load(stop));
        if (rc == QM_ETIMEDOUT) break;
        if (rc) _exit(3);
        atomic_store(&acked[id], s + 1);
    }
    qm_ring_close(r);
    _exit(0);
}

static pid_t spawn_producer(const char *name, uint32_t id, long limit) {
    pid_t pid = fork();
    if (pid == 0) producer_main(name, id, limit);
    return pid;
}

static void sleep_us(long us) {
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ----- producers die ------------------------------------------------------- */
static long *next_seq;    /* per id, in this process: next expected seq */
static long torn, disorder;

static int take_one(qm_ring_t *r, int64_t deadline, uint32_t *who) {
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, deadline);
    if (rc) return rc;
    uint32_t id;
    uint64_t seq;
    if (stress_check(rec.data, rec.len, &id, &seq) || id >= SURVIVORS + trials) {
        torn++;
    } else {
        if ((long)seq != next_seq[id]) {
            fprintf(stderr, "producer %u: got seq %llu, expected %ld\n", id,
                    (unsigned long long)seq, next_seq[id]);
            disorder++;
        }
        next_seq[id] = (long)seq + 1;
        *who = id;
    }
    qm_ring_get_end(r, &rec);
    return 0;
}

static void killed_producers_lose_nothing_acknowledged_and_never_wedge(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("crashp", QM_CREATE_ONLY, CAP, 0, &r), 0);
    long ids = SURVIVORS + trials;
    acked = shared_alloc(sizeof(*acked) * (size_t)ids);
    next_seq = calloc((size_t)ids, sizeof *next_seq);
    atomic_store(stop, 0);
    pid_t surv[SURVIVORS];
    for (uint32_t i = 0; i < SURVIVORS; i++) surv[i] = spawn_producer("crashp", i, -1);
    long wedged = 0;
    int64_t worst_recovery = 0;
    for (long t = 0; t < trials; t++) {
        uint32_t id = (uint32_t)(SURVIVORS + t);
        pid_t victim = spawn_producer("crashp", id, -1);
        int64_t kill_at = qm_now_ns() + (rand() % 3000) * 1000;
        uint32_t who;
        while (qm_now_ns() < kill_at) take_one(r, kill_at, &who);
        kill(victim, SIGKILL);
        waitpid(victim, NULL, 0);
        /* the ring must keep flowing: a survivor's message within 1 s */
        int64_t t0 = qm_now_ns(), limit = t0 + 1000000000;
        int flowing = 0;
        while (!flowing && qm_now_ns() < limit) {
            who = UINT32_MAX;
            if (take_one(r, limit, &who) == 0 && who < SURVIVORS) flowing = 1;
        }
        if (!flowing) wedged++;
        else if (qm_now_ns() - t0 > worst_recovery) worst_recovery = qm_now_ns() - t0;
    }
    atomic_store(stop, 1);
    for (int i = 0; i < SURVIVORS; i++) waitpid(surv[i], NULL, 0);
    uint32_t who;
    while (take_one(r, qm_now_ns() + 200000000, &who) == 0) {
    }
    long lost = 0, extra = 0;
    for (long id = 0; id < ids; id++) {
        long a = (long)atomic_load(&acked[id]);
        if (next_seq[id] < a) lost += a - next_seq[id];
        /* a victim's last put may have committed without returning */
        long slack = id >= SURVIVORS ? 1 : 0;
        if (next_seq[id] > a + slack) extra += next_seq[id] - a - slack;
    }
    qm_ring_stats_t st;
    qm_ring_stats(r, &st);
    fprintf(stderr, "producer kills: %ld trials, lost %ld, unexpected %ld, torn %ld, "
            "out of order %ld, wedged %ld, abandoned records skipped %llu, "
            "slowest resume %.1f ms\n", trials, lost, extra, torn, disorder, wedged,
            (unsigned long long)st.abandoned, (double)worst_recovery / 1e6);
    CHECK(lost == 0 && extra == 0 && torn == 0 && disorder == 0 && wedged == 0);
    qm_ring_close(r);
    qm_ring_unlink("crashp");
    munmap(acked, sizeof(*acked) * (size_t)ids);
    free(next_seq);
}

/* ----- consumers die -------------------------------------------------------- */
static _Atomic uint8_t *delivered;   /* [2][per] */
static long per;

static void consumer_main(const char *name) {
    qm_ring_t *r;
    if (qm_ring_open(name, QM_OPEN_ONLY, CAP, 0, &r)) _exit(2);
    for (;;) {
        qm_record_t rec;
        int rc = qm_ring_get_begin(r, &rec, qm_now_ns() + 100000000);
        if (rc == QM_ETIMEDOUT) continue;
        if (rc) _exit(3);
        uint32_t id;
        uint64_t seq;
        if (stress_check(rec.data, rec.len, &id, &seq) == 0 && id < 2 && (long)seq < per)
            atomic_fetch_add(&delivered[(long)id * per + (long)seq], 1);
        else
            atomic_fetch_add(&delivered[2 * per], 1);   /* torn marker */
        qm_ring_get_end(r, &rec);
    }
}

static void killed_consumers_lose_at_most_their_inflight_message(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("crashc", QM_CREATE_ONLY, CAP, 0, &r), 0);
    per = stress_scale(20000);
    delivered = shared_alloc((size_t)(2 * per + 1));
    acked = shared_alloc(sizeof(*acked) * 2);
    atomic_store(stop, 0);
    pid_t prod[2] = {spawn_producer("crashc", 0, per), spawn_producer("crashc", 1, per)};
    long kills = 0;
    for (long t = 0; t < trials; t++) {
        pid_t victim = fork();
        if (victim == 0) consumer_main("crashc");
        sleep_us(rand() % 3000);
        kill(victim, SIGKILL);
        waitpid(victim, NULL, 0);
        kills++;
    }
    /* a clean consumer drains the rest */
    pid_t last = fork();
    if (last == 0) consumer_main("crashc");
    waitpid(prod[0], NULL, 0);
    waitpid(prod[1], NULL, 0);
    uint64_t depth = 1;
    for (int i = 0; i < 500 && depth; i++) {
        sleep_us(10000);
        qm_ring_depth(r, &depth);
    }
    sleep_us(50000);
    kill(last, SIGKILL);
    waitpid(last, NULL, 0);
    long lost = 0, dup = 0;
    for (long i = 0; i < 2 * per; i++) {
        lost += atomic_load(&delivered[i]) == 0;
        dup += atomic_load(&delivered[i]) > 1;
    }
    long torn_c = atomic_load(&delivered[2 * per]);
    qm_ring_stats_t st;
    qm_ring_stats(r, &st);
    fprintf(stderr, "consumer kills: %ld kills, %ld messages, lost %ld (allowed <= %ld), "
            "duplicated %ld, torn %ld, reclaimed records %llu, acked %llu+%llu\n", kills,
            2 * per, lost, kills + 1, dup, torn_c, (unsigned long long)st.reclaimed, (unsigned long long)atomic_load(&acked[0]),
            (unsigned long long)atomic_load(&acked[1]));
    CHECK(atomic_load(&acked[0]) == (uint64_t)per && atomic_load(&acked[1]) == (uint64_t)per);
    CHECK(dup == 0 && torn_c == 0 && lost <= kills + 1);
    qm_ring_close(r);
    qm_ring_unlink("crashc");
}

int main(void) {
    check_use_private_shm_dir("crash");
    const char *t = getenv("PYQMEM_CRASH_TRIALS");
    trials = t ? atol(t) : 200;
    if (trials < 1) trials = 1;
    srand((unsigned)getpid());
    stop = shared_alloc(sizeof *stop);
    RUN(killed_producers_lose_nothing_acknowledged_and_never_wedge);
    RUN(killed_consumers_lose_at_most_their_inflight_message);
    CHECK_EXIT();
}
