/*
 * status.c - status names, the per-thread failure detail, kill points.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_error[256];

const char *qm_status_str(int status) {
    switch (status) {
    case QM_OK: return "ok";
    case QM_EAGAIN: return "would block";
    case QM_ETIMEDOUT: return "timed out";
    case QM_EINTR: return "interrupted by a signal";
    case QM_ETOOBIG: return "message too large";
    case QM_ECORRUPT: return "shared memory failed validation";
    case QM_EINCOMPAT: return "incompatible format version or layout";
    case QM_ENOTFOUND: return "no such object";
    case QM_EEXIST: return "object already exists";
    case QM_ENOTREADY: return "object is still being created";
    case QM_EINVAL: return "invalid argument";
    case QM_EMEMBERS: return "member table full";
    case QM_EPERM: return "object is not private to this user";
    case QM_ECLOSED: return "handle is closed";
    case QM_EGONE: return "object was truncated or removed under this handle";
    case QM_ESTALE: return "lease is stale (expired, redelivered or already settled)";
    case QM_EFULL: return "too many records in flight (pending window full)";
    default: break;
    }
    if (status < 0 && status > -4096) return strerror(-status);
    return "unknown status";
}

const char *qm_last_error(void) { return last_error; }

int qm__fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

#ifdef QM_KILLPOINTS
/* PYQMEM_KILLPOINT=name[:probability] makes the process SIGKILL itself
 * when it reaches the named point (with that probability, default 1).
 * Each hit is first appended to $PYQMEM_KILLPOINT_LOG if set, so a test
 * can report which points fired. */
void qm__killpoint(const char *name) {
    const char *spec = getenv("PYQMEM_KILLPOINT");
    if (!spec) return;
    size_t n = strlen(name);
    if (strncmp(spec, name, n) != 0 || (spec[n] != '\0' && spec[n] != ':')) return;
    if (spec[n] == ':') {
        double p = strtod(spec + n + 1, NULL);
        if ((double)random() / (double)RAND_MAX >= p) return;
    }
    const char *log = getenv("PYQMEM_KILLPOINT_LOG");
    if (log) {
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "%s\n", name);
            fclose(f);
        }
    }
    raise(SIGKILL);
}
#endif
