"""The compiled binding of the C core, ready to use: ``pyqmem._core`` given
the exceptions it raises and the checks and codecs it falls back on.

``_core`` imports nothing of pyqmem (tests/test_layering.py holds it to
that); this module is the one place that wires it to the policy layer.
Policy modules import ``_core`` from here.
"""

from . import _args, errors, headers, serializers

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - depends on how it was installed
    import os

    raise ImportError(
        f"pyqmem's compiled core is missing ({exc}).  If pyqmem is installed, "
        f"the source folder {os.path.dirname(__file__)!r} is shadowing it: run from "
        "another folder, or install with `pip install -e .`"
    ) from exc

_core.configure(
    errors=errors,
    check_int=_args.check_int,
    check_timeout=_args.check_timeout,
    headers_encode=headers.encode,
    headers_decode=headers.decode,
    frame_tags=(serializers.TAG_BYTES, serializers.TAG_OUT_OF_BAND),
)

__all__ = ["_core"]
