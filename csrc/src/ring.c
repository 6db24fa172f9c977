/*
 * ring.c - multi-producer multi-consumer ring of variable-length records
 * that survives the death of any producer or consumer.
 *
 * The algorithm (docs/design/ring-format.md has it with diagrams):
 *
 *  - Three free-running byte positions: tail (next claim), read (next
 *    take), head (everything below is reusable).  head <= read, and
 *    tail - head <= capacity.  They are hints any process may advance;
 *    the truth is in the record words.
 *  - A producer claims position t by CAS on the record word at t, from the
 *    exact "free for this lap" value to WRITING(lap, owner, extent), then
 *    advances tail (or someone helps it along, reading the extent from the
 *    word).  It writes the length and payload and CASes the word to
 *    COMMITTED.  Claims need no lock: a producer stalled anywhere never
 *    stops another producer.
 *  - A consumer takes the record at `read` by CAS COMMITTED -> READING
 *    (owner), advances read, copies the payload out, re-marks the body's
 *    granule words FREE(next lap) and CASes the word to FREED.  Anyone may
 *    then advance head over FREED records.
 *  - Death: a WRITING record whose owner's liveness lock is free is CASed
 *    to ABANDONED and skipped; a READING record of a dead owner is taken
 *    over, re-marked and freed.  A new owner of a dead member's slot
 *    settles its in-flight record at join.
 *  - Stall: a WRITING record whose owner is alive but has not committed
 *    for the stall timeout (a frozen process) is fenced: CASed to
 *    ABANDONED *keeping its owner*.  Consumers skip it; head stays behind
 *    it, so the late writer's copy lands in its own space.  Its commit CAS
 *    then fails; it frees the record and puts the message again.  If it
 *    dies instead, whoever needs the space frees it.
 *
 * Memory-ordering labels ([P*] produce, [C*] consume, [H*] head) are
 * listed with their partners in docs/design/memory-ordering.md.
 */
#include "internal.h"

#include <string.h>

#define HELP_ROUNDS 4096              /* bound on one attempt's retries */

/* ----- positions and record words ------------------------------------------ */
static inline _Atomic uint64_t *word_at(const qm_ring_t *r, uint64_t pos) {
    return (_Atomic uint64_t *)(r->data + (pos & (r->cap - 1)));
}
static inline _Atomic uint64_t *len_at(const qm_ring_t *r, uint64_t pos) {
    return (_Atomic uint64_t *)(r->data + (pos & (r->cap - 1)) + 8);
}
static inline uint32_t lap_of(const qm_ring_t *r, uint64_t pos) {
    return (uint32_t)(pos >> r->cap_log2);
}
static inline uint64_t lap_end(const qm_ring_t *r, uint64_t pos) {
    return ((pos >> r->cap_log2) + 1) << r->cap_log2;
}

/* Extent code: granule count as mantissa (14 bits) << exponent (5 bits),
 * rounded up; exact below 2^14 granules (1 MiB). */
static uint32_t extent_code(uint64_t granules) {
    if (granules < (UINT64_C(1) << QM_CODE_MANTISSA_BITS)) return (uint32_t)granules;
    unsigned e = (unsigned)(64 - __builtin_clzll(granules)) - QM_CODE_MANTISSA_BITS;
    uint64_t m = (granules + (UINT64_C(1) << e) - 1) >> e;
    if (m >> QM_CODE_MANTISSA_BITS) {
        e++;
        m = (granules + (UINT64_C(1) << e) - 1) >> e;
    }
    return (e << QM_CODE_MANTISSA_BITS) | (uint32_t)m;
}
static inline uint64_t code_bytes(uint32_t code) {
    uint64_t m = code & ((1u << QM_CODE_MANTISSA_BITS) - 1);
    return (m << (code >> QM_CODE_MANTISSA_BITS)) << QM_REC_GRANULE_LOG2;
}

/* Extent in bytes of the record at pos with word w, or 0 if the word
 * cannot be right (a peer scribbled on it): never past the lap's end. */
static uint64_t extent_of(const qm_ring_t *r, uint64_t pos, uint64_t w) {
    uint64_t room = lap_end(r, pos) - pos;
    uint32_t code = QM_WORD_CODE(w);
    uint64_t e;
    if (code == QM_CODE_TO_LAP_END) {
        e = room;
    } else {
        if ((code & ((1u << QM_CODE_MANTISSA_BITS) - 1)) == 0) return 0;
        e = code_bytes(code);
        if (e > r->max_extent) return 0;
    }
    return e <= room ? e : 0;
}

static inline bool unclaimed_word(uint64_t w, uint32_t lap) {
    return w == QM_WORD_FREE(lap) ||
           (QM_WORD_LAP(w) == (uint32_t)(lap - 1) && QM_WORD_STATE(w) == QM_ST_FREED);
}

static int corrupt(const char *what, uint64_t pos, uint64_t w) {
    return qm__fail(QM_ECORRUPT, "ring: %s at position %llu (word %#llx)", what,
                    (unsigned long long)pos, (unsigned long long)w);
}

static inline void counter_add(_Atomic uint64_t *c, uint64_t v) {
    /* single writer (the slot's owner): no read-modify-write needed */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}


/* ----- head: reclaiming consumed space -------------------------------------- */
static int advance_head(qm_ring_t *r) {
    qm_ring_ctl_t *c = r->ctl;
    int moved = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t h = atomic_load_explicit(&c->head.pos, memory_order_acquire);
        uint64_t rd = atomic_load_explicit(&c->read.pos, memory_order_acquire);
        if ((int64_t)(rd - h) <= 0 || ((h | rd) & (QM_REC_GRANULE - 1))) break;
        /* [H2] acquire: pairs with [C4]; the taker's reads of the payload
         * and its re-marking happen before we hand the space back. */
        uint64_t w = atomic_load_explicit(word_at(r, h), memory_order_acquire);
        if (QM_WORD_LAP(w) != lap_of(r, h) || QM_WORD_STATE(w) != QM_ST_FREED) break;
        uint64_t x = extent_of(r, h, w);
        if (!x || x > rd - h) break;
        /* [H1] release: pairs with [P3] in a producer's space check. */
        if (atomic_compare_exchange_strong_explicit(&c->head.pos, &h, h + x,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed))
            moved++;
    }
    if (moved) qm__wake(&c->space_wake);
    return moved;
}

/* Re-mark a taken record's body as free for the next lap, then FREED. */
static int release_record(qm_ring_t *r, uint64_t pos, uint64_t mine) {
    uint64_t x = extent_of(r, pos, mine);
    uint64_t next_free = QM_WORD_FREE(lap_of(r, pos) + 1);
    for (uint64_t off = QM_REC_GRANULE; off < x; off += QM_REC_GRANULE)
        atomic_store_explicit(word_at(r, pos + off), next_free, memory_order_relaxed);
    QM_KILLPOINT("ring.before_free");
    uint64_t expect = mine;
    uint64_t freed = QM_WORD(lap_of(r, pos), QM_ST_FREED, 0, QM_WORD_CODE(mine));
    /* [C4] release: our payload reads and re-marks before FREED; pairs
     * with [H2]. */
    bool ok = atomic_compare_exchange_strong_explicit(word_at(r, pos), &expect, freed,
                                                      memory_order_release,
                                                      memory_order_relaxed);
    atomic_store_explicit(&r->mb.me->reading, 0, memory_order_relaxed);
    /* Handing space back is lazy: producers advance head themselves when
     * their view runs short, so a consumer touches the head line only when
     * a producer sleeps waiting for space. */
    /* [W3'] seq_cst fence: our FREED against a producer's sleepers flag
     * (the wait.c handshake): either it sees FREED when it re-checks, or we
     * see it sleeping and advance head, which wakes it. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->ctl->space_wake.sleepers, memory_order_relaxed))
        advance_head(r);
    return ok ? QM_OK : corrupt("record taken from its reader", pos, expect);
}

/* A consumer died holding the record at head, or a fenced writer died
 * before freeing its record: take it over and free it. */
static int reclaim_dead_reader(qm_ring_t *r) {
    uint64_t h = atomic_load_explicit(&r->ctl->head.pos, memory_order_acquire);
    if (h & (QM_REC_GRANULE - 1)) return 0;   /* scribbled: put reports it */
    _Atomic uint64_t *wp = word_at(r, h);
    uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
    uint32_t st = QM_WORD_STATE(w);
    if (QM_WORD_LAP(w) != lap_of(r, h) ||
        (st != QM_ST_READING && !(st == QM_ST_ABANDONED && QM_WORD_OWNER(w))))
        return 0;   /* neither a reader's record nor a fenced writer's */
    if (!extent_of(r, h, w) || qm__member_alive(&r->mb, QM_WORD_OWNER(w))) return 0;
    uint64_t mine = QM_WORD(lap_of(r, h), QM_ST_READING, r->mb.slot, QM_WORD_CODE(w));
    atomic_store_explicit(&r->mb.me->reading, h | QM_INFLIGHT_VALID, memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(wp, &w, mine, memory_order_acq_rel,
                                                 memory_order_relaxed)) {
        atomic_store_explicit(&r->mb.me->reading, 0, memory_order_relaxed);
        return 0;
    }
    atomic_fetch_add_explicit(&r->ctl->reclaimed, 1, memory_order_relaxed);
    qm__wake(&r->ctl->join_wake);   /* a lost record counts as a finished task */
    release_record(r, h, mine);
    return 1;
}

/* A producer died holding the record at `read`: mark it abandoned.  One
 * that lives but has held it for the stall timeout (as seen by this
 * consumer) is fenced: abandoned with its owner kept (see the top). */
static int abandon_dead_writer(qm_ring_t *r) {
    uint64_t rd = atomic_load_explicit(&r->ctl->read.pos, memory_order_acquire);
    if (rd & (QM_REC_GRANULE - 1)) return 0;   /* scribbled: get reports it */
    _Atomic uint64_t *wp = word_at(r, rd);
    uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
    if (QM_WORD_LAP(w) != lap_of(r, rd) || QM_WORD_STATE(w) != QM_ST_WRITING) return 0;
    if (!extent_of(r, rd, w)) return 0;
    uint32_t keep = 0;   /* owner left in the abandoned word */
    if (qm__member_alive(&r->mb, QM_WORD_OWNER(w))) {
        int64_t now = qm__os_monotonic_ns();
        if (r->stall_pos != rd || r->stall_word != w) {   /* a new wait: start the clock */
            r->stall_pos = rd;
            r->stall_word = w;
            r->stall_since = now;
            return 0;
        }
        if (!r->stall_ns || now - r->stall_since < r->stall_ns) return 0;
        keep = QM_WORD_OWNER(w);
    }
    uint64_t dead = QM_WORD(lap_of(r, rd), QM_ST_ABANDONED, keep, QM_WORD_CODE(w));
    if (!atomic_compare_exchange_strong_explicit(wp, &w, dead, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return 0;
    atomic_fetch_add_explicit(&r->ctl->abandoned, 1, memory_order_relaxed);
    return 1;
}

void qm__ring_resolve_inflight(qm_ring_t *r, uint32_t slot, uint64_t inflight) {
    uint64_t pos = inflight & ~QM_INFLIGHT_VALID;
    if (pos & (QM_REC_GRANULE - 1)) return;   /* scribbled: ignore */
    _Atomic uint64_t *wp = word_at(r, pos);
    uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
    if (QM_WORD_LAP(w) != lap_of(r, pos) || QM_WORD_OWNER(w) != slot || !extent_of(r, pos, w))
        return;
    if (QM_WORD_STATE(w) == QM_ST_WRITING) {
        uint64_t dead = QM_WORD(lap_of(r, pos), QM_ST_ABANDONED, 0, QM_WORD_CODE(w));
        if (atomic_compare_exchange_strong_explicit(wp, &w, dead, memory_order_acq_rel,
                                                    memory_order_relaxed))
            atomic_fetch_add_explicit(&r->ctl->abandoned, 1, memory_order_relaxed);
    } else if (QM_WORD_STATE(w) == QM_ST_ABANDONED) {
        /* fenced, and its writer died before freeing it: we own the slot
         * now, so nobody else frees it (its owner looks alive) - we do */
        release_record(r, pos, w);
    } else if (QM_WORD_STATE(w) == QM_ST_READING) {
        /* Hand it to nobody (owner 0 is never alive): whoever next needs
         * the space reclaims it through reclaim_dead_reader.  Re-marking it
         * here would race a producer already reclaiming it. */
        uint64_t orphan = QM_WORD(lap_of(r, pos), QM_ST_READING, 0, QM_WORD_CODE(w));
        atomic_compare_exchange_strong_explicit(wp, &w, orphan, memory_order_acq_rel,
                                                memory_order_relaxed);
    }
}

/* ----- producing --------------------------------------------------------------- */
static uint64_t depth_of(const qm_ring_t *r) {
    uint32_t hwm = atomic_load_explicit(&r->ctl->members_hwm, memory_order_relaxed);
    if (hwm >= QM_MEMBER_SLOTS) hwm = QM_MEMBER_SLOTS - 1;
    uint64_t put = 0, got = 0;
    for (uint32_t k = 1; k <= hwm; k++) {
        put += atomic_load_explicit(&r->mb.members[k].put_count, memory_order_relaxed);
        got += atomic_load_explicit(&r->mb.members[k].got_count, memory_order_relaxed);
    }
    return put > got ? put - got : 0;
}

/* The count bound in force: the one qm_ring_set_maxsize() stored, else the
 * header's.  (The line is the one members_hwm is read from anyway.) */
static uint64_t maxsize_of(const qm_ring_t *r) {
    uint64_t m = atomic_load_explicit(&r->ctl->maxsize_set, memory_order_relaxed);
    return (m & QM_MAXSIZE_SET) ? m & ~QM_MAXSIZE_SET : r->maxsize;
}

static int try_put(qm_ring_t *r, const qm_iovec_t *iov, int iovcnt, uint64_t len) {
    qm_ring_ctl_t *c = r->ctl;
    uint64_t granules = (QM_REC_HEADER + len + QM_REC_GRANULE - 1) >> QM_REC_GRANULE_LOG2;
    uint32_t code = extent_code(granules);
    uint64_t e = code_bytes(code);
    for (int round = 0; round < HELP_ROUNDS; round++) {
        /* [P1] acquire: pairs with [P5]; the claimed word is visible. */
        uint64_t t = atomic_load_explicit(&c->tail.pos, memory_order_acquire);
        if (t & (QM_REC_GRANULE - 1)) return corrupt("misaligned tail", t, 0);
        uint32_t lap = lap_of(r, t);
        _Atomic uint64_t *wp = word_at(r, t);
        uint64_t w = atomic_load_explicit(wp, memory_order_acquire);   /* [P2] */
        if (QM_WORD_LAP(w) == lap && QM_WORD_STATE(w) != QM_ST_FREE) {
            /* claimed already: help the tail past it */
            uint64_t x = extent_of(r, t, w);
            if (!x) {
                if (atomic_load_explicit(&c->tail.pos, memory_order_acquire) != t) continue;
                return corrupt("bad record extent", t, w);
            }
            atomic_compare_exchange_strong_explicit(&c->tail.pos, &t, t + x,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed);
            continue;
        }
        uint64_t end = lap_end(r, t);
        bool pad = t + e > end;
        uint64_t need_end = pad ? end : t + e;
        /* Space check against our cached view of head first: it is a lower
         * bound, so "room" by it is room indeed, and the head's cache line
         * (written by consumers) is fetched only when the view runs short. */
        uint64_t h = r->head_seen;
        if ((int64_t)(t - h) < 0 || need_end - h > r->cap) {
            /* [P3] acquire: pairs with [H1]; the previous lap's readers are
             * done with the bytes we are about to overwrite. */
            h = r->head_seen = atomic_load_explicit(&c->head.pos, memory_order_acquire);
            if (h & (QM_REC_GRANULE - 1)) return corrupt("misaligned head", h, 0);
            if ((int64_t)(t - h) < 0 || t - h > r->cap) {
                if (atomic_load_explicit(&c->tail.pos, memory_order_acquire) != t) continue;
                return corrupt("tail and head more than a lap apart", t, h);
            }
            if (need_end - h > r->cap) {
                if (advance_head(r)) continue;
                return QM_EAGAIN;
            }
        }
        /* Re-read the word: the one above may predate the head we just
         * saw (its previous-lap reader may have finished in between). */
        w = atomic_load_explicit(wp, memory_order_acquire);
        if (QM_WORD_LAP(w) == lap && QM_WORD_STATE(w) != QM_ST_FREE) continue;
        if (!unclaimed_word(w, lap)) {
            if (atomic_load_explicit(&c->tail.pos, memory_order_acquire) != t) continue;
            return corrupt("record word neither free nor claimed", t, w);
        }
        if (!pad) {
            uint64_t bound = maxsize_of(r);
            if (bound && depth_of(r) >= bound) return QM_EAGAIN;
        }
        uint64_t claim = pad ? QM_WORD(lap, QM_ST_PAD, r->mb.slot, QM_CODE_TO_LAP_END)
                             : QM_WORD(lap, QM_ST_WRITING, r->mb.slot, code);
        if (!pad)
            atomic_store_explicit(&r->mb.me->inflight, t | QM_INFLIGHT_VALID, memory_order_relaxed);
        /* Narrow the stale-position window: if tail moved on, t is old. */
        if (atomic_load_explicit(&c->tail.pos, memory_order_acquire) != t) continue;
        QM_KILLPOINT("ring.before_claim");
        /* [P4] acq_rel: the claim; exactly one producer wins position t. */
        if (!atomic_compare_exchange_strong_explicit(wp, &w, claim, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        QM_KILLPOINT("ring.after_claim");
        /* [P5] release: pairs with [P1] in helpers. Failure means a helper
         * already moved the tail past our record - or that t was stale. */
        uint64_t expect_t = t;
        if (!atomic_compare_exchange_strong_explicit(&c->tail.pos, &expect_t, need_end,
                                                     memory_order_acq_rel,
                                                     memory_order_relaxed) &&
            expect_t - t > r->cap) {
            /* Stale position (ABA): we stalled between the tail check and the
             * claim for more than a lap, and the word at t - now inside a
             * later lap's record - held payload bytes equal to the free word
             * we expected.  A real claim keeps head <= t until it is freed,
             * so the tail cannot be a lap past it.  Put the bytes back (the
             * CAS fails if the record has moved on, and then there is
             * nothing of ours left) and never write there. */
            uint64_t mine = claim;
            atomic_compare_exchange_strong_explicit(wp, &mine, w, memory_order_relaxed,
                                                    memory_order_relaxed);
            atomic_store_explicit(&r->mb.me->inflight, 0, memory_order_relaxed);
            continue;
        }
        if (pad) continue;
        QM_KILLPOINT("ring.after_reserve");
        atomic_store_explicit(len_at(r, t), len, memory_order_relaxed);
        uint8_t *dst = (uint8_t *)wp + QM_REC_HEADER;
        QM_PAYLOAD_ACCESS_BEGIN();
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].len) memcpy(dst, iov[i].base, iov[i].len);
            dst += iov[i].len;
            if (i == 0) QM_KILLPOINT("ring.mid_copy");
        }
        QM_PAYLOAD_ACCESS_END();
        QM_KILLPOINT("ring.before_commit");
        /* [P6] release: length and payload before COMMITTED; pairs with
         * [C1]. A CAS, not a store: a consumer may have fenced us. */
        uint64_t expect = claim;
        if (!atomic_compare_exchange_strong_explicit(
                wp, &expect, QM_WORD(lap, QM_ST_COMMITTED, r->mb.slot, code),
                memory_order_release, memory_order_relaxed)) {
            if (expect != QM_WORD(lap, QM_ST_ABANDONED, r->mb.slot, code))
                return corrupt("record taken from its writer", t, expect);
            /* We stalled past the stall timeout and consumers moved on
             * without this record: free its space, put the message again. */
            atomic_store_explicit(&r->mb.me->inflight, 0, memory_order_relaxed);
            release_record(r, t, expect);
            continue;
        }
        atomic_store_explicit(&r->mb.me->inflight, 0, memory_order_relaxed);
        counter_add(&r->mb.me->put_count, 1);
        counter_add(&r->mb.me->put_bytes, len);
        return QM_OK;
    }
    return QM_EAGAIN;
}

/* ----- consuming --------------------------------------------------------------- */
static int try_get(qm_ring_t *r, qm_record_t *rec, uint32_t *blocked_on) {
    qm_ring_ctl_t *c = r->ctl;
    for (int round = 0; round < HELP_ROUNDS; round++) {
        uint64_t rd = atomic_load_explicit(&c->read.pos, memory_order_acquire);   /* [C0] */
        if (rd & (QM_REC_GRANULE - 1)) return corrupt("misaligned read position", rd, 0);
        uint32_t lap = lap_of(r, rd);
        _Atomic uint64_t *wp = word_at(r, rd);
        /* [C1] acquire: pairs with [P6]; length and payload are visible. */
        uint64_t w = atomic_load_explicit(wp, memory_order_acquire);
        uint32_t st = QM_WORD_STATE(w);
        if (QM_WORD_LAP(w) != lap || st == QM_ST_FREE) {
            /* Nothing claimed here in this lap yet.  The word may still be
             * the previous lap's record, being read or freed: the ring is
             * exactly full behind us, which is empty ahead of us. */
            bool empty = unclaimed_word(w, lap) ||
                         (QM_WORD_LAP(w) == (uint32_t)(lap - 1) && st == QM_ST_READING);
            if (atomic_load_explicit(&c->read.pos, memory_order_acquire) != rd) continue;
            return empty ? QM_EAGAIN : corrupt("record word neither free nor claimed", rd, w);
        }
        uint64_t x = extent_of(r, rd, w);
        if (!x) {
            if (atomic_load_explicit(&c->read.pos, memory_order_acquire) != rd) continue;
            return corrupt("bad record extent", rd, w);
        }
        switch (st) {
        case QM_ST_WRITING:
            *blocked_on = QM_WORD_OWNER(w);   /* FIFO: wait for this writer */
            return QM_EAGAIN;
        case QM_ST_ABANDONED:
            if (QM_WORD_OWNER(w)) {   /* fenced, its writer lives: skip it */
                uint64_t expect = rd;
                atomic_compare_exchange_strong_explicit(&c->read.pos, &expect, rd + x,
                                                        memory_order_acq_rel,
                                                        memory_order_relaxed);
                continue;
            }
            /* fall through */
        case QM_ST_COMMITTED:
        case QM_ST_PAD: {
            uint64_t mine = QM_WORD(lap, QM_ST_READING, r->mb.slot, QM_WORD_CODE(w));
            atomic_store_explicit(&r->mb.me->reading, rd | QM_INFLIGHT_VALID, memory_order_relaxed);
            /* Narrow the stale-position window: if read moved on, rd is old. */
            if (atomic_load_explicit(&c->read.pos, memory_order_acquire) != rd) continue;
            /* Count the take before making it: a consumer killed between the
             * two leaves the depth one too low, never one too high (a
             * phantom that, with maxsize, would shut producers out for good).
             * Producers count after committing, erring the same way. */
            bool counts = st == QM_ST_COMMITTED;
            if (counts) counter_add(&r->mb.me->got_count, 1);
            /* [C2] acq_rel: the take; exactly one consumer wins. */
            if (!atomic_compare_exchange_strong_explicit(wp, &w, mine, memory_order_acq_rel,
                                                         memory_order_relaxed)) {
                if (counts)
                    atomic_store_explicit(&r->mb.me->got_count,
                                          atomic_load_explicit(&r->mb.me->got_count,
                                                               memory_order_relaxed) - 1,
                                          memory_order_relaxed);
                continue;
            }
            QM_KILLPOINT("ring.after_take");
            /* [C3] the read cursor is a hint; failure: a helper moved it */
            uint64_t expect = rd;
            atomic_compare_exchange_strong_explicit(&c->read.pos, &expect, rd + x,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed);
            if (st != QM_ST_COMMITTED) {
                release_record(r, rd, mine);
                continue;
            }
            uint64_t len = atomic_load_explicit(len_at(r, rd), memory_order_relaxed);
            if (len > x - QM_REC_HEADER) {   /* read once, checked once */
                release_record(r, rd, mine);
                return corrupt("record length exceeds its extent", rd, len);
            }
            rec->data = (const uint8_t *)wp + QM_REC_HEADER;
            rec->len = len;
            rec->pos = rd;
            rec->word = mine;
            counter_add(&r->mb.me->got_bytes, len);
            return QM_OK;
        }
        case QM_ST_READING:
        case QM_ST_FREED: {
            uint64_t expect = rd;
            atomic_compare_exchange_strong_explicit(&c->read.pos, &expect, rd + x,
                                                    memory_order_acq_rel,
                                                    memory_order_relaxed);
            continue;
        }
        default:
            return corrupt("unknown record state", rd, w);
        }
    }
    return QM_EAGAIN;
}

/* ----- blocking ------------------------------------------------------------------ */
static int check_usable(qm_ring_t *r) {
    if (!r) return QM_ECLOSED;
    if (atomic_load_explicit(&r->interrupted, memory_order_relaxed)) return QM_ECLOSED;
    return qm__member_ensure(&r->mb);
}

typedef struct put_ctx {
    qm_ring_t *r;
    bool woke;
    const qm_iovec_t *iov;
    int iovcnt;
    uint64_t len;
} put_ctx_t;

static int put_attempt(void *ctx) {
    put_ctx_t *p = ctx;
    return try_put(p->r, p->iov, p->iovcnt, p->len);
}
static int put_recover(void *ctx) {
    put_ctx_t *p = ctx;
    qm_ring_t *r = p->r;
    /* Wake consumers once: we may be about to sleep on a full ring that our
     * own earlier (batched, not yet announced) puts filled. */
    if (!p->woke) {
        p->woke = true;
        qm__wake(&r->ctl->data_wake);
    }
    return reclaim_dead_reader(r) + advance_head(r);
}

static bool put_watch(void *ctx) {
    (void)ctx;
    return true;   /* full: the record at head may belong to a dead reader */
}

typedef struct get_ctx {
    qm_ring_t *r;
    qm_record_t *rec;
    uint32_t blocked_on;
} get_ctx_t;

static int get_attempt(void *ctx) {
    get_ctx_t *g = ctx;
    g->blocked_on = 0;
    return try_get(g->r, g->rec, &g->blocked_on);
}
static int get_recover(void *ctx) {
    get_ctx_t *g = ctx;
    return g->blocked_on ? abandon_dead_writer(g->r) : 0;
}
static bool get_watch(void *ctx) {
    return ((get_ctx_t *)ctx)->blocked_on != 0;   /* behind a writer that may be dead */
}

static int put_one(qm_ring_t *r, const qm_iovec_t *iov, int iovcnt, int64_t deadline,
                   bool wake) {
    uint64_t len = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].len > r->max_message - len)
            return qm__fail(QM_ETOOBIG, "message exceeds %llu bytes",
                            (unsigned long long)r->max_message);
        len += iov[i].len;
    }
    put_ctx_t ctx = {r, false, iov, iovcnt, len};
    qm_waiter_t w = {&r->ctl->space_wake, put_attempt, put_recover, put_watch, &ctx,
                     &r->interrupted, &r->fault};
    int rc = qm__wait_loop(&w, deadline);
    if (rc == QM_OK) {
        qm__member_publish_role(&r->mb, QM_MEMBER_PRODUCER);
        if (wake) qm__wake(&r->ctl->data_wake);
    }
    return rc;
}

int qm__ring_put(qm_ring_t *r, const qm_iovec_t *iov, int iovcnt, int64_t deadline) {
    int rc = check_usable(r);
    if (rc) return rc;
    if (iovcnt < 0 || (iovcnt > 0 && !iov)) return qm__fail(QM_EINVAL, "bad iovec");
    return put_one(r, iov, iovcnt, deadline, true);
}

int qm__ring_put_many(qm_ring_t *r, const qm_iovec_t *msgs, size_t count, int64_t deadline,
                     size_t *done) {
    *done = 0;
    int rc = check_usable(r);
    if (rc) return rc;
    for (size_t i = 0; i < count; i++)
        if (msgs[i].len > r->max_message)
            return qm__fail(QM_ETOOBIG, "message %zu exceeds %llu bytes", i,
                            (unsigned long long)r->max_message);
    for (size_t i = 0; i < count; i++) {
        rc = put_one(r, &msgs[i], 1, deadline, false);
        if (rc) break;
        *done = i + 1;
    }
    if (*done) qm__wake(&r->ctl->data_wake);   /* one wake for the batch */
    return rc;
}

int qm__ring_get_begin(qm_ring_t *r, qm_record_t *rec, int64_t deadline) {
    int rc = check_usable(r);
    if (rc) return rc;
    if (r->holding)   /* one record per handle: its slot tracks one for recovery */
        return qm__fail(QM_EINVAL, "this handle already holds a record; get_end it first");
    get_ctx_t ctx = {r, rec, 0};
    qm_waiter_t w = {&r->ctl->data_wake, get_attempt, get_recover, get_watch, &ctx,
                     &r->interrupted, &r->fault};
    rc = qm__wait_loop(&w, deadline);
    if (rc == QM_OK) {
        qm__member_publish_role(&r->mb, QM_MEMBER_CONSUMER);
        r->holding = true;
        r->held = *rec;
    }
    return rc;
}

int qm__ring_get_end(qm_ring_t *r, qm_record_t *rec) {
    if (!r || !r->mb.me) return QM_ECLOSED;
    if (!r->holding || rec->pos != r->held.pos || rec->word != r->held.word)
        return qm__fail(QM_EINVAL, "get_end of a record this handle does not hold");
    r->holding = false;
    return release_record(r, rec->pos, rec->word);
}

/* ----- observation ------------------------------------------------------------------ */
int qm__ring_depth(qm_ring_t *r, uint64_t *depth) {
    if (!r) return QM_ECLOSED;
    *depth = depth_of(r);
    return QM_OK;
}

int qm__ring_stats(qm_ring_t *r, qm_ring_stats_t *st) {
    if (!r) return QM_ECLOSED;
    memset(st, 0, sizeof *st);
    uint32_t hwm = atomic_load_explicit(&r->ctl->members_hwm, memory_order_relaxed);
    if (hwm >= QM_MEMBER_SLOTS) hwm = QM_MEMBER_SLOTS - 1;
    for (uint32_t k = 1; k <= hwm; k++) {
        qm_member_t *m = &r->mb.members[k];
        st->put += atomic_load_explicit(&m->put_count, memory_order_relaxed);
        st->got += atomic_load_explicit(&m->got_count, memory_order_relaxed);
        st->bytes_put += atomic_load_explicit(&m->put_bytes, memory_order_relaxed);
        st->bytes_got += atomic_load_explicit(&m->got_bytes, memory_order_relaxed);
        if (!qm__member_alive(&r->mb, k)) continue;
        uint32_t roles = atomic_load_explicit(&m->roles, memory_order_relaxed);
        st->members++;
        st->producers += (roles & QM_MEMBER_PRODUCER) != 0;
        st->consumers += (roles & QM_MEMBER_CONSUMER) != 0;
    }
    st->depth = st->put > st->got ? st->put - st->got : 0;
    st->depth_bytes = st->bytes_put > st->bytes_got ? st->bytes_put - st->bytes_got : 0;
    uint64_t h = atomic_load_explicit(&r->ctl->head.pos, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&r->ctl->tail.pos, memory_order_relaxed);
    st->used_bytes = (t - h <= r->cap) ? t - h : r->cap;
    st->capacity = r->cap;
    st->max_message = r->max_message;
    st->maxsize = maxsize_of(r);
    st->abandoned = atomic_load_explicit(&r->ctl->abandoned, memory_order_relaxed);
    st->reclaimed = atomic_load_explicit(&r->ctl->reclaimed, memory_order_relaxed);
    st->member_slot = r->mb.slot;
    return QM_OK;
}

uint64_t qm_ring_capacity(const qm_ring_t *r) { return r ? r->cap : 0; }
uint64_t qm_ring_max_message(const qm_ring_t *r) { return r ? r->max_message : 0; }
uint64_t qm_ring_maxsize(const qm_ring_t *r) { return r ? maxsize_of(r) : 0; }

int qm__ring_set_maxsize(qm_ring_t *r, uint64_t maxsize) {
    if (!r) return QM_ECLOSED;
    if (maxsize & QM_MAXSIZE_SET) return qm__fail(QM_EINVAL, "maxsize must be below 2**63");
    atomic_store_explicit(&r->ctl->maxsize_set, QM_MAXSIZE_SET | maxsize, memory_order_relaxed);
    qm__wake(&r->ctl->space_wake);   /* a larger bound lets waiting producers in */
    return QM_OK;
}

/* ----- tasks: task_done() and join() ------------------------------------------------
 * unfinished = messages put - task_done() calls - records of dead consumers
 * (reclaimed: lost, so never to be done).  Counts only: no record knows
 * whether it was done.  A consumer killed after its get and before its
 * task_done leaves that task unfinished (join() then waits for its timeout). */
static void counts_of(const qm_ring_t *r, uint64_t *put, uint64_t *got) {
    uint32_t hwm = atomic_load_explicit(&r->ctl->members_hwm, memory_order_relaxed);
    if (hwm >= QM_MEMBER_SLOTS) hwm = QM_MEMBER_SLOTS - 1;
    *put = *got = 0;
    for (uint32_t k = 1; k <= hwm; k++) {
        *put += atomic_load_explicit(&r->mb.members[k].put_count, memory_order_relaxed);
        *got += atomic_load_explicit(&r->mb.members[k].got_count, memory_order_relaxed);
    }
}

static uint64_t unfinished_of(const qm_ring_t *r) {
    uint64_t put, got;
    counts_of(r, &put, &got);
    /* [T2] acquire: pairs with [T1]; the done count is at least what the
     * task_done() calls before our wake had made it. */
    uint64_t done = atomic_load_explicit(&r->ctl->tasks_done, memory_order_acquire) +
                    atomic_load_explicit(&r->ctl->reclaimed, memory_order_relaxed);
    return put > done ? put - done : 0;
}

int qm__ring_task_done(qm_ring_t *r, uint64_t n) {
    if (!r) return QM_ECLOSED;
    uint64_t done = atomic_load_explicit(&r->ctl->tasks_done, memory_order_relaxed);
    for (;;) {
        uint64_t put, got;
        counts_of(r, &put, &got);
        /* bounded by the gets (a get counts itself before it returns; a put
         * counts itself after its record is visible, so puts may lag) */
        if (n > got || done > got - n)
            return qm__fail(QM_EINVAL, "task_done() called more times than messages were got");
        /* [T1] release: pairs with [T2] */
        if (atomic_compare_exchange_weak_explicit(&r->ctl->tasks_done, &done, done + n,
                                                  memory_order_release, memory_order_relaxed))
            break;
    }
    if (unfinished_of(r) == 0) qm__wake(&r->ctl->join_wake);
    return QM_OK;
}

int qm__ring_unfinished(qm_ring_t *r, uint64_t *out) {
    if (!r) return QM_ECLOSED;
    *out = unfinished_of(r);
    return QM_OK;
}

int qm__ring_join(qm_ring_t *r, int64_t deadline) {
    if (!r) return QM_ECLOSED;
    for (;;) {
        uint32_t seq = qm__sleep_prepare(&r->ctl->join_wake);
        if (atomic_load_explicit(&r->interrupted, memory_order_relaxed)) return QM_ECLOSED;
        if (unfinished_of(r) == 0) return QM_OK;
        int64_t now = qm__os_monotonic_ns();
        if (now >= deadline) return QM_ETIMEDOUT;
        /* slices: a dead consumer's lost record is counted done when a peer
         * reclaims it, which wakes nobody */
        int64_t slice = 100 * INT64_C(1000000);
        int rc = qm__sleep(&r->ctl->join_wake, seq, deadline - now > slice ? now + slice : deadline);
        if (rc == QM_EINTR) return QM_EINTR;
        if (rc != QM_OK && rc != QM_ETIMEDOUT) return rc;
    }
}

void qm__ring_release_held(qm_ring_t *r) {
    if (r && r->holding && r->mb.me) {
        r->holding = false;
        release_record(r, r->held.pos, r->held.word);
    }
}

void qm_ring_set_stall_timeout(qm_ring_t *r, int64_t ns) {
    if (r) r->stall_ns = ns > 0 ? ns : 0;
}

void qm_ring_interrupt(qm_ring_t *r) {
    if (!r) return;
    atomic_store_explicit(&r->interrupted, 1, memory_order_relaxed);
    qm_ring_wake_all(r);
}

void qm_ring_wake_all(qm_ring_t *r) {
    if (!r) return;
    qm_wake_line_t *lines[2] = {&r->ctl->data_wake, &r->ctl->space_wake};
    for (int i = 0; i < 2; i++) {
        atomic_fetch_add_explicit(&lines[i]->seq, 1, memory_order_release);
        qm__os_futex_wake_all(&lines[i]->seq);
    }
}
