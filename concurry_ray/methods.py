"""What a worker class offers a handle: its public methods, and which of them are ``async def``."""

from __future__ import annotations

import functools
import inspect


def public_methods(cls: type) -> list[str]:
    """Names of the methods a handle exposes: public callables of the class."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, (staticmethod, classmethod, property)):
            continue
        if callable(attr):
            names.append(name)
    return names


def has_async_methods(cls: type) -> bool:
    """True if any public method of ``cls`` is ``async def``."""
    return any(is_async_method(cls, n) for n in public_methods(cls))


@functools.lru_cache(maxsize=4096)
def is_async_method(cls: type, method: str) -> bool:
    """Whether ``cls.method`` is an ``async def`` (looking through decorators); the one cache of this answer."""
    return inspect.iscoroutinefunction(inspect.unwrap(getattr(cls, method, None) or _not_a_method))


def _not_a_method() -> None:
    return None
