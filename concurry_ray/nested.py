"""Finding and replacing values nested in lists, tuples, sets and dicts (argument futures)."""

from __future__ import annotations

from typing import Any, Callable


PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
"""Argument types that cannot hold a nested value, so scans skip them."""


def collect_arguments(args: tuple, kwargs: dict, match: Callable[[Any], bool]) -> list:
    """The items of a call's arguments (nested ones included) for which ``match`` is true.

    Calls whose arguments are all plain (the common case) are answered without a scan.
    """
    for value in args:  # a plain loop: the cheapest check for the usual few arguments
        if type(value) not in PLAIN:
            break
    else:
        if not kwargs or PLAIN.issuperset(map(type, kwargs.values())):
            return []
    found: list = []
    for values in (args, kwargs.values()):
        for value in values:
            if type(value) not in PLAIN:
                collect(value, match, found)
    return found


def collect(value: Any, match: Callable[[Any], bool], out: list) -> list:
    """Append to ``out`` every item of ``value`` (recursively) for which ``match`` is true."""
    if match(value):
        out.append(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            collect(item, match, out)
    elif isinstance(value, dict):
        for item in value.values():
            collect(item, match, out)
    return out


def replace(value: Any, by_id: dict[int, Any]) -> Any:
    """A copy of ``value`` with each matched item replaced by ``by_id[id(item)]``."""
    if id(value) in by_id:
        return by_id[id(value)]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(replace(v, by_id) for v in value))
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(replace(v, by_id) for v in value)
    if isinstance(value, dict):
        return {k: replace(v, by_id) for k, v in value.items()}
    return value
