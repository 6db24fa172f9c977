/*
 * check.h - the C tests' whole framework: behaviour-named cases, CHECK
 * that reports file:line and the failing expression, exit 0 (pass),
 * 1 (fail) or 77 (skip), as CTest and liburing's runner expect.
 */
#ifndef QM_TEST_CHECK_H
#define QM_TEST_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmem.h"

static int check_failures;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            check_failures++;                                                    \
            return;                                                              \
        }                                                                        \
    } while (0)

#define CHECK_RC(expr, want)                                                     \
    do {                                                                         \
        int rc_ = (expr);                                                        \
        if (rc_ != (want)) {                                                     \
            fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s) [%s]\n",  \
                    __FILE__, __LINE__, #expr, rc_, qm_status_str(rc_), (want),  \
                    qm_status_str(want), qm_last_error());                       \
            check_failures++;                                                    \
            return;                                                              \
        }                                                                        \
    } while (0)

#define RUN(test)                                                                \
    do {                                                                         \
        int before_ = check_failures;                                            \
        test();                                                                  \
        fprintf(stderr, "%s %s\n", check_failures == before_ ? "ok  " : "FAIL", #test); \
    } while (0)

#define CHECK_EXIT() return check_failures ? 1 : 0

/* A private directory for named objects, removed at exit. */
static char check_dir[256];
__attribute__((unused)) static void check_dir_cleanup(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", check_dir);
    if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", check_dir);
}
__attribute__((unused)) static void check_use_private_shm_dir(const char *tag) {
    snprintf(check_dir, sizeof check_dir, "/dev/shm/qmtest-%s-%d", tag, (int)getpid());
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p -m 700 '%s'", check_dir);
    if (system(cmd) != 0) exit(77);
    setenv("PYQMEM_DIR", check_dir, 1);
    atexit(check_dir_cleanup);
}

#endif
