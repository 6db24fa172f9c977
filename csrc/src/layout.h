/*
 * layout.h - every byte pyqmem shares between processes.
 *
 * This file is the format.  It holds no code: fixed-width types, offsets
 * (never pointers), explicit padding and _Static_asserts on every size and
 * every offset another process reads.  A change here is a format change:
 * bump QM_FORMAT_MAJOR (incompatible) or QM_FORMAT_MINOR (compatible
 * addition in reserved space) and update docs/design/ring-format.md.
 *
 * A shared object (a ring today) is one file in /dev/shm:
 *
 *   0       header page (4096 B): qm_header, then the ring's hot lines
 *   4096    member table: QM_MEMBER_SLOTS x 64 B (slot 0 is never used)
 *   69632   data: capacity bytes, a power of two, in 64-byte granules
 *
 * Hot words that different processes write sit on their own 128-byte line:
 * x86 fetches adjacent 64-byte lines in pairs (the "spatial prefetcher") and
 * many arm64 parts have 128-byte lines, so 64 bytes of padding is not enough
 * to stop false sharing.
 */
#ifndef QM_LAYOUT_H
#define QM_LAYOUT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Only lock-free, address-free atomics may live in shared memory: a
 * non-lock-free atomic uses a process-private lock table. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");
_Static_assert(sizeof(_Atomic uint64_t) == 8, "no hidden lock in _Atomic u64");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "no hidden lock in _Atomic u32");

/* "qmemring" read as a big-endian string: a byte-swapped reader sees
 * "gnirmemq" and refuses, so the magic also detects byte-order mismatch. */
#define QM_MAGIC_RING UINT64_C(0x716d656d72696e67)

#define QM_FORMAT_MAJOR 1
#define QM_FORMAT_MINOR 0
/* A ring's own minor version: 1 added tasks_done, maxsize_set and
 * join_wake in what 1.0 left reserved (zero there means "no task done, the
 * header's maxsize, nobody joining", so 1.0 rings read as 1.1 ones). */
#define QM_RING_FORMAT_MINOR 1

#define QM_KIND_RING 1u

#define QM_HOT_LINE 128u       /* padding unit for hot words, see above */
#define QM_HEADER_BYTES 4096u  /* header page */
#define QM_MEMBER_SLOTS 1024u  /* slot 0 reserved: owner 0 means "nobody" */
#define QM_MEMBER_BYTES 64u

/* ---------------------------------------------------------------------
 * Object header: written once by the creator, read-only afterwards.
 * The creator fills every field, then release-stores `magic` [O1]; an
 * opener acquire-loads `magic` [O2] before reading anything else.
 * ------------------------------------------------------------------- */
typedef struct qm_header {
    _Atomic uint64_t magic;         /*   0: QM_MAGIC_*, 0 while being created */
    uint16_t format_major;          /*   8 */
    uint16_t format_minor;          /*  10 */
    uint32_t header_bytes;          /*  12: QM_HEADER_BYTES */
    uint64_t layout_fingerprint;    /*  16: qm__layout_fingerprint() */
    uint64_t feature_flags;         /*  24: none defined yet; unknown => refuse */
    uint32_t object_kind;           /*  32: QM_KIND_* */
    uint32_t creator_pid;           /*  36: display only, never trusted */
    uint64_t created_unix_ns;       /*  40: display only */
    uint64_t total_bytes;           /*  48: size of the whole file */
    uint64_t members_offset;        /*  56 */
    uint32_t member_slots;          /*  64 */
    uint32_t member_bytes;          /*  68 */
    uint64_t data_offset;           /*  72 */
    uint64_t data_bytes;            /*  80: ring capacity, power of two */
    uint32_t granule_log2;          /*  88: QM_REC_GRANULE_LOG2 */
    uint32_t capacity_log2;         /*  92 */
    uint64_t max_message;           /* 96: largest payload accepted, bytes */
    uint64_t maxsize;               /* 104: message-count bound, 0 = none */
    uint64_t reserved[18];          /* 112..255: zero */
} qm_header_t;

_Static_assert(sizeof(qm_header_t) == 256, "header size");
_Static_assert(offsetof(qm_header_t, format_major) == 8, "format_major");
_Static_assert(offsetof(qm_header_t, layout_fingerprint) == 16, "fingerprint");
_Static_assert(offsetof(qm_header_t, object_kind) == 32, "object_kind");
_Static_assert(offsetof(qm_header_t, total_bytes) == 48, "total_bytes");
_Static_assert(offsetof(qm_header_t, data_offset) == 72, "data_offset");
_Static_assert(offsetof(qm_header_t, capacity_log2) == 92, "capacity_log2");
_Static_assert(offsetof(qm_header_t, maxsize) == 104, "maxsize");

/* A futex word and a "someone may sleep" flag, on their own line: a waker
 * reads `sleepers` after every publish, so the line must not bounce with
 * the cursors.  `sleepers` is a flag, not a count: a sleeper sets it, the
 * waker that sees it clears it and wakes everyone, and sleepers that still
 * have to wait set it again.  A sleeper killed in its sleep therefore costs
 * one spurious wake, never a syscall on every later operation.  The futex
 * word is 32 bits on every platform; its wrap is harmless because sleepers
 * re-check the 64-bit state after every wake. */
typedef struct qm_wake_line {
    _Atomic uint32_t seq;       /* bumped by a waker that found sleepers set */
    _Atomic uint32_t sleepers;  /* nonzero: a process may sleep on seq */
    uint8_t pad[QM_HOT_LINE - 8];
} qm_wake_line_t;

typedef struct qm_cursor_line {
    _Atomic uint64_t pos;       /* free-running byte position, never reset */
    uint8_t pad[QM_HOT_LINE - 8];
} qm_cursor_line_t;

/* The ring's control block: the rest of the header page.
 *   tail  next position a producer claims (a hint: claims are decided by
 *         the record word; any producer may advance a lagging tail)
 *   read  next position a consumer claims (same helping rule)
 *   head  everything below it is free for the next lap; head <= read
 */
typedef struct qm_ring_ctl {
    qm_header_t header;          /*    0 */
    qm_cursor_line_t tail;       /*  256: producers */
    qm_cursor_line_t read;       /*  384: consumers */
    qm_cursor_line_t head;       /*  512: whoever frees */
    qm_wake_line_t data_wake;    /*  640: consumers sleep here */
    qm_wake_line_t space_wake;   /*  768: producers sleep here */
    _Atomic uint32_t members_hwm;/*  896: highest member slot ever taken */
    uint32_t pad0;
    _Atomic uint64_t abandoned;  /*  904: records of dead producers skipped */
    _Atomic uint64_t reclaimed;  /*  912: records of dead consumers freed */
    _Atomic uint64_t tasks_done; /*  920: task_done() calls, ever (1.1) */
    _Atomic uint64_t maxsize_set;/*  928: QM_MAXSIZE_SET | bound once set (1.1) */
    uint8_t pad1[1024 - 936];
    qm_wake_line_t join_wake;    /* 1024: join() sleeps here (1.1) */
    uint8_t reserved[QM_HEADER_BYTES - 1152];
} qm_ring_ctl_t;

/* maxsize_set: 0 until qm_ring_set_maxsize(); then this flag | the bound,
 * which replaces the header's maxsize for every handle. */
#define QM_MAXSIZE_SET (UINT64_C(1) << 63)

_Static_assert(sizeof(qm_ring_ctl_t) == QM_HEADER_BYTES, "ring header page");
_Static_assert(offsetof(qm_ring_ctl_t, tail) == 256, "tail line");
_Static_assert(offsetof(qm_ring_ctl_t, read) == 384, "read line");
_Static_assert(offsetof(qm_ring_ctl_t, head) == 512, "head line");
_Static_assert(offsetof(qm_ring_ctl_t, data_wake) == 640, "data wake line");
_Static_assert(offsetof(qm_ring_ctl_t, space_wake) == 768, "space wake line");
_Static_assert(offsetof(qm_ring_ctl_t, members_hwm) == 896, "members hwm");
_Static_assert(offsetof(qm_ring_ctl_t, abandoned) == 904, "abandoned count");
_Static_assert(offsetof(qm_ring_ctl_t, reclaimed) == 912, "reclaimed count");
_Static_assert(offsetof(qm_ring_ctl_t, tasks_done) == 920, "tasks done");
_Static_assert(offsetof(qm_ring_ctl_t, maxsize_set) == 928, "maxsize set");
_Static_assert(offsetof(qm_ring_ctl_t, join_wake) == 1024, "join wake line");
_Static_assert(offsetof(qm_ring_ctl_t, tail) % QM_HOT_LINE == 0, "tail aligned");

/* ---------------------------------------------------------------------
 * Member slot: one per attached handle, 64 bytes.  Liveness is NOT stored
 * here: slot k is alive while someone holds the OFD lock on byte
 * QM_LOCK_BASE + k of the object file (the kernel drops it on death).
 * Every field is written only by the slot's current owner.
 * ------------------------------------------------------------------- */
#define QM_MEMBER_PRODUCER 1u   /* has put at least once */
#define QM_MEMBER_CONSUMER 2u   /* has got at least once */

typedef struct qm_member {
    _Atomic uint32_t pid;           /*  0: display only */
    _Atomic uint32_t roles;         /*  4: QM_MEMBER_* of the current owner */
    _Atomic uint64_t inflight;      /*  8: record position being written or
                                     *     read, | QM_INFLIGHT_VALID; a new
                                     *     owner of the slot resolves it */
    _Atomic uint64_t put_count;     /* 16: cumulative over all owners */
    _Atomic uint64_t got_count;     /* 24 */
    _Atomic uint64_t put_bytes;     /* 32 */
    _Atomic uint64_t got_bytes;     /* 40 */
    _Atomic uint64_t generation;    /* 48: +1 each time the slot is taken */
    _Atomic uint64_t reading;       /* 56: record position being read (ring) |
                                     *     QM_INFLIGHT_VALID; `inflight` is the
                                     *     one being written */
} qm_member_t;

#define QM_INFLIGHT_VALID (UINT64_C(1) << 63)

_Static_assert(sizeof(qm_member_t) == QM_MEMBER_BYTES, "member size");
_Static_assert(offsetof(qm_member_t, inflight) == 8, "inflight");
_Static_assert(offsetof(qm_member_t, put_count) == 16, "put_count");
_Static_assert(offsetof(qm_member_t, generation) == 48, "generation");
_Static_assert(offsetof(qm_member_t, reading) == 56, "reading");

/* Liveness lock bytes live far past the end of any file (locks may cover
 * bytes beyond EOF); byte QM_LOCK_BASE + 0 is the creation lock. */
#define QM_LOCK_BASE (INT64_C(1) << 40)
/* Every member also holds a shared lock on this byte: whoever can take it
 * exclusively has the object to itself (and may repair it). */
#define QM_GATE_LOCK (QM_LOCK_BASE + 2047)
/* A partition log's control file: the roll lock (held while a segment is
 * rolled) and the sync lock (held by the group-commit leader). */
#define QM_LOG_ROLL_LOCK (QM_LOCK_BASE + QM_MEMBER_SLOTS)
#define QM_LOG_SYNC_LOCK (QM_LOCK_BASE + QM_MEMBER_SLOTS + 1)
_Static_assert(QM_LOG_SYNC_LOCK < QM_GATE_LOCK, "log locks below the gate lock");

#define QM_MEMBERS_OFFSET ((uint64_t)QM_HEADER_BYTES)
#define QM_DATA_OFFSET (QM_MEMBERS_OFFSET + (uint64_t)QM_MEMBER_SLOTS * QM_MEMBER_BYTES)
_Static_assert(QM_DATA_OFFSET == 69632, "data offset");
_Static_assert(QM_DATA_OFFSET % 4096 == 0, "data is page aligned");

/* ---------------------------------------------------------------------
 * Records in the data area.
 *
 * A record starts on a 64-byte granule:
 *   +0  word0 (u64, atomic): the record word, see below
 *   +8  length (u64): payload bytes, written before COMMITTED
 *   +16 payload
 * and occupies a whole number of granules (its "extent").  Records never
 * straddle the end of the data area: a PAD record fills the rest of a lap.
 *
 * Record word, 64 bits:
 *   63..32  lap tag: (position >> capacity_log2) mod 2^32
 *   31..29  state (QM_ST_*)
 *   28..19  owner member slot (0 = nobody)
 *   18..0   extent code: 0 = "to the end of this lap", else
 *           mantissa (13..0) << exponent (18..14) granules
 *
 * Every granule-aligned word of free space holds FREE(lap) for the lap in
 * which it will next be used, or the dead FREED word of the previous lap.
 * A producer claims position p by CAS from exactly those values.  A
 * producer holding a position a lap or more stale (ABA) can still match
 * them only if p now lies inside a later record whose payload holds that
 * exact word; its tail CAS then fails with the tail more than a lap past p,
 * and it puts the bytes back (ring.c, [P5]; docs/design/ring-format.md).
 * ------------------------------------------------------------------- */
#define QM_REC_GRANULE_LOG2 6u
#define QM_REC_GRANULE (1u << QM_REC_GRANULE_LOG2)
#define QM_REC_HEADER 16u

#define QM_ST_FREE 0u        /* free space (with QM_FREE_MAGIC in low bits) */
#define QM_ST_WRITING 1u     /* claimed by producer `owner`, payload pending */
#define QM_ST_COMMITTED 2u   /* payload complete, waiting for a consumer */
#define QM_ST_READING 3u     /* claimed by consumer `owner` */
#define QM_ST_FREED 4u       /* consumed; head may pass it */
#define QM_ST_ABANDONED 5u   /* producer died while WRITING: skip */
#define QM_ST_PAD 6u         /* filler to the end of the lap: skip */

#define QM_FREE_MAGIC UINT32_C(0x0e5a3c71)   /* 29 bits, arbitrary */
_Static_assert(QM_FREE_MAGIC < (UINT32_C(1) << 29), "free magic fits");

#define QM_WORD_LAP(w) ((uint32_t)((w) >> 32))
#define QM_WORD_STATE(w) ((uint32_t)(((w) >> 29) & 7u))
#define QM_WORD_OWNER(w) ((uint32_t)(((w) >> 19) & 1023u))
#define QM_WORD_CODE(w) ((uint32_t)((w) & 0x7ffffu))
#define QM_WORD(lap, state, owner, code)                                     \
    (((uint64_t)(uint32_t)(lap) << 32) | ((uint64_t)(state) << 29) |        \
     ((uint64_t)(owner) << 19) | (uint64_t)(code))
#define QM_WORD_FREE(lap) \
    (((uint64_t)(uint32_t)(lap) << 32) | ((uint64_t)QM_ST_FREE << 29) | QM_FREE_MAGIC)

#define QM_CODE_MANTISSA_BITS 14u
#define QM_CODE_TO_LAP_END 0u

_Static_assert(QM_MEMBER_SLOTS <= 1024, "owner field is 10 bits");

/* =====================================================================
 * Partition log (Topic): one folder per partition,
 *
 *   control                 shared control object (qm_log_ctl_t + member
 *                           table): append word, active segment, wake line
 *   <base offset>.log       segments, 20-digit zero-padded base offset,
 *                           preallocated to segment_bytes
 *
 * Segments are append-only and never reused: free space is zero, so a
 * record word of 0 always means "nothing claimed here yet", and a CAS from
 * 0 cannot hit reused bytes (no ABA).  Retention deletes whole segments.
 * ===================================================================== */

/* "qmemplog" / "qmemlseg" read as big-endian strings */
#define QM_MAGIC_LOG_CTL UINT64_C(0x716d656d706c6f67)
#define QM_MAGIC_SEGMENT UINT64_C(0x716d656d6c736567)
#define QM_KIND_LOG 2u

/* The append word: [gen:12][count:20][pos:32].  gen is the active
 * segment's generation mod 4096, count the records claimed in it, pos the
 * next byte position.  One CAS reserves an offset (base + count) and its
 * bytes together; gen makes a stalled writer's CAS fail after a roll. */
#define QM_APPEND_POS(a) ((uint32_t)((a) & 0xffffffffu))
#define QM_APPEND_COUNT(a) ((uint32_t)(((a) >> 32) & 0xfffffu))
#define QM_APPEND_GEN(a) ((uint32_t)((a) >> 52))
#define QM_APPEND(gen, count, pos)                                                \
    (((uint64_t)((gen) & 0xfffu) << 52) | ((uint64_t)((count) & 0xfffffu) << 32) | \
     (uint64_t)(uint32_t)(pos))
#define QM_SEGMENT_MAX_RECORDS 0xfffffu      /* count field: roll before it fills */
#define QM_SEGMENT_MAX_BYTES (UINT64_C(1) << 32)

typedef struct qm_log_ctl {
    qm_header_t header;              /*    0: object_kind = QM_KIND_LOG; data_bytes =
                                      *       segment_bytes; capacity_log2 unused (0) */
    qm_cursor_line_t append;         /*  256: the append word, see above */
    _Atomic uint64_t active_base;    /*  384: base offset of the active segment */
    _Atomic uint64_t active_gen;     /*  392: full generation of the active segment */
    _Atomic uint64_t abandoned;      /*  400: records of dead writers marked ABANDONED */
    _Atomic uint64_t rolls;          /*  408: segments rolled */
    _Atomic uint64_t start_offset;   /*  416: first offset not deleted by retention */
    _Atomic uint64_t recoveries;     /*  424: opens that found no one else and checked */
    _Atomic uint64_t tail_cuts;      /*  432: torn tails cut by those checks */
    uint8_t pad_seg[QM_HOT_LINE - 56];
    qm_wake_line_t data_wake;        /*  512: readers sleep here */
    _Atomic uint32_t members_hwm;    /*  640 */
    uint32_t flags;                  /*  644: QM_LOG_FSYNC; fixed at creation */
    uint64_t retention_bytes;        /*  648: fixed at creation; 0 = keep all */
    int64_t retention_ns;            /*  656: fixed at creation; 0 = keep all */
    uint8_t pad1[768 - 664];
    /* group commit (QM_LOG_FSYNC): syncs are numbered; an append waits for
     * one numbered above the count it saw after committing */
    _Atomic uint64_t sync_low_base;  /*  768: oldest segment the last sync covered */
    _Atomic uint64_t sync_started;   /*  776 */
    _Atomic uint64_t sync_done;      /*  784 */
    _Atomic int32_t sync_error;      /*  792: errno of a failed fdatasync: read-only */
    uint32_t pad2;
    _Atomic uint64_t syncs;          /*  800: fdatasync calls */
    _Atomic uint64_t synced_appends; /*  808: appends they covered */
    uint8_t pad3[896 - 816];
    qm_wake_line_t sync_wake;        /*  896: appends waiting for a sync */
    uint64_t recovered_boot[2];      /* 1024: boot id at the last recovery or
                                      *       creation; 0 = unknown (older files:
                                      *       a compatible use of reserved bytes) */
    uint8_t reserved[QM_HEADER_BYTES - 1040];
} qm_log_ctl_t;

_Static_assert(sizeof(qm_log_ctl_t) == QM_HEADER_BYTES, "log control page");
_Static_assert(offsetof(qm_log_ctl_t, append) == 256, "append line");
_Static_assert(offsetof(qm_log_ctl_t, active_base) == 384, "active base");
_Static_assert(offsetof(qm_log_ctl_t, active_gen) == 392, "active gen");
_Static_assert(offsetof(qm_log_ctl_t, data_wake) == 512, "log wake line");
_Static_assert(offsetof(qm_log_ctl_t, members_hwm) == 640, "log members hwm");
_Static_assert(offsetof(qm_log_ctl_t, retention_ns) == 656, "retention");
_Static_assert(offsetof(qm_log_ctl_t, start_offset) == 416, "start offset");
_Static_assert(offsetof(qm_log_ctl_t, sync_low_base) == 768, "sync line");
_Static_assert(offsetof(qm_log_ctl_t, synced_appends) == 808, "sync counters");
_Static_assert(offsetof(qm_log_ctl_t, sync_wake) == 896, "sync wake line");
_Static_assert(offsetof(qm_log_ctl_t, recovered_boot) == 1024, "recovered boot id");

/* Segment file header, 128 bytes, written before the segment is published
 * and never changed. */
typedef struct qm_segment_header {
    uint64_t magic;                  /*   0: QM_MAGIC_SEGMENT */
    uint16_t format_major;           /*   8 */
    uint16_t format_minor;           /*  10 */
    uint32_t header_bytes;           /*  12: QM_SEGMENT_HEADER */
    uint64_t layout_fingerprint;     /*  16 */
    uint64_t base_offset;            /*  24: offset of the first record */
    uint64_t segment_bytes;          /*  32: file size */
    uint64_t generation;             /*  40: segments rolled before this one */
    uint64_t created_unix_ns;        /*  48 */
    _Atomic uint64_t reserved_to;    /*  56: bytes from the start whose space is
                                      *      allocated (format 1.1); 0: all of them
                                      *      (1.0 segments were allocated whole) */
    uint64_t reserved[8];            /*  64..127: zero */
} qm_segment_header_t;

/* A segment's minor version: 1 added reserved_to (the file is created at
 * full size but allocated in doubling steps from QM_SEGMENT_FIRST_RESERVE). */
#define QM_SEGMENT_FORMAT_MINOR 1
#define QM_SEGMENT_FIRST_RESERVE (UINT64_C(256) << 10)

#define QM_SEGMENT_HEADER 128u
_Static_assert(sizeof(qm_segment_header_t) == QM_SEGMENT_HEADER, "segment header");
_Static_assert(offsetof(qm_segment_header_t, base_offset) == 24, "base offset");
_Static_assert(offsetof(qm_segment_header_t, reserved_to) == 56, "reserved to");

/* A log record: 8-byte aligned, `len` bytes in all.
 *   word0   [state:3 @63][owner:10 @51][len:32 @0]
 *   crc     CRC-32C of bytes [12, 40) and of key, headers and value
 *   key_len, offset, timestamp (unix ns), headers_len, value_len
 *   key, headers, value, zero padding to 8
 * An END record (state END) closes a segment: nothing follows it. */
typedef struct qm_record_header {
    _Atomic uint64_t word0;          /*  0 */
    uint32_t crc;                    /*  8 */
    uint32_t key_len;                /* 12 */
    uint64_t offset;                 /* 16 */
    int64_t timestamp_ns;            /* 24 */
    uint32_t headers_len;            /* 32 */
    uint32_t value_len;              /* 36 */
} qm_record_header_t;

#define QM_RECORD_HEADER 40u
_Static_assert(sizeof(qm_record_header_t) == QM_RECORD_HEADER, "record header");
_Static_assert(offsetof(qm_record_header_t, crc) == 8, "crc");
_Static_assert(offsetof(qm_record_header_t, key_len) == 12, "crc covers from here");
_Static_assert(offsetof(qm_record_header_t, value_len) == 36, "value_len");

#define QM_REC_EMPTY 0u        /* never claimed (free, zero-filled space) */
#define QM_REC_WRITING 1u
#define QM_REC_COMMITTED 2u
#define QM_REC_ABANDONED 3u    /* writer died: the offset stays a gap */
#define QM_REC_END 4u          /* segment closed here */

/* Sparse index, file <base offset>.idx beside each segment: entry k (16 B)
 * describes the record covering byte k * QM_INDEX_INTERVAL of the segment,
 * written by that record's writer after committing it (so each entry has
 * exactly one writer).  Entries are in position order, hence in offset
 * order; an entry of 0 is unwritten (a dead writer or not reached yet). */
#define QM_INDEX_INTERVAL 4096u
typedef struct qm_index_entry {
    _Atomic uint64_t where;          /* (offset - base + 1) << 32 | byte position */
    _Atomic int64_t timestamp_ns;    /* the record's timestamp */
} qm_index_entry_t;
_Static_assert(sizeof(qm_index_entry_t) == 16, "index entry");

#define QM_REC_STATE(w) ((uint32_t)((w) >> 61))
#define QM_REC_OWNER(w) ((uint32_t)(((w) >> 51) & 1023u))
#define QM_REC_LEN(w) ((uint32_t)((w) & 0xffffffffu))
#define QM_REC_WORD(state, owner, len) \
    (((uint64_t)(state) << 61) | ((uint64_t)(owner) << 51) | (uint64_t)(uint32_t)(len))

/* =====================================================================
 * Consumer group: one file per group, <topic folder>/groups/<group>.grp
 * (docs/design/groups.md).
 *
 *   0        header page: qm_group_ctl_t
 *   4096     member table, as every object's (liveness by OFD lock)
 *   69632    settled table: QM_MEMBER_SLOTS x u64, the member generation
 *            whose leases a sweep already released after it died
 *   77824    partitions: `partitions` x qm_group_part_t (384 B)
 *   entries  page aligned: `partitions` x window x qm_group_entry_t (16 B)
 *
 * Per partition a window of 2^window_log2 entries; the record at offset o
 * owns entry o mod window while it is pending.  Claims never let the
 * delivery cursor run more than a window ahead of the committed offset,
 * so an entry is only reused after the offset it held was committed.
 * ===================================================================== */

/* "qmemgrup" read as a big-endian string */
#define QM_MAGIC_GROUP UINT64_C(0x716d656d67727570)
#define QM_KIND_GROUP 3u

#define QM_GROUP_MAX_PARTITIONS 4096u
#define QM_GROUP_MIN_WINDOW_LOG2 4u      /* 16 entries */
#define QM_GROUP_MAX_WINDOW_LOG2 16u     /* 65536 entries */
#define QM_GROUP_PART_BYTES 384u
#define QM_GROUP_ENTRY_BYTES 16u
#define QM_GROUP_SETTLED_OFFSET QM_DATA_OFFSET
#define QM_GROUP_PARTS_OFFSET (QM_GROUP_SETTLED_OFFSET + (uint64_t)QM_MEMBER_SLOTS * 8u)
_Static_assert(QM_GROUP_PARTS_OFFSET == 77824, "group partitions offset");
_Static_assert(QM_GROUP_PARTS_OFFSET % 4096 == 0, "partitions are page aligned");

/* Cursor and committed words: [gen:16][offset:48].  `gen` changes on every
 * seek, so a claimer or helper that read the word before a seek fails its
 * CAS after it, even when the seek set the same offset (no ABA).  Offsets
 * stop at 2^48 - 1: 8.9 years of 10^6 records/s on one partition. */
#define QM_GPOS_OFF_BITS 48u
#define QM_GPOS_MAX_OFFSET ((UINT64_C(1) << QM_GPOS_OFF_BITS) - 1)
#define QM_GPOS(gen, off) (((uint64_t)(uint16_t)(gen) << QM_GPOS_OFF_BITS) | ((off) & QM_GPOS_MAX_OFFSET))
#define QM_GPOS_GEN(w) ((uint16_t)((w) >> QM_GPOS_OFF_BITS))
#define QM_GPOS_OFF(w) ((w) & QM_GPOS_MAX_OFFSET)

/* Entry word, 64 bits, moved by CAS:
 *   63..61  state (QM_GE_*)
 *   60..51  owner member slot (0 = nobody)
 *   50..39  delivery count, saturating at QM_GE_MAX_COUNT
 *   38..0   tag: (gen mod 2^8) << 31 | (offset >> window_log2) mod 2^31
 * The tag names the offset the entry holds (with its index); the whole word
 * is the lease's epoch: every delivery changes the count, so an ack that
 * CASes from the word it was given fails once the lease moved on.  Wrap:
 * a stale word matches again only after 2^31 laps of the window (2^35
 * offsets at the smallest window) or 4095 deliveries of one record. */
#define QM_GE_FREE 0u        /* never used since the file was created */
#define QM_GE_LEASING 1u     /* owner is writing the deadline: its own until then */
#define QM_GE_LEASED 2u      /* delivered to owner until the deadline */
#define QM_GE_DELAYED 3u     /* nacked or released: deliverable from the deadline on */
#define QM_GE_DONE 4u        /* acked (or completed at delivery) */
#define QM_GE_MAX_COUNT 4095u
#define QM_GE_TAG_BITS 39u
#define QM_GE_TAG_MASK ((UINT64_C(1) << QM_GE_TAG_BITS) - 1)
#define QM_GE_LAP_MASK UINT64_C(0x7fffffff)
#define QM_GE_STATE(w) ((uint32_t)((w) >> 61))
#define QM_GE_OWNER(w) ((uint32_t)(((w) >> 51) & 1023u))
#define QM_GE_COUNT(w) ((uint32_t)(((w) >> 39) & 0xfffu))
#define QM_GE_TAG(w) ((w) & QM_GE_TAG_MASK)
#define QM_GE_WORD(state, owner, count, tag)                                   \
    (((uint64_t)(state) << 61) | ((uint64_t)((owner) & 1023u) << 51) |       \
     ((uint64_t)((count) & 0xfffu) << 39) | ((tag) & QM_GE_TAG_MASK))
#define QM_GE_MAKE_TAG(gen, offset, window_log2)                               \
    ((((uint64_t)(gen) & 0xffu) << 31) | (((offset) >> (window_log2)) & QM_GE_LAP_MASK))

/* Ordered mode's owner word: [epoch:54][slot:10]; slot 0 = no owner.  The
 * epoch grows by one on every change of owner. */
#define QM_GOWNER_SLOT(w) ((uint32_t)((w) & 1023u))
#define QM_GOWNER_EPOCH(w) ((w) >> 10)
#define QM_GOWNER(epoch, slot) (((uint64_t)(epoch) << 10) | (uint64_t)((slot) & 1023u))

typedef struct qm_group_entry {
    _Atomic uint64_t word;           /* 0: see above */
    _Atomic int64_t deadline_ns;     /* 8: CLOCK_MONOTONIC; LEASED: lease end,
                                      *    DELAYED: not before.  Written only
                                      *    by the owner of a LEASING word */
} qm_group_entry_t;
_Static_assert(sizeof(qm_group_entry_t) == QM_GROUP_ENTRY_BYTES, "group entry");

/* One partition's state.  Claimers write `cursor`, ackers `committed`: each
 * on its own 128-byte line.  The third line is read on every claim and
 * written rarely (next_due lowers, redeliveries, ownership changes). */
typedef struct qm_group_part {
    qm_cursor_line_t cursor;         /*   0: next never-delivered offset */
    qm_cursor_line_t committed;      /* 128: every offset below it is done */
    _Atomic int64_t next_due;        /* 256: lower bound of the earliest deadline
                                      *      of a LEASED/DELAYED entry; INT64_MAX none */
    _Atomic uint64_t owner;          /* 264: ordered mode, QM_GOWNER */
    _Atomic uint64_t redelivered;    /* 272: deliveries with count > 1 */
    _Atomic uint64_t dead_lettered;  /* 280: bumped by the policy layer */
    _Atomic uint64_t skipped;        /* 288: offsets jumped over (retention) */
    _Atomic uint64_t seeks;          /* 296 */
    uint64_t reserved[10];           /* 304..383: zero */
} qm_group_part_t;
_Static_assert(sizeof(qm_group_part_t) == QM_GROUP_PART_BYTES, "group partition");
_Static_assert(offsetof(qm_group_part_t, committed) == 128, "committed line");
_Static_assert(offsetof(qm_group_part_t, next_due) == 256, "next_due");
_Static_assert(offsetof(qm_group_part_t, owner) == 264, "owner");
_Static_assert(offsetof(qm_group_part_t, seeks) == 296, "seeks");

typedef struct qm_group_ctl {
    qm_header_t header;              /*    0: object_kind = QM_KIND_GROUP;
                                      *       data_offset = parts_offset,
                                      *       data_bytes = total - parts_offset,
                                      *       capacity_log2 = window_log2 */
    uint32_t partitions;             /*  256 */
    uint32_t window_log2;            /*  260 */
    uint32_t flags;                  /*  264: QM_GROUP_ORDERED */
    uint32_t pad0;                   /*  268 */
    uint64_t settled_offset;         /*  272: QM_GROUP_SETTLED_OFFSET */
    uint64_t parts_offset;           /*  280: QM_GROUP_PARTS_OFFSET */
    uint64_t entries_offset;         /*  288 */
    _Atomic uint64_t boot_id[2];     /*  296: /proc boot id of the boot whose
                                      *       CLOCK_MONOTONIC the deadlines use;
                                      *       rewritten only by a lone opener */
    uint8_t pad1[384 - 312];
    _Atomic int64_t last_sweep_ns;   /*  384: when a liveness sweep last ran */
    _Atomic uint32_t members_hwm;    /*  392 */
    uint32_t pad2;
    _Atomic uint64_t sweeps;         /*  400: sweeps that found a dead member */
    _Atomic uint64_t reboots;        /*  408: opens that expired leases of an old boot */
    uint8_t reserved[QM_HEADER_BYTES - 416];
} qm_group_ctl_t;
_Static_assert(sizeof(qm_group_ctl_t) == QM_HEADER_BYTES, "group header page");
_Static_assert(offsetof(qm_group_ctl_t, partitions) == 256, "group partitions");
_Static_assert(offsetof(qm_group_ctl_t, entries_offset) == 288, "group entries offset");
_Static_assert(offsetof(qm_group_ctl_t, boot_id) == 296, "group boot id");
_Static_assert(offsetof(qm_group_ctl_t, last_sweep_ns) == 384, "group sweep line");
_Static_assert(offsetof(qm_group_ctl_t, reboots) == 408, "group reboots");


#endif /* QM_LAYOUT_H */
