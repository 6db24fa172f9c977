/*
 * test_region.c - named rings: creation, attach, refusal paths, liveness
 * and recovery from dead members.  Runs in a private PYQMEM_DIR.
 */
#include "check.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int put_str(qm_ring_t *r, const char *s) {
    qm_iovec_t iov = {s, strlen(s)};
    return qm_ring_put(r, &iov, 1, QM_NOWAIT);
}

static int64_t get_str(qm_ring_t *r, char *buf, size_t cap, int64_t deadline) {
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, deadline);
    if (rc) return rc;
    int64_t n = rec.len < cap ? (int64_t)rec.len : -1;
    if (n >= 0) {
        memcpy(buf, rec.data, rec.len);
        buf[rec.len] = 0;
    }
    qm_ring_get_end(r, &rec);
    return n;
}

static int file_count(void) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 0", check_dir);
    return system(cmd) == 0 ? 0 : 1;
}

static void create_then_open_attaches_the_same_ring(void) {
    qm_ring_t *a, *b;
    CHECK_RC(qm_ring_open("same", QM_CREATE_ONLY, 4096, 0, &a), 0);
    CHECK_RC(qm_ring_open("same", QM_OPEN_ONLY, 1 << 20, 0, &b), 0);
    CHECK(qm_ring_capacity(b) == 4096);   /* attaching keeps the original */
    CHECK_RC(put_str(a, "hi"), 0);
    char buf[8];
    CHECK(get_str(b, buf, sizeof buf, QM_NOWAIT) == 2 && strcmp(buf, "hi") == 0);
    qm_ring_close(a);
    qm_ring_close(b);
    CHECK_RC(qm_ring_unlink("same"), 0);
}

static void open_modes_report_exists_and_not_found(void) {
    qm_ring_t *a, *b;
    CHECK_RC(qm_ring_open("modes", QM_OPEN_ONLY, 4096, 0, &a), QM_ENOTFOUND);
    CHECK_RC(qm_ring_open("modes", QM_OPEN_OR_CREATE, 4096, 0, &a), 0);
    CHECK_RC(qm_ring_open("modes", QM_CREATE_ONLY, 4096, 0, &b), QM_EEXIST);
    CHECK(qm_ring_exists("modes") == 1);
    CHECK_RC(qm_ring_unlink("modes"), 0);
    CHECK(qm_ring_exists("modes") == 0);
    CHECK_RC(qm_ring_unlink("modes"), QM_ENOTFOUND);
    CHECK_RC(put_str(a, "still works after unlink"), 0);
    qm_ring_close(a);
}

static void created_file_is_private_whatever_the_umask(void) {
    mode_t old = umask(0);
    qm_ring_t *a;
    CHECK_RC(qm_ring_open("private", QM_CREATE_ONLY, 4096, 0, &a), 0);
    umask(old);
    char path[QM_PATH_MAX];
    CHECK(qm_ring_path("private", path, sizeof path) > 0);
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    qm_ring_close(a);
    qm_ring_unlink("private");
}

static void bad_names_are_refused_before_touching_files(void) {
    const char *bad[] = {"", "../x", "a/b", ".", "..", ".hidden", "-x", "a b", "é",
                         "x\ny", NULL};
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    qm_ring_t *r;
    for (int i = 0; bad[i]; i++) CHECK_RC(qm_ring_open(bad[i], QM_OPEN_OR_CREATE, 4096, 0, &r), QM_EINVAL);
    CHECK_RC(qm_ring_open(longname, QM_OPEN_OR_CREATE, 4096, 0, &r), QM_EINVAL);
    CHECK_RC(qm_ring_open(NULL, QM_OPEN_OR_CREATE, 4096, 0, &r), QM_EINVAL);
    CHECK(qm_ring_exists("../x") == QM_EINVAL);
    CHECK(file_count() == 0);
    longname[128] = 0;
    CHECK_RC(qm_name_check(longname), QM_OK);
    longname[129] = 'a';
}

static void foreign_or_open_files_are_refused(void) {
    char path[QM_PATH_MAX];
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("perm", QM_CREATE_ONLY, 4096, 0, &r), 0);
    qm_ring_close(r);
    CHECK(qm_ring_path("perm", path, sizeof path) > 0);
    CHECK(chmod(path, 0644) == 0);
    CHECK_RC(qm_ring_open("perm", QM_OPEN_ONLY, 4096, 0, &r), QM_EPERM);
    CHECK(chmod(path, 0600) == 0);
    CHECK_RC(qm_ring_open("perm", QM_OPEN_ONLY, 4096, 0, &r), 0);
    qm_ring_close(r);
    /* a second hard link could let another name alias ours */
    char link2[QM_PATH_MAX + 8];
    snprintf(link2, sizeof link2, "%s.lnk", path);
    CHECK(link(path, link2) == 0);
    CHECK_RC(qm_ring_open("perm", QM_OPEN_ONLY, 4096, 0, &r), QM_EPERM);
    unlink(link2);
    qm_ring_unlink("perm");
}

static void planted_symlink_is_never_followed(void) {
    char path[QM_PATH_MAX], canary[QM_PATH_MAX + 16];
    CHECK(qm_ring_path("sym", path, sizeof path) > 0);
    snprintf(canary, sizeof canary, "%s/canary", check_dir);
    int fd = open(canary, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, "keep", 4) == 4);
    close(fd);
    CHECK(symlink(canary, path) == 0);
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("sym", QM_OPEN_OR_CREATE, 4096, 0, &r), QM_EPERM);
    CHECK_RC(qm_ring_open("sym", QM_CREATE_ONLY, 4096, 0, &r), QM_EEXIST);
    struct stat st;
    CHECK(stat(canary, &st) == 0 && st.st_size == 4);
    unlink(path);
    unlink(canary);
}

static void corrupt_header_file_is_refused(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("hdr", QM_CREATE_ONLY, 4096, 0, &r), 0);
    qm_ring_close(r);
    char path[QM_PATH_MAX];
    qm_ring_path("hdr", path, sizeof path);
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    uint16_t major = 7;
    CHECK(pwrite(fd, &major, 2, offsetof(qm_header_t, format_major)) == 2);
    CHECK_RC(qm_ring_open("hdr", QM_OPEN_ONLY, 4096, 0, &r), QM_EINCOMPAT);
    CHECK(strstr(qm_last_error(), "7.1") && strstr(qm_last_error(), "1.x"));
    CHECK(ftruncate(fd, 8192) == 0);
    CHECK_RC(qm_ring_open("hdr", QM_OPEN_ONLY, 4096, 0, &r), QM_EINCOMPAT);
    major = 1;
    CHECK(pwrite(fd, &major, 2, offsetof(qm_header_t, format_major)) == 2);
    CHECK_RC(qm_ring_open("hdr", QM_OPEN_ONLY, 4096, 0, &r), QM_ECORRUPT);   /* size */
    close(fd);
    qm_ring_unlink("hdr");
}

static void creator_that_died_before_publishing_is_replaced(void) {
    /* a file exists, empty and unlocked: its creator died mid-creation */
    char path[QM_PATH_MAX];
    qm_ring_path("halfmade", path, sizeof path);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    CHECK(fd >= 0);
    close(fd);
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("halfmade", QM_OPEN_OR_CREATE, 4096, 0, &r), 0);
    CHECK_RC(put_str(r, "ok"), 0);
    qm_ring_close(r);
    qm_ring_unlink("halfmade");
}

/* Fork a child that runs fn(ring) and then SIGKILLs itself. */
static void child_dies_after(const char *name, void (*fn)(qm_ring_t *)) {
    pid_t pid = fork();
    if (pid == 0) {
        qm_ring_t *r;
        if (qm_ring_open(name, QM_OPEN_ONLY, 4096, 0, &r)) _exit(3);
        fn(r);
        raise(SIGKILL);
        _exit(4);
    }
    int status;
    waitpid(pid, &status, 0);
}

static void claim_and_die(qm_ring_t *r) {
    /* claim a record exactly as try_put does, then die before commit */
    uint64_t t = atomic_load(&r->ctl->tail.pos);
    _Atomic uint64_t *w = (_Atomic uint64_t *)(r->data + (t & (r->cap - 1)));
    atomic_store(&r->mb.me->inflight, t | QM_INFLIGHT_VALID);
    atomic_store(w, QM_WORD((uint32_t)(t >> r->cap_log2), QM_ST_WRITING, r->mb.slot, 1));
    atomic_store(&r->ctl->tail.pos, t + 64);
}

static void claim_and_die_later(qm_ring_t *r, int64_t when) {
    claim_and_die(r);
    while (qm_now_ns() < when) usleep(1000);
    raise(SIGKILL);
}

static void take_and_die(qm_ring_t *r) {
    qm_record_t rec;
    if (qm_ring_get_begin(r, &rec, QM_NOWAIT)) _exit(5);
}

static void dead_producer_record_is_skipped_not_delivered(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("deadprod", QM_CREATE_ONLY, 4096, 0, &r), 0);
    CHECK_RC(put_str(r, "before"), 0);
    child_dies_after("deadprod", claim_and_die);
    CHECK_RC(put_str(r, "after"), 0);
    char buf[16];
    CHECK(get_str(r, buf, sizeof buf, QM_NOWAIT) == 6 && strcmp(buf, "before") == 0);
    int64_t t0 = qm_now_ns();
    CHECK(get_str(r, buf, sizeof buf, t0 + 1000000000) == 5 && strcmp(buf, "after") == 0);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(r, &st), 0);
    CHECK(st.abandoned == 1);
    qm_ring_close(r);
    qm_ring_unlink("deadprod");
}

static void dead_consumer_record_space_is_reclaimed(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("deadcons", QM_CREATE_ONLY, 4096, 0, &r), 0);
    static char big[1000];
    memset(big, 'x', sizeof big - 1);
    CHECK_RC(put_str(r, big), 0);
    child_dies_after("deadcons", take_and_die);
    /* the ring is 4 KiB: filling it needs the dead reader's space back */
    int puts = 0;
    for (int i = 0; i < 8; i++) {
        qm_iovec_t iov = {big, 999};
        if (qm_ring_put(r, &iov, 1, qm_now_ns() + 200000000) == 0) puts++;
        char out[1000];
        if (get_str(r, out, sizeof out, QM_NOWAIT) != 999) break;
    }
    CHECK(puts == 8);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(r, &st), 0);
    CHECK(st.reclaimed == 1);
    /* the lost record is a finished task; the 8 got here are not, until done */
    uint64_t unfinished = 0;
    CHECK_RC(qm_ring_unfinished(r, &unfinished), 0);
    CHECK(unfinished == 8);
    CHECK_RC(qm_ring_task_done(r, 8), 0);
    CHECK_RC(qm_ring_join(r, QM_NOWAIT), 0);
    qm_ring_close(r);
    qm_ring_unlink("deadcons");
}

static void slot_of_dead_member_is_reused_after_settling_its_record(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("reuse", QM_CREATE_ONLY, 4096, 0, &r), 0);
    child_dies_after("reuse", claim_and_die);
    CHECK_RC(put_str(r, "after"), 0);
    /* a new member takes the dead one's slot and abandons its claim */
    qm_ring_t *n;
    CHECK_RC(qm_ring_open("reuse", QM_OPEN_ONLY, 4096, 0, &n), 0);
    CHECK(n->mb.slot == 2);
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(n, &st), 0);
    CHECK(st.abandoned == 1);
    char buf[16];
    CHECK(get_str(r, buf, sizeof buf, QM_NOWAIT) == 5);
    qm_ring_close(n);
    qm_ring_close(r);
    qm_ring_unlink("reuse");
}

static void forked_child_becomes_its_own_member(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("forked", QM_CREATE_ONLY, 4096, 0, &r), 0);
    uint32_t parent_slot = r->mb.slot;
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        /* same handle, inherited: must re-join under a new slot */
        int ok = put_str(r, "from child") == 0 && r->mb.slot != 0 && r->mb.slot != parent_slot;
        qm_ring_close(r);   /* must not release the parent's lock */
        char c = ok ? 'y' : 'n';
        if (write(pipefd[1], &c, 1) != 1) _exit(2);
        _exit(0);
    }
    char c = 0;
    CHECK(read(pipefd[0], &c, 1) == 1 && c == 'y');
    waitpid(pid, NULL, 0);
    close(pipefd[0]);
    close(pipefd[1]);
    CHECK(qm__member_alive(&r->mb, parent_slot));
    qm_ring_t *other;
    CHECK_RC(qm_ring_open("forked", QM_OPEN_ONLY, 4096, 0, &other), 0);
    CHECK(qm__member_alive(&other->mb, parent_slot));   /* parent's lock survived */
    char buf[16];
    CHECK(get_str(other, buf, sizeof buf, QM_NOWAIT) == 10);
    qm_ring_close(other);
    qm_ring_close(r);
    qm_ring_unlink("forked");
}

static void anonymous_ring_is_shared_by_descriptor_and_leaves_no_file(void) {
    qm_ring_t *a, *b;
    CHECK_RC(qm_ring_create_anonymous(4096, 3, &a), 0);
    CHECK(file_count() == 0);
    int fd = qm_ring_fd(a);
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_RC(qm_ring_open_fd(fd, &b), 0);
    CHECK(qm_ring_fd(b) != fd);   /* a description of its own */
    CHECK(b->mb.slot != a->mb.slot && qm_ring_maxsize(b) == 3);
    CHECK_RC(put_str(a, "anon"), 0);
    char buf[16];
    CHECK(get_str(b, buf, sizeof buf, QM_NOWAIT) == 4 && strcmp(buf, "anon") == 0);
    qm_ring_close(a);   /* the creator may go first */
    CHECK_RC(put_str(b, "still"), 0);
    CHECK(get_str(b, buf, sizeof buf, QM_NOWAIT) == 5);
    qm_ring_close(b);
    CHECK(qm_ring_fd(NULL) == QM_ECLOSED);
    CHECK(file_count() == 0);
}

static void killed_child_attached_by_descriptor_is_seen_dead(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_create_anonymous(4096, 0, &r), 0);
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        qm_ring_t *c;
        if (qm_ring_open_fd(qm_ring_fd(r), &c) != 0 || put_str(c, "child") != 0) _exit(2);
        if (write(ready[1], "y", 1) != 1) _exit(2);
        pause();   /* until SIGKILL */
        _exit(0);
    }
    char ch = 0;
    CHECK(read(ready[0], &ch, 1) == 1 && ch == 'y');
    qm_ring_stats_t st;
    CHECK_RC(qm_ring_stats(r, &st), 0);
    CHECK(st.members >= 2);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK_RC(qm_ring_stats(r, &st), 0);
    CHECK(st.members == 1);   /* the child's slot lock went with it */
    char buf[16];
    CHECK(get_str(r, buf, sizeof buf, QM_NOWAIT) == 5);
    close(ready[0]);
    close(ready[1]);
    qm_ring_close(r);
}

static void a_descriptor_that_is_no_ring_is_refused(void) {
    qm_ring_t *r = NULL;
    int fd = memfd_create("not-a-ring", MFD_CLOEXEC);
    CHECK(fd >= 0 && fchmod(fd, 0600) == 0 && ftruncate(fd, 1 << 20) == 0);
    CHECK(qm_ring_open_fd(fd, &r) == QM_ENOTREADY && r == NULL);   /* all zero: unpublished */
    CHECK(ftruncate(fd, 100) == 0);
    CHECK(qm_ring_open_fd(fd, &r) == QM_ECORRUPT && r == NULL);
    CHECK(fchmod(fd, 0644) == 0);
    CHECK(qm_ring_open_fd(fd, &r) == QM_EPERM && r == NULL);
    close(fd);
    CHECK(qm_ring_open_fd(fd, &r) < 0 && r == NULL);
}

static void dup_handle_works_after_unlink(void) {
    qm_ring_t *r, *d;
    CHECK_RC(qm_ring_open("dup", QM_CREATE_ONLY, 4096, 0, &r), 0);
    CHECK_RC(qm_ring_unlink("dup"), 0);
    CHECK_RC(qm_ring_dup(r, &d), 0);
    CHECK(d->mb.slot != r->mb.slot);
    CHECK_RC(put_str(d, "x"), 0);
    char buf[4];
    CHECK(get_str(r, buf, sizeof buf, QM_NOWAIT) == 1);
    qm_ring_close(d);
    qm_ring_close(r);
}

static void interrupted_handle_refuses_further_calls(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("intr", QM_CREATE_ONLY, 4096, 0, &r), 0);
    qm_ring_interrupt(r);
    char buf[4];
    CHECK(get_str(r, buf, sizeof buf, QM_FOREVER) == QM_ECLOSED);
    CHECK_RC(put_str(r, "x"), QM_ECLOSED);
    qm_ring_close(r);
    qm_ring_unlink("intr");
}


/* A consumer that dies holding a record must never wedge the ring, even
 * when its slot is taken again at once and it had put (variant 0) or
 * closed (variant 1) after taking the record. */
static void dead_reader_record_is_recovered_after_its_slot_is_reused(void) {
    for (int variant = 0; variant < 2; variant++) {
        qm_ring_t *a;
        CHECK_RC(qm_ring_open("slotreuse", QM_CREATE_ONLY, 4096, 0, &a), 0);
        char b[100] = {1};
        qm_iovec_t v = {b, sizeof b};
        CHECK_RC(qm_ring_put(a, &v, 1, QM_NOWAIT), 0);
        pid_t p = fork();
        if (p == 0) {
            qm_record_t rec;
            int rc = qm_ring_get_begin(a, &rec, QM_NOWAIT);
            if (variant == 0) rc |= qm_ring_put(a, &v, 1, QM_NOWAIT);
            else qm_ring_close(a);
            raise(SIGKILL);
            _exit(rc ? 9 : 0);
        }
        waitpid(p, NULL, 0);
        qm_ring_t *h;   /* takes the dead child's slot */
        CHECK_RC(qm_ring_open("slotreuse", QM_OPEN_ONLY, 0, 0, &h), 0);
        int moved = 0;
        for (int i = 0; i < 200; i++) {   /* 200 x 100 B through a 4 KiB ring */
            if (qm_ring_put(a, &v, 1, qm_now_ns() + 200000000) != 0) break;
            qm_record_t rec;
            if (qm_ring_get_begin(a, &rec, QM_NOWAIT) == 0) {
                qm_ring_get_end(a, &rec);
                moved++;
            }
        }
        CHECK(moved == 200);
        qm_ring_close(h);
        qm_ring_close(a);
        qm_ring_unlink("slotreuse");
    }
}

/* Producers blocked on a full ring keep waking the consumer; the consumer
 * must still notice, within its liveness slices, that the writer it waits
 * behind is dead. */
static void dead_writer_is_abandoned_while_producers_keep_waking_the_reader(void) {
    qm_ring_t *r;
    CHECK_RC(qm_ring_open("wakes", QM_CREATE_ONLY, 4096, 0, &r), 0);
    int64_t dies_at = qm_now_ns() + 150000000;
    pid_t writer = fork();
    if (writer == 0) {   /* claims the next record, lives 150 ms, dies mid-write */
        qm_ring_t *w;
        if (qm_ring_open("wakes", QM_OPEN_ONLY, 0, 0, &w)) _exit(3);
        claim_and_die_later(w, dies_at);
    }
    usleep(30000);
    pid_t kids[3];
    for (int i = 0; i < 3; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {   /* fill the ring, then block on it */
            qm_ring_t *mine;
            if (qm_ring_open("wakes", QM_OPEN_ONLY, 0, 0, &mine)) _exit(2);
            static char m[500];
            qm_iovec_t v = {m, sizeof m};
            for (int k = 0; k < 50; k++) qm_ring_put(mine, &v, 1, qm_now_ns() + 3000000000);
            _exit(0);
        }
    }
    qm_record_t rec;
    int rc = qm_ring_get_begin(r, &rec, qm_now_ns() + 3000000000);
    int64_t after_death = qm_now_ns() - dies_at;
    if (rc == 0) qm_ring_get_end(r, &rec);
    for (int i = 0; i < 3; i++) kill(kids[i], SIGKILL), waitpid(kids[i], NULL, 0);
    waitpid(writer, NULL, 0);
    fprintf(stderr, "  dead writer passed %.1f ms after its death\n", (double)after_death / 1e6);
    CHECK(rc == 0);
    CHECK(after_death > 0);              /* it did wait behind the live writer */
    CHECK(after_death < 1000000000);     /* liveness, not the 3 s deadline, ended it */
    qm_ring_close(r);
    qm_ring_unlink("wakes");
}

int main(void) {
    check_use_private_shm_dir("region");
    RUN(create_then_open_attaches_the_same_ring);
    RUN(open_modes_report_exists_and_not_found);
    RUN(created_file_is_private_whatever_the_umask);
    RUN(bad_names_are_refused_before_touching_files);
    RUN(foreign_or_open_files_are_refused);
    RUN(planted_symlink_is_never_followed);
    RUN(corrupt_header_file_is_refused);
    RUN(creator_that_died_before_publishing_is_replaced);
    RUN(dead_producer_record_is_skipped_not_delivered);
    RUN(dead_consumer_record_space_is_reclaimed);
    RUN(slot_of_dead_member_is_reused_after_settling_its_record);
    RUN(forked_child_becomes_its_own_member);
    RUN(dup_handle_works_after_unlink);
    RUN(anonymous_ring_is_shared_by_descriptor_and_leaves_no_file);
    RUN(killed_child_attached_by_descriptor_is_seen_dead);
    RUN(a_descriptor_that_is_no_ring_is_refused);
    RUN(interrupted_handle_refuses_further_calls);
    RUN(dead_reader_record_is_recovered_after_its_slot_is_reused);
    RUN(dead_writer_is_abandoned_while_producers_keep_waking_the_reader);
    CHECK_EXIT();
}
