"""Load-balancing algorithms: which worker gets the next call.

Each algorithm is a tiny object with one decision, ``pick``: which of ``count``
candidate workers gets the next call, given (for the load-based ones) each
candidate's figure named by ``load``. Pools of every mode use them, so every
mode balances the same way; in Ray mode the figures include the calls other
copies of the pool handle sent (reported through the balancer actor).
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Optional, Sequence

from ..enums import LoadBalancingAlgorithm, parse


class Balancer:
    """Chooses one of the candidate workers; subclasses set ``display_name`` and ``load``."""

    display_name = "Balancer"
    load: Optional[str] = None  # the per-worker figure pick() needs: "in_flight" or "dispatched"

    def pick(self, count: int, loads: Optional[Sequence[int]]) -> int:
        """The position (0 .. count-1) of the chosen candidate; ``loads`` holds their figures if ``load`` is set."""
        raise NotImplementedError


class RoundRobin(Balancer):
    """Cycle through the workers in order: 0, 1, 2, ..., 0, 1, ..."""

    display_name = "RoundRobin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, count, loads):
        return next(self._counter) % count


class LeastActiveLoad(Balancer):
    """The worker with the fewest calls in flight (ties: the lowest index)."""

    display_name = "LeastActiveLoad"
    load = "in_flight"

    def pick(self, count, loads):
        return loads.index(min(loads))


class LeastTotalLoad(Balancer):
    """The worker that has received the fewest calls over its life."""

    display_name = "LeastTotalLoad"
    load = "dispatched"

    def pick(self, count, loads):
        return loads.index(min(loads))


class Random(Balancer):
    """A uniformly random worker."""

    display_name = "Random"

    def pick(self, count, loads):
        return random.randrange(count)


ALGORITHMS: dict[LoadBalancingAlgorithm, type[Balancer]] = {
    LoadBalancingAlgorithm.RoundRobin: RoundRobin,
    LoadBalancingAlgorithm.LeastActiveLoad: LeastActiveLoad,
    LoadBalancingAlgorithm.LeastTotalLoad: LeastTotalLoad,
    LoadBalancingAlgorithm.Random: Random,
}


def make_balancer(algorithm: Any) -> Balancer:
    """A fresh balancer for ``algorithm`` (a LoadBalancingAlgorithm member or any of its spellings)."""
    return ALGORITHMS[parse(LoadBalancingAlgorithm, algorithm, "load_balancing")]()
