"""Row B7 of reliability-matrix.md (KAFKA-3968): in ``durability="fsync"`` no record is
acknowledged while the segment file holding it could vanish on power loss.

A power cut cannot be staged here, so the test checks the order of the system calls
that make it safe, with ``strace``: a child sends records to a topic whose segments
roll every few records and prints each acknowledged offset; for every segment file the
trace must show, before the first acknowledgement of a record in it, an fdatasync of
the file and an fdatasync of its directory (so the file's name is on disk), both after
the file was created, and an fdatasync of the partition's control file (which names the
active segment: recovery after power loss starts from it). The topic folder's own entry
in its parent is synced once at creation.
"""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from helpers.tools import require_tool

CHILD = textwrap.dedent("""
    import os, sys, pyqmem
    folder, n = sys.argv[1], int(sys.argv[2])
    with pyqmem.Topic("durable", partitions=1, dir=folder, segment_bytes=65536,
                      durability="fsync", retention_bytes=None) as t:
        for i in range(n):
            md = t.send(b"r" * 3000)
            os.write(1, b"ACK %d\\n" % md.offset)
""")



def test_every_segment_and_its_directory_entry_are_synced_before_a_record_in_it_is_acked(tmp_path):
    strace = require_tool("strace")
    trace = tmp_path / "trace"
    folder = tmp_path / "topics"
    folder.mkdir()
    n = 120   # ~21 records per 64 KiB segment: about 6 segments
    subprocess.run(
        [strace, "-f", "-y", "-qq", "-e", "trace=openat,fdatasync,fsync,write",
         "-e", "signal=none", "-o", str(trace), sys.executable, "-c", CHILD, str(folder), str(n)],
        check=True, timeout=120, stdout=subprocess.DEVNULL)
    created = {}        # segment base -> event index of its O_CREAT open
    synced_file = {}    # segment base -> event index of its first fdatasync after creation
    synced_dir = {}     # segment base -> first fdatasync of the partition dir after creation
    synced_ctl = {}     # segment base -> first fdatasync of the control file after creation
    parent_synced = None
    first_ack = {}      # segment base -> event index of the first ack of a record in it
    events = trace.read_text().splitlines()
    acked = []
    for i, line in enumerate(events):
        m = re.search(r'openat\(.*?"([^"]*?(\d{20})\.log)", [^)]*O_CREAT', line)
        if m:
            created.setdefault(int(m.group(2)), i)
            continue
        m = re.search(r'(?:fdatasync|fsync)\(\d+<([^>]*)>\) = 0', line)
        if m:
            path = m.group(1)
            base = re.search(r"(\d{20})\.log$", path)
            if base:
                b = int(base.group(1))
                if b in created:
                    synced_file.setdefault(b, i)
            elif path.rstrip("/").endswith("/p0"):
                for b, at in created.items():
                    if at < i:
                        synced_dir.setdefault(b, i)
            elif path.endswith("/p0/control"):
                for b, at in created.items():
                    if at < i:
                        synced_ctl.setdefault(b, i)
            elif path.rstrip("/") == str(folder):
                parent_synced = i
            continue
        m = re.search(r'write\(1<[^>]*>, "ACK (\d+)\\n"', line)
        if m:
            offset = int(m.group(1))
            acked.append(offset)
            base = max((b for b in created if b <= offset), default=None)
            assert base is not None, f"offset {offset} acked before any segment was created"
            first_ack.setdefault(base, i)
    assert acked == list(range(n)), "the child did not acknowledge every record"
    assert len(first_ack) >= 4, f"only {len(first_ack)} segments: the roll was not exercised"
    for base, ack_at in sorted(first_ack.items()):
        assert base in synced_file and synced_file[base] < ack_at, \
            f"segment {base}: a record was acked before the segment was fdatasynced"
        assert base in synced_dir and synced_dir[base] < ack_at, \
            f"segment {base}: a record was acked before its directory entry was synced"
        assert base in synced_ctl and synced_ctl[base] < ack_at, \
            f"segment {base}: a record was acked before the control file naming it was synced"
    assert parent_synced is not None and parent_synced < min(first_ack.values()), \
        "the topic folder's entry in its parent was not synced before the first ack"
    print(f"B7: {len(first_ack)} segments, {len(acked)} acks, every segment and its name "
          f"synced before its first ack")
