"""Rate, call and resource limits (placeholder until the limits issue lands)."""

from __future__ import annotations

from typing import Any, Optional

from ..errors import ConfigError


def pool_limits(limits: Any, mode: str) -> Optional[Any]:
    """The LimitSet a pool's workers share, built from the ``limits=`` option."""
    if limits is None:
        return None
    raise ConfigError("limits= is not supported yet")


def empty_limits() -> Any:
    """A LimitSet with no limits."""
    return None
