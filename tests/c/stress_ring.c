/*
 * stress_ring.c - many producers and consumers hammer one small ring;
 * every message must arrive exactly once, intact, in per-producer order
 * as seen by each consumer.
 *
 *   threads: P producer and C consumer threads over one anonymous shared
 *            mapping (the variant TSan checks);
 *   fork:    the same with processes over a named ring.
 * QM_STRESS_MODE=threads|fork picks one (default both);
 * PYQMEM_STRESS_SCALE multiplies the message count.
 */
#include "check.h"
#include "internal.h"
#include "stress_common.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define P 3
#define C 3

static long per_producer;
static _Atomic uint8_t *seen;      /* [P][per_producer] delivery counts */
static _Atomic long *delivered;    /* total deliveries */
static _Atomic long *errors;

static void *shared_alloc(size_t n) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    return p;
}

static void produce(qm_ring_t *r, uint32_t id) {
    static _Thread_local uint8_t buf[STRESS_MAX_MSG];
    for (long s = 0; s < per_producer; s++) {
        size_t n = stress_make(buf, id, (uint64_t)s, 3000);
        qm_iovec_t iov = {buf, n};
        int rc = qm_ring_put(r, &iov, 1, qm_now_ns() + 10 * INT64_C(1000000000));
        if (rc) {
            fprintf(stderr, "producer %u: put failed: %s [%s]\n", id, qm_status_str(rc), qm_last_error());
            atomic_fetch_add(errors, 1);
            return;
        }
    }
}

static void consume(qm_ring_t *r) {
    int64_t last[P];
    for (int i = 0; i < P; i++) last[i] = -1;
    long total = (long)P * per_producer;
    while (atomic_load(delivered) < total) {
        qm_record_t rec;
        int rc = qm_ring_get_begin(r, &rec, qm_now_ns() + 20000000);
        if (rc == QM_ETIMEDOUT) continue;
        if (rc) {
            fprintf(stderr, "consumer: get failed: %s [%s]\n", qm_status_str(rc), qm_last_error());
            atomic_fetch_add(errors, 1);
            return;
        }
        uint32_t id;
        uint64_t seq;
        QM_PAYLOAD_ACCESS_BEGIN();   /* see internal.h: stale helpers may peek here */
        int bad = stress_check(rec.data, rec.len, &id, &seq);
        QM_PAYLOAD_ACCESS_END();
        if (bad || id >= P || seq >= (uint64_t)per_producer) {
            fprintf(stderr, "consumer: torn or unexpected message (len %llu)\n",
                    (unsigned long long)rec.len);
            atomic_fetch_add(errors, 1);
        } else {
            if ((int64_t)seq <= last[id]) {
                fprintf(stderr, "consumer: producer %u seq %llu after %lld\n", id,
                        (unsigned long long)seq, (long long)last[id]);
                atomic_fetch_add(errors, 1);
            }
            last[id] = (int64_t)seq;
            atomic_fetch_add(&seen[(long)id * per_producer + (long)seq], 1);
        }
        qm_ring_get_end(r, &rec);
        atomic_fetch_add(delivered, 1);
    }
}

static int verify(const char *mode) {
    long lost = 0, dup = 0;
    for (long i = 0; i < (long)P * per_producer; i++) {
        uint8_t s = atomic_load(&seen[i]);
        lost += s == 0;
        dup += s > 1;
    }
    fprintf(stderr, "%s: %ld messages, lost %ld, duplicated %ld, errors %ld\n", mode,
            (long)P * per_producer, lost, dup, atomic_load(errors));
    return lost == 0 && dup == 0 && atomic_load(errors) == 0;
}

static void reset(void) {
    memset((void *)seen, 0, (size_t)P * (size_t)per_producer);
    atomic_store(delivered, 0);
    atomic_store(errors, 0);
}

typedef struct { qm_ring_t *r; uint32_t id; } job_t;
static void *producer_thread(void *arg) {
    job_t *j = arg;
    produce(j->r, j->id);
    return NULL;
}
static void *consumer_thread(void *arg) {
    consume(((job_t *)arg)->r);
    return NULL;
}

static void threads_deliver_every_message_once_in_order(void) {
    reset();
    uint64_t len = qm_ring_memory_size(1 << 15);
    void *mem = shared_alloc(len);
    CHECK_RC(qm_ring_format_memory(mem, len, 1 << 15, 0), 0);
    pthread_t th[P + C];
    job_t jobs[P + C];
    for (int i = 0; i < P + C; i++) {
        CHECK_RC(qm_ring_attach_memory(mem, len, &jobs[i].r), 0);
        jobs[i].id = (uint32_t)i;
        pthread_create(&th[i], NULL, i < P ? producer_thread : consumer_thread, &jobs[i]);
    }
    for (int i = 0; i < P + C; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < P + C; i++) qm_ring_close(jobs[i].r);
    munmap(mem, len);
    CHECK(verify("threads"));
}

static void processes_deliver_every_message_once_in_order(void) {
    reset();
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("stress", QM_CREATE_ONLY, 1 << 15, 0, &r), 0);
    pid_t pids[P + C];
    for (int i = 0; i < P + C; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            qm_ring_t *mine;
            if (qm_ring_open("stress", QM_OPEN_ONLY, 1 << 15, 0, &mine)) _exit(2);
            if (i < P) produce(mine, (uint32_t)i);
            else consume(mine);
            qm_ring_close(mine);
            _exit(0);
        }
    }
    int bad = 0;
    for (int i = 0; i < P + C; i++) {
        int status;
        waitpid(pids[i], &status, 0);
        bad += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    qm_ring_close(r);
    qm_ring_unlink("stress");
    CHECK(bad == 0);
    CHECK(verify("fork"));
}

int main(void) {
    check_use_private_shm_dir("stress");
    per_producer = stress_scale(100000);
    seen = shared_alloc((size_t)P * (size_t)per_producer);
    delivered = shared_alloc(sizeof *delivered);
    errors = shared_alloc(sizeof *errors);
    const char *mode = getenv("QM_STRESS_MODE");
    if (!mode || strcmp(mode, "fork") != 0) RUN(threads_deliver_every_message_once_in_order);
    if (!mode || strcmp(mode, "threads") != 0) RUN(processes_deliver_every_message_once_in_order);
    CHECK_EXIT();
}
