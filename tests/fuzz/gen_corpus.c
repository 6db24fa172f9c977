/*
 * gen_corpus.c - writes the seed corpus of the fuzz harnesses from images
 * the real code produces (rings in memory, logs and groups in a temporary
 * folder), plus a few edge cases.  Run from the build tree:
 *   ./fuzz_gen_corpus ../tests/fuzz/corpus
 * Images are cut after their last non-zero byte (the harnesses zero-pad),
 * so the corpus stays small.  Regenerate after a format change; crashing
 * inputs the fuzzers found live beside the seeds as crash-* files.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *root;

static void die(const char *what, int rc) {
    fprintf(stderr, "gen_corpus: %s: %d %s\n", what, rc, qm_last_error());
    exit(1);
}

/* Write prefix (plen bytes) then body cut after its last non-zero byte
 * (keeping at least `keep` bytes) to <root>/<dir>/<name>. */
static void put(const char *dir, const char *name, const void *prefix, size_t plen,
                const void *body, size_t blen, size_t keep) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, dir, name);
    const uint8_t *b = body;
    while (blen > keep && b[blen - 1] == 0) blen--;
    FILE *f = fopen(path, "wb");
    if (!f) die(path, -errno);
    if (plen) fwrite(prefix, 1, plen, f);
    if (blen) fwrite(body, 1, blen, f);
    fclose(f);
}

static void *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path, -errno);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*len ? *len : 1);
    if (fread(p, 1, *len, f) != *len) die(path, -EIO);
    fclose(f);
    return p;
}

/* ----- rings ------------------------------------------------------------------ */
static uint8_t *ring_new(uint64_t cap, uint64_t *len, qm_ring_t **r) {
    *len = qm_ring_memory_size(cap);
    void *mem;
    if (posix_memalign(&mem, 4096, *len)) die("posix_memalign", -ENOMEM);
    int rc = qm_ring_format_memory(mem, *len, cap, 0);
    if (!rc) rc = qm_ring_attach_memory(mem, *len, r);
    if (rc) die("ring", rc);
    return mem;
}

static void put_msg(qm_ring_t *r, size_t n, int fill) {
    uint8_t buf[2048];
    memset(buf, fill, n);
    qm_iovec_t iov = {buf, n};
    int rc = qm_ring_put(r, &iov, 1, QM_NOWAIT);
    if (rc) die("ring put", rc);
}

static void get_msg(qm_ring_t *r) {
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, QM_NOWAIT);
    if (!rc) rc = qm_ring_get_end(r, &rec);
    if (rc) die("ring get", rc);
}

/* fuzz_ring_scan input: capacity byte, tail/read/head, data area */
static uint8_t scan_buf[25 + 8192];
static size_t ring_scan_image(const uint8_t *img, uint64_t cap) {
    const qm_ring_ctl_t *c = (const qm_ring_ctl_t *)img;
    uint64_t pos[3] = {atomic_load(&c->tail.pos), atomic_load(&c->read.pos),
                       atomic_load(&c->head.pos)};
    scan_buf[0] = cap == 8192;
    memcpy(scan_buf + 1, pos, sizeof pos);
    memcpy(scan_buf + 25, img + QM_DATA_OFFSET, cap);
    return 25 + cap;
}
static void ring_scan_seed(const char *name, const uint8_t *img, uint64_t cap) {
    put("fuzz_ring_scan", name, NULL, 0, scan_buf, ring_scan_image(img, cap), 0);
}

static void rings(void) {
    uint64_t len;
    qm_ring_t *r;
    uint8_t *img = ring_new(4096, &len, &r);
    put("fuzz_ring_header", "valid-4k", NULL, 0, img, sizeof(qm_header_t), sizeof(qm_header_t));
    ring_scan_seed("empty-4k", img, 4096);
    put_msg(r, 10, 'a');
    put_msg(r, 100, 'b');
    put_msg(r, 0, 0);
    ring_scan_seed("three-committed", img, 4096);
    get_msg(r);
    ring_scan_seed("one-freed", img, 4096);
    qm_record_t held;
    if (qm_ring_get_begin(r, &held, QM_NOWAIT)) die("ring hold", -1);
    ring_scan_seed("one-reading", img, 4096);
    qm_ring_get_end(r, &held);
    for (int i = 0; i < 40; i++) {   /* wrap: several laps */
        put_msg(r, 200 + 13 * (size_t)i, i);
        get_msg(r);
    }
    put_msg(r, 900, 'w');
    put_msg(r, 1000, 'x');
    ring_scan_seed("wrapped", img, 4096);
    /* a writer that never committed: WRITING by slot 7 at the tail */
    uint64_t t = atomic_load(&((qm_ring_ctl_t *)img)->tail.pos);
    size_t n = ring_scan_image(img, 4096);
    uint64_t w = QM_WORD((uint32_t)(t >> 12), QM_ST_WRITING, 7, 4);
    memcpy(scan_buf + 25 + (t & 4095), &w, 8);
    put("fuzz_ring_scan", "writing-dead-owner", NULL, 0, scan_buf, n, 0);
    qm_ring_close(r);
    free(img);

    img = ring_new(8192, &len, &r);
    put_msg(r, 2000, 'q');
    ring_scan_seed("one-8k", img, 8192);
    qm_header_t h;
    memcpy(&h, img, sizeof h);
    put("fuzz_ring_header", "valid-8k-page", NULL, 0, img, QM_HEADER_BYTES, QM_HEADER_BYTES);
    uint64_t swapped = __builtin_bswap64(QM_MAGIC_RING);
    memcpy(img, &swapped, 8);
    put("fuzz_ring_header", "other-byte-order", NULL, 0, img, sizeof h, sizeof h);
    memset(img, 0, 8);
    put("fuzz_ring_header", "not-ready", NULL, 0, img, sizeof h, sizeof h);
    memcpy(img, &h, sizeof h);
    put("fuzz_ring_header", "truncated", NULL, 0, img, 100, 100);
    put("fuzz_ring_header", "empty", NULL, 0, img, 0, 0);
    qm_ring_close(r);
    free(img);
}

/* ----- logs and groups ---------------------------------------------------------- */
#define SEG (64u << 10)

static void log_append(qm_log_t *lg, size_t key, size_t hdr, size_t val, int64_t ts) {
    static uint8_t buf[3 * SEG / 4];
    memset(buf, (int)(val & 0xff) | 1, sizeof buf);
    qm_iovec_t v = {buf, val};
    qm_log_entry_t e = {buf, (uint32_t)key, buf, (uint32_t)hdr, &v, 1, ts};
    uint64_t off;
    int rc = qm_log_append(lg, &e, &off);
    if (rc) die("log append", rc);
}

static void segment_seed(const char *dir, const char *name, const char *logdir, uint64_t base,
                         const void *extra, size_t elen) {
    char p[4096];
    size_t clen, slen;
    snprintf(p, sizeof p, "%s/control", logdir);
    uint8_t *ctl = slurp(p, &clen);
    snprintf(p, sizeof p, "%s/%020llu.log", logdir, (unsigned long long)base);
    uint8_t *seg = slurp(p, &slen);
    if (!strcmp(dir, "fuzz_segment")) {
        uint64_t a = atomic_load(&((qm_log_ctl_t *)ctl)->append.pos);
        put(dir, name, &a, 8, seg, slen, QM_SEGMENT_HEADER);
    } else {   /* fuzz_index: target, time, index, segment */
        uint8_t pre[16 + 256] = {0};
        memcpy(pre, extra, elen);
        snprintf(p, sizeof p, "%s/%020llu.idx", logdir, (unsigned long long)base);
        size_t ilen;
        uint8_t *idx = slurp(p, &ilen);
        memcpy(pre + 16, idx, ilen < 256 ? ilen : 256);
        free(idx);
        put(dir, name, pre, sizeof pre, seg, slen, QM_SEGMENT_HEADER);
    }
    free(ctl);
    free(seg);
}

static void group_states(const char *logdir);

static void logs(const char *tmp) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/log1", tmp);
    qm_log_config_t cfg = {SEG, 0, 0, 0};
    qm_log_t *lg;
    int rc = qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg);
    if (rc) die("log open", rc);
    for (int i = 0; i < 6; i++) log_append(lg, (size_t)i % 3, (size_t)i % 2 * 5, (size_t)i * 7, 1000 + i);
    char p[4096];
    size_t n;
    snprintf(p, sizeof p, "%s/control", dir);
    uint8_t *ctl = slurp(p, &n);
    put("fuzz_log_ctl", "valid", NULL, 0, ctl, QM_HEADER_BYTES, QM_HEADER_BYTES);
    put("fuzz_log_ctl", "header-only", NULL, 0, ctl, sizeof(qm_header_t), sizeof(qm_header_t));
    put("fuzz_log_ctl", "empty", NULL, 0, ctl, 0, 0);
    segment_seed("fuzz_segment", "six-records", dir, 0, NULL, 0);
    /* records across index intervals; index seeds seek into the middle */
    for (int i = 0; i < 40; i++) log_append(lg, 3, 0, 300 + (size_t)i * 11, 2000 + i * 10);
    segment_seed("fuzz_segment", "many-records", dir, 0, NULL, 0);
    int64_t seek[2] = {20, 2150};
    segment_seed("fuzz_index", "mid", dir, 0, seek, sizeof seek);
    int64_t seek_end[2] = {1000, INT64_MAX};
    segment_seed("fuzz_index", "past-end", dir, 0, seek_end, sizeof seek_end);
    /* fill the segment: it closes with END and the log rolls */
    for (int i = 0; i < 4; i++) log_append(lg, 0, 0, SEG / 4, 5000 + i);
    segment_seed("fuzz_segment", "closed-by-end", dir, 0, NULL, 0);
    int64_t seek_closed[2] = {45, 0};
    segment_seed("fuzz_index", "closed", dir, 0, seek_closed, sizeof seek_closed);
    qm_log_close(lg);
    free(ctl);

    /* fsync and retention in the control page */
    snprintf(dir, sizeof dir, "%s/log2", tmp);
    qm_log_config_t cfg2 = {SEG * 2, 1 << 20, 1000000000, QM_LOG_FSYNC};
    if ((rc = qm_log_open(dir, QM_CREATE_ONLY, &cfg2, &lg))) die("log open 2", rc);
    log_append(lg, 1, 1, 1, 1);
    snprintf(p, sizeof p, "%s/control", dir);
    ctl = slurp(p, &n);
    put("fuzz_log_ctl", "fsync-retention", NULL, 0, ctl, QM_HEADER_BYTES, QM_HEADER_BYTES);
    free(ctl);
    qm_log_close(lg);

    /* the golden segment (format 1.0) with its own append word */
    snprintf(p, sizeof p, "%s/tests/golden/segment-v1.log", QM_SOURCE_DIR);
    uint8_t *gold = slurp(p, &n);
    uint64_t pos = QM_SEGMENT_HEADER, count = 0, last = pos;
    for (;;) {
        uint64_t w;
        memcpy(&w, gold + pos, 8);
        if (!w) break;
        last = pos;
        pos += QM_REC_LEN(w);
        count++;
    }
    uint64_t a = QM_APPEND(0, count, pos);
    put("fuzz_segment", "golden-v1", &a, 8, gold, n, QM_SEGMENT_HEADER);
    /* a torn tail: the last record's CRC broken, the append word past it */
    gold[last + QM_RECORD_HEADER] ^= 0x5a;
    put("fuzz_segment", "torn-tail", &a, 8, gold, n, QM_SEGMENT_HEADER);
    gold[last + QM_RECORD_HEADER] ^= 0x5a;
    /* a writer that died mid-record */
    uint64_t writing = QM_REC_WORD(QM_REC_WRITING, 9, 48);
    memcpy(gold + pos, &writing, 8);
    uint64_t a2 = QM_APPEND(0, count + 1, pos + 48);
    put("fuzz_segment", "dead-writer", &a2, 8, gold, n, QM_SEGMENT_HEADER);
    /* an append word far past the segment's end */
    uint64_t a3 = QM_APPEND(0, count, 0xfffffff8u);
    put("fuzz_segment", "append-past-end", &a3, 8, gold, n, QM_SEGMENT_HEADER);
    put("fuzz_segment", "header-truncated", &a, 8, gold, 64, 64);
    put("fuzz_segment", "empty", NULL, 0, gold, 0, 0);
    free(gold);

    /* groups */
    snprintf(dir, sizeof dir, "%s/log1", tmp);
    qm_group_config_t gc[2] = {{1, 16, 0, NULL}, {3, 4096, QM_GROUP_ORDERED, NULL}};
    for (int i = 0; i < 2; i++) {
        qm_group_t *g;
        int created;
        char gname[16];
        snprintf(gname, sizeof gname, "g%d", i);
        if ((rc = qm_group_open(dir, gname, QM_CREATE_ONLY, &gc[i], &g, &created)))
            die("group open", rc);
        qm_group_close(g);
        snprintf(p, sizeof p, "%s/groups/%s.grp", dir, gname);
        uint8_t *grp = slurp(p, &n);
        put("fuzz_group_ctl", i ? "ordered-3x4096" : "one-x16", NULL, 0, grp, QM_HEADER_BYTES, 0);
        if (!i) put("fuzz_group_ctl", "truncated", NULL, 0, grp, 300, 300);
        free(grp);
    }
    put("fuzz_group_ctl", "empty", NULL, 0, "", 0, 0);
    group_states(dir);
}

/* ----- fuzz_group_state: a group file's words after real claims and acks ----------- */
/* Input layout of fuzz_group_state.c: config, op count, ops, then the
 * shared words read from the group file `grp` (slurped while or after
 * the handle that wrote them was open). */
typedef struct gs_op { uint8_t b[8]; } gs_op_t;
static void group_state_seed(const char *name, uint8_t cfg, const uint8_t *grp, uint32_t parts,
                             unsigned wlog2, const gs_op_t *ops, uint8_t nops) {
    static uint8_t buf[1 << 16];
    size_t n = 0;
    buf[n++] = cfg;
    buf[n++] = nops;
    memcpy(buf + n, ops, (size_t)nops * 8);
    n += (size_t)nops * 8;
    const qm_group_ctl_t *c = (const qm_group_ctl_t *)grp;
    int64_t sweep = atomic_load(&c->last_sweep_ns);
    uint32_t hwm = atomic_load(&c->members_hwm);
    memcpy(buf + n, &sweep, 8), n += 8;
    memcpy(buf + n, &hwm, 4), n += 4;
    const qm_member_t *m = (const qm_member_t *)(grp + QM_MEMBERS_OFFSET);
    const uint64_t *settled = (const uint64_t *)(grp + QM_GROUP_SETTLED_OFFSET);
    for (uint32_t k = 1; k <= 4; k++) {
        uint32_t roles = atomic_load(&m[k].roles);
        uint64_t gen = atomic_load(&m[k].generation);
        memcpy(buf + n, &roles, 4), n += 4;
        memcpy(buf + n, &gen, 8), n += 8;
        memcpy(buf + n, &settled[k], 8), n += 8;
    }
    const qm_group_part_t *pt = (const qm_group_part_t *)(grp + QM_GROUP_PARTS_OFFSET);
    for (uint32_t p = 0; p < parts; p++) {
        uint64_t w[4] = {atomic_load(&pt[p].cursor.pos), atomic_load(&pt[p].committed.pos),
                         (uint64_t)atomic_load(&pt[p].next_due), atomic_load(&pt[p].owner)};
        memcpy(buf + n, w, sizeof w), n += sizeof w;
    }
    size_t eb = ((size_t)parts << wlog2) * QM_GROUP_ENTRY_BYTES;
    memcpy(buf + n, grp + c->entries_offset, eb);
    n += eb;
    put("fuzz_group_state", name, NULL, 0, buf, n, 0);
}

/* op codes of fuzz_group_state.c run_op() */
enum { GS_CLAIM = 0, GS_ACK = 2, GS_ACK_FORGED = 3, GS_NACK = 4, GS_EXTEND = 5, GS_ACK_MANY = 6,
       GS_SWEEP = 7, GS_SETTLE = 8, GS_SEEK = 9, GS_SKIP = 10, GS_STATS = 11, GS_OWN = 12 };
#define GS(code, p, x1, x2, x3, x4, lease, dt) {{code, p, x1, x2, x3, x4, lease, dt}}

static void group_states(const char *logdir) {
    char p[4096];
    size_t n;
    const int64_t t0 = 1000000000;   /* the harness's clock starts here */
    static const gs_op_t ops[] = {
        GS(GS_CLAIM, 0, 20, 1, 0, 7, 0, 1), GS(GS_ACK, 0, 0, 0, 0, 0, 0, 0),
        GS(GS_ACK, 0, 0, 0, 0, 0, 2, 0),    GS(GS_NACK, 0, 5, 0, 0, 0, 3, 1),
        GS(GS_CLAIM, 1, 9, 2, 1, 3, 0, 4),  GS(GS_EXTEND, 0, 9, 0, 0, 0, 1, 0),
        GS(GS_STATS, 0, 0, 0, 0, 0, 0, 0),  GS(GS_SWEEP, 0, 0, 0, 0, 0, 0, 250),
        GS(GS_CLAIM, 0, 30, 0, 0, 7, 0, 9), GS(GS_ACK_MANY, 0, 0, 0, 0, 0, 0, 0),
        GS(GS_SETTLE, 0, 0, 0, 0, 0, 0, 0), GS(GS_SKIP, 1, 12, 0, 0, 0, 0, 0),
        GS(GS_SEEK, 0, 130, 0, 0, 0, 0, 0), GS(GS_CLAIM, 0, 5, 0, 0, 2, 0, 1),
        GS(GS_ACK_FORGED, 0, 1, 4, 0, 0, 0, 0), GS(GS_OWN, 0, 0, 0, 0, 0, 0, 0),
    };
    const uint8_t nops = sizeof ops / sizeof ops[0];
    qm_group_lease_t l[32];
    size_t got;
    int rc;

    /* two partitions x 32: leases, acks with a gap, a nack, a completed claim */
    qm_group_config_t gc = {2, 32, 0, NULL};
    qm_group_t *g;
    if ((rc = qm_group_open(logdir, "gs1", QM_CREATE_ONLY, &gc, &g, NULL))) die("group gs1", rc);
    if ((rc = qm_group_claim(g, 0, 12, t0, 1000000, 0, l, 10, &got))) die("claim", rc);
    qm_group_ack(g, 0, l[0].offset, l[0].epoch);
    qm_group_ack(g, 0, l[2].offset, l[2].epoch);
    qm_group_nack(g, 0, l[3].offset, l[3].epoch, t0 + 5);
    if ((rc = qm_group_claim(g, 1, 7, t0, 0, QM_CLAIM_COMPLETE, l, 8, &got))) die("claim", rc);
    snprintf(p, sizeof p, "%s/groups/gs1.grp", logdir);
    uint8_t *grp = slurp(p, &n);   /* the member alive: its leases held */
    group_state_seed("leased-2x32", 1 | 2, grp, 2, 5, ops, nops);
    group_state_seed("leased-2x32-reboot", 1 | 2 | 8, grp, 2, 5, ops, nops);
    free(grp);
    qm_group_close(g);   /* releases: DELAYED entries, due now */
    grp = slurp(p, &n);
    group_state_seed("released-2x32", 1 | 2, grp, 2, 5, ops, nops);
    free(grp);

    /* one partition x 16, window full of leases */
    qm_group_config_t gf = {1, 16, 0, NULL};
    if ((rc = qm_group_open(logdir, "gs2", QM_CREATE_ONLY, &gf, &g, NULL))) die("group gs2", rc);
    if ((rc = qm_group_claim(g, 0, 100, t0, 1000000, 0, l, 16, &got))) die("claim", rc);
    snprintf(p, sizeof p, "%s/groups/gs2.grp", logdir);
    grp = slurp(p, &n);
    group_state_seed("full-1x16", 0, grp, 1, 4, ops, nops);
    free(grp);
    qm_group_close(g);

    /* ordered, one record in flight, after a seek */
    qm_group_config_t go = {1, 16, QM_GROUP_ORDERED, NULL};
    if ((rc = qm_group_open(logdir, "gs3", QM_CREATE_ONLY, &go, &g, NULL))) die("group gs3", rc);
    qm_group_seek(g, 0, 1000);
    if ((rc = qm_group_claim(g, 0, 1010, t0, 1000000, 0, l, 1, &got))) die("claim", rc);
    qm_group_ack(g, 0, l[0].offset, l[0].epoch);
    if ((rc = qm_group_claim(g, 0, 1010, t0, 1000000, 0, l, 1, &got))) die("claim", rc);
    snprintf(p, sizeof p, "%s/groups/gs3.grp", logdir);
    grp = slurp(p, &n);
    group_state_seed("ordered-1x16", 4, grp, 1, 4, ops, nops);
    free(grp);
    qm_group_close(g);
    static const uint8_t none[2] = {0, 0};
    put("fuzz_group_state", "empty", NULL, 0, none, 0, 0);
}

/* ----- fuzz_log_walk: a whole log folder, segments as sparse chunks ------------------ */
static size_t lw_put_u(uint8_t *b, size_t n, uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; i++) b[n + i] = i < 8 ? (uint8_t)(v >> (8 * i)) : 0;
    return n + bytes;
}

/* A segment as at most 16 chunks of its non-zero bytes (position / 8,
 * length, bytes), then the first 256 bytes of its index. */
static size_t lw_segment(uint8_t *b, size_t n, const char *logdir, uint64_t base) {
    char p[4096];
    size_t slen, ilen;
    snprintf(p, sizeof p, "%s/%020llu.log", logdir, (unsigned long long)base);
    uint8_t *seg = slurp(p, &slen);
    size_t starts[16], ends[16], k = 0;
    for (size_t pos = 0; pos < slen;) {
        if (!seg[pos]) {
            pos++;
            continue;
        }
        size_t s0 = pos & ~(size_t)7, e = pos;
        for (size_t zeros = 0; e < slen && zeros < 64; e++) zeros = seg[e] ? 0 : zeros + 1;
        while (e > s0 && !seg[e - 1]) e--;
        if (k == 16) k--;   /* out of chunks: the last one grows */
        else starts[k] = s0;
        ends[k++] = e;
        pos = e;
    }
    n = lw_put_u(b, n, k ? k - 1 : 0, 1);
    for (size_t i = 0; i < k; i++) {
        n = lw_put_u(b, n, starts[i] / 8, 2);
        n = lw_put_u(b, n, ends[i] - starts[i], 2);
        memcpy(b + n, seg + starts[i], ends[i] - starts[i]);
        n += ends[i] - starts[i];
    }
    if (!k) n = lw_put_u(b, n, 0, 4);   /* one empty chunk */
    free(seg);
    snprintf(p, sizeof p, "%s/%020llu.idx", logdir, (unsigned long long)base);
    uint8_t *idx = slurp(p, &ilen);
    size_t keep = ilen < 256 ? ilen : 256;
    while (keep && !idx[keep - 1]) keep--;
    n = lw_put_u(b, n, keep, 2);
    memcpy(b + n, idx, keep);
    free(idx);
    return n + keep;
}

static void lw_seed(const char *name, const char *logdir, const uint64_t *bases, unsigned nseg,
                    uint64_t seek, int64_t ts, uint8_t flags, int64_t gen_skew) {
    static uint8_t b[1 << 18];
    char p[4096];
    size_t clen;
    snprintf(p, sizeof p, "%s/control", logdir);
    uint8_t *ctl = slurp(p, &clen);
    const qm_log_ctl_t *c = (const qm_log_ctl_t *)ctl;
    size_t n = 0;
    n = lw_put_u(b, n, seek, 8);
    n = lw_put_u(b, n, (uint64_t)ts, 8);
    uint64_t a = atomic_load(&c->append.pos);
    if (gen_skew)   /* a roller that died after publishing: the word one generation behind */
        a = QM_APPEND(QM_APPEND_GEN(a) - 1, QM_APPEND_COUNT(a), QM_APPEND_POS(a));
    n = lw_put_u(b, n, a, 8);
    n = lw_put_u(b, n, atomic_load(&c->active_base), 8);
    n = lw_put_u(b, n, atomic_load(&c->active_gen), 8);
    n = lw_put_u(b, n, atomic_load(&c->start_offset), 8);
    n = lw_put_u(b, n, (uint64_t)(nseg - 1) | flags, 1);
    n = lw_put_u(b, n, 0, 15);
    for (unsigned i = 0; i < nseg; i++) n = lw_segment(b, n, logdir, bases[i]);
    free(ctl);
    put("fuzz_log_walk", name, NULL, 0, b, n, n);
}

static void log_walks(const char *tmp) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/walk", tmp);
    qm_log_config_t cfg = {SEG, 0, 0, 0};
    qm_log_t *lg;
    int rc = qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg);
    if (rc) die("log open walk", rc);
    /* segment 0: small records with keys and headers */
    for (int i = 0; i < 12; i++) log_append(lg, (size_t)i % 4, (size_t)i % 3, 20 + (size_t)i, 100 + i);
    uint64_t one = 0;
    lw_seed("one-segment", dir, &one, 1, 5, 105, 0, 0);
    /* zero-valued records fill segments cheaply (the seed stores zeros as
     * gaps): two rolls, with index entries every 4 KiB */
    static uint8_t zero[SEG / 4];
    for (int i = 0; i < 7; i++) {
        qm_iovec_t v = {zero, sizeof zero};
        qm_log_entry_t e = {NULL, 0, NULL, 0, &v, 1, 200 + i};
        uint64_t off;
        if ((rc = qm_log_append(lg, &e, &off))) die("log append zero", rc);
    }
    for (int i = 0; i < 3; i++) log_append(lg, 1, 1, 9 + (size_t)i, 300 + i);
    qm_log_stats_t st;
    if ((rc = qm_log_stats(lg, &st)) || st.segments != 3) die("walk log: three segments", rc);
    qm_log_close(lg);
    uint64_t bases[3];
    size_t nb = 0;
    for (uint64_t b = 0; b < 64 && nb < 3; b++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%020llu.log", dir, (unsigned long long)b);
        if (access(p, F_OK) == 0) bases[nb++] = b;
    }
    if (nb != 3) die("walk log: segment bases", -1);
    lw_seed("three-segments", dir, bases, 3, bases[1] + 1, 201, 0, 0);
    lw_seed("three-segments-seek-time", dir, bases, 3, 2, 302, 0, 0);
    lw_seed("three-segments-last-cut", dir, bases, 3, 0, 0, 8, 0);
    lw_seed("three-segments-no-index", dir, bases, 3, bases[2], 250, 16, 0);
    lw_seed("three-segments-retention", dir, bases, 3, 0, 0, 4, 0);
    lw_seed("roll-not-finished", dir, bases, 3, 0, 0, 0, 1);
    lw_seed("active-only", dir, bases + 2, 1, 0, 0, 0, 0);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    rings();
    char tmp[] = "/tmp/qm-gen-corpus-XXXXXX";
    if (!mkdtemp(tmp)) die("mkdtemp", -errno);
    logs(tmp);
    log_walks(tmp);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) ? 1 : 0;
}
