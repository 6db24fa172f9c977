/*
 * group.c - consumer-group state: who gets which record of a topic, leases,
 * acks, redelivery (docs/design/groups.md; bytes in layout.h).
 *
 * Per partition: a cursor (next offset never delivered), a committed offset
 * (everything below is done) and a window of 2^window_log2 entries; offset o
 * is pending in entry o mod window while committed <= o < cursor.  Claims
 * keep cursor - committed <= window, so an entry is reused only after the
 * offset it held was committed.
 *
 *  - Claiming new records (ring-style: the entry word decides, the cursor
 *    is a hint anyone helps forward): read cursor c; CAS entry c from any
 *    word of an *older* offset to LEASING(me, 1, tag(c)), then c+1, ... as
 *    far as the batch, `end` and the window allow; CAS the cursor past
 *    them; write each deadline, then publish LEASED (or DONE when the claim
 *    completes at once).  A word not tagged for c may also be a *newer*
 *    offset's, when c was claimed, done and committed since we read the
 *    cursor: re-reading the cursor after the word (not past c, same gen)
 *    tells them apart.  LEASING is the owner's private state: nobody else
 *    touches such an entry unless its owner is dead.
 *  - Redelivery: a lower bound of the earliest deadline, `next_due`, is kept
 *    per partition.  A claim with now >= next_due swaps it to "none", scans
 *    [committed, cursor) and re-leases due entries (LEASED past deadline,
 *    DELAYED past not-before) with count + 1, then lowers next_due to the
 *    earliest deadline left.  Whoever publishes a deadline lowers next_due
 *    afterwards with an RMW, so a deadline is never missed by a scanner.
 *  - Ack: CAS the entry from the exact word of the lease (its epoch) to
 *    DONE; any other word means the lease moved on: QM_ESTALE.  Then help
 *    the committed offset over the contiguous DONE prefix.
 *  - Dead members: a sweep (at most every QM_GROUP_SWEEP_NS, one process at
 *    a time) checks the liveness locks of members that ever claimed, and
 *    turns the entries of dead ones into DELAYED(now); so does the next
 *    owner of a dead member's slot (settle) and a closing handle (its own).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GROUP_ROUNDS 1000                       /* retries under contention */


/* ----- small helpers ------------------------------------------------------------- */
static inline qm_group_entry_t *entry_at(const qm_group_t *g, uint32_t p, uint64_t off) {
    return &g->entries[((uint64_t)p << g->wlog2) + (off & (g->window - 1))];
}
static inline uint64_t tag_of(const qm_group_t *g, uint16_t gen, uint64_t off) {
    return QM_GE_MAKE_TAG(gen, off, g->wlog2);
}
static inline uint32_t next_count(uint64_t w) {
    uint32_t n = QM_GE_COUNT(w);
    return n < QM_GE_MAX_COUNT ? n + 1 : n;
}
static inline int64_t add_sat(int64_t a, int64_t b) {
    if (b > 0 && a > INT64_MAX - b) return INT64_MAX;
    return a + b;
}

/* Lower next_due to d.  Always an RMW, even when d is not lower: a scanner
 * that swapped next_due before it then sees our entry, one after it sees d. */
static void lower_due(qm_group_part_t *pt, int64_t d) {
    int64_t cur = atomic_load_explicit(&pt->next_due, memory_order_relaxed);
    /* [G5] acq_rel: our published entry before the bound; pairs with [G6] */
    while (!atomic_compare_exchange_weak_explicit(&pt->next_due, &cur, d < cur ? d : cur,
                                                  memory_order_acq_rel, memory_order_relaxed)) {
    }
}

typedef struct gpos {
    uint64_t cw, mw;          /* cursor and committed words */
    uint64_t cursor, committed;
    uint16_t gen;
} gpos_t;

/* Read cursor and committed, first finishing a seek (committed has a newer
 * gen) or a retention jump (committed ahead of cursor): the cursor is then
 * set to the committed word by whoever sees it. */
static int read_pos(const qm_group_t *g, qm_group_part_t *pt, gpos_t *ps) {
    for (int round = 0; round < GROUP_ROUNDS; round++) {
        /* [G3] acquire: a cursor past offset o comes with o's claim; pairs with [G2] */
        uint64_t cw = atomic_load_explicit(&pt->cursor.pos, memory_order_acquire);
        /* [G8] acquire: a committed offset past o comes with o's DONE; pairs with [G9] */
        uint64_t mw = atomic_load_explicit(&pt->committed.pos, memory_order_acquire);
        if (QM_GPOS_GEN(cw) != QM_GPOS_GEN(mw) || QM_GPOS_OFF(mw) > QM_GPOS_OFF(cw)) {
            /* [G2'] acq_rel: as [G2] */
            atomic_compare_exchange_strong_explicit(&pt->cursor.pos, &cw, mw, memory_order_acq_rel,
                                                    memory_order_relaxed);
            continue;
        }
        ps->cw = cw;
        ps->mw = mw;
        ps->gen = QM_GPOS_GEN(cw);
        ps->cursor = QM_GPOS_OFF(cw);
        ps->committed = QM_GPOS_OFF(mw);
        if (ps->cursor - ps->committed > g->window)
            return qm__fail(QM_ECORRUPT, "group cursor %llu is more than a window past %llu",
                            (unsigned long long)ps->cursor, (unsigned long long)ps->committed);
        return QM_OK;
    }
    return qm__fail(QM_ECORRUPT, "group cursor keeps moving under a seek");
}

/* Move the cursor forward to `target` (all offsets below it are claimed). */
static void push_cursor(qm_group_part_t *pt, uint16_t gen, uint64_t target) {
    uint64_t cw = atomic_load_explicit(&pt->cursor.pos, memory_order_relaxed);
    while (QM_GPOS_GEN(cw) == gen && QM_GPOS_OFF(cw) < target) {
        /* [G2] acq_rel: our entry claims before the cursor; pairs with [G3] */
        if (atomic_compare_exchange_weak_explicit(&pt->cursor.pos, &cw, QM_GPOS(gen, target),
                                                  memory_order_acq_rel, memory_order_relaxed))
            return;
    }
}

/* Help the committed offset over the contiguous DONE prefix.  The fence
 * makes two ackers of neighbouring offsets see at least one another's DONE
 * (store buffering): the last of them always carries committed past both. */
static void advance(const qm_group_t *g, uint32_t p) {
    qm_group_part_t *pt = &g->parts[p];
    /* [G10] seq_cst: our DONE before reading others'; pairs with [G10] */
    atomic_thread_fence(memory_order_seq_cst);
    for (int round = 0; round < GROUP_ROUNDS; round++) {
        uint64_t mw = atomic_load_explicit(&pt->committed.pos, memory_order_acquire);   /* [G8] */
        uint64_t cw = atomic_load_explicit(&pt->cursor.pos, memory_order_acquire);      /* [G3] */
        uint16_t gen = QM_GPOS_GEN(mw);
        uint64_t m = QM_GPOS_OFF(mw), c = QM_GPOS_OFF(cw);
        if (QM_GPOS_GEN(cw) != gen || c < m || c - m > g->window) return;
        uint64_t k = m;
        while (k < c) {
            /* [G7] acquire: pairs with [G9]: the consumer finished with k */
            uint64_t w = atomic_load_explicit(&entry_at(g, p, k)->word, memory_order_acquire);
            if (QM_GE_STATE(w) != QM_GE_DONE || QM_GE_TAG(w) != tag_of(g, gen, k)) break;
            k++;
        }
        if (k == m) return;
        QM_KILLPOINT("group.commit_before_cas");
        /* [G9'] acq_rel: the DONEs we walked before the new committed; pairs with [G8] */
        if (atomic_compare_exchange_strong_explicit(&pt->committed.pos, &mw, QM_GPOS(gen, k),
                                                    memory_order_acq_rel, memory_order_relaxed))
            return;
    }
}

static int member_ready(qm_group_t *g) {
    int rc = qm__member_ensure(&g->mb);
    if (rc) return rc;
    if (!(g->mb.roles & QM_MEMBER_CONSUMER)) {
        /* the next owner of our slot settles (releases) what we leave */
        atomic_store_explicit(&g->mb.me->inflight, QM_INFLIGHT_VALID, memory_order_relaxed);
        qm__member_publish_role(&g->mb, QM_MEMBER_CONSUMER);
    }
    return QM_OK;
}

/* Publish an entry we hold LEASING: deadline first, then the word. */
static inline void publish(qm_group_entry_t *e, uint64_t word, int64_t deadline) {
    atomic_store_explicit(&e->deadline_ns, deadline, memory_order_relaxed);
    /* [G4] release: the deadline before the state; pairs with [G6], [G1] */
    atomic_store_explicit(&e->word, word, memory_order_release);
}

/* ----- releasing the leases of a member ------------------------------------------ */
/* Make every LEASING/LEASED entry of `slot` in partition p deliverable now.
 * With check_gen, stop as soon as the slot's generation is no longer `gen`
 * (a new owner took the slot and settles it itself): an entry read before
 * that check was written by the dead owner, never by the new one. */
static uint64_t release_slot(qm_group_t *g, uint32_t p, uint32_t slot, bool check_gen,
                             uint64_t gen) {
    qm_group_part_t *pt = &g->parts[p];
    gpos_t ps;
    if (read_pos(g, pt, &ps)) return 0;
    uint64_t n = ps.cursor - ps.committed + 1, released = 0;
    if (n > g->window) n = g->window;
    /* Past the cursor too: a claimer that died between its entry CASes and
     * the cursor push left a run of LEASING entries from the cursor on. */
    for (uint64_t i = 0; i < g->window; i++) {
        qm_group_entry_t *e = entry_at(g, p, ps.committed + i);
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);   /* [G1] */
        uint32_t st = QM_GE_STATE(w);
        if (QM_GE_OWNER(w) != slot || (st != QM_GE_LEASING && st != QM_GE_LEASED)) {
            if (i >= n) break;
            continue;
        }
        if (check_gen &&
            atomic_load_explicit(&g->mb.members[slot].generation, memory_order_relaxed) != gen)
            break;
        uint64_t mine = QM_GE_WORD(QM_GE_LEASING, g->mb.slot, QM_GE_COUNT(w), QM_GE_TAG(w));
        /* [G1] acq_rel: the entry is ours alone until [G4] */
        if (!atomic_compare_exchange_strong_explicit(&e->word, &w, mine, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        QM_KILLPOINT("group.release_after_lock");
        publish(e, QM_GE_WORD(QM_GE_DELAYED, 0, QM_GE_COUNT(w), QM_GE_TAG(w)), 0);
        released++;
    }
    /* Always, even when nothing was released: the member may have died in
     * redeliver() between swapping next_due to "none" and lowering it
     * again, which would hide every pending deadline for good.  One extra
     * scan at the next claim is the cost.  (Found by model/group.pml.) */
    lower_due(pt, INT64_MIN);
    return released;
}

static void disown(qm_group_t *g, uint32_t p, uint32_t slot) {
    qm_group_part_t *pt = &g->parts[p];
    uint64_t o = atomic_load_explicit(&pt->owner, memory_order_acquire);   /* [G11] */
    if (QM_GOWNER_SLOT(o) == slot)
        atomic_compare_exchange_strong_explicit(&pt->owner, &o, QM_GOWNER(QM_GOWNER_EPOCH(o), 0),
                                                memory_order_acq_rel, memory_order_relaxed);
}

/* liveness.c calls this when we take the slot of a member that died while
 * holding leases: they are all the dead member's (we have none yet). */
void qm__group_settle(void *object, uint32_t slot, uint64_t inflight) {
    qm_group_t *g = object;
    (void)inflight;
    for (uint32_t p = 0; p < g->partitions; p++) {
        release_slot(g, p, slot, false, 0);
        disown(g, p, slot);
        advance(g, p);   /* it may have died between an ack's DONE and advance() */
    }
}

static uint64_t sweep(qm_group_t *g) {
    uint32_t hwm = atomic_load_explicit(&g->ctl->members_hwm, memory_order_relaxed);
    if (hwm >= QM_MEMBER_SLOTS) hwm = QM_MEMBER_SLOTS - 1;
    uint64_t released = 0;
    for (uint32_t k = 1; k <= hwm; k++) {
        qm_member_t *m = &g->mb.members[k];
        if (k == g->mb.slot || !(atomic_load_explicit(&m->roles, memory_order_relaxed) &
                                 QM_MEMBER_CONSUMER))
            continue;
        uint64_t gen = atomic_load_explicit(&m->generation, memory_order_acquire);
        /* [G12] acquire: pairs with [G12'] */
        if (atomic_load_explicit(&g->settled[k], memory_order_acquire) == gen ||
            qm__member_alive(&g->mb, k))
            continue;
        for (uint32_t p = 0; p < g->partitions; p++) {
            released += release_slot(g, p, k, true, gen);
            disown(g, p, k);
            advance(g, p);   /* it may have died between an ack's DONE and advance() */
        }
        QM_KILLPOINT("group.sweep_before_settled");
        /* [G12'] release: everything of generation `gen` is released */
        atomic_store_explicit(&g->settled[k], gen, memory_order_release);
        atomic_fetch_add_explicit(&g->ctl->sweeps, 1, memory_order_relaxed);
    }
    return released;
}

static void maybe_sweep(qm_group_t *g, int64_t now) {
    int64_t last = atomic_load_explicit(&g->ctl->last_sweep_ns, memory_order_relaxed);
    if (last <= now && (uint64_t)now - (uint64_t)last < (uint64_t)QM_GROUP_SWEEP_NS) return;
    if (!atomic_compare_exchange_strong_explicit(&g->ctl->last_sweep_ns, &last, now,
                                                 memory_order_relaxed, memory_order_relaxed))
        return;   /* another member sweeps */
    sweep(g);
}

int qm__group_sweep(qm_group_t *g, int64_t now_ns, uint64_t *released) {
    if (!g) return QM_ECLOSED;
    int rc = member_ready(g);
    if (rc) return rc;
    atomic_store_explicit(&g->ctl->last_sweep_ns, now_ns, memory_order_relaxed);
    uint64_t n = sweep(g);
    if (released) *released = n;
    return QM_OK;
}

/* ----- claiming ------------------------------------------------------------------- */
/* Ordered mode: we must own the partition (taken when it has no owner). */
static int own(qm_group_t *g, qm_group_part_t *pt, bool check_owner) {
    uint32_t me = g->mb.slot;
    uint64_t o = atomic_load_explicit(&pt->owner, memory_order_acquire);   /* [G11] */
    uint32_t s = QM_GOWNER_SLOT(o);
    if (s == me) return QM_OK;
    if (s != 0 && (!check_owner || qm__member_alive(&g->mb, s))) return QM_EAGAIN;
    /* [G11] acq_rel: one owner at a time; the old owner's acks before ours */
    if (atomic_compare_exchange_strong_explicit(&pt->owner, &o,
                                                QM_GOWNER(QM_GOWNER_EPOCH(o) + 1, me),
                                                memory_order_acq_rel, memory_order_acquire))
        return QM_OK;
    return QM_GOWNER_SLOT(o) == me ? QM_OK : QM_EAGAIN;
}

static void fill(qm_group_lease_t *l, uint32_t p, uint64_t off, uint64_t word) {
    l->offset = off;
    l->epoch = word;
    l->partition = p;
    l->delivery_count = QM_GE_COUNT(word);
}

/* Re-lease due pending entries (scan of [committed, cursor)). */
static int redeliver(qm_group_t *g, uint32_t p, int64_t now, int64_t deadline, bool complete,
                     qm_group_lease_t *out, size_t max, size_t *got) {
    qm_group_part_t *pt = &g->parts[p];
    uint32_t me = g->mb.slot;
    *got = 0;
    /* [G6] acq_rel: entries published before a lowering [G5] are seen below */
    int64_t was = atomic_exchange_explicit(&pt->next_due, INT64_MAX, memory_order_acq_rel);
    gpos_t ps;
    int rc = read_pos(g, pt, &ps);
    if (rc) {
        lower_due(pt, was);
        return rc;
    }
    int64_t low = INT64_MAX;
    size_t n = 0;
    for (uint64_t off = ps.committed; off < ps.cursor; off++) {
        qm_group_entry_t *e = entry_at(g, p, off);
        uint64_t w = atomic_load_explicit(&e->word, memory_order_acquire);   /* [G1] */
        uint32_t st = QM_GE_STATE(w);
        if (QM_GE_TAG(w) != tag_of(g, ps.gen, off) || (st != QM_GE_LEASED && st != QM_GE_DELAYED))
            continue;   /* LEASING: its owner lowers next_due when it publishes */
        int64_t d = atomic_load_explicit(&e->deadline_ns, memory_order_relaxed);
        if (d > now || n == max) {
            if (d < low) low = d;
            continue;
        }
        uint32_t count = next_count(w);
        uint64_t mine = QM_GE_WORD(QM_GE_LEASING, me, count, QM_GE_TAG(w));
        if (!atomic_compare_exchange_strong_explicit(&e->word, &w, mine, memory_order_acq_rel,
                                                     memory_order_relaxed))   /* [G1] */
            continue;   /* whoever moved it publishes (and lowers next_due) itself */
        uint64_t word = QM_GE_WORD(complete ? QM_GE_DONE : QM_GE_LEASED, complete ? 0 : me, count,
                                   QM_GE_TAG(w));
        publish(e, word, complete ? 0 : deadline);
        fill(&out[n++], p, off, word);
    }
    if (n) {
        atomic_fetch_add_explicit(&pt->redelivered, n, memory_order_relaxed);
        if (!complete && deadline < low) low = deadline;
    }
    lower_due(pt, low);
    if (n && complete) advance(g, p);
    *got = n;
    return QM_OK;
}

typedef enum { TAKE, CLAIMED, BLOCKED, RETRY } claimable_t;

/* What the word w of the entry of offset o (tagged `tag`) allows a claimer
 * of o.  TAKE is only a candidate: a word not tagged for o belongs to an
 * older offset (committed, or forgotten by a seek or a jump) *or to a newer
 * one*, when our position was read before o was claimed, done and
 * committed and its entry reused (o + W, or o after a seek).  The tag
 * cannot tell which (laps wrap, gens wrap after 256 seeks and an entry
 * keeps an old gen while unused), so claim_new re-reads the cursor. */
static claimable_t claimable(qm_group_t *g, uint64_t w, uint64_t tag) {
    uint32_t st = QM_GE_STATE(w);
    if (st == QM_GE_FREE) return TAKE;
    if (QM_GE_TAG(w) == tag) return CLAIMED;
    /* one still LEASING is its owner's until the owner dies */
    if (st == QM_GE_LEASING && QM_GE_OWNER(w) != g->mb.slot &&
        qm__member_alive(&g->mb, QM_GE_OWNER(w)))
        return BLOCKED;
    return TAKE;
}

/* Is the word w, loaded under [G1] from the entry of offset o, older than
 * o?  Whoever created a word for a newer offset of that entry (o + jW of
 * our gen, or anything of a later gen) had read a cursor word later than
 * ours: past o in our gen (its claim needed committed > o, and read_pos
 * returns a cursor >= committed), or of another gen.  Read-read coherence
 * then makes this re-read return that word or a later one.  So a cursor
 * still in our gen and not past o proves w older: the offset it held is
 * below the committed offset we read, done or forgotten.  FREE words are
 * never written again once used. */
static bool older_than(qm_group_part_t *pt, uint64_t w, uint16_t gen, uint64_t o) {
    if (QM_GE_STATE(w) == QM_GE_FREE) return true;
    /* [G13] acquire: after the [G1] load of w; see above */
    uint64_t cw = atomic_load_explicit(&pt->cursor.pos, memory_order_acquire);
    return QM_GPOS_GEN(cw) == gen && QM_GPOS_OFF(cw) <= o;
}

/* Claim new offsets.  `seen`, if not NULL, is the position to start from
 * instead of reading it (qm__group_claim_from: a claimer preempted right
 * after read_pos, replayed by the tests). */
static int claim_new(qm_group_t *g, uint32_t p, uint64_t end, int64_t deadline, bool complete,
                     uint64_t limit, const gpos_t *seen, qm_group_lease_t *out, size_t max,
                     size_t *got) {
    qm_group_part_t *pt = &g->parts[p];
    uint32_t me = g->mb.slot;
    *got = 0;
    for (int round = 0; round < GROUP_ROUNDS; round++) {
        gpos_t ps;
        int rc = QM_OK;
        if (round == 0 && seen) ps = *seen;
        else if ((rc = read_pos(g, pt, &ps))) return rc;
        uint64_t c = ps.cursor;
        if (c >= end) return QM_EAGAIN;
        if (c - ps.committed >= limit) {
            advance(g, p);
            if ((rc = read_pos(g, pt, &ps))) return rc;
            if (ps.cursor - ps.committed < limit) continue;
            uint64_t w = atomic_load_explicit(&entry_at(g, p, ps.committed)->word,
                                              memory_order_relaxed);
            if (QM_GE_STATE(w) > QM_GE_DONE)
                return qm__fail(QM_ECORRUPT, "bad group entry state %u", QM_GE_STATE(w));
            return limit == 1 ? QM_EAGAIN : QM_EFULL;
        }
        uint64_t n = end - c;
        if (n > max) n = max;
        if (n > ps.committed + limit - c) n = ps.committed + limit - c;
        uint64_t k = 0;
        claimable_t why = TAKE;
        uint64_t w = 0;
        for (; k < n; k++) {
            uint64_t tag = tag_of(g, ps.gen, c + k);
            qm_group_entry_t *e = entry_at(g, p, c + k);
            w = atomic_load_explicit(&e->word, memory_order_acquire);   /* [G1] */
            if ((why = claimable(g, w, tag)) != TAKE) break;
            if (!older_than(pt, w, ps.gen, c + k)) {
                why = RETRY;   /* our position is stale: c + k is claimed */
                break;
            }
            /* [G1] acq_rel: exactly one claimer takes offset c+k; the entry's
             * previous use (committed, so DONE or forgotten) is behind us.
             * The CAS succeeds only on the very word older_than() judged. */
            if (!atomic_compare_exchange_strong_explicit(&e->word, &w,
                                                         QM_GE_WORD(QM_GE_LEASING, me, 1, tag),
                                                         memory_order_acq_rel,
                                                         memory_order_relaxed)) {
                /* not necessarily a claim of c+k: an old-gen lease may have
                 * been acked or released.  Look again. */
                why = RETRY;
                break;
            }
            QM_KILLPOINT("group.claim_after_entry");
        }
        if (k == 0) {
            if (why == BLOCKED) return QM_EAGAIN;
            /* only a word tagged for c proves c claimed: help, then retry */
            if (why == CLAIMED) {
                push_cursor(pt, ps.gen, c + 1);
                /* released (by a sweep or settle) before anyone moved the
                 * cursor past it: now below the cursor, so the redelivery
                 * scan must know it is due */
                uint32_t st = QM_GE_STATE(w);
                if (st == QM_GE_DELAYED || st == QM_GE_LEASED)
                    lower_due(pt, atomic_load_explicit(&entry_at(g, p, c)->deadline_ns,
                                                       memory_order_relaxed));
            }
            continue;
        }
        push_cursor(pt, ps.gen, c + k);
        QM_KILLPOINT("group.claim_before_publish");
        for (uint64_t i = 0; i < k; i++) {
            uint64_t tag = tag_of(g, ps.gen, c + i);
            uint64_t word = complete ? QM_GE_WORD(QM_GE_DONE, 0, 1, tag)
                                     : QM_GE_WORD(QM_GE_LEASED, me, 1, tag);
            publish(entry_at(g, p, c + i), word, complete ? 0 : deadline);
            fill(&out[i], p, c + i, word);
        }
        if (complete) advance(g, p);
        else lower_due(pt, deadline);
        *got = (size_t)k;
        return QM_OK;
    }
    return QM_EAGAIN;
}

int qm__group_claim(qm_group_t *g, uint32_t p, uint64_t end, int64_t now, int64_t lease_ns,
                   uint32_t flags, qm_group_lease_t *out, size_t max, size_t *got) {
    *got = 0;
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions || end > QM_GPOS_MAX_OFFSET || max == 0 || lease_ns < 0 ||
        (flags & ~QM_CLAIM_COMPLETE))
        return QM_EINVAL;
    int rc = member_ready(g);
    if (rc) return rc;
    maybe_sweep(g, now);
    qm_group_part_t *pt = &g->parts[p];
    bool ordered = g->flags & QM_GROUP_ORDERED;
    if (ordered && (rc = own(g, pt, false)) != QM_OK) return rc;
    bool complete = flags & QM_CLAIM_COMPLETE;
    int64_t deadline = add_sat(now, lease_ns);
    size_t n = 0;
    if (now >= atomic_load_explicit(&pt->next_due, memory_order_relaxed)) {
        rc = redeliver(g, p, now, deadline, complete, out, max, &n);
        if (rc) return rc;
    }
    if (n < max) {
        size_t k = 0;
        rc = claim_new(g, p, end, deadline, complete, ordered ? 1 : g->window, NULL, out + n,
                       max - n, &k);
        n += k;
    }
    *got = n;
    return n ? QM_OK : rc;
}

/* Test entry point (declared by tests/c/test_group.c): claim new offsets
 * of partition p, unordered, from the position words `cursor_word` and
 * `committed_word` read earlier, as a claimer preempted between reading
 * them and looking at the entries; later rounds read the position again. */
int qm__group_claim_from(qm_group_t *g, uint32_t p, uint64_t cursor_word, uint64_t committed_word,
                        uint64_t end, int64_t now, int64_t lease_ns, qm_group_lease_t *out,
                        size_t max, size_t *got);
int qm__group_claim_from(qm_group_t *g, uint32_t p, uint64_t cursor_word, uint64_t committed_word,
                        uint64_t end, int64_t now, int64_t lease_ns, qm_group_lease_t *out,
                        size_t max, size_t *got) {
    *got = 0;
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions || max == 0 || lease_ns < 0 || (g->flags & QM_GROUP_ORDERED))
        return QM_EINVAL;
    gpos_t ps = {cursor_word, committed_word, QM_GPOS_OFF(cursor_word),
                 QM_GPOS_OFF(committed_word), QM_GPOS_GEN(cursor_word)};
    if (QM_GPOS_GEN(committed_word) != ps.gen || ps.committed > ps.cursor ||
        ps.cursor - ps.committed > g->window)
        return QM_EINVAL;
    int rc = member_ready(g);
    if (rc) return rc;
    int64_t deadline = add_sat(now, lease_ns);
    return claim_new(g, p, end, deadline, false, g->window, &ps, out, max, got);
}

/* ----- settling leases -------------------------------------------------------------- */
/* Check that `epoch` is a lease word for `offset` of a valid partition. */
static int lease_check(const qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions || off > QM_GPOS_MAX_OFFSET ||
        (QM_GE_TAG(epoch) & QM_GE_LAP_MASK) != ((off >> g->wlog2) & QM_GE_LAP_MASK))
        return QM_EINVAL;
    return QM_GE_STATE(epoch) == QM_GE_LEASED ? QM_OK : QM_ESTALE;
}

static int ack_one(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch) {
    int rc = lease_check(g, p, off, epoch);
    if (rc) return rc;
    uint64_t w = epoch;
    /* [G9] acq_rel: the consumer's work before DONE; pairs with [G7] */
    if (!atomic_compare_exchange_strong_explicit(
            &entry_at(g, p, off)->word, &w,
            QM_GE_WORD(QM_GE_DONE, 0, QM_GE_COUNT(epoch), QM_GE_TAG(epoch)),
            memory_order_acq_rel, memory_order_relaxed))
        return QM_ESTALE;
    return QM_OK;
}

int qm__group_ack(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch) {
    int rc = ack_one(g, p, off, epoch);
    if (rc == QM_OK) QM_KILLPOINT("group.ack_before_advance");
    if (rc == QM_OK) advance(g, p);
    return rc;
}

int qm__group_ack_many(qm_group_t *g, const qm_group_lease_t *leases, size_t n, int *status) {
    int first = QM_OK;
    uint32_t last_p = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        int rc = ack_one(g, leases[i].partition, leases[i].offset, leases[i].epoch);
        if (status) status[i] = rc;
        if (rc && first == QM_OK) first = rc;
        if (rc) continue;
        if (last_p != UINT32_MAX && last_p != leases[i].partition) advance(g, last_p);
        last_p = leases[i].partition;
    }
    if (last_p != UINT32_MAX) advance(g, last_p);
    return first;
}

/* Take the lease's entry LEASING (ours alone), keeping its count. */
static int relock(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, uint32_t owner) {
    int rc = lease_check(g, p, off, epoch);
    if (rc) return rc;
    uint64_t w = epoch;
    /* [G1] acq_rel */
    if (!atomic_compare_exchange_strong_explicit(
            &entry_at(g, p, off)->word, &w,
            QM_GE_WORD(QM_GE_LEASING, owner, QM_GE_COUNT(epoch), QM_GE_TAG(epoch)),
            memory_order_acq_rel, memory_order_relaxed))
        return QM_ESTALE;
    return QM_OK;
}

int qm__group_nack(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, int64_t not_before) {
    if (!g) return QM_ECLOSED;
    int rc = member_ready(g);
    if (rc || (rc = relock(g, p, off, epoch, g->mb.slot))) return rc;
    QM_KILLPOINT("group.nack_after_relock");
    publish(entry_at(g, p, off), QM_GE_WORD(QM_GE_DELAYED, 0, QM_GE_COUNT(epoch), QM_GE_TAG(epoch)),
            not_before);
    lower_due(&g->parts[p], not_before);
    return QM_OK;
}

int qm__group_extend(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, int64_t deadline) {
    int rc = relock(g, p, off, epoch, QM_GE_OWNER(epoch));
    if (rc) return rc;
    publish(entry_at(g, p, off), epoch, deadline);
    lower_due(&g->parts[p], deadline);
    return QM_OK;
}

/* ----- positions -------------------------------------------------------------------- */
int qm__group_seek(qm_group_t *g, uint32_t p, uint64_t off) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions || off > QM_GPOS_MAX_OFFSET) return QM_EINVAL;
    qm_group_part_t *pt = &g->parts[p];
    gpos_t ps;
    for (int round = 0;; round++) {
        int rc = read_pos(g, pt, &ps);
        if (rc) return rc;
        if (round == GROUP_ROUNDS) return qm__fail(QM_EAGAIN, "seek lost every race");
        /* [G9''] acq_rel: a new gen; claims and acks of the old one fail */
        if (atomic_compare_exchange_strong_explicit(&pt->committed.pos, &ps.mw,
                                                    QM_GPOS((uint16_t)(ps.gen + 1), off),
                                                    memory_order_acq_rel, memory_order_relaxed))
            break;
    }
    atomic_fetch_add_explicit(&pt->seeks, 1, memory_order_relaxed);
    return read_pos(g, pt, &ps);   /* moves the cursor too */
}

int qm__group_skip_to(qm_group_t *g, uint32_t p, uint64_t log_start, uint64_t *skipped) {
    if (skipped) *skipped = 0;
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions || log_start > QM_GPOS_MAX_OFFSET) return QM_EINVAL;
    qm_group_part_t *pt = &g->parts[p];
    for (int round = 0; round < GROUP_ROUNDS; round++) {
        gpos_t ps;
        int rc = read_pos(g, pt, &ps);
        if (rc) return rc;
        if (ps.committed >= log_start) return QM_OK;
        /* count what is lost: never delivered, or delivered and not done */
        uint64_t lost = log_start > ps.cursor ? log_start - ps.cursor : 0;
        uint64_t top = log_start < ps.cursor ? log_start : ps.cursor;
        for (uint64_t o = ps.committed; o < top; o++) {
            uint64_t w = atomic_load_explicit(&entry_at(g, p, o)->word, memory_order_relaxed);
            lost += QM_GE_STATE(w) != QM_GE_DONE || QM_GE_TAG(w) != tag_of(g, ps.gen, o);
        }
        if (atomic_compare_exchange_strong_explicit(&pt->committed.pos, &ps.mw,
                                                    QM_GPOS(ps.gen, log_start),
                                                    memory_order_acq_rel, memory_order_relaxed)) {
            atomic_fetch_add_explicit(&pt->skipped, lost, memory_order_relaxed);
            if (skipped) *skipped = lost;
            return read_pos(g, pt, &ps);   /* moves the cursor up too */
        }
    }
    return qm__fail(QM_EAGAIN, "skip lost every race");
}

int qm__group_count_dead_lettered(qm_group_t *g, uint32_t p, uint64_t n) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions) return QM_EINVAL;
    atomic_fetch_add_explicit(&g->parts[p].dead_lettered, n, memory_order_relaxed);
    return QM_OK;
}

int qm__group_acquire(qm_group_t *g, uint32_t p) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions) return QM_EINVAL;
    int rc = member_ready(g);
    return rc ? rc : own(g, &g->parts[p], true);
}

int qm__group_release(qm_group_t *g, uint32_t p) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions) return QM_EINVAL;
    if (g->mb.slot) disown(g, p, g->mb.slot);
    return QM_OK;
}

int qm__group_next_due(qm_group_t *g, uint32_t p, int64_t *due) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions) return QM_EINVAL;
    *due = atomic_load_explicit(&g->parts[p].next_due, memory_order_relaxed);
    return QM_OK;
}

/* ----- statistics ------------------------------------------------------------------- */
int qm__group_partition_stats(qm_group_t *g, uint32_t p, qm_group_partition_stats_t *st) {
    if (!g) return QM_ECLOSED;
    if (p >= g->partitions) return QM_EINVAL;
    memset(st, 0, sizeof *st);
    qm_group_part_t *pt = &g->parts[p];
    gpos_t ps;
    int rc = read_pos(g, pt, &ps);
    if (rc) return rc;
    st->committed = ps.committed;
    st->cursor = ps.cursor;
    for (uint64_t o = ps.committed; o < ps.cursor; o++) {
        uint64_t w = atomic_load_explicit(&entry_at(g, p, o)->word, memory_order_relaxed);
        if (QM_GE_TAG(w) != tag_of(g, ps.gen, o)) continue;
        switch (QM_GE_STATE(w)) {
        case QM_GE_LEASING: st->pending++; break;
        case QM_GE_LEASED: st->pending++; st->leased++; break;
        case QM_GE_DELAYED: st->pending++; st->delayed++; break;
        case QM_GE_DONE: st->acked_ahead++; break;
        default: break;
        }
    }
    st->redelivered = atomic_load_explicit(&pt->redelivered, memory_order_relaxed);
    st->dead_lettered = atomic_load_explicit(&pt->dead_lettered, memory_order_relaxed);
    st->skipped = atomic_load_explicit(&pt->skipped, memory_order_relaxed);
    st->seeks = atomic_load_explicit(&pt->seeks, memory_order_relaxed);
    uint64_t o = atomic_load_explicit(&pt->owner, memory_order_relaxed);
    st->owner_slot = QM_GOWNER_SLOT(o);
    st->owner_epoch = QM_GOWNER_EPOCH(o);
    return QM_OK;
}

int qm__group_stats(qm_group_t *g, qm_group_stats_t *st) {
    if (!g) return QM_ECLOSED;
    memset(st, 0, sizeof *st);
    st->partitions = g->partitions;
    st->window = (uint32_t)g->window;
    st->flags = g->flags;
    st->member_slot = g->mb.slot;
    st->sweeps = atomic_load_explicit(&g->ctl->sweeps, memory_order_relaxed);
    st->reboots = atomic_load_explicit(&g->ctl->reboots, memory_order_relaxed);
    uint32_t hwm = atomic_load_explicit(&g->ctl->members_hwm, memory_order_relaxed);
    for (uint32_t k = 1; k <= hwm && k < QM_MEMBER_SLOTS; k++)
        st->members += qm__member_alive(&g->mb, k);
    return QM_OK;
}

int qm_group_config(const qm_group_t *g, qm_group_config_t *cfg) {
    if (!g) return QM_ECLOSED;
    cfg->partitions = g->partitions;
    cfg->window = (uint32_t)g->window;
    cfg->flags = g->flags;
    cfg->start = NULL;
    return QM_OK;
}

/* A lone opener (no other handle open) that finds the deadlines written
 * under another boot: CLOCK_MONOTONIC restarted, so every lease and delay
 * is due now, and every owner is gone with the old boot. */
void qm__group_expire_boot(qm_group_t *g, const uint64_t id[2]) {
    if (atomic_load_explicit(&g->ctl->boot_id[0], memory_order_relaxed) == id[0] &&
        atomic_load_explicit(&g->ctl->boot_id[1], memory_order_relaxed) == id[1])
        return;
    for (uint32_t p = 0; p < g->partitions; p++) {
        for (uint64_t i = 0; i < g->window; i++) {
            qm_group_entry_t *e = &g->entries[((uint64_t)p << g->wlog2) + i];
            uint64_t w = atomic_load_explicit(&e->word, memory_order_relaxed);
            uint32_t st = QM_GE_STATE(w);
            if (st == QM_GE_LEASING || st == QM_GE_LEASED || st == QM_GE_DELAYED)
                publish(e, QM_GE_WORD(QM_GE_DELAYED, 0, QM_GE_COUNT(w), QM_GE_TAG(w)), 0);
        }
        qm_group_part_t *pt = &g->parts[p];
        atomic_store_explicit(&pt->next_due, INT64_MIN, memory_order_relaxed);
        uint64_t o = atomic_load_explicit(&pt->owner, memory_order_relaxed);
        atomic_store_explicit(&pt->owner, QM_GOWNER(QM_GOWNER_EPOCH(o), 0), memory_order_relaxed);
    }
    atomic_store_explicit(&g->ctl->last_sweep_ns, INT64_MIN, memory_order_relaxed);
    atomic_store_explicit(&g->ctl->boot_id[0], id[0], memory_order_relaxed);
    atomic_store_explicit(&g->ctl->boot_id[1], id[1], memory_order_relaxed);
    atomic_fetch_add_explicit(&g->ctl->reboots, 1, memory_order_relaxed);
}

