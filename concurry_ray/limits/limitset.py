"""LimitSet, the object a worker sees as ``self.limits``, and its acquisitions (``LimitSetAcquisition``)."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any, Mapping, Optional, Sequence

from ..display import limits_html, read_stats
from ..errors import ConfigError, closest
from ..modes import canonical_mode, limits_holder
from ..metrics import waiting
from ..tracing import acquiring
from .holders import Holder, PoolOwner, PrivateHolder, usage_label
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
    ``try_acquire`` does not wait (its acquisition's ``successful`` says whether
    it was granted); ``async with`` works in async methods.

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

    ``config`` is metadata carried by the set -- an account, a region, an
    endpoint -- and handed to every acquisition as ``acq.config``; it travels
    with the set to worker processes and Ray actors. Several sets with
    different configs make a :class:`~concurry_ray.LimitPool`.

    Limits hold under any concurrency, slots held by a worker that dies are
    released, and ``get_stats()`` shows usage per key.
    """

    def __init__(
        self,
        limits: Sequence[Limit],
        shared: bool = False,
        mode: str = "thread",
        name: Optional[str] = None,
        config: Optional[Mapping[str, Any]] = None,
    ) -> None:
        limits = check_limits(limits)
        mode = canonical_mode(mode)
        if name is not None and not (isinstance(name, str) and name and shared):
            raise ConfigError(f"name={name!r} needs shared=True and a non-empty string: a name is how others find a shared budget")
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"config={config!r} must be a dict of metadata, e.g. config={{'region': 'us-east-1'}}")
        holder = _open_holder(limits, bool(shared), mode, name)
        self._bind(limits, bool(shared), mode, name, holder, dict(config or {}))

    def _bind(self, limits: tuple, shared: bool, mode: str, name: Optional[str], holder: Holder, config: dict,
              label: Optional[str] = None) -> None:
        self.limits, self.shared, self.mode, self.name, self.config = limits, shared, mode, name, config
        self._label = label or usage_label(name, None)  # the set's tag in metrics
        self._capacity = {limit.key: limit.capacity for limit in limits}
        self._resource_keys = tuple(limit.key for limit in limits if limit.kind == "resource")
        self._owned = False
        self._holder = holder

    @classmethod
    def for_pool(cls, limits: Sequence[Limit], mode: str, owner: Optional[PoolOwner] = None) -> "LimitSet":
        """The shared set a pool builds from ``limits=[...]`` (``owner``: the named pool it is for);
        ``release_owned()`` removes it when the pool stops."""
        limits, mode = check_limits(limits), canonical_mode(mode)
        limit_set = cls.__new__(cls)
        holder = limits_holder(mode)(limits, None, owner)
        limit_set._bind(limits, True, mode, None, holder, {}, usage_label(None, owner))
        limit_set._owned = True
        return limit_set

    # ----- acquiring ---------------------------------------------------------------
    def acquire(self, requested: Optional[Mapping[str, float]] = None, timeout: Optional[float] = None) -> "LimitSetAcquisition":
        """Take ``requested`` units per key, waiting until all are granted; use it as ``with`` or ``async with``.

        Outside an event loop the units are taken here, as in concurry, so
        ``acq = limits.acquire(...)`` ... ``acq.release()`` works too; inside a
        running event loop nothing is taken until ``async with`` (which never
        blocks the loop). Waits at most ``timeout`` seconds, then raises
        ``TimeoutError``. Unknown keys and amounts above a key's capacity raise
        ``ConfigError`` at once, naming the key.
        """
        acquisition = LimitSetAcquisition(self, self.amounts(requested), check_timeout(timeout))
        return acquisition if in_event_loop() else acquisition.__enter__()

    async def async_acquire(
        self, requested: Optional[Mapping[str, float]] = None, timeout: Optional[float] = None
    ) -> "LimitSetAcquisition":
        """``acquire`` for async code: the held acquisition, waited for without blocking the event loop."""
        return await LimitSetAcquisition(self, self.amounts(requested), check_timeout(timeout)).__aenter__()

    def try_acquire(self, requested: Optional[Mapping[str, float]] = None) -> "LimitSetAcquisition":
        """Take ``requested`` now if it is available, without waiting.

        The acquisition's ``successful`` (also its truth value) says whether it
        was granted. A granted one is already held: use it in a ``with`` block
        (or call ``release()``) to give it back. A refused one holds nothing;
        entering or releasing it does nothing.
        """
        acquisition = LimitSetAcquisition(self, self.amounts(requested), 0)
        acquisition._settle(self._holder.acquire(acquisition._asked, 0))
        return acquisition

    async def try_acquire_async(self, requested: Optional[Mapping[str, float]] = None) -> "LimitSetAcquisition":
        """``try_acquire`` for async code: it never blocks the event loop, also when the holder is remote."""
        acquisition = LimitSetAcquisition(self, self.amounts(requested), 0)
        acquisition._settle(await self._holder.acquire_async(acquisition._asked, 0))
        return acquisition

    def amounts(self, requested: Optional[Mapping[str, float]] = None) -> dict:
        """The units an acquire of ``requested`` takes per key.

        As in concurry, each CallLimit counts one call and each ResourceLimit
        not named takes one unit (name it with 0 to take none); rate limits not
        named take nothing.

        ConfigError naming the key if a key is unknown or an amount could never be granted.
        """
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
        for key in self._resource_keys:
            amounts.setdefault(key, 1)
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

    def _timed_out(self, acquisition: "LimitSetAcquisition") -> TimeoutError:
        return TimeoutError(
            f"could not acquire {acquisition.requested} within {acquisition.timeout} s from {self!r}; "
            "raise the timeout or the limits, or request less"
        )

    # ----- stats and lifetime ---------------------------------------------------------
    def get_stats(self) -> dict:
        """Usage per key: ``{"limits": {key: {kind, capacity, used, available, waiting, ...}}, "waiting", "granted", ...}``."""
        return {**self._where(), "config": dict(self.config), **self._holder.stats()}

    def _where(self) -> dict:
        return {"mode": self.mode, "shared": self.shared, "name": self.name}

    @property
    def keys(self) -> tuple[str, ...]:
        """The limit keys of this set."""
        return tuple(self._capacity)

    def __getitem__(self, key: str) -> Limit:
        """The limit of ``key`` (KeyError naming the keys there are)."""
        for limit in self.limits:
            if limit.key == key:
                return limit
        raise KeyError(self._unknown(key))

    def remove(self) -> None:
        """Delete the holder and its budget (for a named set: for everyone using the name)."""
        self._holder.close()

    def release_owned(self) -> None:
        """Remove the holder if a pool made it (the pool calls this when it stops)."""
        if self._owned:
            self._holder.close()

    def reaches(self, mode: str) -> bool:
        """Whether workers of a pool in ``mode`` can use this set."""
        return self._holder.reaches(canonical_mode(mode))

    def for_worker(self) -> "LimitSet":
        """The set one worker should see: itself when shared, a fresh private copy otherwise."""
        if self.shared:
            return self
        return LimitSet(self.limits, config=self.config)

    def __reduce__(self):
        return (_rebuild, (self.limits, self.shared, self.mode, self.name, self._holder, self.config, self._label))

    def __repr__(self) -> str:
        keys = ", ".join(self._capacity) or "no limits"
        where = f"shared, mode={self.mode!r}" if self.shared else "private"
        named = f", name={self.name!r}" if self.name else ""
        return f"<LimitSet [{keys}] {where}{named}>"

    def _repr_html_(self) -> str:
        """The set as a small table in a notebook: where it is held, and per key the units used
        of its capacity and the requests waiting (the ``config``, which may hold secrets, is left out)."""
        return limits_html("LimitSet", {**self._where(), **read_stats(self.get_stats)})


def check_timeout(timeout: Optional[float]) -> Optional[float]:
    """``timeout`` as holders take it: None for no limit (also ``inf`` and anything too long to wait out).

    ConfigError unless ``timeout`` is None or a number of seconds >= 0.
    """
    if timeout is not None and not _within(timeout, math.inf):
        raise ConfigError(f"timeout={timeout!r} must be None (wait as long as needed) or a number of seconds >= 0")
    return None if timeout is None or timeout >= threading.TIMEOUT_MAX else timeout


def in_event_loop() -> bool:
    """Whether this thread is running an event loop (where a blocking wait would stall it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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


def _rebuild(limits: tuple, shared: bool, mode: str, name: Optional[str], holder: Holder, config: dict,
             label: str) -> LimitSet:
    limit_set = LimitSet.__new__(LimitSet)
    limit_set._bind(limits, shared, mode, name, holder, config, label)
    return limit_set


class LimitSetAcquisition:
    """Units requested from a LimitSet, held from entering the block to leaving it.

    ``LimitSet.acquire`` returns one not held yet: entering it (``with`` or
    ``async with``) waits for the units. ``LimitSet.try_acquire`` returns one
    already decided: ``successful`` -- also its truth value -- says whether it
    was granted; a refused one holds nothing, and entering or releasing it does
    nothing.

    ``requested`` is what was asked (including one ``call_count`` per
    CallLimit); ``update(usage=...)`` reports what was really used, so unused
    rate units can be refunded. Without ``update`` usage equals the request.
    ``config`` is a copy of the set's ``config`` and ``limit_set`` the set
    itself: with a :class:`~concurry_ray.LimitPool`, the set that granted.
    (``Acquisition`` is another name of this class.)
    """

    __slots__ = ("limit_set", "requested", "timeout", "usage", "_grant", "_granted", "_config", "_asked")

    def __init__(self, limit_set: LimitSet, requested: dict, timeout: Optional[float]) -> None:
        self.limit_set = limit_set
        self.requested = requested
        self._asked = {key: amount for key, amount in requested.items() if amount}  # a zero waits for nobody
        self.timeout = timeout
        self.usage: Optional[dict] = None
        self._grant: Any = None
        self._granted: Optional[bool] = None  # None until asked; then whether the units were granted
        self._config: Optional[dict] = None

    @property
    def successful(self) -> bool:
        """Whether the units were granted (still True after they were released)."""
        return self._granted is True

    def __bool__(self) -> bool:
        return self._granted is True

    @property
    def config(self) -> dict:
        """A copy of the LimitSet's ``config`` (the account, region, ... of the set that granted)."""
        if self._config is None:
            self._config = dict(self.limit_set.config)
        return self._config

    def _settle(self, grant: Any) -> None:
        """Record the holder's answer to a request that did not wait: a grant, or None (refused)."""
        self._grant = grant
        self._granted = grant is not None

    def _must_ask(self) -> bool:
        return self._grant is None and self._granted is not False

    def __enter__(self) -> "LimitSetAcquisition":
        if self._must_ask():
            with acquiring(self.requested), waiting(self.limit_set._label, self.requested):
                self._hold(self.limit_set._holder.acquire(self._asked, self.timeout))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    async def __aenter__(self) -> "LimitSetAcquisition":
        if self._must_ask():
            with acquiring(self.requested), waiting(self.limit_set._label, self.requested):
                self._hold(await self.limit_set._holder.acquire_async(self._asked, self.timeout))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.release()

    def _hold(self, grant: Any) -> None:
        if grant is None:
            raise self.limit_set._timed_out(self)
        self._settle(grant)

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
        """Give the units back now (leaving the ``with`` block does this; a refused acquisition has none)."""
        grant, self._grant = self._grant, None
        if grant is not None:
            self.limit_set._holder.release(grant, self.usage)

    def __repr__(self) -> str:
        state = "held" if self._grant is not None else "refused" if self._granted is False else "not held"
        return f"<LimitSetAcquisition {self.requested} {state}>"


Acquisition = LimitSetAcquisition


_EMPTY: Optional[LimitSet] = None



def empty_limits() -> LimitSet:
    """The LimitSet of a worker without limits: acquiring any key raises, naming it."""
    global _EMPTY
    if _EMPTY is None:
        _EMPTY = LimitSet([])
    return _EMPTY
