/*
 * test_log.c - the partition log: appending, reading in offset order,
 * rolling segments, persistence across reopen, dead writers, corrupt
 * bytes and headers, concurrent writer processes.
 */
#include "check.h"
#include "internal.h"
#include "stress_common.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEG (64u << 10)

static const qm_log_config_t *segcfg(void) {
    static const qm_log_config_t cfg = {SEG, 0, 0, 0};
    return &cfg;
}

static char dirbuf[400];
static const char *logdir(const char *tag) {
    snprintf(dirbuf, sizeof dirbuf, "%s/%s", check_dir, tag);
    return dirbuf;
}

static int append_str(qm_log_t *lg, const char *key, const char *value, uint64_t *off) {
    qm_iovec_t v = {value, strlen(value)};
    qm_log_entry_t e = {key, key ? (uint32_t)strlen(key) : 0, "h=1", 3, &v, 1, 0};
    return qm_log_append(lg, &e, off);
}

static void appends_get_consecutive_offsets_and_read_back_in_order(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("order"), QM_CREATE_ONLY, segcfg(), &lg), 0);
    uint64_t off;
    for (uint64_t i = 0; i < 100; i++) {
        char v[32];
        snprintf(v, sizeof v, "value-%llu", (unsigned long long)i);
        CHECK_RC(append_str(lg, "k", v, &off), 0);
        CHECK(off == i);
    }
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    for (uint64_t i = 0; i < 100; i++) {
        qm_log_record_t rec;
        CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
        char want[32];
        snprintf(want, sizeof want, "value-%llu", (unsigned long long)i);
        CHECK(rec.offset == i && rec.value_len == strlen(want));
        CHECK(memcmp(rec.value, want, rec.value_len) == 0);
        CHECK(rec.key_len == 1 && memcmp(rec.key, "k", 1) == 0);
        CHECK(rec.headers_len == 3 && memcmp(rec.headers, "h=1", 3) == 0);
        CHECK(rec.timestamp_ns > 1600000000LL * 1000000000LL);
    }
    qm_log_record_t rec;
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_EAGAIN);
    int64_t t0 = qm_now_ns();
    CHECK_RC(qm_log_read(lg, &cur, &rec, t0 + 20000000), QM_ETIMEDOUT);
    CHECK(qm_now_ns() - t0 >= 20000000);
    uint64_t start, end;
    CHECK_RC(qm_log_bounds(lg, &start, &end), 0);
    CHECK(start == 0 && end == 100);
    qm_log_close(lg);
}

static void empty_values_and_largest_record_fit_larger_is_refused(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("sizes"), QM_CREATE_ONLY, segcfg(), &lg), 0);
    uint64_t off;
    qm_log_entry_t e = {NULL, 0, NULL, 0, NULL, 0, 0};
    CHECK_RC(qm_log_append(lg, &e, &off), 0);
    CHECK(qm_log_max_record(lg) == SEG / 2);
    static uint8_t big[SEG / 2 + 1];
    qm_iovec_t v = {big, SEG / 2};
    e.value = &v;
    e.value_cnt = 1;
    CHECK_RC(qm_log_append(lg, &e, &off), 0);
    CHECK(off == 1);
    e.key = big;   /* the largest value fits beside a key of a quarter segment */
    e.key_len = SEG / 4;
    CHECK_RC(qm_log_append(lg, &e, &off), 0);
    e.key_len = SEG / 4 + 1;
    CHECK_RC(qm_log_append(lg, &e, &off), QM_ETOOBIG);
    e.key_len = 0;
    e.key = NULL;
    v.len = SEG / 2 + 1;
    CHECK_RC(qm_log_append(lg, &e, &off), QM_ETOOBIG);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 0 && rec.value_len == 0 && rec.key_len == 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 1 && rec.value_len == SEG / 2);
    qm_log_close(lg);
}

static void full_segments_roll_and_readers_follow_across_them(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("roll"), QM_CREATE_ONLY, segcfg(), &lg), 0);
    static char v[3000];
    memset(v, 'r', sizeof v - 1);
    uint64_t off;
    for (int i = 0; i < 200; i++) CHECK_RC(append_str(lg, NULL, v, &off), 0);
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    CHECK(st.segments_rolled >= 8 && st.end_offset == 200 && st.start_offset == 0);
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    for (uint64_t i = 0; i < 200; i++) {
        qm_log_record_t rec;
        CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
        CHECK(rec.offset == i && rec.value_len == sizeof v - 1);
    }
    /* seek into a later segment */
    CHECK_RC(qm_log_seek(lg, &cur, 150), 0);
    qm_log_record_t rec;
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 150);
    CHECK_RC(qm_log_seek(lg, &cur, 1000), 0);   /* past the end: waits there */
    CHECK(cur.next_offset == 200);
    qm_log_close(lg);
}

static void records_survive_close_and_reopen(void) {
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(logdir("persist"), QM_CREATE_ONLY, segcfg(), &lg), 0);
    for (int i = 0; i < 40; i++) CHECK_RC(append_str(lg, "k", "persisted", &off), 0);
    qm_log_close(lg);
    CHECK_RC(qm_log_open(logdir("persist"), QM_OPEN_ONLY, segcfg(), &lg), 0);
    CHECK_RC(append_str(lg, "k", "more", &off), 0);
    CHECK(off == 40);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 39), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 39 && memcmp(rec.value, "persisted", 9) == 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 40 && memcmp(rec.value, "more", 4) == 0);
    qm_log_close(lg);
    CHECK_RC(qm_log_open(logdir("missing"), QM_OPEN_ONLY, segcfg(), &lg), QM_ENOTFOUND);
}

static uint8_t *map_file(const char *dir, const char *name, size_t len) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR);
    if (fd < 0) return NULL;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static void dead_writer_leaves_a_gap_and_never_blocks_readers(void) {
    const char *dir = logdir("deadwriter");
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    CHECK_RC(append_str(lg, NULL, "before", &off), 0);
    pid_t pid = fork();
    if (pid == 0) {   /* claim offset 1 exactly as qm_log_append does, then die */
        qm_log_t *mine;
        qm_log_stats_t st;
        if (qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &mine) || qm_log_stats(mine, &st)) _exit(2);
        qm_log_ctl_t *c = (qm_log_ctl_t *)map_file(dir, "control", QM_DATA_OFFSET);
        uint8_t *seg = map_file(dir, "00000000000000000000.log", SEG);
        if (!c || !seg) _exit(3);
        uint64_t a = atomic_load(&c->append.pos);
        atomic_store((_Atomic uint64_t *)(seg + QM_APPEND_POS(a)),
                     QM_REC_WORD(QM_REC_WRITING, st.member_slot, 64));
        atomic_store(&c->append.pos, QM_APPEND(QM_APPEND_GEN(a), QM_APPEND_COUNT(a) + 1,
                                               QM_APPEND_POS(a) + 64));
        raise(SIGKILL);
    }
    waitpid(pid, NULL, 0);
    CHECK_RC(append_str(lg, NULL, "after", &off), 0);
    CHECK(off == 2);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, qm_now_ns() + 1000000000), 0);
    CHECK(rec.offset == 2 && memcmp(rec.value, "after", 5) == 0);   /* 1 is a gap */
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    CHECK(st.abandoned == 1);
    qm_log_close(lg);
}

/* A roller that published the next segment (active_gen moved) and died
 * before moving the append word leaves the two a generation apart: bounds
 * and appends finish the roll instead of spinning forever. */
static void a_roll_whose_roller_died_midway_is_finished_by_the_next_caller(void) {
    const char *dir = logdir("halfroll");
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    qm_log_ctl_t *c = (qm_log_ctl_t *)map_file(dir, "control", QM_DATA_OFFSET);
    CHECK(c != NULL);
    static char v[3000];
    memset(v, 'r', sizeof v - 1);
    uint64_t off = 0, before = 0, rolls = 0;
    for (int i = 0; i < 100 && rolls == 0; i++) {
        before = atomic_load(&c->append.pos);
        CHECK_RC(append_str(lg, NULL, v, &off), 0);
        rolls = atomic_load(&c->rolls);
    }
    CHECK(rolls == 1 && off > 0);   /* `off` is the first record of the new segment */
    atomic_store(&c->append.pos, before);   /* as if the roller died between [L3] and [L4] */
    uint64_t start, end;
    CHECK_RC(qm_log_bounds(lg, &start, &end), 0);   /* finishes the roll, does not hang */
    CHECK(end == off || end == off + 1);
    uint64_t next;
    CHECK_RC(append_str(lg, NULL, "after", &next), 0);
    CHECK(next == off + 1);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    for (uint64_t i = 0; i <= next; i++) {
        CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
        CHECK(rec.offset == i && rec.value_len == (i == next ? 5 : sizeof v - 1));
    }
    /* generations that no roll leaves apart are corruption, not a hang */
    uint64_t a = atomic_load(&c->append.pos);
    atomic_store(&c->append.pos, QM_APPEND((QM_APPEND_GEN(a) + 7) & 0xfff, 0, QM_SEGMENT_HEADER));
    CHECK_RC(qm_log_bounds(lg, &start, &end), QM_ECORRUPT);
    CHECK_RC(append_str(lg, NULL, "x", &next), QM_ECORRUPT);
    atomic_store(&c->append.pos, a);
    CHECK_RC(append_str(lg, NULL, "fine again", &next), 0);
    munmap(c, QM_DATA_OFFSET);
    qm_log_close(lg);
}

/* The active segment of a log that holds records cannot silently become a
 * new empty one: a lone opener that finds it cut refuses. */
static void a_cut_active_segment_holding_records_is_corrupt_not_recreated(void) {
    const char *dir = logdir("cutactive");
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    CHECK_RC(append_str(lg, NULL, "precious", &off), 0);
    qm_log_close(lg);
    char path[600];
    snprintf(path, sizeof path, "%s/00000000000000000000.log", dir);
    CHECK(truncate(path, 4) == 0);
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, NULL, &lg), QM_ECORRUPT);
    CHECK(strstr(qm_last_error(), "holds 1 records") != NULL);
}

static void flipped_bit_is_a_crc_error_and_bad_length_is_corrupt(void) {
    const char *dir = logdir("bitflip");
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    CHECK_RC(append_str(lg, "key", "a value that will be damaged", &off), 0);
    uint8_t *seg = map_file(dir, "00000000000000000000.log", SEG);
    CHECK(seg != NULL);
    seg[QM_SEGMENT_HEADER + QM_RECORD_HEADER + 10] ^= 0x10;
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_ECORRUPT);
    /* a reader that opted out of CRCs gets the record; the flag survives seeks */
    qm_log_cursor_t trusting = {.flags = QM_CURSOR_NO_CRC};
    CHECK_RC(qm_log_seek(lg, &trusting, 0), 0);
    CHECK_RC(qm_log_read(lg, &trusting, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 0 && rec.value_len == 28);
    seg[QM_SEGMENT_HEADER + QM_RECORD_HEADER + 10] ^= 0x10;
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    /* a length word pointing past the segment */
    CHECK_RC(append_str(lg, "key", "second", &off), 0);
    _Atomic uint64_t *w = (_Atomic uint64_t *)(seg + cur.pos);
    uint64_t good = atomic_load(w);
    atomic_store(w, QM_REC_WORD(QM_REC_COMMITTED, 1, SEG * 2));
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_ECORRUPT);
    atomic_store(w, QM_REC_WORD(7, 1, 64));
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_ECORRUPT);
    atomic_store(w, good);
    /* a key length larger than the record */
    uint32_t saved;
    memcpy(&saved, seg + cur.pos + 12, 4);
    uint32_t huge = 1u << 30;
    memcpy(seg + cur.pos + 12, &huge, 4);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_ECORRUPT);
    memcpy(seg + cur.pos + 12, &saved, 4);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    munmap(seg, SEG);
    qm_log_close(lg);
}

static void header_validators_reject_every_bad_field(void) {
    const char *dir = logdir("headers");
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    qm_log_close(lg);
    uint8_t *ctl = map_file(dir, "control", QM_DATA_OFFSET);
    uint8_t *seg = map_file(dir, "00000000000000000000.log", SEG);
    CHECK(ctl && seg);
    static uint8_t img[4096];
    qm_log_config_t segb;
    memcpy(img, ctl, sizeof img);
    CHECK_RC(qm__log_ctl_check(img, sizeof img, QM_DATA_OFFSET, &segb), 0);
    CHECK(segb.segment_bytes == SEG);
    qm_header_t *h = (qm_header_t *)img;
#define MUTATE(stmt, want)                                                          \
    do {                                                                            \
        memcpy(img, ctl, sizeof img);                                               \
        stmt;                                                                       \
        CHECK_RC(qm__log_ctl_check(img, sizeof img, QM_DATA_OFFSET, &segb), want);  \
    } while (0)
    MUTATE(atomic_store(&h->magic, 1), QM_ECORRUPT);
    MUTATE(atomic_store(&h->magic, __builtin_bswap64(QM_MAGIC_LOG_CTL)), QM_EINCOMPAT);
    MUTATE(h->format_major = 3, QM_EINCOMPAT);
    MUTATE(h->layout_fingerprint ^= 4, QM_EINCOMPAT);
    MUTATE(h->object_kind = QM_KIND_RING, QM_EINCOMPAT);
    MUTATE(h->total_bytes = 1, QM_ECORRUPT);
    MUTATE(h->members_offset = 8, QM_ECORRUPT);
    MUTATE(h->data_bytes = 1000, QM_ECORRUPT);
    MUTATE(h->data_bytes = UINT64_C(1) << 40, QM_ECORRUPT);
    MUTATE(h->max_message = 1, QM_ECORRUPT);
    MUTATE(h->reserved[0] = 9, QM_EINCOMPAT);
    MUTATE(((qm_log_ctl_t *)img)->flags = 8, QM_EINCOMPAT);
    MUTATE(((qm_log_ctl_t *)img)->retention_ns = -1, QM_EINCOMPAT);
#undef MUTATE
    CHECK_RC(qm__log_ctl_check(img, 10, QM_DATA_OFFSET, &segb), QM_ECORRUPT);
    static uint8_t simg[SEG];
    qm_segment_header_t *sh = (qm_segment_header_t *)simg;
#define SMUTATE(stmt, want)                                                 \
    do {                                                                    \
        memcpy(simg, seg, sizeof simg);                                     \
        stmt;                                                               \
        CHECK_RC(qm__segment_check(simg, sizeof simg, 0, SEG), want);       \
    } while (0)
    SMUTATE((void)0, QM_OK);
    SMUTATE(sh->magic = 0, QM_ENOTREADY);
    SMUTATE(sh->magic = 5, QM_ECORRUPT);
    SMUTATE(sh->format_major = 2, QM_EINCOMPAT);
    SMUTATE(sh->layout_fingerprint = 0, QM_EINCOMPAT);
    SMUTATE(sh->base_offset = 7, QM_ECORRUPT);
    SMUTATE(sh->segment_bytes = SEG * 2, QM_ECORRUPT);
#undef SMUTATE
    CHECK_RC(qm__segment_check(seg, 64, 0, SEG), QM_ECORRUPT);
    munmap(ctl, QM_DATA_OFFSET);
    munmap(seg, SEG);
}

static void folder_that_is_a_symlink_or_shared_is_refused(void) {
    char real[500], link_[500];
    snprintf(real, sizeof real, "%s/realdir", check_dir);
    snprintf(link_, sizeof link_, "%s/linkdir", check_dir);
    CHECK(mkdir(real, 0700) == 0);
    CHECK(symlink(real, link_) == 0);
    qm_log_t *lg;
    CHECK_RC(qm_log_open(link_, QM_OPEN_OR_CREATE, segcfg(), &lg), QM_EPERM);
    CHECK(chmod(real, 0755) == 0);
    CHECK_RC(qm_log_open(real, QM_OPEN_OR_CREATE, segcfg(), &lg), QM_EPERM);
    qm_log_config_t tiny = {1000, 0, 0, 0};
    CHECK_RC(qm_log_open(real, QM_OPEN_OR_CREATE, &tiny, &lg), QM_EINVAL);
    struct stat st;
    char ctl[600];
    snprintf(ctl, sizeof ctl, "%s/control", real);
    CHECK(stat(ctl, &st) != 0);   /* nothing was created */
}

static void retention_deletes_old_segments_and_late_readers_skip_ahead(void) {
    qm_log_config_t cfg = {SEG, 4 * SEG, 0, 0};
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("retention"), QM_CREATE_ONLY, &cfg, &lg), 0);
    qm_log_cursor_t late = {0}, early = {0};
    CHECK_RC(qm_log_seek(lg, &late, 0), 0);
    CHECK_RC(qm_log_seek(lg, &early, 0), 0);
    static char v[3000];
    memset(v, 'q', sizeof v - 1);
    uint64_t off;
    qm_log_record_t rec;
    long early_read = 0;
    for (int i = 0; i < 400; i++) {
        CHECK_RC(append_str(lg, NULL, v, &off), 0);
        if (qm_log_read(lg, &early, &rec, QM_NOWAIT) == 0) early_read++;   /* keeps up */
    }
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    CHECK(st.segments <= 4 && st.bytes <= 4 * SEG);
    CHECK(st.start_offset > 0 && st.end_offset == 400);
    CHECK(early_read == 400 && early.skipped == 0);
    /* the late reader's segment is gone: it jumps to the start, counting */
    CHECK_RC(qm_log_read(lg, &late, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == st.start_offset);
    CHECK(late.skipped == st.start_offset);
    CHECK_RC(qm_log_seek(lg, &late, 0), QM_ENOTFOUND);
    uint64_t deleted = 9;
    CHECK_RC(qm_log_retain(lg, &deleted), 0);
    CHECK(deleted == 0);   /* already within bounds */
    qm_log_close(lg);
}

/* Segment files of the log `tag` this process has mapped, from /proc/self/maps
 * (a deleted one shows as "... (deleted)"). */
static int mapped_segments(const char *tag, int *deleted) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[1024], needle[450];
    snprintf(needle, sizeof needle, "%s/", logdir(tag));
    int n = 0;
    *deleted = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, needle) && strstr(line, ".log")) {
            n++;
            if (strstr(line, "(deleted)")) (*deleted)++;
        }
    if (f) fclose(f);
    return n;
}

static void readers_unmap_deleted_and_old_segments_unless_held(void) {
    qm_log_config_t cfg = {SEG, 3 * SEG, 0, 0};
    qm_log_t *w, *r;
    CHECK_RC(qm_log_open(logdir("holds"), QM_CREATE_ONLY, &cfg, &w), 0);
    CHECK_RC(qm_log_open(logdir("holds"), QM_OPEN_ONLY, NULL, &r), 0);
    static char v[3000];
    memset(v, 'h', sizeof v - 1);
    uint64_t off;
    CHECK_RC(append_str(w, NULL, "first", &off), 0);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(r, &cur, 0), 0);
    CHECK_RC(qm_log_read(r, &cur, &rec, QM_NOWAIT), 0);
    void *hold = qm_log_hold(&rec);
    const char *first = rec.value;
    /* the writer fills many segments; retention deletes the first ones */
    int deleted;
    for (int i = 0; i < 300; i++) {
        CHECK_RC(append_str(w, NULL, v, &off), 0);
        if (qm_log_read(r, &cur, &rec, QM_NOWAIT) == 0) CHECK(rec.value_len == sizeof v - 1);
        int n = mapped_segments("holds", &deleted);
        CHECK(n <= 2 * 4 + 1);   /* what retention keeps, per handle, plus the held one */
    }
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(w, &st), 0);
    CHECK(st.start_offset > 0);
    /* the held record's segment is deleted but still readable */
    CHECK(memcmp(first, "first", 5) == 0);
    mapped_segments("holds", &deleted);
    CHECK(deleted == 1);
    qm_log_release(hold);
    qm_log_release(NULL);
    CHECK_RC(qm_log_read(r, &cur, &rec, QM_NOWAIT), QM_EAGAIN);   /* trims on entry */
    mapped_segments("holds", &deleted);
    CHECK(deleted == 0);
    qm_log_close(r);
    qm_log_close(w);
    CHECK(mapped_segments("holds", &deleted) == 0);
}

/* Bytes of the file's space that are allocated (st_blocks). */
static uint64_t allocated(const char *tag, const char *file) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", logdir(tag), file);
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static void segments_are_allocated_in_doubling_steps_ahead_of_the_writers(void) {
    const uint64_t seg = UINT64_C(8) << 20;
    qm_log_config_t cfg = {seg, 0, 0, 0};
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("steps"), QM_CREATE_ONLY, &cfg, &lg), 0);
    const char *file = "00000000000000000000.log";
    struct stat st;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", logdir("steps"), file);
    CHECK(stat(path, &st) == 0 && (uint64_t)st.st_size == seg);   /* full size at once */
    uint64_t empty = allocated("steps", file);
    CHECK(empty >= QM_SEGMENT_FIRST_RESERVE && empty <= QM_SEGMENT_FIRST_RESERVE + 65536);
    CHECK(allocated("steps", "00000000000000000000.idx") <= 4096);
    static char v[10000];
    memset(v, 'r', sizeof v - 1);
    uint64_t off = 0, written = 0;
    for (int i = 0; written < (UINT64_C(3) << 20); i++) {
        CHECK_RC(append_str(lg, NULL, v, &off), 0);
        written += sizeof v;
    }
    uint64_t used = allocated("steps", file);
    CHECK(used >= written && used <= 2 * written + QM_SEGMENT_FIRST_RESERVE);   /* doubling */
    CHECK(used < seg);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    uint64_t n = 0;
    while (qm_log_read(lg, &cur, &rec, QM_NOWAIT) == 0) n++;
    CHECK(n == off + 1);
    qm_log_close(lg);
}

static void a_handle_that_left_keeps_its_held_records_but_is_no_member(void) {
    qm_log_t *w, *r;
    CHECK_RC(qm_log_open(logdir("leave"), QM_CREATE_ONLY, segcfg(), &w), 0);
    CHECK_RC(qm_log_open(logdir("leave"), QM_OPEN_ONLY, NULL, &r), 0);
    uint64_t off;
    CHECK_RC(append_str(w, NULL, "kept", &off), 0);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(r, &cur, 0), 0);
    CHECK_RC(qm_log_read(r, &cur, &rec, QM_NOWAIT), 0);
    void *hold = qm_log_hold(&rec);
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(w, &st), 0);
    CHECK(st.members == 2);
    qm_log_leave(r);
    qm_log_leave(r);   /* idempotent */
    CHECK_RC(qm_log_stats(w, &st), 0);
    CHECK(st.members == 1);
    CHECK(memcmp(rec.value, "kept", 4) == 0);   /* still mapped */
    qm_log_release(hold);
    qm_log_close(r);
    CHECK_RC(qm_log_stats(w, &st), 0);
    CHECK(st.members == 1);
    qm_log_close(w);
}

static void a_reader_keeps_only_its_recently_used_segments_mapped(void) {
    qm_log_t *w, *r;
    CHECK_RC(qm_log_open(logdir("lru"), QM_CREATE_ONLY, segcfg(), &w), 0);
    static char v[8000];
    memset(v, 'l', sizeof v - 1);
    uint64_t off;
    int segments = 3 * QM_LOG_MAPPED_KEEP, deleted;
    for (int i = 0; i < segments * 8; i++) CHECK_RC(append_str(w, NULL, v, &off), 0);
    qm_log_close(w);
    CHECK(mapped_segments("lru", &deleted) == 0);
    CHECK_RC(qm_log_open(logdir("lru"), QM_OPEN_ONLY, NULL, &r), 0);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(r, &cur, 0), 0);
    int most = 0;
    void *first = NULL;
    for (uint64_t i = 0; i <= off; i++) {
        CHECK_RC(qm_log_read(r, &cur, &rec, QM_NOWAIT), 0);
        CHECK(rec.offset == i && rec.value_len == sizeof v - 1);
        if (i == 0) first = qm_log_hold(&rec);
        int n = mapped_segments("lru", &deleted);
        if (n > most) most = n;
    }
    CHECK(most <= QM_LOG_MAPPED_KEEP + 2);   /* the kept ones, the held one, the new one */
    CHECK(most >= QM_LOG_MAPPED_KEEP);
    qm_log_release(first);
    CHECK_RC(qm_log_seek_time(r, &cur, INT64_MAX), 0);   /* looks at every segment */
    CHECK(cur.next_offset == off + 1);
    CHECK(mapped_segments("lru", &deleted) <= QM_LOG_MAPPED_KEEP + 1);
    CHECK_RC(qm_log_seek(r, &cur, 0), 0);      /* remaps what was dropped */
    CHECK_RC(qm_log_read(r, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 0 && ((const char *)rec.value)[0] == 'l');
    qm_log_close(r);
}

static void retention_by_age_keeps_recent_segments(void) {
    qm_log_config_t cfg = {SEG, 0, INT64_C(60) * 1000000000, 0};
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("age"), QM_CREATE_ONLY, &cfg, &lg), 0);
    static char v[3000];
    memset(v, 'a', sizeof v - 1);
    uint64_t off;
    /* old records (timestamps given) fill a few segments, then new ones */
    for (int i = 0; i < 100; i++) {
        qm_iovec_t val = {v, sizeof v - 1};
        qm_log_entry_t e = {NULL, 0, NULL, 0, &val, 1, INT64_C(1000000000)};   /* 1970 */
        CHECK_RC(qm_log_append(lg, &e, &off), 0);
    }
    for (int i = 0; i < 50; i++) CHECK_RC(append_str(lg, NULL, v, &off), 0);
    uint64_t start, end;
    CHECK_RC(qm_log_bounds(lg, &start, &end), 0);
    CHECK(start >= 80 && start <= 100 && end == 150);   /* old segments gone, new kept */
    qm_log_config_t got;
    CHECK_RC(qm_log_config(lg, &got), 0);
    CHECK(got.retention_ns == cfg.retention_ns && got.segment_bytes == SEG);
    qm_log_close(lg);
    /* reopening with another configuration keeps the stored one */
    qm_log_config_t other = {SEG * 2, 0, 0, QM_LOG_FSYNC};
    CHECK_RC(qm_log_open(logdir("age"), QM_OPEN_OR_CREATE, &other, &lg), 0);
    CHECK_RC(qm_log_config(lg, &got), 0);
    CHECK(got.segment_bytes == SEG && got.flags == 0 && got.retention_ns == cfg.retention_ns);
    qm_log_close(lg);
}

static void seek_by_time_finds_the_first_record_at_or_after(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("time"), QM_CREATE_ONLY, segcfg(), &lg), 0);
    static char v[2000];
    memset(v, 't', sizeof v - 1);
    uint64_t off;
    for (int i = 0; i < 200; i++) {
        qm_iovec_t val = {v, sizeof v - 1};
        qm_log_entry_t e = {NULL, 0, NULL, 0, &val, 1, INT64_C(1000) * (i + 1)};
        CHECK_RC(qm_log_append(lg, &e, &off), 0);
    }
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek_time(lg, &cur, 150500), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 150 && rec.timestamp_ns == 151000);
    CHECK_RC(qm_log_seek_time(lg, &cur, 0), 0);
    CHECK(cur.next_offset == 0);
    CHECK_RC(qm_log_seek_time(lg, &cur, INT64_MAX), 0);
    CHECK(cur.next_offset == 200);
    qm_log_close(lg);
}

static void fsync_mode_group_commits_concurrent_appends(void) {
    qm_log_config_t cfg = {SEG, 0, 0, QM_LOG_FSYNC};
    const char *dir = logdir("fsync");
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg), 0);
    pid_t kids[4];
    for (int k = 0; k < 4; k++) {
        if ((kids[k] = fork()) == 0) {
            qm_log_t *mine;
            if (qm_log_open(dir, QM_OPEN_ONLY, &cfg, &mine)) _exit(2);
            uint64_t off;
            for (int i = 0; i < 100; i++)
                if (append_str(mine, NULL, "durable", &off)) _exit(3);
            _exit(0);
        }
    }
    int bad = 0;
    for (int k = 0; k < 4; k++) {
        int status;
        waitpid(kids[k], &status, 0);
        bad += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    fprintf(stderr, "  %llu appends covered by %llu fdatasyncs\n",
            (unsigned long long)st.synced_appends, (unsigned long long)st.syncs);
    CHECK(bad == 0 && st.end_offset == 400);
    CHECK(st.synced_appends == 400 && st.syncs >= 1 && st.syncs <= 400);
    qm_log_close(lg);
}

static void wait_any_wakes_for_an_append_to_any_log(void) {
    qm_log_t *a, *b;
    CHECK_RC(qm_log_open(logdir("wa"), QM_CREATE_ONLY, segcfg(), &a), 0);
    CHECK_RC(qm_log_open(logdir("wb"), QM_CREATE_ONLY, segcfg(), &b), 0);
    qm_log_cursor_t cur[2] = {{0}};
    CHECK_RC(qm_log_seek(a, &cur[0], 0), 0);
    CHECK_RC(qm_log_seek(b, &cur[1], 0), 0);
    qm_log_t *logs[2] = {a, b};
    int64_t t0 = qm_now_ns();
    CHECK_RC(qm_log_wait_any(logs, cur, 2, t0 + 30000000), QM_ETIMEDOUT);
    CHECK(qm_now_ns() - t0 >= 30000000);
    pid_t kid = fork();
    if (kid == 0) {
        qm_log_t *mine;
        usleep(50000);
        if (qm_log_open(logdir("wb"), QM_OPEN_ONLY, segcfg(), &mine)) _exit(2);
        uint64_t off;
        _exit(append_str(mine, NULL, "wake", &off) ? 3 : 0);
    }
    int rc;
    qm_log_record_t rec;
    do {
        rc = qm_log_wait_any(logs, cur, 2, qm_now_ns() + 5000000000);
    } while (rc == QM_OK && qm_log_read(b, &cur[1], &rec, QM_NOWAIT) != QM_OK);
    CHECK(rc == QM_OK && rec.offset == 0 && memcmp(rec.value, "wake", 4) == 0);
    waitpid(kid, NULL, 0);
    qm_log_interrupt(a);
    CHECK_RC(qm_log_wait_any(logs, cur, 2, QM_FOREVER), QM_ECLOSED);
    CHECK_RC(qm_log_read(a, &cur[0], &rec, QM_FOREVER), QM_ECLOSED);
    qm_log_close(a);
    qm_log_close(b);
}

static void seeks_use_the_index_and_survive_a_bad_or_missing_one(void) {
    const char *dir = logdir("index");
    qm_log_config_t cfg = {UINT64_C(1) << 20, 0, 0, 0};
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg), 0);
    static char v[700];
    memset(v, 'i', sizeof v);
    uint64_t off;
    for (int i = 0; i < 3000; i++) {   /* ~2 MiB: three segments */
        qm_iovec_t val = {v, (size_t)(i * 37) % sizeof v};
        qm_log_entry_t e = {NULL, 0, NULL, 0, &val, 1, INT64_C(1000) * (i + 1)};
        CHECK_RC(qm_log_append(lg, &e, &off), 0);
    }
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    for (uint64_t want = 0; want < 3000; want += 97) {
        CHECK_RC(qm_log_seek(lg, &cur, want), 0);
        CHECK(cur.pos > QM_SEGMENT_HEADER || cur.next_offset == cur.base);
        CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
        CHECK(rec.offset == want);
    }
    CHECK_RC(qm_log_seek_time(lg, &cur, 2500500), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 2500);
    qm_log_close(lg);
    /* scribble over the first segment's index: seeks stay right */
    char path[600];
    snprintf(path, sizeof path, "%s/00000000000000000000.idx", dir);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint64_t junk[64];
    for (int i = 0; i < 64; i++) junk[i] = (UINT64_C(500) << 32) | (uint64_t)(136 + 8 * i);
    CHECK(pwrite(fd, junk, sizeof junk, 16 * 10) == (ssize_t)sizeof junk);
    close(fd);
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg), 0);
    for (uint64_t want = 1; want < 1000; want += 53) {
        CHECK_RC(qm_log_seek(lg, &cur, want), 0);
        CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
        CHECK(rec.offset == want);
    }
    qm_log_close(lg);
    CHECK(unlink(path) == 0);   /* and without it, seeks scan */
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg), 0);
    CHECK_RC(qm_log_seek(lg, &cur, 777), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 777);
    qm_log_close(lg);
}

static void damage_with_intact_records_after_it_and_no_reboot_is_refused_not_cut(void) {
    const char *dir = logdir("strict");
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    for (int i = 0; i < 10; i++) CHECK_RC(append_str(lg, "k", "intact record", &off), 0);
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 3), 0);
    uint64_t bad_at = cur.pos;
    qm_log_close(lg);
    uint8_t *seg = map_file(dir, "00000000000000000000.log", SEG);
    CHECK(seg != NULL);
    seg[bad_at + QM_RECORD_HEADER + 2] ^= 0x10;   /* a bit flipped at rest */
    munmap(seg, SEG);
    /* the same boot: no write can have been lost, so this is damage, and
     * records 4..9 after it are intact: refused, nothing cut */
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &lg), QM_ECORRUPT);
    CHECK(strstr(qm_last_error(), "record 3") && strstr(qm_last_error(), "PYQMEM_LOG_SALVAGE"));
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &lg), QM_ECORRUPT);   /* still there */
    /* salvage: cut at the damage, keep what precedes it */
    setenv("PYQMEM_LOG_SALVAGE", "1", 1);
    int rc = qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &lg);
    unsetenv("PYQMEM_LOG_SALVAGE");
    CHECK_RC(rc, 0);
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    CHECK(st.tail_cuts == 1 && st.end_offset == 3);
    qm_log_close(lg);
}

static void lone_opener_cuts_a_torn_tail_and_abandons_dead_writers(void) {
    const char *dir = logdir("recover");
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    for (int i = 0; i < 10; i++) CHECK_RC(append_str(lg, "k", "intact record", &off), 0);
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 7), 0);
    uint64_t torn_at = cur.pos;
    qm_log_close(lg);
    /* damage record 7 as a power loss would (its body half zero) ... */
    uint8_t *seg = map_file(dir, "00000000000000000000.log", SEG);
    CHECK(seg != NULL);
    memset(seg + torn_at + QM_RECORD_HEADER, 0, 8);
    munmap(seg, SEG);
    /* ... after a reboot: the boot of the last recovery is not this one */
    uint8_t *ctl = map_file(dir, "control", QM_DATA_OFFSET);
    CHECK(ctl != NULL);
    memset(((qm_log_ctl_t *)ctl)->recovered_boot, 0, 16);
    munmap(ctl, QM_DATA_OFFSET);
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &lg), 0);
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    CHECK(st.tail_cuts == 1 && st.recoveries >= 1 && st.end_offset == 7);
    CHECK_RC(append_str(lg, "k", "after the cut", &off), 0);
    CHECK(off == 7);   /* appends go on from the last good record */
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    for (uint64_t i = 0; i < 8; i++) {
        CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
        CHECK(rec.offset == i);
    }
    CHECK(memcmp(rec.value, "after the cut", 13) == 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_EAGAIN);
    /* a second handle opened meanwhile does not recover again */
    qm_log_t *other;
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &other), 0);
    qm_log_stats_t st2;
    CHECK_RC(qm_log_stats(other, &st2), 0);
    CHECK(st2.recoveries == st.recoveries);
    qm_log_close(other);
    qm_log_close(lg);
}

static void lone_opener_abandons_records_left_writing(void) {
    const char *dir = logdir("recover2");
    qm_log_t *lg;
    uint64_t off;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    CHECK_RC(append_str(lg, NULL, "first", &off), 0);
    qm_log_close(lg);
    pid_t pid = fork();
    if (pid == 0) {   /* claims offset 1 and dies without moving the append word */
        qm_log_t *mine;
        qm_log_stats_t s;
        if (qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &mine) || qm_log_stats(mine, &s)) _exit(2);
        qm_log_ctl_t *c = (qm_log_ctl_t *)map_file(dir, "control", QM_DATA_OFFSET);
        uint8_t *seg = map_file(dir, "00000000000000000000.log", SEG);
        if (!c || !seg) _exit(3);
        uint64_t a = atomic_load(&c->append.pos);
        atomic_store((_Atomic uint64_t *)(seg + QM_APPEND_POS(a)),
                     QM_REC_WORD(QM_REC_WRITING, s.member_slot, 64));
        raise(SIGKILL);
    }
    waitpid(pid, NULL, 0);
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &lg), 0);
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    CHECK(st.abandoned == 1 && st.end_offset == 2 && st.tail_cuts == 0);
    CHECK_RC(append_str(lg, NULL, "third", &off), 0);
    CHECK(off == 2);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), 0);
    CHECK(rec.offset == 2);   /* 1 is the dead writer's gap */
    qm_log_close(lg);
}

/* ----- concurrent writers ----------------------------------------------------- */
#define WRITERS 4
static void writer_processes_interleave_without_loss_across_rolls(void) {
    const char *dir = logdir("writers");
    long per = stress_scale(5000);
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    pid_t pids[WRITERS];
    for (uint32_t w = 0; w < WRITERS; w++) {
        pids[w] = fork();
        if (pids[w] == 0) {
            qm_log_t *mine;
            if (qm_log_open(dir, QM_OPEN_ONLY, segcfg(), &mine)) _exit(2);
            static uint8_t buf[STRESS_MAX_MSG];
            for (long s = 0; s < per; s++) {
                size_t n = stress_make(buf, w, (uint64_t)s, 2000);
                qm_iovec_t v = {buf, n};
                qm_log_entry_t e = {NULL, 0, NULL, 0, &v, 1, 0};
                uint64_t off;
                if (qm_log_append(mine, &e, &off)) _exit(3);
            }
            qm_log_close(mine);
            _exit(0);
        }
    }
    /* read concurrently while they write */
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 0), 0);
    long next[WRITERS] = {0}, got = 0, bad = 0;
    while (got < WRITERS * per) {
        qm_log_record_t rec;
        int rc = qm_log_read(lg, &cur, &rec, qm_now_ns() + 5000000000);
        if (rc) {
            fprintf(stderr, "read: %s [%s]\n", qm_status_str(rc), qm_last_error());
            bad++;
            break;
        }
        uint32_t id;
        uint64_t seq;
        if (stress_check(rec.value, rec.value_len, &id, &seq) || id >= WRITERS ||
            (long)seq != next[id]) {
            bad++;
        } else {
            next[id]++;
        }
        if (rec.offset != (uint64_t)got) bad++;   /* dense offsets: nobody died */
        got++;
    }
    int failed = 0;
    for (int w = 0; w < WRITERS; w++) {
        int status;
        waitpid(pids[w], &status, 0);
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    qm_log_stats_t st;
    qm_log_stats(lg, &st);
    fprintf(stderr, "  %ld records from %d writers, %llu rolls, bad %ld\n", got, WRITERS,
            (unsigned long long)st.segments_rolled, bad);
    CHECK(failed == 0 && bad == 0 && got == WRITERS * per);
    CHECK(st.segments_rolled > 10);
    qm_log_close(lg);
}

/* Threads of one process, each with its own handle (the TSan build runs
 * this): writers append checksummed sequenced records across many rolls
 * while readers follow; every reader sees every record once, each writer's
 * in its order, dense offsets. */
typedef struct thread_arg {
    const char *dir;
    uint32_t id;
    long per;
    long bad, got;
} thread_arg_t;

static void *writer_thread(void *p) {
    thread_arg_t *a = p;
    qm_log_t *mine;
    if (qm_log_open(a->dir, QM_OPEN_ONLY, segcfg(), &mine)) {
        a->bad++;
        return NULL;
    }
    uint8_t *buf = malloc(STRESS_MAX_MSG);
    for (long s = 0; s < a->per && buf; s++) {
        size_t n = stress_make(buf, a->id, (uint64_t)s, 2000);
        qm_iovec_t v = {buf, n};
        qm_log_entry_t e = {NULL, 0, NULL, 0, &v, 1, 0};
        uint64_t off;
        if (qm_log_append(mine, &e, &off)) a->bad++;
    }
    free(buf);
    qm_log_close(mine);
    return NULL;
}

static void *reader_thread(void *p) {
    thread_arg_t *a = p;
    qm_log_t *mine;
    if (qm_log_open(a->dir, QM_OPEN_ONLY, segcfg(), &mine)) {
        a->bad++;
        return NULL;
    }
    qm_log_cursor_t cur = {0};
    long next[WRITERS] = {0};
    if (qm_log_seek(mine, &cur, 0)) a->bad++;
    while (!a->bad && a->got < WRITERS * a->per) {
        qm_log_record_t rec;
        int rc = qm_log_read(mine, &cur, &rec, qm_now_ns() + 10 * INT64_C(1000000000));
        uint32_t id;
        uint64_t seq;
        if (rc || stress_check(rec.value, rec.value_len, &id, &seq) || id >= WRITERS ||
            (long)seq != next[id] || rec.offset != (uint64_t)a->got) {
            a->bad++;
            break;
        }
        next[id]++;
        a->got++;
    }
    qm_log_close(mine);
    return NULL;
}

static void writer_and_reader_threads_agree_on_every_record(void) {
    const char *dir = logdir("threads");
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, segcfg(), &lg), 0);
    enum { READERS = 2 };
    long per = stress_scale(2000);
    pthread_t t[WRITERS + READERS];
    thread_arg_t args[WRITERS + READERS];
    for (uint32_t i = 0; i < WRITERS + READERS; i++) {
        args[i] = (thread_arg_t){dir, i, per, 0, 0};
        CHECK(pthread_create(&t[i], NULL, i < WRITERS ? writer_thread : reader_thread,
                             &args[i]) == 0);
    }
    long bad = 0;
    for (uint32_t i = 0; i < WRITERS + READERS; i++) {
        pthread_join(t[i], NULL);
        bad += args[i].bad;
        if (i >= WRITERS) CHECK(args[i].got == WRITERS * per);
    }
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), 0);
    fprintf(stderr, "  %ld records from %d writer threads read by %d reader threads, %llu rolls\n",
            WRITERS * per, WRITERS, READERS, (unsigned long long)st.segments_rolled);
    CHECK(bad == 0 && st.end_offset == (uint64_t)(WRITERS * per) && st.segments_rolled > 5);
    qm_log_close(lg);
}

int main(void) {
    check_use_private_shm_dir("log");
    RUN(appends_get_consecutive_offsets_and_read_back_in_order);
    RUN(empty_values_and_largest_record_fit_larger_is_refused);
    RUN(full_segments_roll_and_readers_follow_across_them);
    RUN(records_survive_close_and_reopen);
    RUN(dead_writer_leaves_a_gap_and_never_blocks_readers);
    RUN(a_roll_whose_roller_died_midway_is_finished_by_the_next_caller);
    RUN(a_cut_active_segment_holding_records_is_corrupt_not_recreated);
    RUN(flipped_bit_is_a_crc_error_and_bad_length_is_corrupt);
    RUN(header_validators_reject_every_bad_field);
    RUN(folder_that_is_a_symlink_or_shared_is_refused);
    RUN(retention_deletes_old_segments_and_late_readers_skip_ahead);
    RUN(retention_by_age_keeps_recent_segments);
    RUN(readers_unmap_deleted_and_old_segments_unless_held);
    RUN(a_handle_that_left_keeps_its_held_records_but_is_no_member);
    RUN(segments_are_allocated_in_doubling_steps_ahead_of_the_writers);
    RUN(a_reader_keeps_only_its_recently_used_segments_mapped);
    RUN(seek_by_time_finds_the_first_record_at_or_after);
    RUN(fsync_mode_group_commits_concurrent_appends);
    RUN(wait_any_wakes_for_an_append_to_any_log);
    RUN(seeks_use_the_index_and_survive_a_bad_or_missing_one);
    RUN(lone_opener_cuts_a_torn_tail_and_abandons_dead_writers);
    RUN(damage_with_intact_records_after_it_and_no_reboot_is_refused_not_cut);
    RUN(lone_opener_abandons_records_left_writing);
    RUN(writer_processes_interleave_without_loss_across_rolls);
    RUN(writer_and_reader_threads_agree_on_every_record);
    CHECK_EXIT();
}
