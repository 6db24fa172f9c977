/*
 * stress_log_crash.c - SIGKILL log writers at random points while others
 * keep appending; afterwards (and while it happens) every record whose
 * append returned is present, intact and in per-writer order, nothing torn
 * is ever read, the log keeps accepting appends, and a reopen of the log
 * after everyone exited shows the same records.
 *
 * PYQMEM_CRASH_TRIALS (default 200) sets the number of victims.
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
#define SEG (256u << 10)
static const qm_log_config_t cfg = {SEG, 0, 0, 0};

static long trials;
static _Atomic uint64_t *acked;   /* per writer id: appends that returned */
static _Atomic int *stop;
static char dir[400];

static void *shared_alloc(size_t n) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) abort();
    return p;
}

static void writer_main(uint32_t id) {
    qm_log_t *lg;
    if (qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg)) _exit(2);
    static uint8_t buf[STRESS_MAX_MSG];
    for (uint64_t s = 0; !atomic_load(stop); s++) {
        size_t n = stress_make(buf, id, s, STRESS_MAX_PAYLOAD);
        qm_iovec_t v = {buf, n};
        qm_log_entry_t e = {&id, sizeof id, NULL, 0, &v, 1, 0};
        uint64_t off;
        if (qm_log_append(lg, &e, &off)) _exit(3);
        atomic_store(&acked[id], s + 1);
        if (id < SURVIVORS) usleep(50);   /* survivors pace themselves */
    }
    qm_log_close(lg);
    _exit(0);
}

typedef struct checker {
    long *next;      /* per id: next expected seq */
    long records, gaps, torn, disorder;
} checker_t;

/* Read everything available from cur; returns records read. */
static long drain(qm_log_t *lg, qm_log_cursor_t *cur, checker_t *ck, int64_t deadline) {
    long n = 0;
    for (;;) {
        qm_log_record_t rec;
        uint64_t before = cur->next_offset;
        int rc = qm_log_read(lg, cur, &rec, deadline);
        if (rc) {
            if (rc != QM_ETIMEDOUT && rc != QM_EAGAIN) {
                fprintf(stderr, "read: %s [%s]\n", qm_status_str(rc), qm_last_error());
                ck->torn++;
            }
            return n;
        }
        ck->gaps += (long)(rec.offset - before);   /* abandoned records skipped */
        uint32_t id;
        uint64_t seq;
        if (stress_check(rec.value, rec.value_len, &id, &seq) || id >= SURVIVORS + trials) {
            ck->torn++;
        } else {
            if ((long)seq != ck->next[id]) ck->disorder++;
            ck->next[id] = (long)seq + 1;
        }
        ck->records++;
        n++;
        deadline = QM_NOWAIT;
    }
}

static void killed_writers_lose_nothing_acknowledged(void) {
    snprintf(dir, sizeof dir, "%s/log", check_dir);
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg), 0);
    long ids = SURVIVORS + trials;
    acked = shared_alloc(sizeof *acked * (size_t)ids);
    stop = shared_alloc(sizeof *stop);
    checker_t ck = {calloc((size_t)ids, sizeof(long)), 0, 0, 0, 0};
    pid_t surv[SURVIVORS];
    for (uint32_t i = 0; i < SURVIVORS; i++)
        if ((surv[i] = fork()) == 0) writer_main(i);
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    long wedged = 0;
    for (long t = 0; t < trials; t++) {
        pid_t victim = fork();
        if (victim == 0) writer_main((uint32_t)(SURVIVORS + t));
        int64_t kill_at = qm_now_ns() + (rand() % 3000) * 1000;
        while (qm_now_ns() < kill_at) drain(lg, &cur, &ck, kill_at);
        kill(victim, SIGKILL);
        waitpid(victim, NULL, 0);
        /* readers must keep getting survivors' records within 1 s */
        if (drain(lg, &cur, &ck, qm_now_ns() + 1000000000) == 0) wedged++;
    }
    atomic_store(stop, 1);
    for (int i = 0; i < SURVIVORS; i++) waitpid(surv[i], NULL, 0);
    drain(lg, &cur, &ck, qm_now_ns() + 200000000);
    long lost = 0, extra = 0;
    for (long id = 0; id < ids; id++) {
        long a = (long)atomic_load(&acked[id]);
        if (ck.next[id] < a) lost += a - ck.next[id];
        if (ck.next[id] > a + (id >= SURVIVORS)) extra++;
    }
    qm_log_stats_t st;
    qm_log_stats(lg, &st);
    fprintf(stderr, "log writer kills: %ld trials, %ld records, lost %ld, unexpected %ld, "
            "torn %ld, out of order %ld, wedged %ld, gaps %ld (abandoned %llu), rolls %llu\n",
            trials, ck.records, lost, extra, ck.torn, ck.disorder, wedged, ck.gaps,
            (unsigned long long)st.abandoned, (unsigned long long)st.segments_rolled);
    CHECK(lost == 0 && extra == 0 && ck.torn == 0 && ck.disorder == 0 && wedged == 0);
    /* everyone gone: a reopen sees the same records, and appends go on */
    long before = ck.records;
    qm_log_close(lg);
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg), 0);
    checker_t again = {calloc((size_t)ids, sizeof(long)), 0, 0, 0, 0};
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    drain(lg, &cur, &again, QM_NOWAIT);
    CHECK(again.records == before && again.torn == 0);
    uint64_t off;
    qm_iovec_t v = {"x", 1};
    qm_log_entry_t e = {NULL, 0, NULL, 0, &v, 1, 0};
    CHECK_RC(qm_log_append(lg, &e, &off), 0);
    qm_log_close(lg);
    free(ck.next);
    free(again.next);
}

int main(void) {
    check_use_private_shm_dir("logcrash");
    const char *t = getenv("PYQMEM_CRASH_TRIALS");
    trials = t ? atol(t) : 200;
    if (trials < 1) trials = 1;
    srand((unsigned)getpid());
    RUN(killed_writers_lose_nothing_acknowledged);
    CHECK_EXIT();
}
