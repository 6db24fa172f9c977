"""Argument checks shared by the policy layer (and handed to ``_core`` for
the unusual inputs its fast paths do not take): one wording for every
TypeError/ValueError a bad number or timeout raises."""

import math
import numbers
from typing import Any, Optional

__all__ = [
    "check_int",
    "check_timeout",
    "check_create",
    "check_segment_bytes",
    "check_retention_bytes",
    "check_retention_seconds",
    "check_durability",
]

SEGMENT_MIN = 64 * 1024
SEGMENT_MAX = 4 * 2**30
DURABILITIES = ("os", "fsync")
_RETENTION_SECONDS_MAX = (2**63 - 1) / 1e9


def check_int(what: str, value: object, low: int, high: int) -> None:
    """TypeError unless `value` is an int (not a bool); ValueError unless
    ``low <= value <= high``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")


def check_timeout(timeout: object) -> Optional[float]:
    """Seconds of a blocking call's `timeout`: None (or infinity) waits
    forever and gives None; otherwise a non-negative real number, as a float."""
    if timeout is None:
        return None
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be None or a number, not {type(timeout).__name__}")
    seconds = float(timeout)
    if not seconds >= 0:
        raise ValueError("'timeout' must be a non-negative number")
    if math.isinf(seconds):
        return None
    return seconds


def check_create(create: object) -> None:
    if create is not None and not isinstance(create, bool):
        raise TypeError(f"create must be None, True or False, not {type(create).__name__}")


# ----- a topic's configuration (checked on every open, and on topic.json) ----
def check_segment_bytes(value: Any) -> None:
    check_int("segment_bytes", value, SEGMENT_MIN, SEGMENT_MAX)
    if value % 4096:
        raise ValueError(f"segment_bytes must be a multiple of 4096, got {value}")


def check_retention_bytes(value: object) -> None:
    if value is not None and value != "auto":
        if isinstance(value, str):
            raise TypeError(f'retention_bytes must be "auto", None or an int, not {value!r}')
        check_int("retention_bytes", value, 1, 2**64 - 1)


def check_retention_seconds(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"retention_seconds must be None or a number, not {type(value).__name__}")
    seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds) and seconds <= _RETENTION_SECONDS_MAX):
        raise ValueError(f"retention_seconds must be positive and finite, got {value}")


def check_durability(value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"durability must be 'os' or 'fsync', not {type(value).__name__}")
    if value not in DURABILITIES:
        raise ValueError(f"durability must be 'os' or 'fsync', got {value!r}")
