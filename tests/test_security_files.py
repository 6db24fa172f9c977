"""Files and permissions of every pyqmem object (reliability-matrix.md rows D2-D5, C7).

Objects: a Queue's shared-memory file (``$PYQMEM_DIR/pyqmem.<uid>.q.<name>``), a
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
import mmap
import os
import pickle
import shutil
import signal
import stat
import tempfile
import time

import pytest

import pyqmem
from helpers.paths import queue_path
from helpers.security import NOBODY, Canary, as_user, require_root, tree

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
    with pyqmem.Topic(name, dir=root, segment_bytes=SEG, retention_bytes=None) as t:
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


def _swapper(path, link, counter, stop_after):
    """Fork a process that keeps swapping `path` (a real file) with `link` (a symlink)
    by atomic renames, counting swaps in the shared `counter`, until killed or
    `stop_after` seconds; returns its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            aside = path + ".aside"
            deadline = time.monotonic() + stop_after
            n = 0
            while time.monotonic() < deadline:
                os.rename(path, aside)
                os.rename(link, path)
                os.rename(aside, link)
                n += 1
                counter[:8] = n.to_bytes(8, "little")
        finally:
            os._exit(0)
    return pid


def _race(open_once, path, canary, min_opens=300, max_seconds=3.0):
    """Open at least `min_opens` times while `path` flips between the real file and a
    symlink to the canary, until both have been seen or `max_seconds` passed.
    Returns ({outcome: count}, swaps); leaves the real file at `path`."""
    link = path + ".link"
    os.symlink(canary.path, link)
    canary.arm()
    counter = mmap.mmap(-1, 8)
    pid = _swapper(path, link, counter, stop_after=max_seconds + 10)
    outcomes = {}
    deadline = time.monotonic() + max_seconds
    try:
        while (sum(outcomes.values()) < min_opens or len(outcomes) < 2) \
                and time.monotonic() < deadline:
            try:
                open_once()
                got = "opened"
            except (PermissionError, pyqmem.NotFound, pyqmem.CorruptError) as exc:
                got = type(exc).__name__
            outcomes[got] = outcomes.get(got, 0) + 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    for p in (link, path + ".aside"):   # put the real file back at `path`
        if os.path.lexists(p) and not os.path.islink(p):
            os.rename(p, path)
    return outcomes, int.from_bytes(counter[:8], "little")


def test_queue_open_racing_a_symlink_swap_never_touches_the_canary(names, shm_dir):
    name = names.new()
    with pyqmem.Queue(name, capacity=4096) as q:
        q.put("kept")
    canary = Canary(os.path.join(shm_dir, f"canary-{name}"))
    outcomes, swaps = _race(lambda: pyqmem.Queue(name, create=False).close(), queue_path(name),
                            canary)
    print(f"\nD2 race (queue): {outcomes} during {swaps} swaps")
    assert set(outcomes) <= {"opened", "PermissionError", "NotFound"}
    assert canary.changes() == {}
    with pyqmem.Queue(name, create=False) as q:
        assert q.get(timeout=1) == "kept"
    os.unlink(canary.path)


def test_topic_open_racing_a_symlink_swap_of_its_control_file_never_touches_the_canary(root):
    make_topic(root)
    canary = Canary(os.path.join(root, "canary"))

    def open_once():
        with pyqmem.Topic("ev", dir=root, create=False) as t:
            t.send(b"x")

    outcomes, swaps = _race(open_once, os.path.join(root, "ev", "p0", "control"), canary,
                            min_opens=150)
    print(f"\nD2 race (topic control file): {outcomes} during {swaps} swaps")
    # CorruptError: the instant the control file is away, the partition looks broken
    assert set(outcomes) <= {"opened", "PermissionError", "CorruptError"}
    assert canary.changes() == {}


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


def test_a_symlinked_partition_folder_left_by_a_dead_creator_is_refused_not_emptied(root):
    """No topic.json: the next creator removes the partition folders it finds, but
    never the contents of one that is a symlink."""
    os.mkdir(os.path.join(root, "ev"), 0o700)
    canary = Canary(os.path.join(root, "canary"), folder=True)
    os.symlink(canary.path, os.path.join(root, "ev", "p0"))
    canary.arm()
    with pytest.raises(PermissionError, match="symlink"):
        pyqmem.Topic("ev", dir=root, segment_bytes=SEG, retention_bytes=None)
    assert canary.changes() == {}


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_topic_never_uses_a_link_planted_at_an_index_file(root, kind):
    """The index only speeds up seeks: one that is a link is not mapped (the reader
    scans the segment instead), so the canary stays untouched and reads stay right."""
    make_topic(root)
    canary = Canary(os.path.join(root, "canary"), content=b"\xff" * 4096)
    plant(kind, canary.path, os.path.join(root, "ev", "p0", INDEX0))
    canary.arm()
    with pyqmem.Topic("ev", dir=root, retention_bytes=None) as t:
        with t.consumer(start="earliest") as c:
            assert bytes(c.get(timeout=5).data) == b"record"
        t.send(b"more")
    assert canary.changes() == {}


def _next_segment_base(root):
    """(records of 1000 bytes that fill segment 0, base offset of segment 1)."""
    with pyqmem.Topic("scratch", dir=root, segment_bytes=SEG, retention_bytes=None) as t:
        n = 0
        while t.stats()["partitions"][0]["segments"] < 2:
            t.send(b"v" * 1000)
            n += 1
    shutil.rmtree(os.path.join(root, "scratch"))
    return n - 1, n - 1   # segment 1 starts at the record that did not fit


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("ext", ["log", "idx"])
def test_a_link_planted_at_the_next_segment_or_index_is_refused_at_the_roll(root, kind, ext):
    fill, base = _next_segment_base(root)
    canary = Canary(os.path.join(root, "canary"))
    with pyqmem.Topic("ev", dir=root, segment_bytes=SEG, retention_bytes=None) as t:
        plant(kind, canary.path, os.path.join(root, "ev", "p0", f"{base:020d}.{ext}"))
        canary.arm()
        for _ in range(fill):
            t.send(b"v" * 1000)
        with pytest.raises(PermissionError, match="symlink|links"):
            t.send(b"v" * 1000)   # needs segment `base`
        with t.consumer() as c:   # what was acked is still there
            assert [c.get(timeout=5).offset for _ in range(fill)] == list(range(fill))
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
        with pyqmem.Topic("ev", dir=root, partitions=2, retention_bytes=None) as t:
            assert t.partitions == 2
    except PermissionError as exc:
        assert site == ".lock", f"the temp file is ours to replace: {exc}"
    assert canary.changes() == {}


def test_dead_lettering_into_a_symlinked_dlq_folder_is_refused_and_the_record_kept(root):
    with pyqmem.Topic("ev", dir=root, segment_bytes=SEG, retention_bytes=None) as t:
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


# ----------------------------------------------------------------------------
# D3: names squatted by another uid, or open to group/others
# ----------------------------------------------------------------------------
def _foreign(path):
    os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def _open_mode(path):
    os.chmod(path, 0o770 if os.path.isdir(path) else 0o660)


def _world_mode(path):
    os.chmod(path, 0o707 if os.path.isdir(path) else 0o606)


SQUAT = {"owned by uid 65534": _foreign, "group bits": _open_mode, "other bits": _world_mode}
TOPIC_SITES = ["ev", "ev/topic.json", "ev/p0", "ev/p0/control", f"ev/p0/{SEGMENT0}",
               "ev/groups", "ev/groups/g.grp"]


@pytest.mark.parametrize("how", sorted(SQUAT))
def test_queue_file_of_another_uid_or_open_to_others_is_refused(names, how):
    if how == "owned by uid 65534":
        require_root()
    name = names.new()
    with pyqmem.Queue(name, capacity=4096) as q:
        q.put("left by the owner")
    SQUAT[how](queue_path(name))
    before = os.stat(queue_path(name))
    for create in (None, False):
        with pytest.raises(PermissionError, match="owned by uid|open to group or others"):
            pyqmem.Queue(name, create=create)
    after = os.stat(queue_path(name))
    assert (after.st_uid, after.st_mode, after.st_mtime_ns) == \
        (before.st_uid, before.st_mode, before.st_mtime_ns), "the refused file was changed"


@pytest.mark.parametrize("how", sorted(SQUAT))
@pytest.mark.parametrize("site", TOPIC_SITES)
def test_topic_paths_of_another_uid_or_open_to_others_are_refused(root, site, how):
    if how == "owned by uid 65534":
        require_root()
    make_topic(root)
    path = os.path.join(root, site)
    SQUAT[how](path)
    before = os.stat(path)
    with pytest.raises(PermissionError, match="not private|owned by uid|open to group or others"):
        open_topic_and_group(root)
    after = os.stat(path)
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)


@pytest.fixture
def sticky_dir(shared_base):
    """A world-writable sticky folder (like /tmp or /dev/shm) inside `shared_base`."""
    path = os.path.join(shared_base, "sticky")
    os.mkdir(path)
    os.chmod(path, 0o1777)
    return path


def test_topic_and_dlq_names_squatted_by_another_user_are_refused(sticky_dir):
    """uid 65534 pre-creates (really, as that user) the folders of topic "ev" and of
    the dead-letter topic "fine.dlq" in a shared folder; the victim is refused and
    keeps its poison record pending instead of writing into the squatter's topic."""
    require_root()

    def squat():
        for name in ("ev", "fine.dlq"):
            with pyqmem.Topic(name, dir=sticky_dir, segment_bytes=SEG, retention_bytes=None) as t:
                t.send(b"from the squatter")
        os.chmod(os.path.join(sticky_dir, "ev"), 0o777)
        return sorted(os.listdir(sticky_dir))

    assert as_user(NOBODY, squat) == ("ok", ["ev", "fine.dlq"])
    squatted = tree(sticky_dir)
    with pytest.raises(PermissionError, match="not private"):
        pyqmem.Topic("ev", dir=sticky_dir, retention_bytes=None)
    with pyqmem.Topic("fine", dir=sticky_dir, segment_bytes=SEG, retention_bytes=None) as t:
        t.send(b"poison")
        with t.consumer(group="g", max_deliveries=1, visibility_timeout=0.2) as c:
            c.get(timeout=5).nack()
            with pytest.raises(PermissionError, match="not private"):
                c.get(timeout=2)
            assert c.stats()[0]["pending"] == 1
    now = tree(sticky_dir)
    assert {k: v for k, v in now.items() if not k.startswith("fine/") and k != "fine"} == squatted


VICTIM = 65533   # an unprivileged victim, so that its default root is not root's


@pytest.mark.parametrize("how", ["folder", "symlink"])
def test_default_topic_root_squatted_by_another_user_is_refused(how):
    """The default root /dev/shm/pyqmem-<uid> is a fixed name in a world-writable
    folder: uid 65534 makes it first (a 0777 folder, or a symlink to its own folder)
    and the victim, uid 65533, is refused instead of using it."""
    require_root()
    squat = f"/dev/shm/pyqmem-{VICTIM}"
    if not os.access("/dev/shm", os.W_OK) or os.path.lexists(squat):
        pytest.skip(f"needs /dev/shm and no {squat} yet")
    mine = f"/dev/shm/pyqmem-sec-squatter-{os.getpid()}"

    def make():
        if how == "folder":
            os.mkdir(squat)
            os.chmod(squat, 0o777)
        else:
            os.mkdir(mine, 0o700)
            os.symlink(mine, squat)

    def victim():
        os.environ.pop("PYQMEM_DIR", None)
        try:
            pyqmem.Topic("ev", retention_bytes=None)
        except PermissionError as exc:
            return str(exc)
        return "opened"

    try:
        assert as_user(NOBODY, make) == ("ok", None)
        kind, text = as_user(VICTIM, victim)
        assert kind == "ok" and "default topic folder" in text, text
        assert "not private" in text or "symlink" in text, text
        assert os.listdir(mine if how == "symlink" else squat) == []
    finally:
        for p in (squat, mine):
            if os.path.islink(p):
                os.unlink(p)
            elif os.path.isdir(p):
                shutil.rmtree(p)


# ----------------------------------------------------------------------------
# D4: modes whatever the umask
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_every_file_is_0600_and_every_folder_0700_whatever_the_umask(names, root, umask):
    qname = names.new()
    topic_root = os.path.join(root, "made-by-pyqmem")   # the root folder too
    old = os.umask(umask)
    try:
        with pyqmem.Queue(qname, capacity=4096) as q:
            q.put(b"x")
        with pyqmem.Topic("ev", dir=topic_root, segment_bytes=SEG, retention_bytes=None) as t:
            for i in range(40):                           # rolls: more segments and indexes
                t.send(os.urandom(4000))
            with t.consumer(group="g") as c:
                c.get(timeout=5).ack()
        with pyqmem.Topic("dl", dir=topic_root, segment_bytes=SEG, retention_bytes=None) as t:
            t.send(b"poison")
            with t.consumer(group="g", max_deliveries=1, visibility_timeout=0.2) as c:
                c.get(timeout=5).nack()
                with pytest.raises(pyqmem.Empty):         # dead-lettered meanwhile
                    c.get(timeout=0.5)
        with pyqmem.Topic("ev", dir=topic_root, partitions=2, retention_bytes=None):   # grown: topic.json rewritten
            pass
    finally:
        os.umask(old)
    found = tree(topic_root)
    assert {"ev/topic.json", "ev/.lock", "ev/p1/control", "ev/groups/g.grp",
            "dl.dlq/p0/control", f"ev/p0/{INDEX0}"} <= set(found)
    assert sum(1 for k in found if k.endswith(".log")) >= 3
    found["."] = ("dir", stat.S_IMODE(os.stat(topic_root).st_mode), os.getuid())
    found["queue"] = ("file", stat.S_IMODE(os.stat(queue_path(qname)).st_mode), os.getuid())
    wrong = {k: f"{kind} {mode:04o}" for k, (kind, mode, uid) in found.items()
             if mode != (0o700 if kind == "dir" else 0o600) or kind == "link"}
    assert wrong == {}, f"umask {umask:03o}"


# ----------------------------------------------------------------------------
# D5: another user
# ----------------------------------------------------------------------------
def _outcome(result):
    """("ok", value) / ("raised", exc) -> a comparable summary."""
    kind, value = result
    return (kind, type(value).__name__) if kind == "raised" else (kind, value)


@pytest.fixture
def victim(shared_base, monkeypatch):
    """The victim (this process, root): a queue "jobs" and a topic "ev" with a consumer
    group "g", below a folder other users can traverse (0711; the topic root 0755)."""
    require_root()
    shm = os.path.join(shared_base, "shm")
    topics = os.path.join(shared_base, "topics")
    os.mkdir(shm, 0o711)
    os.mkdir(topics)
    os.chmod(topics, 0o755)
    monkeypatch.setenv("PYQMEM_DIR", shm)
    with pyqmem.Queue("jobs", capacity=4096) as q:
        q.put("for the victim")
    make_topic(topics)
    return shm, topics


def test_another_user_gets_permission_error_on_a_victims_topic_and_leaves_no_file(victim):
    shm, topics = victim
    before = tree(topics)
    ev = os.path.join(topics, "ev")

    def attack():
        results = {}
        for create in (None, False, True):
            try:
                pyqmem.Topic("ev", dir=topics, create=create, partitions=2, retention_bytes=None)
                results[f"Topic create={create}"] = "opened"
            except Exception as exc:
                results[f"Topic create={create}"] = type(exc).__name__
        for what, fn in {
            "new topic in the victim's root": lambda: pyqmem.Topic("mine", dir=topics, retention_bytes=None),
            "redrive": lambda: pyqmem.redrive("ev", dir=topics),
            "unpickled topic token": lambda: pickle.loads(token),
            "read topic.json": lambda: open(os.path.join(ev, "topic.json"), "rb").read(),
            "open control": lambda: os.open(os.path.join(ev, "p0", "control"), os.O_RDONLY),
        }.items():
            try:
                fn()
                results[what] = "opened"
            except Exception as exc:
                results[what] = type(exc).__name__
        return results

    with pyqmem.Topic("ev", dir=topics, retention_bytes=None) as t:
        token = pickle.dumps(t)   # a handle sent to the other user's process
    kind, results = as_user(NOBODY, attack)
    assert kind == "ok", results
    assert results == dict.fromkeys(results, "PermissionError"), results
    assert tree(topics) == before, "the other user left files behind"
    open_topic_and_group(topics)   # and the victim still works


def test_another_user_cannot_reach_a_victims_queue_and_leaves_no_file(victim):
    """A queue's file name carries its owner's uid, so another user's Queue("jobs") is
    another object: it cannot even name the victim's.  Opening the file directly or
    creating beside it is PermissionError; nothing is left behind."""
    shm, _ = victim
    before = tree(shm)
    path = queue_path("jobs")
    with pyqmem.Queue("jobs") as q:
        token = pickle.dumps(q)

    def attack():
        results = {}
        for what, fn in {
            "attach by name": lambda: pyqmem.Queue("jobs", create=False),
            "create by name": lambda: pyqmem.Queue("jobs"),
            "unpickled queue token": lambda: pickle.loads(token),
            "open the file": lambda: os.open(path, os.O_RDWR),
        }.items():
            try:
                fn()
                results[what] = "opened"
            except Exception as exc:
                results[what] = type(exc).__name__
        return results

    kind, results = as_user(NOBODY, attack)
    assert kind == "ok", results
    assert results == {"attach by name": "NotFound", "create by name": "PermissionError",
                       "unpickled queue token": "NotFound", "open the file": "PermissionError"}
    assert tree(shm) == before
    with pyqmem.Queue("jobs", create=False) as q:
        assert q.get(timeout=1) == "for the victim"


# ----------------------------------------------------------------------------
# C7: pickle payloads
# ----------------------------------------------------------------------------
class _Exploit:
    """Unpickling this calls open(marker, "x"): the marker file appears."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "x"))


class _Json:
    dumps = staticmethod(lambda obj: json.dumps(obj).encode())
    loads = staticmethod(lambda buf: json.loads(bytes(buf)))


@pytest.fixture
def exploit(tmp_path):
    """(payload bytes, marker path); the control at teardown proves the payload works."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Exploit(str(marker)))
    yield payload, marker
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Exploit(str(control)))).close()
    assert control.exists(), "the exploit payload does not work: the test proves nothing"


def test_topic_default_serializer_never_unpickles(root, exploit):
    payload, marker = exploit
    with pyqmem.Topic("ev", dir=root, segment_bytes=SEG, retention_bytes=None) as t:
        t.send(payload)
        t.send(payload, key="k", headers={"h": payload})
        with t.consumer() as c:
            got = [c.get(timeout=5) for _ in range(2)]
        with t.consumer(group="g") as c:
            got += [c.get(timeout=5) for _ in range(2)]
        with t.consumer(group="poisoned", max_deliveries=1, retry=pyqmem.RetryPolicy(0, jitter=0)) as c:
            c.get(timeout=5).nack()
            c.get(timeout=5).nack()
            with pytest.raises(pyqmem.Empty):   # both dead-lettered meanwhile
                c.get(timeout=0.2)
        with pyqmem.Topic("ev.dlq", dir=root, create=False) as dlq, dlq.consumer() as c:
            got += [c.get(timeout=5) for _ in range(2)]
        assert pyqmem.redrive("ev", dir=root) == 2
        with t.consumer(start=2) as c:
            got += [c.get(timeout=5) for _ in range(2)]
    assert [m.value for m in got] == [payload] * 8
    assert got[1].headers["h"] == payload
    assert not marker.exists()


@pytest.mark.parametrize("serializer", ["raw", None, _Json()], ids=["raw", "None", "json"])
def test_queue_raw_and_json_consumers_never_execute_a_peers_pickle(names, exploit, serializer):
    """A peer (same user) puts a pickle payload as raw bytes; a consumer that does not
    use pickle gets bytes or a decode error, never the side effect."""
    payload, marker = exploit
    name = names.new()
    with pyqmem.Queue(name, capacity=65536, serializer="raw") as peer, \
            pyqmem.Queue(name, serializer=serializer) as q:
        peer.put(payload)
        if isinstance(serializer, _Json):
            with pytest.raises(ValueError):
                q.get(timeout=1)
        else:
            assert q.get(timeout=1) == payload
    assert not marker.exists()


@pytest.mark.parametrize("mode", [0o660, 0o606])
def test_pickle_queue_opened_to_group_or_others_is_refused_before_any_get(names, exploit, mode):
    """Queue's default serializer is pickle (the multiprocessing.Queue drop-in); what
    keeps a pickle out is that only the owner can write a queue.  A queue left open
    to group/others may hold anyone's pickle, so attaching to it is refused."""
    payload, marker = exploit
    name = names.new()
    with pyqmem.Queue(name, capacity=65536, serializer="raw") as q:
        q.put(payload)   # what a group member could have written
    os.chmod(queue_path(name), mode)
    with pytest.raises(PermissionError, match="open to group or others"):
        pyqmem.Queue(name).get(timeout=1)
    assert not marker.exists()


def test_pickle_queue_planted_by_another_user_is_refused_before_any_get(shared_base, exploit,
                                                                          monkeypatch):
    """uid 65534 makes a queue holding the payload in a shared sticky folder (like
    /dev/shm) and renames it to the victim's name; the victim's Queue is refused."""
    require_root()
    payload, marker = exploit
    shm = os.path.join(shared_base, "shm")
    os.mkdir(shm)
    os.chmod(shm, 0o1777)
    monkeypatch.setenv("PYQMEM_DIR", shm)
    victims_path = queue_path("jobs")

    def plant_queue():
        with pyqmem.Queue("jobs", capacity=65536, serializer="raw") as q:
            q.put(payload)
        os.chmod(queue_path("jobs"), 0o644)
        os.rename(queue_path("jobs"), victims_path)
        return os.path.exists(victims_path)

    assert as_user(NOBODY, plant_queue) == ("ok", True)
    for create in (None, False):
        with pytest.raises(PermissionError, match="owned by uid 65534"):
            pyqmem.Queue("jobs", create=create).get(timeout=1)
    assert not marker.exists()
