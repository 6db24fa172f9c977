"""What the Python-facing layer costs per call, in ONE process.

    python bench/layer_cost.py                        # this build: ns per call, median
    python bench/layer_cost.py --against OTHER_PYTHON # two builds, interleaved, same run

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


def _per_call(fn, calls):
    """ns per call of the second of two runs of `fn` (the first maps and
    faults in the pages it touches)."""
    fn()
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / calls


def run_cases(n):
    """{case: ns per call} for this interpreter's pyqmem."""
    import pyqmem

    root = tempfile.mkdtemp(prefix="layer-cost-", dir="/dev/shm")
    out = {}
    tag = f"lc-{os.getpid()}"
    try:
        q = pyqmem.Queue(f"{tag}-q", capacity=2**20, serializer=None, create=True)
        try:

            def queue_round_trip():
                put, get = q.put, q.get
                for _ in range(n):
                    put(SMALL)
                    get()

            out["queue put+get 64 B"] = _per_call(queue_round_trip, n)
        finally:
            q.unlink()
            q.close()

        def topic(name, partitions=1):
            return pyqmem.Topic(name, dir=root, partitions=partitions, segment_bytes=256 * 2**20)

        with topic("send") as t:

            def send():
                s = t.send
                for _ in range(n):
                    s(SMALL)

            out["topic send 64 B"] = _per_call(send, n)

        with topic("sendkey", 4) as t:

            def send_key():
                s = t.send
                for _ in range(n):
                    s(SMALL, key="user-42")

            out["topic send 64 B, key, 4 partitions"] = _per_call(send_key, n)

        with topic("sendmany") as t:
            batches = max(1, n // 64)

            def send_many():
                s = t.send_many
                for _ in range(batches):
                    s(BATCH)

            out["topic send_many 64 x 64 B (per record)"] = _per_call(send_many, batches * 64)

        with topic("read") as t:
            t.send_many([SMALL] * (2 * n))
            with t.consumer(start="earliest") as c:

                def get():
                    g = c.get
                    for _ in range(n):
                        g(timeout=0)

                out["subscriber get"] = _per_call(get, n)
            with t.consumer(start="earliest") as c:
                batches = n // 64

                def get_many():
                    g = c.get_many
                    for _ in range(batches):
                        g(64, timeout=0)

                out["subscriber get_many(64) (per record)"] = _per_call(get_many, batches * 64)
            with t.consumer(group="g", visibility_timeout=60) as c:
                batches = n // 64

                def group_cycle():
                    g, a = c.get_many, c.ack_many
                    for _ in range(batches):
                        a(g(64, timeout=0))

                out["group get_many(64)+ack_many (per record)"] = _per_call(
                    group_cycle, batches * 64
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--against",
        metavar="PYTHON",
        help="another interpreter (with another pyqmem) to compare with",
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--n", type=int, default=20000, help="calls per case and repeat")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_cases(args.n)))
        return 0
    builds = {"this": sys.executable}
    if args.against:
        builds["against"] = args.against
    results = {b: [] for b in builds}
    for _ in range(args.repeats):
        for b, py in builds.items():
            cmd = [py, os.path.abspath(__file__), "--child", "--n", str(args.n)]
            done = subprocess.run(
                cmd, capture_output=True, text=True, cwd="/", timeout=600, check=True
            )
            results[b].append(json.loads(done.stdout))
    print(
        f"nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}, "
        f"{args.repeats} interleaved repeats x {args.n} calls; ns per call, median"
    )
    cases = list(results["this"][0])
    head = f"{'case':44} {'this':>9}"
    if args.against:
        head += f" {'against':>9} {'this/against':>13}"
    print(head)
    for case in cases:
        this = statistics.median(r[case] for r in results["this"])
        line = f"{case:44} {this:9.1f}"
        if args.against:
            other = statistics.median(r[case] for r in results["against"])
            line += f" {other:9.1f} {this / other:13.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
