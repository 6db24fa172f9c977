/*
 * stress_killpoints.c - the named kill-point suite (built only with
 * -DQMEM_KILLPOINTS=ON).  For every kill point in `points` below, a forked
 * child runs ring / log / group operations with
 * PYQMEM_KILLPOINT=name:1:skip (skip random), so it SIGKILLs itself at
 * that point; a trial counts as a hit when the child died by SIGKILL and
 * logged that point ($PYQMEM_KILLPOINT_LOG).  Then a fresh process and
 * this one check recovery:
 *   ring:  a fresh process's put reaches this consumer within 1 s (no
 *          wedge); nothing acknowledged lost, nothing torn, per-producer
 *          order; a killed consumer loses at most its in-flight record and
 *          nothing is delivered twice.
 *   create: a fresh OPEN_OR_CREATE of the half-created object succeeds and
 *          round-trips a message within 1 s.
 *   log:   every append that returned is read back, in order, untorn; a
 *          fresh process appends and this reader gets it within 1 s; a
 *          reopen shows the same records; no index without its segment.
 *   group: a fresh member completes every offset within 1 s (committed
 *          reaches the end), no offset is acked twice, and every lease the
 *          dead member held is refused (QM_ESTALE) afterwards.
 * Prints point, trials, hits, worst recovery in ms.  Fails if a point was
 * never hit or a check failed.  PYQMEM_KP_TRIALS trials per
 * point (default 20); the whole run stops adding trials after 45 s.
 */
#include "check.h"
#include "stress_common.h"

#include <dirent.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef QM_KILLPOINTS
#error "stress_killpoints needs -DQMEM_KILLPOINTS=ON"
#endif

typedef enum { K_RING_PUT, K_RING_GET, K_CREATE, K_LOG, K_LOG_RETAIN, K_GROUP, K_GROUP_NACK,
               K_GROUP_SWEEP } kind_t;

typedef struct point {
    const char *name;
    kind_t kind;
    unsigned max_skip;   /* the child passes the point 0..max_skip times first
                          * (random; trial 1 takes max_skip) */
} point_t;

/* Every kill point of the core (grep -rn QM_KILLPOINT csrc/). */
static const point_t points[] = {
    {"ring.before_claim", K_RING_PUT, 16},
    {"ring.after_claim", K_RING_PUT, 16},
    {"ring.after_reserve", K_RING_PUT, 16},
    {"ring.mid_copy", K_RING_PUT, 16},
    {"ring.before_commit", K_RING_PUT, 16},
    {"ring.after_take", K_RING_GET, 16},
    {"ring.before_free", K_RING_GET, 16},
    {"create.after_open", K_CREATE, 0},
    {"create.before_publish", K_CREATE, 0},
    {"log.after_claim", K_LOG, 16},
    {"log.mid_copy", K_LOG, 16},
    {"log.before_commit", K_LOG, 16},
    {"log.index_write", K_LOG, 4},
    {"log.roll_before_publish", K_LOG, 1},
    {"log.roll_before_append", K_LOG, 1},
    {"log.retention_delete", K_LOG_RETAIN, 1},
    {"group.claim_after_entry", K_GROUP, 16},
    {"group.claim_before_publish", K_GROUP, 8},
    {"group.ack_before_advance", K_GROUP, 63},   /* 63: the last offset */
    {"group.commit_before_cas", K_GROUP, 16},
    {"group.nack_after_relock", K_GROUP_NACK, 8},
    {"group.release_after_lock", K_GROUP_SWEEP, 2},
    {"group.sweep_before_settled", K_GROUP_SWEEP, 0},
};
#define NPOINTS (sizeof points / sizeof points[0])

#define RING_CAP (1u << 18)
#define MAX_PAYLOAD 2000u
#define SEG (64u << 10)
#define MAX_IDS 4096
#define SENT_ID 0u   /* the fresh process's sentinel messages */
#define GET_ID 1u    /* messages this process puts for killed consumers */
#define FIRST_VICTIM 2u
#define GROUP_WINDOW 64u
#define MAX_OFFSETS (1u << 16)
#define SEC INT64_C(1000000000)

/* Shared with children (MAP_SHARED anonymous). */
typedef struct shared {
    _Atomic uint64_t acked[MAX_IDS];      /* per producer id: puts/appends that returned */
    _Atomic uint32_t got[MAX_OFFSETS];    /* ring: GET_ID seq delivered; group: offset acked */
    _Atomic uint32_t n_leases;
    qm_group_lease_t leases[4096];        /* leases the victims held */
    uint64_t end;                         /* group: offsets to complete */
    _Atomic uint32_t holders;             /* lease holders that claimed */
} shared_t;

static shared_t *sh;
static char dir[600];
static char kp_log[700];
static uint32_t next_id = FIRST_VICTIM;   /* victim producer ids, across points */
static uint64_t sent_seq, get_seq;        /* sentinel / GET_ID messages put so far */

static long env_long(const char *name, long dflt) {
    const char *s = getenv(name);
    return s && atol(s) > 0 ? atol(s) : dflt;
}

/* ----- running one child at a kill point ------------------------------------- */
typedef void (*body_fn)(const point_t *pt, uint32_t id);

/* 1: died at the point; 0: finished without reaching it; -1: failed. */
static int run_victim(const point_t *pt, unsigned skip, body_fn body, uint32_t id) {
    unlink(kp_log);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char spec[128];
        snprintf(spec, sizeof spec, "%s:1:%u", pt->name, skip);
        setenv("PYQMEM_KILLPOINT", spec, 1);
        setenv("PYQMEM_KILLPOINT_LOG", kp_log, 1);
        body(pt, id);
        _exit(0);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
        fprintf(stderr, "%s: victim ended with status %#x\n", pt->name, st);
        return -1;
    }
    char line[128] = "";
    FILE *f = fopen(kp_log, "r");
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
    }
    line[strcspn(line, "\n")] = 0;
    if (strcmp(line, pt->name) != 0) {
        fprintf(stderr, "%s: victim killed, but logged '%s'\n", pt->name, line);
        return -1;
    }
    return 1;
}

/* Run fn in a fresh process (no kill point); its exit status, or -1. */
static int run_fresh(int (*fn)(const point_t *), const point_t *pt) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(fn(pt));
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void point_path(const point_t *pt, const char *what, char *buf, size_t n) {
    snprintf(buf, n, "kp-%s-%s", what, pt->name);
    for (char *p = buf; *p; p++)
        if (*p == '.') *p = '_';
}

/* ----- ring ----------------------------------------------------------------- */
static qm_ring_t *ring;
static long ring_next[MAX_IDS];   /* per id: next expected seq */
static long ring_torn, ring_disorder;

static void put_msg(qm_ring_t *r, uint32_t id, uint64_t seq) {
    static uint8_t buf[STRESS_MAX_MSG];
    size_t n = stress_make(buf, id, seq, MAX_PAYLOAD);
    qm_iovec_t iov[2] = {{buf, n / 2}, {buf + n / 2, n - n / 2}};
    int rc = qm_ring_put(r, iov, 2, qm_now_ns() + SEC);
    if (rc) {
        fprintf(stderr, "put: %s [%s]\n", qm_status_str(rc), qm_last_error());
        _exit(3);
    }
}

static void ring_producer(const point_t *pt, uint32_t id) {
    char name[80];
    point_path(pt, "ring", name, sizeof name);
    qm_ring_t *r;
    if (qm_ring_open(name, QM_OPEN_ONLY, RING_CAP, 0, &r)) _exit(2);
    for (uint64_t s = 0; s < 64; s++) {
        put_msg(r, id, s);
        atomic_store(&sh->acked[id], s + 1);
    }
    qm_ring_close(r);
}

static void ring_consumer(const point_t *pt, uint32_t id) {
    (void)id;
    char name[80];
    point_path(pt, "ring", name, sizeof name);
    qm_ring_t *r;
    if (qm_ring_open(name, QM_OPEN_ONLY, RING_CAP, 0, &r)) _exit(2);
    for (;;) {
        qm_record_t rec;
        int rc = qm_ring_get_begin(r, &rec, qm_now_ns() + 200000000);
        if (rc == QM_ETIMEDOUT || rc == QM_EAGAIN) break;
        if (rc) _exit(3);
        uint32_t who;
        uint64_t seq;
        if (stress_check(rec.data, rec.len, &who, &seq) == 0 && who == GET_ID &&
            seq < MAX_OFFSETS)
            atomic_fetch_add(&sh->got[seq], 1);
        else
            _exit(4);   /* torn, or not this test's */
        qm_ring_get_end(r, &rec);
    }
    qm_ring_close(r);
}

static int fresh_ring_sentinel(const point_t *pt) {
    char name[80];
    point_path(pt, "ring", name, sizeof name);
    qm_ring_t *r;
    if (qm_ring_open(name, QM_OPEN_ONLY, RING_CAP, 0, &r)) return 2;
    put_msg(r, SENT_ID, sent_seq);
    qm_ring_close(r);
    return 0;
}

/* Take everything up to the sentinel `sent_seq`; false if it did not come
 * before the deadline. */
static bool ring_drain_to_sentinel(int64_t deadline) {
    for (;;) {
        qm_record_t rec;
        int rc = qm_ring_get_begin(ring, &rec, deadline);
        if (rc) {
            fprintf(stderr, "  ring get: %s [%s]\n", qm_status_str(rc), qm_last_error());
            return false;
        }
        uint32_t id;
        uint64_t seq;
        bool sentinel = false;
        if (stress_check(rec.data, rec.len, &id, &seq) || id >= MAX_IDS) {
            ring_torn++;
        } else if (id == GET_ID) {
            if (seq < MAX_OFFSETS) atomic_fetch_add(&sh->got[seq], 1);
        } else {
            if ((long)seq != ring_next[id]) ring_disorder++;
            ring_next[id] = (long)seq + 1;
            sentinel = id == SENT_ID && seq == sent_seq;
        }
        qm_ring_get_end(ring, &rec);
        if (sentinel) return true;
    }
}

/* ----- log ------------------------------------------------------------------ */
static qm_log_t *lg;
static qm_log_cursor_t lcur;
static long log_next[MAX_IDS];
static long log_torn, log_disorder, log_records;
static bool log_gaps_ok;   /* retention may remove records before they are read */

static qm_log_config_t log_cfg(const point_t *pt) {
    qm_log_config_t c = {SEG, pt->kind == K_LOG_RETAIN ? 3 * SEG : 0, 0, 0};
    return c;
}

static void log_dir(const point_t *pt, char *buf, size_t n) {
    char name[80];
    point_path(pt, "log", name, sizeof name);
    snprintf(buf, n, "%s/%s", dir, name);
}

static int append_msg(qm_log_t *l, uint32_t id, uint64_t seq) {
    static uint8_t buf[STRESS_MAX_MSG];
    size_t n = stress_make(buf, id, seq, MAX_PAYLOAD);
    qm_iovec_t v[2] = {{buf, n / 2}, {buf + n / 2, n - n / 2}};
    qm_log_entry_t e = {&id, sizeof id, NULL, 0, v, 2, 0};
    uint64_t off;
    return qm_log_append(l, &e, &off);
}

static void log_writer(const point_t *pt, uint32_t id) {
    char d[700];
    log_dir(pt, d, sizeof d);
    qm_log_config_t c = log_cfg(pt);
    qm_log_t *l;
    if (qm_log_open(d, QM_OPEN_ONLY, &c, &l)) _exit(2);
    for (uint64_t s = 0; s < 3000; s++) {
        if (append_msg(l, id, s)) _exit(3);
        atomic_store(&sh->acked[id], s + 1);
    }
    qm_log_close(l);
}

static int fresh_log_sentinel(const point_t *pt) {
    char d[700];
    log_dir(pt, d, sizeof d);
    qm_log_config_t c = log_cfg(pt);
    qm_log_t *l;
    if (qm_log_open(d, QM_OPEN_ONLY, &c, &l)) return 2;
    int rc = append_msg(l, SENT_ID, sent_seq);
    if (rc) fprintf(stderr, "  fresh append: %s [%s]\n", qm_status_str(rc), qm_last_error());
    qm_log_close(l);
    return rc ? 3 : 0;
}

/* Read from `cur` up to the sentinel (want_sentinel) or the end. */
static bool log_drain(qm_log_t *l, qm_log_cursor_t *cur, long *next, long *torn, long *disorder,
                      long *records, bool want_sentinel, int64_t deadline) {
    for (;;) {
        qm_log_record_t rec;
        int rc = qm_log_read(l, cur, &rec, want_sentinel ? deadline : QM_NOWAIT);
        if (rc) {
            if (!want_sentinel && (rc == QM_EAGAIN || rc == QM_ETIMEDOUT)) return true;
            fprintf(stderr, "  log read: %s [%s]\n", qm_status_str(rc), qm_last_error());
            return false;
        }
        uint32_t id;
        uint64_t seq;
        (*records)++;
        if (stress_check(rec.value, rec.value_len, &id, &seq) || id >= MAX_IDS) {
            (*torn)++;
            continue;
        }
        if (log_gaps_ok ? (long)seq < next[id] : (long)seq != next[id]) (*disorder)++;
        next[id] = (long)seq + 1;
        if (want_sentinel && id == SENT_ID && seq == sent_seq) return true;
    }
}

/* Every .idx file has its segment (.log) beside it. */
static long orphan_indexes(const char *d) {
    DIR *dh = opendir(d);
    if (!dh) return -1;
    long orphans = 0;
    struct dirent *de;
    while ((de = readdir(dh))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".idx")) continue;
        char seg[sizeof de->d_name];
        memcpy(seg, de->d_name, n - 4);
        memcpy(seg + n - 4, ".log", 5);
        if (faccessat(dirfd(dh), seg, F_OK, 0) != 0) orphans++;
    }
    closedir(dh);
    return orphans;
}

/* ----- group ---------------------------------------------------------------- */
static char topic_dir[700];

static int open_group(const point_t *pt, qm_group_t **g) {
    char name[80];
    point_path(pt, "group", name, sizeof name);
    qm_group_config_t c = {1, GROUP_WINDOW, 0, NULL};
    return qm_group_open(topic_dir, name, QM_OPEN_OR_CREATE, &c, g, NULL);
}

static void note_lease(const qm_group_lease_t *l) {
    uint32_t i = atomic_fetch_add(&sh->n_leases, 1);
    if (i < sizeof sh->leases / sizeof sh->leases[0]) sh->leases[i] = *l;
}

static void grp_member(const point_t *pt, uint32_t id) {
    (void)id;
    qm_group_t *g;
    if (open_group(pt, &g)) _exit(2);
    for (int round = 0; round < 2000; round++) {
        qm_group_lease_t l[8];
        size_t got = 0;
        int rc = qm_group_claim(g, 0, sh->end, qm_now_ns(), 10 * SEC, 0, l, 8, &got);
        if (rc == QM_EAGAIN || rc == QM_EFULL) break;
        if (rc) _exit(3);
        for (size_t i = 0; i < got; i++) note_lease(&l[i]);
        for (size_t i = 0; i < got; i++) {
            if (pt->kind == K_GROUP_NACK) {
                rc = qm_group_nack(g, 0, l[i].offset, l[i].epoch, 0);
                if (rc) _exit(4);
                continue;
            }
            rc = qm_group_ack(g, 0, l[i].offset, l[i].epoch);
            if (rc) _exit(5);
            atomic_fetch_add(&sh->got[l[i].offset % MAX_OFFSETS], 1);
        }
    }
    qm_group_close(g);
}

/* Claim some leases and die holding them (no close). */
static int grp_holder(const point_t *pt) {
    qm_group_t *g;
    if (open_group(pt, &g)) return 2;
    qm_group_lease_t l[4];
    size_t got = 0;
    if (qm_group_claim(g, 0, sh->end, qm_now_ns(), 10 * SEC, 0, l, 4, &got)) return 3;
    for (size_t i = 0; i < got; i++) note_lease(&l[i]);
    /* die together: one that starts after the other died would take the
     * dead one's slot and settle it, leaving nothing for the sweep */
    atomic_fetch_add(&sh->holders, 1);
    int64_t limit = qm_now_ns() + SEC;
    while (atomic_load(&sh->holders) < 2 && qm_now_ns() < limit) usleep(100);
    return 0;   /* _exit: the handle dies with its leases */
}

static void grp_sweeper(const point_t *pt, uint32_t id) {
    (void)id;
    qm_group_t *g;
    if (open_group(pt, &g)) _exit(2);
    uint64_t released;
    if (qm_group_sweep(g, qm_now_ns(), &released)) _exit(3);
    qm_group_close(g);
}

static int group_committed(qm_group_t *g, uint64_t *committed) {
    qm_group_partition_stats_t st;
    int rc = qm_group_partition_stats(g, 0, &st);
    *committed = st.committed;
    return rc;
}

/* A fresh member completes every offset below end within 1 s. */
static int fresh_group_complete(const point_t *pt) {
    qm_group_t *g;
    if (open_group(pt, &g)) return 2;
    int64_t limit = qm_now_ns() + SEC;
    uint64_t committed = 0;
    while (qm_now_ns() < limit) {
        if (group_committed(g, &committed)) return 3;
        if (committed >= sh->end) break;
        qm_group_sweep(g, qm_now_ns(), NULL);
        qm_group_lease_t l[16];
        size_t got = 0;
        int rc = qm_group_claim(g, 0, sh->end, qm_now_ns(), 10 * SEC, 0, l, 16, &got);
        if (rc == QM_EAGAIN || rc == QM_EFULL) {
            usleep(200);
            continue;
        }
        if (rc) return 4;
        for (size_t i = 0; i < got; i++)
            if (qm_group_ack(g, 0, l[i].offset, l[i].epoch) == QM_OK)
                atomic_fetch_add(&sh->got[l[i].offset % MAX_OFFSETS], 1);
    }
    if (committed < sh->end) {
        qm_group_partition_stats_t st;
        qm_group_partition_stats(g, 0, &st);
        fprintf(stderr, "  %s: committed %llu < end %llu after 1 s (cursor %llu, leased %llu, "
                "delayed %llu, pending %llu, acked ahead %llu)\n", pt->name,
                (unsigned long long)committed, (unsigned long long)sh->end,
                (unsigned long long)st.cursor, (unsigned long long)st.leased,
                (unsigned long long)st.delayed, (unsigned long long)st.pending,
                (unsigned long long)st.acked_ahead);
        qm_group_close(g);
        return 5;
    }
    qm_group_close(g);
    return 0;
}

/* ----- the suite --------------------------------------------------------------- */
typedef struct result {
    long trials, hits, failures;
    double worst_ms;
} result_t;

static void fail(result_t *res, const point_t *pt, const char *what) {
    fprintf(stderr, "  FAIL %s: %s\n", pt->name, what);
    res->failures++;
}

static double ms_since(int64_t t0) { return (double)(qm_now_ns() - t0) / 1e6; }

static void ring_trial(const point_t *pt, result_t *res, unsigned skip) {
    uint32_t id = next_id++;
    uint64_t get_first = get_seq;
    if (pt->kind == K_RING_GET)
        for (int i = 0; i < 32; i++) put_msg(ring, GET_ID, get_seq++);
    int hit = run_victim(pt, skip, pt->kind == K_RING_PUT ? ring_producer : ring_consumer, id);
    if (hit < 0) { fail(res, pt, "victim failed"); return; }
    res->hits += hit;
    int64_t t0 = qm_now_ns();
    sent_seq++;
    if (run_fresh(fresh_ring_sentinel, pt) != 0) { fail(res, pt, "fresh producer failed"); return; }
    if (!ring_drain_to_sentinel(t0 + SEC)) { fail(res, pt, "ring wedged: no sentinel in 1 s"); return; }
    double ms = ms_since(t0);
    if (ms > res->worst_ms) res->worst_ms = ms;
    /* a round trip through this handle too */
    sent_seq++;
    if (run_fresh(fresh_ring_sentinel, pt) != 0 || !ring_drain_to_sentinel(qm_now_ns() + SEC))
        { fail(res, pt, "second round trip failed"); return; }
    long a = (long)atomic_load(&sh->acked[id]);
    if (pt->kind == K_RING_PUT && (ring_next[id] < a || ring_next[id] > a + 1))
        fail(res, pt, "acknowledged put lost or unexpected message");
    if (pt->kind == K_RING_GET) {
        long missing = 0, dup = 0;
        for (uint64_t s = get_first; s < get_seq; s++) {
            uint32_t n = atomic_load(&sh->got[s % MAX_OFFSETS]);
            missing += n == 0;
            dup += n > 1;
        }
        if (dup) fail(res, pt, "a message was delivered twice");
        if (missing > hit) fail(res, pt, "more lost than the killed consumer's in-flight record");
    }
    if (ring_torn || ring_disorder) fail(res, pt, "torn or out-of-order message");
}

static int fresh_create(const point_t *pt) {
    char name[80];
    point_path(pt, "new", name, sizeof name);
    if (sent_seq & 1) {
        qm_ring_t *r;
        int rc = qm_ring_open(name, QM_OPEN_OR_CREATE, RING_CAP, 0, &r);
        if (rc) {
            fprintf(stderr, "  reopen ring: %s [%s]\n", qm_status_str(rc), qm_last_error());
            return 2;
        }
        put_msg(r, SENT_ID, 0);
        qm_record_t rec;
        if (qm_ring_get_begin(r, &rec, qm_now_ns() + SEC)) return 3;
        qm_ring_get_end(r, &rec);
        qm_ring_close(r);
        return qm_ring_unlink(name) ? 4 : 0;
    }
    char d[700];
    snprintf(d, sizeof d, "%s/%s", dir, name);
    qm_log_config_t c = {SEG, 0, 0, 0};
    qm_log_t *l;
    int rc = qm_log_open(d, QM_OPEN_OR_CREATE, &c, &l);
    if (rc) {
        fprintf(stderr, "  reopen log: %s [%s]\n", qm_status_str(rc), qm_last_error());
        return 2;
    }
    if (append_msg(l, SENT_ID, 0)) return 3;
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    if (qm_log_seek(l, &cur, 0) || qm_log_read(l, &cur, &rec, qm_now_ns() + SEC)) return 4;
    qm_log_close(l);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    return system(cmd) ? 5 : 0;
}

static void creator(const point_t *pt, uint32_t id) {
    (void)id;
    char name[80];
    point_path(pt, "new", name, sizeof name);
    if (sent_seq & 1) {
        qm_ring_t *r;
        if (qm_ring_open(name, QM_CREATE_ONLY, RING_CAP, 0, &r)) _exit(2);
        qm_ring_close(r);
        qm_ring_unlink(name);
    } else {
        char d[700];
        snprintf(d, sizeof d, "%s/%s", dir, name);
        qm_log_config_t c = {SEG, 0, 0, 0};
        qm_log_t *l;
        if (qm_log_open(d, QM_CREATE_ONLY, &c, &l)) _exit(2);
        qm_log_close(l);
    }
}

static void create_trial(const point_t *pt, result_t *res, unsigned skip) {
    sent_seq++;   /* odd: a ring, even: a log */
    int hit = run_victim(pt, skip, creator, 0);
    if (hit < 0) { fail(res, pt, "victim failed"); return; }
    res->hits += hit;
    int64_t t0 = qm_now_ns();
    int rc = run_fresh(fresh_create, pt);
    double ms = ms_since(t0);
    if (rc != 0) { fail(res, pt, "re-create after a dead creator failed"); return; }
    if (ms > 1000) fail(res, pt, "re-create took over 1 s");
    if (ms > res->worst_ms) res->worst_ms = ms;
}

static void log_trial(const point_t *pt, result_t *res, unsigned skip) {
    uint32_t id = next_id++;
    int hit = run_victim(pt, skip, log_writer, id);
    if (hit < 0) { fail(res, pt, "victim failed"); return; }
    res->hits += hit;
    int64_t t0 = qm_now_ns();
    sent_seq++;
    if (run_fresh(fresh_log_sentinel, pt) != 0) { fail(res, pt, "append after the kill failed"); return; }
    if (!log_drain(lg, &lcur, log_next, &log_torn, &log_disorder, &log_records, true, t0 + SEC))
        { fail(res, pt, "reader blocked: no sentinel in 1 s"); return; }
    double ms = ms_since(t0);
    if (ms > res->worst_ms) res->worst_ms = ms;
    long a = (long)atomic_load(&sh->acked[id]);
    if (!log_gaps_ok && log_next[id] < a) fail(res, pt, "an append that returned is missing");
    if (log_next[id] > a + 1) fail(res, pt, "unexpected record");
    if (log_torn || log_disorder) fail(res, pt, "torn or out-of-order record");
}

static void group_trial(const point_t *pt, result_t *res, unsigned skip, qm_group_t *g) {
    uint64_t first = sh->end;
    sh->end += pt->kind == K_GROUP_SWEEP ? 16 : GROUP_WINDOW;
    atomic_store(&sh->n_leases, 0);
    if (pt->kind == K_GROUP_SWEEP) {   /* two members die holding leases */
        atomic_store(&sh->holders, 0);
        fflush(NULL);
        pid_t h[2];
        for (int i = 0; i < 2; i++)
            if ((h[i] = fork()) == 0) _exit(grp_holder(pt));
        for (int i = 0; i < 2; i++) {
            int st;
            if (h[i] < 0 || waitpid(h[i], &st, 0) != h[i] || !WIFEXITED(st) || WEXITSTATUS(st)) {
                fail(res, pt, "lease holder failed");
                return;
            }
        }
    }
    int hit = run_victim(pt, skip, pt->kind == K_GROUP_SWEEP ? grp_sweeper : grp_member, 0);
    if (hit < 0) { fail(res, pt, "victim failed"); return; }
    res->hits += hit;
    int64_t t0 = qm_now_ns();
    if (run_fresh(fresh_group_complete, pt) != 0)
        { fail(res, pt, "a fresh member could not complete every offset in 1 s"); return; }
    double ms = ms_since(t0);
    if (ms > res->worst_ms) res->worst_ms = ms;
    uint64_t committed;
    if (group_committed(g, &committed) || committed != sh->end)
        fail(res, pt, "committed offset is not the end");
    long unacked = 0;
    for (uint64_t o = first; o < sh->end; o++) {
        uint32_t n = atomic_load(&sh->got[o % MAX_OFFSETS]);
        if (n > 1) { fail(res, pt, "an offset was acked twice"); return; }
        unacked += n == 0;
    }
    /* a kill between an accepted ack and our count loses at most that count */
    if (unacked > hit) fail(res, pt, "offsets completed without an accepted ack");
    uint32_t nl = atomic_load(&sh->n_leases);
    if (nl > sizeof sh->leases / sizeof sh->leases[0]) nl = sizeof sh->leases / sizeof sh->leases[0];
    for (uint32_t i = 0; i < nl; i++) {
        int rc = qm_group_ack(g, 0, sh->leases[i].offset, sh->leases[i].epoch);
        if (rc != QM_ESTALE) { fail(res, pt, "a dead member's lease was accepted again"); return; }
    }
}

static void suite(void) {
    snprintf(kp_log, sizeof kp_log, "%s/killpoint.log", check_dir);
    snprintf(dir, sizeof dir, "%s", check_dir);
    snprintf(topic_dir, sizeof topic_dir, "%s/topic", check_dir);
    mkdir(topic_dir, 0700);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    long trials = env_long("PYQMEM_KP_TRIALS", 20);
    if (trials > 250) trials = 250;   /* 4x of it: ids < MAX_IDS, offsets < MAX_OFFSETS */
    int64_t t_start = qm_now_ns(), stop_adding = t_start + 45 * SEC;
    unsigned seed = (unsigned)getpid();
    result_t res[NPOINTS];
    memset(res, 0, sizeof res);
    for (size_t i = 0; i < NPOINTS; i++) {
        const point_t *pt = &points[i];
        result_t *r = &res[i];
        char name[80], d[700];
        qm_group_t *g = NULL;
        memset(sh, 0, sizeof *sh);
        next_id = FIRST_VICTIM;
        memset(ring_next, 0, sizeof ring_next);
        memset(log_next, 0, sizeof log_next);
        ring_torn = ring_disorder = log_torn = log_disorder = log_records = 0;
        sent_seq = UINT64_MAX;   /* the first sentinel is seq 0 */
        get_seq = 0;
        log_gaps_ok = pt->kind == K_LOG_RETAIN;
        if (pt->kind == K_RING_PUT || pt->kind == K_RING_GET) {
            point_path(pt, "ring", name, sizeof name);
            CHECK_RC(qm_ring_open(name, QM_CREATE_ONLY, RING_CAP, 0, &ring), 0);
        } else if (pt->kind == K_LOG || pt->kind == K_LOG_RETAIN) {
            log_dir(pt, d, sizeof d);
            qm_log_config_t c = log_cfg(pt);
            CHECK_RC(qm_log_open(d, QM_CREATE_ONLY, &c, &lg), 0);
            memset(&lcur, 0, sizeof lcur);
            CHECK_RC(qm_log_seek(lg, &lcur, 0), 0);
        } else if (pt->kind != K_CREATE) {
            CHECK_RC(open_group(pt, &g), 0);
        }
        /* at least `trials`; more (up to 4x) until the point was hit */
        for (long t = 0; t < 4 * trials; t++) {
            if (t >= trials && (r->hits > 0 || r->failures)) break;
            if (t > 0 && qm_now_ns() > stop_adding) break;
            seed = seed * 1103515245u + 12345u;
            unsigned skip = pt->max_skip ? (seed >> 16) % (pt->max_skip + 1) : 0;
            if (t == 1) skip = pt->max_skip;   /* the edge: as late as the point goes */
            r->trials++;
            switch (pt->kind) {
            case K_RING_PUT:
            case K_RING_GET: ring_trial(pt, r, skip); break;
            case K_CREATE: create_trial(pt, r, skip); break;
            case K_LOG:
            case K_LOG_RETAIN: log_trial(pt, r, skip); break;
            default: group_trial(pt, r, skip, g); break;
            }
            if (r->failures) break;
        }
        if (pt->kind == K_RING_PUT || pt->kind == K_RING_GET) {
            qm_ring_close(ring);
            qm_ring_unlink(name);
        } else if (pt->kind == K_LOG || pt->kind == K_LOG_RETAIN) {
            /* everyone gone: a reopen (recovery) shows the same records */
            long before = log_records;
            qm_log_close(lg);
            qm_log_config_t c = log_cfg(pt);
            if (qm_log_open(d, QM_OPEN_ONLY, &c, &lg)) {
                fail(r, pt, "reopen failed");
            } else {
                static long next2[MAX_IDS];
                long torn2 = 0, dis2 = 0, rec2 = 0;
                memset(next2, 0, sizeof next2);
                qm_log_cursor_t cur = {0};
                uint64_t start, end;
                if (qm_log_bounds(lg, &start, &end) || qm_log_seek(lg, &cur, start) ||
                    !log_drain(lg, &cur, next2, &torn2, &dis2, &rec2, false, 0))
                    fail(r, pt, "re-read after reopen failed");
                else if (torn2 || dis2 || (!log_gaps_ok && rec2 != before))
                    fail(r, pt, "reopen shows different records");
                if (append_msg(lg, SENT_ID, ++sent_seq)) fail(r, pt, "append after reopen failed");
                qm_log_close(lg);
            }
            long orphans = orphan_indexes(d);
            if (orphans) {
                fprintf(stderr, "  %s: %ld index file(s) without a segment\n", pt->name, orphans);
                fail(r, pt, "index left without its segment");
            }
        } else if (g) {
            qm_group_close(g);
        }
    }
    fprintf(stderr, "\n%-30s %7s %5s %14s  %s\n", "kill point", "trials", "hits",
            "recovery max", "result");
    long bad = 0;
    for (size_t i = 0; i < NPOINTS; i++) {
        const char *verdict = res[i].failures ? "FAIL" : res[i].hits == 0 ? "NEVER HIT" : "ok";
        if (res[i].failures || res[i].hits == 0) bad++;
        fprintf(stderr, "%-30s %7ld %5ld %11.1f ms  %s\n", points[i].name, res[i].trials,
                res[i].hits, res[i].worst_ms, verdict);
    }
    fprintf(stderr, "%zu points, %.1f s\n\n", NPOINTS, ms_since(t_start) / 1000);
    CHECK(bad == 0);
    munmap(sh, sizeof *sh);
}

int main(void) {
    check_use_private_shm_dir("killpoints");
    RUN(suite);
    CHECK_EXIT();
}
