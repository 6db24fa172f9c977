/*
 * fuzz_group_state.c - a consumer group's partition and entry words, as
 * claims, acks, nacks, extends, sweeps, settles, seeks, retention skips and
 * a reboot expiry walk them (group.c), from a hostile state.
 *
 * fuzz_group_ctl covers the header; here the header is valid and the
 * shared words behind it are the input.  The handle is built as
 * qm_group_open() builds it, over caller memory (no lock file: a member
 * counts alive while its roles word has the caller-memory bit, 1 << 31),
 * with every region malloc'd at exactly its size (header page, member
 * table, settled table, partitions, entries), so a step past any of them
 * is an ASan report.
 *
 * Input (little-endian, zero-padded when short):
 *   0      config: bit 0 two partitions (else one), bit 1 window 32 (else
 *          16), bit 2 ordered, bit 3 written under another boot (the lone
 *          opener's expiry runs first)
 *   1      op count n (at most 48)
 *   2      ops: n x 8 bytes (op code, then arguments), see run_op()
 *   ...    header words: last_sweep_ns (8), members_hwm (4)
 *          member slots 1..4: roles (4), generation (8), settled (8)
 *          per partition: cursor, committed, next_due, owner (4 x 8)
 *          entries: partitions x window x (word, deadline_ns)
 * Oracles: every status is one the contract names for the call; the
 * committed offset of a partition never decreases and keeps its seek
 * generation except through a seek; a partition whose positions were
 * consistent (same generation, committed <= cursor <= committed + window)
 * stays so; a claim returns distinct, in-window leases whose words are the
 * entry words; a lease fresh from a claim acks (or nacks, extends) at once;
 * a reboot expiry leaves nothing leased.
 */
#include "fuzz_common.h"

#define MAX_OPS 48
#define MAX_LEASES 64
#define MEMBERS_FUZZED 4
#define MEMBER_BYTES_IN (4 + 8 + 8)
#define PART_BYTES_IN 32


typedef struct state {
    qm_group_t g;
    qm_group_ctl_t *ctl;
    qm_member_t *members;
    int64_t now;
    qm_group_lease_t leases[MAX_LEASES];
    bool fresh[MAX_LEASES];   /* straight from a claim: nothing else touched it */
    size_t nleases;
} state_t;

static void *zalloc(size_t n) {
    void *p = calloc(1, n);
    if (!p) abort();
    return p;
}

static qm_group_entry_t *entry(state_t *s, uint32_t p, uint64_t off) {
    return &s->g.entries[((uint64_t)p << s->g.wlog2) + (off & (s->g.window - 1))];
}

static bool consistent(const state_t *s, uint32_t p) {
    uint64_t cw = atomic_load(&s->g.parts[p].cursor.pos);
    uint64_t mw = atomic_load(&s->g.parts[p].committed.pos);
    return QM_GPOS_GEN(cw) == QM_GPOS_GEN(mw) && QM_GPOS_OFF(mw) <= QM_GPOS_OFF(cw) &&
           QM_GPOS_OFF(cw) - QM_GPOS_OFF(mw) <= s->g.window;
}

static uint64_t committed_off(const state_t *s, uint32_t p) {
    return QM_GPOS_OFF(atomic_load(&s->g.parts[p].committed.pos));
}

/* After an ack, nack: the entry holds the word the call promises. */
static bool entry_is(state_t *s, uint32_t p, uint64_t off, uint32_t state, uint64_t epoch) {
    uint64_t w = atomic_load(&entry(s, p, off)->word);
    return w == QM_GE_WORD(state, 0, QM_GE_COUNT(epoch), QM_GE_TAG(epoch));
}

static void forget_fresh(state_t *s) {
    for (size_t i = 0; i < s->nleases; i++) s->fresh[i] = false;
}

#define STATUS_IS(rc, ...) status_in((rc), (const int[]){__VA_ARGS__}, \
                                     sizeof((const int[]){__VA_ARGS__}) / sizeof(int))
static bool status_in(int rc, const int *ok, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (rc == ok[i]) return true;
    fprintf(stderr, "unexpected status %d (%s)\n", rc, qm_last_error());
    return false;
}

static void do_claim(state_t *s, const uint8_t *a) {
    uint32_t p = a[0] % s->g.partitions;
    uint64_t cw = atomic_load(&s->g.parts[p].cursor.pos);
    uint64_t end = QM_GPOS_OFF(cw) + (a[1] % 48);
    if (end > QM_GPOS_MAX_OFFSET) end = QM_GPOS_MAX_OFFSET;
    int64_t lease_ns = (int64_t)(a[2] % 4) * 1000000;
    uint32_t flags = a[3] & 1 ? QM_CLAIM_COMPLETE : 0;
    size_t max = 1 + a[4] % 8;
    qm_group_lease_t out[8];
    size_t got = 99;
    bool was_consistent = consistent(s, p);
    int rc = qm__group_claim(&s->g, p, end, s->now, lease_ns, flags, out, max, &got);
    FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_EAGAIN, QM_EFULL, QM_ECORRUPT));
    forget_fresh(s);
    if (rc != QM_OK) {
        FUZZ_CHECK(got == 0);
        return;
    }
    FUZZ_CHECK(got >= 1 && got <= max);
    /* a claim succeeds only from consistent positions (read_pos), which it
     * may itself have repaired; afterwards they are consistent */
    FUZZ_CHECK(consistent(s, p) || !was_consistent);
    uint64_t mw = atomic_load(&s->g.parts[p].committed.pos);
    uint64_t cur = QM_GPOS_OFF(atomic_load(&s->g.parts[p].cursor.pos));
    for (size_t i = 0; i < got; i++) {
        const qm_group_lease_t *l = &out[i];
        FUZZ_CHECK(l->partition == p && l->delivery_count >= 1 &&
                   l->delivery_count == QM_GE_COUNT(l->epoch));
        FUZZ_CHECK(QM_GE_TAG(l->epoch) == QM_GE_MAKE_TAG(QM_GPOS_GEN(mw), l->offset, s->g.wlog2));
        for (size_t j = 0; j < i; j++) FUZZ_CHECK(out[j].offset != l->offset);
        if (flags & QM_CLAIM_COMPLETE) {
            FUZZ_CHECK(QM_GE_STATE(l->epoch) == QM_GE_DONE);
            continue;
        }
        /* in the window, and the entry holds exactly the lease's word */
        FUZZ_CHECK(l->offset >= QM_GPOS_OFF(mw) && l->offset < cur);
        FUZZ_CHECK(QM_GE_STATE(l->epoch) == QM_GE_LEASED &&
                   QM_GE_OWNER(l->epoch) == s->g.mb.slot);
        FUZZ_CHECK(atomic_load(&entry(s, p, l->offset)->word) == l->epoch);
        /* the same word as an older lease's (a delivery count saturated at
         * 4095 repeats the epoch, as layout.h says): one lease, now fresh */
        size_t at = 0;
        while (at < s->nleases && !(s->leases[at].partition == p &&
                                    s->leases[at].offset == l->offset &&
                                    s->leases[at].epoch == l->epoch))
            at++;
        if (at < MAX_LEASES) {
            s->fresh[at] = true;
            s->leases[at] = *l;
            if (at == s->nleases) s->nleases++;
        }
    }
}

/* One operation; `a` holds its 7 argument bytes. */
static void run_op(state_t *s, uint8_t op, const uint8_t *a) {
    uint32_t p = a[0] % s->g.partitions;
    qm_group_lease_t *l = s->nleases ? &s->leases[a[5] % s->nleases] : NULL;
    bool fresh = l && s->fresh[l - s->leases];
    int rc;
    switch (op % 13) {
    case 0:   /* claim (twice as likely) */
    case 1:
        do_claim(s, a);
        return;
    case 2:   /* ack a lease we were given */
        if (!l) return;
        rc = qm__group_ack(&s->g, l->partition, l->offset, l->epoch);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ESTALE));
        FUZZ_CHECK(rc == QM_OK || !fresh);
        if (rc == QM_OK) FUZZ_CHECK(entry_is(s, l->partition, l->offset, QM_GE_DONE, l->epoch));
        s->fresh[l - s->leases] = false;
        return;
    case 3: {   /* ack a made-up lease: a forged or stale epoch */
        uint64_t off = committed_off(s, p) + a[1] % 64;
        uint64_t epoch = ((uint64_t)a[2] << 56 | (uint64_t)a[3] << 40 | (uint64_t)a[4] << 24) ^
                         QM_GE_MAKE_TAG(0, off, s->g.wlog2);
        rc = qm__group_ack(&s->g, p, off, epoch);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ESTALE, QM_EINVAL));
        if (rc == QM_OK) FUZZ_CHECK(entry_is(s, p, off, QM_GE_DONE, epoch));
        forget_fresh(s);
        return;
    }
    case 4:   /* nack */
        if (!l) return;
        rc = qm__group_nack(&s->g, l->partition, l->offset, l->epoch, s->now + a[1]);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ESTALE));
        FUZZ_CHECK(rc == QM_OK || !fresh);
        if (rc == QM_OK)
            FUZZ_CHECK(entry_is(s, l->partition, l->offset, QM_GE_DELAYED, l->epoch) &&
                       atomic_load(&entry(s, l->partition, l->offset)->deadline_ns) == s->now + a[1] &&
                       atomic_load(&s->g.parts[l->partition].next_due) <= s->now + a[1]);
        forget_fresh(s);
        return;
    case 5:   /* extend: the epoch stays valid */
        if (!l) return;
        rc = qm__group_extend(&s->g, l->partition, l->offset, l->epoch, s->now + a[1] * 1000000);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ESTALE));
        FUZZ_CHECK(rc == QM_OK || !fresh);
        if (rc == QM_OK) FUZZ_CHECK(atomic_load(&entry(s, l->partition, l->offset)->word) == l->epoch);
        return;
    case 6: {   /* ack everything we were given at once */
        int st[MAX_LEASES];
        rc = qm__group_ack_many(&s->g, s->leases, s->nleases, st);
        for (size_t i = 0; i < s->nleases; i++) {
            FUZZ_CHECK(STATUS_IS(st[i], QM_OK, QM_ESTALE, QM_EINVAL));
            FUZZ_CHECK(st[i] == QM_OK || !s->fresh[i]);
        }
        (void)rc;
        s->nleases = 0;
        return;
    }
    case 7: {   /* the liveness sweep */
        uint64_t released = 0;
        rc = qm__group_sweep(&s->g, s->now, &released);
        FUZZ_CHECK(rc == QM_OK);
        forget_fresh(s);
        return;
    }
    case 8:   /* a new owner of slot k settles what its dead owner left */
        qm__group_settle(&s->g, 1 + a[1] % MEMBERS_FUZZED, 0);
        forget_fresh(s);
        return;
    case 9: {   /* seek: a new generation, cursor = committed = off */
        uint64_t off = committed_off(s, p) + a[1] - 128;
        if (off > QM_GPOS_MAX_OFFSET) off = a[1];
        uint16_t gen = QM_GPOS_GEN(atomic_load(&s->g.parts[p].committed.pos));
        rc = qm__group_seek(&s->g, p, off);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT));
        if (rc == QM_OK) {
            uint64_t mw = atomic_load(&s->g.parts[p].committed.pos);
            FUZZ_CHECK(QM_GPOS_OFF(mw) == off && atomic_load(&s->g.parts[p].cursor.pos) == mw);
            FUZZ_CHECK(QM_GPOS_GEN(mw) != gen);
        }
        forget_fresh(s);
        return;
    }
    case 10: {   /* retention: the log starts later */
        uint64_t start = committed_off(s, p) + a[1] % 80;
        if (start > QM_GPOS_MAX_OFFSET) start = QM_GPOS_MAX_OFFSET;
        uint64_t skipped = 0;
        rc = qm__group_skip_to(&s->g, p, start, &skipped);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT));
        if (rc == QM_OK) FUZZ_CHECK(committed_off(s, p) >= start);
        forget_fresh(s);
        return;
    }
    case 11: {   /* statistics and the next due time */
        qm_group_partition_stats_t st;
        rc = qm__group_partition_stats(&s->g, p, &st);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_ECORRUPT));
        if (rc == QM_OK)
            FUZZ_CHECK(st.cursor >= st.committed && st.cursor - st.committed <= s->g.window &&
                       st.pending + st.acked_ahead <= st.cursor - st.committed &&
                       st.leased + st.delayed <= st.pending);
        int64_t due;
        FUZZ_CHECK(qm__group_next_due(&s->g, p, &due) == QM_OK);
        qm_group_stats_t gs;
        FUZZ_CHECK(qm__group_stats(&s->g, &gs) == QM_OK);
        return;
    }
    case 12:   /* ordered mode: take or give up a partition */
        rc = a[1] & 1 ? qm__group_release(&s->g, p) : qm__group_acquire(&s->g, p);
        FUZZ_CHECK(STATUS_IS(rc, QM_OK, QM_EAGAIN));
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_reader_t r = {data, size, 0};
    uint8_t cfg = (uint8_t)fuzz_rd(&r, 1);
    size_t nops = fuzz_rd(&r, 1) % (MAX_OPS + 1);
    const uint8_t *ops = data + (r.at < size ? r.at : size);
    size_t ops_avail = r.at < size ? size - r.at : 0;
    r.at += nops * 8;

    state_t *s = calloc(1, sizeof *s);
    if (!s) abort();
    qm_group_t *g = &s->g;
    g->partitions = cfg & 1 ? 2 : 1;
    g->wlog2 = cfg & 2 ? 5 : 4;
    g->window = UINT64_C(1) << g->wlog2;
    g->flags = cfg & 4 ? QM_GROUP_ORDERED : 0;
    g->obj.fd = -1;

    /* each region on its own, exactly its size */
    s->ctl = zalloc(sizeof(qm_group_ctl_t));
    s->members = zalloc((size_t)QM_MEMBER_SLOTS * QM_MEMBER_BYTES);
    _Atomic uint64_t *settled = zalloc((size_t)QM_MEMBER_SLOTS * 8);
    qm_group_part_t *parts = zalloc(g->partitions * sizeof(qm_group_part_t));
    size_t nentries = (size_t)g->partitions << g->wlog2;
    qm_group_entry_t *entries = zalloc(nentries * sizeof(qm_group_entry_t));
    g->ctl = s->ctl;
    g->settled = settled;
    g->parts = parts;
    g->entries = entries;
    g->mb.fd = -1;   /* caller memory: liveness by the roles word */
    g->mb.members = s->members;
    g->mb.hwm = &s->ctl->members_hwm;
    g->mb.settle = qm__group_settle;
    g->mb.object = g;

    atomic_store(&s->ctl->last_sweep_ns, (int64_t)fuzz_rd(&r, 8));
    atomic_store(&s->ctl->members_hwm, (uint32_t)fuzz_rd(&r, 4));
    for (uint32_t k = 1; k <= MEMBERS_FUZZED; k++) {
        atomic_store(&s->members[k].roles, (uint32_t)fuzz_rd(&r, 4));
        atomic_store(&s->members[k].generation, fuzz_rd(&r, 8));
        atomic_store(&settled[k], fuzz_rd(&r, 8));
    }
    for (uint32_t p = 0; p < g->partitions; p++) {
        atomic_store(&parts[p].cursor.pos, fuzz_rd(&r, 8));
        atomic_store(&parts[p].committed.pos, fuzz_rd(&r, 8));
        atomic_store(&parts[p].next_due, (int64_t)fuzz_rd(&r, 8));
        atomic_store(&parts[p].owner, fuzz_rd(&r, 8));
    }
    for (size_t i = 0; i < nentries; i++) {
        atomic_store(&entries[i].word, fuzz_rd(&r, 8));
        atomic_store(&entries[i].deadline_ns, (int64_t)fuzz_rd(&r, 8));
    }

    if (cfg & 8) {   /* the lone opener finds another boot's deadlines */
        uint64_t id[2] = {atomic_load(&s->ctl->boot_id[0]) + 1, 7};
        qm__group_expire_boot(g, id);
        for (uint32_t p = 0; p < g->partitions; p++)
            FUZZ_CHECK(atomic_load(&parts[p].next_due) == INT64_MIN &&
                       QM_GOWNER_SLOT(atomic_load(&parts[p].owner)) == 0);
        for (size_t i = 0; i < nentries; i++) {
            uint32_t st = QM_GE_STATE(atomic_load(&entries[i].word));
            FUZZ_CHECK(st != QM_GE_LEASING && st != QM_GE_LEASED);
        }
    }

    s->now = 1000000000;
    for (size_t i = 0; i < nops; i++) {
        uint8_t op[8] = {0};
        if (i * 8 < ops_avail) memcpy(op, ops + i * 8, ops_avail - i * 8 < 8 ? ops_avail - i * 8 : 8);
        uint64_t before[2];
        uint16_t gen_before[2];
        bool cons_before[2];
        for (uint32_t p = 0; p < g->partitions; p++) {
            before[p] = committed_off(s, p);
            gen_before[p] = QM_GPOS_GEN(atomic_load(&parts[p].committed.pos));
            cons_before[p] = consistent(s, p);
        }
        s->now += (int64_t)op[7] * 500000;   /* time moves on: up to 127 ms an op */
        run_op(s, op[0], op + 1);
        bool seek = op[0] % 13 == 9;
        for (uint32_t p = 0; p < g->partitions; p++) {
            uint64_t mw = atomic_load(&parts[p].committed.pos);
            if (seek && p == op[1] % g->partitions) continue;
            /* committed keeps its generation and never goes back */
            FUZZ_CHECK(QM_GPOS_GEN(mw) == gen_before[p]);
            FUZZ_CHECK(QM_GPOS_OFF(mw) >= before[p]);
            if (cons_before[p]) FUZZ_CHECK(consistent(s, p));
        }
    }

    /* closing, as qm_group_close(): every lease of ours in a consistent
     * partition's [committed, cursor) is released */
    if (g->mb.slot) {
        bool held[MAX_LEASES];
        for (size_t i = 0; i < s->nleases; i++) {
            const qm_group_lease_t *l = &s->leases[i];
            uint64_t cur = QM_GPOS_OFF(atomic_load(&parts[l->partition].cursor.pos));
            held[i] = consistent(s, l->partition) && l->offset >= committed_off(s, l->partition) &&
                      l->offset < cur && atomic_load(&entry(s, l->partition, l->offset)->word) == l->epoch;
        }
        qm__group_settle(g, g->mb.slot, 0);
        for (size_t i = 0; i < s->nleases; i++)
            if (held[i])
                FUZZ_CHECK(atomic_load(&entry(s, s->leases[i].partition, s->leases[i].offset)->word) !=
                           s->leases[i].epoch);
        qm__member_leave(&g->mb);
    }
    free(entries);
    free(parts);
    free(settled);
    free(s->members);
    free(s->ctl);
    free(s);
    return 0;
}
