# Bytes of a topic record beyond the C core's framing: the key's partition
# (qm_murmur2 of the core, the one implementation) and the header block.
# The header block's definition is pyqmem.headers (pure Python, so every
# binding and backend has it); the encoder and decoder here are its
# accelerator for CPython, as _json is json's: they handle the common case
# (a dict of str -> bytes, a str correlation id, a well-formed block) and
# hand everything else, every error included, to that definition.
# tests/test_topic_fastpaths.py holds them to the same bytes and errors.
# Included by pyqmem/_core.pyx (one extension module; see the order there).

cdef inline int64_t _realtime_ns() noexcept nogil:
    """time.time_ns(): CLOCK_REALTIME in nanoseconds."""
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def murmur2(bytes data):
    """Kafka's murmur2 of `data`, as a signed 32-bit int like Java's
    (qm_murmur2 in qmem.h)."""
    cdef uint32_t h = qm_murmur2(PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
    return <int32_t>h


cdef bytes _CID_NAME = b"qm.correlation_id"


cdef inline void _put_u16(char *p, uint32_t v) noexcept:
    p[0] = <char>(v & 0xff)
    p[1] = <char>((v >> 8) & 0xff)


cdef inline void _put_u32(char *p, uint64_t v) noexcept:
    p[0] = <char>(v & 0xff)
    p[1] = <char>((v >> 8) & 0xff)
    p[2] = <char>((v >> 16) & 0xff)
    p[3] = <char>((v >> 24) & 0xff)


cdef object _encode_headers(object headers, object correlation_id, Py_ssize_t limit):
    """pyqmem.headers.encode for the common case -- a dict of str names (not
    "qm.") to bytes and a str correlation id -- in C; anything else, and
    every error (MessageTooLarge beyond `limit` bytes included, found before
    anything is copied), goes to pyqmem.headers.encode (same bytes, same
    errors)."""
    cdef list names = []
    cdef list values = []
    cdef Py_ssize_t size = 2, count, i
    cdef bytes raw_name, raw_value, out
    cdef char *p
    if headers is not None and type(headers) is not dict:
        return _encode_headers_py(headers, correlation_id, limit)
    if correlation_id is not None and type(correlation_id) is not str:
        return _encode_headers_py(headers, correlation_id, limit)
    try:
        if headers is not None:
            for name, value in (<dict>headers).items():
                if type(name) is not str or type(value) is not bytes or (<str>name).startswith("qm."):
                    return _encode_headers_py(headers, correlation_id, limit)
                names.append(name)
                values.append(value)
        if correlation_id is not None:
            raw_value = PyUnicode_AsUTF8String(correlation_id)
        count = len(names) + (correlation_id is not None)
        if count == 0:
            return b""
        if count > 0xffff:
            return _encode_headers_py(headers, correlation_id, limit)
        for i in range(len(names)):
            raw_name = PyUnicode_AsUTF8String(names[i])
            if len(raw_name) > 0xffff or len(<bytes>values[i]) > 0xffffffff:
                return _encode_headers_py(headers, correlation_id, limit)
            names[i] = raw_name
            size += 6 + len(raw_name) + len(<bytes>values[i])
        if correlation_id is not None:
            names.append(_CID_NAME)
            values.append(raw_value)
            size += 6 + len(_CID_NAME) + len(raw_value)
    except Exception:
        return _encode_headers_py(headers, correlation_id, limit)
    if size > limit:
        return _encode_headers_py(headers, correlation_id, limit)
    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    _put_u16(p, <uint32_t>count)
    p += 2
    for i in range(count):
        raw_name = names[i]
        raw_value = values[i]
        _put_u16(p, <uint32_t>len(raw_name))
        memcpy(p + 2, PyBytes_AS_STRING(raw_name), len(raw_name))
        p += 2 + len(raw_name)
        _put_u32(p, <uint64_t>len(raw_value))
        memcpy(p + 4, PyBytes_AS_STRING(raw_value), len(raw_value))
        p += 4 + len(raw_value)
    return out


cdef object _encode_headers_py(object headers, object correlation_id, Py_ssize_t limit):
    return _headers_encode(headers, correlation_id, limit)


cdef tuple _decode_header_block(const unsigned char *data, Py_ssize_t size):
    """pyqmem.headers.decode of the `size` (> 0) bytes at `data`, in C;
    a malformed block goes to pyqmem.headers.decode for its CorruptError."""
    cdef Py_ssize_t pos = 2, name_len, value_len
    cdef uint32_t count, j
    cdef dict headers = {}
    cdef object correlation_id = None
    cdef object name
    if size < 2:
        return _headers_decode(PyBytes_FromStringAndSize(<const char *>data, size))
    count = <uint32_t>data[0] | (<uint32_t>data[1] << 8)
    try:
        for j in range(count):
            if pos + 2 > size:
                raise ValueError
            name_len = <Py_ssize_t>data[pos] | (<Py_ssize_t>data[pos + 1] << 8)
            pos += 2
            if pos + name_len + 4 > size:
                raise ValueError
            name = PyUnicode_DecodeUTF8(<const char *>data + pos, name_len, NULL)
            pos += name_len
            value_len = (<Py_ssize_t>data[pos] | (<Py_ssize_t>data[pos + 1] << 8)
                         | (<Py_ssize_t>data[pos + 2] << 16) | (<Py_ssize_t>data[pos + 3] << 24))
            pos += 4
            if pos + value_len > size:
                raise ValueError
            if name == "qm.correlation_id":
                correlation_id = PyUnicode_DecodeUTF8(<const char *>data + pos, value_len, NULL)
            elif not name.startswith("qm."):   # other reserved names: skipped
                headers[name] = PyBytes_FromStringAndSize(<const char *>data + pos, value_len)
            pos += value_len
        if pos != size:
            raise ValueError
    except ValueError:   # also UnicodeDecodeError: the Python decoder says what is wrong
        return _headers_decode(PyBytes_FromStringAndSize(<const char *>data, size))
    return headers, correlation_id
