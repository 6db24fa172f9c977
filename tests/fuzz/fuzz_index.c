/*
 * fuzz_index.c - a segment's sparse index (<base>.idx) as qm_log_seek()
 * and qm_log_seek_time() use it: binary search over entries, then the
 * record an entry names checked and walked from.
 *
 * Input: bytes 0..7 the seek target (offset - base), 8..15 the seek time,
 * 16..271 the index (16 entries of 16 bytes: one per 4 KiB of a 64 KiB
 * segment, zero-padded), the rest the segment file (zero-padded or cut to
 * 64 KiB).  The index is malloc'd at exactly 16 entries, so reading an
 * entry past the last is an ASan report.
 */
#include "fuzz_common.h"

#define SEG_BYTES (64u << 10)
#define ENTRIES (SEG_BYTES / QM_INDEX_INTERVAL)
#define IDX_AT 16
#define SEG_AT (IDX_AT + ENTRIES * sizeof(qm_index_entry_t))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t target = fuzz_u64(data, size, 0);
    int64_t ts = (int64_t)fuzz_u64(data, size, 8);
    qm_index_entry_t *idx = (qm_index_entry_t *)fuzz_padded(
        size > IDX_AT ? data + IDX_AT : data, size > IDX_AT ? size - IDX_AT : 0,
        ENTRIES * sizeof(qm_index_entry_t));
    const uint8_t *file = size > SEG_AT ? data + SEG_AT : data;
    size_t file_len = size > SEG_AT ? size - SEG_AT : 0;
    uint8_t *seg = fuzz_padded(file, file_len, SEG_BYTES);
    uint64_t base = fuzz_u64(seg, SEG_BYTES, offsetof(qm_segment_header_t, base_offset));
    qm_log_image_result_t res;
    /* an append word at the segment's start: recovery finds the real end */
    int rc = qm__log_image_run(seg, SEG_BYTES, idx, QM_APPEND(0, 0, QM_SEGMENT_HEADER),
                               base + target, ts, &res);
    if (rc == QM_OK && res.seek_rc == QM_OK) {
        /* a seek never passes its target */
        FUZZ_CHECK(res.seek_next <= base + target || base + target < base);
    }
    free(seg);
    free(idx);
    return 0;
}
