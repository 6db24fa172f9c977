/*
 * stress_group.c - members of one consumer group claim, ack and nack
 * every offset of two partitions while the parent SIGKILLs random members
 * and starts new ones.  Checks: every offset is completed (the committed
 * offset reaches the end: nothing lost, dead members' leases came back)
 * and no offset is completed twice (an ack is accepted once).
 *
 * QM_STRESS_MODE=threads runs the members as threads of one process, with
 * no kills (the TSan build), and then also checks every ack is counted.
 * QM_STRESS_MEMBERS (default 4, up to 64) and QM_STRESS_WINDOW (default
 * 256, down to 16) widen the races: a small window reuses each entry
 * often, so a claimer that stalls after reading the cursor finds its
 * entries reused.  Bounded by count (PYQMEM_STRESS_SCALE) and by a 60 s
 * deadline.
 */
#include "check.h"
#include "stress_common.h"

#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PARTS 2u
#define MAX_MEMBERS 64
#define LEASE_NS (300 * INT64_C(1000000))
#define DEADLINE_NS (60 * INT64_C(1000000000))

static char topic_dir[400];
static uint64_t n_offsets;
static int members = 4;
static uint32_t window = 256;
static _Atomic uint32_t *acked;   /* PARTS x n_offsets, shared with children */

static int open_member(qm_group_t **g) {
    qm_group_config_t c = {PARTS, window, 0, NULL};
    return qm_group_open(topic_dir, "stress", QM_OPEN_OR_CREATE, &c, g, NULL);
}

static bool all_committed(qm_group_t *g) {
    for (uint32_t p = 0; p < PARTS; p++) {
        qm_group_partition_stats_t st;
        if (qm_group_partition_stats(g, p, &st) || st.committed < n_offsets) return false;
    }
    return true;
}

/* One member: claim batches from each partition in turn until everything
 * is committed.  Returns 0, or a failing status. */
static bool slow;   /* process mode: give the killer time to hit members mid-batch */

static int member(unsigned seed) {
    qm_group_t *g;
    int rc = open_member(&g);
    if (rc) return rc;
    int64_t give_up = qm_now_ns() + DEADLINE_NS;
    qm_group_lease_t l[16];
    for (uint32_t round = 0; !all_committed(g); round++) {
        if (qm_now_ns() > give_up) {
            rc = QM_ETIMEDOUT;
            break;
        }
        uint32_t p = round % PARTS;
        size_t got = 0;
        seed = seed * 1103515245u + 12345u;
        size_t want = 1 + (seed >> 16) % 16;
        rc = qm_group_claim(g, p, n_offsets, qm_now_ns(), LEASE_NS, 0, l, want, &got);
        if (rc == QM_EAGAIN || rc == QM_EFULL) {
            rc = QM_OK;
            usleep(200);
            continue;
        }
        if (rc) break;
        if (slow) usleep(300);   /* "processing", leases held */
        for (size_t i = 0; i < got; i++) {
            seed = seed * 1103515245u + 12345u;
            if ((seed >> 16) % 32 == 0) {   /* give some back */
                rc = qm_group_nack(g, p, l[i].offset, l[i].epoch, qm_now_ns() + 100000);
                if (rc != QM_OK && rc != QM_ESTALE) goto out;
                continue;
            }
            rc = qm_group_ack(g, p, l[i].offset, l[i].epoch);
            if (rc == QM_OK)
                atomic_fetch_add_explicit(&acked[p * n_offsets + l[i].offset], 1,
                                          memory_order_relaxed);
            else if (rc != QM_ESTALE)
                goto out;
        }
        rc = QM_OK;
    }
out:
    qm_group_close(g);
    return rc;
}

static void *member_thread(void *arg) {
    return (void *)(intptr_t)member((unsigned)(uintptr_t)arg);
}

static pid_t spawn(unsigned seed) {
    pid_t pid = fork();
    if (pid == 0) _exit(member(seed) == QM_OK ? 0 : 1);
    return pid;
}

static long env_long(const char *name, long dflt, long lo, long hi) {
    const char *s = getenv(name);
    long v = s ? atol(s) : dflt;
    return v < lo ? lo : v > hi ? hi : v;
}

static void every_offset_is_completed_once_despite_killed_members(void) {
    bool threads = getenv("QM_STRESS_MODE") && !strcmp(getenv("QM_STRESS_MODE"), "threads");
    members = (int)env_long("QM_STRESS_MEMBERS", 4, 1, MAX_MEMBERS);
    window = (uint32_t)env_long("QM_STRESS_WINDOW", 256, 16, 65536);
    n_offsets = (uint64_t)stress_scale(threads ? 20000 : 5000);
    slow = !threads;
    size_t bytes = PARTS * n_offsets * sizeof *acked;
    acked = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(acked != MAP_FAILED);
    snprintf(topic_dir, sizeof topic_dir, "%s/topic", check_dir);
    mkdir(topic_dir, 0700);
    qm_group_t *g;
    CHECK_RC(open_member(&g), 0);
    long kills = 0;
    if (threads) {
        pthread_t t[MAX_MEMBERS];
        for (int i = 0; i < members; i++)
            CHECK(pthread_create(&t[i], NULL, member_thread, (void *)(uintptr_t)(i + 1)) == 0);
        for (int i = 0; i < members; i++) {
            void *res;
            pthread_join(t[i], &res);
            CHECK_RC((int)(intptr_t)res, 0);
        }
    } else {
        pid_t pids[MAX_MEMBERS];
        unsigned seed = (unsigned)getpid();
        for (int i = 0; i < members; i++) pids[i] = spawn(seed + (unsigned)i);
        int64_t give_up = qm_now_ns() + DEADLINE_NS;
        long max_kills = stress_scale(40);
        int running = members;
        while (running > 0) {
            CHECK(qm_now_ns() < give_up);
            usleep(3000);
            seed = seed * 1103515245u + 12345u;
            int victim = (int)((seed >> 16) % (unsigned)members);
            if (kills < max_kills && pids[victim] > 0 && !all_committed(g)) {
                kill(pids[victim], SIGKILL);
                waitpid(pids[victim], NULL, 0);
                kills++;
                pids[victim] = spawn(seed);
            }
            for (int i = 0; i < members; i++) {
                int st;
                if (pids[i] > 0 && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                    pids[i] = 0;
                    running--;
                }
            }
        }
    }
    CHECK(all_committed(g));
    uint64_t completed = 0;
    for (uint64_t i = 0; i < PARTS * n_offsets; i++) {
        uint32_t a = atomic_load(&acked[i]);
        CHECK(a <= 1);   /* a kill may lose the count of an ack, never add one */
        completed += a;
    }
    if (threads) CHECK(completed == PARTS * n_offsets);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    fprintf(stderr, "  %s: %d members, window %u, %llu offsets, %ld kills, %llu acks counted, "
            "%llu redelivered (p0)\n", threads ? "threads" : "processes", members, window,
            (unsigned long long)(PARTS * n_offsets), kills,
            (unsigned long long)completed, (unsigned long long)st.redelivered);
    qm_group_close(g);
    munmap(acked, bytes);
}

int main(void) {
    check_use_private_shm_dir("stress-group");
    RUN(every_offset_is_completed_once_despite_killed_members);
    CHECK_EXIT();
}
