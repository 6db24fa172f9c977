"""Shared fixtures for the pyqmem Python tests.

- The whole session runs with PYQMEM_DIR set to a fresh directory under /dev/shm
  (set in pytest_configure, before pyqmem is imported, and inherited by every child
  process); it is removed at the end, so nothing leaks into the real /dev/shm.
- ``qname`` gives every test a unique, valid queue name and removes its file(s) at
  teardown; ``make_queue`` opens queues on it and closes them at teardown.
- ``reaper`` SIGKILLs and reaps any child process a test registered.
- ``helpers/topic_fixtures.py`` is registered as a plugin (``pytest_plugins``): its
  fixtures (topic_dir, tname, tracked, make_topic) serve every module without imports.
- Tests marked ``any_backend`` run once per topic backend (helpers/backends.py).
- A per-test timeout guard: SIGALRM raises ``GuardTimeout`` in the main thread after
  the test's budget (``@pytest.mark.timeout(seconds)``, default 120 s); if the
  interpreter is stuck in C and never runs the handler, faulthandler dumps every
  thread's stack and exits the process 30 s later.  When pytest-timeout is
  installed it is used instead and this guard stands down.
"""
from __future__ import annotations

import faulthandler
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

# fixtures shared by several test modules (topic_dir, tname, tracked, make_topic)
pytest_plugins = ["helpers.topic_fixtures"]

DEFAULT_TIMEOUT = float(os.environ.get("PYQMEM_TEST_TIMEOUT", "120"))
HARD_KILL_GRACE = 30.0

_SESSION_SHM_DIR: str | None = None


def _shm_root() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def pytest_configure(config):
    global _SESSION_SHM_DIR
    config.addinivalue_line("markers", "timeout(seconds): per-test time budget (guard or pytest-timeout)")
    config.addinivalue_line("markers", "any_backend: a topic behaviour every backend must have; "
                            "runs once per backend of helpers/backends.py")
    if _SESSION_SHM_DIR is None:
        _SESSION_SHM_DIR = tempfile.mkdtemp(prefix="pyqmem-tests-", dir=_shm_root())
        os.environ["PYQMEM_DIR"] = _SESSION_SHM_DIR
        # children (spawn, forkserver, subprocess) must be able to import `helpers`
        pp = os.environ.get("PYTHONPATH", "")
        if TESTS_DIR not in pp.split(os.pathsep):
            os.environ["PYTHONPATH"] = TESTS_DIR + (os.pathsep + pp if pp else "")
        # one forkserver per session, with the worker code preloaded: a child costs
        # milliseconds.  Started now, so its children inherit this environment, not that
        # of whichever test first asked for one (topic_dir points PYQMEM_DIR elsewhere).
        import multiprocessing
        import multiprocessing.forkserver

        if "forkserver" in multiprocessing.get_all_start_methods():
            multiprocessing.set_forkserver_preload(
                ["helpers.workers", "helpers.topic_workers", "helpers.group_workers",
                 "helpers.msgs", "pyqmem"])
            multiprocessing.forkserver.ensure_running()


def pytest_unconfigure(config):
    global _SESSION_SHM_DIR
    if _SESSION_SHM_DIR is not None:
        shutil.rmtree(_SESSION_SHM_DIR, ignore_errors=True)
        _SESSION_SHM_DIR = None


# ----------------------------------------------------------------------------
# names and files
# ----------------------------------------------------------------------------
def pytest_generate_tests(metafunc):
    """Tests marked any_backend run once per topic backend (docs/design/backends.md)."""
    if "topic_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("any_backend"):
        from helpers.backends import BACKENDS

        metafunc.parametrize("topic_backend", BACKENDS, indirect=True)


@pytest.fixture
def topic_backend(request):
    """The backend topics of this test live in: None (shared memory, the default)
    unless the test is marked any_backend and runs on another one."""
    from helpers.backends import make

    return make(getattr(request, "param", "shm"))


@pytest.fixture(scope="session")
def shm_dir() -> str:
    """The session's private PYQMEM_DIR."""
    d = os.environ["PYQMEM_DIR"]
    assert d == _SESSION_SHM_DIR and os.path.isdir(d)
    return d


from helpers.paths import queue_path  # noqa: E402,F401  (re-exported for tests)


def _files_for(shm: str, name: str) -> list[str]:
    prefix = f"pyqmem.{os.getuid()}.q.{name}"
    try:
        entries = os.listdir(shm)
    except FileNotFoundError:
        return []
    return [os.path.join(shm, e) for e in entries if e == prefix or e.startswith(prefix + ".")]


class Names:
    """Hands out unique valid queue names for one test and cleans them up."""

    def __init__(self, shm: str, test_name: str):
        self.shm = shm
        base = re.sub(r"[^A-Za-z0-9._-]", "-", test_name)[:60].strip("-.") or "t"
        self.base = "t" + uuid.uuid4().hex[:10] + "-" + base
        self.issued: list[str] = []

    def new(self, suffix: str = "") -> str:
        name = f"{self.base}-{len(self.issued)}{suffix}"[:128]
        self.issued.append(name)
        return name

    def cleanup(self) -> None:
        for name in self.issued:
            for path in _files_for(self.shm, name):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


@pytest.fixture
def names(shm_dir, request):
    n = Names(shm_dir, request.node.name)
    yield n
    n.cleanup()


@pytest.fixture
def qname(names) -> str:
    """A unique queue name for this test (unlinked at teardown)."""
    return names.new()


@pytest.fixture
def make_queue(qname):
    """Factory: make_queue(**kw) opens pyqmem.Queue(kw.pop('name', qname), **kw); closes all at teardown."""
    import pyqmem

    opened = []

    def factory(name: str | None = None, **kw):
        q = pyqmem.Queue(qname if name is None else name, **kw)
        opened.append(q)
        return q

    yield factory
    for q in opened:
        try:
            q.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------
# child processes
# ----------------------------------------------------------------------------
class Reaper:
    def __init__(self):
        self.procs = []

    def add(self, proc):
        """Register a multiprocessing.Process or subprocess.Popen; returns it."""
        self.procs.append(proc)
        return proc

    def kill_all(self):
        for p in self.procs:
            pid = getattr(p, "pid", None)
            if pid is None:
                continue
            alive = p.is_alive() if hasattr(p, "is_alive") else p.poll() is None
            if alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                if hasattr(p, "join"):
                    if p.pid is not None:
                        p.join(10)
                else:
                    p.wait(10)
                    for f in (p.stdin, p.stdout, p.stderr):
                        if f is not None:
                            f.close()
            except Exception:
                pass


@pytest.fixture
def reaper():
    r = Reaper()
    yield r
    r.kill_all()


# ----------------------------------------------------------------------------
# per-test timeout guard
# ----------------------------------------------------------------------------
class GuardTimeout(BaseException):
    """Raised in the main thread when a test exceeds its time budget."""


def _budget(item) -> float:
    m = item.get_closest_marker("timeout")
    if m is not None and m.args:
        return float(m.args[0])
    return DEFAULT_TIMEOUT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.config.pluginmanager.hasplugin("timeout") or threading.current_thread() is not threading.main_thread():
        yield
        return
    budget = _budget(item)

    def on_alarm(signum, frame):
        raise GuardTimeout(f"{item.nodeid} exceeded its {budget:.0f} s budget")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, budget)
    faulthandler.dump_traceback_later(budget + HARD_KILL_GRACE, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, old)
