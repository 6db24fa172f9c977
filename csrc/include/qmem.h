/*
 * qmem.h - the pyqmem C core.  This header is the manual.
 *
 * pyqmem moves messages between processes on one host through shared
 * memory, with no daemon and no lock on the data path, and survives
 * `kill -9` of any participant.  This core is C11 with no Python in it;
 * pyqmem/_core.pyx binds it.
 *
 * Conventions
 *   - Every function returns int: 0 (QM_OK) on success, a negative QM_E*
 *     code (range -30999..-30000, never overlapping -errno) for pyqmem's
 *     own conditions, or -errno for an operating-system error.
 *     qm_status_str() names both.
 *   - Deadlines are absolute CLOCK_MONOTONIC nanoseconds (qm_now_ns()).
 *     QM_NOWAIT never blocks, QM_FOREVER blocks until done.  A blocking
 *     call returns QM_EINTR when a signal arrives so the caller can run
 *     its handlers (Python's Ctrl-C), then calls again with the same
 *     deadline.
 *   - Handles are per thread: one qm_ring_t may be used by one thread at a
 *     time.  Any number of handles, in any number of processes, may use
 *     one ring concurrently.
 *   - Everything read from shared memory is validated before use; a peer
 *     that scribbles over the mapping makes calls return QM_ECORRUPT, never
 *     crash or hang.
 *
 * The byte format is csrc/src/layout.h; the algorithm and the memory-
 * ordering table are in docs/design/.
 */
#ifndef QMEM_H
#define QMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ----- status codes ---------------------------------------------------- */
enum {
    QM_OK = 0,
    QM_EAGAIN = -30001,      /* would block: ring full (put) or empty (get) */
    QM_ETIMEDOUT = -30002,   /* the deadline passed */
    QM_EINTR = -30003,       /* a signal arrived while blocked; call again */
    QM_ETOOBIG = -30004,     /* the message can never fit; nothing was done */
    QM_ECORRUPT = -30005,    /* shared memory failed validation */
    QM_EINCOMPAT = -30006,   /* other format version or layout */
    QM_ENOTFOUND = -30007,   /* open without create: no such object */
    QM_EEXIST = -30008,      /* exclusive create: object exists */
    QM_ENOTREADY = -30009,   /* object exists but its creator is still at work */
    QM_EINVAL = -30010,      /* bad argument (name, capacity, ...) */
    QM_EMEMBERS = -30011,    /* member table full (1023 live handles) */
    QM_EPERM = -30012,       /* object owned by another user, or open to
                              * group/others, or not a regular file */
    QM_ECLOSED = -30013,     /* handle already closed */
    QM_EGONE = -30014        /* object truncated under us */
};

/* Name of a status: QM_* codes and -errno values alike. Never NULL. */
const char *qm_status_str(int status);

/* Details of the last failure in this thread (e.g. "format 2.0, this
 * build reads 1.x"), or "" when the failing call gave none. */
const char *qm_last_error(void);

/* ----- time -------------------------------------------------------------- */
#define QM_NOWAIT ((int64_t)0)
#define QM_FOREVER INT64_MAX

/* CLOCK_MONOTONIC now, in nanoseconds. */
int64_t qm_now_ns(void);

/* ----- checksums ----------------------------------------------------------
 * CRC-32C (Castagnoli) of `len` bytes, continuing from `crc` (0 to start):
 * qm_crc32c(qm_crc32c(0, a, n), b, m) == CRC of a followed by b.  Uses the
 * CPU's CRC32C instruction when present.  Check value: "123456789" ->
 * 0xE3069283. */
uint32_t qm_crc32c(uint32_t crc, const void *data, size_t len);

/* ----- names ------------------------------------------------------------
 * A name matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$.  Returns QM_OK or
 * QM_EINVAL; checked by every call that takes a name, before any file is
 * touched. */
int qm_name_check(const char *name);

/* The file a ring named `name` lives in:
 * ${PYQMEM_SHM_DIR:-/dev/shm}/pyqmem.<uid>.q.<name>.  Returns the length
 * written (excluding NUL), or QM_EINVAL if the name is bad or the buffer
 * too small. */
int qm_ring_path(const char *name, char *buf, size_t buflen);

/* ----- ring: multi-producer multi-consumer FIFO of variable-length records
 *
 * Semantics
 *   - FIFO in the order producers claimed their slot; every committed
 *     record is handed to exactly one qm_ring_get_begin().
 *   - A producer killed before committing: its record is abandoned (never
 *     delivered) once a consumer sees the producer's liveness lock free.
 *   - A consumer killed between get_begin and get_end: its record is
 *     dropped (at-most-once) and the space reclaimed.
 *   - qm_ring_max_message() bytes (capacity / 4) always fit in an empty
 *     ring.  Larger is QM_ETOOBIG before anything is reserved.
 */
typedef struct qm_ring qm_ring_t;

typedef enum qm_open_mode {
    QM_OPEN_OR_CREATE = 0,  /* attach, or create if missing */
    QM_CREATE_ONLY = 1,     /* create; QM_EEXIST if it exists */
    QM_OPEN_ONLY = 2        /* attach; QM_ENOTFOUND if missing */
} qm_open_mode_t;

typedef struct qm_iovec {
    const void *base;
    size_t len;
} qm_iovec_t;

/* A record handed out by qm_ring_get_begin().  `data` points into the
 * shared mapping and is valid until qm_ring_get_end(). */
typedef struct qm_record {
    const void *data;
    uint64_t len;
    uint64_t pos;            /* private to the ring */
    uint64_t word;           /* private to the ring */
} qm_record_t;

typedef struct qm_ring_stats {
    uint64_t put, got, bytes_put, bytes_got;  /* cumulative over all members */
    uint64_t depth;          /* messages committed and not yet taken */
    uint64_t depth_bytes;    /* payload bytes of those */
    uint64_t used_bytes;     /* ring bytes not yet reclaimed (head..tail) */
    uint64_t capacity;       /* data bytes */
    uint64_t max_message;
    uint64_t maxsize;
    uint64_t abandoned;      /* records of dead producers skipped, ever */
    uint64_t reclaimed;      /* records of dead consumers freed, ever */
    uint32_t producers;      /* live members that have put */
    uint32_t consumers;      /* live members that have got */
    uint32_t members;        /* live members */
    uint32_t member_slot;    /* this handle's slot */
} qm_ring_stats_t;

/* Open (or create) the ring `name`.
 *   capacity  data bytes, rounded up to a power of two in
 *             [4096, 2^40]; ignored when attaching to an existing ring
 *             (0 is accepted with QM_OPEN_ONLY).
 *   maxsize   message-count bound, 0 = bytes only; ignored when attaching.
 * The file is created 0600 with O_EXCL|O_NOFOLLOW, its space reserved with
 * posix_fallocate (a full /dev/shm is -ENOSPC now, never SIGBUS later),
 * its header published last.  An existing file must be a regular file of
 * this user, not open to group or others (QM_EPERM), with our magic and
 * format major version (QM_EINCOMPAT otherwise) and a consistent header
 * (QM_ECORRUPT).  A creator that died mid-creation is detected through
 * its creation lock; the next opener re-creates the ring in place.
 * Errors: QM_EINVAL, QM_EEXIST, QM_ENOTFOUND, QM_EPERM, QM_EINCOMPAT,
 * QM_ECORRUPT, QM_ENOTREADY, QM_EMEMBERS, -errno (ENOSPC, EMFILE, ...). */
int qm_ring_open(const char *name, qm_open_mode_t mode, uint64_t capacity,
                 uint64_t maxsize, qm_ring_t **out);

/* Release the handle: its member slot, lock and mapping.  Never removes
 * the object.  NULL is accepted. */
void qm_ring_close(qm_ring_t *ring);

/* A second handle on the same object (new member slot, own lock and
 * mapping), for another thread.  Works after the name was unlinked.  It
 * only reads what never changes in `ring`, so it may run while another
 * thread is inside a call on `ring`. */
int qm_ring_dup(qm_ring_t *ring, qm_ring_t **out);

/* Make calls blocked on this handle (in another thread) return QM_ECLOSED
 * promptly, and every later call too.  Call before qm_ring_close() when
 * another thread may be inside a call on this handle. */
void qm_ring_interrupt(qm_ring_t *ring);

/* Remove the object's name.  Handles attached keep working. QM_ENOTFOUND
 * if there is none. */
int qm_ring_unlink(const char *name);

/* 1 if the object exists, 0 if not, negative on a bad name. */
int qm_ring_exists(const char *name);

/* Bytes of memory a ring of `capacity` (rounded as above) needs, or 0 if
 * the capacity is out of range.  For qm_ring_format_memory(). */
uint64_t qm_ring_memory_size(uint64_t capacity);

/* Format caller-provided memory as a ring (tests, benchmarks, anonymous
 * shared mappings).  `mem` must be 4096-aligned and zero or writable.
 * Handles attached with qm_ring_attach_memory() have no liveness lock: all
 * their members count as alive. */
int qm_ring_format_memory(void *mem, uint64_t len, uint64_t capacity,
                          uint64_t maxsize);
int qm_ring_attach_memory(void *mem, uint64_t len, qm_ring_t **out);

/* Put one message made of `iovcnt` pieces (gathered into one record).
 * Blocks until there is room or the deadline passes.
 * Errors: QM_ETOOBIG (checked first), QM_EAGAIN (full, QM_NOWAIT),
 * QM_ETIMEDOUT, QM_EINTR, QM_ECORRUPT, QM_ECLOSED. */
int qm_ring_put(qm_ring_t *ring, const qm_iovec_t *iov, int iovcnt,
                int64_t deadline_ns);

/* Put `count` messages (one qm_iovec_t each) in order.  *done receives how
 * many were put, also on error.  Waits only while nothing more fits. */
int qm_ring_put_many(qm_ring_t *ring, const qm_iovec_t *msgs, size_t count,
                     int64_t deadline_ns, size_t *done);

/* Take the next record.  On QM_OK `rec->data`/`rec->len` show the payload
 * in place; the caller copies it and must call qm_ring_get_end() (the
 * record is the caller's until then, and space is not reclaimed).
 * Errors: QM_EAGAIN (empty, QM_NOWAIT), QM_ETIMEDOUT, QM_EINTR,
 * QM_ECORRUPT, QM_ECLOSED. */
int qm_ring_get_begin(qm_ring_t *ring, qm_record_t *rec, int64_t deadline_ns);
int qm_ring_get_end(qm_ring_t *ring, qm_record_t *rec);

/* Messages committed and not yet taken, at the instant of the call. */
int qm_ring_depth(qm_ring_t *ring, uint64_t *depth);

int qm_ring_stats(qm_ring_t *ring, qm_ring_stats_t *st);
uint64_t qm_ring_capacity(const qm_ring_t *ring);
uint64_t qm_ring_max_message(const qm_ring_t *ring);
uint64_t qm_ring_maxsize(const qm_ring_t *ring);

/* Wake every process blocked on this ring (both directions), e.g. after
 * close() elsewhere in the process.  Cheap; never fails. */
void qm_ring_wake_all(qm_ring_t *ring);


/* ----- partition log: the append-only, persistent log of one topic partition
 *
 * A folder holding `control` (shared state, member table) and segment files
 * named by their first offset.  Any number of writers in any processes
 * append without a lock on the data path: one CAS reserves an offset and
 * its bytes, the writer fills the record (CRC-32C included) and commits it.
 * Readers read committed records in place, in offset order, and stop at
 * the first record not yet committed.  A record whose writer died before
 * committing is marked abandoned (never delivered; its offset is a gap)
 * once a reader finds the writer's liveness lock free.  When a segment is
 * full, the writer that finds it so rolls to a new one (under a kernel-
 * released OFD lock, held only while creating the file).
 *
 * See docs/design/format.md for the bytes.
 */
typedef struct qm_log qm_log_t;

#define QM_LOG_FSYNC 1u   /* durability: append returns after fdatasync */

typedef struct qm_log_config {
    uint64_t segment_bytes;    /* 64 KiB .. 4 GiB, a multiple of 4096 */
    uint64_t retention_bytes;  /* keep at most this many bytes of segments; 0 = all */
    int64_t retention_ns;      /* drop segments whose newest record is older; 0 = never */
    uint32_t flags;            /* QM_LOG_FSYNC */
} qm_log_config_t;

/* Open (or create) the partition log in folder `dir` (created 0700; its
 * parent must exist).  `cfg` applies when creating; an existing log keeps
 * the configuration it was created with (qm_log_config() reads it).
 * An opener that finds no other handle open (every other process exited
 * or was killed) first recovers the log: finishes an interrupted segment
 * roll, abandons records left WRITING, verifies the active segment's
 * records (lengths, offsets, CRC) and cuts a torn tail at the first bad
 * one.  Errors as qm_ring_open. */
int qm_log_open(const char *dir, qm_open_mode_t mode, const qm_log_config_t *cfg,
                qm_log_t **out);
void qm_log_close(qm_log_t *log);
int qm_log_config(const qm_log_t *log, qm_log_config_t *cfg);

/* Largest value one record may hold (segment_bytes / 2); key and headers
 * may add up to segment_bytes / 4 beside it. */
uint64_t qm_log_max_record(const qm_log_t *log);

typedef struct qm_log_entry {
    const void *key;
    uint32_t key_len;
    const void *headers;
    uint32_t headers_len;
    const qm_iovec_t *value;   /* gathered into one value */
    int value_cnt;
    int64_t timestamp_ns;      /* unix time; 0 = now */
} qm_log_entry_t;

/* Append one record; *offset receives its offset.  Never blocks for
 * readers (a log does not fill up); rolls the segment when needed (and
 * then applies retention).  With QM_LOG_FSYNC it returns only after the
 * record is on stable storage; concurrent appenders share one fdatasync.
 * An fsync error makes the partition read-only: this and every later
 * append returns -EIO (never retried into a false success).
 * Errors: QM_ETOOBIG, QM_ECORRUPT, -errno (ENOSPC creating a segment, EIO). */
int qm_log_append(qm_log_t *log, const qm_log_entry_t *entry, uint64_t *offset);

/* A reader's position.  Zero it, set `flags`, then place it with
 * qm_log_seek() (which keeps `flags`). */
typedef struct qm_log_cursor {
    uint64_t base;             /* segment the cursor is in */
    uint64_t pos;              /* byte position in it */
    uint64_t next_offset;      /* offset of the record at pos */
    uint64_t skipped;          /* records retention removed before this cursor
                                * read them (it then jumps to the log start) */
    uint64_t flags;            /* QM_CURSOR_* below */
} qm_log_cursor_t;

/* Read without checking each record's CRC-32C (every header field and
 * length is still validated, so a bad record still cannot make a read go
 * out of bounds; only scribbled payload bytes go unnoticed).  Like Kafka's
 * check.crcs=false: for readers of /dev/shm topics that want the CRC pass
 * off their read path.  Recovery on open always checks CRCs. */
#define QM_CURSOR_NO_CRC 1u

typedef struct qm_log_record {
    uint64_t offset;
    int64_t timestamp_ns;
    const void *key;
    uint32_t key_len;
    const void *headers;
    uint32_t headers_len;
    const void *value;
    uint64_t value_len;
} qm_log_record_t;

/* Place `cur` at the first record with offset >= `offset` (at the end if
 * there is none yet).  QM_ENOTFOUND if `offset` is before the log's start. */
int qm_log_seek(qm_log_t *log, qm_log_cursor_t *cur, uint64_t offset);

/* Place `cur` at the first record whose timestamp is >= `timestamp_ns`
 * (at the end if none).  Timestamps of concurrent writers may be slightly
 * out of order; the result is the first record in offset order that
 * qualifies. */
int qm_log_seek_time(qm_log_t *log, qm_log_cursor_t *cur, int64_t timestamp_ns);

/* Read the record at `cur` and advance past it.  Pointers in `rec` stay
 * valid until the handle is closed.  Skips abandoned records.  A cursor
 * behind retention jumps to the log start and adds what it missed to
 * cur->skipped.  Waits for a record until the deadline: QM_EAGAIN
 * (QM_NOWAIT), QM_ETIMEDOUT, QM_EINTR; QM_ECORRUPT if the record fails
 * validation or its CRC (unless the cursor has QM_CURSOR_NO_CRC). */
int qm_log_read(qm_log_t *log, qm_log_cursor_t *cur, qm_log_record_t *rec, int64_t deadline_ns);

/* First offset still stored and the next offset to be assigned. */
int qm_log_bounds(qm_log_t *log, uint64_t *start, uint64_t *end);

/* Apply the retention configuration now (appends do it after each roll):
 * delete whole segments, oldest first, never the active one.  *deleted
 * (may be NULL) receives how many were removed. */
int qm_log_retain(qm_log_t *log, uint64_t *deleted);

/* Make calls blocked on this handle (in another thread) return QM_ECLOSED. */
void qm_log_interrupt(qm_log_t *log);

/* Block until any of `n` logs may have a record at its cursor (the caller
 * then tries each with QM_NOWAIT), the deadline passes (QM_ETIMEDOUT), a
 * signal arrives (QM_EINTR) or a handle is interrupted (QM_ECLOSED).
 * Returns QM_OK at once if a record is already there.  Uses futex_waitv
 * where the kernel has it (Linux 5.16+), else short slices. */
int qm_log_wait_any(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n,
                    int64_t deadline_ns);

typedef struct qm_log_stats {
    uint64_t start_offset, end_offset;
    uint64_t segments_rolled, abandoned;
    uint64_t segment_bytes;
    uint64_t bytes;            /* bytes of segment files on disk */
    uint64_t segments;         /* segment files on disk */
    uint64_t syncs, synced_appends;   /* fdatasync calls and the appends they covered */
    uint64_t recoveries, tail_cuts;   /* lone opens that checked the log; torn tails cut */
    uint32_t members;
    uint32_t member_slot;      /* this handle's slot */
} qm_log_stats_t;
int qm_log_stats(qm_log_t *log, qm_log_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif /* QMEM_H */
