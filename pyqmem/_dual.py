"""``dualmethod``: one name for an operation on a named object, callable on
an open handle (``t.delete()``) or on the class with the object's name
(``Topic.delete("events")``), the way ``Path.unlink`` and ``shm_unlink``
are both used."""

from __future__ import annotations

import types
from typing import Any, Callable, Generic, Optional, Type, TypeVar, overload

from typing_extensions import Concatenate, ParamSpec

__all__ = ["dualmethod"]

_T = TypeVar("_T")
_PI = ParamSpec("_PI")  # the instance form's parameters (after self)
_RI = TypeVar("_RI")
_PC = ParamSpec("_PC")  # the class form's parameters (after cls)
_RC = TypeVar("_RC")
_PC2 = ParamSpec("_PC2")
_RC2 = TypeVar("_RC2")


class dualmethod(Generic[_T, _PI, _RI, _PC, _RC]):
    """Decorate the instance form; add the class form with ``@name.on_class``.
    Either way a bound method comes back, so help() and inspect show the
    form's own signature and docstring, and type checkers see both."""

    def __init__(self, on_instance: Callable[Concatenate[_T, _PI], _RI]) -> None:
        self._on_instance = on_instance
        self._on_class: Optional[Callable[..., Any]] = None
        self.__doc__ = on_instance.__doc__
        self.__name__ = getattr(on_instance, "__name__", "method")

    def on_class(
        self, func: Callable[Concatenate[Type[_T], _PC2], _RC2]
    ) -> dualmethod[_T, _PI, _RI, _PC2, _RC2]:
        self._on_class = func
        return self  # type: ignore[return-value]  # the same object, now with its class form

    @overload
    def __get__(self, obj: None, owner: Type[_T]) -> Callable[_PC, _RC]: ...
    @overload
    def __get__(self, obj: _T, owner: Optional[Type[_T]] = None) -> Callable[_PI, _RI]: ...
    def __get__(self, obj: Optional[_T], owner: Optional[type] = None) -> Callable[..., Any]:
        if obj is None:
            assert self._on_class is not None
            return types.MethodType(self._on_class, owner)
        return types.MethodType(self._on_instance, obj)
