"""The package says one version everywhere: pyproject.toml, pyqmem.__version__ and
the linked C core (qm_version(), the header's QM_VERSION_* macros)."""
import os
import re

import pyqmem
from pyqmem import _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_package_the_core_and_pyproject_say_one_version():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        declared = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    with open(os.path.join(ROOT, "csrc", "include", "qmem.h"), encoding="utf-8") as f:
        header = re.search(r'#define QM_VERSION_STRING "([^"]+)"', f.read()).group(1)
    assert pyqmem.__version__ == declared == header == _core.version()


def _cmake_lists():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        text = f.read()
    return text


def test_cmake_names_every_source_file_explicitly():
    """CMakeLists.txt lists its sources by name (no globs): a new file that is not
    listed would silently not be built or tested, so this fails instead."""
    text = _cmake_lists()
    assert "GLOB" not in text.replace("GLOBAL", "")
    words = set(re.findall(r"[A-Za-z0-9_]+", text))
    missing = []
    for folder, prefixes in (("csrc/src", ("",)), ("tests/c", ("test_", "stress_", "sweep_")),
                             ("tests/fuzz", ("fuzz_",))):
        for entry in sorted(os.listdir(os.path.join(ROOT, folder))):
            stem, ext = os.path.splitext(entry)
            if ext == ".c" and stem.startswith(prefixes) and stem not in words:
                missing.append(f"{folder}/{entry}")
    assert missing == []


def test_the_installed_metadata_has_license_readme_urls_and_the_console_script():
    from importlib import metadata

    meta = metadata.metadata("pyqmem")
    assert meta["License-Expression"] == "MIT"
    assert "Broker semantics at shared-memory speed" in meta["Description"]
    assert any(u.startswith("Changelog, ") for u in meta.get_all("Project-URL"))
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts.get("pyqmem") == "pyqmem.__main__:main"
    for name in ("LICENSE", "CHANGELOG.md"):
        assert os.path.isfile(os.path.join(ROOT, name)), name


def test_the_command_prints_a_usage_mistake_as_one_line_and_exits_2():
    import subprocess
    import sys

    for args in ([], ["bogus"], ["redrive"], ["redrive", "t", "--max", "x"]):
        run = subprocess.run([sys.executable, "-m", "pyqmem", *args], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 2, (args, run)
        assert run.stdout == "" and run.stderr.count("\n") == 1, (args, run.stderr)
        assert run.stderr.startswith("pyqmem") and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "pyqmem", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.startswith("usage: pyqmem ") and "``" not in run.stdout
