"""concurry's five Future class names, each answered by our one :class:`Future`.

concurry 0.13.2 has a Future class per producer (``SyncFuture``, ``ConcurrentFuture``,
``AsyncioFuture``, ``RayFuture``) under an abstract ``BaseFuture``. concurry_ray has
one :class:`Future` for every mode, so these names are abstract base classes with
:class:`Future` registered under each: ``isinstance(f, SyncFuture)`` is True for
every future a worker, a pool or :func:`wrap_future` returns, whatever its mode,
and False for a plain ``concurrent.futures.Future`` (as in concurry, where such a
future is not a ``ConcurrentFuture`` until wrapped).

Calling one of the names builds what concurry's constructor would, as our Future:
``SyncFuture(result_value=42)`` is a done Future, ``ConcurrentFuture(f)``,
``AsyncioFuture(f)`` and ``RayFuture(ref)`` are :func:`wrap_future` of their
argument (after the same type check concurry makes). No class here holds state.

The Ray ObjectRef adapter is registered here, by where it lives: ``futures``
loads it the first time it meets a value of no known kind once ``ray`` has
been imported (an ObjectRef cannot exist before), so ``wrap_future(ref)`` and
``RayFuture(ref)`` work without a Ray pool, and nothing imports Ray for them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sys
from abc import ABC
from typing import Any

from .futures import Future, finished_future, register_adapter, wrap_future

__all__ = ["BaseFuture", "SyncFuture", "ConcurrentFuture", "AsyncioFuture", "RayFuture"]


class BaseFuture(ABC):
    """Any concurry_ray :class:`Future`, for ``isinstance`` checks written for concurry.

    Not constructible: use :func:`wrap_future` (or one of the subclasses) to make a Future.
    """

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Future:
        raise TypeError(f"{cls.__name__} is abstract: use wrap_future(x) to make a Future")


class SyncFuture(BaseFuture):
    """Any :class:`Future`; ``SyncFuture(result_value=None, exception_value=None)`` is one already done."""

    __slots__ = ()

    def __new__(cls, result_value: Any = None, exception_value: BaseException | None = None) -> Future:
        if exception_value is not None and not isinstance(exception_value, BaseException):
            raise TypeError(f"exception_value must be an exception or None, got {type(exception_value).__name__}")
        return finished_future(result_value, exception_value)


class ConcurrentFuture(BaseFuture):
    """Any :class:`Future`; ``ConcurrentFuture(future)`` wraps a ``concurrent.futures.Future``."""

    __slots__ = ()

    def __new__(cls, future: cf.Future) -> Future:
        return wrap_future(_checked(future, isinstance(future, cf.Future), "a concurrent.futures.Future"))


class AsyncioFuture(BaseFuture):
    """Any :class:`Future`; ``AsyncioFuture(future)`` wraps an asyncio future or task."""

    __slots__ = ()

    def __new__(cls, future: asyncio.Future) -> Future:
        return wrap_future(_checked(future, asyncio.isfuture(future), "an asyncio.Future"))


class RayFuture(BaseFuture):
    """Any :class:`Future`; ``RayFuture(object_ref)`` wraps a Ray ``ObjectRef``."""

    __slots__ = ()

    def __new__(cls, object_ref: Any) -> Future:
        return wrap_future(_checked(object_ref, _is_object_ref(object_ref), "a Ray ObjectRef"))


def _is_object_ref(value: Any) -> bool:
    """Whether ``value`` is a Ray ObjectRef; Ray is not imported for it (without Ray, nothing is)."""
    ray = sys.modules.get("ray")
    return ray is not None and isinstance(value, ray.ObjectRef)


def _checked(value: Any, ok: bool, expected: str) -> Any:
    """``value`` when ``ok``, else TypeError saying what was expected."""
    if not ok:
        raise TypeError(f"expected {expected}, got {type(value).__name__}: {value!r}")
    return value


for _kind in (BaseFuture, SyncFuture, ConcurrentFuture, AsyncioFuture, RayFuture):
    _kind.register(Future)

register_adapter("concurry_ray.ray.outcomes:ADAPTER", when_imported="ray")
