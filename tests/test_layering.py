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
               headers_encode=None, headers_decode=None, frame_tags=(0x42, 0x4F))
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


def _resolve(package, level, name):
    """The pyqmem module (dotted, without "pyqmem.") of a relative import."""
    parts = package.split(".") if package else []
    base = parts[:len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(base + ([name] if name else []))


def _imports(path, module):
    """The pyqmem modules `module` (a dotted name under pyqmem, e.g.
    "shm.store") imports, anywhere in its file.  A package counts as its
    __init__; importing a module imports its packages too."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = os.path.basename(path) == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = _resolve(package, node.level, node.module)
                if node.module:
                    out.add(target)
                else:
                    out.update(_resolve(package, node.level, alias.name) for alias in node.names)
            elif node.module and node.module.startswith("pyqmem."):
                out.add(node.module[len("pyqmem."):])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pyqmem."):
                    out.add(alias.name[len("pyqmem."):])
    graph_names = set()
    for name in out:
        if not name:
            continue
        graph_names.add(name)
    graph_names.discard(module)
    return graph_names


def _module_graph():
    """{module: modules it imports} for every module of the pyqmem package
    (its top-level __init__ aside: it imports everything to re-export it)."""
    graph = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        rel = os.path.relpath(folder, PACKAGE_DIR)
        prefix = "" if rel == "." else rel.replace(os.sep, ".") + "."
        for entry in files:
            if not entry.endswith(".py") or (prefix == "" and entry == "__init__.py"):
                continue
            name = prefix[:-1] if entry == "__init__.py" else prefix + entry[:-3]
            graph[name] = _imports(os.path.join(folder, entry), name)
    known = set(graph) | {"_core"}
    for name, deps in graph.items():   # `from . import x` may name an object, not a module
        graph[name] = {d for d in deps if d in known}
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
        assert _imports(path, "shm.group_member") == {"shm.topic"}
    finally:
        os.unlink(path)


def test_the_policy_modules_import_one_another_without_a_cycle():
    graph = _module_graph()
    assert {"topic", "group", "consumer", "queue", "shm", "shm.store"} <= set(graph)
    assert _cycles(graph) == []


def test_the_policy_layer_reaches_the_storage_only_through_the_seam():
    """consumer.py, group.py, deadletter.py and redrive.py know no backend;
    topic.py names the default backend once (resolve_backend), and no module
    of the shared-memory backend imports the policy layer.  (partitioning.py
    takes murmur2, a pure function, from the compiled core: one
    implementation for every backend; it touches no storage.)"""
    graph = _module_graph()
    policy = {"consumer", "group", "deadletter", "redrive", "retry", "headers"}
    for module in policy:
        assert not {d for d in graph[module] if d == "shm" or d.startswith("shm.")}, module
        assert "_core" not in graph[module] and "_native" not in graph[module], module
    for module in (m for m in graph if m == "shm" or m.startswith("shm.")):
        assert not graph[module] & (policy | {"topic", "queue"}), module
