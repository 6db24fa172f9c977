"""What a topic costs in RAM when it lives in tmpfs: its segments are created at full
size but allocated in doubling steps, so a new topic takes a few hundred KiB per
partition, and a partition grows with what it holds (at most about twice that)."""
from __future__ import annotations

import os

import pytest

import pyqmem
from pyqmem.shm.folders import is_volatile


def _allocated(folder):
    """Bytes of space allocated to every file under `folder` (what tmpfs takes from RAM)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


@pytest.fixture
def ram_topic_dir(topic_dir):
    if not is_volatile(topic_dir):
        pytest.skip(f"{topic_dir} is not in RAM here")
    return topic_dir


def test_a_new_four_partition_topic_takes_under_two_mib(ram_topic_dir, tname):
    with pyqmem.Topic(tname, dir=ram_topic_dir, partitions=4) as t:  # 64 MiB segments
        t.send(b"7 bytes")
        used = _allocated(t.path)
    assert used < 2 * 2**20, used  # was 4 x (64 MiB + 256 KiB index) before allocation in steps


def test_a_partition_takes_at_most_about_twice_what_it_holds(ram_topic_dir, tname):
    with pyqmem.Topic(tname, dir=ram_topic_dir, partitions=1) as t:
        value = b"v" * 4000
        t.send_many([value] * 2000)  # ~8 MiB of records
        held = 2000 * len(value)
        used = _allocated(t.path)
        with t.consumer() as c:
            assert len(c.get_many(5000, timeout=5)) == 2000
    assert held < used < 2 * held + 2**20, (held, used)


def test_a_topic_in_ram_keeps_four_segments_per_partition_unless_told_otherwise(
        ram_topic_dir, tname):
    seg = 64 * 1024
    with pyqmem.Topic(tname, dir=ram_topic_dir, segment_bytes=seg) as t:
        assert t.retention_bytes == 4 * seg == t.stats()["config"]["retention_bytes"]
        t.send_many([b"x" * 30000] * 40)  # about 19 segments' worth
        t.retain()
        assert t.stats()["partitions"][0]["segments"] <= 5  # 4 kept + the active one
        with t.consumer() as c:  # starts at the first record retention kept
            kept = c.get_many(100, timeout=5)
            assert 0 < kept[0].offset and kept[-1].offset == 39 and len(kept) < 40
    with pyqmem.Topic(tname + "-all", dir=ram_topic_dir, segment_bytes=seg,
                      retention_bytes=None) as t:
        assert t.retention_bytes is None  # None: keep everything


def test_a_topic_on_a_disk_keeps_everything_by_default(tmp_path, tname):
    if is_volatile(str(tmp_path)):
        pytest.skip(f"{tmp_path} is in RAM here")
    with pyqmem.Topic(tname, dir=tmp_path, segment_bytes=64 * 1024) as t:
        assert t.retention_bytes is None
