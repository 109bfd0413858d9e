"""LimitPool: several independent LimitSets -- one per account, region or endpoint -- used as one budget."""

from __future__ import annotations

import itertools
import threading
from typing import Any, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..pools.balancing import make_balancer
from ..display import limits_html, read_stats
from ..enums import LoadBalancingAlgorithm, parse
from ..errors import ConfigError
from .limitset import LimitSet, LimitSetAcquisition, check_timeout, in_event_loop
from .models import describe

CHOOSERS = (LoadBalancingAlgorithm.RoundRobin, LoadBalancingAlgorithm.Random)


class LimitPoolOptions(BaseModel):
    """How a LimitPool chooses a set: ``load_balancing`` and ``worker_index`` (where its round robin starts)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    load_balancing: LoadBalancingAlgorithm = LoadBalancingAlgorithm.RoundRobin
    worker_index: int = Field(default=0, ge=0, strict=True)

    @field_validator("load_balancing", mode="before")
    @classmethod
    def _chooser(cls, value: Any) -> LoadBalancingAlgorithm:
        try:
            member = parse(LoadBalancingAlgorithm, value, "load_balancing")
        except ConfigError:
            member = None
        if member not in CHOOSERS:
            known = f" ({member.name})" if member is not None else ""
            raise ValueError(
                f"load_balancing={value!r}{known} cannot choose a LimitSet; "
                "allowed: RoundRobin ('round_robin', 'rr') or Random ('random', 'rand')"
            )
        return member


class LimitPool:
    """Several independent LimitSets used as one: each acquire takes its units from one of them.

    Use it when the same work can be done against several separate budgets --
    API keys of different accounts, regions, endpoints, model deployments --
    and the code must know which one it got. Give each LimitSet a ``config``
    describing its budget; the acquisition exposes the chosen set's::

        accounts = LimitPool(limit_sets=[
            LimitSet([RateLimit("tokens", "minute", 10_000)], shared=True, config={"api_key": key})
            for key in keys
        ])
        with accounts.acquire(requested={"tokens": 500}) as acq:
            reply = call_model(prompt, api_key=acq.config["api_key"])
            acq.update(usage={"tokens": reply.tokens_used})

    Choosing: ``load_balancing`` is round robin (default; ``worker_index`` is
    where it starts) or random. The chosen set is asked first; if it cannot
    grant at once, the others are asked in turn without waiting, and the first
    that can grants the units. Only when none can does the acquire wait, on the
    chosen set (first come, first served there; ``timeout`` bounds the wait).
    Sets may have different limits: a request goes only to the sets that could
    ever grant it, and is a ``ConfigError`` when none could.

    As a worker's limits: ``Worker.options(limits=LimitPool(...))`` (or a list
    of LimitSets) gives every worker its own copy of the pool, sharing the
    sets. Each copy handed to a worker -- through ``for_worker()`` or by
    pickling -- starts its round robin one set further than the copy before, so
    the workers of a pool start on different sets. The sets must reach the
    pool's workers (for process or Ray pools: ``shared=True`` with that mode).
    """

    def __init__(
        self,
        limit_sets: Sequence[LimitSet],
        load_balancing: Any = LoadBalancingAlgorithm.RoundRobin,
        worker_index: int = 0,
    ) -> None:
        try:
            options = LimitPoolOptions(load_balancing=load_balancing, worker_index=worker_index)
        except ValidationError as exc:
            raise ConfigError(describe("LimitPool", exc)) from None
        self.limit_sets: tuple[LimitSet, ...] = _check_sets(limit_sets)
        self.load_balancing: LoadBalancingAlgorithm = options.load_balancing
        self.worker_index: int = options.worker_index
        self._balancer = make_balancer(self.load_balancing)
        self._lock = threading.Lock()
        self._dispatched = 0
        self._copies = itertools.count()

    # ----- acquiring ---------------------------------------------------------------
    def acquire(self, requested: Optional[Mapping[str, float]] = None, timeout: Optional[float] = None) -> Any:
        """Units from one of the sets, to use as ``with`` or ``async with``; see the class docstring.

        Outside an event loop the units are taken here and the granting set's
        :class:`LimitSetAcquisition` is returned (its ``config`` says which
        set); inside one, entering ``async with`` takes them and gives it.
        ``TimeoutError`` after ``timeout`` seconds; ``ConfigError`` at once if
        no set could ever grant ``requested``.
        """
        pending = PoolAcquisition(self._candidates(requested), requested, check_timeout(timeout))
        return pending if in_event_loop() else pending.__enter__()

    async def async_acquire(
        self, requested: Optional[Mapping[str, float]] = None, timeout: Optional[float] = None
    ) -> LimitSetAcquisition:
        """``acquire`` for async code: the granting set's held acquisition, without blocking the event loop."""
        return await PoolAcquisition(self._candidates(requested), requested, check_timeout(timeout)).__aenter__()

    def try_acquire(self, requested: Optional[Mapping[str, float]] = None) -> LimitSetAcquisition:
        """Units from the first set, in this turn's order, that grants them at once, without waiting.

        Not granted anywhere: the chosen set's refused acquisition (falsy,
        ``successful`` False, holding nothing).
        """
        return _try_in_turn(self._candidates(requested), requested)

    async def try_acquire_async(self, requested: Optional[Mapping[str, float]] = None) -> LimitSetAcquisition:
        """``try_acquire`` for async code: it never blocks the event loop, also when the holders are remote."""
        return await _try_in_turn_async(self._candidates(requested), requested)

    def _candidates(self, requested: Optional[Mapping[str, float]]) -> list[LimitSet]:
        """The sets that could ever grant ``requested``, this turn's choice first; else the chosen set's ConfigError."""
        fitting, refusal = [], None
        for limit_set in self._rotation():
            try:
                limit_set.amounts(requested)
            except ConfigError as error:
                refusal = refusal or error
            else:
                fitting.append(limit_set)
        if not fitting:
            raise refusal
        return fitting

    def _rotation(self) -> tuple[LimitSet, ...]:
        """Every set, starting with the one this turn's choice picks."""
        sets = self.limit_sets
        with self._lock:
            self._dispatched += 1
            start = (self.worker_index + self._balancer.pick(len(sets), None)) % len(sets)
        return sets[start:] + sets[:start]

    # ----- stats, workers, pickling ---------------------------------------------------
    def get_stats(self) -> dict:
        """The pool's choices so far and each set's stats (``limit_sets``, in order)."""
        with self._lock:
            dispatched = self._dispatched
        algorithm = self.load_balancing.name
        return {
            "num_limit_sets": len(self.limit_sets),
            "load_balancing": algorithm,
            "worker_index": self.worker_index,
            "balancer_stats": {"algorithm": algorithm, "offset": self.worker_index, "total_dispatched": dispatched},
            "limit_sets": [limit_set.get_stats() for limit_set in self.limit_sets],
        }

    def __getitem__(self, index: int) -> LimitSet:
        """The set at ``index`` (its limits by key: ``pool[0]["tokens"]``)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"LimitPool indices are integers (got {index!r}); the sets may have different keys: use pool[i][key]"
            )
        return self.limit_sets[index]

    def reaches(self, mode: str) -> bool:
        """Whether workers of a pool in ``mode`` can use every set."""
        return all(limit_set.reaches(mode) for limit_set in self.limit_sets)

    def for_worker(self) -> "LimitPool":
        """The copy one worker sees: each set as that worker should see it, its round robin one set further on."""
        return LimitPool([s.for_worker() for s in self.limit_sets], self.load_balancing, self._next_worker_index())

    def release_owned(self) -> None:
        """Nothing to remove: the sets belong to whoever built them."""

    def _next_worker_index(self) -> int:
        return self.worker_index + next(self._copies)

    def __reduce__(self):
        return (LimitPool, (self.limit_sets, self.load_balancing, self._next_worker_index()))

    def __repr__(self) -> str:
        return f"<LimitPool {self.load_balancing.name} worker_index={self.worker_index} {list(self.limit_sets)}>"

    def _repr_html_(self) -> str:
        """The pool of sets as small tables in a notebook: how it chooses, and each set's usage per key."""
        known = {"num_limit_sets": len(self.limit_sets), "load_balancing": self.load_balancing.name}
        return limits_html("LimitPool", {**known, **read_stats(self.get_stats)})


class PoolAcquisition:
    """What ``LimitPool.acquire`` returns: entering it gives the granting set's LimitSetAcquisition.

    Entering asks the candidate sets in turn without waiting and keeps the
    first grant; if none grants, it waits on the first candidate (the chosen
    set). Leaving the block releases the units.
    """

    __slots__ = ("candidates", "requested", "timeout", "held")

    def __init__(
        self, candidates: list[LimitSet], requested: Optional[Mapping[str, float]], timeout: Optional[float]
    ) -> None:
        self.candidates = candidates
        self.requested = requested
        self.timeout = timeout
        self.held: Optional[LimitSetAcquisition] = None

    def __enter__(self) -> LimitSetAcquisition:
        acquisition = _try_in_turn(self.candidates, self.requested)
        if not acquisition:
            acquisition = self.candidates[0].acquire(self.requested, self.timeout).__enter__()
        self.held = acquisition
        return acquisition

    async def __aenter__(self) -> LimitSetAcquisition:
        acquisition = await _try_in_turn_async(self.candidates, self.requested)
        if not acquisition:
            acquisition = await self.candidates[0].acquire(self.requested, self.timeout).__aenter__()
        self.held = acquisition
        return acquisition

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.release()

    def release(self) -> None:
        """Give the units back now (leaving the block does this)."""
        held, self.held = self.held, None
        if held is not None:
            held.release()

    def __repr__(self) -> str:
        return f"<PoolAcquisition {self.requested} from {len(self.candidates)} sets, {'held' if self.held else 'not held'}>"


def _try_in_turn(candidates: list[LimitSet], requested: Optional[Mapping[str, float]]) -> LimitSetAcquisition:
    """Ask each set in turn without waiting: the first grant, else the first set's refusal (falsy)."""
    refusals = []
    for limit_set in candidates:
        acquisition = limit_set.try_acquire(requested)
        if acquisition:
            return acquisition
        refusals.append(acquisition)
    return refusals[0]


async def _try_in_turn_async(candidates: list[LimitSet], requested: Optional[Mapping[str, float]]) -> LimitSetAcquisition:
    """``_try_in_turn`` without blocking the event loop (remote holders are asked asynchronously)."""
    refusals = []
    for limit_set in candidates:
        acquisition = await limit_set.try_acquire_async(requested)
        if acquisition:
            return acquisition
        refusals.append(acquisition)
    return refusals[0]


def _check_sets(limit_sets: Any) -> tuple[LimitSet, ...]:
    """The sets as a tuple: a non-empty list of LimitSets; ConfigError otherwise."""
    if isinstance(limit_sets, (LimitSet, str)) or not isinstance(limit_sets, Sequence) or not limit_sets:
        raise ConfigError(
            f"limit_sets={limit_sets!r} must be a non-empty list of LimitSets, "
            "e.g. LimitPool(limit_sets=[LimitSet([...], shared=True, config={'region': 'us'}), ...])"
        )
    for limit_set in limit_sets:
        if not isinstance(limit_set, LimitSet):
            raise ConfigError(f"limit_sets contains {limit_set!r}; every item must be a LimitSet")
    return tuple(limit_sets)
