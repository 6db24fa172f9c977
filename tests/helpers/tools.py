"""External programs some tests drive (strace, spin, faketime).

`tools/test-deps.sh` (part of the README's test command) installs them. A test that
needs one calls ``require_tool(name)``: when the program is missing it skips, except
under CI=true, where a missing tool is a failure, so CI can never pass by skipping.
"""
from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} is not installed (run tools/test-deps.sh)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)
