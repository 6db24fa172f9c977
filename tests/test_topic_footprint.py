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
