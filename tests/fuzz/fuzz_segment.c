/*
 * fuzz_segment.c - a log segment's header and its records as the reader,
 * the retention scan, seeks and the lone opener's recovery walk them
 * (qm__log_image_run), then an append.
 *
 * Input: bytes 0..7 are the control's append word; the rest is the
 * segment file, zero-padded (free space is zero) or cut to 64 KiB, the
 * smallest segment size.  qm__segment_check() also sees the file bytes
 * alone, at their own length.  Both images are malloc'd at exactly their
 * size, so a walk past the segment's end is an ASan report.
 */
#include "fuzz_common.h"

#define SEG_BYTES (64u << 10)
#define PREFIX 8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t append = fuzz_u64(data, size, 0);
    const uint8_t *file = size > PREFIX ? data + PREFIX : data;
    size_t file_len = size > PREFIX ? size - PREFIX : 0;

    /* the header check alone, on a file of exactly the input's length */
    uint8_t *raw = fuzz_copy(file, file_len);
    uint64_t base = fuzz_u64(file, file_len, offsetof(qm_segment_header_t, base_offset));
    int rc = qm__segment_check(raw, file_len, base, file_len);
    FUZZ_CHECK(rc == QM_OK || rc == QM_ECORRUPT || rc == QM_EINCOMPAT || rc == QM_ENOTREADY);
    free(raw);

    uint8_t *seg = fuzz_padded(file, file_len, SEG_BYTES);
    qm_log_image_result_t res;
    rc = qm__log_image_run(seg, SEG_BYTES, NULL, append, base + (append >> 52), 0, &res);
    if (rc == QM_OK) {
        /* the two reads agree up to where the CRC pass stopped */
        FUZZ_CHECK(res.read_records <= res.read_records_nocrc);
        if (res.recover_rc == QM_OK) {
            /* recovery is idempotent and leaves a log the reader accepts */
            FUZZ_CHECK(!res.recover_changed && res.recover2_rc == QM_OK);
            FUZZ_CHECK(res.reread_rc != QM_ECORRUPT);
            /* stopped at the end written: an append lands right there */
            if (res.reread_rc == QM_EAGAIN && res.append_rc == QM_OK)
                FUZZ_CHECK(res.append_read_match);
        }
    }
    free(seg);
    return 0;
}
