"""Names of queues, topics, consumer groups and dead-letter topics (reliability-matrix.md D1).

Hypothesis generates hostile names (path tricks, NUL, look-alikes, too long, any
Unicode, non-str objects) and valid ones, and every public call that takes a name
gets them: Queue (open/create/attach/exists), Topic (open/attach/exists), a consumer
group, an explicit and the implicit "<topic>.dlq" dead-letter topic, and redrive.

- An invalid name raises ValueError/TypeError (never NotFound or another OSError)
  before any file is touched: checked in process with an audit hook (Python-level
  opens, mkdirs, listings, removals) and, because the C core's opens raise no audit
  events, also in a child under ``strace -f -e trace=%file``: no file syscall at all.
- A valid name touches only pyqmem's own paths: the topic root given as ``dir`` and
  ``$PYQMEM_DIR/pyqmem.<uid>.q.<name>``.

Scale with PYQMEM_SECURITY_EXAMPLES (default 150 per strategy).
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyqmem
from helpers.security import NameCalls, name_strategies
from helpers.tools import require_tool

EXAMPLES = int(os.environ.get("PYQMEM_SECURITY_EXAMPLES", "150"))
VALID, HOSTILE, OTHER_TYPES = name_strategies()
INVALID = st.one_of(HOSTILE, OTHER_TYPES)
FIGURES: dict = {}


@pytest.fixture(scope="module")
def root():
    base = os.environ["PYQMEM_DIR"]
    path = tempfile.mkdtemp(prefix="names-", dir=base)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def calls(root):
    c = NameCalls(root)
    yield c
    c.close()
    paths = FIGURES.get("audit valid paths", set())
    print(f"\nD1 audit hook: {FIGURES.get('audit invalid calls', 0)} calls with invalid names, "
          f"0 file events; {FIGURES.get('audit valid names', 0)} valid names touched "
          f"{len(paths)} distinct paths, all under the topic root")


# ----------------------------------------------------------------------------
# in process: audit hook
# ----------------------------------------------------------------------------
class _Audit:
    """One permanent audit hook (sys.addaudithook cannot be removed), switched on
    around a call; records the path arguments of file events in the main thread."""

    installed = False
    active = False
    paths: list = []
    EVENTS = ("open", "os.", "shutil.", "glob.", "tempfile.")

    @classmethod
    def watch(cls):
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True
        cls.paths = []
        cls.active = True
        return cls

    @classmethod
    def stop(cls):
        cls.active = False
        return list(cls.paths)

    @classmethod
    def _hook(cls, event, args):
        if not cls.active or threading.current_thread() is not threading.main_thread():
            return
        if event.startswith(cls.EVENTS) and event not in ("os.system",):
            if event == "open":
                args = args[:1]   # (path, mode, flags)
            for a in args:
                if isinstance(a, (str, bytes, os.PathLike)):
                    cls.paths.append((event, os.fsdecode(a)))


def _own_path(path, root, name):
    path = posixpath.normpath(path)
    shm = os.environ["PYQMEM_DIR"]
    return (path == root or path.startswith(root + "/")
            or path == posixpath.join(shm, f"pyqmem.{os.geteuid()}.q.{name}"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=INVALID)
def test_invalid_names_raise_value_or_type_error_before_touching_a_file(calls, name):
    for label in calls.calls:
        if not calls.applies(label, name):
            continue
        _Audit.watch()
        try:
            got = calls.run(label, name)
        finally:
            touched = _Audit.stop()
        assert got in ("ValueError", "TypeError"), f"{label}({name!r}) -> {got}"
        assert touched == [], f"{label}({name!r}) touched {touched}"
        FIGURES["audit invalid calls"] = FIGURES.get("audit invalid calls", 0) + 1


@settings(max_examples=max(EXAMPLES // 3, 10), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(name=VALID)
def test_valid_names_touch_only_pyqmems_own_paths(calls, root, name):
    try:
        for label in calls.calls:
            _Audit.watch()
            try:
                got = calls.run(label, name)
            finally:
                touched = _Audit.stop()
            assert got not in ("ValueError", "TypeError") or len(name) + calls.DERIVED.get(label, 0) > 128, \
                f"valid name {name!r} refused by {label}: {got}"
            outside = [(e, p) for e, p in touched if not _own_path(p, root, name)]
            assert outside == [], f"{label}({name!r}) touched {outside}"
            FIGURES.setdefault("audit valid paths", set()).update(p for _, p in touched)
        FIGURES["audit valid names"] = FIGURES.get("audit valid names", 0) + 1
    finally:
        calls.cleanup(name)


def test_a_dead_letter_name_too_long_is_refused_when_the_consumer_is_made(calls, root):
    name = "d" * 126                                   # "<name>.dlq" is 130 characters
    with pyqmem.Topic(name, dir=root, segment_bytes=64 * 1024, retention_bytes=None) as t:
        before = sorted(os.listdir(os.path.join(root, name)))
        with pytest.raises(ValueError, match="dead-letter"):
            t.consumer(group="g")
        assert sorted(os.listdir(os.path.join(root, name))) == before, "group made anyway"
    calls.cleanup(name)


# ----------------------------------------------------------------------------
# in a child: strace sees the C core too
# ----------------------------------------------------------------------------
LOOKUPS = {"newfstatat", "stat", "lstat", "statx", "access", "faccessat", "faccessat2"}
_LINE = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)$")
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
_DIRFD = re.compile(r"^(AT_FDCWD|\d+<([^>]*)>)")


def _paths_of(args, cwd):
    """Absolute paths a %file syscall line names (dirfd-relative ones joined)."""
    m = _DIRFD.match(args)
    base = m.group(2) if m and m.group(2) else cwd
    out = []
    for s in _STR.findall(args):
        out.append(posixpath.normpath(posixpath.join(base, s)))
        base = cwd   # only the first path is relative to the leading dirfd
    return out


def test_names_from_hypothesis_touch_only_pyqmems_paths_per_strace(root, tmp_path):
    strace = require_tool("strace")
    report = tmp_path / "report.json"
    log = tmp_path / "strace.log"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    child = ("import sys; from helpers.security import strace_child_main; "
             "strace_child_main(sys.argv[1:])")
    r = subprocess.run([strace, "-f", "-qq", "-y", "-e", "trace=%file", "-o", str(log),
                        sys.executable, "-c", child, root, str(EXAMPLES), str(report)],
                       capture_output=True, text=True, timeout=300, cwd=cwd)
    if r.returncode != 0 and "ptrace" in r.stderr:
        pytest.skip("ptrace not permitted here: " + r.stderr[-300:])
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(report.read_text())
    windows = {"invalid": [], "valid": []}
    current = None
    for line in log.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        marker = re.search(r'"/pyqmem-mark-(\w+)-(begin|end)"', line)
        if marker:
            current = marker.group(1) if marker.group(2) == "begin" else None
            continue
        if current:
            windows[current].append((m.group(1), m.group(2)))

    # invalid names: not one file syscall
    for label, outcomes in result["outcomes"]["invalid"].items():
        assert set(outcomes) <= {"ValueError", "TypeError"}, (label, outcomes)
    assert windows["invalid"] == [], f"invalid names reached the file system: {windows['invalid'][:10]}"

    # valid names: only the root folder and this uid's queue files
    shm = os.environ["PYQMEM_DIR"]
    qprefix = posixpath.join(shm, f"pyqmem.{os.geteuid()}.q.")
    allowed = (root + "/", qprefix, "/proc/self/fd/", "/proc/sys/kernel/random/boot_id")
    ancestors, p = set(), root   # looked up (never changed) by os.makedirs(root)
    while p != "/":
        p = posixpath.dirname(p)
        ancestors.add(p)
    touched, escapes = set(), []
    for call, args in windows["valid"]:
        for p in _paths_of(args, str(cwd)):
            touched.add(p)
            lookup = call in LOOKUPS and p in ancestors
            if not (p == root or p.startswith(allowed) or lookup):
                escapes.append((call, args[:200]))
    assert escapes == [], f"paths outside pyqmem's own: {escapes[:10]}"
    core_opens = sum(1 for call, args in windows["valid"] if call == "openat" and "/p0>" in args)
    queue_opens = sum(1 for call, args in windows["valid"] if qprefix in args)
    assert core_opens > 0 and queue_opens > 0, "strace did not see the C core's opens"
    print(f"\nD1 strace: {result['counts']['invalid']} invalid and {result['counts']['valid']} "
          f"valid names x {len(result['outcomes']['valid'])} calls; "
          f"{len(windows['valid'])} file syscalls on {len(touched)} distinct paths, 0 escapes; "
          f"{len(windows['invalid'])} file syscalls for invalid names")
