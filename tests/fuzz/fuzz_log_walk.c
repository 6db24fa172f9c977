/*
 * fuzz_log_walk.c - a partition log folder of one to three segments, their
 * indexes and the control file, through qm_log_open() (the lone opener's
 * recovery, finishing a roll), reads from the log start across segment
 * boundaries (with and without CRCs), a seek by offset and one by time,
 * an append, and a second open.
 *
 * Unlike the other harnesses this one goes through the files, as the log
 * does: every input is written to a private folder (under /dev/shm when
 * writable) and the log maps it.  ASan cannot see a read past a mapping's
 * end inside the next mapping, but a read past the last page is a SEGV,
 * and every byte a read hands out is touched (CRC over key, headers and
 * value).  fuzz_segment and fuzz_index cover one segment in exact-size
 * malloc'd memory.
 *
 * Input (little-endian, zero-padded when short):
 *   0   seek target, relative to the log start (8)
 *   8   seek time (8)
 *   16  control words: append word, active_base, active_gen, start_offset (4 x 8)
 *   48  flags: bits 0-1 segments - 1 (3 if 3), bit 2 retention of two
 *       segments' bytes, bit 3 the last segment's file cut to its last
 *       chunk's end, bit 4 no index files
 *   49  15 bytes reserved
 *   64  per segment: chunk count (1, at most 16), then chunks: position / 8
 *       (2), length (2), bytes; the file is zeros elsewhere, 64 KiB, and
 *       named by the base offset in its header
 *       then its index: length (2, at most 256) and bytes, zero-padded to
 *       the index file's 4096 bytes
 * Oracles: every status is one the contract names; records come in
 * increasing offset order and inside the log's bounds; a seek never passes
 * its target; a record appended after recovery reads back at its offset
 * (when no segment file lies beyond the active one); a log that opened
 * opens again.
 */
#include "fuzz_common.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEG_BYTES (64u << 10)
#define IDX_BYTES 4096u
#define MAX_SEGS 3
#define MAX_READS 2048


static char dir[256];
static uint8_t *ctl_template;   /* a real control file: qm_log_open() made it */
static size_t ctl_len;

static void rm_files(void) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.') unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
}

static void cleanup(void) {
    rm_files();
    rmdir(dir);
}

static void write_file(const char *name, const void *p, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) abort();
    if (write(fd, p, len) != (ssize_t)len) abort();
    close(fd);
}

static void setup(void) {
    const char *shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/qm-fuzz-log-walk-%d", shm, (int)getpid());
    mkdir(dir, 0700);
    rm_files();
    qm_log_config_t cfg = {SEG_BYTES, 0, 0, 0};
    qm_log_t *lg;
    if (qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg)) abort();
    qm_log_close(lg);
    char path[512];
    snprintf(path, sizeof path, "%s/control", dir);
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    ctl_template = malloc(QM_DATA_OFFSET);
    ctl_len = fread(ctl_template, 1, QM_DATA_OFFSET, f);
    fclose(f);
    if (ctl_len != QM_DATA_OFFSET) abort();
    atexit(cleanup);
}

#define STATUS_IS(rc, ...) status_in((rc), (const int[]){__VA_ARGS__}, \
                                     sizeof((const int[]){__VA_ARGS__}) / sizeof(int))
static bool status_in(int rc, const int *ok, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (rc == ok[i]) return true;
    fprintf(stderr, "unexpected status %d (%s)\n", rc, qm_last_error());
    return false;
}

/* Read from the cursor until the end or an error; offsets must grow. */
static int read_all(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t *n, uint64_t *last) {
    qm_log_record_t rec;
    int rc = QM_OK;
    *n = 0;
    uint64_t prev = 0;
    while (*n < MAX_READS) {
        uint64_t expect = cur->next_offset;
        rc = qm_log_read(lg, cur, &rec, QM_NOWAIT);
        if (rc != QM_OK) break;
        uint32_t crc = qm_crc32c(0, rec.key, rec.key_len);   /* touch every byte */
        crc = qm_crc32c(crc, rec.headers, rec.headers_len);
        (void)qm_crc32c(crc, rec.value, rec.value_len);
        FUZZ_CHECK(rec.offset >= expect && cur->next_offset == rec.offset + 1);
        FUZZ_CHECK(*n == 0 || rec.offset > prev);
        prev = rec.offset;
        ++*n;
    }
    *last = prev;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!ctl_template) setup();
    rm_files();
    fuzz_reader_t r = {data, size, 0};
    uint64_t seek_target = fuzz_rd(&r, 8);
    int64_t seek_ts = (int64_t)fuzz_rd(&r, 8);
    uint64_t append = fuzz_rd(&r, 8), active_base = fuzz_rd(&r, 8), active_gen = fuzz_rd(&r, 8),
             start = fuzz_rd(&r, 8);
    uint8_t flags = (uint8_t)fuzz_rd(&r, 1);
    r.at = 64;

    uint8_t *ctl = fuzz_copy(ctl_template, ctl_len);
    qm_log_ctl_t *c = (qm_log_ctl_t *)ctl;
    atomic_store(&c->append.pos, append);
    atomic_store(&c->active_base, active_base);
    atomic_store(&c->active_gen, active_gen);
    atomic_store(&c->start_offset, start);
    if (flags & 4) c->retention_bytes = 2 * SEG_BYTES;
    write_file("control", ctl, ctl_len);
    free(ctl);

    unsigned nseg = 1 + (flags & 3);
    if (nseg > MAX_SEGS) nseg = MAX_SEGS;
    uint8_t *seg = malloc(SEG_BYTES), *idx = malloc(IDX_BYTES);
    if (!seg || !idx) abort();
    bool beyond_active = false;
    for (unsigned i = 0; i < nseg; i++) {
        memset(seg, 0, SEG_BYTES);
        unsigned chunks = 1 + (unsigned)fuzz_rd(&r, 1) % 16;
        size_t file_end = 0;
        for (unsigned k = 0; k < chunks && r.at < size; k++) {
            size_t pos = (size_t)fuzz_rd(&r, 2) * 8, len = (size_t)fuzz_rd(&r, 2);
            if (len > size - r.at) len = size - r.at;
            uint8_t tmp[65536];
            fuzz_rd_bytes(&r, tmp, len);
            if (pos >= SEG_BYTES) continue;
            if (len > SEG_BYTES - pos) len = SEG_BYTES - pos;
            memcpy(seg + pos, tmp, len);
            if (pos + len > file_end) file_end = pos + len;
        }
        uint64_t base;
        memcpy(&base, seg + offsetof(qm_segment_header_t, base_offset), sizeof base);
        if (base > active_base) beyond_active = true;
        char name[32];
        snprintf(name, sizeof name, "%020llu.log", (unsigned long long)base);
        bool cut = (flags & 8) && i == nseg - 1;
        write_file(name, seg, cut ? file_end : SEG_BYTES);
        memset(idx, 0, IDX_BYTES);
        size_t ilen = (size_t)fuzz_rd(&r, 2) % 257;
        fuzz_rd_bytes(&r, idx, ilen);
        if (!(flags & 16)) {
            snprintf(name, sizeof name, "%020llu.idx", (unsigned long long)base);
            write_file(name, idx, IDX_BYTES);
        }
    }
    free(seg);
    free(idx);

    qm_log_config_t cfg = {SEG_BYTES, 0, 0, 0};
    qm_log_t *lg;
    int rc = qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT, QM_EINCOMPAT, QM_ENOTREADY, QM_ENOTFOUND));
    if (rc) return 0;

    uint64_t lo = 0, hi = 0, n, last;
    rc = qm_log_bounds(lg, &lo, &hi);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT));
    bool bounds_ok = rc == QM_OK;
    /* from the first segment on, across segment boundaries */
    qm_log_cursor_t cur = {0};
    rc = qm_log_seek(lg, &cur, lo);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT, QM_EINCOMPAT, QM_ENOTFOUND));
    if (rc == QM_OK) {
        qm_log_cursor_t nocrc = cur;
        nocrc.flags = QM_CURSOR_NO_CRC;
        rc = read_all(lg, &cur, &n, &last);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_EAGAIN, QM_ECORRUPT, QM_EINCOMPAT));
        uint64_t n2, last2;
        rc = read_all(lg, &nocrc, &n2, &last2);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_EAGAIN, QM_ECORRUPT, QM_EINCOMPAT));
        FUZZ_CHECK(n2 >= n || n == MAX_READS);   /* the CRC pass stops no later */
    }
    /* seek by offset: never past the target; reading goes on from there */
    uint64_t target = lo + seek_target % 4096;
    qm_log_cursor_t sc = {0};
    rc = qm_log_seek(lg, &sc, target);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT, QM_EINCOMPAT, QM_ENOTFOUND));
    if (rc == QM_OK) {
        FUZZ_CHECK(sc.next_offset <= target);
        rc = read_all(lg, &sc, &n, &last);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_EAGAIN, QM_ECORRUPT, QM_EINCOMPAT));
    }
    qm_log_cursor_t tc = {0};
    rc = qm_log_seek_time(lg, &tc, seek_ts);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT, QM_EINCOMPAT, QM_ENOTFOUND));
    if (rc == QM_OK) {
        rc = read_all(lg, &tc, &n, &last);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_EAGAIN, QM_ECORRUPT, QM_EINCOMPAT));
    }

    /* an append after recovery lands at the end and reads back there */
    static const uint8_t value[] = "fuzz-log-walk";
    qm_iovec_t v = {value, sizeof value};
    qm_log_entry_t e = {.value = &v, .value_cnt = 1, .timestamp_ns = 5};
    uint64_t off = 0;
    rc = qm_log_append(lg, &e, &off);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT, QM_EINCOMPAT, QM_ENOTREADY));
    if (rc == QM_OK && bounds_ok && !beyond_active && !(flags & 4)) {
        FUZZ_CHECK(off >= hi);
        qm_log_cursor_t ac = {0};
        qm_log_record_t rec;
        rc = qm_log_seek(lg, &ac, off);
        if (rc == QM_OK) rc = qm_log_read(lg, &ac, &rec, QM_NOWAIT);
        if (rc != QM_OK) fprintf(stderr, "append at %llu: %d %s\n", (unsigned long long)off, rc,
                                 qm_last_error());
        FUZZ_CHECK(rc == QM_OK && rec.offset == off && rec.value_len == sizeof value &&
                   memcmp(rec.value, value, sizeof value) == 0);
    }
    qm_log_close(lg);

    /* recovered once: opens again */
    rc = qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg);
    if (rc) fprintf(stderr, "reopen: %d %s\n", rc, qm_last_error());
    FUZZ_CHECK(rc == QM_OK);
    qm_log_close(lg);
    return 0;
}
