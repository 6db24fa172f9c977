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
 *   - A file truncated while mapped (any process may ftruncate it) does not
 *     kill the process with SIGBUS: the pages past its new end read as
 *     zeros in this process from then on, and the call that touched one,
 *     and every later call on that handle, returns QM_ECORRUPT ("... was
 *     truncated while mapped"); close the handle.  The core installs a
 *     process-wide SIGBUS handler for this when it maps its first file and
 *     passes every other SIGBUS to the handler that was there before
 *     (docs/design/faults.md).
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

/* ----- version ----------------------------------------------------------- */
/* The version of this header; qm_version() is the version of the core that
 * was linked (they differ only when a program was built against another
 * header than the library it runs with). */
#define QM_VERSION_MAJOR 0
#define QM_VERSION_MINOR 1
#define QM_VERSION_PATCH 0
#define QM_VERSION_STRING "0.1.0"

/* The linked core's version, e.g. "0.1.0".  Never NULL. */
const char *qm_version(void);

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
    QM_EGONE = -30014,       /* the object cannot be reopened after fork()
                              * (removed or replaced): open it anew */
    QM_ESTALE = -30015,      /* ack/nack of a lease that moved on (expired and
                              * redelivered, nacked, acked, or seeked past) */
    QM_EFULL = -30016        /* consumer group: the partition's pending window
                              * is full; nothing new until the oldest is acked */
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

/* A spin-wait hint (x86 PAUSE, ARM YIELD) for a caller that polls a few
 * times before it sleeps; nothing on other processors. */
static inline void qm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

/* ----- checksums ----------------------------------------------------------
 * CRC-32C (Castagnoli) of `len` bytes, continuing from `crc` (0 to start):
 * qm_crc32c(qm_crc32c(0, a, n), b, m) == CRC of a followed by b.  Uses the
 * CPU's CRC32C instruction when present.  Check value: "123456789" ->
 * 0xE3069283. */
uint32_t qm_crc32c(uint32_t crc, const void *data, size_t len);

/* ----- key hash -----------------------------------------------------------
 * Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2, seed
 * 0x9747b28c) of `len` bytes, as an unsigned 32-bit value.  A topic record
 * with a key goes to partition (qm_murmur2(key) & 0x7fffffff) % partitions,
 * as Kafka's default partitioner sends it.  Check values: "21" ->
 * 0xc5f2f8ec, "abc" -> 0x1c94221b. */
uint32_t qm_murmur2(const void *data, size_t len);

/* ----- file systems -------------------------------------------------------
 * 1 if `path` is on a file system held in RAM (tmpfs, ramfs: nothing on it
 * survives a reboot or a power loss, fsync or not), 0 if not, -errno if it
 * cannot be told (statfs failed). */
int qm_path_in_ram(const char *path);

/* ----- names ------------------------------------------------------------
 * A name matches ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$.  Returns QM_OK or
 * QM_EINVAL; checked by every call that takes a name, before any file is
 * touched.  Errors: QM_EINVAL (bad name, or NULL). */
int qm_name_check(const char *name);

/* The file a ring named `name` lives in: <dir>/pyqmem.<uid>.q.<name>, where
 * <dir> is $PYQMEM_DIR if set, else $PYQMEM_SHM_DIR (deprecated) if set,
 * else /dev/shm.  Returns the length
 * written (excluding NUL).  Errors: QM_EINVAL (bad name, or buffer too
 * small). */
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

/* An anonymous ring: no name, no file in any folder; it lives in memory
 * (memfd_create) until the last handle and descriptor of it, in every
 * process, are closed -- by exit or death too.  Share it by handing the
 * descriptor qm_ring_fd() gives to another process (inherited over fork,
 * or sent over a Unix socket as SCM_RIGHTS) and attaching there with
 * qm_ring_open_fd().  Semantics as a named ring.
 * Errors: QM_EINVAL (capacity), -ENOMEM, -errno (memfd_create, or ENOSPC
 * reserving the memory: nothing is left). */
int qm_ring_create_anonymous(uint64_t capacity, uint64_t maxsize, qm_ring_t **out);

/* Attach to the ring in the file behind `fd` (an anonymous ring's, usually).
 * The handle opens its own description of it (/proc/self/fd/<fd>), so `fd`
 * stays the caller's to close.  Errors: -errno (reopening), QM_EPERM (not
 * a regular file of ours closed to others), QM_ECORRUPT, QM_EINCOMPAT,
 * QM_ENOTREADY (not a published ring). */
int qm_ring_open_fd(int fd, qm_ring_t **out);

/* The descriptor of the handle's file (valid until qm_ring_close), to pass
 * to another process; QM_ECLOSED for NULL or a handle without one
 * (qm_ring_attach_memory). */
int qm_ring_fd(const qm_ring_t *ring);

/* A second handle on the same object (new member slot, own lock and
 * mapping), for another thread.  Works after the name was unlinked.  It
 * only reads what never changes in `ring`, so it may run while another
 * thread is inside a call on `ring`.
 * Errors: QM_EMEMBERS, QM_ECORRUPT (file truncated, or header damaged since
 * the open; so are QM_EINCOMPAT and QM_ENOTREADY), QM_ECLOSED (NULL),
 * -errno (reopening through /proc, mmap). */
int qm_ring_dup(qm_ring_t *ring, qm_ring_t **out);

/* How long a consumer on this handle waits behind a record whose producer
 * is alive but does not commit it (frozen: SIGSTOP, a debugger, swapped
 * out) before fencing it: consumers then skip that record, and when the
 * producer resumes its put starts again at the tail (its message arrives
 * later, once; it is never lost or torn).  A dead producer's record is
 * skipped as soon as its death is seen, whatever this says.  0 = never
 * fence.  Default QM_RING_STALL_DEFAULT_NS. */
#define QM_RING_STALL_DEFAULT_NS INT64_C(5000000000)
void qm_ring_set_stall_timeout(qm_ring_t *ring, int64_t ns);

/* Make calls blocked on this handle (in another thread) return QM_ECLOSED
 * promptly, and every later call too.  Call before qm_ring_close() when
 * another thread may be inside a call on this handle. */
void qm_ring_interrupt(qm_ring_t *ring);

/* Remove the object's name.  Handles attached keep working.
 * Errors: QM_ENOTFOUND (there is none), QM_EINVAL (bad name), -errno
 * (unlink, e.g. EACCES). */
int qm_ring_unlink(const char *name);

/* 1 if the object exists, 0 if not.  Errors: QM_EINVAL (bad name). */
int qm_ring_exists(const char *name);

/* Bytes of memory a ring of `capacity` (rounded as above) needs, or 0 if
 * the capacity is out of range.  For qm_ring_format_memory(). */
uint64_t qm_ring_memory_size(uint64_t capacity);

/* Format caller-provided memory as a ring (tests, benchmarks, anonymous
 * shared mappings).  `mem` must be 4096-aligned and zero or writable.
 * Handles attached with qm_ring_attach_memory() have no liveness lock: all
 * their members count as alive.
 * Errors (format): QM_EINVAL (capacity out of range, `mem` NULL, unaligned or
 * smaller than qm_ring_memory_size()).
 * Errors (attach): QM_EINVAL (`mem` NULL or unaligned), QM_ENOTREADY (not
 * formatted), QM_ECORRUPT (bad header, or `len` not the ring's size),
 * QM_EINCOMPAT, QM_EMEMBERS, -ENOMEM. */
int qm_ring_format_memory(void *mem, uint64_t len, uint64_t capacity,
                          uint64_t maxsize);
int qm_ring_attach_memory(void *mem, uint64_t len, qm_ring_t **out);

/* Put one message made of `iovcnt` pieces (gathered into one record).
 * Blocks until there is room or the deadline passes.
 * Errors: QM_ETOOBIG (checked before waiting), QM_EAGAIN (full, QM_NOWAIT),
 * QM_ETIMEDOUT, QM_EINTR, QM_ECORRUPT, QM_ECLOSED (NULL or interrupted
 * handle), QM_EINVAL (iovcnt < 0, or iov NULL), and in a fork child's first
 * call QM_EMEMBERS or QM_EGONE. */
int qm_ring_put(qm_ring_t *ring, const qm_iovec_t *iov, int iovcnt,
                int64_t deadline_ns);

/* Put `count` messages (one qm_iovec_t each) in order.  *done receives how
 * many were put, also on error.  Waits only while nothing more fits.
 * Errors: as qm_ring_put (QM_ETOOBIG if any message is too big, before any
 * is put), without QM_EINVAL. */
int qm_ring_put_many(qm_ring_t *ring, const qm_iovec_t *msgs, size_t count,
                     int64_t deadline_ns, size_t *done);

/* Take the next record.  On QM_OK `rec->data`/`rec->len` show the payload
 * in place; the caller copies it and must call qm_ring_get_end() (the
 * record is the caller's until then, and space is not reclaimed).
 * Errors: QM_EAGAIN (empty, QM_NOWAIT), QM_ETIMEDOUT, QM_EINTR,
 * QM_ECORRUPT, QM_ECLOSED (NULL or interrupted handle), QM_EINVAL (this
 * handle already holds a record), and in a fork child's first call
 * QM_EMEMBERS or QM_EGONE.
 * qm_ring_get_end errors: QM_EINVAL (a record this handle does not hold),
 * QM_ECORRUPT, QM_ECLOSED (NULL handle, or in a fork child). */
int qm_ring_get_begin(qm_ring_t *ring, qm_record_t *rec, int64_t deadline_ns);
int qm_ring_get_end(qm_ring_t *ring, qm_record_t *rec);

/* Messages committed and not yet taken, at the instant of the call.
 * Errors: QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_ring_depth(qm_ring_t *ring, uint64_t *depth);

/* Errors: QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_ring_stats(qm_ring_t *ring, qm_ring_stats_t *st);
uint64_t qm_ring_capacity(const qm_ring_t *ring);
uint64_t qm_ring_max_message(const qm_ring_t *ring);
uint64_t qm_ring_maxsize(const qm_ring_t *ring);

/* Change the count bound of the ring for every handle, in every process
 * (0: none).  Messages already in stay; a smaller bound holds puts back
 * until enough are taken; a larger one wakes waiting producers.
 * Errors: QM_EINVAL (maxsize >= 2**63), QM_ECLOSED, QM_ECORRUPT. */
int qm_ring_set_maxsize(qm_ring_t *ring, uint64_t maxsize);

/* Tasks, as queue.Queue's task_done()/join(): `unfinished` is messages put
 * minus task_done() calls (by anyone) minus records lost with a consumer
 * killed inside its get.  qm_ring_task_done() counts `n` tasks done
 * (QM_EINVAL, and nothing counted, if that would make more than messages
 * were got); qm_ring_join() blocks until unfinished is 0, the deadline
 * (QM_ETIMEDOUT), a signal (QM_EINTR) or an interrupt (QM_ECLOSED).  A
 * consumer killed between its get and its task_done leaves its task
 * unfinished: join() then returns only at its deadline.
 * Errors: as named, and QM_ECORRUPT. */
int qm_ring_task_done(qm_ring_t *ring, uint64_t n);
int qm_ring_unfinished(qm_ring_t *ring, uint64_t *unfinished);
int qm_ring_join(qm_ring_t *ring, int64_t deadline_ns);

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
 * one.  Errors: as qm_ring_open (QM_EINVAL also for a bad `cfg`, even when
 * attaching; -ENOENT if creating and the parent is missing), QM_ECORRUPT
 * also when recovery finds a damaged record with intact ones after it (not
 * cut), and QM_ETIMEDOUT (the segment roll lock held for 2 s). */
int qm_log_open(const char *dir, qm_open_mode_t mode, const qm_log_config_t *cfg,
                qm_log_t **out);
void qm_log_close(qm_log_t *log);

/* Give up the handle's membership now, as qm_log_close() does, but keep
 * its segments mapped: for a handle its owner closed while records it
 * returned are still in use (after it the log counts one member fewer, so
 * a topic can be deleted).  Afterwards only qm_log_release() and
 * qm_log_close() may be called on it.  Idempotent. */
void qm_log_leave(qm_log_t *log);
/* Errors: QM_ECLOSED (NULL). */
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
 * Errors: QM_ETOOBIG, QM_ECORRUPT, -errno (ENOSPC creating a segment, EIO),
 * QM_ETIMEDOUT (the segment roll lock held for 2 s), QM_EPERM or
 * QM_EINCOMPAT (a segment file not ours, or of another format), QM_ECLOSED
 * (NULL), and in a fork child's first call QM_EMEMBERS or QM_EGONE. */
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
    void *mapping;             /* the segment's mapping, for qm_log_hold() */
} qm_log_record_t;

/* Place `cur` at the first record with offset >= `offset` (at the end if
 * there is none yet).
 * Errors: QM_ENOTFOUND (`offset` is before the log's start, or there is no
 * segment file at all), QM_ECORRUPT, QM_ECLOSED (NULL), QM_EPERM or
 * QM_EINCOMPAT (a segment file not ours, or of another format), -errno
 * (listing the folder, open, mmap). */
int qm_log_seek(qm_log_t *log, qm_log_cursor_t *cur, uint64_t offset);

/* Place `cur` at the first record whose timestamp is >= `timestamp_ns`
 * (at the end if none).  Timestamps of concurrent writers may be slightly
 * out of order; the result is the first record in offset order that
 * qualifies.  Errors: as qm_log_seek (QM_ENOTFOUND only when there is no
 * segment file at all). */
int qm_log_seek_time(qm_log_t *log, qm_log_cursor_t *cur, int64_t timestamp_ns);

/* Read the record at `cur` and advance past it.  Pointers in `rec` stay
 * valid until the next call on this handle (which may unmap segments it no
 * longer uses), or until qm_log_release() if qm_log_hold() was called on
 * `rec` before that next call.  Skips abandoned records.  A cursor
 * behind retention jumps to the log start and adds what it missed to
 * cur->skipped.  Waits for a record until the deadline.
 * Errors: QM_EAGAIN (QM_NOWAIT), QM_ETIMEDOUT, QM_EINTR, QM_ECORRUPT (the
 * record fails validation or its CRC, unless the cursor has
 * QM_CURSOR_NO_CRC), QM_ECLOSED (NULL or interrupted handle), QM_EPERM or
 * QM_EINCOMPAT (a segment file not ours, or of another format), -errno
 * (open, mmap), and in a fork child's first call QM_EMEMBERS or QM_EGONE. */
int qm_log_read(qm_log_t *log, qm_log_cursor_t *cur, qm_log_record_t *rec, int64_t deadline_ns);

/* Keep the segment that `rec` points into mapped after later calls on the
 * handle, so its pointers stay valid; returns the hold to pass to
 * qm_log_release().  Call it in the handle's thread, before the handle's
 * next call.  A handle keeps up to QM_LOG_MAPPED_KEEP recently used
 * segments mapped and drops the rest (always those retention deleted: their
 * memory is freed only when the last mapping goes) on entry to
 * qm_log_read/append/seek, skipping held ones.  qm_log_close() unmaps
 * everything, held or not. */
#define QM_LOG_MAPPED_KEEP 16
void *qm_log_hold(const qm_log_record_t *rec);

/* Another hold on the same mapping as `hold`, from any thread, while `hold`
 * is still held. */
void *qm_log_hold_again(void *hold);

/* End a hold.  Any thread; NULL is ignored. */
void qm_log_release(void *hold);

/* First offset still stored and the next offset to be assigned.
 * Errors: QM_ECORRUPT, QM_ECLOSED (NULL); rarely, finishing a segment roll
 * a writer left half done, the roll's errors (QM_ETIMEDOUT, -errno). */
int qm_log_bounds(qm_log_t *log, uint64_t *start, uint64_t *end);

/* Apply the retention configuration now (appends do it after each roll):
 * delete whole segments, oldest first, never the active one.  *deleted
 * (may be NULL) receives how many were removed.
 * Errors: QM_ECORRUPT, QM_ECLOSED (NULL), -errno (listing the folder). */
int qm_log_retain(qm_log_t *log, uint64_t *deleted);

/* Make calls blocked on this handle (in another thread) return QM_ECLOSED. */
void qm_log_interrupt(qm_log_t *log);

/* Block until any of `n` logs may have a record at its cursor (the caller
 * then tries each with QM_NOWAIT), the deadline passes (QM_ETIMEDOUT), a
 * signal arrives (QM_EINTR) or a handle is interrupted (QM_ECLOSED).
 * Returns QM_OK at once if a record is already there; before sleeping it
 * polls the logs briefly (unless the deadline is QM_NOWAIT).  Uses futex_waitv
 * where the kernel has it (Linux 5.16+), else short slices.
 * Errors: QM_ETIMEDOUT (also with QM_NOWAIT: never QM_EAGAIN), QM_EINTR,
 * QM_ECLOSED (a NULL or interrupted handle), QM_ECORRUPT, QM_EINVAL (n not
 * in 1..128). */
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
/* Errors: as qm_log_bounds. */
int qm_log_stats(qm_log_t *log, qm_log_stats_t *st);

/* ----- consumer group: who gets which record of a topic, and what is done
 *
 * A group is one file, <topic folder>/groups/<group>.grp, shared by its
 * members (handles) in any processes.  Per partition it keeps a delivery
 * cursor (the next offset never delivered), a committed offset (every
 * offset below it is done) and a window of pending entries, one per offset
 * in [committed, cursor): LEASED to a member until a deadline, DELAYED
 * (nacked) until a time, or DONE.  It never reads the log: the caller says
 * how far the log goes (`end`) and reads the records it was given.
 *
 *   - Delivery: qm_group_claim() first redelivers pending entries that are
 *     due (lease expired, nack delay over, or owner dead), then leases new
 *     offsets from the cursor.  delivery_count grows at delivery, so a
 *     record that kills its consumer still counts.
 *   - Completion: qm_group_ack() with the lease's epoch.  An epoch that no
 *     longer matches is QM_ESTALE: never a double completion.  The committed
 *     offset then moves over the contiguous done prefix.
 *   - Dead members: liveness is the kernel-released lock of liveness.c.  A
 *     claim sweeps the member table at most every QM_GROUP_SWEEP_NS (of
 *     the caller's clock); a dead member's leases, and in ordered mode its
 *     partitions, are released at once by the sweep, or by whoever next
 *     takes its member slot.  Closing a handle releases its leases too.
 *   - No daemon: all of this is done by the members' own calls.
 *   - Times are CLOCK_MONOTONIC nanoseconds the caller passes (qm_now_ns()
 *     in production, chosen values in tests).  Reopened after a reboot,
 *     every lease and delay counts as expired.
 *   - Handles are per thread, as for rings.
 * See docs/design/groups.md for the bytes and the algorithm.
 */
typedef struct qm_group qm_group_t;

#define QM_GROUP_ORDERED 1u       /* one owner and one record in flight per partition */
#define QM_GROUP_DEFAULT_WINDOW 4096u
#define QM_GROUP_SWEEP_NS (100 * INT64_C(1000000))

typedef struct qm_group_config {
    uint32_t partitions;        /* partitions the file holds, 1..4096 */
    uint32_t window;            /* pending entries per partition: a power of
                                 * two in [16, 65536]; 0 = 4096 */
    uint32_t flags;             /* QM_GROUP_ORDERED */
    const uint64_t *start;      /* creation only: each partition's first
                                 * offset (`partitions` values); NULL = 0 */
} qm_group_config_t;

/* Open (or create) the group `group` (a qm_name_check() name) of the topic
 * in folder `topic_dir`, which must exist; its groups/ folder is made 0700.
 * `cfg` applies when creating (start offsets included, set before anyone
 * can claim); an existing group keeps its own (qm_group_config() reads it;
 * cfg may be NULL with QM_OPEN_ONLY).  The file is created and checked as
 * a ring's is (0600, O_NOFOLLOW, our uid, magic published last, every
 * header field validated: QM_ECORRUPT / QM_EINCOMPAT).  A lone opener
 * that finds the file written under another boot expires every lease.
 * *created (may be NULL) says whether this call created the group.
 * Errors: as qm_ring_open (QM_ENOTFOUND also for a missing `topic_dir`,
 * QM_EINVAL for a bad `cfg`, or none without QM_OPEN_ONLY). */
int qm_group_open(const char *topic_dir, const char *group, qm_open_mode_t mode,
                  const qm_group_config_t *cfg, qm_group_t **out, int *created);

/* Release the handle: its leases become deliverable at once (count kept),
 * its ordered partitions ownerless.  Never removes the file.  NULL is ok. */
void qm_group_close(qm_group_t *g);

/* Errors: QM_ECLOSED (NULL). */
int qm_group_config(const qm_group_t *g, qm_group_config_t *cfg);   /* start = NULL */

typedef struct qm_group_lease {
    uint64_t offset;
    uint64_t epoch;             /* pass back to ack/nack/extend */
    uint32_t partition;
    uint32_t delivery_count;    /* 1 on first delivery; saturates at 4095 */
} qm_group_lease_t;

#define QM_CLAIM_COMPLETE 1u    /* at-most-once: done the moment it is delivered */

/* Deliver up to `max` records of `partition` to this member: first due
 * redeliveries, then new offsets below `end` (the first offset the caller
 * cannot read yet, e.g. the log's end), each leased until now_ns +
 * lease_ns.  With QM_CLAIM_COMPLETE they are done at once instead (no
 * lease; at-most-once).  *got receives how many, in out[0..*got).
 * In an ordered group the member first takes the partition if it has no
 * live owner, and at most one record of it is in flight.
 * Returns QM_OK when *got >= 1.
 * Errors: QM_EAGAIN (nothing deliverable now: qm_group_next_due() tells
 * when a redelivery will be; ordered: another member owns the partition),
 * QM_EFULL (the window is full of pending records), QM_EINVAL (partition
 * out of range, end >= 2^48, max == 0, lease_ns < 0, unknown flags),
 * QM_ECORRUPT, QM_ECLOSED (NULL), and in a fork child's first call
 * QM_EMEMBERS or QM_EGONE.
 * Cost: two CAS per record plus one per call on the uncontended path; a
 * liveness sweep (one F_OFD_GETLK per member) at most every 100 ms. */
int qm_group_claim(qm_group_t *g, uint32_t partition, uint64_t end, int64_t now_ns,
                   int64_t lease_ns, uint32_t flags, qm_group_lease_t *out, size_t max,
                   size_t *got);

/* Complete the lease: QM_OK, or QM_ESTALE if it moved on (expired and was
 * redelivered, was nacked or acked already, or a seek passed it), or
 * QM_EINVAL if offset and epoch do not belong together.  Any handle of the
 * group may ack.  Mark a record dead-lettered (or skipped) by acking it.
 * Errors: QM_ESTALE, QM_EINVAL (also a partition out of range), QM_ECORRUPT,
 * QM_ECLOSED (NULL). */
int qm_group_ack(qm_group_t *g, uint32_t partition, uint64_t offset, uint64_t epoch);

/* Ack each lease; status[i] (status may be NULL) gets its result.  Returns
 * QM_OK if all were acked, else the first failure.
 * Errors: QM_ESTALE, QM_EINVAL (as for ack), QM_ECORRUPT (then in every
 * status[i] too), QM_ECLOSED (NULL, when n > 0). */
int qm_group_ack_many(qm_group_t *g, const qm_group_lease_t *leases, size_t n, int *status);

/* Give the lease back: the record is delivered again (count + 1) from
 * not_before_ns on.  Errors: QM_ESTALE / QM_EINVAL as for ack, QM_ECORRUPT,
 * QM_ECLOSED (NULL), and in a fork child's first call QM_EMEMBERS or
 * QM_EGONE. */
int qm_group_nack(qm_group_t *g, uint32_t partition, uint64_t offset, uint64_t epoch,
                  int64_t not_before_ns);

/* Move the lease's deadline (keep working on it).  The epoch stays valid.
 * QM_ESTALE if the lease moved on (also when it expired and was already
 * redelivered).  Errors: QM_ESTALE, QM_EINVAL (as for ack), QM_ECORRUPT,
 * QM_ECLOSED (NULL). */
int qm_group_extend(qm_group_t *g, uint32_t partition, uint64_t offset, uint64_t epoch,
                    int64_t deadline_ns);

/* Set cursor and committed to `offset` (replay, or a start position): what
 * was pending is forgotten and its leases become stale.  Claims racing
 * with the seek may still deliver a record of the old position once.
 * Errors: QM_EINVAL (partition out of range, offset >= 2^48), QM_EAGAIN
 * (lost 1000 races with concurrent commits; call again), QM_ECORRUPT,
 * QM_ECLOSED (NULL). */
int qm_group_seek(qm_group_t *g, uint32_t partition, uint64_t offset);

/* Retention: the log no longer has offsets below `log_start`.  If the
 * group's committed offset is below it, jump forward (cursor too) and add
 * the offsets jumped over to the partition's `skipped` count; *skipped (may
 * be NULL) receives how many this call skipped.  Pending leases below it
 * may still be acked.  Errors: QM_EINVAL (partition out of range, log_start
 * >= 2^48), QM_EAGAIN (lost 1000 races with concurrent commits; call
 * again), QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_group_skip_to(qm_group_t *g, uint32_t partition, uint64_t log_start, uint64_t *skipped);

/* Add n to the partition's dead-lettered count (the policy layer moves the
 * record, then acks it).  Errors: QM_EINVAL (partition out of range),
 * QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_group_count_dead_lettered(qm_group_t *g, uint32_t partition, uint64_t n);

/* Ordered mode: take the partition if it has no live owner (QM_OK, or
 * QM_EAGAIN if a live member has it), or give it up (QM_OK; the record in
 * flight stays leased to us until acked or expired).
 * Errors (both): QM_EINVAL (partition out of range), QM_ECORRUPT, QM_ECLOSED
 * (NULL); acquire also QM_EAGAIN, and in a fork child's first call
 * QM_EMEMBERS or QM_EGONE. */
int qm_group_acquire(qm_group_t *g, uint32_t partition);
int qm_group_release(qm_group_t *g, uint32_t partition);

/* Run the liveness sweep now, whenever the last one was: release the
 * leases and partitions of dead members.  *released (may be NULL) gets how
 * many leases were released.  Errors: QM_ECORRUPT, QM_ECLOSED (NULL), and in
 * a fork child's first call QM_EMEMBERS or QM_EGONE. */
int qm_group_sweep(qm_group_t *g, int64_t now_ns, uint64_t *released);

/* Earliest time a pending record of the partition may become due (a lower
 * bound; INT64_MAX if none is pending), for sleeping between claims.
 * Errors: QM_EINVAL (partition out of range), QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_group_next_due(qm_group_t *g, uint32_t partition, int64_t *due_ns);

typedef struct qm_group_partition_stats {
    uint64_t committed, cursor;   /* lag = log end - committed */
    uint64_t pending;             /* leased + delayed + leasing */
    uint64_t leased, delayed;
    uint64_t acked_ahead;         /* done but above the committed offset */
    uint64_t redelivered, dead_lettered, skipped, seeks;
    uint32_t owner_slot;          /* ordered mode; 0 = none */
    uint64_t owner_epoch;
} qm_group_partition_stats_t;
/* Errors: QM_EINVAL (partition out of range), QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_group_partition_stats(qm_group_t *g, uint32_t partition, qm_group_partition_stats_t *st);

typedef struct qm_group_stats {
    uint32_t partitions, window, flags;
    uint32_t members;             /* live members */
    uint32_t member_slot;         /* this handle's slot (0 before its first call) */
    uint64_t sweeps, reboots;
} qm_group_stats_t;
/* Errors: QM_ECORRUPT, QM_ECLOSED (NULL). */
int qm_group_stats(qm_group_t *g, qm_group_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif /* QMEM_H */
