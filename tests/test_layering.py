"""The layers import in one direction (docs/design/architecture.md).

- The compiled binding ``pyqmem._core`` imports nothing of pyqmem: it is
  loaded from its file in a child interpreter where every ``pyqmem`` import
  is refused, and must still work once configured.
- The modules of ``pyqmem/`` form no import cycle, counting the imports
  inside functions too (a lazy import only hides a cycle).
"""

import ast
import importlib.util
import os
import subprocess
import sys

import pyqmem

PACKAGE_DIR = os.path.dirname(os.path.abspath(pyqmem.__file__))

_LOAD_CORE_ALONE = r"""
import importlib.abc, importlib.util, sys, types

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pyqmem" or name.startswith("pyqmem.") and name != "pyqmem._core":
            raise ImportError(f"refused: _core imported {name}")
        return None

sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location("pyqmem._core", sys.argv[1])
core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core)
loaded = sorted(m for m in sys.modules if m == "pyqmem" or m.startswith("pyqmem."))
assert loaded in ([], ["pyqmem._core"]), loaded   # (a Cython module registers itself)

class Boom(Exception):
    pass

errors = types.SimpleNamespace(**{n: type(n, (Boom,), {}) for n in (
    "QmemError Full Empty Closed MessageTooLarge CorruptError IncompatibleError "
    "NotFound AlreadyExists StaleAck").split()})
core.configure(errors=errors, check_int=None, check_timeout=None,
               headers_encode=None, headers_decode=None)
try:
    core.unlink("no-such-ring-for-the-layering-test")
except errors.NotFound:
    print("ok")
"""


def test_the_compiled_core_imports_nothing_of_pyqmem():
    origin = importlib.util.find_spec("pyqmem._core").origin
    done = subprocess.run([sys.executable, "-c", _LOAD_CORE_ALONE, origin],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok"]


def _imports(path, module):
    """The pyqmem modules `module` (a file in pyqmem/) imports, anywhere in it."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module and node.module.startswith("pyqmem."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyqmem."):
                    out.add(alias.name.split(".")[1])
    out.discard(module)
    return out


def _module_graph():
    graph = {}
    for entry in os.listdir(PACKAGE_DIR):
        if entry.endswith(".py") and entry != "__init__.py":
            name = entry[:-3]
            graph[name] = _imports(os.path.join(PACKAGE_DIR, entry), name)
    return graph


def _cycles(graph):
    """Every import cycle of `graph`, each as the list of modules around it."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_cycle_finder_sees_a_cycle_through_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    lazy = "def f():\n    from .topic import Topic\n"
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"layering-{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(lazy)
    try:
        assert _imports(path, "group") == {"topic"}
    finally:
        os.unlink(path)


def test_the_policy_modules_import_one_another_without_a_cycle():
    graph = _module_graph()
    assert {"topic", "group", "consumer", "queue"} <= set(graph)
    assert _cycles(graph) == []
