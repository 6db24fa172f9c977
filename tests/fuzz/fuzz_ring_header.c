/* fuzz_ring_header.c - qm__ring_header_check() over arbitrary header bytes. */
#include "fuzz_common.h"

static void check(const uint8_t *img, size_t len, uint64_t file_size) {
    qm_geometry_t g;
    int rc = qm__ring_header_check(img, len, file_size, &g);
    if (rc == QM_OK) {   /* an accepted geometry is one the ring code can use */
        FUZZ_CHECK(g.capacity_log2 >= 12 && g.capacity_log2 <= 40);
        FUZZ_CHECK(g.capacity == UINT64_C(1) << g.capacity_log2);
        FUZZ_CHECK(g.total_bytes == QM_DATA_OFFSET + g.capacity && g.total_bytes == file_size);
        FUZZ_CHECK(g.max_message == g.capacity / 4);
    } else {
        FUZZ_CHECK(rc == QM_ECORRUPT || rc == QM_EINCOMPAT || rc == QM_ENOTREADY);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = fuzz_copy(data, size);
    check(img, size, size);   /* the image is the whole file */
    /* a file of the size the header claims (its total_bytes field) */
    check(img, size, fuzz_u64(data, size, offsetof(qm_header_t, total_bytes)));
    free(img);
    return 0;
}
