# Declarations of csrc/include/qmem.h, the C core's public header, for Cython.
# Declaration only: keep it a line-for-line mirror of the header.

from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "qmem.h" nogil:
    # ----- status codes
    enum:
        QM_OK
        QM_EAGAIN
        QM_ETIMEDOUT
        QM_EINTR
        QM_ETOOBIG
        QM_ECORRUPT
        QM_EINCOMPAT
        QM_ENOTFOUND
        QM_EEXIST
        QM_ENOTREADY
        QM_EINVAL
        QM_EMEMBERS
        QM_EPERM
        QM_ECLOSED
        QM_EGONE
        QM_ESTALE
        QM_EFULL

    const char *qm_version()
    void qm_cpu_relax()
    const char *qm_status_str(int status)
    const char *qm_last_error()

    # ----- time
    const int64_t QM_NOWAIT
    const int64_t QM_FOREVER

    int64_t qm_now_ns()

    # ----- key hash
    uint32_t qm_murmur2(const void *data, size_t len)

    # ----- file systems
    int qm_path_in_ram(const char *path)

    # ----- names
    int qm_name_check(const char *name)
    int qm_ring_path(const char *name, char *buf, size_t buflen)

    # ----- ring
    struct qm_ring
    ctypedef qm_ring qm_ring_t

    ctypedef enum qm_open_mode_t:
        QM_OPEN_OR_CREATE
        QM_CREATE_ONLY
        QM_OPEN_ONLY

    ctypedef struct qm_iovec_t:
        const void *base
        size_t len

    ctypedef struct qm_record_t:
        const void *data
        uint64_t len
        uint64_t pos
        uint64_t word

    ctypedef struct qm_ring_stats_t:
        uint64_t put, got, bytes_put, bytes_got
        uint64_t depth
        uint64_t depth_bytes
        uint64_t used_bytes
        uint64_t capacity
        uint64_t max_message
        uint64_t maxsize
        uint64_t abandoned
        uint64_t reclaimed
        uint32_t producers
        uint32_t consumers
        uint32_t members
        uint32_t member_slot

    int qm_ring_open(const char *name, qm_open_mode_t mode, uint64_t capacity,
                     uint64_t maxsize, qm_ring_t **out)
    void qm_ring_close(qm_ring_t *ring)
    int qm_ring_create_anonymous(uint64_t capacity, uint64_t maxsize, qm_ring_t **out)
    int qm_ring_open_fd(int fd, qm_ring_t **out)
    int qm_ring_fd(const qm_ring_t *ring)
    int qm_ring_set_maxsize(qm_ring_t *ring, uint64_t maxsize)
    int qm_ring_task_done(qm_ring_t *ring, uint64_t n)
    int qm_ring_unfinished(qm_ring_t *ring, uint64_t *unfinished)
    int qm_ring_join(qm_ring_t *ring, int64_t deadline_ns)
    int qm_ring_dup(qm_ring_t *ring, qm_ring_t **out)
    void qm_ring_interrupt(qm_ring_t *ring)
    void qm_ring_set_stall_timeout(qm_ring_t *ring, int64_t ns)
    int qm_ring_unlink(const char *name)
    int qm_ring_exists(const char *name)

    uint64_t qm_ring_memory_size(uint64_t capacity)
    int qm_ring_format_memory(void *mem, uint64_t len, uint64_t capacity,
                              uint64_t maxsize)
    int qm_ring_attach_memory(void *mem, uint64_t len, qm_ring_t **out)

    int qm_ring_put(qm_ring_t *ring, const qm_iovec_t *iov, int iovcnt,
                    int64_t deadline_ns)
    int qm_ring_put_many(qm_ring_t *ring, const qm_iovec_t *msgs, size_t count,
                         int64_t deadline_ns, size_t *done)
    int qm_ring_get_begin(qm_ring_t *ring, qm_record_t *rec, int64_t deadline_ns)
    int qm_ring_get_end(qm_ring_t *ring, qm_record_t *rec)

    int qm_ring_depth(qm_ring_t *ring, uint64_t *depth)
    int qm_ring_stats(qm_ring_t *ring, qm_ring_stats_t *st)
    uint64_t qm_ring_capacity(const qm_ring_t *ring)
    uint64_t qm_ring_max_message(const qm_ring_t *ring)
    uint64_t qm_ring_maxsize(const qm_ring_t *ring)

    void qm_ring_wake_all(qm_ring_t *ring)


    # ----- partition log
    struct qm_log
    ctypedef qm_log qm_log_t

    const uint32_t QM_LOG_FSYNC
    const uint64_t QM_CURSOR_NO_CRC

    ctypedef struct qm_log_config_t:
        uint64_t segment_bytes
        uint64_t retention_bytes
        int64_t retention_ns
        uint32_t flags

    int qm_log_open(const char *dir, qm_open_mode_t mode, const qm_log_config_t *cfg,
                    qm_log_t **out)
    void qm_log_close(qm_log_t *log)
    void qm_log_leave(qm_log_t *log)
    int qm_log_config(const qm_log_t *log, qm_log_config_t *cfg)

    uint64_t qm_log_max_record(const qm_log_t *log)

    ctypedef struct qm_log_entry_t:
        const void *key
        uint32_t key_len
        const void *headers
        uint32_t headers_len
        const qm_iovec_t *value
        int value_cnt
        int64_t timestamp_ns

    int qm_log_append(qm_log_t *log, const qm_log_entry_t *entry, uint64_t *offset)

    ctypedef struct qm_log_cursor_t:
        uint64_t base
        uint64_t pos
        uint64_t next_offset
        uint64_t skipped
        uint64_t flags

    ctypedef struct qm_log_record_t:
        uint64_t offset
        int64_t timestamp_ns
        const void *key
        uint32_t key_len
        const void *headers
        uint32_t headers_len
        const void *value
        uint64_t value_len
        void *mapping

    int qm_log_seek(qm_log_t *log, qm_log_cursor_t *cur, uint64_t offset)
    int qm_log_seek_time(qm_log_t *log, qm_log_cursor_t *cur, int64_t timestamp_ns)
    int qm_log_read(qm_log_t *log, qm_log_cursor_t *cur, qm_log_record_t *rec,
                    int64_t deadline_ns)
    int qm_log_bounds(qm_log_t *log, uint64_t *start, uint64_t *end)
    void *qm_log_hold(const qm_log_record_t *rec)
    void *qm_log_hold_again(void *hold) nogil
    void qm_log_release(void *hold) nogil
    int qm_log_retain(qm_log_t *log, uint64_t *deleted)
    void qm_log_interrupt(qm_log_t *log)
    int qm_log_wait_any(qm_log_t *const *logs, const qm_log_cursor_t *cursors, size_t n,
                        int64_t deadline_ns)

    ctypedef struct qm_log_stats_t:
        uint64_t start_offset, end_offset
        uint64_t segments_rolled, abandoned
        uint64_t segment_bytes
        uint64_t bytes
        uint64_t segments
        uint64_t syncs, synced_appends
        uint64_t recoveries, tail_cuts
        uint32_t members
        uint32_t member_slot

    int qm_log_stats(qm_log_t *log, qm_log_stats_t *st)

    # ----- consumer group
    struct qm_group
    ctypedef qm_group qm_group_t

    const uint32_t QM_GROUP_ORDERED
    const uint32_t QM_GROUP_DEFAULT_WINDOW
    const int64_t QM_GROUP_SWEEP_NS

    ctypedef struct qm_group_config_t:
        uint32_t partitions
        uint32_t window
        uint32_t flags
        const uint64_t *start

    int qm_group_open(const char *topic_dir, const char *group, qm_open_mode_t mode,
                      const qm_group_config_t *cfg, qm_group_t **out, int *created)
    void qm_group_close(qm_group_t *g)
    int qm_group_config(const qm_group_t *g, qm_group_config_t *cfg)

    ctypedef struct qm_group_lease_t:
        uint64_t offset
        uint64_t epoch
        uint32_t partition
        uint32_t delivery_count

    const uint32_t QM_CLAIM_COMPLETE

    int qm_group_claim(qm_group_t *g, uint32_t partition, uint64_t end, int64_t now_ns,
                       int64_t lease_ns, uint32_t flags, qm_group_lease_t *out, size_t max,
                       size_t *got)
    int qm_group_ack(qm_group_t *g, uint32_t partition, uint64_t offset, uint64_t epoch)
    int qm_group_ack_many(qm_group_t *g, const qm_group_lease_t *leases, size_t n, int *status)
    int qm_group_nack(qm_group_t *g, uint32_t partition, uint64_t offset, uint64_t epoch,
                      int64_t not_before_ns)
    int qm_group_extend(qm_group_t *g, uint32_t partition, uint64_t offset, uint64_t epoch,
                        int64_t deadline_ns)
    int qm_group_seek(qm_group_t *g, uint32_t partition, uint64_t offset)
    int qm_group_skip_to(qm_group_t *g, uint32_t partition, uint64_t log_start, uint64_t *skipped)
    int qm_group_count_dead_lettered(qm_group_t *g, uint32_t partition, uint64_t n)
    int qm_group_acquire(qm_group_t *g, uint32_t partition)
    int qm_group_release(qm_group_t *g, uint32_t partition)
    int qm_group_sweep(qm_group_t *g, int64_t now_ns, uint64_t *released)
    int qm_group_next_due(qm_group_t *g, uint32_t partition, int64_t *due_ns)

    ctypedef struct qm_group_partition_stats_t:
        uint64_t committed, cursor
        uint64_t pending
        uint64_t leased, delayed
        uint64_t acked_ahead
        uint64_t redelivered, dead_lettered, skipped, seeks
        uint32_t owner_slot
        uint64_t owner_epoch

    int qm_group_partition_stats(qm_group_t *g, uint32_t partition,
                                 qm_group_partition_stats_t *st)

    ctypedef struct qm_group_stats_t:
        uint32_t partitions, window, flags
        uint32_t members
        uint32_t member_slot
        uint64_t sweeps, reboots

    int qm_group_stats(qm_group_t *g, qm_group_stats_t *st)
