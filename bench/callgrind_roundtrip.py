#!/usr/bin/env python3
"""N put/get round trips on one pyqmem queue in ONE process, for callgrind.

Instruction counts are repeatable where wall-clock time on a shared machine
is not.  Two ways to use this script:

  # 1. by hand: profile, then read the per-function costs.  Give valgrind the
  #    real interpreter: it does not follow a pyenv/venv shim script's exec.
  PY=$(python -c 'import sys; print(sys.executable)')
  valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
      $PY bench/callgrind_roundtrip.py 20000
  callgrind_annotate /tmp/cg.out | head -40

  # 2. instructions per round trip, start-up cost cancelled out: runs the
  #    script under callgrind with N and 2N round trips and prints
  #    (Ir(2N) - Ir(N)) / N
  python bench/callgrind_roundtrip.py --measure 20000

Options: --size BYTES (default 64), --pickle (serializer="pickle" with a small
tuple instead of raw bytes), --batch K (put_many/get_many of K messages per
round trip instead of put/get).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile


def run(n, size, use_pickle, batch):
    import pyqmem

    name = f"callgrind-{os.getpid()}"
    q = pyqmem.Queue(
        name, capacity=16 * 2**20, serializer="pickle" if use_pickle else None, create=True
    )
    try:
        msg = (12345, "the quick brown fox", 0.5) if use_pickle else bytes(size)
        put, get = q.put, q.get
        if batch:
            msgs = [msg] * batch
            put_many, get_many = q.put_many, q.get_many
            for _ in range(100):  # warm-up (not subtracted away
                put_many(msgs)  # by --measure, but identical
                assert len(get_many(batch, False)) == batch  # in both runs)
            for _ in range(n):
                put_many(msgs)
                got = get_many(batch, False)
            assert got == msgs
        else:
            for _ in range(100):
                put(msg)
                get(False)
            for _ in range(n):
                put(msg)
                got = get(False)
            assert got == msg
    finally:
        q.unlink()
        q.close()


def instructions(argv, timeout=1800):
    """Total instructions (Ir) of running `argv` (a Python command line: the
    interpreter first) under callgrind."""
    with tempfile.TemporaryDirectory() as d:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out", *argv]
        env = dict(os.environ, PYTHONHASHSEED="0")
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            sys.exit(f"callgrind run failed ({p.returncode}):\n{p.stderr[-3000:]}")
        m = re.search(r"Collected\s*:\s*(\d+)", p.stderr)
        if not m:
            with open(f"{d}/cg.out") as f:
                m = re.search(r"^(?:totals|summary):\s*(\d+)", f.read(), re.M)
        if not m:
            sys.exit("could not find the instruction total in callgrind's output")
        return int(m.group(1))


def collected(n, args):
    """Total instructions (Ir) of one callgrind run with n round trips."""
    argv = [sys.executable, os.path.abspath(__file__), str(n), "--size", str(args.size)]
    if args.pickle:
        argv.append("--pickle")
    if args.batch:
        argv += ["--batch", str(args.batch)]
    return instructions(argv)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, nargs="?", default=20000, help="round trips (default 20000)")
    ap.add_argument("--size", type=int, default=64, help="raw message bytes (default 64)")
    ap.add_argument("--pickle", action="store_true", help='serializer="pickle", small tuple')
    ap.add_argument("--batch", type=int, default=0, help="put_many/get_many of this many messages")
    ap.add_argument(
        "--measure",
        action="store_true",
        help="run under callgrind with N and 2N; print instructions per round trip",
    )
    args = ap.parse_args()
    if not args.measure:
        run(args.n, args.size, args.pickle, args.batch)
        return
    i1 = collected(args.n, args)
    i2 = collected(2 * args.n, args)
    per = (i2 - i1) / args.n
    what = "pickled tuple" if args.pickle else f"{args.size} B raw"
    op = f"put_many+get_many of {args.batch}" if args.batch else "put+get"
    print(f"Ir({args.n}) = {i1:,}   Ir({2 * args.n}) = {i2:,}")
    print(
        f"{per:,.0f} instructions per {op} round trip ({what})"
        + (f", {per / args.batch:,.0f} per message" if args.batch else "")
    )


if __name__ == "__main__":
    main()
