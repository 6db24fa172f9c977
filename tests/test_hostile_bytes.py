"""Hostile bytes at the Python level (reliability-matrix.md C6, C8).

C6: a file with our magic but another format version, layout fingerprint,
byte order, header size, object kind or feature flags is refused with
IncompatibleError (or CorruptError where the field can only be damage),
for a Queue, a Topic (control file, segment) and a consumer group, and the
refused file is left exactly as it was (never re-created over).

C8: a Queue unlinked or replaced (rm, then a new queue of the same name)
while attached.  docs/api.md: unlink() "removes the shared object (attached
handles keep working until closed)".  pyqmem therefore does not detect it:
an attached handle stays bound to the object it opened, like an open file
after rm; a new open of the name gets the new object.  These tests pin
that behaviour (docs/design/faults.md, "Unlinked or replaced while attached").
"""
import os
import struct
import threading
import time

import pytest

import pyqmem
from helpers.paths import queue_path

# qm_header_t (csrc/src/layout.h): every object's first 256 bytes
MAGIC, FORMAT_MAJOR, FORMAT_MINOR, HEADER_BYTES = 0, 8, 10, 12
FINGERPRINT, FEATURES, KIND, RESERVED = 16, 24, 32, 112


def _patch(path, at, fmt, value):
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(struct.pack(fmt, value))


def _read(path, at, fmt):
    with open(path, "rb") as f:
        f.seek(at)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _swapped_magic(path):
    return struct.unpack("<Q", struct.pack(">Q", _read(path, MAGIC, "<Q")))[0]


# (field, offset, struct format, new value from the old one, expected error)
MISMATCHES = [
    ("other byte order", MAGIC, "<Q", None, pyqmem.IncompatibleError),
    ("format major + 1", FORMAT_MAJOR, "<H", lambda v: v + 1, pyqmem.IncompatibleError),
    ("format major 0", FORMAT_MAJOR, "<H", lambda v: 0, pyqmem.IncompatibleError),
    ("layout fingerprint", FINGERPRINT, "<Q", lambda v: v ^ 0x10, pyqmem.IncompatibleError),
    ("unknown feature flag", FEATURES, "<Q", lambda v: v | 1 << 40, pyqmem.IncompatibleError),
    ("other object kind", KIND, "<I", lambda v: v % 3 + 1, pyqmem.IncompatibleError),
    ("header size (sizeof)", HEADER_BYTES, "<I", lambda v: v * 2, (pyqmem.IncompatibleError,
                                                                  pyqmem.CorruptError)),
]
IDS = [m[0] for m in MISMATCHES]


def _apply(path, field):
    _, at, fmt, fn, _ = field
    new = _swapped_magic(path) if fn is None else fn(_read(path, at, fmt))
    _patch(path, at, fmt, new)


def _snapshot(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("field", MISMATCHES, ids=IDS)
def test_queue_of_another_format_is_refused_and_left_untouched(qname, field):
    with pyqmem.Queue(qname, capacity=4096, serializer=None) as q:
        q.put(b"kept")
    path = queue_path(qname)
    _apply(path, field)
    before = _snapshot(path)
    for create in (False, None):
        with pytest.raises(field[4]) as exc:
            pyqmem.Queue(qname, create=create)
        assert qname in str(exc.value)
    assert _snapshot(path) == before


def test_queue_of_another_major_version_names_both_versions(qname):
    with pyqmem.Queue(qname, capacity=4096):
        pass
    path = queue_path(qname)
    _patch(path, FORMAT_MAJOR, "<H", 7)
    with pytest.raises(pyqmem.IncompatibleError, match=r"7\.1.*1\.x"):
        pyqmem.Queue(qname, create=False)


def test_queue_of_a_newer_minor_version_still_opens(qname):
    with pyqmem.Queue(qname, capacity=4096, serializer=None) as q:
        q.put(b"kept")
    _patch(queue_path(qname), FORMAT_MINOR, "<H", 9)
    with pyqmem.Queue(qname, create=False, serializer=None) as q:
        assert q.get(timeout=1) == b"kept"


def _topic_files(tmp_path):
    with pyqmem.Topic("events", partitions=1, dir=str(tmp_path), segment_bytes=65536, retention_bytes=None) as t:
        for i in range(5):
            t.send(b"v%d" % i)
        c = t.consumer(group="workers", start="earliest")
        assert c.get(timeout=5).value == b"v0"
        c.close()
        p0 = os.path.join(t.path, "p0")
    return {
        "control": os.path.join(p0, "control"),
        "segment": os.path.join(p0, "00000000000000000000.log"),
        "group": os.path.join(t.path, "groups", "workers.grp"),
    }


def _open_and_read(tmp_path):
    with pyqmem.Topic("events", dir=str(tmp_path), retention_bytes=None) as t:
        c = t.consumer(start="earliest")
        try:
            return [c.get(timeout=1).value for _ in range(5)]
        finally:
            c.close()


def _open_group(tmp_path):
    with pyqmem.Topic("events", dir=str(tmp_path), retention_bytes=None) as t:
        c = t.consumer(group="workers", start="earliest")
        try:
            return c.get(timeout=1).value
        finally:
            c.close()


# segments have their own 128-byte header: magic, major, minor, header bytes, fingerprint
SEGMENT_MISMATCHES = [m for m in MISMATCHES if m[1] in (MAGIC, FORMAT_MAJOR, FINGERPRINT)]


@pytest.mark.parametrize("which,field", [("control", m) for m in MISMATCHES]
                         + [("segment", m) for m in SEGMENT_MISMATCHES]
                         + [("group", m) for m in MISMATCHES],
                         ids=[f"control-{i}" for i in IDS]
                         + [f"segment-{m[0]}" for m in SEGMENT_MISMATCHES]
                         + [f"group-{i}" for i in IDS])
def test_topic_files_of_another_format_are_refused_and_left_untouched(tmp_path, which, field):
    files = _topic_files(tmp_path)
    path = files[which]
    _apply(path, field)
    before = _snapshot(path)
    expected = field[4]
    if which == "segment" and field[1] == MAGIC:
        expected = (pyqmem.IncompatibleError, pyqmem.CorruptError)   # segments: bad magic
    with pytest.raises(expected):
        _open_group(tmp_path) if which == "group" else _open_and_read(tmp_path)
    assert _snapshot(path) == before


# ----- C8: unlinked or replaced while attached ---------------------------------------------
def test_queue_unlinked_while_attached_keeps_working_for_attached_handles(qname):
    a = pyqmem.Queue(qname, capacity=4096, serializer=None)
    b = pyqmem.Queue(qname, create=False, serializer=None)
    a.unlink()
    assert not pyqmem.Queue.exists(qname)
    a.put(b"after unlink")
    assert b.get(timeout=1) == b"after unlink"
    with pytest.raises(pyqmem.NotFound):
        pyqmem.Queue(qname, create=False)
    a.close()
    b.close()


def test_queue_replaced_while_attached_old_handles_stay_on_the_old_object(qname):
    old = pyqmem.Queue(qname, capacity=4096, serializer=None)
    old.put(b"old-1")
    os.unlink(queue_path(qname))            # an admin's rm
    new = pyqmem.Queue(qname, capacity=8192, create=True, serializer=None)
    old.put(b"old-2")
    new.put(b"new-1")
    # each handle sees only its own object; nothing crosses over
    assert [old.get(timeout=1), old.get(timeout=1)] == [b"old-1", b"old-2"]
    assert new.get(timeout=1) == b"new-1"
    with pytest.raises(pyqmem.Empty):
        old.get(timeout=0.05)
    assert old.stats()["capacity"] == 4096 and new.stats()["capacity"] == 8192
    old.close()
    new.close()


def test_get_blocked_on_a_replaced_queue_ends_at_its_timeout_not_later(qname):
    old = pyqmem.Queue(qname, capacity=4096, serializer=None)
    os.unlink(queue_path(qname))
    new = pyqmem.Queue(qname, create=True, serializer=None)
    result = {}

    def blocked_get():
        t0 = time.monotonic()
        try:
            old.get(timeout=0.5)
            result["got"] = True
        except pyqmem.Empty:
            result["empty_after"] = time.monotonic() - t0

    th = threading.Thread(target=blocked_get)
    th.start()
    new.put(b"to the new object")           # wakes nobody on the old one
    th.join(timeout=30)
    assert not th.is_alive()
    assert "got" not in result and result["empty_after"] >= 0.5
    print(f"blocked get on the replaced queue raised Empty after {result['empty_after']:.3f} s")
    assert new.get(timeout=1) == b"to the new object"
    old.close()
    new.close()
