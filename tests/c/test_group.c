/*
 * test_group.c - consumer-group state: claim order, acks, stale acks,
 * nack delays, the committed offset, the pending window, dead members
 * (sweep and slot takeover), ordered ownership, seeks and retention
 * jumps, persistence, reboots, and corrupt headers.  Every time is a
 * chosen CLOCK_MONOTONIC value: no sleeps, no timing assertions.
 */
#include "check.h"
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define SEC INT64_C(1000000000)
#define MS INT64_C(1000000)
#define T0 (100 * SEC)          /* "now" at the start of each test */
#define LEASE (30 * SEC)

static char dirbuf[400];
static const char *topic(const char *tag) {
    snprintf(dirbuf, sizeof dirbuf, "%s/%s", check_dir, tag);
    mkdir(dirbuf, 0700);
    return dirbuf;
}

static qm_group_config_t cfg_of(uint32_t partitions, uint32_t window, uint32_t flags) {
    qm_group_config_t c = {partitions, window, flags, NULL};
    return c;
}

static int open_group(const char *dir, uint32_t window, uint32_t flags, qm_group_t **g) {
    qm_group_config_t c = cfg_of(2, window, flags);
    return qm_group_open(dir, "workers", QM_OPEN_OR_CREATE, &c, g, NULL);
}

/* Claim exactly one record of partition 0. */
static int claim1(qm_group_t *g, uint64_t end, int64_t now, qm_group_lease_t *l) {
    size_t got = 0;
    int rc = qm_group_claim(g, 0, end, now, LEASE, 0, l, 1, &got);
    return rc == QM_OK && got != 1 ? QM_ECORRUPT : rc;
}

static uint64_t committed(qm_group_t *g, uint32_t p) {
    qm_group_partition_stats_t st;
    if (qm_group_partition_stats(g, p, &st)) return UINT64_MAX;
    return st.committed;
}

static void claims_deliver_offsets_in_order_up_to_end(void) {
    qm_group_t *g;
    int created = 0;
    qm_group_config_t c = cfg_of(2, 0, 0);
    CHECK_RC(qm_group_open(topic("order"), "workers", QM_CREATE_ONLY, &c, &g, &created), 0);
    CHECK(created == 1);
    qm_group_lease_t l[8];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 5, T0, LEASE, 0, l, 3, &got), 0);
    CHECK(got == 3);
    for (size_t i = 0; i < 3; i++)
        CHECK(l[i].offset == i && l[i].partition == 0 && l[i].delivery_count == 1);
    CHECK_RC(qm_group_claim(g, 0, 5, T0, LEASE, 0, l, 8, &got), 0);
    CHECK(got == 2 && l[0].offset == 3 && l[1].offset == 4);
    CHECK_RC(qm_group_claim(g, 0, 5, T0, LEASE, 0, l, 8, &got), QM_EAGAIN);   /* end reached */
    CHECK(got == 0);
    CHECK_RC(qm_group_claim(g, 1, 1, T0, LEASE, 0, l, 8, &got), 0);   /* partitions apart */
    CHECK(got == 1 && l[0].partition == 1 && l[0].offset == 0);
    CHECK_RC(qm_group_claim(g, 2, 1, T0, LEASE, 0, l, 8, &got), QM_EINVAL);
    CHECK_RC(qm_group_claim(g, 0, UINT64_C(1) << 48, T0, LEASE, 0, l, 8, &got), QM_EINVAL);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    CHECK(st.cursor == 5 && st.committed == 0 && st.pending == 5 && st.leased == 5);
    qm_group_close(g);
}

static void committed_advances_only_over_the_contiguous_acked_prefix(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("prefix"), 0, 0, &g), 0);
    qm_group_lease_t l[6];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 6, T0, LEASE, 0, l, 6, &got), 0);
    CHECK(got == 6);
    CHECK_RC(qm_group_ack(g, 0, l[1].offset, l[1].epoch), 0);
    CHECK_RC(qm_group_ack(g, 0, l[3].offset, l[3].epoch), 0);
    CHECK(committed(g, 0) == 0);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), 0);
    CHECK(committed(g, 0) == 2);              /* 0 and 1; 2 is still leased */
    int status[3];
    qm_group_lease_t rest[3] = {l[2], l[5], l[4]};
    CHECK_RC(qm_group_ack_many(g, rest, 3, status), 0);
    CHECK(status[0] == 0 && status[1] == 0 && status[2] == 0);
    CHECK(committed(g, 0) == 6);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    CHECK(st.pending == 0 && st.acked_ahead == 0);
    qm_group_close(g);
}

static void stale_ack_after_expiry_and_redelivery_is_refused(void) {
    const char *dir = topic("stale");
    qm_group_t *a, *b;
    CHECK_RC(open_group(dir, 0, 0, &a), 0);
    CHECK_RC(open_group(dir, 0, 0, &b), 0);
    qm_group_lease_t la, lb;
    CHECK_RC(claim1(a, 1, T0, &la), 0);
    CHECK_RC(claim1(b, 1, T0 + LEASE - 1, &lb), QM_EAGAIN);   /* lease still running */
    CHECK_RC(claim1(b, 1, T0 + LEASE, &lb), 0);               /* expired: redelivered */
    CHECK(lb.offset == 0 && lb.delivery_count == 2 && lb.epoch != la.epoch);
    CHECK_RC(qm_group_ack(a, 0, la.offset, la.epoch), QM_ESTALE);
    CHECK_RC(qm_group_nack(a, 0, la.offset, la.epoch, T0), QM_ESTALE);
    CHECK_RC(qm_group_extend(a, 0, la.offset, la.epoch, T0 + 2 * LEASE), QM_ESTALE);
    CHECK(committed(a, 0) == 0);
    CHECK_RC(qm_group_ack(b, 0, lb.offset, lb.epoch), 0);
    CHECK_RC(qm_group_ack(b, 0, lb.offset, lb.epoch), QM_ESTALE);   /* never twice */
    CHECK(committed(a, 0) == 1);
    CHECK_RC(qm_group_ack(a, 0, lb.offset + QM_GROUP_DEFAULT_WINDOW, lb.epoch), QM_EINVAL);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(a, 0, &st), 0);
    CHECK(st.redelivered == 1);
    qm_group_close(a);
    qm_group_close(b);
}

static void a_late_ack_before_redelivery_still_counts(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("late"), 0, 0, &g), 0);
    qm_group_lease_t l;
    CHECK_RC(claim1(g, 1, T0, &l), 0);
    CHECK_RC(qm_group_ack(g, 0, l.offset, l.epoch), 0);   /* expired, but nobody took it */
    CHECK_RC(claim1(g, 1, T0 + 2 * LEASE, &l), QM_EAGAIN);
    qm_group_close(g);
}

static void extend_moves_the_deadline_and_keeps_the_epoch(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("extend"), 0, 0, &g), 0);
    qm_group_lease_t l, again;
    CHECK_RC(claim1(g, 1, T0, &l), 0);
    CHECK_RC(qm_group_extend(g, 0, l.offset, l.epoch, T0 + 3 * LEASE), 0);
    CHECK_RC(claim1(g, 1, T0 + 2 * LEASE, &again), QM_EAGAIN);
    CHECK_RC(qm_group_ack(g, 0, l.offset, l.epoch), 0);
    qm_group_close(g);
}

static void nack_delay_is_honoured_and_counts_the_next_delivery(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("nack"), 0, 0, &g), 0);
    qm_group_lease_t l, r;
    CHECK_RC(claim1(g, 2, T0, &l), 0);
    CHECK_RC(qm_group_nack(g, 0, l.offset, l.epoch, T0 + 50 * MS), 0);
    int64_t due;
    CHECK_RC(qm_group_next_due(g, 0, &due), 0);
    CHECK(due <= T0 + 50 * MS);
    CHECK_RC(claim1(g, 2, T0 + 49 * MS, &r), 0);   /* the delayed one waits: 1 is new */
    CHECK(r.offset == 1 && r.delivery_count == 1);
    CHECK_RC(claim1(g, 2, T0 + 49 * MS, &r), QM_EAGAIN);
    CHECK_RC(claim1(g, 2, T0 + 50 * MS, &r), 0);
    CHECK(r.offset == 0 && r.delivery_count == 2);
    CHECK_RC(qm_group_ack(g, 0, l.offset, l.epoch), QM_ESTALE);
    CHECK_RC(qm_group_nack(g, 0, r.offset, r.epoch, T0), 0);   /* due at once */
    CHECK_RC(claim1(g, 2, T0 + 51 * MS, &r), 0);
    CHECK(r.offset == 0 && r.delivery_count == 3);
    qm_group_close(g);
}

static void full_window_is_efull_until_the_oldest_is_acked(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("full"), 16, 0, &g), 0);
    qm_group_lease_t l[20];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l, 20, &got), 0);
    CHECK(got == 16);
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l + 16, 4, &got), QM_EFULL);
    CHECK_RC(qm_group_ack(g, 0, l[5].offset, l[5].epoch), 0);   /* not the oldest */
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l + 16, 4, &got), QM_EFULL);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), 0);
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l + 16, 4, &got), 0);
    CHECK(got == 1 && l[16].offset == 16);   /* entry 0 reused for offset 16 */
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), QM_ESTALE);
    CHECK_RC(qm_group_ack(g, 0, l[16].offset, l[16].epoch), 0);
    qm_group_close(g);
}

static void complete_claims_are_done_at_delivery_and_never_redelivered(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("amo"), 0, 0, &g), 0);
    qm_group_lease_t l[4];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 4, T0, LEASE, QM_CLAIM_COMPLETE, l, 4, &got), 0);
    CHECK(got == 4 && l[3].offset == 3);
    CHECK(committed(g, 0) == 4);
    CHECK_RC(qm_group_claim(g, 0, 4, T0 + 10 * LEASE, LEASE, 0, l, 4, &got), QM_EAGAIN);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), QM_ESTALE);
    qm_group_close(g);
}

/* Fork a member that opens the group, claims `n` records of partition 0 at
 * T0 and dies by SIGKILL holding them. */
static int child_claims_and_dies(const char *dir, uint32_t flags, size_t n) {
    pid_t pid = fork();
    if (pid == 0) {
        qm_group_t *mine;
        qm_group_lease_t l[8];
        size_t got;
        if (open_group(dir, 0, flags, &mine)) _exit(2);
        if (qm_group_claim(mine, 0, 10, T0, LEASE, 0, l, n, &got) || got != n) _exit(3);
        raise(SIGKILL);
        _exit(4);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? 0 : -1;
}

static void dead_members_leases_are_redelivered_at_the_next_sweep(void) {
    const char *dir = topic("dead");
    qm_group_t *g;
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    CHECK(child_claims_and_dies(dir, 0, 3) == 0);
    qm_group_lease_t l[4];
    size_t got;
    /* within the sweep period the leases look held: offset 3 is next */
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + 1 * MS, LEASE, 0, l, 1, &got), 0);
    CHECK(got == 1 && l[0].offset == 3);
    /* a sweep period later (long before the lease would expire) */
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + QM_GROUP_SWEEP_NS + 2 * MS, LEASE, 0, l, 4, &got), 0);
    CHECK(got == 4);
    for (size_t i = 0; i < 3; i++) CHECK(l[i].offset == i && l[i].delivery_count == 2);
    CHECK(l[3].offset == 4 && l[3].delivery_count == 1);
    qm_group_stats_t gs;
    CHECK_RC(qm_group_stats(g, &gs), 0);
    CHECK(gs.sweeps == 1 && gs.members == 1);
    qm_group_close(g);
}

/* A member killed inside redeliver(), after swapping next_due to "none" and
 * before lowering it again (model/group.pml found this): the sweep that
 * settles it restores the bound, so a pending nacked record is redelivered
 * instead of waiting for a deadline nobody remembers. */
static void a_member_dying_mid_scan_does_not_hide_pending_deadlines(void) {
    const char *dir = topic("midscan");
    qm_group_t *g;
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    qm_group_lease_t l[2];
    CHECK_RC(claim1(g, 1, T0, l), 0);
    CHECK_RC(qm_group_nack(g, 0, l[0].offset, l[0].epoch, T0), 0);   /* due at T0 */
    pid_t pid = fork();
    if (pid == 0) {
        qm_group_t *mine;
        qm_group_lease_t cl[1];
        size_t got;
        if (open_group(dir, 0, 0, &mine)) _exit(2);
        /* a claim of the other partition makes it a consumer member */
        if (qm_group_claim(mine, 1, 0, T0, LEASE, 0, cl, 1, &got) != QM_EAGAIN) _exit(3);
        /* redeliver()'s [G6] swap, then death before its lower_due */
        atomic_store(&mine->parts[0].next_due, INT64_MAX);
        raise(SIGKILL);
        _exit(4);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    size_t got = 0;
    CHECK_RC(qm_group_claim(g, 0, 1, T0 + QM_GROUP_SWEEP_NS + 2 * MS, LEASE, 0, l, 1, &got), 0);
    CHECK(got == 1 && l[0].offset == 0 && l[0].delivery_count == 2);
    qm_group_close(g);
}

/* A member that forked a child (which lives on, touching nothing) and then
 * died is dead: neither the child's copy of its descriptor nor its copy of
 * the mapping may keep the member's liveness lock. */
static void a_dead_member_whose_forked_child_lives_on_is_still_dead(void) {
    const char *dir = topic("deadfork");
    qm_group_t *g;
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    int pipefd[2], ready[2];
    CHECK(pipe(pipefd) == 0 && pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        qm_group_t *mine;
        qm_group_lease_t l[2];
        size_t got;
        char c = 0;
        if (open_group(dir, 0, 0, &mine)) _exit(2);
        if (qm_group_claim(mine, 0, 10, T0, LEASE, 0, l, 2, &got) || got != 2) _exit(3);
        pid_t helper = fork();
        if (helper == 0) {   /* the helper: running (fork handlers done), waits for the end */
            close(pipefd[1]);
            (void)!write(ready[1], &c, 1);
            (void)!read(pipefd[0], &c, 1);
            _exit(0);
        }
        (void)!read(ready[0], &c, 1);
        raise(SIGKILL);
        _exit(4);
    }
    close(pipefd[0]);
    close(ready[0]);
    close(ready[1]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    qm_group_lease_t l[4];
    size_t got = 0;
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + QM_GROUP_SWEEP_NS + 2 * MS, LEASE, 0, l, 4, &got), 0);
    CHECK(got == 4 && l[0].offset == 0 && l[0].delivery_count == 2 && l[1].offset == 1 &&
          l[1].delivery_count == 2);
    close(pipefd[1]);   /* the helper exits */
    qm_group_close(g);
}

static void taking_a_dead_members_slot_releases_its_leases(void) {
    const char *dir = topic("takeover");
    qm_group_t *g, *h;
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    CHECK(child_claims_and_dies(dir, 0, 2) == 0);
    CHECK_RC(open_group(dir, 0, 0, &h), 0);   /* takes the dead child's slot */
    qm_group_stats_t gs;
    CHECK_RC(qm_group_stats(h, &gs), 0);
    CHECK(gs.member_slot == 2 && gs.sweeps == 0);
    qm_group_lease_t l[2];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + 1 * MS, LEASE, 0, l, 2, &got), 0);   /* no sweep */
    CHECK(got == 2 && l[0].offset == 0 && l[0].delivery_count == 2 && l[1].offset == 1);
    qm_group_close(h);
    qm_group_close(g);
}

static void closing_a_handle_makes_its_leases_deliverable(void) {
    const char *dir = topic("close");
    qm_group_t *a, *b;
    CHECK_RC(open_group(dir, 0, 0, &a), 0);
    CHECK_RC(open_group(dir, 0, 0, &b), 0);
    qm_group_lease_t l[2];
    size_t got;
    CHECK_RC(qm_group_claim(a, 0, 2, T0, LEASE, 0, l, 2, &got), 0);
    qm_group_close(a);
    CHECK_RC(qm_group_claim(b, 0, 2, T0 + 1 * MS, LEASE, 0, l, 2, &got), 0);
    CHECK(got == 2 && l[0].delivery_count == 2 && l[1].delivery_count == 2);
    qm_group_close(b);
}

static void ordered_partition_has_one_owner_and_moves_when_it_dies(void) {
    const char *dir = topic("ordered");
    qm_group_t *g, *h;
    CHECK_RC(open_group(dir, 0, QM_GROUP_ORDERED, &g), 0);
    CHECK(child_claims_and_dies(dir, QM_GROUP_ORDERED, 1) == 0);
    qm_group_lease_t l[4];
    size_t got;
    /* the dead owner is not swept yet: nothing for us */
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + 1 * MS, LEASE, 0, l, 4, &got), QM_EAGAIN);
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + QM_GROUP_SWEEP_NS + 2 * MS, LEASE, 0, l, 4, &got), 0);
    CHECK(got == 1 && l[0].offset == 0 && l[0].delivery_count == 2);   /* one in flight */
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    qm_group_stats_t gs;
    CHECK_RC(qm_group_stats(g, &gs), 0);
    CHECK(st.owner_slot == gs.member_slot && st.owner_epoch == 2);
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + 1 * SEC, LEASE, 0, l + 1, 1, &got), QM_EAGAIN);
    CHECK_RC(qm_group_open(dir, "workers", QM_OPEN_ONLY, NULL, &h, NULL), 0);
    CHECK_RC(qm_group_claim(h, 0, 10, T0 + 1 * SEC, LEASE, 0, l + 1, 1, &got), QM_EAGAIN);
    CHECK_RC(qm_group_acquire(h, 0), QM_EAGAIN);   /* owner alive */
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), 0);
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + 1 * SEC, LEASE, 0, l + 1, 4, &got), 0);
    CHECK(got == 1 && l[1].offset == 1);
    qm_group_close(g);   /* ownership moves; offset 1 is redelivered in order */
    CHECK_RC(qm_group_claim(h, 0, 10, T0 + 1 * SEC, LEASE, 0, l + 2, 4, &got), 0);
    CHECK(got == 1 && l[2].offset == 1 && l[2].delivery_count == 2);
    CHECK_RC(qm_group_partition_stats(h, 0, &st), 0);
    CHECK(st.owner_epoch == 3);
    CHECK_RC(qm_group_release(h, 0), 0);
    CHECK_RC(qm_group_partition_stats(h, 0, &st), 0);
    CHECK(st.owner_slot == 0);
    qm_group_close(h);
}

static void state_survives_every_handle_closing(void) {
    const char *dir = topic("reopen");
    qm_group_t *g;
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    qm_group_lease_t l[5];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 10, T0, LEASE, 0, l, 5, &got), 0);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), 0);
    CHECK_RC(qm_group_ack(g, 0, l[1].offset, l[1].epoch), 0);
    CHECK_RC(qm_group_nack(g, 0, l[2].offset, l[2].epoch, T0 + 10 * SEC), 0);
    qm_group_close(g);
    int created = 1;
    CHECK_RC(qm_group_open(dir, "workers", QM_OPEN_ONLY, NULL, &g, &created), 0);
    CHECK(created == 0);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    CHECK(st.committed == 2 && st.cursor == 5 && st.delayed == 3);
    CHECK_RC(qm_group_claim(g, 0, 10, T0 + 1 * SEC, LEASE, 0, l, 5, &got), 0);
    CHECK(got == 5 && l[0].offset == 3 && l[0].delivery_count == 2);   /* released at close */
    CHECK(l[1].offset == 4 && l[2].offset == 5 && l[2].delivery_count == 1);
    qm_group_config_t c;
    CHECK_RC(qm_group_config(g, &c), 0);
    CHECK(c.partitions == 2 && c.window == QM_GROUP_DEFAULT_WINDOW && c.flags == 0);
    qm_group_close(g);
}

static void start_offsets_apply_at_creation_only(void) {
    const char *dir = topic("start");
    uint64_t start[2] = {7, 42};
    qm_group_config_t c = {2, 0, 0, start};
    qm_group_t *g;
    CHECK_RC(qm_group_open(dir, "late", QM_CREATE_ONLY, &c, &g, NULL), 0);
    CHECK(committed(g, 0) == 7 && committed(g, 1) == 42);
    qm_group_close(g);
    start[0] = 0;
    CHECK_RC(qm_group_open(dir, "late", QM_OPEN_OR_CREATE, &c, &g, NULL), 0);
    CHECK(committed(g, 0) == 7);
    qm_group_close(g);
    CHECK_RC(qm_group_open(dir, "late", QM_CREATE_ONLY, &c, &g, NULL), QM_EEXIST);
    CHECK_RC(qm_group_open(dir, "../x", QM_OPEN_OR_CREATE, &c, &g, NULL), QM_EINVAL);
    CHECK_RC(qm_group_open(dir, "nope", QM_OPEN_ONLY, NULL, &g, NULL), QM_ENOTFOUND);
    c.window = 24;
    CHECK_RC(qm_group_open(dir, "odd", QM_CREATE_ONLY, &c, &g, NULL), QM_EINVAL);
}

static void seek_replays_and_makes_old_leases_harmless(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("seek"), 0, 0, &g), 0);
    qm_group_lease_t l[4], r[4];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l, 4, &got), 0);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), 0);
    CHECK_RC(qm_group_seek(g, 0, 50), 0);
    CHECK(committed(g, 0) == 50);
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, r, 1, &got), 0);
    CHECK(r[0].offset == 50);
    CHECK_RC(qm_group_seek(g, 0, 0), 0);   /* replay from the start */
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, r, 4, &got), 0);
    CHECK(got == 4 && r[0].offset == 0 && r[0].delivery_count == 1 && r[3].offset == 3);
    for (int i = 0; i < 4; i++) CHECK_RC(qm_group_ack(g, 0, l[i].offset, l[i].epoch), QM_ESTALE);
    CHECK_RC(qm_group_ack_many(g, r, 4, NULL), 0);
    CHECK(committed(g, 0) == 4);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    CHECK(st.seeks == 2);
    qm_group_close(g);
}

static void position_words(qm_group_t *g, uint32_t p, uint64_t *cw, uint64_t *mw) {
    *cw = atomic_load(&g->parts[p].cursor.pos);
    *mw = atomic_load(&g->parts[p].committed.pos);
}

/* The stress failure (an ack accepted twice, then committed stuck for good):
 * a claimer reads cursor c and stalls; meanwhile c is claimed, acked and
 * committed and its entry reused by c + W.  The stalled claimer used to
 * take that entry (its word is not tagged for c, so it looked "older"):
 * it re-delivered c, done already, and wiped out the lease or the DONE of
 * c + W.  It must notice its position is stale and claim from the cursor. */
static void a_claimer_with_a_stale_cursor_never_takes_a_reused_entry(void) {
    const char *dir = topic("stalecursor");
    qm_group_t *a, *b;
    CHECK_RC(open_group(dir, 16, 0, &a), 0);
    CHECK_RC(open_group(dir, 16, 0, &b), 0);
    uint64_t cw, mw;
    position_words(a, 0, &cw, &mw);   /* a reads cursor 0, committed 0 ... and stalls */
    qm_group_lease_t l[16], x[16];
    size_t got;
    CHECK_RC(qm_group_claim(b, 0, 100, T0, LEASE, 0, l, 16, &got), 0);   /* 0..15 */
    CHECK(got == 16);
    CHECK_RC(qm_group_ack_many(b, l, 3, NULL), 0);
    CHECK(committed(b, 0) == 3);
    CHECK_RC(qm_group_claim(b, 0, 100, T0, LEASE, 0, x, 2, &got), 0);   /* 16, 17: entries 0, 1 */
    CHECK(got == 2 && x[0].offset == 16 && x[1].offset == 17);
    CHECK_RC(qm_group_ack(b, 0, 16, x[0].epoch), 0);   /* entry 0: DONE for 16, not committed */
    /* a goes on from its old position: offsets 0 and 1 are long done */
    qm_group_lease_t s[2];
    CHECK_RC(qm__group_claim_from(a, 0, cw, mw, 100, T0, LEASE, s, 2, &got), 0);
    CHECK(got == 1 && s[0].offset == 18 && s[0].delivery_count == 1);   /* the window allows one */
    CHECK_RC(qm_group_ack(b, 0, 17, x[1].epoch), 0);   /* b's lease of 17 is intact */
    CHECK_RC(qm_group_ack(a, 0, 18, s[0].epoch), 0);
    CHECK_RC(qm_group_ack_many(b, l + 3, 13, NULL), 0);
    CHECK(committed(a, 0) == 19);   /* 16's DONE was kept: nothing stalls */
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(a, 0, &st), 0);
    CHECK(st.cursor == 19 && st.pending == 0 && st.redelivered == 0);
    qm_group_close(a);
    qm_group_close(b);
}

/* The same across a seek: the entry now holds offset 0 of the new gen. */
static void a_claimer_with_a_position_from_before_a_seek_never_takes_a_new_lease(void) {
    const char *dir = topic("staleseek");
    qm_group_t *a, *b;
    CHECK_RC(open_group(dir, 16, 0, &a), 0);
    CHECK_RC(open_group(dir, 16, 0, &b), 0);
    qm_group_lease_t l, n, s[2];
    size_t got;
    CHECK_RC(claim1(b, 100, T0, &l), 0);
    uint64_t cw, mw;
    position_words(a, 0, &cw, &mw);   /* gen 0, cursor 1 */
    CHECK_RC(qm_group_ack(b, 0, 0, l.epoch), 0);
    CHECK_RC(qm_group_seek(b, 0, 1), 0);   /* gen 1, committed = cursor = 1 */
    CHECK_RC(claim1(b, 100, T0, &n), 0);    /* entry 1: LEASED for offset 1 of gen 1 */
    CHECK(n.offset == 1);
    CHECK_RC(qm__group_claim_from(a, 0, cw, mw, 100, T0, LEASE, s, 1, &got), 0);
    CHECK(got == 1 && s[0].offset == 2);
    CHECK_RC(qm_group_ack(b, 0, 1, n.epoch), 0);
    CHECK_RC(qm_group_ack(a, 0, 2, s[0].epoch), 0);
    CHECK(committed(a, 0) == 3);
    qm_group_close(a);
    qm_group_close(b);
}

static void retention_jump_skips_forward_and_counts_what_was_lost(void) {
    qm_group_t *g;
    CHECK_RC(open_group(topic("skip"), 0, 0, &g), 0);
    qm_group_lease_t l[5];
    size_t got;
    uint64_t skipped;
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l, 5, &got), 0);
    CHECK_RC(qm_group_ack(g, 0, l[0].offset, l[0].epoch), 0);
    CHECK_RC(qm_group_ack(g, 0, l[2].offset, l[2].epoch), 0);
    CHECK_RC(qm_group_skip_to(g, 0, 3, &skipped), 0);
    CHECK(skipped == 1 && committed(g, 0) == 3);   /* offset 1 was lost */
    CHECK_RC(qm_group_skip_to(g, 0, 2, &skipped), 0);   /* behind: nothing */
    CHECK(skipped == 0 && committed(g, 0) == 3);
    CHECK_RC(qm_group_skip_to(g, 0, 8, &skipped), 0);
    CHECK(skipped == 5);   /* 3 and 4 leased, 5..7 never delivered */
    CHECK_RC(qm_group_claim(g, 0, 100, T0, LEASE, 0, l, 1, &got), 0);
    CHECK(l[0].offset == 8);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    CHECK(st.skipped == 6 && st.cursor == 9);
    CHECK_RC(qm_group_count_dead_lettered(g, 0, 2), 0);
    CHECK_RC(qm_group_partition_stats(g, 0, &st), 0);
    CHECK(st.dead_lettered == 2);
    qm_group_close(g);
}

static uint8_t *map_group(const char *dir, const char *group, uint64_t *len) {
    char path[600];
    snprintf(path, sizeof path, "%s/groups/%s.grp", dir, group);
    int fd = open(path, O_RDWR);
    if (fd < 0) return NULL;
    struct stat st;
    fstat(fd, &st);
    *len = (uint64_t)st.st_size;
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static void boot_id_change_expires_every_lease_and_delay(void) {
    const char *dir = topic("reboot");
    qm_group_t *g;
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    qm_group_lease_t l[2];
    size_t got;
    CHECK_RC(qm_group_claim(g, 0, 10, T0, LEASE, 0, l, 2, &got), 0);
    CHECK_RC(qm_group_nack(g, 0, l[0].offset, l[0].epoch, T0 + 3600 * SEC), 0);
    qm_group_close(g);
    CHECK_RC(open_group(dir, 0, 0, &g), 0);   /* same boot: the delay holds */
    CHECK_RC(claim1(g, 10, T0 + 1 * SEC, &l[0]), 0);
    CHECK(l[0].offset == 1);   /* released when its handle closed */
    qm_group_close(g);
    uint64_t len;
    qm_group_ctl_t *c = (qm_group_ctl_t *)map_group(dir, "workers", &len);
    CHECK(c);
    atomic_fetch_xor(&c->boot_id[0], 1);   /* as if written under another boot */
    munmap(c, len);
    CHECK_RC(open_group(dir, 0, 0, &g), 0);
    qm_group_stats_t gs;
    CHECK_RC(qm_group_stats(g, &gs), 0);
    CHECK(gs.reboots == 1);
    CHECK_RC(qm_group_claim(g, 0, 10, 5 * SEC, LEASE, 0, l, 2, &got), 0);   /* a new clock */
    CHECK(got == 2 && l[0].offset == 0 && l[0].delivery_count == 2);
    CHECK(l[1].offset == 1 && l[1].delivery_count == 3);
    qm_group_close(g);
}

static void corrupt_header_fields_are_rejected(void) {
    const char *dir = topic("corrupt");
    qm_group_t *g;
    CHECK_RC(open_group(dir, 16, 0, &g), 0);
    qm_group_close(g);
    uint64_t len;
    uint8_t *file = map_group(dir, "workers", &len);
    CHECK(file);
    CHECK(len == qm__group_file_size(2, 4));
    static uint8_t img[4096];
    qm_group_config_t got;
    memcpy(img, file, sizeof img);
    CHECK_RC(qm__group_ctl_check(img, sizeof img, len, &got), 0);
    CHECK(got.partitions == 2 && got.window == 16);
    qm_group_ctl_t *c = (qm_group_ctl_t *)img;
    qm_header_t *h = &c->header;
#define MUTATE(stmt, want)                                                   \
    do {                                                                     \
        memcpy(img, file, sizeof img);                                       \
        stmt;                                                                \
        CHECK_RC(qm__group_ctl_check(img, sizeof img, len, &got), want);     \
    } while (0)
    MUTATE(atomic_store(&h->magic, 1), QM_ECORRUPT);
    MUTATE(atomic_store(&h->magic, __builtin_bswap64(QM_MAGIC_GROUP)), QM_EINCOMPAT);
    MUTATE(h->format_major = 9, QM_EINCOMPAT);
    MUTATE(h->layout_fingerprint ^= 2, QM_EINCOMPAT);
    MUTATE(h->feature_flags = 1, QM_EINCOMPAT);
    MUTATE(h->object_kind = QM_KIND_LOG, QM_EINCOMPAT);
    MUTATE(h->reserved[3] = 1, QM_EINCOMPAT);
    MUTATE(c->flags = 6, QM_EINCOMPAT);
    MUTATE(h->header_bytes = 100, QM_ECORRUPT);
    MUTATE(h->members_offset = 0, QM_ECORRUPT);
    MUTATE(h->member_slots = 2048, QM_ECORRUPT);
    MUTATE(h->total_bytes += 4096, QM_ECORRUPT);
    MUTATE(h->data_offset = 0, QM_ECORRUPT);
    MUTATE(h->data_bytes = 1, QM_ECORRUPT);
    MUTATE(h->capacity_log2 = 5, QM_ECORRUPT);
    MUTATE(c->partitions = 3, QM_ECORRUPT);          /* size no longer matches */
    MUTATE(c->partitions = 0, QM_ECORRUPT);
    MUTATE(c->partitions = UINT32_MAX, QM_ECORRUPT);
    MUTATE(c->window_log2 = 63, QM_ECORRUPT);
    MUTATE(c->window_log2 = 5, QM_ECORRUPT);
    MUTATE(c->settled_offset = 0, QM_ECORRUPT);
    MUTATE(c->parts_offset = 4096, QM_ECORRUPT);
    MUTATE(c->entries_offset = len, QM_ECORRUPT);
#undef MUTATE
    CHECK_RC(qm__group_ctl_check(img, 100, len, &got), QM_ECORRUPT);
    CHECK_RC(qm__group_ctl_check(file, sizeof img, len - 16, &got), QM_ECORRUPT);
    /* the same through open, on the file itself */
    qm_group_ctl_t *fc = (qm_group_ctl_t *)file;
    fc->window_log2 = 12;
    CHECK_RC(qm_group_open(dir, "workers", QM_OPEN_ONLY, NULL, &g, NULL), QM_ECORRUPT);
    fc->window_log2 = 4;
    /* a cursor a peer threw far ahead is an error, never a wild index */
    qm_group_part_t *pt = (qm_group_part_t *)(file + QM_GROUP_PARTS_OFFSET);
    uint64_t saved = atomic_load(&pt->cursor.pos);
    atomic_store(&pt->cursor.pos, QM_GPOS(QM_GPOS_GEN(saved), 1000));
    CHECK_RC(qm_group_open(dir, "workers", QM_OPEN_ONLY, NULL, &g, NULL), 0);
    qm_group_lease_t l;
    size_t n;
    CHECK_RC(qm_group_claim(g, 0, 2000, T0, LEASE, 0, &l, 1, &n), QM_ECORRUPT);
    qm_group_partition_stats_t st;
    CHECK_RC(qm_group_partition_stats(g, 0, &st), QM_ECORRUPT);
    atomic_store(&pt->cursor.pos, saved);
    /* a garbage entry word at the committed offset stops the window, cleanly */
    qm_group_entry_t *e = (qm_group_entry_t *)(file + fc->entries_offset);
    for (int i = 0; i < 16; i++) atomic_store(&e[i].word, ~UINT64_C(0));
    CHECK_RC(qm_group_claim(g, 0, 2000, T0, LEASE, 0, &l, 1, &n), 0);
    qm_group_close(g);
    munmap(file, len);
    /* a file that is not private is refused */
    char path[600];
    snprintf(path, sizeof path, "%s/groups/workers.grp", dir);
    CHECK(chmod(path, 0640) == 0);
    CHECK_RC(qm_group_open(dir, "workers", QM_OPEN_ONLY, NULL, &g, NULL), QM_EPERM);
}

int main(void) {
    check_use_private_shm_dir("group");
    RUN(claims_deliver_offsets_in_order_up_to_end);
    RUN(committed_advances_only_over_the_contiguous_acked_prefix);
    RUN(stale_ack_after_expiry_and_redelivery_is_refused);
    RUN(a_late_ack_before_redelivery_still_counts);
    RUN(extend_moves_the_deadline_and_keeps_the_epoch);
    RUN(nack_delay_is_honoured_and_counts_the_next_delivery);
    RUN(full_window_is_efull_until_the_oldest_is_acked);
    RUN(complete_claims_are_done_at_delivery_and_never_redelivered);
    RUN(dead_members_leases_are_redelivered_at_the_next_sweep);
    RUN(a_member_dying_mid_scan_does_not_hide_pending_deadlines);
    RUN(a_dead_member_whose_forked_child_lives_on_is_still_dead);
    RUN(taking_a_dead_members_slot_releases_its_leases);
    RUN(closing_a_handle_makes_its_leases_deliverable);
    RUN(ordered_partition_has_one_owner_and_moves_when_it_dies);
    RUN(state_survives_every_handle_closing);
    RUN(start_offsets_apply_at_creation_only);
    RUN(seek_replays_and_makes_old_leases_harmless);
    RUN(a_claimer_with_a_stale_cursor_never_takes_a_reused_entry);
    RUN(a_claimer_with_a_position_from_before_a_seek_never_takes_a_new_lease);
    RUN(retention_jump_skips_forward_and_counts_what_was_lost);
    RUN(boot_id_change_expires_every_lease_and_delay);
    RUN(corrupt_header_fields_are_rejected);
    CHECK_EXIT();
}
