"""The three kinds of limit, as validated pydantic models.

* :class:`RateLimit` -- at most ``capacity`` units of ``key`` per ``window_seconds``
  (tokens per minute, requests per second), enforced by one of the rate algorithms.
* :class:`CallLimit` -- a RateLimit on the key ``"call_count"``; every acquisition
  counts as one call, nobody has to request it.
* :class:`ResourceLimit` -- at most ``capacity`` units of ``key`` held at once
  (connections, GPUs, seats); units come back when the acquisition ends.

A bad value raises :class:`~concurry_ray.ConfigError` naming it and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..enums import RateLimitAlgorithm, RateWindow, parse
from ..errors import ConfigError

CALL_KEY = "call_count"


class Limit(BaseModel):
    """Base of every limit (``isinstance(x, Limit)``): a ``key`` and a positive, finite ``capacity``.

    Rate and call capacities may be fractional (2.5 units per window); a
    ResourceLimit's is a whole number. Fields may also be given positionally,
    in the order of ``_positional``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    _positional: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = ""

    key: str
    capacity: float

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > len(self._positional):
            raise ConfigError(
                f"{type(self).__name__} takes at most {len(self._positional)} positional arguments "
                f"({', '.join(self._positional)}); got {len(args)}: {args!r}"
            )
        data.update(zip(self._positional, args))
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(describe(type(self).__name__, exc)) from None

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, value: Any) -> Any:
        return positive_finite("capacity", value, "a number")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value:
            raise ValueError("key='' must be a non-empty string")
        return value



class RateLimit(Limit):
    """At most ``capacity`` units of ``key`` per ``window_seconds``.

    ``window_seconds`` (alias ``window``) is a number of seconds or a
    :class:`RateWindow` (``"minute"``, ``"per_minute"``, ``RateWindow.Minutely``,
    ...). ``algorithm`` is a :class:`RateLimitAlgorithm` or any of its
    spellings: ``sliding_window`` (default: never more than ``capacity`` in any window),
    ``token_bucket`` and ``gcra`` (bursts up to ``capacity``, then a steady
    refill), ``leaky_bucket`` (evenly spaced, no bursts) and ``fixed_window``
    (a counter reset at each window boundary). Units requested but not used,
    reported with ``acq.update(usage=...)``, are given back where the algorithm
    allows it.
    """

    _positional: ClassVar[tuple[str, ...]] = ("key", "window_seconds", "capacity", "algorithm")
    kind: ClassVar[str] = "rate"

    window_seconds: float = Field(alias="window")
    algorithm: RateLimitAlgorithm = RateLimitAlgorithm.SlidingWindow

    @field_validator("window_seconds", mode="before")
    @classmethod
    def _window(cls, value: Any) -> float:
        if isinstance(value, str):
            return parse(RateWindow, value, "window_seconds").to_seconds()
        return positive_finite("window_seconds", value, "a number of seconds")

    @field_validator("algorithm", mode="before")
    @classmethod
    def _algorithm(cls, value: Any) -> RateLimitAlgorithm:
        return parse(RateLimitAlgorithm, value, "algorithm")

    @property
    def window(self) -> float:
        """The window in seconds (concurry's name for ``window_seconds``)."""
        return self.window_seconds


class CallLimit(RateLimit):
    """At most ``capacity`` calls per ``window_seconds``.

    Every ``acquire()`` on the set counts as one call (key ``"call_count"``), so
    a worker method that wraps its work in ``with self.limits.acquire(...)`` is
    call-limited without requesting anything. Same windows and algorithms as
    :class:`RateLimit`. ``capacity`` must be at least 1 (one call has to fit).
    """

    _positional: ClassVar[tuple[str, ...]] = ("window_seconds", "capacity", "algorithm")
    kind: ClassVar[str] = "call"

    key: Literal["call_count"] = CALL_KEY

    @field_validator("capacity")
    @classmethod
    def _one_call_fits(cls, value: float) -> float:
        if value < 1:
            raise ValueError(f"capacity={value!r} must be at least 1: each acquire counts one call")
        return value


class ResourceLimit(Limit):
    """At most ``capacity`` units of ``key`` held at the same time.

    An acquisition holds its units until its ``with`` block ends (also when the
    block raises, and when the worker holding them dies), then they return.
    ``capacity`` is a whole number.
    """

    _positional: ClassVar[tuple[str, ...]] = ("key", "capacity")
    kind: ClassVar[str] = "resource"

    capacity: int



AnyLimit = Union[CallLimit, RateLimit, ResourceLimit]


def positive_finite(field: str, value: Any, what: str) -> Any:
    """``value`` if it is a number > 0 and finite; else the error naming ``field`` and the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{field}={value!r} must be {what} > 0 and finite")
    return value


def check_limits(limits: Any) -> tuple[AnyLimit, ...]:
    """The limits as a tuple, each a Limit and every key used once; ConfigError otherwise."""
    if isinstance(limits, Limit) or not isinstance(limits, Sequence) or isinstance(limits, str):
        raise ConfigError(
            f"limits={limits!r} must be a list of CallLimit, RateLimit or ResourceLimit, "
            "e.g. limits=[CallLimit(window_seconds=1, capacity=10)]"
        )
    seen: dict[str, Limit] = {}
    for limit in limits:
        if not isinstance(limit, Limit):
            raise ConfigError(f"limits contains {limit!r}; every item must be a CallLimit, RateLimit or ResourceLimit")
        if limit.key in seen:
            raise ConfigError(f"limit key {limit.key!r} is used twice: {seen[limit.key]!r} and {limit!r}; keys must be unique")
        seen[limit.key] = limit
    return tuple(limits)


def definition(limits: Sequence[Limit]) -> list[dict]:
    """A plain, comparable description of a set of limits (the same for equal sets)."""
    return sorted(({"type": type(limit).__name__, **limit.model_dump()} for limit in limits), key=lambda d: d["key"])


def describe(what: str, exc: ValidationError) -> str:
    """One readable line per pydantic error, each naming the field and the value."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or what
        message = err["msg"].removeprefix("Value error, ")
        parts.append(message if "=" in message else f"{field}={err.get('input')!r}: {message}")
    return f"invalid {what}: " + "; ".join(parts)
