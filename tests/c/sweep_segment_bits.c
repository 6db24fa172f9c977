/*
 * sweep_segment_bits.c - damage at rest in log segments, and junk left
 * behind by a record that was never finished (reliability-matrix.md B8, B9).
 *
 * B8: a log with a sealed segment (full of records, then END) and an
 * active one.  Every bit of the first and last 4 KiB of both segments is
 * flipped in turn (CI: every PYQMEM_BITS_SAMPLE-th bit, default 16;
 * PYQMEM_BITS_SAMPLE=1 for all of them, PYQMEM_BITS_REGION=65536 for the
 * whole 64 KiB segments), the log reopened by a lone opener (recovery runs)
 * and read from the start.  Every record delivered must be byte-identical
 * to what was written at its offset.  Each flip lands in one of:
 *   harmless   every record delivered intact (the bit was padding, free
 *              space, a display-only field, ...)
 *   error      a read or the open returned QM_ECORRUPT / QM_EINCOMPAT
 *   cut        recovery cut the active segment's tail at the damage
 *              (docs/design/faults.md "Bit flips at rest"): fewer records
 *   gap        fewer records, no error and no cut: a failure (a damaged
 *              record length used to lead readers into free space or onto
 *              a word that read as "still being written", for good)
 * Runs in-process (no fork per flip) under an alarm() watchdog: a crash
 * or a sanitizer report ends the test, a hang is killed by SIGALRM.
 *
 * B9: a long record abandoned mid-copy whose bytes hold a well-formed
 * record image, then shorter records in that space.  The log never reuses
 * space except after recovery cuts a tail (which zeroes it); the ring
 * reuses every slot each lap (free words are rewritten).  Both are driven
 * here and the junk must never come out as a record.
 */
#include "sweep_common.h"
#include "internal.h"

#include <sys/mman.h>

#define SEG (64u << 10)
static const qm_log_config_t cfg = {SEG, 0, 0, 0};
static char log_dir[512];

static size_t vlen(uint64_t i) { return (size_t)(60 + (i * 373) % 1400); }
static uint8_t vbyte(uint64_t i, size_t j) { return (uint8_t)(i * 11 + j * 3 + 5); }
static int64_t ts(uint64_t i) { return INT64_C(1700000000000000000) + (int64_t)i * 1000; }

static int append_rec(qm_log_t *lg, uint64_t i, uint64_t *off) {
    static uint8_t buf[4096];
    for (size_t j = 0; j < vlen(i); j++) buf[j] = vbyte(i, j);
    char key[16];
    int kl = snprintf(key, sizeof key, "key%llu", (unsigned long long)i);
    qm_iovec_t v = {buf, vlen(i)};
    qm_log_entry_t e = {key, (uint32_t)kl, "hdr", 3, &v, 1, ts(i)};
    return qm_log_append(lg, &e, off);
}

static int rec_ok(const qm_log_record_t *r) {
    uint64_t i = r->offset;
    char key[16];
    int kl = snprintf(key, sizeof key, "key%llu", (unsigned long long)i);
    if (r->key_len != (uint32_t)kl || memcmp(r->key, key, (size_t)kl)) return 0;
    if (r->headers_len != 3 || memcmp(r->headers, "hdr", 3)) return 0;
    if (r->timestamp_ns != ts(i) || r->value_len != vlen(i)) return 0;
    const uint8_t *p = r->value;
    for (size_t j = 0; j < r->value_len; j++)
        if (p[j] != vbyte(i, j)) return 0;
    return 1;
}

/* ----- B8 --------------------------------------------------------------------- */
enum { B_HARMLESS, B_ERROR, B_CUT, B_GAP, B_WRONG, B_N };
static const char *bnames[B_N] = {"harmless", "error", "cut", "gap", "WRONG"};
static uint64_t total_records;

/* Open, read everything; the outcome. */
static int reopen_and_read(uint64_t *delivered) {
    qm_log_t *lg;
    int rc = qm_log_open(log_dir, QM_OPEN_ONLY, &cfg, &lg);
    *delivered = 0;
    if (rc) return rc == QM_ECORRUPT || rc == QM_EINCOMPAT ? B_ERROR : B_WRONG;
    qm_log_cursor_t cur = {0};
    int out = B_HARMLESS;
    rc = qm_log_seek(lg, &cur, 0);
    if (rc) {
        out = rc == QM_ECORRUPT || rc == QM_EINCOMPAT ? B_ERROR : B_WRONG;
        goto done;
    }
    uint64_t last = UINT64_MAX;
    for (uint64_t k = 0; k < 2 * total_records + 8; k++) {
        qm_log_record_t r;
        rc = qm_log_read(lg, &cur, &r, QM_NOWAIT);
        if (rc == QM_EAGAIN) break;
        if (rc) {
            out = rc == QM_ECORRUPT || rc == QM_EINCOMPAT ? B_ERROR : B_WRONG;
            if (out == B_WRONG) fprintf(stderr, "read: %s\n", qm_status_str(rc));
            goto done;
        }
        if (!rec_ok(&r) || (last != UINT64_MAX && r.offset <= last)) {
            fprintf(stderr, "delivered a damaged record at offset %llu\n",
                    (unsigned long long)r.offset);
            out = B_WRONG;
            goto done;
        }
        last = r.offset;
        ++*delivered;
    }
    if (*delivered < total_records) {
        qm_log_stats_t st;
        out = qm_log_stats(lg, &st) == QM_OK && st.tail_cuts > 0 ? B_CUT : B_GAP;
    }
done:
    qm_log_close(lg);
    return out;
}

static void segment_bit_flips_are_detected_or_harmless(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(log_dir, QM_CREATE_ONLY, &cfg, &lg), QM_OK);
    /* fill segment 0 (sealed at the roll) and half of segment 1 */
    uint64_t i = 0, off, start, end;
    for (;; i++) {
        CHECK_RC(append_rec(lg, i, &off), QM_OK);
        CHECK_RC(qm_log_bounds(lg, &start, &end), QM_OK);
        qm_log_stats_t st;
        CHECK_RC(qm_log_stats(lg, &st), QM_OK);
        if (st.segments == 2 && st.segments_rolled == 1) break;
    }
    uint64_t first_of_seg1 = i;
    for (i++; i < first_of_seg1 + 40; i++) CHECK_RC(append_rec(lg, i, &off), QM_OK);
    total_records = i;
    qm_log_close(lg);
    sw_snap_t snap = {0};
    CHECK(sw_snap_dir(&snap, log_dir) == 0);
    char seg1[32];
    snprintf(seg1, sizeof seg1, "%020llu.log", (unsigned long long)first_of_seg1);
    int s0 = sw_snap_find(&snap, "00000000000000000000.log"), s1 = sw_snap_find(&snap, seg1);
    CHECK(s0 >= 0 && s1 >= 0);
    uint64_t got;
    CHECK(reopen_and_read(&got) == B_HARMLESS && got == total_records);
    CHECK(sw_restore(&snap) == 0);

    long sample = sw_env_long("PYQMEM_BITS_SAMPLE", 16);
    long region = sw_env_long("PYQMEM_BITS_REGION", 4096);
    if (sample < 1) sample = 1;
    if (region < 8 || region > (long)SEG / 2) region = region > (long)SEG / 2 ? SEG / 2 : 8;
    struct { int file; size_t from, to; const char *name; } regions[] = {
        {s0, 0, (size_t)region, "sealed segment, first"},
        {s0, SEG - (size_t)region, SEG, "sealed segment, last"},
        {s1, 0, (size_t)region, "active segment, first"},
        {s1, SEG - (size_t)region, SEG, "active segment, last"},
    };
    long totals[B_N] = {0}, cases = 0;
    uint64_t phase = sw_rand();
    int64_t t0 = qm_now_ns();
    for (size_t ri = 0; ri < sizeof regions / sizeof regions[0]; ri++) {
        long counts[B_N] = {0};
        uint64_t first_gap = UINT64_MAX;
        size_t nbits = (regions[ri].to - regions[ri].from) * 8;
        const uint8_t *img = snap.image[regions[ri].file];
        /* record words (state, owner, length: outside the CRC) in full, the
         * rest sampled */
        uint8_t *is_word = calloc(1, SEG);
        for (size_t p = QM_SEGMENT_HEADER; p + 8 <= SEG;) {
            uint64_t w;
            memcpy(&w, img + p, 8);
            if (!w) break;
            memset(is_word + p, 1, 8);
            if (QM_REC_STATE(w) == QM_REC_END || QM_REC_LEN(w) < QM_RECORD_HEADER) break;
            p += QM_REC_LEN(w);
        }
        for (size_t b = 0; b < nbits; b++) {
            size_t at = regions[ri].from + b / 8;
            if (!is_word[at] && (b + phase) % (uint64_t)sample) continue;
            uint8_t v = snap.image[regions[ri].file][at] ^ (uint8_t)(1u << (b % 8));
            CHECK(sw_poke(&snap, regions[ri].file, at, v) == 0);
            alarm(30);   /* watchdog: a hang kills the test */
            int out = reopen_and_read(&got);
            alarm(0);
            counts[out]++;
            if (out == B_GAP && first_gap == UINT64_MAX) first_gap = at * 8 + b % 8;
            if (out == B_WRONG)
                fprintf(stderr, "  %s: bit %zu of byte %zu: %s\n", regions[ri].name, b % 8, at,
                        bnames[out]);
            CHECK(sw_restore(&snap) == 0);
        }
        free(is_word);
        fprintf(stderr, "  %-22s bytes %5zu..%-5zu flips %6ld: harmless %6ld  error %6ld  "
                "cut %6ld  gap %5ld  WRONG %ld\n", regions[ri].name, regions[ri].from,
                regions[ri].to, counts[0] + counts[1] + counts[2] + counts[3] + counts[4],
                counts[B_HARMLESS], counts[B_ERROR], counts[B_CUT], counts[B_GAP], counts[B_WRONG]);
        if (first_gap != UINT64_MAX)
            fprintf(stderr, "    first gap: byte %llu bit %llu\n",
                    (unsigned long long)(first_gap / 8), (unsigned long long)(first_gap % 8));
        for (int k = 0; k < B_N; k++) totals[k] += counts[k], cases += counts[k];
    }
    fprintf(stderr, "B8 bit flips: %ld (record words + 1 in %ld of %ld-byte regions, %d records), %.1f s: "
            "harmless %ld, error %ld, cut %ld, gap %ld, WRONG %ld\n", cases, sample, region,
            (int)total_records, (double)(qm_now_ns() - t0) / 1e9, totals[B_HARMLESS],
            totals[B_ERROR], totals[B_CUT], totals[B_GAP], totals[B_WRONG]);
    sw_free_snap(&snap);
    CHECK(totals[B_WRONG] == 0);
    CHECK(totals[B_GAP] == 0);   /* a damaged length once stalled readers silently */
    CHECK(cases > 0);
}

/* ----- B9 --------------------------------------------------------------------- */
/* Die (SIGKILL, as `kill -9`) the moment a copy touches the guard page. */
static void die_now(int sig) {
    (void)sig;
    raise(SIGKILL);
}

/* A value whose first `readable` bytes are junk and whose rest is a guard
 * page: the copy into the record faults in the middle and the process is
 * killed there. */
static uint8_t *guarded_value(size_t readable) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (readable + page - 1) / page + 1;
    uint8_t *m = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    mprotect(m + (pages - 1) * page, page, PROT_NONE);
    return m + (pages - 1) * page - readable;
}

static void catch_segv_as_kill(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = die_now;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
}

/* Write a complete, valid-looking log record image (COMMITTED, right CRC,
 * the given offset) at p; returns its length. */
static size_t forge_log_record(uint8_t *p, uint64_t offset, const char *value) {
    uint32_t vl = (uint32_t)strlen(value);
    qm_record_header_t h;
    memset(&h, 0, sizeof h);
    h.key_len = 4;
    h.offset = offset;
    h.timestamp_ns = ts(offset);
    h.headers_len = 3;
    h.value_len = vl;
    uint8_t body[256];
    memcpy(body, "JUNK", 4);
    memcpy(body + 4, "hdr", 3);
    memcpy(body + 7, value, vl);
    h.crc = qm_crc32c(qm_crc32c(0, (uint8_t *)&h + 12, QM_RECORD_HEADER - 12), body, 7 + vl);
    uint32_t len = (QM_RECORD_HEADER + 7 + vl + 7) & ~7u;
    atomic_store_explicit(&h.word0, QM_REC_WORD(QM_REC_COMMITTED, 0, len), memory_order_relaxed);
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, body, 7 + vl);
    return len;
}

static int read_all_expect(const char *dir, const uint64_t *want, int nwant, int *junk) {
    qm_log_t *lg;
    int rc = qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg);
    if (rc) return rc;
    qm_log_cursor_t cur = {0};
    rc = qm_log_seek(lg, &cur, 0);
    int n = 0;
    *junk = 0;
    for (int k = 0; rc == QM_OK && k < 64; k++) {
        qm_log_record_t r;
        rc = qm_log_read(lg, &cur, &r, QM_NOWAIT);
        if (rc) break;
        if (r.key_len == 4 && memcmp(r.key, "JUNK", 4) == 0) (*junk)++;
        else if (n >= nwant || r.offset != want[n] || !rec_ok(&r)) (*junk)++;
        else n++;
    }
    qm_log_close(lg);
    if (rc != QM_EAGAIN) return rc;
    return n == nwant ? QM_OK : QM_ECORRUPT;
}

/* Layout of the long record: header, key "key1", headers "hdr", value.
 * The junk is a forged record at the position right after where a short
 * record written over the same space would end. */
static void log_junk_after_a_shorter_rewrite_is_never_a_record(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/b9log", check_dir);
    qm_log_t *lg;
    CHECK_RC(qm_log_open(dir, QM_CREATE_ONLY, &cfg, &lg), QM_OK);
    uint64_t off;
    CHECK_RC(append_rec(lg, 0, &off), QM_OK);   /* offset 0: stays */
    qm_log_close(lg);
    /* the short record that will take the long one's place: offset 1 */
    size_t short_len = (QM_RECORD_HEADER + 4 + 3 + vlen(1) + 7) & ~(size_t)7;
    size_t long_value = short_len + 600;
    uint8_t *junk = calloc(1, long_value + 64);
    /* value starts 47 bytes into the record; the forged record sits at the
     * short record's end, offset 2 (what the next append would get) */
    forge_log_record(junk + short_len - (QM_RECORD_HEADER + 4 + 3), 2, "forged after the rewrite");

    /* (a) the writer is killed mid-copy: recovery abandons the record
     * (its space is kept, never reused), appends go after it */
    pid_t pid = fork();
    if (pid == 0) {
        catch_segv_as_kill();
        qm_log_t *w;
        if (qm_log_open(dir, QM_OPEN_ONLY, &cfg, &w)) _exit(3);
        size_t readable = long_value - 300;
        uint8_t *v = guarded_value(readable);
        if (!v) _exit(3);
        memcpy(v, junk, readable);
        qm_iovec_t iov[2] = {{v, readable}, {v + readable, 300}};
        qm_log_entry_t e = {"key1", 4, "hdr", 3, iov, 2, ts(1)};
        qm_log_append(w, &e, &off);
        _exit(4);   /* the copy did not fault */
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_RC(qm_log_open(dir, QM_OPEN_ONLY, &cfg, &lg), QM_OK);   /* lone: recovery */
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), QM_OK);
    CHECK(st.abandoned == 1);
    CHECK_RC(append_rec(lg, 2, &off), QM_OK);
    CHECK(off == 2);   /* offset 1 is the abandoned gap */
    qm_log_close(lg);
    int junk_seen = 0;
    CHECK_RC(read_all_expect(dir, (uint64_t[]){0, 2}, 2, &junk_seen), QM_OK);
    CHECK(junk_seen == 0);

    /* (b) a committed long record torn at rest (its CRC fails): recovery
     * cuts it and zeroes its bytes, and a shorter record takes its place */
    char dir2[600];
    snprintf(dir2, sizeof dir2, "%s/b9log-cut", check_dir);
    CHECK_RC(qm_log_open(dir2, QM_CREATE_ONLY, &cfg, &lg), QM_OK);
    CHECK_RC(append_rec(lg, 0, &off), QM_OK);
    qm_iovec_t v = {junk, long_value};
    qm_log_entry_t e = {"key1", 4, "hdr", 3, &v, 1, ts(1)};
    CHECK_RC(qm_log_append(lg, &e, &off), QM_OK);
    CHECK(off == 1);
    qm_log_close(lg);
    char seg[700];
    snprintf(seg, sizeof seg, "%s/00000000000000000000.log", dir2);
    sw_snap_t s = {0};
    CHECK(sw_snap_add(&s, seg) == 0);
    size_t long_pos = QM_SEGMENT_HEADER + ((QM_RECORD_HEADER + 4 + 3 + vlen(0) + 7) & ~(size_t)7);
    /* tear the record's last bytes (as a lost page would), far from the forgery */
    CHECK(sw_poke(&s, 0, long_pos + QM_RECORD_HEADER + 7 + long_value - 1, 0x5a) == 0);
    sw_free_snap(&s);
    CHECK_RC(qm_log_open(dir2, QM_OPEN_ONLY, &cfg, &lg), QM_OK);   /* lone: cut */
    CHECK_RC(qm_log_stats(lg, &st), QM_OK);
    CHECK(st.tail_cuts == 1);
    CHECK_RC(append_rec(lg, 1, &off), QM_OK);   /* shorter, same space, offset 1 again */
    CHECK(off == 1);
    qm_log_close(lg);
    CHECK(sw_snap_add(&s, seg) == 0);
    /* the bytes past the short record are zero: nothing there to parse */
    size_t after = long_pos + short_len;
    int zero = 1;
    for (size_t j = after; j < long_pos + QM_RECORD_HEADER + 7 + long_value; j++)
        zero &= s.image[0][j] == 0;
    CHECK(zero);
    sw_free_snap(&s);
    CHECK_RC(read_all_expect(dir2, (uint64_t[]){0, 1}, 2, &junk_seen), QM_OK);
    CHECK(junk_seen == 0);
    /* and with the tail-zeroing undone (the junk put back by hand), the
     * reader would take the forged record: the zeroing is what protects */
    CHECK(sw_snap_add(&s, seg) == 0);
    int fd = open(seg, O_WRONLY);
    CHECK(fd >= 0);
    uint8_t forged[128] = {0};
    size_t fl = forge_log_record(forged, 2, "forged after the rewrite");
    CHECK(pwrite(fd, forged, fl, (off_t)after) == (ssize_t)fl);
    close(fd);
    sw_free_snap(&s);
    CHECK_RC(read_all_expect(dir2, (uint64_t[]){0, 1}, 2, &junk_seen), QM_OK);
    fprintf(stderr, "  control: a forged record left past the end is read %d time(s)"
            " (so the zeroing is what keeps junk out)\n", junk_seen);
    CHECK(junk_seen == 1);
    free(junk);
}

/* The ring: a producer killed mid-copy of a long record whose bytes hold
 * record words for this lap and the next; the slot is abandoned, then
 * reused lap after lap by short records. */
static void ring_junk_in_a_reused_slot_is_never_a_record(void) {
    const char *name = "b9ring";
    qm_ring_t *q;
    CHECK_RC(qm_ring_open(name, QM_CREATE_ONLY, 4096, 0, &q), QM_OK);
    size_t long_len = 1000, readable = 700;
    uint8_t *junk = calloc(1, long_len);
    /* payload byte k sits at ring byte 16 + k of the record: forge a
     * COMMITTED one-granule record word + length at every granule start */
    for (size_t k = 48; k + 16 <= readable; k += 64) {
        uint32_t lap = (k / 64) % 2;   /* this lap and the next */
        uint64_t w = QM_WORD(lap, QM_ST_COMMITTED, 0, 1);
        uint64_t len = 8;
        memcpy(junk + k, &w, 8);
        memcpy(junk + k + 8, &len, 8);
        if (k + 24 <= readable) memcpy(junk + k + 16, "JUNKJUNK", 8);
    }
    pid_t pid = fork();
    if (pid == 0) {
        catch_segv_as_kill();
        qm_ring_t *w;
        if (qm_ring_open(name, QM_OPEN_ONLY, 0, 0, &w)) _exit(3);
        uint8_t *v = guarded_value(readable);
        if (!v) _exit(3);
        memcpy(v, junk, readable);
        qm_iovec_t iov[2] = {{v, readable}, {v + readable, long_len - readable}};
        qm_ring_put(w, iov, 2, QM_NOWAIT);
        _exit(4);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    qm_record_t r;
    CHECK_RC(qm_ring_get_begin(q, &r, QM_NOWAIT), QM_EAGAIN);   /* abandoned, skipped */
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(q, &st), QM_OK);
    CHECK(st.abandoned == 1);
    /* three laps of short records through the same bytes */
    int junk_seen = 0, wrong = 0, got = 0;
    for (uint32_t i = 0; i < 3 * 4096 / 64; i++) {
        uint32_t msg[2] = {0xfeed0000u + i, i * 7};
        qm_iovec_t v = {msg, sizeof msg};
        CHECK_RC(qm_ring_put(q, &v, 1, QM_NOWAIT), QM_OK);
        if (i % 3 != 2) continue;   /* let a few queue up */
        for (;;) {
            int rc = qm_ring_get_begin(q, &r, QM_NOWAIT);
            if (rc == QM_EAGAIN) break;
            CHECK_RC(rc, QM_OK);
            if (r.len == 8 && memcmp(r.data, "JUNKJUNK", 8) == 0) junk_seen++;
            else if (r.len != sizeof msg || ((const uint32_t *)r.data)[0] != 0xfeed0000u + (uint32_t)got)
                wrong++;
            else got++;
            CHECK_RC(qm_ring_get_end(q, &r), QM_OK);
        }
    }
    for (int rc; (rc = qm_ring_get_begin(q, &r, QM_NOWAIT)) == QM_OK;) {
        if (r.len == sizeof(uint32_t[2]) && ((const uint32_t *)r.data)[0] == 0xfeed0000u + (uint32_t)got) got++;
        else wrong++;
        CHECK_RC(qm_ring_get_end(q, &r), QM_OK);
    }
    fprintf(stderr, "  ring: %d short records through the abandoned slot, junk %d, wrong %d\n",
            got, junk_seen, wrong);
    CHECK(junk_seen == 0 && wrong == 0);
    CHECK(got == 3 * 4096 / 64);
    qm_ring_close(q);
    free(junk);
}

int main(void) {
    check_use_private_shm_dir("bits");
    sw_seed_from_env();
    snprintf(log_dir, sizeof log_dir, "%s/b8", check_dir);
    RUN(log_junk_after_a_shorter_rewrite_is_never_a_record);
    RUN(ring_junk_in_a_reused_slot_is_never_a_record);
    RUN(segment_bit_flips_are_detected_or_harmless);
    CHECK_EXIT();
}
