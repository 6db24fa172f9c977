"""The docs run as printed: every ```python block of README.md and of the user guide
(docs/guide/*.md), every program in examples/ and every docstring example (doctest)
of the package, each in a fresh process, from a folder outside the checkout, with its
own empty PYQMEM_DIR -- and each leaves that folder as empty as it found it (examples
clean up after themselves)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FENCE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


GUIDE = os.path.join(ROOT, "docs", "guide")


def _python_blocks(path):
    """The ```python blocks of the Markdown file `path`, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [m.group(1) for m in FENCE.finditer(text)]


def _readme_blocks():
    return _python_blocks(os.path.join(ROOT, "README.md"))


def _guide_pages():
    return sorted(f for f in os.listdir(GUIDE) if f.endswith(".md"))


def _guide_blocks():
    """(page, index) of every ```python block of the guide, with ids "page.md-index"."""
    return [
        pytest.param(page, index, id=f"{page}-{index}")
        for page in _guide_pages()
        for index in range(len(_python_blocks(os.path.join(GUIDE, page))))
    ]


def _examples():
    folder = os.path.join(ROOT, "examples")
    return sorted(f for f in os.listdir(folder) if f.endswith(".py"))


def _run(tmp_path, args, timeout=120):
    """Run `args` in tmp_path/work with a fresh PYQMEM_DIR; returns (stdout, leftovers)."""
    work, objects = tmp_path / "work", tmp_path / "objects"
    work.mkdir()
    objects.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "PYQMEM_SHM_DIR"}
    env["PYQMEM_DIR"] = str(objects)
    env.pop("PYTHONPATH", None)  # the installed package only, as a user has it
    run = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"{args[1:]} failed:\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run.stdout, sorted(os.listdir(objects))


def _run_block(tmp_path, source):
    """Run one ```python block as a script, as _run runs a program."""
    script = tmp_path / "block.py"
    script.write_text(source, encoding="utf-8")
    out, left = _run(tmp_path, [sys.executable, str(script)])
    assert out.strip(), "the block printed nothing"
    assert left == []


def test_the_readme_and_the_guide_have_python_blocks_to_run():
    assert len(_readme_blocks()) >= 2
    assert len(_examples()) >= 4
    assert len(_guide_pages()) >= 7 and len(_guide_blocks()) >= 10


@pytest.mark.parametrize("index", range(len(_readme_blocks())))
def test_a_readme_code_block_runs_as_printed_and_cleans_up(tmp_path, index):
    _run_block(tmp_path, _readme_blocks()[index])


@pytest.mark.parametrize("page, index", _guide_blocks())
def test_a_guide_code_block_runs_as_printed_and_cleans_up(tmp_path, page, index):
    block = _python_blocks(os.path.join(GUIDE, page))[index]
    if "import numpy" in block:
        pytest.importorskip("numpy")
    _run_block(tmp_path, block)


@pytest.mark.parametrize("name", _examples())
def test_an_example_program_runs_and_cleans_up(tmp_path, name):
    pytest.importorskip("numpy") if "numpy" in name else None
    out, left = _run(tmp_path, [sys.executable, os.path.join(ROOT, "examples", name)])
    assert out.strip(), "the example printed nothing"
    assert left == []


_DOCTESTS = """
import doctest, importlib, pkgutil, sys
import pyqmem
attempted = failed = 0
for info in pkgutil.walk_packages(pyqmem.__path__, "pyqmem."):
    module = importlib.import_module(info.name)
    result = doctest.testmod(module)
    attempted += result.attempted
    failed += result.failed
result = doctest.testmod(pyqmem)
print(attempted + result.attempted, failed + result.failed)
"""


def _doctest_lines():
    """How many ``>>>`` examples the package's sources hold."""
    count = 0
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "pyqmem")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    count += sum(line.lstrip().startswith(">>> ") for line in f)
    return count


def test_every_docstring_example_of_the_package_passes_and_cleans_up(tmp_path):
    out, left = _run(tmp_path, [sys.executable, "-c", _DOCTESTS])
    attempted, failed = map(int, out.split()[-2:])
    assert failed == 0, out
    assert attempted == _doctest_lines() > 0, out  # every example ran, none was missed
    assert left == []
