"""Finding and replacing values nested in lists, tuples, sets and dicts (argument futures)."""

from __future__ import annotations

from typing import Any, Callable


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
