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

#if defined(__x86_64__)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *data,
                                                            size_t len) {
    const uint8_t *p = data;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
static bool hw_available(void) { return __builtin_cpu_supports("sse4.2"); }
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
__attribute__((target("+crc"))) static uint32_t crc32c_hw(uint32_t crc, const void *data,
                                                          size_t len) {
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = __builtin_aarch64_crc32cb(c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_aarch64_crc32cx(c, w);
        p += 8;
        len -= 8;
    }
    while (len--) c = __builtin_aarch64_crc32cb(c, *p++);
    return ~c;
}
static bool hw_available(void) { return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0; }
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
