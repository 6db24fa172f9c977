# Status codes to exceptions, deadlines and the 50 ms wait slice.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

NOWAIT = QM_NOWAIT
FOREVER = QM_FOREVER
OPEN_OR_CREATE = QM_OPEN_OR_CREATE
CREATE_ONLY = QM_CREATE_ONLY
OPEN_ONLY = QM_OPEN_ONLY
LOG_FSYNC = QM_LOG_FSYNC
ENOTREADY = QM_ENOTREADY    # the .status of a QmemError: an object still being created
EMEMBERS = QM_EMEMBERS      # the .status of a QmemError: member table full

cdef enum:
    _SLICE_NS = 50000000        # longest stay in C before signal handlers run
    _GIL_COPY_MAX = 65536       # records up to this size are first tried holding the GIL

# Ring.get_frame's tags (the pickle serializer's record framing, which
# pyqmem.serializers defines): the rest of a record tagged _TAG_BYTES comes
# back as bytes, the rest of one tagged _TAG_OUT_OF_BAND as one writable
# bytearray.  Set by configure(); until then no tag matches.
cdef int _TAG_BYTES = -2
cdef int _TAG_OUT_OF_BAND = -2


_DETAILED = frozenset((QM_ETOOBIG, QM_ECORRUPT, QM_EINCOMPAT, QM_EINVAL, QM_EPERM,
                       QM_EMEMBERS, QM_ENOTREADY))


cdef object _error(int status, object name, bint putting):
    """The exception for the negative `status` of a call on object `name`.

    Would-block and timeout mean Full when `putting`, else Empty.
    """
    cdef str text = qm_status_str(status).decode("utf-8", "replace")
    cdef str msg = f"{text}: {name!r}"
    if status in _DETAILED:   # these always leave the reason in qm_last_error()
        msg = f"{msg} ({qm_last_error().decode('utf-8', 'replace')})"
    if status == QM_EAGAIN or status == QM_ETIMEDOUT:
        return Full(msg) if putting else Empty(msg)
    if status == QM_ETOOBIG:
        return MessageTooLarge(msg)
    if status == QM_ECORRUPT or status == QM_EGONE:
        return CorruptError(msg)
    if status == QM_EINCOMPAT:
        return IncompatibleError(msg)
    if status == QM_ENOTFOUND:
        return NotFound(ENOENT, text, name)
    if status == QM_EEXIST:
        return AlreadyExists(EEXIST, text, name)
    if status == QM_EINVAL:
        return ValueError(msg)
    if status == QM_EPERM:   # the reason (symlink, owner, mode, links) in the message
        return PermissionError(EPERM, f"{text} ({qm_last_error().decode('utf-8', 'replace')})",
                               name)
    if status == QM_ECLOSED:
        return Closed(msg)
    if status == QM_ESTALE:
        return StaleAck(msg)
    if status == QM_EFULL:
        return Full(f"{msg}: the group's pending window is full (the oldest pending "
                    "record must be acked first)")
    if status > -30000:
        if putting:   # qm_log_append clears the detail first: any there is its own
            detail = qm_last_error().decode("utf-8", "replace")
            if detail:
                text = f"{text} ({detail})"
        return OSError(-status, text, name)
    exc = QmemError(msg)
    exc.status = status   # e.g. ENOTREADY (being created) vs EMEMBERS (member table full)
    return exc


cdef inline int64_t _slice_end(int64_t deadline_ns) noexcept nogil:
    """The deadline for one stay in C: `deadline_ns`, or 50 ms from now."""
    cdef int64_t end = qm_now_ns() + _SLICE_NS
    return deadline_ns if deadline_ns < end else end


cdef bint _again(int status, int64_t deadline_ns) except -1:
    """After a wait returned `status`: run signal handlers and say whether to
    wait again (a signal arrived, or only the 50 ms slice ended)."""
    if status == QM_EINTR or (status == QM_ETIMEDOUT and qm_now_ns() < deadline_ns):
        PyErr_CheckSignals()
        return True
    return False



cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


# ----- what the policy layer hands in -------------------------------------
# _core imports nothing of pyqmem: the exception classes it raises and the
# checks and codecs it falls back on for unusual inputs are given to
# configure() once, by pyqmem._native, before anything else is called.
# Until then they are None.
QmemError = Full = Empty = Closed = MessageTooLarge = CorruptError = None
IncompatibleError = NotFound = AlreadyExists = StaleAck = None
_check_int = _check_timeout = _headers_encode = _headers_decode = None


def configure(*, errors, check_int, check_timeout, headers_encode, headers_decode,
              frame_tags):
    """Give _core what it raises and falls back on: `errors` (a namespace
    with QmemError, Full, Empty, Closed, MessageTooLarge, CorruptError,
    IncompatibleError, NotFound, AlreadyExists, StaleAck); `check_int(what,
    value, low, high)` and `check_timeout(timeout) -> seconds or None` (they
    raise the TypeError/ValueError of a bad argument); the header block's
    `headers_encode(headers, correlation_id, limit)` and
    `headers_decode(block) -> (headers, correlation_id)` (the fast codec
    here hands them what it does not take, and a malformed block for its
    CorruptError); `frame_tags` = (tag of a bytes record, tag of an
    out-of-band frame), the first byte values Ring.get_frame splits off."""
    global QmemError, Full, Empty, Closed, MessageTooLarge, CorruptError
    global IncompatibleError, NotFound, AlreadyExists, StaleAck
    global _check_int, _check_timeout, _headers_encode, _headers_decode
    global _TAG_BYTES, _TAG_OUT_OF_BAND
    QmemError, Full, Empty, Closed = errors.QmemError, errors.Full, errors.Empty, errors.Closed
    MessageTooLarge, CorruptError = errors.MessageTooLarge, errors.CorruptError
    IncompatibleError, NotFound = errors.IncompatibleError, errors.NotFound
    AlreadyExists, StaleAck = errors.AlreadyExists, errors.StaleAck
    _check_int, _check_timeout = check_int, check_timeout
    _headers_encode, _headers_decode = headers_encode, headers_decode
    _TAG_BYTES, _TAG_OUT_OF_BAND = frame_tags


def deadline_ns(seconds):
    """The absolute deadline `seconds` (a float >= 0, or None: forever) from now."""
    if seconds is None:
        return QM_FOREVER
    return min(qm_now_ns() + int(seconds * 1e9), QM_FOREVER)


cdef int64_t _py_deadline(object timeout) except? -1:
    """The deadline of an unusual `timeout` (validated as Queue does)."""
    return deadline_ns(_check_timeout(timeout))


cdef int _py_check_int(str what, object value, object low, object high) except -1:
    _check_int(what, value, low, high)
    return 0



def version():
    """The linked C core's version (qm_version()), e.g. "0.1.0"."""
    return qm_version().decode("ascii")


def path_in_ram(path):
    """True if `path` is on a file system held in RAM (qm_path_in_ram);
    OSError if it cannot be told."""
    cdef bytes raw = os.fsencode(path)
    cdef int rc = qm_path_in_ram(raw)
    if rc < 0:
        raise OSError(-rc, os.strerror(-rc), path)
    return rc == 1


def now_ns():
    """CLOCK_MONOTONIC now, in nanoseconds: the clock of every deadline."""
    return qm_now_ns()
