"""Deleting a topic: ``t.delete()`` and ``Topic.delete(name, ...)`` remove every
partition, record and group; they refuse (InUse) while any handle is open, in this
process or another, unless ``force=True``; a delete killed at any point leaves the
topic whole or gone, never half deleted."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyqmem


def _reopen(t, **kw):
    return pyqmem.Topic(t.name, backend=t.backend, **kw)


@pytest.mark.any_backend
def test_delete_removes_the_topic_its_records_and_its_groups(make_topic):
    t = make_topic(partitions=3)
    for i in range(30):
        t.send(b"%d" % i, key=str(i))
    with t.consumer(group="g") as c:
        c.get(timeout=5).ack()
    backend = t.backend
    t.delete()
    assert t.closed
    assert not pyqmem.Topic.exists(t.name, backend=backend)
    with pytest.raises(pyqmem.NotFound):
        pyqmem.Topic(t.name, backend=backend, create=False)
    again = pyqmem.Topic(t.name, backend=backend, partitions=1, retention_bytes=None)
    try:
        assert again.partitions == 1
        assert again.stats()["partitions"][0]["end_offset"] == 0
        assert again.stats()["groups"] == {}
    finally:
        again.close()


@pytest.mark.any_backend
def test_delete_by_name_without_opening_and_a_missing_topic_is_not_found(make_topic):
    t = make_topic()
    t.send(b"x")
    backend = t.backend
    t.close()
    pyqmem.Topic.delete(t.name, backend=backend)
    assert not pyqmem.Topic.exists(t.name, backend=backend)
    with pytest.raises(pyqmem.NotFound, match="no topic"):
        pyqmem.Topic.delete(t.name, backend=backend)


@pytest.mark.any_backend
def test_delete_refuses_while_another_handle_is_open_and_leaves_the_topic_whole(make_topic):
    t = make_topic(partitions=2)
    t.send_many([b"a", b"b", b"c"], key="k")
    other = _reopen(t)
    with pytest.raises(pyqmem.InUse, match="close them first"):
        t.delete()
    with pytest.raises(pyqmem.InUse):
        pyqmem.Topic.delete(t.name, backend=t.backend)
    with other.consumer(start="earliest") as c:
        assert [bytes(m.data) for m in c.get_many(10, timeout=5)] == [b"a", b"b", b"c"]
    other.delete()  # the last handle (t closed itself before it was refused)
    assert not pyqmem.Topic.exists(t.name, backend=t.backend)


@pytest.mark.any_backend
def test_force_deletes_while_others_are_open(make_topic):
    t = make_topic()
    other = _reopen(t)
    try:
        pyqmem.Topic.delete(t.name, backend=t.backend, force=True)
        assert not pyqmem.Topic.exists(t.name, backend=t.backend)
    finally:
        other.close()


@pytest.mark.parametrize("bad, exc", [(dict(force=1), TypeError), (dict(name="../x"), ValueError)])
def test_delete_checks_its_arguments_before_touching_anything(make_topic, bad, exc):
    t = make_topic()
    kw = {"name": t.name, **bad}
    with pytest.raises(exc):
        pyqmem.Topic.delete(kw.pop("name"), **kw)
    assert pyqmem.Topic.exists(t.name)


_READER = textwrap.dedent("""
    import sys, pyqmem
    t = pyqmem.Topic(sys.argv[1], dir=sys.argv[2], create=False)
    c = t.consumer(start="earliest")
    c.get(timeout=30)
    print("attached", flush=True)
    sys.stdin.read()
""")


def test_delete_refuses_while_a_reader_in_another_process_is_attached(make_topic, topic_dir):
    t = make_topic(partitions=1)
    t.send(b"x")
    t.close()
    child = subprocess.Popen([sys.executable, "-c", _READER, t.name, topic_dir],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "attached\n"
        with pytest.raises(pyqmem.InUse, match="2 handles on partition 0"):  # its Topic, its consumer
            pyqmem.Topic.delete(t.name, dir=topic_dir)
        child.stdin.close()
        assert child.wait(30) == 0
        pyqmem.Topic.delete(t.name, dir=topic_dir)  # the reader is gone
        assert not pyqmem.Topic.exists(t.name, dir=topic_dir)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


_DELETER = textwrap.dedent("""
    import sys, pyqmem
    print("go", flush=True)
    pyqmem.Topic.delete(sys.argv[1], dir=sys.argv[2])
""")


def test_a_delete_killed_at_random_points_leaves_the_topic_whole_or_gone(tname, topic_dir):
    rng = random.Random(7)
    outcomes = set()
    deadline = time.monotonic() + 60
    for trial in range(25):
        if time.monotonic() > deadline:
            break
        name = f"{tname[:80]}-{trial}"
        with pyqmem.Topic(name, dir=topic_dir, partitions=3, segment_bytes=1 << 16, retention_bytes=None) as t:
            t.send_many([b"r%d" % i for i in range(300)], key="k")
        child = subprocess.Popen([sys.executable, "-c", _DELETER, name, topic_dir],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "go\n"
        time.sleep(rng.uniform(0, 0.004))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        if pyqmem.Topic.exists(name, dir=topic_dir):
            outcomes.add("whole")
            with pyqmem.Topic(name, dir=topic_dir, create=False) as t, \
                    t.consumer(start="earliest") as c:
                got = [bytes(m.data) for m in c.get_many(1000, timeout=5)]
                assert got == [b"r%d" % i for i in range(300)]
            pyqmem.Topic.delete(name, dir=topic_dir)
        else:
            outcomes.add("gone")
        # nothing but hidden leftovers of killed deletes, and the next delete sweeps those
        assert all(e.startswith(".deleted-") for e in os.listdir(topic_dir)
                   if e.startswith(tname[:80]) or e.startswith("."))
    assert outcomes, "no trial ran"
    with pyqmem.Topic(tname, dir=topic_dir, retention_bytes=None) as t:
        pass
    pyqmem.Topic.delete(tname, dir=topic_dir)
    assert [e for e in os.listdir(topic_dir) if e.startswith(".deleted-")] == []


def test_a_message_kept_after_its_consumer_closed_does_not_hold_the_topic_open(make_topic):
    t = make_topic(partitions=1)
    t.send(b"still here")
    with t.consumer() as c:
        msg = c.get(timeout=5)
    t.delete()
    assert not pyqmem.Topic.exists(t.name)
    assert bytes(msg.data) == b"still here"  # its segment stays mapped while it lives
