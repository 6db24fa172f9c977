"""``dualmethod``: one name for an operation on a named object, callable on
an open handle (``t.delete()``) or on the class with the object's name
(``Topic.delete("events")``), the way ``Path.unlink`` and ``shm_unlink``
are both used."""

from __future__ import annotations

import types
from typing import Any, Callable, Optional

__all__ = ["dualmethod"]


class dualmethod:
    """Decorate the instance form; add the class form with ``@name.on_class``."""

    def __init__(self, on_instance: Callable[..., Any]) -> None:
        self._on_instance = on_instance
        self._on_class: Optional[Callable[..., Any]] = None
        self.__doc__ = on_instance.__doc__
        self.__name__ = getattr(on_instance, "__name__", "method")

    def on_class(self, func: Callable[..., Any]) -> dualmethod:
        self._on_class = func
        return self

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Callable[..., Any]:
        """A bound method (so help() and inspect show the form's own
        signature and docstring): of the class, or of the instance."""
        if obj is None:
            assert self._on_class is not None
            return types.MethodType(self._on_class, owner)
        return types.MethodType(self._on_instance, obj)
