/*
 * sweep_headers.c - every header byte of a ring, a partition log and a
 * consumer group, set to 0x00, 0xFF and a random value in the real file,
 * then the real operations run on it (reliability-matrix.md C1 live sweep, C4).
 *
 * Objects and bytes swept (layout.h):
 *   ring      header page bytes 0..1023 (header, tail/read/head lines, wake
 *             lines, counters, the first reserved bytes) and member slots 1-2
 *   log       control page 0..1023, segment header (128 B), the headers of
 *             the first three records (40 B each), index entries 0-7
 *   group     header page 0..415, partition 0 (384 B), partition 0's first
 *             eight pending entries (16 B each)
 * Each case runs in a forked child with an alarm() watchdog: open, read
 * everything (payloads compared with what was written), write one more and
 * read it back (ring, log), claim/ack/nack (group).  A case passes when the
 * child exits normally with correct results (possibly fewer: damage read as
 * an end) or a typed error; a signal, a hang, a sanitizer report or a
 * payload that was never written fails it.
 *
 * PYQMEM_SWEEP_VALUES=3 (default in CI: 1) tries all three values on every
 * byte; with 1, byte i gets value i mod 3 of {00, FF, random} ... rotated
 * per object, so every value still meets every field.
 */
#include "sweep_common.h"
#include "internal.h"

#include <sys/mman.h>

#define WATCHDOG_S 20u
#define SEC INT64_C(1000000000)
#define T0 (100 * SEC)
#define LEASE (30 * SEC)

/* ----- the expected data ---------------------------------------------------- */
#define RING_MSGS 6
#define RING_TAKEN 2
static size_t ring_len(int i) { return (size_t)(40 + 57 * i); }
static uint8_t ring_byte(int i, size_t j) { return (uint8_t)(i * 31 + j * 7 + 1); }

#define LOG_RECS 24
static size_t log_vlen(int i) { return (size_t)(100 + (i * 397) % 1900); }
static uint8_t log_byte(int i, size_t j) { return (uint8_t)(i * 13 + j * 5 + 3); }
static int64_t log_ts(int i) { return INT64_C(1700000000000000000) + i * INT64_C(1000); }

static char ring_name[] = "sweep";
static char log_dir[512], topic_dir[512];
static const qm_log_config_t log_cfg = {64u << 10, 0, 0, 0};

/* ----- ring ------------------------------------------------------------------- */
static int ring_check_payload(const qm_record_t *r, int i) {
    if (r->len != ring_len(i)) return 0;
    const uint8_t *p = r->data;
    for (size_t j = 0; j < r->len; j++)
        if (p[j] != ring_byte(i, j)) return 0;
    return 1;
}

/* Which message is this?  -1 if none that was written. */
static int ring_which(const qm_record_t *r) {
    for (int i = 0; i < RING_MSGS + 1; i++)
        if (ring_check_payload(r, i)) return i;
    return -1;
}

static int ring_op(void) {
    qm_ring_t *q = NULL;
    int rc = qm_ring_open(ring_name, QM_OPEN_ONLY, 0, 0, &q);
    if (rc) return sw_classify(rc);
    qm_ring_stats_t st;
    rc = qm_ring_stats(q, &st);
    if (rc) goto out;
    /* drain: each delivered message must be one still there, in order */
    int next = RING_TAKEN, got = 0;
    for (int k = 0; k < 4 * RING_MSGS; k++) {
        qm_record_t r;
        rc = qm_ring_get_begin(q, &r, QM_NOWAIT);
        if (rc) break;
        int which = ring_which(&r);
        if (which < next || which >= RING_MSGS) {
            fprintf(stderr, "ring: delivered %d (len %llu), expected %d..%d\n", which,
                    (unsigned long long)r.len, next, RING_MSGS - 1);
            qm_ring_close(q);
            return SW_WRONG;
        }
        next = which + 1;
        got++;
        rc = qm_ring_get_end(q, &r);
        if (rc) goto out;
    }
    if (rc != QM_EAGAIN) goto out;
    /* empty: one more round trip must give back exactly what went in */
    uint8_t buf[512];
    size_t n = ring_len(RING_MSGS);
    for (size_t j = 0; j < n; j++) buf[j] = ring_byte(RING_MSGS, j);
    qm_iovec_t v = {buf, n};
    rc = qm_ring_put(q, &v, 1, QM_NOWAIT);
    if (rc) goto out;
    qm_record_t r;
    rc = qm_ring_get_begin(q, &r, QM_NOWAIT);
    if (rc) goto out;
    if (!ring_check_payload(&r, RING_MSGS)) {
        fprintf(stderr, "ring: round trip returned %llu other bytes\n", (unsigned long long)r.len);
        qm_ring_close(q);
        return SW_WRONG;
    }
    rc = qm_ring_get_end(q, &r);
    if (rc) goto out;
    rc = qm_ring_depth(q, &st.depth);
out:
    qm_ring_close(q);
    if (rc) return sw_classify(rc);
    return got == RING_MSGS - RING_TAKEN ? SW_OK : SW_SHORT;
}

static int ring_make(void) {
    qm_ring_t *q;
    if (qm_ring_open(ring_name, QM_CREATE_ONLY, 4096, 0, &q)) return -1;
    uint8_t buf[512];
    for (int i = 0; i < RING_MSGS; i++) {
        for (size_t j = 0; j < ring_len(i); j++) buf[j] = ring_byte(i, j);
        qm_iovec_t v = {buf, ring_len(i)};
        if (qm_ring_put(q, &v, 1, QM_NOWAIT)) return -1;
    }
    for (int i = 0; i < RING_TAKEN; i++) {
        qm_record_t r;
        if (qm_ring_get_begin(q, &r, QM_NOWAIT) || !ring_check_payload(&r, i) ||
            qm_ring_get_end(q, &r))
            return -1;
    }
    qm_ring_close(q);
    return 0;
}

/* ----- log -------------------------------------------------------------------- */
static size_t log_rec_len(int i) { return (QM_RECORD_HEADER + 4 + 3 + log_vlen(i) + 7) & ~(size_t)7; }

static int log_check(const qm_log_record_t *r) {
    if (r->offset >= LOG_RECS + 1) return 0;
    int i = (int)r->offset;
    char key[8];
    snprintf(key, sizeof key, "k%03d", i % 1000);
    if (r->key_len != 4 || memcmp(r->key, key, 4)) return 0;
    if (r->headers_len != 3 || memcmp(r->headers, "h=1", 3)) return 0;
    if (r->timestamp_ns != log_ts(i) || r->value_len != log_vlen(i)) return 0;
    const uint8_t *p = r->value;
    for (size_t j = 0; j < r->value_len; j++)
        if (p[j] != log_byte(i, j)) return 0;
    return 1;
}

static int log_append_one(qm_log_t *lg, int i, uint64_t *off) {
    static uint8_t buf[4096];
    for (size_t j = 0; j < log_vlen(i); j++) buf[j] = log_byte(i, j);
    char key[8];
    snprintf(key, sizeof key, "k%03d", i % 1000);
    qm_iovec_t v = {buf, log_vlen(i)};
    qm_log_entry_t e = {key, 4, "h=1", 3, &v, 1, log_ts(i)};
    return qm_log_append(lg, &e, off);
}

#define LOG_WRONG(...)                                                         \
    do {                                                                       \
        fprintf(stderr, "log: " __VA_ARGS__);                                  \
        qm_log_close(lg);                                                      \
        return SW_WRONG;                                                       \
    } while (0)

static int log_op(void) {
    qm_log_t *lg = NULL;
    int rc = qm_log_open(log_dir, QM_OPEN_ONLY, &log_cfg, &lg);
    if (rc) return sw_classify(rc);
    qm_log_cursor_t cur = {0};
    qm_log_record_t r;
    int got = 0;
    int64_t last = -1;
    rc = qm_log_seek(lg, &cur, 0);
    if (rc) goto out;
    for (int k = 0; k < 4 * LOG_RECS; k++) {
        rc = qm_log_read(lg, &cur, &r, QM_NOWAIT);
        if (rc) break;
        if (!log_check(&r) || (int64_t)r.offset <= last)
            LOG_WRONG("read offset %llu (value %llu bytes) is not what was written\n",
                      (unsigned long long)r.offset, (unsigned long long)r.value_len);
        last = (int64_t)r.offset;
        got++;
    }
    if (rc != QM_EAGAIN) goto out;
    /* the index: seek to offset 10 and to record 12's time */
    qm_log_cursor_t c2 = {0};
    rc = qm_log_seek(lg, &c2, 10);
    if (rc) goto out;
    rc = qm_log_read(lg, &c2, &r, QM_NOWAIT);
    if (rc == QM_OK && (r.offset < 10 || !log_check(&r)))
        LOG_WRONG("seek(10) read offset %llu\n", (unsigned long long)r.offset);
    if (rc && rc != QM_EAGAIN) goto out;
    rc = qm_log_seek_time(lg, &c2, log_ts(12));
    if (rc) goto out;
    rc = qm_log_read(lg, &c2, &r, QM_NOWAIT);
    if (rc == QM_OK && (r.offset < 12 || !log_check(&r)))
        LOG_WRONG("seek_time(12) read offset %llu\n", (unsigned long long)r.offset);
    if (rc && rc != QM_EAGAIN) goto out;
    /* one more append, read back where it says it went */
    uint64_t off = 0;
    rc = log_append_one(lg, LOG_RECS, &off);
    if (rc) goto out;
    rc = qm_log_seek(lg, &c2, off);
    if (rc) goto out;
    rc = qm_log_read(lg, &c2, &r, QM_NOWAIT);
    if (rc) goto out;
    if (r.offset != off || r.value_len != log_vlen(LOG_RECS) ||
        memcmp(r.value, (uint8_t[]){log_byte(LOG_RECS, 0), log_byte(LOG_RECS, 1)}, 2))
        LOG_WRONG("appended at %llu, read back %llu\n", (unsigned long long)off,
                  (unsigned long long)r.offset);
    qm_log_stats_t st;
    rc = qm_log_stats(lg, &st);
out:
    qm_log_close(lg);
    if (rc) return sw_classify(rc);
    return got == LOG_RECS ? SW_OK : SW_SHORT;
}

static int log_make(void) {
    qm_log_t *lg;
    if (qm_log_open(log_dir, QM_CREATE_ONLY, &log_cfg, &lg)) return -1;
    for (int i = 0; i < LOG_RECS; i++) {
        uint64_t off;
        if (log_append_one(lg, i, &off) || off != (uint64_t)i) return -1;
    }
    qm_log_close(lg);
    return 0;
}

/* ----- group ------------------------------------------------------------------ */
#define GROUP_END 40u
static int group_op(void) {
    qm_group_t *g = NULL;
    int rc = qm_group_open(topic_dir, "workers", QM_OPEN_ONLY, NULL, &g, NULL);
    if (rc) return sw_classify(rc);
    qm_group_config_t cfg;
    rc = qm_group_config(g, &cfg);
    if (rc) goto out;
    /* now: the leases of the snapshot still run; later: every one is due */
    int64_t nows[2] = {T0 + SEC, T0 + 120 * SEC};
    for (uint32_t p = 0; p < 2 && p < cfg.partitions; p++)
        for (int t = 0; t < 2; t++) {
            qm_group_lease_t l[32];
            size_t got = 0;
            rc = qm_group_claim(g, p, GROUP_END, nows[t], LEASE, 0, l, 32, &got);
            if (rc == QM_EAGAIN || rc == QM_EFULL) continue;
            if (rc) goto out;
            for (size_t i = 0; i < got; i++) {
                if (l[i].partition != p || l[i].offset >= GROUP_END || got > 32) {
                    fprintf(stderr, "group: lease of %u/%llu\n", l[i].partition,
                            (unsigned long long)l[i].offset);
                    qm_group_close(g);
                    return SW_WRONG;
                }
                for (size_t j = 0; j < i; j++)
                    if (l[j].offset == l[i].offset) {
                        fprintf(stderr, "group: offset %llu twice in one claim\n",
                                (unsigned long long)l[i].offset);
                        qm_group_close(g);
                        return SW_WRONG;
                    }
            }
            for (size_t i = 0; i < got; i++) {
                rc = (i % 3 == 2) ? qm_group_nack(g, p, l[i].offset, l[i].epoch, nows[t])
                                  : qm_group_ack(g, p, l[i].offset, l[i].epoch);
                if (rc && rc != QM_ESTALE) goto out;
                rc = 0;
            }
        }
    qm_group_partition_stats_t ps;
    rc = qm_group_partition_stats(g, 0, &ps);
    if (rc) goto out;
    int64_t due;
    rc = qm_group_next_due(g, 0, &due);
    if (rc) goto out;
    uint64_t released;
    rc = qm_group_sweep(g, T0 + 200 * SEC, &released);
out:
    qm_group_close(g);
    return rc ? sw_classify(rc) : SW_OK;
}

static int group_make(void) {
    qm_group_t *g;
    qm_group_config_t c = {2, 16, 0, NULL};
    if (qm_group_open(topic_dir, "workers", QM_CREATE_ONLY, &c, &g, NULL)) return -1;
    qm_group_lease_t l[8];
    size_t got = 0;
    if (qm_group_claim(g, 0, GROUP_END, T0, LEASE, 0, l, 6, &got) || got != 6) return -1;
    if (qm_group_ack(g, 0, l[0].offset, l[0].epoch) || qm_group_ack(g, 0, l[1].offset, l[1].epoch) ||
        qm_group_ack(g, 0, l[3].offset, l[3].epoch) ||
        qm_group_nack(g, 0, l[4].offset, l[4].epoch, T0 + 10 * SEC))
        return -1;
    if (qm_group_claim(g, 1, GROUP_END, T0, LEASE, 0, l, 2, &got) || got != 2) return -1;
    if (qm_group_ack(g, 1, l[1].offset, l[1].epoch)) return -1;
    /* the handle is closed: its leases become deliverable, so leave it open
     * in a child that is killed (its leases stay leased, to a dead member) */
    return 0;
}

/* ----- the sweep --------------------------------------------------------------- */
typedef struct range {
    int file;
    size_t from, to;
    const char *name;
} range_t;

static long values_per_byte;

static void sweep(sw_tally_t *t, const sw_snap_t *snap, const range_t *ranges, int nranges,
                  int (*op)(void)) {
    long rot = 0;
    for (int ri = 0; ri < nranges; ri++) {
        sw_tally_t before = *t;
        for (size_t at = ranges[ri].from; at < ranges[ri].to && at < snap->len[ranges[ri].file];
             at++) {
            uint8_t orig = snap->image[ranges[ri].file][at];
            for (int vi = 0; vi < 3; vi++) {
                if (values_per_byte < 3 && vi != (int)(rot % 3)) continue;
                uint8_t v = vi == 0 ? 0x00 : vi == 1 ? 0xff : (uint8_t)(sw_rand() | 1);
                if (v == orig) {
                    t->unchanged++;
                    continue;
                }
                if (sw_restore(snap) || sw_poke(snap, ranges[ri].file, at, v)) {
                    fprintf(stderr, "%s: cannot restore the files\n", t->object);
                    t->failed++;
                    return;
                }
                char what[200];
                snprintf(what, sizeof what, "file %s byte %zu = %#x (was %#x)",
                         strrchr(snap->path[ranges[ri].file], '/') + 1, at, v, orig);
                sw_run_child(t, op, WATCHDOG_S, what);
                if (t->failed > 20) return;
            }
            rot++;
        }
        fprintf(stderr, "  %-26s bytes %5zu..%-5zu cases %5ld  ok %5ld  fewer %4ld  "
                "corrupt-error %4ld  other-error %3ld\n", ranges[ri].name, ranges[ri].from,
                ranges[ri].to, t->cases - before.cases, t->ok - before.ok,
                t->shortened - before.shortened, t->corrupt - before.corrupt,
                t->other - before.other);
    }
    sw_restore(snap);
}

static void ring_headers_survive_every_byte_value(void) {
    CHECK(ring_make() == 0);
    char path[512];
    CHECK(qm_ring_path(ring_name, path, sizeof path) > 0);
    sw_snap_t snap = {0};
    CHECK(sw_snap_add(&snap, path) == 0);
    CHECK(sw_run_child(&(sw_tally_t){.object = "ring (untouched)"}, ring_op, WATCHDOG_S,
                       "baseline") == 0);
    /* the two records still queued: after RING_TAKEN records */
    size_t pos = 0;
    for (int i = 0; i < RING_TAKEN; i++) pos += (16 + ring_len(i) + 63) & ~(size_t)63;
    size_t rec2 = QM_DATA_OFFSET + pos;
    size_t rec3 = rec2 + ((16 + ring_len(RING_TAKEN) + 63) & ~(size_t)63);
    range_t r[] = {{0, 0, 256, "ring header"},
                   {0, 256, 1024, "ring control lines"},
                   {0, QM_MEMBERS_OFFSET + QM_MEMBER_BYTES, QM_MEMBERS_OFFSET + 3 * QM_MEMBER_BYTES,
                    "ring member slots 1-2"},
                   {0, rec2, rec2 + 8, "ring record word 2"},
                   {0, rec3, rec3 + 8, "ring record word 3"}};
    sw_tally_t t = {.object = "ring header+members"};
    sweep(&t, &snap, r, (int)(sizeof r / sizeof r[0]), ring_op);
    sw_print_tally(&t);
    sw_free_snap(&snap);
    CHECK(t.failed == 0);
    CHECK(t.cases > 0);
}

static void log_headers_survive_every_byte_value(void) {
    CHECK(log_make() == 0);
    sw_snap_t snap = {0};
    CHECK(sw_snap_dir(&snap, log_dir) == 0);
    int ctl = sw_snap_find(&snap, "/control");
    int seg = sw_snap_find(&snap, "00000000000000000000.log");
    int idx = sw_snap_find(&snap, "00000000000000000000.idx");
    CHECK(ctl >= 0 && seg >= 0 && idx >= 0);
    CHECK(sw_run_child(&(sw_tally_t){.object = "log (untouched)"}, log_op, WATCHDOG_S,
                       "baseline") == 0);
    size_t p0 = QM_SEGMENT_HEADER, p1 = p0 + log_rec_len(0), p2 = p1 + log_rec_len(1);
    range_t r[] = {{ctl, 0, 256, "log control header"},
                   {ctl, 256, 1024, "log control lines"},
                   {seg, 0, QM_SEGMENT_HEADER, "segment header"},
                   {seg, p0, p0 + QM_RECORD_HEADER, "record 0 header"},
                   {seg, p1, p1 + QM_RECORD_HEADER, "record 1 header"},
                   {seg, p2, p2 + QM_RECORD_HEADER, "record 2 header"},
                   {idx, 0, 8 * sizeof(qm_index_entry_t), "index entries 0-7"}};
    sw_tally_t t = {.object = "log control+segment+index"};
    sweep(&t, &snap, r, (int)(sizeof r / sizeof r[0]), log_op);
    sw_print_tally(&t);
    sw_free_snap(&snap);
    CHECK(t.failed == 0);
}

static void group_headers_survive_every_byte_value(void) {
    /* a member that holds leases and is then killed, as a crash leaves them */
    pid_t pid = fork();
    if (pid == 0) {
        int rc = group_make();
        if (rc == 0) raise(SIGKILL);
        _exit(3);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    char gdir[600];
    snprintf(gdir, sizeof gdir, "%s/groups", topic_dir);
    sw_snap_t snap = {0};
    CHECK(sw_snap_dir(&snap, gdir) == 0);
    int grp = sw_snap_find(&snap, "/workers.grp");
    CHECK(grp >= 0);
    const qm_group_ctl_t *gc = (const qm_group_ctl_t *)snap.image[grp];
    size_t entries = (size_t)gc->entries_offset;
    CHECK(entries > QM_GROUP_PARTS_OFFSET && entries < snap.len[grp]);
    CHECK(sw_run_child(&(sw_tally_t){.object = "group (untouched)"}, group_op, WATCHDOG_S,
                       "baseline") == 0);
    CHECK(sw_restore(&snap) == 0);
    range_t r[] = {{grp, 0, 416, "group header page"},
                   {grp, QM_GROUP_PARTS_OFFSET, QM_GROUP_PARTS_OFFSET + QM_GROUP_PART_BYTES,
                    "partition 0"},
                   {grp, entries, entries + 8 * QM_GROUP_ENTRY_BYTES, "entries 0-7 of part. 0"}};
    sw_tally_t t = {.object = "group header+part+entries"};
    sweep(&t, &snap, r, (int)(sizeof r / sizeof r[0]), group_op);
    sw_print_tally(&t);
    sw_free_snap(&snap);
    CHECK(t.failed == 0);
}

/* ----- C4: counters that contradict each other ----------------------------------- */
typedef struct patch {
    size_t at;
    uint64_t value;
} patch_t;

typedef struct counters_case {
    const char *name;
    patch_t p[3];
    int n;
} counters_case_t;

static int poke64(const sw_snap_t *s, int file, size_t at, uint64_t v) {
    int fd = open(s->path[file], O_WRONLY | O_NOFOLLOW);
    if (fd < 0) return -1;
    int rc = pwrite(fd, &v, 8, (off_t)at) == 8 ? 0 : -1;
    close(fd);
    return rc;
}

static uint64_t u64_at(const sw_snap_t *s, int file, size_t at) {
    uint64_t v;
    memcpy(&v, s->image[file] + at, 8);
    return v;
}

/* The ring's blocking calls on the same damage: bounded by their deadline. */
static int ring_op_blocking(void) {
    qm_ring_t *q = NULL;
    int rc = qm_ring_open(ring_name, QM_OPEN_ONLY, 0, 0, &q);
    if (rc) return sw_classify(rc);
    for (int k = 0; k < 4 * RING_MSGS && rc == 0; k++) {
        qm_record_t r;
        rc = qm_ring_get_begin(q, &r, qm_now_ns() + 20 * INT64_C(1000000));
        if (rc) break;
        if (ring_which(&r) < RING_TAKEN) {
            qm_ring_close(q);
            return SW_WRONG;
        }
        rc = qm_ring_get_end(q, &r);
    }
    uint8_t buf[64] = {0};
    qm_iovec_t v = {buf, sizeof buf};
    if (rc == QM_ETIMEDOUT || rc == QM_EAGAIN) rc = 0;
    for (int k = 0; k < 200 && rc == 0; k++)   /* until full: a timeout */
        rc = qm_ring_put(q, &v, 1, qm_now_ns() + 20 * INT64_C(1000000));
    qm_ring_close(q);
    return rc == QM_ETIMEDOUT || rc == QM_EAGAIN || rc == 0 ? SW_OK : sw_classify(rc);
}

static void run_counter_cases(const char *object, const sw_snap_t *snap, int file,
                              const counters_case_t *cases, int n, int (*op)(void),
                              int (*op2)(void)) {
    sw_tally_t t = {.object = object};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < (op2 ? 2 : 1); k++) {
            if (sw_restore(snap)) { t.failed++; break; }
            for (int j = 0; j < cases[i].n; j++)
                if (poke64(snap, file, cases[i].p[j].at, cases[i].p[j].value)) t.failed++;
            long before = t.corrupt, ok = t.ok + t.shortened;
            sw_run_child(&t, k ? op2 : op, WATCHDOG_S, cases[i].name);
            fprintf(stderr, "  %-44s %s: %s\n", cases[i].name, k ? "blocking" : "nowait  ",
                    t.corrupt > before ? "corrupt-error" : t.ok + t.shortened > ok ? "ok" : "other");
        }
    sw_restore(snap);
    sw_print_tally(&t);
    check_failures += t.failed != 0;
}

static void contradictory_counters_give_typed_errors_or_results_never_hangs(void) {
    /* ring: tail 256, read 384, head 512 (layout.h) */
    char path[512];
    CHECK(qm_ring_path(ring_name, path, sizeof path) > 0);
    CHECK(sw_restore(&(sw_snap_t){0}) == 0);
    unlink(path);
    CHECK(ring_make() == 0);
    sw_snap_t snap = {0};
    CHECK(sw_snap_add(&snap, path) == 0);
    uint64_t tail = u64_at(&snap, 0, 256), read = u64_at(&snap, 0, 384), head = u64_at(&snap, 0, 512);
    const uint64_t cap = 4096, M = UINT64_MAX;
    counters_case_t rc[] = {
        {"ring tail < head", {{256, head - 64}}, 1},
        {"ring tail = 0", {{256, 0}}, 1},
        {"ring tail - head = 2 capacities", {{256, head + 2 * cap}}, 1},
        {"ring tail - head = capacity + 64", {{256, head + cap + 64}}, 1},
        {"ring tail = 2^64 - 64", {{256, M - 63}}, 1},
        {"ring read > tail", {{384, tail + 128}}, 1},
        {"ring read < head", {{384, head - 128}}, 1},
        {"ring read one lap back", {{384, read - cap}}, 1},
        {"ring head > read", {{512, read + 64}}, 1},
        {"ring head > tail", {{512, tail + 64}}, 1},
        {"ring head one lap ahead", {{512, head + cap}}, 1},
        {"ring head unaligned", {{512, head + 3}}, 1},
        {"ring all at 2^64 - 64", {{256, M - 63}, {384, M - 63}, {512, M - 63}}, 3},
        {"ring all at 2^63", {{256, 1ull << 63}, {384, 1ull << 63}, {512, 1ull << 63}}, 3},
        {"ring tail<read<head reversed", {{256, head}, {384, read}, {512, tail}}, 3},
        {"ring all one lap ahead", {{256, tail + cap}, {384, read + cap}, {512, head + cap}}, 3},
    };
    run_counter_cases("ring counters", &snap, 0, rc, (int)(sizeof rc / sizeof rc[0]), ring_op,
                      ring_op_blocking);
    sw_free_snap(&snap);

    /* log: append word 256, active_base 384, active_gen 392, start_offset 416 */
    CHECK(sw_snap_dir(&snap, log_dir) == 0);
    int ctl = sw_snap_find(&snap, "/control");
    CHECK(ctl >= 0);
    uint64_t a = u64_at(&snap, ctl, 256);
    counters_case_t lc[] = {
        {"log append pos past segment", {{256, QM_APPEND(QM_APPEND_GEN(a), QM_APPEND_COUNT(a), 1u << 20)}}, 1},
        {"log append pos before header", {{256, QM_APPEND(QM_APPEND_GEN(a), QM_APPEND_COUNT(a), 8)}}, 1},
        {"log append pos unaligned", {{256, a + 3}}, 1},
        {"log append pos behind records", {{256, QM_APPEND(QM_APPEND_GEN(a), 2, 200)}}, 1},
        {"log append count max", {{256, QM_APPEND(QM_APPEND_GEN(a), 0xfffff, QM_APPEND_POS(a))}}, 1},
        {"log append count 0", {{256, QM_APPEND(QM_APPEND_GEN(a), 0, QM_APPEND_POS(a))}}, 1},
        {"log append gen off by one", {{256, QM_APPEND(QM_APPEND_GEN(a) + 1, QM_APPEND_COUNT(a), QM_APPEND_POS(a))}}, 1},
        {"log append word all ones", {{256, M}}, 1},
        {"log active_base ahead", {{384, 1000}}, 1},
        {"log active_gen ahead", {{392, 7}}, 1},
        {"log start_offset > end", {{416, 1000}}, 1},
        {"log start_offset 2^64-1", {{416, M}}, 1},
    };
    run_counter_cases("log counters", &snap, ctl, lc, (int)(sizeof lc / sizeof lc[0]), log_op, NULL);
    sw_free_snap(&snap);

    /* group partition 0: cursor +0, committed +128 ([gen:16][offset:48]) */
    char gdir[600];
    snprintf(gdir, sizeof gdir, "%s/groups", topic_dir);
    CHECK(sw_snap_dir(&snap, gdir) == 0);
    int grp = sw_snap_find(&snap, "/workers.grp");
    CHECK(grp >= 0);
    const size_t cu = QM_GROUP_PARTS_OFFSET, co = QM_GROUP_PARTS_OFFSET + 128;
    uint64_t gcur = u64_at(&snap, grp, cu), gcom = u64_at(&snap, grp, co);
    counters_case_t gc[] = {
        {"group committed > cursor", {{co, gcur + 5}}, 1},
        {"group cursor < committed", {{cu, gcom - 1}}, 1},
        {"group cursor - committed > window", {{cu, gcom + 100}}, 1},
        {"group cursor at 2^48 - 1", {{cu, QM_GPOS(QM_GPOS_GEN(gcur), QM_GPOS_MAX_OFFSET)}}, 1},
        {"group both at 2^48 - 1", {{cu, QM_GPOS_MAX_OFFSET}, {co, QM_GPOS_MAX_OFFSET}}, 2},
        {"group gens differ", {{cu, QM_GPOS(7, QM_GPOS_OFF(gcur))}}, 1},
        {"group words all ones", {{cu, M}, {co, M}}, 2},
        {"group committed one window ahead", {{co, gcom + 16}, {cu, gcur + 16}}, 2},
    };
    run_counter_cases("group counters", &snap, grp, gc, (int)(sizeof gc / sizeof gc[0]), group_op, NULL);
    sw_free_snap(&snap);
}

int main(void) {
    check_use_private_shm_dir("sweep");
    sw_seed_from_env();
    values_per_byte = sw_env_long("PYQMEM_SWEEP_VALUES", 1) >= 3 ? 3 : 1;
    snprintf(log_dir, sizeof log_dir, "%s/log", check_dir);
    snprintf(topic_dir, sizeof topic_dir, "%s/topic", check_dir);
    mkdir(topic_dir, 0700);
    int64_t t0 = qm_now_ns();
    RUN(ring_headers_survive_every_byte_value);
    RUN(log_headers_survive_every_byte_value);
    RUN(group_headers_survive_every_byte_value);
    RUN(contradictory_counters_give_typed_errors_or_results_never_hangs);
    fprintf(stderr, "values per byte %ld (PYQMEM_SWEEP_VALUES=3 for all three), %.1f s\n",
            values_per_byte, (double)(qm_now_ns() - t0) / 1e9);
    CHECK_EXIT();
}
