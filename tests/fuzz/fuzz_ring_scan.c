/*
 * fuzz_ring_scan.c - the ring's record scan (consumers, producers, head
 * reclaim, dead-peer recovery) over hostile control words and data.
 *
 * Input: byte 0 picks the capacity (4 or 8 KiB); bytes 1..24 are the tail,
 * read and head positions; the rest overwrites the data area from its
 * start (the remainder keeps the formatted FREE words).  The header itself
 * is valid (fuzz_ring_header covers it).  The image is one malloc'd block
 * of exactly the ring's size, so a scan past the data area is an ASan
 * report.
 */
#include "fuzz_common.h"

#define CTL_WORDS 25

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t cap = size ? UINT64_C(4096) << (data[0] & 1) : 4096;
    uint64_t len = QM_DATA_OFFSET + cap;
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, len)) abort();   /* attach wants page alignment */
    uint8_t *img = mem;
    FUZZ_CHECK(qm_ring_format_memory(img, len, cap, 0) == QM_OK);
    qm_ring_ctl_t *ctl = (qm_ring_ctl_t *)img;
    uint64_t pos[3];
    for (int i = 0; i < 3; i++) pos[i] = fuzz_u64(data, size < CTL_WORDS ? size : CTL_WORDS, 1 + 8 * i);
    atomic_store(&ctl->tail.pos, pos[0]);
    atomic_store(&ctl->read.pos, pos[1]);
    atomic_store(&ctl->head.pos, pos[2]);
    if (size > CTL_WORDS) {
        size_t n = size - CTL_WORDS < cap ? size - CTL_WORDS : cap;
        memcpy(img + QM_DATA_OFFSET, data + CTL_WORDS, n);
    }
    qm_ring_t *r;
    FUZZ_CHECK(qm_ring_attach_memory(img, len, &r) == QM_OK);
    uint64_t got = 0;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 64; i++) {
            qm_record_t rec;
            int rc = qm_ring_get_begin(r, &rec, QM_NOWAIT);
            if (rc != QM_OK) {
                FUZZ_CHECK(rc == QM_EAGAIN || rc == QM_ECORRUPT);
                break;
            }
            /* a record handed out lies inside the data area */
            const uint8_t *d = (const uint8_t *)rec.data;
            FUZZ_CHECK(d >= img + QM_DATA_OFFSET && rec.len <= cap && d + rec.len <= img + len);
            got += qm_crc32c(0, rec.data, rec.len);
            rc = qm_ring_get_end(r, &rec);
            FUZZ_CHECK(rc == QM_OK || rc == QM_ECORRUPT);
        }
        uint8_t msg[200];
        memset(msg, round, sizeof msg);
        qm_iovec_t iov = {msg, (size_t)(round * 97) % sizeof msg};
        int rc = qm_ring_put(r, &iov, 1, QM_NOWAIT);
        FUZZ_CHECK(rc == QM_OK || rc == QM_EAGAIN || rc == QM_ECORRUPT);
        uint64_t depth;
        qm_ring_stats_t st;
        (void)qm_ring_depth(r, &depth);
        (void)qm_ring_stats(r, &st);
    }
    (void)got;
    qm_ring_close(r);
    free(mem);
    return 0;
}
