/*
 * test_version.c - the header's version macros and the linked core's
 * qm_version() agree, and the status names cover every QM_E* code.
 */
#include "check.h"

#include <stdio.h>

static void the_linked_version_is_the_headers(void) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", QM_VERSION_MAJOR, QM_VERSION_MINOR,
             QM_VERSION_PATCH);
    CHECK(strcmp(QM_VERSION_STRING, want) == 0);
    CHECK(qm_version() != NULL);
    CHECK(strcmp(qm_version(), QM_VERSION_STRING) == 0);
}

static void every_status_code_has_its_own_name(void) {
    for (int code = QM_EAGAIN; code >= QM_EFULL; code--) {
        const char *name = qm_status_str(code);
        CHECK(name != NULL && name[0] != '\0');
        CHECK(strcmp(name, qm_status_str(-30999)) != 0);   /* not the unknown-code text */
    }
}

int main(void) {
    RUN(the_linked_version_is_the_headers);
    RUN(every_status_code_has_its_own_name);
    CHECK_EXIT();
}
