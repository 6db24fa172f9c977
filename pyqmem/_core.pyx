# cython: language_level=3, embedsignature=True, embedsignature.format=python
"""Adapter between pyqmem's Python layer and the C core (csrc/include/qmem.h).

It owns C handles (``Ring``: a shared ring; ``Log``: one partition log, read
through ``Cursor`` objects), turns status codes into exceptions (``_error``),
and releases the GIL around every wait.  It holds no policy: serialization,
defaults, argument checks and per-thread handles live in ``pyqmem.queue``,
``pyqmem.topic`` and ``pyqmem.consumer``.  The exception is the topic hot
paths at the end of this file (``TopicSender``, ``TopicReader``, ``Message``,
``RecordMetadata``): the common case of ``Topic.send``/``send_many`` and
``Consumer.get``/``get_many`` runs here without a Python frame per record,
and everything else is handed back to the Python layer.

Deadlines are absolute ``now_ns()`` nanoseconds; ``NOWAIT`` never blocks and
``FOREVER`` waits until done.  A wait runs in C for at most 50 ms at a time,
then Python's signal handlers run (Ctrl-C raises ``KeyboardInterrupt``).
"""

cimport cython
from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBuffer_FillInfo,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytearray cimport PyByteArray_FromStringAndSize
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EEXIST, ENOENT, EPERM
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.object cimport PyObject_RichCompare
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_DecodeUTF8
from cpython.pythread cimport (
    NOWAIT_LOCK,
    PY_LOCK_ACQUIRED,
    PyLockStatus,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_get_thread_ident,
    PyThread_release_lock,
    PyThread_type_lock,
)
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_REALTIME, clock_gettime, timespec

from pyqmem._qmem cimport *

import numbers
import os

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

cdef extern from "pythread.h":
    ctypedef long long PY_TIMEOUT_T
    PyLockStatus PyThread_acquire_lock_timed(PyThread_type_lock lock, PY_TIMEOUT_T microseconds,
                                             int intr_flag) nogil

include "_cy/status.pxi"
include "_cy/ring.pxi"
include "_cy/log.pxi"
include "_cy/records.pxi"
include "_cy/message.pxi"
include "_cy/sender.pxi"
include "_cy/reader.pxi"
include "_cy/group.pxi"
include "_cy/group_reader.pxi"
