/*
 * ring.pml - the MPMC ring of csrc/src/ring.c and the futex handshake of
 * csrc/src/wait.c, with process death at any step (docs/design/models.md).
 *
 * Abstractions: every record is one granule (no PAD, no body re-marks, no
 * extent decoding); positions count records, lap = pos / SLOTS; the member
 * slot's inflight/reading marks are not modelled (no slot takeover); memory
 * is sequentially consistent (the W2/W3 fences are assumed; G3 checks
 * them).  A process dies when the Killer frees its liveness lock
 * (alive[v] = false): from then on it takes no step ("unless").
 *
 * A sleep ends by a wake (futex value changed, or FUTEX_WAKE), or by its
 * slice timeout only when the C code relies on the timeout: a dead process
 * owed a wake (debt; a consumer that died holding a record counts, for the
 * producers' 10 ms liveness slices), or the liveness check has something
 * to recover (a dead writer at read, a dead reader at head).  Every other wait must be
 * ended by a wake: a lost wakeup is a deadlock, which spin reports as an
 * invalid end state.
 *
 * Compile-time knobs: NP producers, NC consumers (1..2), SLOTS ring slots,
 * MSGS messages per producer, KILLS deaths.  Mutations (spin must find an
 * error): MUT_ABANDON_LIVE (abandon without the liveness check),
 * MUT_NO_RECHECK (sleep without re-checking after announcing),
 * MUT_NO_W3 (release_record never looks at the producers' sleepers flag).
 */
#ifndef NP
#define NP 3
#endif
#ifndef NC
#define NC 2
#endif
#ifndef SLOTS
#define SLOTS 4
#endif
#ifndef MSGS
#define MSGS 2
#endif
#ifndef KILLS
#define KILLS 1
#endif

#define TOTAL (NP * MSGS)
#define NPROC (NP + NC)

/* record states (layout.h QM_ST_*) */
#define FREE 0
#define WRITING 1
#define COMMITTED 2
#define READING 3
#define FREED 4
#define ABANDONED 5

/* record word: lap, state, owner (member slot; 0 = nobody, never alive) */
#define W(l, s, o) ((l) * 64 + (s) * 8 + (o))
#define WLAP(w) ((w) / 64)
#define WST(w) (((w) / 8) % 8)
#define WOWN(w) ((w) % 8)
/* unclaimed_word(): FREE for this lap, or the previous lap's FREED */
#define UNCLAIMED(w, l) ((w) == W(l, FREE, 0) || (WLAP(w) == (l) - 1 && WST(w) == FREED))

#define OK 0
#define EAGAIN 1

short word[SLOTS];
byte data[SLOTS];               /* payload: message id + 1 (0 = none) */
byte tail, rdp, head;       /* the three cursors (tail, read, head lines) */
bool alive[NPROC + 1];      /* liveness lock held; slot 0 = nobody */
bool fin[NPROC + 1];        /* finished normally */
bool cmt[TOTAL];            /* committed (P6 done) */
bool taken[TOTAL];          /* taken by a consumer (C2 on COMMITTED) */
byte resolved;              /* messages taken, or never to be committed */
byte finished;
byte kills;
bool debtD, debtS;          /* a dead process owed a data / space wake */

/* wake lines: 0 = data (consumers sleep), 1 = space (producers sleep) */
bool sleepers[2];
byte seq[2];
bool asleep[NPROC + 1];     /* inside FUTEX_WAIT */

#define DEAD_WRITER_AT_READ \
    (WLAP(word[rdp % SLOTS]) == rdp / SLOTS && WST(word[rdp % SLOTS]) == WRITING && !alive[WOWN(word[rdp % SLOTS])])
#define DEAD_READER_AT_HEAD \
    (WLAP(word[head % SLOTS]) == head / SLOTS && WST(word[head % SLOTS]) == READING && !alive[WOWN(word[head % SLOTS])])
#define ORACLE_C (debtD || DEAD_WRITER_AT_READ || resolved == TOTAL)
#define ORACLE_P (debtS || DEAD_READER_AT_HEAD)

/* ----- wait.c ------------------------------------------------------------------- */
inline futex_wake_all(L) {
    d_step {
        i = 1;
        do
        :: i <= NPROC ->
           if
           :: (L == 0 && i > NP) || (L == 1 && i <= NP) -> asleep[i] = false
           :: else
           fi;
           i++
        :: else -> break
        od
    }
}

/* qm__wake: [W3] fence + load, [W4] exchange, [W5] seq += 1, futex wake */
inline wake(L) {
    atomic {
        if
        :: sleepers[L] -> sleepers[L] = false; wk = L + 1   /* owes this wake */
        :: else
        fi
    }
    if
    :: wk -> seq[L]++; futex_wake_all(L); wk = 0
    :: else
    fi
}

/* qm__sleep_prepare: read seq, then [W1] announce and [W2] fence.  Reading
 * seq after announcing (MUT_ANNOUNCE_FIRST, the code before the model found
 * it) loses a wakeup: a stale waker consumes the announcement and bumps seq
 * before the read, and the next publisher sees no sleeper. */
inline prepare(L) {
#ifdef MUT_ANNOUNCE_FIRST
    sleepers[L] = true;
    s = seq[L]
#else
    s = seq[L];
    sleepers[L] = true
#endif
}

/* qm__sleep: FUTEX_WAIT(seq == s) with a slice timeout */
inline futex_wait(L, ORACLE) {
    atomic {
        if
        :: seq[L] != s -> skip
        :: else ->
           asleep[me] = true;
           if
           :: !asleep[me] -> skip
           :: ORACLE -> asleep[me] = false; slice_over = true
           fi
        fi
    }
}

/* ----- ring.c: head ------------------------------------------------------------- */
inline advance_head() {
    moved = 0;
    do
    :: h2 = head;                                             /* acquire */
       r2 = rdp;
       if
       :: r2 <= h2 -> break
       :: else
       fi;
       w2 = word[h2 % SLOTS];                                     /* [H2] */
       if
       :: WLAP(w2) != h2 / SLOTS || WST(w2) != FREED -> break
       :: else
       fi;
       atomic {                                               /* [H1] */
           if
           :: head == h2 -> head = h2 + 1; moved++; oweS = true
           :: else
           fi
       }
    od;
    h2 = 0; r2 = 0; w2 = 0;
    if
    :: moved -> wake(1)
    :: else
    fi
}

/* release_record(pos, mine): [C4] READING(me) -> FREED, then the [W3']
 * fence and the producers' sleepers flag */
inline release_record(pos, mine) {
    atomic {
        assert(word[pos % SLOTS] == mine);   /* else "record taken from its reader" */
        word[pos % SLOTS] = W(pos / SLOTS, FREED, 0);
        oweS = true;
        holding = false
    }
#ifndef MUT_NO_W3
    if
    :: sleepers[1] -> advance_head()
    :: else
    fi;
#endif
    oweS = false
}

/* A consumer died holding the record at head: take it over and free it. */
inline reclaim_dead_reader() {
    got = 0;
    h2 = head;
    w2 = word[h2 % SLOTS];
    if
    :: WLAP(w2) == h2 / SLOTS && WST(w2) == READING ->
       if
       :: !alive[WOWN(w2)] ->                                  /* F_OFD_GETLK */
          atomic {
              if
              :: word[h2 % SLOTS] == w2 -> word[h2 % SLOTS] = W(h2 / SLOTS, READING, me); got = 1
              :: else
              fi
          }
          if
          :: got -> release_record(h2, W(h2 / SLOTS, READING, me))
          :: else
          fi
       :: else
       fi
    :: else
    fi;
    h2 = 0; w2 = 0
}

/* A producer died holding the record at read: mark it abandoned. */
inline abandon_dead_writer() {
    got = 0;
    r2 = rdp;
    w2 = word[r2 % SLOTS];
    if
    :: WLAP(w2) == r2 / SLOTS && WST(w2) == WRITING ->
#ifdef MUT_ABANDON_LIVE
       if
       :: true ->
#else
       if
       :: !alive[WOWN(w2)] ->                                  /* F_OFD_GETLK */
#endif
          atomic {
              if
              :: word[r2 % SLOTS] == w2 -> word[r2 % SLOTS] = W(r2 / SLOTS, ABANDONED, 0); got = 1
              :: else
              fi
          }
       :: else
       fi
    :: else
    fi;
    r2 = 0; w2 = 0
}

/* ----- ring.c: try_put (used once per proctype: it has labels) --------------------- */
inline try_put() {
    skip;
put_again:
    t = tail;                                                 /* [P1] */
    atomic { lap = t / SLOTS; w = word[t % SLOTS] }                   /* [P2] */
    if
    :: WLAP(w) == lap && WST(w) != FREE ->                    /* claimed: help */
       atomic { if :: tail == t -> tail = t + 1 :: else fi };
       goto put_again
    :: else
    fi;
    if
    :: t < hseen || t + 1 - hseen > SLOTS ->                      /* cached head too old */
       hseen = head;                                          /* [P3] */
       if
       :: t < hseen || t - hseen > SLOTS ->
          if
          :: tail != t -> goto put_again
          :: else -> assert(false)   /* "tail and head more than a lap apart" */
          fi
       :: else
       fi;
       if
       :: t + 1 - hseen > SLOTS ->
          advance_head();
          if
          :: moved -> goto put_again
          :: else -> rc = EAGAIN; goto put_done
          fi
       :: else
       fi
    :: else
    fi;
    w = word[t % SLOTS];                                          /* re-read */
    if
    :: WLAP(w) == lap && WST(w) != FREE -> goto put_again
    :: else
    fi;
    if
    :: !UNCLAIMED(w, lap) ->
       if
       :: tail != t -> goto put_again
       :: else -> assert(false)      /* "record word neither free nor claimed" */
       fi
    :: else
    fi;
    if
    :: tail != t -> goto put_again                            /* stale-position check */
    :: else
    fi;
    atomic {                                                  /* [P4] the claim */
        if
        :: word[t % SLOTS] == w -> word[t % SLOTS] = W(lap, WRITING, me); ok = true
        :: else -> ok = false
        fi
    }
    if
    :: !ok -> goto put_again
    :: else
    fi;
    atomic {                                                  /* [P5] */
        if
        :: tail == t -> tail = t + 1
        :: else -> assert(tail - t <= SLOTS)   /* the ABA undo needs payload aliasing */
        fi
    }
    data[t % SLOTS] = msg + 1;                                    /* length + payload */
    atomic {                                                  /* [P6] */
        assert(word[t % SLOTS] == W(lap, WRITING, me));   /* else "record taken from its writer" */
        word[t % SLOTS] = W(lap, COMMITTED, me);
        cmt[msg] = true;
        ncommitted++;
        oweD = true
    }
    rc = OK;
put_done:
    skip;
    d_step { t = 0; lap = 0; w = 0; ok = false }
}

/* ----- ring.c: try_get (used once per proctype) ------------------------------------ */
inline try_get() {
    skip;
get_again:
    r = rdp;                                                  /* [C0] */
    atomic { lap = r / SLOTS; w = word[r % SLOTS]; st = WST(w) }      /* [C1] */
    if
    :: WLAP(w) != lap || st == FREE ->
       ok = UNCLAIMED(w, lap) || (WLAP(w) == lap - 1 && st == READING);
       if
       :: rdp != r -> goto get_again
       :: else
       fi;
       assert(ok);                   /* else "record word neither free nor claimed" */
       rc = EAGAIN;
       goto get_done
    :: else
    fi;
    if
    :: st == WRITING -> blocked_on = WOWN(w); rc = EAGAIN     /* FIFO: wait for it */
    :: st == COMMITTED || st == ABANDONED ->
       if
       :: rdp != r -> goto get_again                          /* stale-position check */
       :: else
       fi;
       atomic {                                               /* [C2] the take */
           if
           :: word[r % SLOTS] == w ->
              word[r % SLOTS] = W(lap, READING, me);
              ok = true;
              holding = true;
              if
              :: st == COMMITTED ->
                 m = data[r % SLOTS] - 1;
                 assert(m < TOTAL && cmt[m]);  /* never torn: only committed payload */
                 assert(!taken[m]);            /* never delivered twice */
                 taken[m] = true;
                 resolved++
              :: else
              fi
           :: else -> ok = false
           fi
       }
       if
       :: !ok -> goto get_again
       :: else
       fi;
       atomic { if :: rdp == r -> rdp = r + 1 :: else fi };   /* [C3] */
       if
       :: st != COMMITTED -> release_record(r, W(lap, READING, me)); goto get_again
       :: else -> held = r; rc = OK
       fi
    :: st == READING || st == FREED ->                        /* help read past it */
       atomic { if :: rdp == r -> rdp = r + 1 :: else fi };
       goto get_again
    :: else -> assert(false)          /* "unknown record state" */
    fi;
get_done:
    skip;
    d_step { r = 0; lap = 0; w = 0; st = 0; ok = false }
}

/* ----- processes ------------------------------------------------------------------ */
proctype Producer(byte me) {
    byte t, lap, hseen, h2, r2, moved, k, msg, s, i, pc, ncommitted, got, g1;
    short w, w2;
    bool ok, woke, slice_over, oweD, oweS, holding;
    byte rc, wk;
    {
        do
        :: k == MSGS -> break
        :: else ->
           msg = (me - 1) * MSGS + k;
           pc = 0; woke = false; slice_over = false;
           do                                       /* qm__wait_loop */
           :: try_put();
              if
              :: rc == OK -> break
              :: else
              fi;
#ifdef MUT_NO_RECHECK
              prepare(1); futex_wait(1, ORACLE_P); pc = 3
#else
              if
              :: pc == 0 ->                         /* put_recover once */
                 if
                 :: !woke -> woke = true; wake(0)
                 :: else
                 fi;
                 reclaim_dead_reader(); g1 = got; advance_head();
                 if
                 :: g1 + moved > 0 -> pc = 1
                 :: else -> prepare(1); pc = 2
                 fi
              :: pc == 1 || pc == 3 -> prepare(1); pc = 2
              :: pc == 2 ->
                 g1 = 0; moved = 0;
                 if
                 :: slice_over ->                   /* put_watch: always */
                    slice_over = false;
                    reclaim_dead_reader(); g1 = got; advance_head()
                 :: else
                 fi;
                 if
                 :: g1 + moved > 0 -> prepare(1)
                 :: else -> futex_wait(1, ORACLE_P); pc = 3
                 fi
              fi
#endif
           od;
           skip;
           d_step { pc = 0; s = 0; g1 = 0; got = 0; moved = 0; slice_over = false };
           k++;
           wake(0);                                 /* put_one: wake consumers */
           oweD = false
        od;
        atomic { fin[me] = true; finished++ }
    } unless {
        !alive[me] ->
        atomic {
            resolved = resolved + MSGS - ncommitted;   /* never to be committed */
            if :: oweD || wk == 1 -> debtD = true :: else fi;
            if :: oweS || wk == 2 -> debtS = true :: else fi;
            asleep[me] = false;
            finished++
        }
    }
}

proctype Consumer(byte me) {
    byte r, lap, h2, r2, moved, m, s, i, pc, held, got, g1, blocked_on, st, t, hseen;
    short w, w2;
    bool ok, slice_over, oweD, oweS, holding;
    byte rc, wk;
    {
        do
        :: resolved == TOTAL -> break
        :: else ->
           pc = 0; slice_over = false;
           do                                       /* qm__wait_loop */
           :: blocked_on = 0;
              try_get();
              if
              :: rc == OK -> break
              :: resolved == TOTAL -> break         /* everything accounted for */
              :: else
              fi;
#ifdef MUT_NO_RECHECK
              prepare(0); futex_wait(0, ORACLE_C); pc = 3
#else
              if
              :: pc == 0 ->                         /* get_recover */
                 got = 0;
                 if
                 :: blocked_on -> abandon_dead_writer()
                 :: else
                 fi;
                 if
                 :: got -> pc = 1
                 :: else -> prepare(0); pc = 2
                 fi
              :: pc == 1 || pc == 3 -> prepare(0); pc = 2
              :: pc == 2 ->
                 got = 0;
                 if
                 :: blocked_on && slice_over ->     /* get_watch */
                    slice_over = false; abandon_dead_writer()
                 :: else
                 fi;
                 if
                 :: got -> prepare(0)
                 :: else -> futex_wait(0, ORACLE_C); pc = 3
                 fi
              fi
#endif
           od;
           if
           :: rc == OK ->                           /* the payload is ours until get_end */
              assert(data[held % SLOTS] == m + 1);      /* not overwritten while held */
              release_record(held, W(held / SLOTS, READING, me))
           :: else
           fi;
           d_step { pc = 0; s = 0; got = 0; blocked_on = 0; slice_over = false; m = 0; held = 0; rc = 0 }
        od;
        atomic { fin[me] = true; finished++ }
    } unless {
        !alive[me] ->
        atomic {
            /* died holding a record (between C2 and C4): producers short of
             * space rely on their 10 ms liveness slices (put_watch), e.g.
             * when it died before C3 and its reclaimed record can only be
             * passed once a helper moves read, which announces nothing */
            if :: oweS || wk == 2 || holding -> debtS = true :: else fi;
            if :: wk == 1 -> debtD = true :: else fi;
            asleep[me] = false;
            finished++
        }
    }
}

#define LIVE_C(v) (alive[v] && !fin[v])
#if NC >= 2
#define CAN_KILL(v) (alive[v] && !fin[v] && \
    ((v) <= NP || (LIVE_C(NP + 1) + LIVE_C(NP + 2) >= 2)))
#else
#define CAN_KILL(v) (alive[v] && !fin[v] && (v) <= NP)
#endif

active proctype Killer() {
end:
    do
    :: atomic { kills < KILLS && 1 <= NPROC && CAN_KILL(1) -> alive[1] = false; kills++ }
    :: atomic { kills < KILLS && 2 <= NPROC && CAN_KILL(2) -> alive[2] = false; kills++ }
    :: atomic { kills < KILLS && 3 <= NPROC && CAN_KILL(3) -> alive[3] = false; kills++ }
    :: atomic { kills < KILLS && 4 <= NPROC && CAN_KILL(4) -> alive[4] = false; kills++ }
    :: atomic { kills < KILLS && 5 <= NPROC && CAN_KILL(5) -> alive[5] = false; kills++ }
    od
}

init {
    byte v;
    atomic {
        v = 1;
        do
        :: v <= NPROC -> alive[v] = true; v++
        :: else -> break
        od;
        v = 1;
        do
        :: v <= NP -> run Producer(v); v++
        :: v > NP && v <= NPROC -> run Consumer(v); v++
        :: else -> break
        od
    }
    /* everyone finished or died: no committed message lost */
    finished == NPROC;
    v = 0;
    do
    :: v < TOTAL -> assert(!cmt[v] || taken[v]); v++
    :: else -> break
    od;
    assert(resolved == TOTAL);
    /* the cursors are hints: a claimer that died before [P5] leaves tail
     * behind a record that read has passed since */
    assert(head <= rdp && rdp - head <= SLOTS && (tail < rdp || tail - head <= SLOTS))
}
