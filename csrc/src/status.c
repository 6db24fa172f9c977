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
#include <unistd.h>

static _Thread_local char last_error[256];

const char *qm_version(void) {
    return QM_VERSION_STRING;
}

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
    case QM_EGONE: return "object could not be reopened after fork()";
    case QM_ESTALE: return "lease is stale (expired, redelivered or already settled)";
    case QM_EFULL: return "too many records in flight (pending window full)";
    default: break;
    }
    if (status < 0 && status > -4096) return strerror(-status);
    return "unknown status";
}

const char *qm_last_error(void) { return last_error; }

void qm__clear_error(void) { last_error[0] = 0; }

int qm__fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

#ifdef QM_KILLPOINTS
/* PYQMEM_KILLPOINT=name[:probability[:skip]] makes the process SIGKILL
 * itself at the named point: each time the point is reached after the
 * first `skip` (default 0), with `probability` (default 1).  The random
 * draws are per process (reseeded after fork), so forked children of one
 * parent do not all die at the same hit.  Each kill is first appended to
 * $PYQMEM_KILLPOINT_LOG if set, so a test can report which point fired.
 * `skip` counts the process's passes over the named point. */
static unsigned long kp_hits;
static unsigned long long kp_state;
static pid_t kp_pid;

static double kp_random(void) {
    pid_t pid = getpid();
    if (kp_pid != pid) {
        kp_pid = pid;
        kp_state = ((unsigned long long)pid << 32) ^ (unsigned long long)qm_now_ns() ^
                   0x9e3779b97f4a7c15ull;
    }
    kp_state ^= kp_state >> 12;   /* xorshift64* */
    kp_state ^= kp_state << 25;
    kp_state ^= kp_state >> 27;
    return (double)((kp_state * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

void (*qm__killpoint_hook)(const char *name);

void qm__killpoint(const char *name) {
    if (qm__killpoint_hook) qm__killpoint_hook(name);
    const char *spec = getenv("PYQMEM_KILLPOINT");
    if (!spec) return;
    size_t n = strlen(name);
    if (strncmp(spec, name, n) != 0 || (spec[n] != '\0' && spec[n] != ':')) return;
    double p = 1.0;
    unsigned long skip = 0;
    if (spec[n] == ':') {
        char *end;
        double v = strtod(spec + n + 1, &end);
        if (end != spec + n + 1) p = v;
        if (*end == ':') skip = strtoul(end + 1, NULL, 10);
    }
    if (kp_hits++ < skip) return;
    if (p < 1.0 && kp_random() >= p) return;
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
