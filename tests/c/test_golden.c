/*
 * test_golden.c - the on-disk format may only change on purpose.
 *
 * tests/golden/segment-v1.1.log is a segment written by format 1.1 with
 * fixed records, segment-v1.log the same records as format 1.0 wrote them
 * (before reserved_to).  This test (1) parses both with an independent
 * reader of the documented byte layout (docs/design/format.md), (2) checks
 * that today's validator accepts both, and (3) writes the same records now
 * and compares the bytes with the 1.1 file.  A deliberate format change
 * bumps the version and adds a file: QM_GOLDEN_WRITE=1 ./test_golden writes
 * the current one (then review the diff).
 */
#include "check.h"
#include "internal.h"

#include <fcntl.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEG (64u << 10)
#define GOLDEN QM_SOURCE_DIR "/tests/golden/segment-v1.1.log"
#define GOLDEN_1_0 QM_SOURCE_DIR "/tests/golden/segment-v1.log"
#define RECORDS 5

static const char *keys[RECORDS] = {"", "k1", "key-2", "", "a longer key with spaces"};
static const char *values[RECORDS] = {"", "v", "value two", "\x00\x01\x02\xff", "the end"};
static const uint32_t value_lens[RECORDS] = {0, 1, 9, 4, 7};

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void write_records(const char *dir) {
    qm_log_config_t cfg = {SEG, 0, 0, 0};
    qm_log_t *lg;
    if (qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg)) abort();
    for (int i = 0; i < RECORDS; i++) {
        qm_iovec_t v = {values[i], value_lens[i]};
        char hdr[8] = {(char)i, 'h'};
        qm_log_entry_t e = {keys[i], (uint32_t)strlen(keys[i]), hdr, (uint32_t)(i % 3),
                            &v, 1, INT64_C(1700000000000000000) + i};
        uint64_t off;
        if (qm_log_append(lg, &e, &off)) abort();
    }
    qm_log_close(lg);
}

static uint8_t *load(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    struct stat st;
    fstat(fd, &st);
    uint8_t *p = malloc((size_t)st.st_size);
    if (read(fd, p, (size_t)st.st_size) != st.st_size) {
        free(p);
        p = NULL;
    }
    close(fd);
    *len = (size_t)st.st_size;
    return p;
}

static void parses_as_documented(const char *path, unsigned minor, uint64_t reserved_to) {
    size_t len;
    static uint8_t g[SEG];
    uint8_t *loaded = load(path, &len);
    CHECK(loaded != NULL);
    if (!loaded) return;
    memcpy(g, loaded, len < SEG ? len : SEG);
    free(loaded);
    CHECK(len == SEG);
    CHECK(qm__segment_check(g, len, 0, SEG) == QM_OK);
    CHECK(rd64(g) == UINT64_C(0x716d656d6c736567));   /* "qmemlseg" */
    CHECK(g[8] == 1 && g[9] == 0 && g[10] == minor && g[11] == 0);   /* format 1.minor */
    CHECK(rd32(g + 12) == 128 && rd64(g + 24) == 0 && rd64(g + 32) == SEG);
    CHECK(rd64(g + 56) == reserved_to);   /* 1.1: allocated bytes; 1.0: 0 (all) */
    for (int i = 64; i < 128; i++) CHECK(g[i] == 0);
    size_t pos = 128;
    for (int i = 0; i < RECORDS; i++) {
        uint64_t w = rd64(g + pos);
        uint32_t reclen = (uint32_t)w, klen = rd32(g + pos + 12);
        uint32_t hlen = rd32(g + pos + 32), vlen = rd32(g + pos + 36);
        CHECK((w >> 61) == 2);   /* COMMITTED */
        CHECK(rd64(g + pos + 16) == (uint64_t)i);
        CHECK(rd64(g + pos + 24) == UINT64_C(1700000000000000000) + (uint64_t)i);
        CHECK(klen == strlen(keys[i]) && hlen == (uint32_t)(i % 3) && vlen == value_lens[i]);
        CHECK(reclen == ((40 + klen + hlen + vlen + 7) & ~7u));
        CHECK(memcmp(g + pos + 40, keys[i], klen) == 0);
        CHECK(memcmp(g + pos + 40 + klen + hlen, values[i], vlen) == 0);
        CHECK(rd32(g + pos + 8) == qm_crc32c(0, g + pos + 12, 28 + klen + hlen + vlen));
        pos += reclen;
    }
    CHECK(rd64(g + pos) == 0);   /* nothing after the last record */
}

static void golden_segments_parse_as_documented(void) {
    parses_as_documented(GOLDEN, 1, SEG);   /* a 64 KiB segment is reserved at once */
    parses_as_documented(GOLDEN_1_0, 0, 0);
}

static void golden_segment_is_what_this_build_writes(void) {
    char dir[400];
    snprintf(dir, sizeof dir, "%s/golden", check_dir);
    write_records(dir);
    char path[500];
    snprintf(path, sizeof path, "%s/00000000000000000000.log", dir);
    size_t len = 0, glen = 0;
    uint8_t *now = load(path, &len), *g = load(GOLDEN, &glen);
    bool loaded = now && g && len == glen && len == SEG;
    int valid = -1;
    size_t first_diff = len;
    if (loaded) {
        /* the creation time (bytes 48..55) is the only field allowed to differ */
        memset(now + 48, 0, 8);
        memset(g + 48, 0, 8);
        valid = qm__segment_check(g, glen, 0, SEG);
        for (size_t i = 0; i < len; i++)
            if (now[i] != g[i]) {
                first_diff = i;
                break;
            }
    }
    free(now);
    free(g);
    if (first_diff != len)
        fprintf(stderr, "  first difference at byte %zu: a format change? see the file header\n",
                first_diff);
    CHECK(loaded);
    CHECK(valid == QM_OK);
    CHECK(first_diff == len);
}

int main(void) {
    check_use_private_shm_dir("golden");
    if (getenv("QM_GOLDEN_WRITE")) {
        char dir[400], cmd[1200];
        snprintf(dir, sizeof dir, "%s/write", check_dir);
        write_records(dir);
        snprintf(cmd, sizeof cmd, "cp '%s/00000000000000000000.log' '%s'", dir, GOLDEN);
        if (system(cmd) != 0) return 1;
        fprintf(stderr, "wrote %s\n", GOLDEN);
    }
    RUN(golden_segments_parse_as_documented);
    RUN(golden_segment_is_what_this_build_writes);
    CHECK_EXIT();
}
