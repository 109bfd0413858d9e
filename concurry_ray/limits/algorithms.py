"""Rate algorithms and the resource counter: pure state machines over one key.

A *meter* keeps the state of one limit key. It never reads a clock: every method
takes ``now`` (seconds, from any monotonic clock), so the same code runs in a
thread, in a limits server and in tests on a fake clock. The ledger asks

    delay(amount, now)      0 if ``amount`` can be granted now, else how long until it
                            can (inf when only a release can make room)
    take(amount, now)       record a grant; returns a Receipt
    finish(receipt, used)   the acquisition ended having used ``used`` units: give the
                            rest back where the algorithm allows it (resources: all)
    available(now)          units that could be granted now (for stats)
    saturate(now, grace)    start conservatively after a restart: as if everything had
                            just been used
    restorable(amount)      whether a grant made before a restart still fits
    restore(amount)         count such a grant

Each algorithm keeps its promise however requests and refunds interleave; the
property tests in ``tests/test_limits_algorithms.py`` check it on a fake clock.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque

from ..enums import RateLimitAlgorithm

EPS = 1e-9


class Receipt:
    """One grant on one key: its amount and one algorithm-specific mark."""

    __slots__ = ("amount", "mark")

    def __init__(self, amount: float, mark: float) -> None:
        self.amount = amount
        self.mark = mark


class Meter(ABC):
    """State of one limit key; see the module docstring."""

    def __init__(self, capacity: float, window: float = math.inf) -> None:
        self.capacity = capacity
        self.window = window
        self._slack = EPS * capacity

    @abstractmethod
    def delay(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` could be granted (0: now; inf: only after a release)."""

    @abstractmethod
    def take(self, amount: float, now: float) -> Receipt:
        """Grant ``amount`` now (the caller checked ``delay`` is 0)."""

    @abstractmethod
    def finish(self, receipt: Receipt, used: float, now: float) -> None:
        """The acquisition behind ``receipt`` ended having used ``used`` of its amount."""

    @abstractmethod
    def available(self, now: float) -> float:
        """Units that could be granted now."""

    @abstractmethod
    def saturate(self, now: float, grace: float) -> None:
        """Behave as if the whole capacity had just been used (after a holder restart)."""

    def restorable(self, amount: float) -> bool:
        """Whether ``restore(amount)`` keeps the promise (rate meters: always, being saturated)."""
        return True

    def restore(self, amount: float) -> Receipt:
        """Count a grant made before a restart; rate meters are saturated instead."""
        return Receipt(0.0, -math.inf)


class Bucket(Meter):
    """Shared shape of token bucket and GCRA: a level refilled at ``capacity/window`` per second.

    A refund gives back unused units only as far as the level would really have
    been higher had the request been smaller: each open receipt remembers the
    highest level seen since its grant, and tokens the bucket would have spilt
    over its capacity meanwhile are not returned.
    """

    def __init__(self, capacity: float, window: float) -> None:
        super().__init__(capacity, window)
        self.rate = capacity / window
        self._open: set[Receipt] = set()

    @abstractmethod
    def level(self, now: float) -> float:
        """Units in the bucket now."""

    @abstractmethod
    def _add(self, units: float, now: float) -> None:
        """Change the level by ``units`` (negative: take)."""

    def delay(self, amount: float, now: float) -> float:
        missing = amount - self.level(now)
        return 0.0 if missing <= self._slack else missing / self.rate

    def take(self, amount: float, now: float) -> Receipt:
        self._observe(self.level(now))
        self._add(-amount, now)
        receipt = Receipt(amount, self.level(now))
        self._open.add(receipt)
        return receipt

    def finish(self, receipt: Receipt, used: float, now: float) -> None:
        self._observe(self.level(now))
        self._open.discard(receipt)
        refund = min(receipt.amount - used, self.capacity - receipt.mark)
        if refund > 0:
            self._add(refund, now)
            for other in self._open:
                other.mark = min(self.capacity, other.mark + refund)

    def _observe(self, level: float) -> None:
        for receipt in self._open:
            if level > receipt.mark:
                receipt.mark = level

    def available(self, now: float) -> float:
        return max(0.0, self.level(now))

    def saturate(self, now: float, grace: float) -> None:
        self._add(-self.level(now), now)


class TokenBucket(Bucket):
    """Holds up to ``capacity`` tokens, refilled continuously at ``capacity/window`` per second.

    Bursts of up to ``capacity`` go at once; over any interval of length T at
    most ``capacity + T * capacity / window`` units are granted.
    """

    def __init__(self, capacity: float, window: float) -> None:
        super().__init__(capacity, window)
        self._tokens = capacity
        self._last = -math.inf

    def level(self, now: float) -> float:
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
        return self._tokens

    def _add(self, units: float, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + units)


class GCRA(Bucket):
    """Generic cell rate algorithm: the token bucket's promise kept with one timestamp.

    State is the theoretical arrival time (TAT): each unit pushes it
    ``window/capacity`` seconds later, and a request passes while the TAT stays
    within one window of now. Same bursts and long-run rate as the token bucket.
    """

    def __init__(self, capacity: float, window: float) -> None:
        super().__init__(capacity, window)
        self._tat = -math.inf

    def level(self, now: float) -> float:
        return self.capacity - max(0.0, self._tat - now) * self.rate

    def _add(self, units: float, now: float) -> None:
        self._tat = max(self._tat, now) - units / self.rate


class LeakyBucket(Meter):
    """Grants leave at a constant rate: no bursts.

    After a grant of ``n`` units the next waits ``n * window / capacity`` seconds,
    so grants are evenly spaced. Unused units of the latest grant shorten its gap.
    """

    def __init__(self, capacity: float, window: float) -> None:
        super().__init__(capacity, window)
        self._interval = window / capacity
        self._free_at = -math.inf
        self._latest: Receipt | None = None

    def delay(self, amount: float, now: float) -> float:
        return max(0.0, self._free_at - now)

    def take(self, amount: float, now: float) -> Receipt:
        self._free_at = max(self._free_at, now) + amount * self._interval
        self._latest = Receipt(amount, self._free_at)
        return self._latest

    def finish(self, receipt: Receipt, used: float, now: float) -> None:
        if receipt is self._latest:
            self._free_at = max(now, self._free_at - (receipt.amount - used) * self._interval)

    def available(self, now: float) -> float:
        return self.capacity - max(0.0, self._free_at - now) / self._interval

    def saturate(self, now: float, grace: float) -> None:
        self._free_at = now + self.window


class FixedWindow(Meter):
    """A counter of units granted in the current window, reset at each window boundary.

    At most ``capacity`` per window, so up to twice that across a boundary.
    """

    def __init__(self, capacity: float, window: float) -> None:
        super().__init__(capacity, window)
        self._index = -math.inf
        self._count = 0.0

    def _roll(self, now: float) -> int:
        index = math.floor(now / self.window)
        if index != self._index:
            self._index, self._count = index, 0.0
        return index

    def delay(self, amount: float, now: float) -> float:
        index = self._roll(now)
        if self._count + amount <= self.capacity + self._slack:
            return 0.0
        return (index + 1) * self.window - now

    def take(self, amount: float, now: float) -> Receipt:
        index = self._roll(now)
        self._count += amount
        return Receipt(amount, index)

    def finish(self, receipt: Receipt, used: float, now: float) -> None:
        if receipt.mark == self._roll(now):
            self._count -= receipt.amount - used

    def available(self, now: float) -> float:
        self._roll(now)
        return self.capacity - self._count

    def saturate(self, now: float, grace: float) -> None:
        self._roll(now)
        self._count = self.capacity


class SlidingWindow(Meter):
    """A log of grants: at most ``capacity`` units in any window of ``window`` seconds.

    A grant counts until exactly ``window`` seconds after it; unused units are
    removed from its log entry while it still counts.
    """

    def __init__(self, capacity: float, window: float) -> None:
        super().__init__(capacity, window)
        self._log: deque[Receipt] = deque()
        self._total = 0.0

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        log = self._log
        while log and log[0].mark <= horizon:
            self._total -= log.popleft().amount
        if not log:
            self._total = 0.0

    def delay(self, amount: float, now: float) -> float:
        self._expire(now)
        excess = self._total + amount - self.capacity
        if excess <= self._slack:
            return 0.0
        freed = 0.0
        for entry in self._log:
            freed += entry.amount
            if freed >= excess - self._slack:
                return entry.mark + self.window - now
        return self.window

    def take(self, amount: float, now: float) -> Receipt:
        receipt = Receipt(amount, now)
        self._log.append(receipt)
        self._total += amount
        return receipt

    def finish(self, receipt: Receipt, used: float, now: float) -> None:
        self._expire(now)
        if receipt.mark > now - self.window:
            self._total -= receipt.amount - used
            receipt.amount = used

    def available(self, now: float) -> float:
        self._expire(now)
        return self.capacity - self._total

    def saturate(self, now: float, grace: float) -> None:
        self._expire(now)
        self.take(self.capacity, now)


class Resource(Meter):
    """Units held at once: granted while they fit, returned whole when the acquisition ends."""

    def __init__(self, capacity: float) -> None:
        super().__init__(capacity)
        self._held = 0.0
        self._closed_until = -math.inf

    def delay(self, amount: float, now: float) -> float:
        if now < self._closed_until:
            return self._closed_until - now
        return 0.0 if self._held + amount <= self.capacity + self._slack else math.inf

    def take(self, amount: float, now: float) -> Receipt:
        self._held += amount
        return Receipt(amount, now)

    def finish(self, receipt: Receipt, used: float, now: float) -> None:
        self._held -= receipt.amount

    def available(self, now: float) -> float:
        return self.capacity - self._held

    def saturate(self, now: float, grace: float) -> None:
        self._closed_until = now + grace

    def restorable(self, amount: float) -> bool:
        return self._held + amount <= self.capacity + self._slack

    def restore(self, amount: float) -> Receipt:
        return self.take(amount, -math.inf)


RATE_ALGORITHMS: dict[RateLimitAlgorithm, type[Meter]] = {
    RateLimitAlgorithm.SlidingWindow: SlidingWindow,
    RateLimitAlgorithm.TokenBucket: TokenBucket,
    RateLimitAlgorithm.GCRA: GCRA,
    RateLimitAlgorithm.LeakyBucket: LeakyBucket,
    RateLimitAlgorithm.FixedWindow: FixedWindow,
}


def meter_for(limit) -> Meter:
    """A fresh meter enforcing ``limit`` (a RateLimit, CallLimit or ResourceLimit)."""
    if limit.kind == "resource":
        return Resource(limit.capacity)
    return RATE_ALGORITHMS[limit.algorithm](limit.capacity, limit.window_seconds)
