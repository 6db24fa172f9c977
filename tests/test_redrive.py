"""Redrive: dead-lettered records go back to their source topic, once."""
import os
import subprocess
import sys

import pytest

import pyqmem
from pyqmem import deadletter
from pyqmem.redrive import redrive

pytestmark = pytest.mark.timeout(60)


def _dead_letter_everything(t, group="work"):
    """Consume every record of `t` in `group`, failing each once: with
    max_deliveries=1 they all land in "<t>.dlq".  Returns their (partition, offset)s."""
    failed = []
    with t.consumer(group=group, max_deliveries=1) as c:
        while True:
            try:
                m = c.get(timeout=0.5)
            except pyqmem.Empty:
                break
            failed.append((m.partition, m.offset))
            m.nack(delay=0, error=RuntimeError("boom"))
    return failed


def _drain(c, timeout=0.5):
    out = []
    while True:
        try:
            out.append(c.get(timeout=timeout))
        except pyqmem.Empty:
            return out


@pytest.mark.any_backend
def test_redrive_sends_dead_letters_back_to_their_partition_without_dlq_headers(make_topic, topic_dir):
    t = make_topic(partitions=3)
    t.send(b"a", key=b"k1", headers={"trace": b"t1"}, correlation_id="c-1")
    t.send(b"b", partition=2)
    failed = _dead_letter_everything(t)
    assert len(failed) == 2
    dlq = pyqmem.Topic(f"{t.name}.dlq", backend=t.backend, create=False)
    with dlq.consumer() as c:
        dead = _drain(c)
    assert sorted((deadletter.info(m.headers).partition, deadletter.info(m.headers).offset)
                  for m in dead) == sorted(failed)
    dlq.close()

    assert redrive(t.name, backend=t.backend) == 2
    with t.consumer(group="work") as c:             # the group that gave up sees them anew
        back = _drain(c)
    got = {bytes(m.data): m for m in back}
    assert set(got) == {b"a", b"b"}
    a = got[b"a"]
    assert a.key == b"k1" and a.correlation_id == "c-1" and a.headers == {"trace": b"t1"}
    assert a.partition == dict(failed_by_value(failed, t))[b"a"]
    assert got[b"b"].partition == 2
    assert all(m.delivery_count == 1 for m in back)
    assert all(deadletter.info(m.headers) is None for m in back)


def failed_by_value(failed, t):
    """(value, partition) of the original records at `failed`."""
    out = []
    with t.consumer(start="earliest") as c:
        for m in _drain(c):
            if (m.partition, m.offset) in failed:
                out.append((bytes(m.data), m.partition))
    return out


@pytest.mark.any_backend
def test_a_second_redrive_moves_nothing_and_max_records_stops_early(make_topic, topic_dir):
    t = make_topic()
    for i in range(5):
        t.send(b"v%d" % i)
    assert len(_dead_letter_everything(t)) == 5
    assert redrive(t.name, backend=t.backend, max_records=2) == 2
    assert redrive(t.name, backend=t.backend) == 3       # resumes after the first two
    assert redrive(t.name, backend=t.backend) == 0
    with t.consumer(start="earliest") as c:
        values = [bytes(m.data) for m in _drain(c)]
    assert sorted(values[5:]) == [b"v%d" % i for i in range(5)]   # each sent back once


def test_a_shared_dead_letter_topic_gives_each_source_only_its_records(topic_dir, tracked):
    a = tracked(pyqmem.Topic("src-a", dir=topic_dir, create=True, retention_bytes=None))
    b = tracked(pyqmem.Topic("src-b", dir=topic_dir, create=True, retention_bytes=None))
    a.send(b"from-a")
    b.send(b"from-b")
    for t in (a, b):
        with t.consumer(group="g", max_deliveries=1, dead_letter="shared.dlq") as c:
            c.get(timeout=5).nack(delay=0)
            with pytest.raises(pyqmem.Empty):
                c.get(timeout=0.3)                    # dead-letters it
    assert redrive("src-a", dir=topic_dir, dead_letter="shared.dlq") == 1
    assert redrive("src-b", dir=topic_dir, dead_letter="shared.dlq") == 1
    for t, want in ((a, b"from-a"), (b, b"from-b")):
        with t.consumer(start="earliest") as c:
            assert [bytes(m.data) for m in _drain(c)] == [want, want]


def test_redrive_of_a_missing_topic_is_not_found_and_bad_arguments_are_typed(make_topic, topic_dir):
    t = make_topic()
    with pytest.raises(pyqmem.NotFound):
        redrive(t.name, dir=topic_dir)              # no dead-letter topic yet
    with pytest.raises(pyqmem.NotFound):
        redrive("no-such-topic", dir=topic_dir)
    with pytest.raises(TypeError):
        redrive(t.name, dir=topic_dir, max_records="3")
    with pytest.raises(ValueError):
        redrive(t.name, dir=topic_dir, max_records=-1)
    with pytest.raises(TypeError):
        redrive(t.name, dir=topic_dir, dead_letter=7)


def test_command_line_redrive_reports_what_it_moved(make_topic, topic_dir):
    t = make_topic()
    t.send(b"x")
    _dead_letter_everything(t)
    env = dict(os.environ)
    run = subprocess.run([sys.executable, "-m", "pyqmem", "redrive", t.name, "--dir", topic_dir],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"moved 1 record back to {t.name}"
    run = subprocess.run([sys.executable, "-m", "pyqmem", "redrive", "nope", "--dir", topic_dir],
                         capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode == 1 and "nope" in run.stderr
