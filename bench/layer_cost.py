"""What the Python-facing layer costs per call, in ONE process.

    python bench/layer_cost.py                        # this build: ns per call, median
    python bench/layer_cost.py --against OTHER_PYTHON # two builds, interleaved, same run
    python bench/layer_cost.py --against OTHER_PYTHON --instructions
                                                      # instructions per call (callgrind)

Each case is a tight loop over one public call (no second process, so no
wake-ups): Queue put+get of 64 B, Topic.send of 64 B (with and without a
key), Topic.send_many of 64 x 64 B, a subscriber's get and get_many(64), a
consumer group's get_many(64) + ack_many.  One repeat runs every case once
in a fresh child process; repeats alternate between the builds compared
(``--against`` names another interpreter with another pyqmem installed, e.g.
a venv holding the previous commit), and the table shows each build's
median over its repeats and the ratio.  Used to show that a refactoring of
the layers loses nothing (docs/design/architecture.md); the machine is
shared and noisy, so only ratios from one run mean anything.

``--instructions`` counts instead of timing: each case runs under
valgrind's callgrind with U and 2U units of work, and (Ir(2U) - Ir(U)) / calls
is the instructions per call, start-up and set-up cancelled out.  Counts
repeat to a fraction of a percent where times on a shared machine do not
(valgrind must be installed; a run takes a few minutes).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SMALL = bytes(range(64))
BATCH = [bytes([i]) * 64 for i in range(64)]


class Case:
    """One public call in a loop: `make(pyqmem, root, prefill)` sets up and
    returns (loop(units), close); a unit is `per_unit` calls of the call."""

    def __init__(self, name, make, per_unit=1):
        self.name, self.make, self.per_unit = name, make, per_unit


def _topic(pyqmem, root, name, partitions=1):
    return pyqmem.Topic(name, dir=root, partitions=partitions, segment_bytes=256 * 2**20)


def _queue(pyqmem, root, prefill):
    q = pyqmem.Queue(f"lc-{os.getpid()}-q", capacity=2**20, serializer=None, create=True)

    def loop(units):
        put, get = q.put, q.get
        for _ in range(units):
            put(SMALL)
            get()

    def close():
        q.unlink()
        q.close()

    return loop, close


def _send(pyqmem, root, prefill, partitions=1, key=None):
    t = _topic(pyqmem, root, f"send{partitions}", partitions)

    def loop(units):
        s = t.send
        if key is None:
            for _ in range(units):
                s(SMALL)
        else:
            for _ in range(units):
                s(SMALL, key=key)

    return loop, t.close


def _send_many(pyqmem, root, prefill):
    t = _topic(pyqmem, root, "sendmany")

    def loop(units):
        s = t.send_many
        for _ in range(units):
            s(BATCH)

    return loop, t.close


def _reader(pyqmem, root, prefill, group=None, batch=0):
    """A topic holding `prefill` records and a reader of it."""
    t = _topic(pyqmem, root, "read")
    for _ in range(0, prefill, 4096):
        t.send_many([SMALL] * 4096)
    if group is None:
        c = t.consumer(start="earliest")
    else:
        c = t.consumer(group=group, visibility_timeout=600)

    def loop(units):
        if group is not None:
            g, a = c.get_many, c.ack_many
            for _ in range(units):
                a(g(batch, timeout=0))
        elif batch:
            g = c.get_many
            for _ in range(units):
                g(batch, timeout=0)
        else:
            g = c.get
            for _ in range(units):
                g(timeout=0)

    def close():
        c.close()
        t.close()

    return loop, close


CASES = [
    Case("queue put+get 64 B", _queue),
    Case("topic send 64 B", _send),
    Case(
        "topic send 64 B, key, 4 partitions",
        lambda p, r, n: _send(p, r, n, partitions=4, key="user-42"),
    ),
    Case("topic send_many 64 x 64 B (per record)", _send_many, per_unit=64),
    Case("subscriber get", _reader),
    Case(
        "subscriber get_many(64) (per record)",
        lambda p, r, n: _reader(p, r, n, batch=64),
        per_unit=64,
    ),
    Case(
        "group get_many(64)+ack_many (per record)",
        lambda p, r, n: _reader(p, r, n, group="g", batch=64),
        per_unit=64,
    ),
]


def _run(case, units, prefill, warm):
    """Set up `case`, run `units` (twice when `warm`: the first maps and
    faults in the pages it touches); ns of the last run."""
    import pyqmem

    root = tempfile.mkdtemp(prefix="layer-cost-", dir="/dev/shm")
    try:
        loop, close = case.make(pyqmem, root, prefill)
        try:
            if warm:
                loop(units)
            t0 = time.perf_counter_ns()
            loop(units)
            return time.perf_counter_ns() - t0
        finally:
            close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_cases(calls):
    """{case: ns per call} for this interpreter's pyqmem."""
    out = {}
    for case in CASES:
        units = max(1, calls // case.per_unit)
        ns = _run(case, units, 2 * units * case.per_unit + 4096, warm=True)
        out[case.name] = ns / (units * case.per_unit)
    return out


def _instructions(python, case, units, prefill):
    """Instructions (Ir) of one callgrind run of `case` with `units`."""
    from callgrind_roundtrip import instructions  # beside this file

    argv = [
        python,
        os.path.abspath(__file__),
        "--one",
        str(CASES.index(case)),
        str(units),
        str(prefill),
    ]
    return instructions(argv)


def instructions_per_call(python, case, calls):
    units = max(1, calls // case.per_unit)
    prefill = 2 * 2 * units * case.per_unit + 4096  # the same in both runs
    i1 = _instructions(python, case, units, prefill)
    i2 = _instructions(python, case, 2 * units, prefill)
    return (i2 - i1) / (units * case.per_unit)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--against",
        metavar="PYTHON",
        help="another interpreter (with another pyqmem) to compare with",
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=20000, help="calls per case and repeat")
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per call under callgrind instead of timing",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        index, units, prefill = args.one
        _run(CASES[index], units, prefill, warm=False)
        return 0
    if args.child:
        print(json.dumps(run_cases(args.n)))
        return 0
    builds = {"this": sys.executable}
    if args.against:
        builds["against"] = args.against
    if args.instructions:
        calls = min(args.n, 4096)
        results = {
            b: [{c.name: instructions_per_call(py, c, calls) for c in CASES}]
            for b, py in builds.items()
        }
        unit = f"instructions per call under callgrind ({calls} and {2 * calls} calls)"
    else:
        results = {b: [] for b in builds}
        for _ in range(args.repeats):
            for b, py in builds.items():
                cmd = [py, os.path.abspath(__file__), "--child", "--n", str(args.n)]
                done = subprocess.run(
                    cmd, capture_output=True, text=True, cwd="/", timeout=600, check=True
                )
                results[b].append(json.loads(done.stdout))
        unit = f"{args.repeats} interleaved repeats x {args.n} calls; ns per call, median"
    print(f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, {unit}")
    head = f"{'case':44} {'this':>9}"
    if args.against:
        head += f" {'against':>9} {'this/against':>13}"
    print(head)
    for case in CASES:
        this = statistics.median(r[case.name] for r in results["this"])
        line = f"{case.name:44} {this:9.1f}"
        if args.against:
            other = statistics.median(r[case.name] for r in results["against"])
            line += f" {other:9.1f} {this / other:13.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
