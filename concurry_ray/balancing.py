"""Load-balancing algorithms: which worker gets the next call.

Each algorithm is a tiny object with one decision, ``pick``, over the live
candidates' load figures. The same objects serve local pools and the Ray
balancer actor, so every mode balances the same way.
"""

from __future__ import annotations

import itertools
import random
from typing import Sequence

from .errors import ConfigError


class Balancer:
    """Chooses a worker index among candidates; subclasses set ``display_name``."""

    display_name = "Balancer"
    uses_loads = False

    def pick(self, candidates: Sequence[int], active: Sequence[int], total: Sequence[int]) -> int:
        """Pick one of ``candidates`` (worker indexes) given per-worker active and total calls."""
        raise NotImplementedError


class RoundRobin(Balancer):
    """Cycle through the workers in order: 0, 1, 2, ..., 0, 1, ..."""

    display_name = "RoundRobin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, candidates, active, total):
        return candidates[next(self._counter) % len(candidates)]


class LeastActiveLoad(Balancer):
    """The worker with the fewest calls in flight (ties: the lowest index)."""

    display_name = "LeastActiveLoad"
    uses_loads = True

    def pick(self, candidates, active, total):
        return min(candidates, key=active.__getitem__)


class LeastTotalLoad(Balancer):
    """The worker that has received the fewest calls over its life."""

    display_name = "LeastTotalLoad"
    uses_loads = True

    def pick(self, candidates, active, total):
        return min(candidates, key=total.__getitem__)


class Random(Balancer):
    """A uniformly random worker."""

    display_name = "Random"

    def pick(self, candidates, active, total):
        return random.choice(candidates)


ALGORITHMS: dict[str, type[Balancer]] = {
    "round_robin": RoundRobin,
    "active": LeastActiveLoad,
    "total": LeastTotalLoad,
    "random": Random,
}


def make_balancer(name: str) -> Balancer:
    """A fresh balancer for a canonical algorithm name (see ``options.BALANCING_ALIASES``)."""
    if name not in ALGORITHMS:
        raise ConfigError(f"load_balancing={name!r} is not a known algorithm; allowed: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]()
