/*
 * group.pml - one partition of a consumer group (csrc/src/group.c): claims
 * of new offsets, redelivery of due leases, ack and nack by the lease's
 * epoch, the sweep that releases a dead member's leases, and the committed
 * offset's advance; members die at any step (docs/design/models.md).
 *
 * Abstractions: one partition, unordered mode, claims of at most one
 * record (max = 1), no seek / retention (gen fixed), no extend, no slot
 * takeover (so no settle and a slot's generation never changes), memory
 * sequentially consistent (the G10 fence is assumed; G3 checks fences).
 * Time is a small integer clock that ticks only when every live member
 * waits (`timeout`): a member whose claim found nothing waits until some
 * shared state it could use changed (the `dirty` bit) or the clock ticked,
 * so a run where nothing can ever change again is a deadlock, which spin
 * reports as an invalid end state: "a dead member's leases are eventually
 * redelivered and every offset is committed" is checked that way.
 *
 * Knobs: NM members, WIN window entries, END offsets, KILLS deaths, NACKS
 * and HOLDS (a member keeps a lease past its deadline, then acks late),
 * TMAX clock bound.  Mutations (spin must find an error): MUT_ACK_STORE
 * (ack stores DONE instead of a CAS from the epoch), MUT_NO_OLDER (claim
 * without the cursor re-read of older_than()), MUT_DUE_IF_RELEASED
 * (release_slot lowers next_due only when it released something: the code
 * before this model found that a member killed mid-scan hides deadlines).
 */
#ifndef NM
#define NM 2
#endif
#ifndef WIN
#define WIN 2
#endif
#ifndef END
#define END 3
#endif
#ifndef KILLS
#define KILLS 1
#endif
#ifndef NACKS
#define NACKS 1
#endif
#ifndef HOLDS
#define HOLDS 1
#endif
#ifndef TMAX
#define TMAX 5
#endif
#define LEASE 1
#define SWEEPT 1
#define NONE 100              /* INT64_MAX */
#define MIN (-1)              /* INT64_MIN */

/* entry states (layout.h QM_GE_*) */
#define FREE 0
#define LEASING 1
#define LEASED 2
#define DELAYED 3
#define DONE 4

/* entry word = the lease's epoch: state, owner, delivery count, tag (lap) */
#define GW(s, o, c, t) ((s) + 8 * (o) + 32 * (c) + 256 * (t))
#define GST(w) ((w) % 8)
#define GOWN(w) (((w) / 8) % 4)
#define GCNT(w) (((w) / 32) % 8)
#define GTAG(w) ((w) / 256)

#define ALL ((1 << (NM + 1)) - 1)
#define TOUCH dirty = ALL

short ew[WIN];                /* entry words */
short edl[WIN];               /* entry deadlines */
byte cursor, committed;
short next_due = NONE;
short last_sweep;
byte clock;
byte dirty;                   /* bit m: something member m could use changed */
bool alive[NM + 1];
bool running[NM + 1];
bool settled[NM + 1];         /* the sweep released this (dead) slot */
bool claimed[END];            /* claimed as a new offset (claim_new) */
bool acked[END];              /* an ack of it returned QM_OK */
byte finished, kills, nacks, holds;

#define OK 0
#define EAGAIN 1

inline lower_due(d) {                               /* [G5] an RMW, always */
    atomic { if :: d < next_due -> next_due = d :: else fi }
}

inline publish(e, word, d) {                         /* deadline, then [G4] */
    edl[e] = d;
    atomic { ew[e] = word; TOUCH }
}

/* read_pos: cursor [G3], committed [G8]; a cursor behind committed is set
 * to it ([G2']) */
inline read_pos() {
    do
    :: pc = cursor;
       pm = committed;
       if
       :: pm > pc -> atomic { if :: cursor == pc -> cursor = pm; TOUCH :: else fi }
       :: else -> break
       fi
    od;
    assert(pc - pm <= WIN)          /* "group cursor is more than a window past" */
}

inline push_cursor(target) {                          /* [G2] */
    do
    :: a = cursor;
       if
       :: a >= target -> break
       :: else ->
          atomic {
              if
              :: cursor == a -> cursor = target; TOUCH; a = target
              :: else
              fi
          }
       fi
    od;
    a = 0
}

/* advance: help committed over the DONE prefix ([G10] fence assumed) */
inline advance() {
    do
    :: am = committed;                                /* [G8] */
       ac = cursor;                                   /* [G3] */
       if
       :: ac < am || ac - am > WIN -> break
       :: else
       fi;
       ak = am;
       do
       :: ak < ac ->
          aw = ew[ak % WIN];                          /* [G7] */
          if
          :: GST(aw) == DONE && GTAG(aw) == ak / WIN -> ak++
          :: else -> break
          fi
       :: else -> break
       od;
       if
       :: ak == am -> break
       :: else
       fi;
       atomic {                                       /* [G9'] */
           if
           :: committed == am ->
              /* never past an unacked record */
              a = am;
              do
              :: a < ak -> assert(acked[a]); a++
              :: else -> break
              od;
              committed = ak; TOUCH; ak = am
           :: else
           fi
       }
       if
       :: ak == am -> break                           /* our CAS won */
       :: else
       fi
    od;
    skip;
    d_step { am = 0; ac = 0; ak = 0; aw = 0; a = 0 }
}

/* release_slot(slot) without the generation check (no slot takeover) */
inline release_slot(slot) {
    read_pos();
    n = pc - pm + 1;
    if :: n > WIN -> n = WIN :: else fi;
    i = 0;
    rel = 0;
    do
    :: i < WIN ->
       e = (pm + i) % WIN;
       w = ew[e];                                     /* [G1] */
       if
       :: GOWN(w) != slot || (GST(w) != LEASING && GST(w) != LEASED) ->
          if :: i >= n -> break :: else fi
       :: else ->
          atomic {                                    /* [G1] */
              if
              :: ew[e] == w -> ew[e] = GW(LEASING, me, GCNT(w), GTAG(w)); ok = true
              :: else -> ok = false
              fi
          }
          if
          :: ok -> publish(e, GW(DELAYED, 0, GCNT(w), GTAG(w)), MIN); rel++
          :: else
          fi
       fi;
       i++
    :: else -> break
    od;
#ifdef MUT_DUE_IF_RELEASED
    if :: rel -> lower_due(MIN) :: else fi;   /* the code before the model found it */
#else
    lower_due(MIN);           /* always: the dead member may have died mid-scan */
#endif
    skip;
    d_step { i = 0; n = 0; e = 0; w = 0; rel = 0; ok = false; pc = 0; pm = 0 }
}

inline sweep() {
    v = 1;
    do
    :: v <= NM ->
       if
       :: v != me && !settled[v] ->
          if
          :: !alive[v] ->                             /* F_OFD_GETLK */
             release_slot(v);
             advance();
             settled[v] = true                        /* [G12'] */
          :: else
          fi
       :: else
       fi;
       v++
    :: else -> break
    od;
    v = 0
}

inline maybe_sweep() {
    ls = last_sweep;
    if
    :: ls <= now && now - ls < SWEEPT -> skip
    :: else ->
       atomic { if :: last_sweep == ls -> last_sweep = now; ok = true :: else -> ok = false fi };
       if :: ok -> sweep() :: else fi
    fi;
    ls = 0; ok = false
}

/* redeliver, max 1 */
inline redeliver() {
    atomic { was = next_due; next_due = NONE }         /* [G6] */
    read_pos();
    low = NONE;
    off = pm;
    do
    :: off < pc ->
       w = ew[off % WIN];                             /* [G1] */
       if
       :: GTAG(w) != off / WIN || (GST(w) != LEASED && GST(w) != DELAYED) -> skip
       :: else ->
          d = edl[off % WIN];
          if
          :: d > now || got -> if :: d < low -> low = d :: else fi
          :: else ->
             assert(GCNT(w) < 7);
             atomic {                                  /* [G1] */
                 if
                 :: ew[off % WIN] == w -> ew[off % WIN] = GW(LEASING, me, GCNT(w) + 1, GTAG(w)); ok = true
                 :: else -> ok = false
                 fi
             }
             if
             :: ok ->
                epoch = GW(LEASED, me, GCNT(w) + 1, GTAG(w));
                publish(off % WIN, epoch, dl);
                loff = off; got = true
             :: else
             fi
          fi
       fi;
       off++
    :: else -> break
    od;
    if :: got && dl < low -> low = dl :: else fi;
    lower_due(low);
    skip;
    d_step { was = 0; low = 0; off = 0; w = 0; d = 0; ok = false; pc = 0; pm = 0 }
}

/* claim_new, max 1, limit WIN */
inline claim_new() {
    do
    :: read_pos();
       c = pc;
       if
       :: c >= END -> break
       :: c - pm >= WIN ->
          advance();
          read_pos();
          if
          :: pc - pm < WIN -> skip                   /* retry */
          :: else -> break                           /* QM_EFULL */
          fi
       :: else ->
          w = ew[c % WIN];                            /* [G1] */
          if
          :: GST(w) == FREE -> why = 0                /* TAKE */
          :: GST(w) != FREE && GTAG(w) == c / WIN -> why = 1      /* CLAIMED */
          :: GST(w) != FREE && GTAG(w) != c / WIN ->
             if
             :: GST(w) == LEASING && GOWN(w) != me && alive[GOWN(w)] -> why = 2   /* BLOCKED */
             :: else -> why = 0
             fi
          fi;
#ifndef MUT_NO_OLDER
          if
          :: why == 0 && GST(w) != FREE && cursor > c -> why = 3  /* [G13] not older: RETRY */
          :: else
          fi;
#endif
          if
          :: why == 0 ->
             atomic {                                 /* [G1] */
                 if
                 :: ew[c % WIN] == w ->
                    ew[c % WIN] = GW(LEASING, me, 1, c / WIN);
                    assert(!claimed[c]);              /* a new offset is claimed once */
                    claimed[c] = true
                 :: else -> why = 3
                 fi
             }
          :: else
          fi;
          if
          :: why == 0 ->
             push_cursor(c + 1);
             epoch = GW(LEASED, me, 1, c / WIN);
             publish(c % WIN, epoch, dl);
             lower_due(dl);
             loff = c; got = true;
             break
          :: why == 2 -> break                        /* QM_EAGAIN */
          :: why == 1 ->
             push_cursor(c + 1);
             if
             :: GST(w) == DELAYED || GST(w) == LEASED -> d = edl[c % WIN]; lower_due(d)
             :: else
             fi
          :: why == 3 -> skip
          fi
       fi
    od;
    skip;
    d_step { c = 0; w = 0; why = 0; d = 0; pc = 0; pm = 0 }
}

inline ack() {
    atomic {                                          /* [G9] */
#ifdef MUT_ACK_STORE
        if
        :: GTAG(ew[loff % WIN]) == GTAG(epoch) ->
#else
        if
        :: ew[loff % WIN] == epoch ->
#endif
           ew[loff % WIN] = GW(DONE, 0, GCNT(epoch), GTAG(epoch));
           assert(!acked[loff]);                      /* no double completion */
           acked[loff] = true;
           TOUCH;
           ok = true
        :: else -> ok = false                         /* QM_ESTALE */
        fi
    }
    if :: ok -> advance() :: else fi;
    ok = false
}

inline nack() {
    atomic {                                          /* relock [G1] */
        if
        :: ew[loff % WIN] == epoch -> ew[loff % WIN] = GW(LEASING, me, GCNT(epoch), GTAG(epoch)); ok = true
        :: else -> ok = false
        fi
    }
    if
    :: ok ->
       publish(loff % WIN, GW(DELAYED, 0, GCNT(epoch), GTAG(epoch)), now);
       lower_due(now)
    :: else
    fi;
    ok = false
}

proctype Member(byte me) {
    short w, d, low, was, dl, now, ls, epoch, aw;
    byte pc, pm, c, a, am, ac, ak, n, i, e, rel, off, loff, v, why;
    bool ok, got;
    {
        do
        :: committed == END -> break
        :: else ->
           atomic { now = clock; dirty = dirty & ~(1 << me) };
           dl = now + LEASE;
           got = false;
           maybe_sweep();
           if
           :: now >= next_due -> redeliver()
           :: else
           fi;
           if
           :: !got -> claim_new()
           :: else
           fi;
           if
           :: got ->
              if
              :: ack()
              :: atomic { nacks < NACKS -> nacks++ }; nack()
              :: atomic { holds < HOLDS -> holds++ };
                 atomic { running[me] = false; clock > dl; running[me] = true };
                 ack()                                /* late: ESTALE if redelivered */
              fi
           :: else ->
              atomic { running[me] = false; (dirty & (1 << me)) || committed == END; running[me] = true }
           fi;
           d_step { got = false; epoch = 0; loff = 0; dl = 0; now = 0 }
        od;
        finished++
    } unless {
        !alive[me] -> atomic { TOUCH; finished++ }
    }
}

#define LIVE(v) (alive[v] && running[v])
active proctype Killer() {
end:
    do
    :: atomic { kills < KILLS && LIVE(1) && NM >= 2 && alive[2] -> alive[1] = false; kills++ }
    :: atomic { kills < KILLS && NM >= 2 && LIVE(2) && alive[1] -> alive[2] = false; kills++ }
#if NM >= 3
    :: atomic { kills < KILLS && LIVE(3) && (alive[1] || alive[2]) -> alive[3] = false; kills++ }
#endif
    od
}

active proctype Clock() {
end:
    do
    :: timeout && clock < TMAX -> atomic { clock++; TOUCH }
    od
}

init {
    byte v;
    atomic {
        v = 1;
        do
        :: v <= NM -> alive[v] = true; running[v] = true; run Member(v); v++
        :: else -> break
        od
    }
    finished == NM;
    /* every offset committed, every one acked exactly once */
    assert(committed == END);
    v = 0;
    do
    :: v < END -> assert(acked[v] && claimed[v]); v++
    :: else -> break
    od
}
