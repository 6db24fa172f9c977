/*
 * crc32c.c - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of log records (as in Kafka's record batches and LevelDB).
 *
 * x86-64 uses the SSE4.2 crc32 instruction and arm64 the ARMv8 CRC32C
 * instructions when the CPU has them (checked once at run time); anything
 * else uses slicing-by-8 tables.  All paths give identical results; the
 * test checks them against the standard check value and each other.
 */
#include "internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

static uint32_t table[8][256];
static bool table_ready;

static void table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
    table_ready = true;
}

uint32_t qm__crc32c_portable(uint32_t crc, const void *data, size_t len) {
    if (!table_ready) table_init();   /* idempotent: a race computes the same table */
    const uint8_t *p = data;
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc;   /* little-endian: the low 4 bytes take the running crc */
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* ----- hardware ------------------------------------------------------------
 * The crc32 instruction has a latency of about three cycles and a throughput
 * of one per cycle, so one dependent chain runs at a third of the speed the
 * unit allows.  Long buffers are therefore cut into three lanes of equal
 * length whose CRCs run interleaved, then joined: CRC state is linear over
 * GF(2), so the state after lanes A then B is shift(state_A, |B|) ^ state_B,
 * where shift(c, n) is the state after feeding n zero bytes from c.  For the
 * two lane lengths used, shift is precomputed as four 256-entry tables (one
 * per byte of c), built once from the instruction itself.  The portable path
 * and this one give identical results; the test compares them at every
 * length around the lane sizes. */
#if defined(__x86_64__)
#include <nmmintrin.h>
#define HW_TARGET __attribute__((target("sse4.2")))
HW_TARGET static inline uint64_t hw_u64(uint64_t c, uint64_t w) { return _mm_crc32_u64(c, w); }
HW_TARGET static inline uint64_t hw_u8(uint64_t c, uint8_t b) { return _mm_crc32_u8((uint32_t)c, b); }
static bool hw_available(void) { return __builtin_cpu_supports("sse4.2"); }
#define HAVE_HW 1
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#define HW_TARGET __attribute__((target("+crc")))
HW_TARGET static inline uint64_t hw_u64(uint64_t c, uint64_t w) {
    return __builtin_aarch64_crc32cx((uint32_t)c, w);
}
HW_TARGET static inline uint64_t hw_u8(uint64_t c, uint8_t b) {
    return __builtin_aarch64_crc32cb((uint32_t)c, b);
}
static bool hw_available(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
#define HAVE_HW 1
#endif

#ifdef HAVE_HW
enum { LANE_LONG = 8192, LANE_SHORT = 256 };   /* bytes per lane; multiples of 8 */

typedef uint32_t shift_table_t[4][256];
static shift_table_t shift_long, shift_short;
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

HW_TARGET static uint32_t zeros_hw(uint32_t c, size_t n) {
    uint64_t s = c;
    for (size_t i = 0; i < n; i += 8) s = hw_u64(s, 0);
    return (uint32_t)s;
}

/* shift is linear: build each table from the images of the 32 basis bits */
static void shift_build(shift_table_t t, size_t n) {
    uint32_t basis[32];
    for (int b = 0; b < 32; b++) basis[b] = zeros_hw(1u << b, n);
    for (int k = 0; k < 4; k++)
        for (uint32_t v = 0; v < 256; v++) {
            uint32_t r = 0;
            for (int b = 0; b < 8; b++)
                if (v >> b & 1) r ^= basis[8 * k + b];
            t[k][v] = r;
        }
}

static void shift_init(void) {
    shift_build(shift_long, LANE_LONG);
    shift_build(shift_short, LANE_SHORT);
}

static inline uint32_t shift(const shift_table_t t, uint32_t c) {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
}

/* Run whole triples of `lane`-byte lanes; returns the joined state. */
HW_TARGET static inline uint64_t lanes3(uint64_t c, const uint8_t **pp, size_t *lenp,
                                        size_t lane, const shift_table_t t) {
    const uint8_t *p = *pp;
    size_t len = *lenp;
    while (len >= 3 * lane) {
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < lane; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, p + i, 8);
            memcpy(&w1, p + lane + i, 8);
            memcpy(&w2, p + 2 * lane + i, 8);
            c = hw_u64(c, w0);
            c1 = hw_u64(c1, w1);
            c2 = hw_u64(c2, w2);
        }
        c = shift(t, shift(t, (uint32_t)c) ^ (uint32_t)c1) ^ (uint32_t)c2;
        p += 3 * lane;
        len -= 3 * lane;
    }
    *pp = p;
    *lenp = len;
    return c;
}

HW_TARGET static uint32_t crc32c_hw(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = hw_u8(c, *p++);
        len--;
    }
    if (len >= 3 * LANE_SHORT) {
        pthread_once(&shift_once, shift_init);
        c = lanes3(c, &p, &len, LANE_LONG, shift_long);
        c = lanes3(c, &p, &len, LANE_SHORT, shift_short);
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = hw_u64(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) c = hw_u8(c, *p++);
    return ~(uint32_t)c;
}
#else
static uint32_t crc32c_hw(uint32_t crc, const void *data, size_t len) {
    return qm__crc32c_portable(crc, data, len);
}
static bool hw_available(void) { return false; }
#endif

/* 0 = not decided yet, 1 = hardware, 2 = portable */
static _Atomic int impl;

bool qm__crc32c_hardware(void) {
    int i = atomic_load_explicit(&impl, memory_order_relaxed);
    if (!i) {
        i = hw_available() ? 1 : 2;
        atomic_store_explicit(&impl, i, memory_order_relaxed);
    }
    return i == 1;
}

uint32_t qm_crc32c(uint32_t crc, const void *data, size_t len) {
    return qm__crc32c_hardware() ? crc32c_hw(crc, data, len)
                                 : qm__crc32c_portable(crc, data, len);
}
