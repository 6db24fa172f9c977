"""The ring and consumer-group protocols, model-checked by spin (reliability-matrix.md G2).

model/ring.pml and model/group.pml are Promela models of csrc/src/ring.c + wait.c and
csrc/src/group.c in which any process may die at any step (its liveness lock frees).
Each check runs spin's exhaustive search (no bit-state hashing; -DCOLLAPSE only
compresses stored states, losslessly) and requires 0 errors and a complete search:
no assertion fails (no committed message lost or delivered twice, nothing torn, no
double completion, committed never past an unacked record) and no invalid end state
(no deadlock, no lost wakeup, a dead member's leases come back).  Each mutation is a
deliberately broken variant that spin must reject, so the checks are known to be able
to fail.  docs/design/models.md explains the models, their bounds and how they map to
the C functions.

PYQMEM_SPIN_SCALE=full runs the larger bounds (minutes); the default bounds keep CI
cost to a few seconds of search per model.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers.tools import require_tool

MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
FULL = os.environ.get("PYQMEM_SPIN_SCALE", "") == "full"
RUN_TIMEOUT = 1800 if FULL else 300

# (name, knobs): each is an exhaustive search of its own
RING_BOUNDS = [
    # producers race for claims; a producer dies at any step (abandonment)
    ("2 producers, 1 consumer, 2 slots, 1 message each, 1 death",
     dict(NP=2, NC=1, SLOTS=2, MSGS=1, KILLS=1)),
    # consumers race for takes; a consumer dies at any step
    ("1 producer, 2 consumers, 1 slot, 1 message, 1 death",
     dict(NP=1, NC=2, SLOTS=1, MSGS=1, KILLS=1)),
    # laps, a full ring and the space handshake; either side dies
    ("1 producer, 1 consumer, 2 slots, 3 messages, 1 death",
     dict(NP=1, NC=1, SLOTS=2, MSGS=3, KILLS=1)),
]
RING_BOUNDS_FULL = RING_BOUNDS + [
    # two producers on a full ring (37 M states, about a minute)
    ("2 producers, 1 consumer, 1 slot, 1 message each, 1 death",
     dict(NP=2, NC=1, SLOTS=1, MSGS=1, KILLS=1)),
]
GROUP_BOUNDS = [
    ("2 members, window 2, 3 offsets, 1 death, 1 nack, 1 late ack",
     dict(NM=2, WIN=2, END=3, KILLS=1, NACKS=1, HOLDS=1, TMAX=5)),
]
GROUP_BOUNDS_FULL = GROUP_BOUNDS + [
    # 20 M states, about 20 s
    ("2 members, window 2, 4 offsets, 1 death, 1 nack, 1 late ack",
     dict(NM=2, WIN=2, END=4, KILLS=1, NACKS=1, HOLDS=1, TMAX=6)),
]

# (model, mutation, knobs, what spin must report)
MUTATIONS = [
    # the lost wakeup the ring model found in wait.c (fixed): seq read after announcing
    ("ring.pml", "MUT_ANNOUNCE_FIRST", dict(NP=2, NC=1, SLOTS=2, MSGS=1, KILLS=0),
     "invalid end state"),
    # abandoning a WRITING record without checking that its producer is dead
    ("ring.pml", "MUT_ABANDON_LIVE", dict(NP=1, NC=1, SLOTS=2, MSGS=1, KILLS=0),
     "assertion violated"),
    # a consumer that frees a record without looking for producers waiting for space
    ("ring.pml", "MUT_NO_W3", dict(NP=2, NC=1, SLOTS=1, MSGS=1, KILLS=0), "invalid end state"),
    # ack as a store instead of a CAS from the lease's epoch: a late ack counts twice
    ("group.pml", "MUT_ACK_STORE", GROUP_BOUNDS[0][1], "assertion violated  !(acked[loff])"),
    # the group bug the model found (fixed): a member killed mid-scan hides deadlines
    ("group.pml", "MUT_DUE_IF_RELEASED", GROUP_BOUNDS[0][1], "invalid end state"),
]


def _tools() -> None:
    require_tool("spin")
    require_tool("gcc")


def _search(work: Path, model: str, knobs: dict, mutation: str | None = None,
            optimize: bool = True) -> tuple[str, dict]:
    """spin -a, compile pan, run an exhaustive search; the output and its figures."""
    src = work / model
    shutil.copy(MODEL_DIR / model, src)
    defines = [f"-D{k}={v}" for k, v in knobs.items()]
    if mutation:
        defines.append(f"-D{mutation}")
    subprocess.run(["spin", "-a", *defines, model], cwd=work, check=True,
                   capture_output=True, text=True, timeout=120)
    subprocess.run(["gcc", "-O2" if optimize else "-O0", "-DCOLLAPSE", "-DMEMLIM=4096",
                    "-o", "pan", "pan.c"], cwd=work, check=True, capture_output=True,
                   text=True, timeout=300)
    started = time.monotonic()
    out = subprocess.run(["./pan", "-m1000000"], cwd=work, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT).stdout
    figures = {"seconds": round(time.monotonic() - started, 1)}
    for key, pattern in (("errors", r"errors: (\d+)"), ("states", r"(\d+) states, stored"),
                         ("transitions", r"(\d+) transitions"), ("depth", r"depth reached (\d+)")):
        m = re.search(pattern, out)
        figures[key] = int(m.group(1)) if m else None
    return out, figures


def _assert_exhaustive_and_clean(out: str, figures: dict) -> None:
    assert "assertion violations\t+" in out and "invalid end states\t+" in out, out
    assert figures["errors"] == 0, out
    assert "Search not completed" not in out, out
    assert "max search depth too small" not in out, out
    assert "out of memory" not in out.lower(), out
    assert figures["states"], out


@pytest.mark.parametrize("what,knobs", RING_BOUNDS_FULL if FULL else RING_BOUNDS,
                         ids=lambda x: x if isinstance(x, str) else "")
def test_ring_protocol_loses_duplicates_tears_and_wedges_nothing(tmp_path, what, knobs):
    _tools()
    out, figures = _search(tmp_path, "ring.pml", knobs)
    print(f"ring model ({what}): {figures}")
    _assert_exhaustive_and_clean(out, figures)


@pytest.mark.parametrize("what,knobs", GROUP_BOUNDS_FULL if FULL else GROUP_BOUNDS,
                         ids=lambda x: x if isinstance(x, str) else "")
def test_group_protocol_completes_each_offset_once_and_recovers_dead_leases(tmp_path, what,
                                                                           knobs):
    _tools()
    out, figures = _search(tmp_path, "group.pml", knobs)
    print(f"group model ({what}): {figures}")
    _assert_exhaustive_and_clean(out, figures)


@pytest.mark.parametrize("model,mutation,knobs,expect", MUTATIONS,
                         ids=[m[1] for m in MUTATIONS])
def test_spin_rejects_a_broken_protocol_variant(tmp_path, model, mutation, knobs, expect):
    _tools()
    out, figures = _search(tmp_path, model, knobs, mutation, optimize=False)
    print(f"{model} with {mutation}: {figures}")
    assert figures["errors"] and figures["errors"] >= 1, out
    assert expect in out, out
