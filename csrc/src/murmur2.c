/*
 * murmur2.c - Kafka's key hash: which partition a keyed record goes to.
 * Every binding and backend takes it from here, so a key lands on the same
 * partition whatever wrote it.
 */
#include "qmem.h"

uint32_t qm_murmur2(const void *data, size_t len) {
    const uint32_t m = 0x5bd1e995u;
    const unsigned char *p = data;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t whole = len / 4;
    for (size_t i = 0; i < whole; i++, p += 4) {
        uint32_t k = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3: h ^= (uint32_t)p[2] << 16; /* fall through */
    case 2: h ^= (uint32_t)p[1] << 8;  /* fall through */
    case 1: h ^= p[0]; h *= m;
    default: break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}
