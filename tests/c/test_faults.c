/*
 * test_faults.c - a file truncated while mapped is QM_ECORRUPT, never a
 * SIGBUS that kills the process (fault.c): rings, log segments, log
 * control files, index files and group files, truncated by this process
 * or by another, before a call or while a call is blocked; and SIGBUS
 * that is not ours still kills, or goes to the handler installed before
 * ours (also one that chains back to us, as Python's faulthandler does).
 * Runs in a private PYQMEM_DIR.
 */
#include "check.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ASan installs its own SIGBUS handler unless told not to; the tests look
 * at how a child dies, so the default action must be what is left. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "handle_sigbus=0"; }
const char *__tsan_default_options(void);
const char *__tsan_default_options(void) { return "handle_sigbus=0"; }

uint64_t qm__fault_repaired(void);   /* fault.c test hook */

static void shrink(const char *path, off_t size) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, size) < 0) {
        perror(path);
        exit(2);
    }
    close(fd);
}

/* Truncate from another process. */
static void shrink_in_child(const char *path, off_t size) {
    pid_t pid = fork();
    if (pid == 0) {
        shrink(path, size);
        _exit(0);
    }
    int st;
    waitpid(pid, &st, 0);
}

static bool said_truncated(const char *what) {
    const char *e = qm_last_error();
    return strstr(e, "truncated while mapped") && (!what || strstr(e, what));
}

static int put_str(qm_ring_t *r, const char *s) {
    qm_iovec_t v = {s, strlen(s)};
    return qm_ring_put(r, &v, 1, QM_NOWAIT);
}

/* ----- rings ---------------------------------------------------------------------- */
static void ring_truncated_to_zero_is_corrupt_for_every_call(void) {
    qm_ring_t *r, *r2;
    char path[QM_PATH_MAX];
    CHECK(qm_ring_path("zero", path, sizeof path) > 0);
    CHECK_RC(qm_ring_open("zero", QM_CREATE_ONLY, 1 << 16, 0, &r), 0);
    CHECK_RC(put_str(r, "before"), 0);
    uint64_t repaired = qm__fault_repaired();
    shrink(path, 0);
    CHECK_RC(put_str(r, "after"), QM_ECORRUPT);   /* the call that finds it */
    CHECK(said_truncated(path));
    CHECK(qm__fault_repaired() > repaired);
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_ECORRUPT);   /* and every later one */
    CHECK(said_truncated(path));
    uint64_t depth;
    CHECK_RC(qm_ring_depth(r, &depth), QM_ECORRUPT);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(r, &st), QM_ECORRUPT);
    size_t done = 7;
    qm_iovec_t v = {"x", 1};
    CHECK_RC(qm_ring_put_many(r, &v, 1, QM_NOWAIT, &done), QM_ECORRUPT);
    CHECK(done == 0);
    CHECK_RC(qm_ring_dup(r, &r2), QM_ECORRUPT);
    qm_ring_wake_all(r);
    qm_ring_close(r);   /* survives too */
    CHECK_RC(qm_ring_unlink("zero"), 0);
}

static void ring_truncated_below_its_data_fails_the_put_and_the_reopen(void) {
    qm_ring_t *r;
    char path[QM_PATH_MAX];
    CHECK(qm_ring_path("data", path, sizeof path) > 0);
    CHECK_RC(qm_ring_open("data", QM_CREATE_ONLY, 1 << 16, 0, &r), 0);
    shrink(path, (off_t)QM_DATA_OFFSET);   /* header and members intact, data gone */
    CHECK_RC(put_str(r, "into a missing page"), QM_ECORRUPT);
    CHECK(said_truncated(path));
    qm_ring_close(r);
    /* opening it again is refused by the size checks */
    CHECK_RC(qm_ring_open("data", QM_OPEN_ONLY, 0, 0, &r), QM_ECORRUPT);
    CHECK(strstr(qm_last_error(), "does not match"));
    CHECK_RC(qm_ring_unlink("data"), 0);
}

static void ring_record_truncated_by_another_process_fails_the_get(void) {
    qm_ring_t *r;
    char path[QM_PATH_MAX];
    CHECK(qm_ring_path("other", path, sizeof path) > 0);
    CHECK_RC(qm_ring_open("other", QM_CREATE_ONLY, 1 << 16, 0, &r), 0);
    CHECK_RC(put_str(r, "a record"), 0);
    shrink_in_child(path, (off_t)QM_DATA_OFFSET);
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), QM_ECORRUPT);
    CHECK(said_truncated(path));
    qm_ring_close(r);
    CHECK_RC(qm_ring_unlink("other"), 0);
}

static void ring_truncated_after_get_begin_fails_the_get_end(void) {
    qm_ring_t *r;
    char path[QM_PATH_MAX];
    CHECK(qm_ring_path("held", path, sizeof path) > 0);
    CHECK_RC(qm_ring_open("held", QM_CREATE_ONLY, 1 << 16, 0, &r), 0);
    CHECK_RC(put_str(r, "held record"), 0);
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(r, &rec, QM_NOWAIT), 0);
    shrink_in_child(path, 0);
    char copy[32] = {0};
    memcpy(copy, rec.data, rec.len < sizeof copy ? rec.len : sizeof copy - 1);   /* zeros now */
    CHECK(copy[0] == 0);
    CHECK_RC(qm_ring_get_end(r, &rec), QM_ECORRUPT);
    qm_ring_close(r);
    CHECK_RC(qm_ring_unlink("held"), 0);
}

static void blocked_get_returns_corrupt_when_another_process_truncates(void) {
    qm_ring_t *r;
    char path[QM_PATH_MAX];
    CHECK(qm_ring_path("blocked", path, sizeof path) > 0);
    CHECK_RC(qm_ring_open("blocked", QM_CREATE_ONLY, 1 << 16, 0, &r), 0);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        shrink(path, 0);
        _exit(0);
    }
    int64_t t0 = qm_now_ns();
    qm_record_t rec;
    CHECK_RC(qm_ring_get_begin(r, &rec, t0 + 5 * INT64_C(1000000000)), QM_ECORRUPT);
    CHECK(qm_now_ns() - t0 < 2 * INT64_C(1000000000));   /* well before the deadline */
    CHECK(said_truncated(path));
    int st;
    waitpid(pid, &st, 0);
    qm_ring_close(r);
    CHECK_RC(qm_ring_unlink("blocked"), 0);
}

/* ----- partition logs --------------------------------------------------------------- */
#define SEG (64u << 10)
static const qm_log_config_t seg_cfg = {SEG, 0, 0, 0};

static char dirbuf[400], filebuf[480];
static const char *logdir(const char *tag) {
    snprintf(dirbuf, sizeof dirbuf, "%s/%s", check_dir, tag);
    return dirbuf;
}
static const char *logfile(const char *tag, const char *name) {
    snprintf(filebuf, sizeof filebuf, "%s/%s/%s", check_dir, tag, name);
    return filebuf;
}

static int append_str(qm_log_t *lg, const char *value) {
    qm_iovec_t v = {value, strlen(value)};
    qm_log_entry_t e = {NULL, 0, NULL, 0, &v, 1, 0};
    uint64_t off;
    return qm_log_append(lg, &e, &off);
}

static void log_segment_truncated_fails_append_and_every_reader(void) {
    qm_log_t *lg, *other;
    CHECK_RC(qm_log_open(logdir("seg"), QM_CREATE_ONLY, &seg_cfg, &lg), 0);
    CHECK_RC(qm_log_open(logdir("seg"), QM_OPEN_ONLY, NULL, &other), 0);
    char rec_text[600];   /* ten of them fill more than the first page */
    memset(rec_text, 'r', sizeof rec_text - 1);
    rec_text[sizeof rec_text - 1] = 0;
    for (int i = 0; i < 10; i++) CHECK_RC(append_str(lg, rec_text), 0);
    shrink_in_child(logfile("seg", "00000000000000000000.log"), 4096);   /* magic kept */
    CHECK_RC(append_str(lg, "one more"), QM_ECORRUPT);
    CHECK(said_truncated("segment 00000000000000000000.log"));
    qm_log_cursor_t cur = {0};
    CHECK_RC(qm_log_seek(lg, &cur, 0), QM_ECORRUPT);
    /* another handle that had the segment mapped finds out on its own */
    qm_log_cursor_t c2 = {0};
    qm_log_record_t rec;
    int rc = qm_log_seek(other, &c2, 0), read = 0;
    while (rc == QM_OK && (rc = qm_log_read(other, &c2, &rec, QM_NOWAIT)) == QM_OK) read++;
    CHECK_RC(rc, QM_ECORRUPT);
    CHECK(read < 10);   /* the records in the first page, intact */
    CHECK(said_truncated("segment 00000000000000000000.log"));
    uint64_t s, e;
    CHECK_RC(qm_log_bounds(other, &s, &e), QM_ECORRUPT);
    qm_log_close(other);
    qm_log_close(lg);
    /* opening it again is refused by the size checks */
    CHECK_RC(qm_log_open(logdir("seg"), QM_OPEN_ONLY, NULL, &lg), QM_ECORRUPT);
}

static void log_reader_blocked_at_the_end_sees_the_truncation(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("wait"), QM_CREATE_ONLY, &seg_cfg, &lg), 0);
    CHECK_RC(append_str(lg, "one"), 0);
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_seek(lg, &cur, 1), 0);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        shrink(logfile("wait", "00000000000000000000.log"), 0);
        _exit(0);
    }
    int64_t t0 = qm_now_ns();
    CHECK_RC(qm_log_read(lg, &cur, &rec, t0 + 5 * INT64_C(1000000000)), QM_ECORRUPT);
    CHECK(qm_now_ns() - t0 < 2 * INT64_C(1000000000));
    int st;
    waitpid(pid, &st, 0);
    qm_log_close(lg);
}

static void log_control_truncated_fails_append_and_read(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("ctl"), QM_CREATE_ONLY, &seg_cfg, &lg), 0);
    CHECK_RC(append_str(lg, "before"), 0);
    shrink(logfile("ctl", "control"), 0);
    CHECK_RC(append_str(lg, "after"), QM_ECORRUPT);
    CHECK(said_truncated("control file"));
    qm_log_cursor_t cur = {0};
    qm_log_record_t rec;
    CHECK_RC(qm_log_read(lg, &cur, &rec, QM_NOWAIT), QM_ECORRUPT);
    qm_log_stats_t st;
    CHECK_RC(qm_log_stats(lg, &st), QM_ECORRUPT);
    const qm_log_t *logs[1] = {lg};
    CHECK_RC(qm_log_wait_any((qm_log_t *const *)logs, &cur, 1, QM_NOWAIT), QM_ECORRUPT);
    qm_log_close(lg);
}

static void log_index_truncated_fails_the_append_that_writes_it(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("idx"), QM_CREATE_ONLY, &seg_cfg, &lg), 0);
    CHECK_RC(append_str(lg, "first"), 0);
    shrink(logfile("idx", "00000000000000000000.idx"), 0);
    char big[1000];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = 0;
    int rc = QM_OK;
    for (int i = 0; i < 20 && rc == QM_OK; i++) rc = append_str(lg, big);   /* crosses 4 KiB */
    CHECK_RC(rc, QM_ECORRUPT);
    CHECK(said_truncated("index 00000000000000000000.idx"));
    qm_log_close(lg);
}

/* ----- consumer groups ---------------------------------------------------------------- */
static void group_file_truncated_fails_claim_and_ack(void) {
    qm_log_t *lg;
    CHECK_RC(qm_log_open(logdir("grp"), QM_CREATE_ONLY, &seg_cfg, &lg), 0);
    qm_group_config_t cfg = {2, 16, 0, NULL};
    qm_group_t *g;
    CHECK_RC(qm_group_open(logdir("grp"), "workers", QM_CREATE_ONLY, &cfg, &g, NULL), 0);
    qm_group_lease_t l[4];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 10, qm_now_ns(), INT64_C(1000000000), 0, l, 4, &got), 0);
    CHECK(got == 4);
    char path[480];
    snprintf(path, sizeof path, "%s/groups/workers.grp", logdir("grp"));
    shrink_in_child(path, 4096);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), QM_ECORRUPT);
    CHECK(said_truncated("consumer group"));
    CHECK_RC(qm_group_claim(g, 1, 10, qm_now_ns(), INT64_C(1000000000), 0, l, 4, &got),
             QM_ECORRUPT);
    CHECK(got == 0);
    int status[2] = {0, 0};
    CHECK_RC(qm_group_ack_many(g, l, 2, status), QM_ECORRUPT);
    CHECK(status[0] == QM_ECORRUPT && status[1] == QM_ECORRUPT);
    qm_group_stats_t gs;
    CHECK_RC(qm_group_stats(g, &gs), QM_ECORRUPT);
    qm_group_close(g);   /* settles leases into zero pages: survives */
    CHECK_RC(qm_group_open(logdir("grp"), "workers", QM_OPEN_ONLY, NULL, &g, NULL), QM_ECORRUPT);
    qm_log_close(lg);
}

/* ----- SIGBUS that is not ours ------------------------------------------------------ */
/* Touch a page past the end of a file mapped with plain mmap: not ours. */
static void foreign_fault(void) {
    char path[400];
    snprintf(path, sizeof path, "%s/foreign-%d", check_dir, (int)getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, 8192) < 0) _exit(3);
    volatile char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) _exit(3);
    p[4096] = 1;
    if (ftruncate(fd, 0) < 0) _exit(3);
    (void)p[4096];   /* SIGBUS */
}

/* Open a ring and break it, so our handler is installed (or re-installed)
 * and known to work in this process. */
static int ours_still_works(const char *name) {
    qm_ring_t *r;
    char path[QM_PATH_MAX];
    if (qm_ring_path(name, path, sizeof path) < 0) return 10;
    if (qm_ring_open(name, QM_CREATE_ONLY, 1 << 16, 0, &r)) return 11;
    shrink(path, 0);
    int rc = put_str(r, "x");
    qm_ring_close(r);
    qm_ring_unlink(name);
    return rc == QM_ECORRUPT ? 0 : 12;
}

static int wait_child(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return st;
}

static void fault_outside_our_mappings_still_kills(void) {
    pid_t pid = fork();
    if (pid == 0) {
        if (ours_still_works("foreign")) _exit(20);
        foreign_fault();
        _exit(0);
    }
    int st = wait_child(pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS);
}

static void sigbus_sent_by_kill_still_kills(void) {
    pid_t pid = fork();
    if (pid == 0) {
        if (ours_still_works("sent")) _exit(20);
        raise(SIGBUS);
        _exit(0);
    }
    int st = wait_child(pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS);
}

static volatile sig_atomic_t earlier_calls;
static void earlier_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    _exit(42);
}

static void foreign_fault_goes_to_the_handler_installed_before_ours(void) {
    pid_t pid = fork();
    if (pid == 0) {
        /* the inherited handler is ours; put another in its place, as a
         * library would, then map again: ours comes back, chaining to it */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = earlier_handler;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGBUS, &sa, NULL);
        if (ours_still_works("chained")) _exit(20);
        foreign_fault();
        _exit(0);
    }
    int st = wait_child(pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42);
}

/* Like Python's faulthandler: remembers the handler it displaced, and on a
 * fatal signal writes its report, puts that handler back and raises again. */
static struct sigaction displaced;
static int report_fd = -1;
static void reporting_handler(int sig) {
    if (write(report_fd, "R", 1) != 1) _exit(30);
    sigaction(sig, &displaced, NULL);
    raise(sig);
}

static void handler_chaining_back_to_us_does_not_loop(void) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        report_fd = fds[1];
        if (ours_still_works("cycle-a")) _exit(20);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = reporting_handler;
        sa.sa_flags = SA_NODEFER | SA_ONSTACK;
        sigaction(SIGBUS, &sa, &displaced);   /* displaced = ours */
        /* the next mapping re-installs ours, chaining to the reporter */
        if (ours_still_works("cycle-b")) _exit(21);
        foreign_fault();
        _exit(0);
    }
    close(fds[1]);
    int st = wait_child(pid);
    char buf[16];
    ssize_t n = read(fds[0], buf, sizeof buf);
    close(fds[0]);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS);
    CHECK(n == 1);   /* the reporter ran once: no loop */
}

int main(void) {
    check_use_private_shm_dir("faults");
    RUN(ring_truncated_to_zero_is_corrupt_for_every_call);
    RUN(ring_truncated_below_its_data_fails_the_put_and_the_reopen);
    RUN(ring_record_truncated_by_another_process_fails_the_get);
    RUN(ring_truncated_after_get_begin_fails_the_get_end);
    RUN(blocked_get_returns_corrupt_when_another_process_truncates);
    RUN(log_segment_truncated_fails_append_and_every_reader);
    RUN(log_reader_blocked_at_the_end_sees_the_truncation);
    RUN(log_control_truncated_fails_append_and_read);
    RUN(log_index_truncated_fails_the_append_that_writes_it);
    RUN(group_file_truncated_fails_claim_and_ack);
    RUN(fault_outside_our_mappings_still_kills);
    RUN(sigbus_sent_by_kill_still_kills);
    RUN(foreign_fault_goes_to_the_handler_installed_before_ours);
    RUN(handler_chaining_back_to_us_does_not_loop);
    CHECK_EXIT();
}
