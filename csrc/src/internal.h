/*
 * internal.h - declarations shared by the core's translation units.
 * Nothing here is public or shared between processes (that is layout.h).
 */
#ifndef QM_INTERNAL_H
#define QM_INTERNAL_H

#include "layout.h"
#include "qmem.h"

#include <limits.h>
#include <stdbool.h>

#define QM_PATH_MAX 512

/* ----- os seam (os_linux.c): the only file with OS-specific calls -------- */
/* Sleep while *word == expected, until woken or the absolute monotonic
 * deadline.  0 = woken (or spurious, or the word already differed),
 * QM_ETIMEDOUT, QM_EINTR. */
int qm__os_futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
void qm__os_futex_wake_all(_Atomic uint32_t *word);
/* Sleep until any words[i] != expected[i] might hold (futex_waitv), the
 * deadline, or a signal.  -ENOSYS on kernels without futex_waitv. */
int qm__os_futex_waitv(_Atomic uint32_t *const *words, const uint32_t *expected, size_t n,
                       int64_t deadline_ns);
int qm__os_datasync(int fd);
/* Exclusive OFD lock on one byte; 0, QM_EAGAIN if held by another open
 * file description, or -errno. */
int qm__os_lock_byte(int fd, int64_t offset);
/* Shared OFD lock on one byte (converts an exclusive one we hold). */
int qm__os_lock_byte_shared(int fd, int64_t offset);
void qm__os_unlock_byte(int fd, int64_t offset);
/* 1 if another open file description holds a lock on the byte, 0 if not,
 * -errno on failure. */
int qm__os_byte_locked(int fd, int64_t offset);
/* Reserve backing store now (0 or -errno): no SIGBUS on first touch. */
int qm__os_reserve(int fd, uint64_t size);
/* Allocate [offset, offset + len) of the file (extending it if shorter). */
int qm__os_reserve_range(int fd, uint64_t offset, uint64_t len);
/* A new open file description for the same file (new lock owner). */
int qm__os_reopen(int fd);
/* An anonymous shared-memory file (memfd_create, close-on-exec): gone when
 * its last descriptor and mapping are.  Returns the fd or -errno. */
int qm__os_memfd(const char *name);
/* Replace [addr, addr+len) by private zero pages (MAP_FIXED).  0 or -1.
 * Async-signal-safe, as is qm__os_tid(). */
int qm__os_map_zero(void *addr, size_t len, int prot);
long qm__os_tid(void);
int64_t qm__os_monotonic_ns(void);
int64_t qm__os_realtime_ns(void);
void qm__os_boot_id(uint64_t id[2]);   /* this boot's id as two words; 0s if unknown */

/* ----- checksums (crc32c.c) ---------------------------------------------- */
uint32_t qm__crc32c_portable(uint32_t crc, const void *data, size_t len);
bool qm__crc32c_hardware(void);

/* ----- errors (status.c) ------------------------------------------------- */
int qm__fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void qm__clear_error(void);   /* qm_last_error() is "" until the next qm__fail */

/* ----- waits (wait.c) ---------------------------------------------------- */
/* Wake everyone sleeping on `line` if the sleepers flag is set.  Call
 * after publishing; contains the waker's half of the handshake fence. */
void qm__wake(qm_wake_line_t *line);
/* The sleeper's half: announce, then the caller re-checks its condition,
 * then qm__sleep().  Returns the seq value to sleep on. */
uint32_t qm__sleep_prepare(qm_wake_line_t *line);
int qm__sleep(qm_wake_line_t *line, uint32_t seq, int64_t deadline_ns);

/* A blocking operation: `attempt` returns QM_EAGAIN while it must wait;
 * `watch` says whether a dead peer could be the cause (then liveness is
 * polled every 10 ms through `recover`, which returns nonzero if it freed
 * something). */
typedef struct qm_waiter {
    qm_wake_line_t *line;
    int (*attempt)(void *ctx);
    int (*recover)(void *ctx);
    bool (*watch)(void *ctx);
    void *ctx;
    _Atomic int *interrupted;
    const _Atomic uint64_t *fault;   /* the handle's fault word (fault.c); NULL: none */
} qm_waiter_t;
int qm__wait_loop(const qm_waiter_t *w, int64_t deadline_ns);

/* ----- mappings that survive truncation (fault.c) --------------------------
 * Every mapping of a file is registered (qm__map*, removed by qm__unmap)
 * with the handle's fault word.  If the file is truncated under it, the
 * process-wide SIGBUS handler replaces the mapping from the faulting page on
 * with private zero pages, stores the mapping's tag in the fault word and
 * returns: the access reads zeros instead of killing the process, and every
 * later call on the handle is QM_ECORRUPT (qm__fault_check).  See
 * docs/design/faults.md. */
#define QM_FAULT_FILE (UINT64_C(1) << 60)      /* the object's own file */
#define QM_FAULT_CONTROL (UINT64_C(2) << 60)   /* a log's control file */
#define QM_FAULT_SEGMENT (UINT64_C(3) << 60)   /* | base: a log segment */
#define QM_FAULT_INDEX (UINT64_C(4) << 60)     /* | base: a segment's index */
#define QM_FAULT_VALUE_MASK ((UINT64_C(1) << 60) - 1)

/* Register [p, p+len) (protection `prot`); `fault` may be NULL (a
 * temporary look whose caller treats zeros as "not there").  Installs the
 * handler on first use and re-installs it if another handler displaced it.
 * -ENOMEM when the registry is full. */
int qm__fault_register(void *p, size_t len, int prot, _Atomic uint64_t *fault, uint64_t tag);
void qm__fault_unregister(void *p);
/* QM_ECORRUPT with a message naming what was truncated (`object`: the
 * ring's path, "partition log", "consumer group"). */
int qm__fault_fail(uint64_t fault, const char *object);
/* `rc` unless the handle's fault word is set. */
static inline int qm__fault_check(const _Atomic uint64_t *fault, const char *object, int rc) {
    uint64_t f = atomic_load_explicit(fault, memory_order_relaxed);
    return f ? qm__fault_fail(f, object) : rc;
}

/* ----- shared objects (region.c) ------------------------------------------- */
struct stat;
typedef struct qm_object_spec {
    uint64_t size;                 /* bytes to create */
    uint64_t magic;                /* first word of the file, published last */
    /* write everything but the magic into fresh (zeroed) memory */
    void (*format)(uint8_t *base, uint64_t len, const void *arg);
    const void *arg;
    _Atomic uint64_t *fault;       /* the handle's fault word (NULL: none) */
    uint64_t fault_tag;            /* QM_FAULT_FILE or QM_FAULT_CONTROL */
} qm_object_spec_t;

typedef struct qm_object {
    int fd;
    uint8_t *base;                 /* read-write mapping of the whole file */
    uint64_t len;
    bool created;                  /* this call created (or re-created) it */
} qm_object_t;

/* Create and/or open the object file `name` under `dirfd` (AT_FDCWD with an
 * absolute name works), secure and published as described in region.c.
 * The magic is known non-zero; the caller validates everything else. */
int qm__object_open(int dirfd, const char *name, qm_open_mode_t mode,
                    const qm_object_spec_t *spec, qm_object_t *out);
void qm__object_close(qm_object_t *obj);
/* Format the fresh, empty file behind `fd` (an anonymous one: nobody else
 * can see it yet) as `spec` says; out->fd = fd.  On failure fd stays the
 * caller's. */
int qm__object_create_fd(int fd, const qm_object_spec_t *spec, qm_object_t *out);
/* Map `size` bytes of fd shared, registered with fault.c (see above). */
int qm__map(int fd, uint64_t size, bool writable, _Atomic uint64_t *fault, uint64_t tag,
            uint8_t **out);
int qm__map_flags(int fd, uint64_t size, bool writable, int extra_flags, _Atomic uint64_t *fault,
                  uint64_t tag, uint8_t **out);
/* The only way a mapping made by qm__map* goes: unregistered, then unmapped. */
void qm__unmap(void *p, uint64_t size);
int qm__check_file(int fd, struct stat *st);

/* ----- ring header validation (ring_object.c) ---------------------------- */
typedef struct qm_geometry {
    uint64_t total_bytes;
    uint64_t capacity;
    unsigned capacity_log2;
    uint64_t max_message;
    uint64_t maxsize;
} qm_geometry_t;

/* Validate a header image of `len` readable bytes describing a file of
 * `file_size` bytes.  Pure function over the bytes: fuzzable. */
int qm__ring_header_check(const void *image, uint64_t len, uint64_t file_size,
                          qm_geometry_t *out);
uint64_t qm__layout_fingerprint(void);
uint64_t qm__fingerprint_mix(const uint64_t *parts, size_t n);
int qm__dir_open(int at, const char *path, qm_open_mode_t mode, int *out);
int qm__capacity_round(uint64_t capacity, unsigned *log2_out);

/* ----- membership (liveness.c) -------------------------------------------
 * A handle's seat in an object's member table.  Generic: the ring and the
 * partition log each embed one. */
typedef struct qm_membership {
    int fd;                   /* object file holding the liveness locks;
                               * -1: caller memory, every member counts alive */
    qm_member_t *members;     /* QM_MEMBER_SLOTS entries in shared memory */
    _Atomic uint32_t *hwm;    /* highest slot ever taken (shared) */
    uint32_t slot;            /* 0 = not (yet) a member, e.g. right after fork */
    qm_member_t *me;
    uint32_t roles;           /* roles already published in the slot */
    bool poisoned;            /* fork child could not get its own lock file */
    /* settle what a dead previous owner of `slot` left in flight */
    void (*settle)(void *object, uint32_t slot, uint64_t inflight);
    void *object;
    struct qm_membership *reg_prev, *reg_next;
} qm_membership_t;

int qm__member_join(qm_membership_t *m);
void qm__member_leave(qm_membership_t *m);
bool qm__member_alive(const qm_membership_t *m, uint32_t slot);
/* QM_OK if no member has the object open (then the caller may repair it,
 * and its join turns the lock into the shared one), else QM_EAGAIN. */
int qm__gate_try_exclusive(int fd);
void qm__member_publish_role(qm_membership_t *m, uint32_t role);
void qm__registry_add(qm_membership_t *m);
void qm__registry_remove(qm_membership_t *m);
static inline int qm__member_ensure(qm_membership_t *m) {
    return m->slot ? QM_OK : qm__member_join(m);
}

/* ----- the ring handle ------------------------------------------------------ */
struct qm_ring {
    uint8_t *base;            /* mapping of the whole object */
    uint64_t map_len;
    bool owns_mapping;
    qm_membership_t mb;       /* mb.fd is the object's file */
    qm_ring_ctl_t *ctl;
    uint8_t *data;
    /* geometry validated at attach, never re-read from shared memory */
    uint64_t cap;
    unsigned cap_log2;
    uint64_t max_message;
    uint64_t max_extent;
    uint64_t maxsize;
    uint64_t head_seen;       /* producer's last view of head: head only grows,
                               * so an old view is a safe (pessimistic) bound */
    int64_t stall_ns;         /* fence a live writer after this long (0: never) */
    uint64_t stall_pos;       /* the WRITING record this consumer waits behind, */
    uint64_t stall_word;      /* its word, */
    int64_t stall_since;      /* and since when (monotonic ns) */
    bool holding;             /* between get_begin and get_end */
    qm_record_t held;         /* the record held, released by close */
    _Atomic int interrupted;
    _Atomic uint64_t fault;   /* set by fault.c: the file was truncated while mapped */
    char path[QM_PATH_MAX];
};

/* ----- the data-path calls behind guard.c's public entry points ------------
 * Same contracts as the qm_* functions of qmem.h; guard.c adds the fault
 * checks before and after. */
int qm__ring_put(qm_ring_t *r, const qm_iovec_t *iov, int iovcnt, int64_t deadline);
int qm__ring_put_many(qm_ring_t *r, const qm_iovec_t *msgs, size_t count, int64_t deadline,
                      size_t *done);
int qm__ring_get_begin(qm_ring_t *r, qm_record_t *rec, int64_t deadline);
int qm__ring_get_end(qm_ring_t *r, qm_record_t *rec);
int qm__ring_depth(qm_ring_t *r, uint64_t *depth);
int qm__ring_stats(qm_ring_t *r, qm_ring_stats_t *st);
int qm__ring_set_maxsize(qm_ring_t *r, uint64_t maxsize);
int qm__ring_task_done(qm_ring_t *r, uint64_t n);
int qm__ring_unfinished(qm_ring_t *r, uint64_t *out);
int qm__ring_join(qm_ring_t *r, int64_t deadline);
_Atomic uint64_t *qm__log_fault(qm_log_t *lg);
int qm__log_append(qm_log_t *lg, const qm_log_entry_t *entry, uint64_t *offset);
int qm__log_read(qm_log_t *lg, qm_log_cursor_t *cur, qm_log_record_t *rec, int64_t deadline);
int qm__log_seek(qm_log_t *lg, qm_log_cursor_t *cur, uint64_t offset);
int qm__log_seek_time(qm_log_t *lg, qm_log_cursor_t *cur, int64_t timestamp_ns);
int qm__log_retain(qm_log_t *lg, uint64_t *deleted);
int qm__log_bounds(qm_log_t *lg, uint64_t *start, uint64_t *end);
int qm__log_stats(qm_log_t *lg, qm_log_stats_t *st);
int qm__log_wait_any(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n,
                     int64_t deadline);
int qm__group_claim(qm_group_t *g, uint32_t p, uint64_t end, int64_t now, int64_t lease_ns,
                    uint32_t flags, qm_group_lease_t *out, size_t max, size_t *got);
int qm__group_ack(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch);
int qm__group_ack_many(qm_group_t *g, const qm_group_lease_t *leases, size_t n, int *status);
int qm__group_nack(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, int64_t not_before);
int qm__group_extend(qm_group_t *g, uint32_t p, uint64_t off, uint64_t epoch, int64_t deadline);
int qm__group_seek(qm_group_t *g, uint32_t p, uint64_t off);
int qm__group_skip_to(qm_group_t *g, uint32_t p, uint64_t log_start, uint64_t *skipped);
int qm__group_count_dead_lettered(qm_group_t *g, uint32_t p, uint64_t n);
int qm__group_acquire(qm_group_t *g, uint32_t p);
int qm__group_release(qm_group_t *g, uint32_t p);
int qm__group_sweep(qm_group_t *g, int64_t now_ns, uint64_t *released);
int qm__group_next_due(qm_group_t *g, uint32_t p, int64_t *due);
int qm__group_partition_stats(qm_group_t *g, uint32_t p, qm_group_partition_stats_t *st);
int qm__group_stats(qm_group_t *g, qm_group_stats_t *st);

/* ----- ring internals used by liveness (ring.c) --------------------------- */
/* Resolve the record a previous owner of `slot` left in flight. */
void qm__ring_resolve_inflight(qm_ring_t *ring, uint32_t slot, uint64_t inflight);
void qm__ring_release_held(qm_ring_t *ring);
void qm__ring_init_data(qm_ring_t *ring);
int qm__ring_bind(qm_ring_t *ring, uint8_t *base, uint64_t len);

int qm__ring_format(uint8_t *base, uint64_t len, unsigned cap_log2, uint64_t maxsize,
                    bool publish);

/* ----- partition log validation (log_open.c, log_segment.c): pure functions over bytes */
int qm__log_ctl_check(const void *image, uint64_t len, uint64_t file_size,
                      qm_log_config_t *cfg);
int qm__segment_check(const void *image, uint64_t file_size, uint64_t base,
                      uint64_t segment_bytes);

/* Test entry (fuzzing, corpus replay): run the reader's record walk (with
 * and without CRCs), the retention scan for the newest timestamp, an index
 * seek to `seek_offset` and a time seek to `seek_ts`, the lone opener's
 * recovery (twice), a re-read and one append over the segment image
 * `seg` of `segment_bytes` bytes in caller memory, as the active segment of
 * a log whose append word is `append` (its generation field set to the
 * segment header's, as in a log).  `idx` (NULL: none) has
 * segment_bytes / QM_INDEX_INTERVAL entries.  Writes into seg and idx as
 * recovery and append do.  Returns the segment check's status, or
 * -ENOMEM. */
typedef struct qm_log_image_result {
    int check;                     /* qm__segment_check() */
    int read_rc, read_rc_nocrc;    /* how the reads from the start stopped */
    uint64_t read_records, read_records_nocrc;
    int64_t newest_ts;
    int seek_rc, seek_time_rc;
    uint64_t seek_next;            /* the seek's cursor: next offset */
    int recover_rc, recover2_rc;
    bool recover_changed;          /* the second recovery changed the segment */
    int reread_rc;
    uint64_t reread_records;
    int append_rc, append_read_rc;
    bool append_read_match;        /* the appended record read back intact */
} qm_log_image_result_t;
int qm__log_image_run(uint8_t *seg, uint64_t segment_bytes, qm_index_entry_t *idx,
                      uint64_t append, uint64_t seek_offset, int64_t seek_ts,
                      qm_log_image_result_t *res);

/* ----- consumer groups (group.c, group_file.c) ---------------------------- */
struct qm_group {
    qm_object_t obj;
    qm_group_ctl_t *ctl;
    qm_group_part_t *parts;
    qm_group_entry_t *entries;
    _Atomic uint64_t *settled;        /* QM_MEMBER_SLOTS words */
    qm_membership_t mb;
    /* validated at open, never re-read from shared memory */
    uint32_t partitions;
    unsigned wlog2;
    uint64_t window;
    uint32_t flags;
    _Atomic uint64_t fault;           /* set by fault.c: the file was truncated while mapped */
};

/* Validate a group header image of `len` readable bytes describing a file
 * of `file_size` bytes.  Pure function over the bytes: fuzzable. */
int qm__group_ctl_check(const void *image, uint64_t len, uint64_t file_size,
                        qm_group_config_t *cfg);
uint64_t qm__group_fingerprint(void);
/* Bytes of a group file with these dimensions (0 if out of range). */
uint64_t qm__group_file_size(uint32_t partitions, uint32_t window_log2);
/* Release every lease and ordered partition of member `slot` (a dead
 * member whose slot we just took, or our own on close).  The signature of
 * qm_membership_t.settle. */
void qm__group_settle(void *group, uint32_t slot, uint64_t inflight);
/* Lone opener: if `boot_id` is not the boot the file was written under,
 * make every lease and delay due now and every partition ownerless. */
void qm__group_expire_boot(qm_group_t *g, const uint64_t boot_id[2]);
/* Test entry point: a claim that starts from position words read earlier,
 * as by a claimer preempted right after reading them. */
int qm__group_claim_from(qm_group_t *g, uint32_t p, uint64_t cursor_word, uint64_t committed_word,
                         uint64_t end, int64_t now, int64_t lease_ns, qm_group_lease_t *out,
                         size_t max, size_t *got);

/* ----- ThreadSanitizer ------------------------------------------------------- *
 * Helpers read record words at positions that may have gone stale, and throw
 * the value away when the lap/state check or a cursor re-check says so (the
 * seqlock pattern).  Such a stale word can lie inside another record's
 * payload while it is being copied: a benign race by design.  TSan builds
 * hide the payload copies from the race detector so that every report left
 * is about the protocol's atomics, which stay fully checked; the stress
 * tests' checksums check the payload bytes themselves. */
#if defined(__SANITIZE_THREAD__)
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define QM_PAYLOAD_ACCESS_BEGIN()                  \
    do {                                           \
        AnnotateIgnoreWritesBegin(__FILE__, __LINE__); \
        AnnotateIgnoreReadsBegin(__FILE__, __LINE__);  \
    } while (0)
#define QM_PAYLOAD_ACCESS_END()                    \
    do {                                           \
        AnnotateIgnoreReadsEnd(__FILE__, __LINE__);    \
        AnnotateIgnoreWritesEnd(__FILE__, __LINE__);   \
    } while (0)
#else
#define QM_PAYLOAD_ACCESS_BEGIN() ((void)0)
#define QM_PAYLOAD_ACCESS_END() ((void)0)
#endif

/* ----- kill points (test builds only) -------------------------------------- */
#ifdef QM_KILLPOINTS
void qm__killpoint(const char *name);
/* Test builds: called at every kill point before the environment is
 * consulted, so a test can act at an exact instant (tests/c/test_ring_stalls.c). */
extern void (*qm__killpoint_hook)(const char *name);
#define QM_KILLPOINT(name) qm__killpoint(name)
#else
#define QM_KILLPOINT(name) ((void)0)
#endif

#endif /* QM_INTERNAL_H */
