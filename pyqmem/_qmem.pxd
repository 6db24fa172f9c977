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

    const char *qm_status_str(int status)
    const char *qm_last_error()

    # ----- time
    const int64_t QM_NOWAIT
    const int64_t QM_FOREVER

    int64_t qm_now_ns()

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
        uint32_t producers
        uint32_t consumers
        uint32_t members
        uint32_t abandoned
        uint32_t reclaimed
        uint32_t member_slot

    int qm_ring_open(const char *name, qm_open_mode_t mode, uint64_t capacity,
                     uint64_t maxsize, qm_ring_t **out)
    void qm_ring_close(qm_ring_t *ring)
    int qm_ring_dup(qm_ring_t *ring, qm_ring_t **out)
    void qm_ring_interrupt(qm_ring_t *ring)
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
