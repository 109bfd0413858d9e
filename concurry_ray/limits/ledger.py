"""The ledger: one budget (a meter per key) and the queue of requests waiting for it.

Every holder, whatever the mode, keeps its budget in a :class:`Ledger`. A request
asks for some units of several keys at once and is granted all of them or none.
Waiting is first-come first-served per key: a request is never overtaken by a
later one that wants any of the same keys, so nobody starves, while requests on
other keys go ahead. Nothing polls: a release grants waiters at once, and when
only time can help (a rate limit) an :class:`~.wakeup.Alarm` fires at the exact
moment the first waiter fits. Callers are told through the ``notify`` callback
they pass, always outside the ledger's lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

from .algorithms import Meter, Receipt, meter_for
from .wakeup import Alarm


class Grant:
    """Units granted to one request: the ``amounts`` asked for and a receipt per key."""

    __slots__ = ("amounts", "receipts")

    def __init__(self, amounts: Mapping[str, float], receipts: dict[str, Receipt]) -> None:
        self.amounts = amounts
        self.receipts = receipts


class Waiter:
    """A request in the queue; ``grant`` is set when it is granted, before ``notify`` runs."""

    __slots__ = ("amounts", "notify", "grant")

    def __init__(self, amounts: Mapping[str, float], notify: Callable[[Grant], None]) -> None:
        self.amounts = amounts
        self.notify = notify
        self.grant: Optional[Grant] = None


class Ledger:
    """The budget of one LimitSet, safe to use from many threads."""

    def __init__(self, limits: Sequence, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = {limit.key: limit for limit in limits}
        self._meters: dict[str, Meter] = {key: meter_for(limit) for key, limit in self.limits.items()}
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[Waiter] = deque()
        self._waiting: dict[str, int] = {}
        self._alarm = Alarm(self._wake, clock)
        self.granted = 0

    # ----- requesting -------------------------------------------------------
    def try_take(self, amounts: Mapping[str, float]) -> Optional[Grant]:
        """Grant ``amounts`` now if nobody waits for those keys and they fit; else None."""
        with self._lock:
            return self._take_now(amounts)

    def request(self, amounts: Mapping[str, float], notify: Callable[[Grant], None]) -> Union[Grant, Waiter]:
        """A Grant at once, or a Waiter whose ``notify(grant)`` is called when it is granted."""
        with self._lock:
            grant = self._take_now(amounts)
            if grant is not None:
                return grant
            waiter = Waiter(amounts, notify)
            blocked = not self._waiting.keys().isdisjoint(amounts)
            self._queue.append(waiter)
            _count(self._waiting, amounts, +1)
            if not blocked:
                self._alarm_for(waiter, self._clock())
            return waiter

    def cancel(self, waiter: Waiter) -> Optional[Grant]:
        """Withdraw a waiter; returns its Grant instead if it was granted meanwhile."""
        with self._lock:
            if waiter.grant is not None:
                return waiter.grant
            self._queue.remove(waiter)
            _count(self._waiting, waiter.amounts, -1)
            granted = self._pump(self._clock())
        _notify(granted)
        return None

    def release(self, grant: Grant, usage: Optional[Mapping[str, float]] = None) -> None:
        """End an acquisition: resources return, unused rate units are refunded where possible."""
        with self._lock:
            now = self._clock()
            for key, receipt in grant.receipts.items():
                used = receipt.amount if usage is None else usage.get(key, receipt.amount)
                self._meters[key].finish(receipt, used, now)
            granted = self._pump(now) if self._queue else ()
        _notify(granted)

    def adopt(self, amounts: Mapping[str, float]) -> Optional[Grant]:
        """Count units granted by a previous incarnation of this holder (after a restart).

        None, counting nothing, if they no longer fit: a lease reported after
        the grace period may find its resources given to others meanwhile, and
        a capacity is never exceeded.
        """
        with self._lock:
            meters = self._meters
            if not all(meters[key].restorable(amount) for key, amount in amounts.items()):
                return None
            return Grant(amounts, {key: meters[key].restore(amount) for key, amount in amounts.items()})

    def saturate(self, grace: float) -> None:
        """Start conservatively after a restart: rates as if just used up, resources closed for ``grace`` s."""
        with self._lock:
            now = self._clock()
            for meter in self._meters.values():
                meter.saturate(now, grace)

    # ----- inside the lock ---------------------------------------------------
    def _take_now(self, amounts: Mapping[str, float]) -> Optional[Grant]:
        if self._queue and not self._waiting.keys().isdisjoint(amounts):
            return None
        now = self._clock()
        meters = self._meters
        for key, amount in amounts.items():
            if meters[key].delay(amount, now) > 0:
                return None
        return self._take(amounts, now)

    def _take(self, amounts: Mapping[str, float], now: float) -> Grant:
        self.granted += 1
        meters = self._meters
        return Grant(amounts, {key: meters[key].take(amount, now) for key, amount in amounts.items()})

    def _delay(self, amounts: Mapping[str, float], now: float) -> float:
        return max((self._meters[key].delay(amount, now) for key, amount in amounts.items()), default=0.0)

    def _alarm_for(self, waiter: Waiter, now: float) -> None:
        delay = self._delay(waiter.amounts, now)
        if delay < math.inf:
            self._alarm.at(now + delay)

    def _pump(self, now: float) -> list[Waiter]:
        """Grant every waiter that is first in line for all its keys and fits; set the alarm."""
        blocked: set[str] = set()
        granted: list[Waiter] = []
        still: deque[Waiter] = deque()
        soonest = math.inf
        for waiter in self._queue:
            keys = waiter.amounts.keys()
            if blocked.isdisjoint(keys):
                delay = self._delay(waiter.amounts, now)
                if delay <= 0:
                    waiter.grant = self._take(waiter.amounts, now)
                    _count(self._waiting, keys, -1)
                    granted.append(waiter)
                    continue
                soonest = min(soonest, delay)
            blocked.update(keys)
            still.append(waiter)
        self._queue = still
        if soonest < math.inf:
            self._alarm.at(now + soonest)
        return granted

    def _wake(self) -> None:
        with self._lock:
            granted = self._pump(self._clock())
        _notify(granted)

    # ----- reporting -----------------------------------------------------------
    def stats(self) -> dict:
        """Per key: kind, capacity, units in use and available, requests waiting; plus totals."""
        with self._lock:
            now = self._clock()
            keys = {key: self._key_stats(key, now) for key in self.limits}
            return {"limits": keys, "waiting": len(self._queue), "granted": self.granted}

    def _key_stats(self, key: str, now: float) -> dict:
        limit, meter = self.limits[key], self._meters[key]
        available = meter.available(now)
        stats = {
            "kind": limit.kind,
            "capacity": limit.capacity,
            "used": limit.capacity - available,
            "available": available,
            "waiting": self._waiting.get(key, 0),
        }
        if limit.kind != "resource":
            stats.update(window_seconds=limit.window_seconds, algorithm=limit.algorithm)
        return stats


def _count(counts: dict[str, int], keys: Iterable[str], step: int) -> None:
    for key in keys:
        value = counts.get(key, 0) + step
        if value:
            counts[key] = value
        else:
            del counts[key]


def _notify(granted: Iterable[Waiter]) -> None:
    for waiter in granted:
        waiter.notify(waiter.grant)
