/*
 * sweep_common.h - shared by the live corruption sweeps (sweep_*.c,
 * adversary.c): file snapshots restored before every case, a private
 * folder, a deterministic random source, and a forked child with an
 * alarm() watchdog whose exit code says how the operation ended.
 *
 * Child exit codes (ASan and UBSan exit 1 on a report, so none of ours is 1):
 *   SW_OK       every result was what was written (or a correct subset)
 *   SW_CORRUPT  a call refused with QM_ECORRUPT / QM_EINCOMPAT / QM_EGONE
 *   SW_OTHER    a call refused with another typed status
 *   SW_WRONG    a call returned bytes that were never written: a failure
 *   SW_SHORT    no error, every result correct, but fewer of them than were
 *               there (damage read as "the end", e.g. a cut tail)
 * Any other exit, any signal (SIGALRM = the watchdog: a hang) fails.
 */
#ifndef QM_SWEEP_COMMON_H
#define QM_SWEEP_COMMON_H

#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum { SW_OK = 10, SW_CORRUPT = 11, SW_OTHER = 12, SW_WRONG = 13, SW_SHORT = 14 };

__attribute__((unused)) static int sw_classify(int rc) {
    if (rc == QM_ECORRUPT || rc == QM_EINCOMPAT || rc == QM_EGONE) return SW_CORRUPT;
    return SW_OTHER;
}

/* xorshift64*: the same cases on every run unless PYQMEM_SWEEP_SEED says otherwise */
__attribute__((unused)) static uint64_t sw_rng_state = 0x9e3779b97f4a7c15ull;
__attribute__((unused)) static uint64_t sw_rand(void) {
    uint64_t x = sw_rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    sw_rng_state = x;
    return x * 0x2545f4914f6cdd1dull;
}
__attribute__((unused)) static void sw_seed_from_env(void) {
    const char *s = getenv("PYQMEM_SWEEP_SEED");
    if (s && *s) sw_rng_state = strtoull(s, NULL, 0) | 1;
    fprintf(stderr, "seed %#llx (PYQMEM_SWEEP_SEED)\n", (unsigned long long)sw_rng_state);
}

__attribute__((unused)) static long sw_env_long(const char *name, long dflt) {
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 0) : dflt;
}

/* ----- file snapshots ------------------------------------------------------ */
#define SW_MAX_FILES 8
typedef struct sw_snap {
    int n;
    char dir[512];                 /* files of a folder; others there are removed */
    char path[SW_MAX_FILES][512];
    uint8_t *image[SW_MAX_FILES];
    size_t len[SW_MAX_FILES];
} sw_snap_t;

__attribute__((unused)) static int sw_read_file(const char *path, uint8_t **out, size_t *len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st)) { close(fd); return -errno; }
    uint8_t *buf = malloc((size_t)st.st_size ? (size_t)st.st_size : 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (n <= 0) { free(buf); close(fd); return -EIO; }
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

__attribute__((unused)) static int sw_snap_add(sw_snap_t *s, const char *path) {
    if (s->n == SW_MAX_FILES) return -1;
    snprintf(s->path[s->n], sizeof s->path[s->n], "%s", path);
    if (sw_read_file(path, &s->image[s->n], &s->len[s->n])) return -1;
    return s->n++;
}

/* Every regular file of `dir` (no subfolders) */
__attribute__((unused)) static int sw_snap_dir(sw_snap_t *s, const char *dir) {
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)))
        if (de->d_type == DT_REG) {
            char p[900];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (sw_snap_add(s, p) < 0) rc = -1;
        }
    closedir(d);
    return rc;
}

__attribute__((unused)) static int sw_snap_find(const sw_snap_t *s, const char *suffix) {
    size_t sl = strlen(suffix);
    for (int i = 0; i < s->n; i++) {
        size_t pl = strlen(s->path[i]);
        if (pl >= sl && strcmp(s->path[i] + pl - sl, suffix) == 0) return i;
    }
    return -1;
}

__attribute__((unused)) static void sw_free_snap(sw_snap_t *s) {
    for (int i = 0; i < s->n; i++) free(s->image[i]);
    s->n = 0;
}

/* Put every file back as it was (and remove files the last case created). */
__attribute__((unused)) static int sw_restore(const sw_snap_t *s) {
    if (s->dir[0]) {
        DIR *d = opendir(s->dir);
        if (!d) return -1;
        struct dirent *de;
        while ((de = readdir(d))) {
            if (de->d_type != DT_REG) continue;
            char p[900];
            snprintf(p, sizeof p, "%s/%s", s->dir, de->d_name);
            int known = 0;
            for (int i = 0; i < s->n; i++) known |= strcmp(p, s->path[i]) == 0;
            if (!known) unlink(p);
        }
        closedir(d);
    }
    for (int i = 0; i < s->n; i++) {
        int fd = open(s->path[i], O_WRONLY | O_CREAT | O_NOFOLLOW, 0600);
        if (fd < 0) return -1;
        size_t done = 0;
        while (done < s->len[i]) {
            ssize_t n = pwrite(fd, s->image[i] + done, s->len[i] - done, (off_t)done);
            if (n <= 0) { close(fd); return -1; }
            done += (size_t)n;
        }
        if (ftruncate(fd, (off_t)s->len[i])) { close(fd); return -1; }
        close(fd);
    }
    return 0;
}

__attribute__((unused)) static int sw_poke(const sw_snap_t *s, int file, size_t at, uint8_t v) {
    int fd = open(s->path[file], O_WRONLY | O_NOFOLLOW);
    if (fd < 0) return -1;
    int rc = pwrite(fd, &v, 1, (off_t)at) == 1 ? 0 : -1;
    close(fd);
    return rc;
}

/* ----- one case in a child --------------------------------------------------- */
typedef struct sw_tally {
    const char *object;
    long cases, ok, shortened, corrupt, other, unchanged, failed;
} sw_tally_t;

/* Run op() in a forked child under an alarm() watchdog; tally the outcome.
 * Returns 0, or -1 on a failure (printed with `what`). */
__attribute__((unused)) static int sw_run_child(sw_tally_t *t, int (*op)(void), unsigned watchdog_s, const char *what) {
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { t->failed++; return -1; }
    if (pid == 0) {
        alarm(watchdog_s);
        _exit(op());   /* _exit: no leak scan at the exit of every case */
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    t->cases++;
    static long verbose = -1;
    if (verbose < 0) verbose = sw_env_long("PYQMEM_SWEEP_VERBOSE", 0);
    if (verbose && WIFEXITED(status) && WEXITSTATUS(status) != SW_OK)
        fprintf(stderr, "  %s %s: %s\n", t->object, what,
                WEXITSTATUS(status) == SW_SHORT     ? "fewer"
                : WEXITSTATUS(status) == SW_CORRUPT ? "corrupt-error"
                : WEXITSTATUS(status) == SW_OTHER   ? "other-error"
                                                    : "?");
    if (WIFEXITED(status)) {
        switch (WEXITSTATUS(status)) {
        case SW_OK: t->ok++; return 0;
        case SW_SHORT: t->shortened++; return 0;
        case SW_CORRUPT: t->corrupt++; return 0;
        case SW_OTHER: t->other++; return 0;
        case SW_WRONG:
            fprintf(stderr, "%s %s: wrong data returned\n", t->object, what);
            break;
        default:
            fprintf(stderr, "%s %s: child exited %d (sanitizer report?)\n", t->object, what,
                    WEXITSTATUS(status));
        }
    } else if (WIFSIGNALED(status)) {
        fprintf(stderr, "%s %s: child killed by signal %d%s\n", t->object, what,
                WTERMSIG(status), WTERMSIG(status) == SIGALRM ? " (watchdog: hang)" : "");
    }
    t->failed++;
    return -1;
}

__attribute__((unused)) static void sw_print_tally(const sw_tally_t *t) {
    fprintf(stderr,
            "%-24s cases %6ld  ok %6ld (of which fewer %5ld)  corrupt-error %6ld  "
            "other-error %5ld  unchanged %5ld  FAILED %ld\n",
            t->object, t->cases, t->ok + t->shortened, t->shortened, t->corrupt, t->other,
            t->unchanged, t->failed);
}

#endif
