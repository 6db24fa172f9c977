/* fuzz_group_ctl.c - qm__group_ctl_check() over arbitrary group headers. */
#include "fuzz_common.h"

static void check(const uint8_t *img, size_t len, uint64_t file_size) {
    qm_group_config_t cfg;
    int rc = qm__group_ctl_check(img, len, file_size, &cfg);
    if (rc == QM_OK) {   /* accepted dimensions are in range and fill the file */
        FUZZ_CHECK(cfg.partitions >= 1 && cfg.partitions <= QM_GROUP_MAX_PARTITIONS);
        FUZZ_CHECK(cfg.window >= 16 && cfg.window <= 65536 && !(cfg.window & (cfg.window - 1)));
        FUZZ_CHECK(!(cfg.flags & ~QM_GROUP_ORDERED));
        FUZZ_CHECK(file_size >= QM_GROUP_PARTS_OFFSET + (uint64_t)cfg.partitions *
                                     (QM_GROUP_PART_BYTES + (uint64_t)cfg.window * QM_GROUP_ENTRY_BYTES));
    } else {
        FUZZ_CHECK(rc == QM_ECORRUPT || rc == QM_EINCOMPAT);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = fuzz_copy(data, size);
    check(img, size, size);
    free(img);
    /* the header page zero-padded, in a file of the size its dimensions give */
    img = fuzz_padded(data, size, sizeof(qm_group_ctl_t));
    const qm_group_ctl_t *c = (const qm_group_ctl_t *)img;
    check(img, sizeof(qm_group_ctl_t), qm__group_file_size(c->partitions, c->window_log2));
    free(img);
    return 0;
}
