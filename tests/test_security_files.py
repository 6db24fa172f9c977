"""Files and permissions of every pyqmem object (reliability.md rows D2-D5, C7).

Objects: a Queue's shared-memory file (``$PYQMEM_SHM_DIR/pyqmem.<uid>.q.<name>``), a
Topic's folder (topic.json, .lock, ``p<k>/`` with control, segment and index files), a
consumer group's file (``<topic>/groups/<group>.grp``) and the dead-letter topic
(``<topic>.dlq``).

- D2: a symlink or hard link planted at any of them, pointing at a canary, is refused
  with PermissionError (or AlreadyExists for ``create=True`` on an occupied name), and
  the canary is neither read nor written (content, mtime, atime, inode compared).
- D3: the name squatted by another uid, or made open to group/others: refused with a
  PermissionError that says why.
- D4: under umask 000, 022 and 077 every file is 0600 and every folder 0700.
- D5: another user (a child that dropped to uid 65534) gets PermissionError on the
  victim's objects and leaves no file behind.
- C7: a pickle whose ``__reduce__`` would create a marker file is never unpickled by
  Topic's default serializer, ``"raw"`` or a JSON serializer, and cannot reach a
  pickle Queue through another user or a group/world-accessible object.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import tempfile

import pytest

import pyqmem
from helpers.paths import queue_path
from helpers.security import NOBODY, OTHER, Canary, as_user, require_root, tree

SEG = 64 * 1024
SEGMENT0 = "00000000000000000000.log"
INDEX0 = "00000000000000000000.idx"


# ----------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------
@pytest.fixture
def root(shm_dir, request):
    """A fresh topic root folder on the same file system as the queue files (so hard
    links between the objects and a canary are possible)."""
    path = tempfile.mkdtemp(prefix="sec-", dir=shm_dir)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def shared_base():
    """A folder another uid can traverse (0711): the victim's objects live below it,
    as in a shared /dev/shm or a project folder."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="pyqmem-sec-", dir=base)
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_topic(root, name="ev", group="g"):
    """A topic with one record, a consumer group that acked it, closed again."""
    with pyqmem.Topic(name, dir=root, segment_bytes=SEG) as t:
        t.send(b"record")
        if group:
            with t.consumer(group=group) as c:
                c.get(timeout=5).ack()
    return os.path.join(root, name)


def plant(kind, target, at):
    """Replace `at` by a symlink or hard link to `target`."""
    if os.path.isdir(at) and not os.path.islink(at):
        shutil.rmtree(at)
    elif os.path.lexists(at):
        os.unlink(at)
    (os.symlink if kind == "symlink" else os.link)(target, at)


def open_topic_and_group(root, name="ev", group="g", **kw):
    """Open the topic, read through the group, send: everything a user does."""
    with pyqmem.Topic(name, dir=root, **kw) as t:
        with t.consumer(group=group) as c:
            try:
                c.get(timeout=0.05)
            except pyqmem.Empty:
                pass
        t.send(b"more")


# ----------------------------------------------------------------------------
# D2: planted links
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("create", [None, True, False])
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_queue_refuses_a_link_planted_at_its_shm_path(names, shm_dir, kind, create):
    name = names.new()
    canary = Canary(os.path.join(shm_dir, f"canary-{name}"))
    plant(kind, canary.path, queue_path(name))
    canary.arm()
    expected = (PermissionError, pyqmem.AlreadyExists) if create else PermissionError
    with pytest.raises(expected) as ei:
        pyqmem.Queue(name, create=create)
    assert canary.changes() == {}
    if isinstance(ei.value, PermissionError):
        reason = "symlink" if kind == "symlink" else "links"
        assert reason in str(ei.value), ei.value
    os.unlink(canary.path)


def test_queue_does_not_create_the_target_of_a_dangling_symlink(names, shm_dir):
    name = names.new()
    target = os.path.join(shm_dir, f"target-{name}")
    os.symlink(target, queue_path(name))
    with pytest.raises(PermissionError, match="symlink"):
        pyqmem.Queue(name)
    assert not os.path.lexists(target)


TOPIC_LINK_SITES = {
    # site: (path relative to the root, canary is a folder)
    "topic folder": ("ev", True),
    "partition folder": ("ev/p0", True),
    "groups folder": ("ev/groups", True),
    "topic.json": ("ev/topic.json", False),
    "control file": ("ev/p0/control", False),
    "segment file": (f"ev/p0/{SEGMENT0}", False),
    "group file": ("ev/groups/g.grp", False),
}


@pytest.mark.parametrize("site,kind", [
    (site, kind) for site in sorted(TOPIC_LINK_SITES) for kind in ("symlink", "hardlink")
    if kind == "symlink" or not TOPIC_LINK_SITES[site][1]])   # folders cannot be hard-linked
def test_topic_refuses_a_link_planted_at_each_of_its_paths(root, kind, site):
    rel, folder = TOPIC_LINK_SITES[site]
    make_topic(root)
    canary = Canary(os.path.join(root, "canary"), folder=folder)
    plant(kind, canary.path, os.path.join(root, rel))
    canary.arm()
    with pytest.raises(PermissionError) as ei:
        open_topic_and_group(root)
    assert canary.changes() == {}
    assert ("symlink" in str(ei.value)) if kind == "symlink" else ("links" in str(ei.value)), ei.value


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_topic_never_uses_a_link_planted_at_an_index_file(root, kind):
    """The index only speeds up seeks: one that is a link is not mapped (the reader
    scans the segment instead), so the canary stays untouched and reads stay right."""
    make_topic(root)
    canary = Canary(os.path.join(root, "canary"), content=b"\xff" * 4096)
    plant(kind, canary.path, os.path.join(root, "ev", "p0", INDEX0))
    canary.arm()
    with pyqmem.Topic("ev", dir=root) as t:
        with t.consumer(start="earliest") as c:
            assert bytes(c.get(timeout=5).data) == b"record"
        t.send(b"more")
    assert canary.changes() == {}


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("site", [".lock", ".topic.json.tmp"])
def test_growing_a_topic_never_writes_through_a_link_in_its_folder(root, kind, site):
    """Growing rewrites topic.json through a temp file under .lock: a link planted at
    either is refused or replaced, never written through."""
    make_topic(root, group=None)
    canary = Canary(os.path.join(root, "canary"))
    plant(kind, canary.path, os.path.join(root, "ev", site))
    canary.arm()
    try:
        with pyqmem.Topic("ev", dir=root, partitions=2) as t:
            assert t.partitions == 2
    except PermissionError as exc:
        assert site == ".lock", f"the temp file is ours to replace: {exc}"
    assert canary.changes() == {}


def test_dead_lettering_into_a_symlinked_dlq_folder_is_refused_and_the_record_kept(root):
    with pyqmem.Topic("ev", dir=root, segment_bytes=SEG) as t:
        canary = Canary(os.path.join(root, "canary"), folder=True)
        os.symlink(canary.path, os.path.join(root, "ev.dlq"))
        canary.arm()
        t.send(b"poison")
        with t.consumer(group="g", max_deliveries=1, visibility_timeout=0.2) as c:
            c.get(timeout=5).nack()
            with pytest.raises(PermissionError, match="symlink"):
                c.get(timeout=2)
            assert c.stats()[0]["pending"] == 1, "the record must stay in the group, not vanish"
    assert canary.changes() == {}
