"""LimitSet, the object a worker sees as ``self.limits``, and its acquisitions."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from ..errors import ConfigError, closest
from ..modes import canonical_mode, limits_holder
from .holders import Holder, PrivateHolder
from .models import CALL_KEY, Limit, check_limits

class LimitSet:
    """A budget of rate, call and resource limits that workers draw from together.

    A LimitSet groups limits -- ``RateLimit`` (units per time window),
    ``CallLimit`` (calls per time window) and ``ResourceLimit`` (units held at
    once) -- and lets code take several of them in one step::

        with self.limits.acquire(requested={"tokens": 500, "connections": 1}) as acq:
            reply = call_model(prompt)
            acq.update(usage={"tokens": reply.tokens_used})

    ``acquire`` waits until every requested unit is available (plus one call
    for each CallLimit), first come first served per key, and returns them all
    at once; the block then runs, and on leaving it resources come back and
    unused rate units (those ``update`` reported as not used) are refunded. An
    exception in the block propagates unchanged and still releases everything.
    ``try_acquire`` does not wait; ``async with`` works in async methods.

    Who shares the budget:

    * ``limits=[...]`` on ``Worker.options()`` builds one shared set for the
      whole pool, held where the pool's mode needs it.
    * ``LimitSet(limits, shared=True, mode=...)`` is one budget for every pool it
      is given to. ``mode`` says where it is held: ``"thread"`` (also ``"sync"``,
      ``"asyncio"``) in this process, ``"process"`` in this process but reachable
      from worker processes, ``"ray"`` in a detached Ray actor reachable from the
      whole cluster.
    * ``name="..."`` (with ``shared=True``) makes the budget findable: every
      LimitSet built with that name -- in this process, or in Ray mode in any
      driver, job or Serve replica of the cluster -- shares it. Named sets
      outlive pools; ``remove()`` deletes one.
    * ``shared=False`` is a private budget: each worker (and each copy sent to
      another process) gets a fresh one of its own.

    Limits hold under any concurrency, slots held by a worker that dies are
    released, and ``get_stats()`` shows usage per key.
    """

    def __init__(self, limits: Sequence[Limit], shared: bool = False, mode: str = "thread", name: Optional[str] = None) -> None:
        limits = check_limits(limits)
        mode = canonical_mode(mode)
        if name is not None and not (isinstance(name, str) and name and shared):
            raise ConfigError(f"name={name!r} needs shared=True and a non-empty string: a name is how others find a shared budget")
        self._bind(limits, bool(shared), mode, name, _open_holder(limits, bool(shared), mode, name))

    def _bind(self, limits: tuple, shared: bool, mode: str, name: Optional[str], holder: Holder) -> None:
        self.limits, self.shared, self.mode, self.name = limits, shared, mode, name
        self._capacity = {limit.key: limit.capacity for limit in limits}
        self._owned = False
        self._holder = holder

    # ----- acquiring ---------------------------------------------------------------
    def acquire(self, requested: Optional[Mapping[str, float]] = None, timeout: Optional[float] = None) -> "Acquisition":
        """An acquisition of ``requested`` units per key, to use as ``with`` or ``async with``.

        Entering it waits (at most ``timeout`` seconds, then ``TimeoutError``)
        until all units are granted. Unknown keys and amounts above a key's
        capacity raise ``ConfigError`` at once, naming the key.
        """
        if timeout is not None and not _within(timeout, math.inf):
            raise ConfigError(f"timeout={timeout!r} must be None (wait as long as needed) or a number of seconds >= 0")
        return Acquisition(self, self._amounts(requested), timeout)

    def try_acquire(self, requested: Optional[Mapping[str, float]] = None) -> Optional["Acquisition"]:
        """Take ``requested`` now if it is available without waiting; else None.

        The acquisition returned is already held: use it in a ``with`` block (or
        call ``release()``) to give it back.
        """
        acquisition = Acquisition(self, self._amounts(requested), 0)
        acquisition._grant = self._holder.acquire(acquisition.requested, 0)
        return acquisition if acquisition._grant is not None else None

    def _amounts(self, requested: Optional[Mapping[str, float]]) -> dict:
        amounts = dict(requested) if requested else {}
        capacity = self._capacity
        for key, amount in amounts.items():
            if key not in capacity:
                raise ConfigError(self._unknown(key))
            if not _within(amount, capacity[key]):
                raise ConfigError(
                    f"requested {key!r}={amount!r}: it must be a number from 0 to the key's capacity "
                    f"{capacity[key]:g} (more could never be granted)"
                )
        if CALL_KEY in capacity:
            if amounts.get(CALL_KEY, 1) != 1:
                raise ConfigError(f"requested {CALL_KEY!r}={amounts[CALL_KEY]!r}: each acquire counts exactly one call")
            amounts[CALL_KEY] = 1
        return amounts

    def _unknown(self, key: Any) -> str:
        if not self._capacity:
            return (
                f"unknown limit key {key!r}: this LimitSet has no limits "
                "(give the worker limits=[...] in .options() to use self.limits)"
            )
        return f"unknown limit key {key!r}{closest(key, self._capacity)}; this LimitSet has: {', '.join(self._capacity)}"

    def _timed_out(self, acquisition: "Acquisition") -> TimeoutError:
        return TimeoutError(
            f"could not acquire {acquisition.requested} within {acquisition.timeout} s from {self!r}; "
            "raise the timeout or the limits, or request less"
        )

    # ----- stats and lifetime ---------------------------------------------------------
    def get_stats(self) -> dict:
        """Usage per key: ``{"limits": {key: {kind, capacity, used, available, waiting, ...}}, "waiting", "granted", ...}``."""
        return {"mode": self.mode, "shared": self.shared, "name": self.name, **self._holder.stats()}

    @property
    def keys(self) -> tuple[str, ...]:
        """The limit keys of this set."""
        return tuple(self._capacity)

    def remove(self) -> None:
        """Delete the holder and its budget (for a named set: for everyone using the name)."""
        self._holder.close()

    def release_owned(self) -> None:
        """Remove the holder if a pool made it (the pool calls this when it stops)."""
        if self._owned:
            self._holder.close()

    def reaches(self, mode: str) -> bool:
        """Whether workers of a pool in ``mode`` can use this set."""
        return canonical_mode(mode) in self._holder.reaches

    def for_worker(self) -> "LimitSet":
        """The set one worker should see: itself when shared, a fresh private copy otherwise."""
        if self.shared:
            return self
        return LimitSet(self.limits)

    def __reduce__(self):
        return (_rebuild, (self.limits, self.shared, self.mode, self.name, self._holder))

    def __repr__(self) -> str:
        keys = ", ".join(self._capacity) or "no limits"
        where = f"shared, mode={self.mode!r}" if self.shared else "private"
        named = f", name={self.name!r}" if self.name else ""
        return f"<LimitSet [{keys}] {where}{named}>"


def _within(value: Any, upper: float) -> bool:
    """Whether ``value`` is a number from 0 to ``upper``."""
    try:
        return 0 <= value <= upper
    except TypeError:
        return False


def _open_holder(limits: tuple, shared: bool, mode: str, name: Optional[str]) -> Holder:
    if not shared:
        return PrivateHolder.fresh(limits)
    return limits_holder(mode)(limits, name)


def _rebuild(limits: tuple, shared: bool, mode: str, name: Optional[str], holder: Holder) -> LimitSet:
    limit_set = LimitSet.__new__(LimitSet)
    limit_set._bind(limits, shared, mode, name, holder)
    return limit_set


class Acquisition:
    """Units requested from a LimitSet, held from entering the block to leaving it.

    ``requested`` is what was asked (including one ``call_count`` per CallLimit);
    ``update(usage=...)`` reports what was really used, so unused rate units can
    be refunded. Without ``update`` usage equals the request.
    """

    __slots__ = ("_limits", "requested", "timeout", "usage", "_grant")

    def __init__(self, limits: LimitSet, requested: dict, timeout: Optional[float]) -> None:
        self._limits = limits
        self.requested = requested
        self.timeout = timeout
        self.usage: Optional[dict] = None
        self._grant: Any = None

    def __enter__(self) -> "Acquisition":
        if self._grant is None:
            self._grant = self._limits._holder.acquire(self.requested, self.timeout)
            if self._grant is None:
                raise self._limits._timed_out(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    async def __aenter__(self) -> "Acquisition":
        if self._grant is None:
            self._grant = await self._limits._holder.acquire_async(self.requested, self.timeout)
            if self._grant is None:
                raise self._limits._timed_out(self)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.release()

    def update(self, usage: Mapping[str, float]) -> None:
        """Report the units really used (each between 0 and the amount requested)."""
        for key, used in usage.items():
            if key not in self.requested:
                raise ConfigError(f"usage of {key!r} was reported but it was not requested (requested: {self.requested})")
            if not _within(used, self.requested[key]) or (key == CALL_KEY and used != 1):
                raise ConfigError(
                    f"usage {key!r}={used!r} must be a number from 0 to the {self.requested[key]:g} requested"
                    + (" (each acquire counts exactly one call)" if key == CALL_KEY else "")
                )
        self.usage = {**(self.usage or {}), **usage}

    def release(self) -> None:
        """Give the units back now (leaving the ``with`` block does this)."""
        grant, self._grant = self._grant, None
        if grant is not None:
            self._limits._holder.release(grant, self.usage)

    def __repr__(self) -> str:
        state = "held" if self._grant is not None else "not held"
        return f"<Acquisition {self.requested} {state}>"


def pool_limits(limits: Any, mode: str) -> Optional[LimitSet]:
    """The LimitSet a pool's workers share, from the ``limits=`` option.

    None: no limits. A list of limits: one shared set for the whole pool, held
    where ``mode`` needs it and removed when the pool stops. A LimitSet: used as
    given (it must reach workers of ``mode``).
    """
    if check_limits_option(limits) is None:
        return None
    if isinstance(limits, LimitSet):
        if not limits.reaches(mode):
            raise ConfigError(
                f"limits={limits!r} cannot be reached from workers in mode {mode!r}; "
                "build it with mode='ray' (any worker) or with the pool's mode"
            )
        return limits
    limit_set = LimitSet(limits, shared=True, mode=mode)
    limit_set._owned = True
    return limit_set


def check_limits_option(limits: Any) -> Any:
    """``limits`` unchanged if it is a valid ``limits=`` option (None, a LimitSet, a list of limits)."""
    if limits is None or isinstance(limits, LimitSet):
        return limits
    if isinstance(limits, (list, tuple)):
        check_limits(limits)
        return limits
    raise ConfigError(
        f"limits={limits!r} is not allowed: pass a list of CallLimit/RateLimit/ResourceLimit "
        "(one budget shared by the pool) or a LimitSet"
    )


_EMPTY: Optional[LimitSet] = None


def empty_limits() -> LimitSet:
    """The LimitSet of a worker without limits: acquiring any key raises, naming it."""
    global _EMPTY
    if _EMPTY is None:
        _EMPTY = LimitSet([])
    return _EMPTY
