"""Names of queues (and later topics and groups).

A name matches ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$``: ASCII letters, digits,
``.``, ``_`` and ``-``, starting with a letter or digit (so ``.``, ``..`` and
hidden-file names are impossible), at most 128 characters.  The same rule is
enforced by the C core; checking here first gives a clear message before any
file or shared-memory object is touched.
"""

import re

__all__ = ["check_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: object, what: str = "name") -> str:
    """Return `name` if it is a valid name, else raise TypeError/ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if _NAME.fullmatch(name) is None:
        raise ValueError(
            f"invalid {what} {name!r}: a name is 1 to 128 characters from "
            "A-Z a-z 0-9 . _ - and starts with a letter or a digit"
        )
    return name
