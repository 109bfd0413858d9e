"""The ``limits=`` option of ``Worker.options()``: what it accepts, and the limits a pool's workers share.

* ``None`` (or an empty list): no limits.
* A list of limits: one shared LimitSet for the whole pool, held where the
  pool's mode needs it and removed when the pool stops.
* A LimitSet or a LimitPool: used as given; it must reach workers of the pool's mode.
* A list of LimitSets: a LimitPool of them (round robin), as concurry does.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from ..errors import ConfigError
from .holders import PoolOwner
from .limitpool import LimitPool
from .limitset import LimitSet
from .models import check_limits


def check_limits_option(limits: Any) -> Any:
    """``limits`` unchanged if it is a valid ``limits=`` option; ConfigError naming what is allowed otherwise."""
    if limits is None or isinstance(limits, (LimitSet, LimitPool)):
        return limits
    if isinstance(limits, (list, tuple)):
        if not _all_limit_sets(limits):
            check_limits(limits)
        return limits
    raise ConfigError(
        f"limits={limits!r} is not allowed: pass a list of CallLimit/RateLimit/ResourceLimit "
        "(one budget shared by the pool), a LimitSet, a LimitPool, or a list of LimitSets (a LimitPool of them)"
    )


def pool_limits(limits: Any, mode: str, owner: Optional[PoolOwner] = None) -> Optional[Union[LimitSet, LimitPool]]:
    """What a pool in ``mode`` hands its workers for the ``limits=`` option (None: no limits);
    ``owner`` names the pool when it has a name (see ``PoolOwner``)."""
    if check_limits_option(limits) is None or (isinstance(limits, (list, tuple)) and not limits):
        return None
    if isinstance(limits, (list, tuple)):
        if not _all_limit_sets(limits):
            return LimitSet.for_pool(limits, mode, owner)
        limits = LimitPool(limits)
    if not limits.reaches(mode):
        raise ConfigError(
            f"limits={limits!r} cannot be reached from workers in mode {mode!r}; "
            "build each LimitSet with mode='ray' (any worker) or with the pool's mode"
        )
    return limits


def _all_limit_sets(items: Any) -> bool:
    """Whether ``items`` is a non-empty list of LimitSets; ConfigError if it mixes them with other things."""
    sets = [isinstance(item, LimitSet) for item in items]
    if any(sets) and not all(sets):
        raise ConfigError(
            f"limits={items!r} mixes LimitSets with other items: pass a list of limits (one budget for the pool) "
            "or a list of LimitSets (a LimitPool choosing among them)"
        )
    return any(sets)
