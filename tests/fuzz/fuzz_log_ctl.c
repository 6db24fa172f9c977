/* fuzz_log_ctl.c - qm__log_ctl_check() over arbitrary control pages. */
#include "fuzz_common.h"

static void check(const uint8_t *img, size_t len, uint64_t file_size) {
    qm_log_config_t cfg;
    int rc = qm__log_ctl_check(img, len, file_size, &cfg);
    if (rc == QM_OK) {   /* an accepted control page: a configuration qm_log_open takes */
        FUZZ_CHECK(len >= sizeof(qm_log_ctl_t) && file_size == QM_DATA_OFFSET);
        FUZZ_CHECK(cfg.segment_bytes >= (64u << 10) && cfg.segment_bytes <= QM_SEGMENT_MAX_BYTES &&
                   cfg.segment_bytes % 4096 == 0);
        FUZZ_CHECK(cfg.retention_ns >= 0 && !(cfg.flags & ~QM_LOG_FSYNC));
    } else {
        FUZZ_CHECK(rc == QM_ECORRUPT || rc == QM_EINCOMPAT);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = fuzz_copy(data, size);
    check(img, size, size);
    check(img, size, QM_DATA_OFFSET);   /* a control file of the right size */
    free(img);
    return 0;
}
