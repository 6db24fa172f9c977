"""Argument checks shared by the policy layer (and handed to ``_core`` for
the unusual inputs its fast paths do not take): one wording for every
TypeError/ValueError a bad number or timeout raises."""

import math
import numbers

__all__ = ["check_int", "check_timeout"]


def check_int(what, value, low, high):
    """TypeError unless `value` is an int (not a bool); ValueError unless
    ``low <= value <= high``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be in [{low}, {high}], got {value}")


def check_timeout(timeout):
    """Seconds of a blocking call's `timeout`: None (or infinity) waits
    forever and gives None; otherwise a non-negative real number, as a float."""
    if timeout is None:
        return None
    if not isinstance(timeout, numbers.Real) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be None or a number, not {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError("'timeout' must be a non-negative number")
    if math.isinf(timeout):
        return None
    return float(timeout)
