"""concurry's named choices as ``morphic.AutoEnum``s, and the one function that reads a name.

Every option that takes a name (``mode``, ``load_balancing``, a rate limit's
``algorithm`` and ``window``, ``retry_algorithm``, ``return_when``) also takes
the enum member, and matches plain strings the AutoEnum way: case, spaces,
``_``, ``-`` and ``.`` are ignored and every alias counts. So
``"SlidingWindow"``, ``"sliding"``, ``"sliding_window"`` and
``RateLimitAlgorithm.SlidingWindow`` are one algorithm. :func:`parse` is the
only place that turns a name into a member; there is no second alias table.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, TypeVar

from morphic import AutoEnum, alias, auto

from .errors import ConfigError


class ExecutionMode(AutoEnum):
    """Where a worker runs: ``Sync``, ``Asyncio``, ``Threads``, ``Processes`` or ``Ray``.

    ``Auto`` exists for concurry compatibility; no worker runs in it (choose a mode).
    """

    Auto = auto()
    Sync = alias("synchronous")
    Asyncio = alias("async", "asynchronous")
    Threads = alias("thread")
    Processes = alias("proc", "procs", "process")
    Ray = auto()


class LoadBalancingAlgorithm(AutoEnum):
    """Which worker of a pool gets the next call (see ``docs/pools.md``)."""

    RoundRobin = alias("rr")
    LeastActiveLoad = alias("active", "least_active")
    LeastTotalLoad = alias("total", "least_total")
    Random = alias("rand")


class RateLimitAlgorithm(AutoEnum):
    """How a :class:`RateLimit` counts units in its window (see ``docs/limits.md``)."""

    TokenBucket = alias("token")
    LeakyBucket = alias("leaky")
    SlidingWindow = alias("sliding")
    FixedWindow = alias("fixed")
    GCRA = alias("Generic cell rate algorithm", "Generic cell rate")


class RateWindow(AutoEnum):
    """A named rate-limit window; ``to_seconds()`` gives its length. Months vary, so there is no monthly one."""

    Secondly = alias("second", "seconds", "sec", "secs", "per_second", "per_seconds", "per_sec", "per_secs")
    Minutely = alias("minute", "minutes", "min", "mins", "per_minute", "per_minutes", "per_min", "per_mins")
    Hourly = alias("hour", "hours", "hr", "hrs", "per_hour", "per_hours", "per_hr", "per_hrs")
    Daily = alias("day", "days", "per_day", "per_days")
    Weekly = alias("week", "weeks", "wk", "wks", "per_week", "per_weeks", "per_wk", "per_wks")

    def to_seconds(self) -> float:
        """The window's length in seconds."""
        return _WINDOW_SECONDS[self.name]


_WINDOW_SECONDS = {"Secondly": 1.0, "Minutely": 60.0, "Hourly": 3600.0, "Daily": 86400.0, "Weekly": 604800.0}


class RetryAlgorithm(AutoEnum):
    """How the wait between retries grows: ``Exponential``, ``Linear``, ``Fibonacci`` or ``Fixed``."""

    Linear = auto()
    Exponential = auto()
    Fibonacci = auto()
    Fixed = alias("constant")


class PollingAlgorithm(AutoEnum):
    """concurry's polling strategies for waiting on futures.

    Accepted for compatibility (``wait(..., polling=...)``) and otherwise
    unused: concurry_ray's waits are event driven and never poll.
    """

    Fixed = auto()
    Adaptive = auto()
    Exponential = auto()
    Progressive = auto()


class ReturnWhen(AutoEnum):
    """When :func:`wait` returns: ``ALL_COMPLETED``, ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``."""

    ALL_COMPLETED = alias("all")
    FIRST_COMPLETED = alias("first")
    FIRST_EXCEPTION = alias("exception")


E = TypeVar("E", bound=AutoEnum)


def parse(enum: type[E], value: Any, field: str) -> E:
    """The member of ``enum`` that ``value`` names (a member, its name or an alias).

    Raises ConfigError naming ``field``, the value and what is allowed.
    """
    member = enum.from_str(value, raise_error=False) if isinstance(value, str) else None
    if member is None:
        names = spellings(enum)
        folded = {_fold(name): enum.from_str(name).name for name in names}
        match = difflib.get_close_matches(_fold(str(value)), list(folded), n=1, cutoff=0.6)
        hint = f" (did you mean {folded[match[0]]!r}?)" if match else ""
        raise ConfigError(f"{field}={value!r} is not a known {enum.__name__}{hint}; allowed: {', '.join(names)}")
    return member


def spellings(enum: type[AutoEnum]) -> list[str]:
    """Every name and alias a member of ``enum`` answers to, members first."""
    return [member.name for member in enum] + [a for member in enum for a in member.aliases]


def _fold(name: str) -> str:
    """A name as AutoEnum compares it (for the 'did you mean' hint only)."""
    return re.sub(r"[\s_\-.:;,]", "", name.lower())
