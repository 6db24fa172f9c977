/*
 * test_crc32c.c - CRC-32C: the standard check value, hardware and portable
 * paths agree at every length and alignment, and chaining works.
 */
#include "check.h"
#include "internal.h"

static void check_value_matches_the_standard(void) {
    CHECK(qm_crc32c(0, "123456789", 9) == 0xe3069283u);
    CHECK(qm__crc32c_portable(0, "123456789", 9) == 0xe3069283u);
    CHECK(qm_crc32c(0, "", 0) == 0);
    static const uint8_t zeros[32];
    CHECK(qm_crc32c(0, zeros, 32) == 0x8a9136aau);   /* RFC 3720 B.4 */
}

static void hardware_and_portable_agree_at_every_length_and_offset(void) {
    static uint8_t buf[600];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 37u + 11u);
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n + off <= sizeof buf; n += 7)
            CHECK(qm_crc32c(0, buf + off, n) == qm__crc32c_portable(0, buf + off, n));
}

/* Long buffers run in three interleaved lanes of 256 or 8192 bytes joined by
 * precomputed shifts: check every length near each lane boundary. */
static void interleaved_lanes_agree_with_portable_near_every_boundary(void) {
    enum { MAX = 3 * 8192 * 2 + 3 * 256 + 64 };
    static uint8_t buf[MAX + 8];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    const size_t around[] = {3 * 256, 3 * 8192, 2 * 3 * 8192, 3 * 8192 + 3 * 256, MAX};
    for (size_t a = 0; a < sizeof around / sizeof around[0]; a++)
        for (size_t n = around[a] - 17; n <= around[a] && n + 8 <= sizeof buf; n++)
            for (size_t off = 0; off < 9; off += 3) {
                uint32_t seed = (uint32_t)(n * 2654435761u);
                CHECK(qm_crc32c(seed, buf + off, n) == qm__crc32c_portable(seed, buf + off, n));
            }
    for (size_t n = 700; n < 30000; n += 997)
        CHECK(qm_crc32c(0, buf + 1, n) == qm__crc32c_portable(0, buf + 1, n));
}

static void chained_crc_equals_crc_of_concatenation(void) {
    const char *a = "hello, ", *b = "world";
    uint32_t whole = qm_crc32c(0, "hello, world", 12);
    CHECK(qm_crc32c(qm_crc32c(0, a, 7), b, 5) == whole);
    CHECK(qm__crc32c_portable(qm__crc32c_portable(0, a, 7), b, 5) == whole);
}

int main(void) {
    fprintf(stderr, "crc32c: %s\n", qm__crc32c_hardware() ? "hardware" : "portable");
    RUN(check_value_matches_the_standard);
    RUN(hardware_and_portable_agree_at_every_length_and_offset);
    RUN(interleaved_lanes_agree_with_portable_near_every_boundary);
    RUN(chained_crc_equals_crc_of_concatenation);
    CHECK_EXIT();
}
