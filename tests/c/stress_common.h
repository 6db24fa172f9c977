/*
 * stress_common.h - message format and checking shared by the stress and
 * crash programs: every message carries its producer, a per-producer
 * sequence number and a checksum of all of it, so a consumer can tell a
 * torn, duplicated, lost or reordered message from a good one.
 */
#ifndef QM_STRESS_COMMON_H
#define QM_STRESS_COMMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct stress_msg_head {
    uint32_t producer;
    uint32_t payload_len;
    uint64_t seq;
} stress_msg_head_t;

#define STRESS_MAX_PAYLOAD 4000u
#define STRESS_MAX_MSG (sizeof(stress_msg_head_t) + STRESS_MAX_PAYLOAD + 4)

static inline uint32_t stress_hash(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* Build message (producer, seq) into buf; returns its length. */
static inline size_t stress_make(uint8_t *buf, uint32_t producer, uint64_t seq,
                                 uint32_t max_payload) {
    uint64_t x = seq * 0x9e3779b97f4a7c15ull + producer;
    uint32_t len = (uint32_t)((x >> 17) % (max_payload + 1));
    if ((x & 7) != 0) len %= 64;   /* mostly small, some large */
    stress_msg_head_t h = {producer, len, seq};
    memcpy(buf, &h, sizeof h);
    for (uint32_t i = 0; i < len; i++) buf[sizeof h + i] = (uint8_t)(x >> (i % 56)) ^ (uint8_t)i;
    uint32_t c = stress_hash(buf, sizeof h + len);
    memcpy(buf + sizeof h + len, &c, 4);
    return sizeof h + len + 4;
}

/* 0 if the message is intact; fills producer and seq. */
static inline int stress_check(const uint8_t *buf, size_t n, uint32_t *producer, uint64_t *seq) {
    stress_msg_head_t h;
    if (n < sizeof h + 4) return -1;
    memcpy(&h, buf, sizeof h);
    if (h.payload_len > STRESS_MAX_PAYLOAD || sizeof h + h.payload_len + 4 != n) return -1;
    uint32_t c;
    memcpy(&c, buf + sizeof h + h.payload_len, 4);
    if (c != stress_hash(buf, sizeof h + h.payload_len)) return -1;
    *producer = h.producer;
    *seq = h.seq;
    return 0;
}

static inline long stress_scale(long base) {
    const char *s = getenv("PYQMEM_STRESS_SCALE");
    long k = s ? atol(s) : 1;
    return base * (k > 0 ? k : 1);
}

#endif
