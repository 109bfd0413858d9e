"""Retries: running a call again, on the same worker, when an attempt fails.

A call on a worker is one *attempt* at first. With ``num_retries=N`` the worker
may make up to N more attempts of the same call before it gives up. Three small
strategies decide what happens after each attempt, and each sees the same
record of the call (attempt number, method, arguments, elapsed time):

* **retry_on** decides whether an exception is worth another attempt: exception
  types (``[ConnectionError, TimeoutError]``) and/or predicates called with the
  keywords ``exception, attempt, method_name, worker_class, worker_class_name,
  args, kwargs, elapsed_time``. Anything else is raised at once.
* **retry_until** decides whether a *result* is acceptable: validators called as
  ``validator(result, attempt=..., method_name=..., ...)``; every one must
  return true. When no attempt is left, :class:`RetryValidationError` lists what
  each attempt returned or raised.
* **the backoff** decides how long to wait before attempt n+1:
  ``retry_algorithm`` scales ``retry_wait`` (``fixed``: w, ``linear``: n·w,
  ``fibonacci``: fib(n)·w, ``exponential``: 2ⁿ⁻¹·w), ``retry_max_wait`` caps it
  (and :data:`LONGEST_WAIT` always does, so thousands of retries never overflow),
  and ``retry_jitter`` (a fraction in [0, 1]) removes a random part of it, so a
  jitter of 0.3 sleeps between 70 % and 100 % of the computed wait and 0 sleeps
  exactly that long. Jitter spreads out workers that failed together.

Every option may also be a dict per method, with ``"*"`` as the default for the
others: ``num_retries={"*": 0, "fetch": 3}``.

Retries run inside the worker that received the call (no round trip to the
caller), sync methods sleeping with ``time.sleep`` and async ones with
``await asyncio.sleep``. Limits are released between attempts because an
attempt acquires them in a ``with self.limits.acquire(...)`` block, which
releases on the way out, also when the attempt raises. A traced call records each
retry on its CONSUMER span (``concurry.attempt`` and a ``retry`` event, see
``concurry_ray.tracing``).

A worker that *dies* cannot retry its own call; the pool re-sends it to another
worker when ``retry_on`` names :class:`WorkerCrashedError` (see
``concurry_ray.pools.crashes``).
"""

from __future__ import annotations

import asyncio
import math
import numbers
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .enums import RetryAlgorithm, parse
from .errors import ConfigError, RetryValidationError, closest
from .protocol import Call
from .tracing import retrying

RETRY_OPTIONS = (
    "num_retries",
    "retry_on",
    "retry_algorithm",
    "retry_wait",
    "retry_jitter",
    "retry_max_wait",
    "retry_until",
)


# ----- backoff ------------------------------------------------------------------


LONGEST_WAIT = 1e9
"""The longest wait between attempts, in seconds (about 31 years: "never" that ``time.sleep`` still accepts).
A backoff that grows past it (no ``retry_max_wait``, thousands of retries) waits this long instead of overflowing."""
_GROWTH_STEPS = 1500
"""Failures after which the exponential and Fibonacci factors (2**1499, fib(1500)) exceed any float: counting
further changes nothing but the cost of the big integer."""


def _fibonacci(n: int) -> int:
    a, b = 1, 1
    for _ in range(n - 1):
        a, b = b, a + b
    return a


BACKOFF: dict[RetryAlgorithm, Callable[[int], int]] = {
    RetryAlgorithm.Exponential: lambda n: 2 ** (min(n, _GROWTH_STEPS) - 1),
    RetryAlgorithm.Linear: lambda n: n,
    RetryAlgorithm.Fibonacci: lambda n: _fibonacci(min(n, _GROWTH_STEPS)),
    RetryAlgorithm.Fixed: lambda n: 1,
}
"""The factor each algorithm multiplies ``retry_wait`` by after the n-th failure (an exact integer)."""


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next attempt: ``seconds(n, rng)`` after the n-th failure."""

    algorithm: RetryAlgorithm = RetryAlgorithm.Exponential
    wait: float = 1.0
    jitter: float = 0.3
    max_wait: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", parse(RetryAlgorithm, self.algorithm, "retry_algorithm"))

    def seconds(self, failures: int, rng: random.Random) -> float:
        """The wait after ``failures`` failed attempts, capped, then reduced by up to ``jitter`` of itself.

        Never raises for a large ``failures``: a wait too large for a float is capped like any other
        (by ``max_wait``, else :data:`LONGEST_WAIT`).
        """
        cap = LONGEST_WAIT if self.max_wait is None else min(self.max_wait, LONGEST_WAIT)
        return min(self._grown(failures), cap) * (1.0 - self.jitter * rng.random())

    def _grown(self, failures: int) -> float:
        if self.wait == 0:
            return 0.0
        try:
            return self.wait * BACKOFF[self.algorithm](failures)
        except OverflowError:  # the integer factor does not fit a float
            return math.inf


# ----- checking options (used by WorkerOptions' validators) ----------------------


def check_number(field: str, value: Any, low: float, high: Optional[float] = None, *, above: bool = False) -> float:
    """``value`` as a float if it is a finite real number (not a bool) ``>= low`` (``> low`` when ``above``)
    and ``<= high``; else ValueError naming ``field``, the value and what is allowed.

    The one check of every number of seconds, fraction or amount an option takes.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field}={value!r} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{field}={value!r} must be a finite number (not NaN or an infinity)")
    if value < low or (above and value == low) or (high is not None and value > high):
        allowed = f"{'>' if above else '>='} {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{field}={value!r} must be {allowed}")
    return float(value)


def _count(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{field}={value!r} must be an integer >= 0 (how many attempts after the first)")
    return int(value)


def _algorithm(field: str, value: Any) -> RetryAlgorithm:
    return parse(RetryAlgorithm, value, field)


def _is_exception_type(item: Any) -> bool:
    return isinstance(item, type) and issubclass(item, BaseException)


def _retry_on(field: str, value: Any) -> tuple:
    items = tuple(value) if isinstance(value, (list, tuple, set, frozenset)) else (value,)
    for item in items:
        if (isinstance(item, type) and not _is_exception_type(item)) or not callable(item):
            raise ValueError(
                f"{field}={value!r}: {item!r} is not allowed; give exception types (subclasses of "
                "BaseException) and/or predicates f(exception, **context) -> bool"
            )
    return items


def _retry_until(field: str, value: Any) -> Optional[tuple]:
    if value is None:
        return None
    items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    for item in items:
        if not callable(item) or isinstance(item, type):
            raise ValueError(
                f"{field}={value!r}: {item!r} is not allowed; give None or validators f(result, **context) -> bool"
            )
    return items


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "num_retries": _count,
    "retry_on": _retry_on,
    "retry_algorithm": _algorithm,
    "retry_wait": lambda field, value: check_number(field, value, 0),
    "retry_jitter": lambda field, value: check_number(field, value, 0, 1),
    "retry_max_wait": lambda field, value: None if value is None else check_number(field, value, 0),
    "retry_until": _retry_until,
}


def check_option(field: str, value: Any) -> Any:
    """Validate and normalise one retry option, either a single value or a per-method dict with ``"*"``.

    Raises ValueError naming the field (and method), the value and what is allowed.
    """
    check = _CHECKS[field]
    if not isinstance(value, dict):
        return check(field, value)
    if "*" not in value:
        raise ValueError(
            f"{field}={value!r}: a per-method dict needs a '*' entry, the value for every other method "
            f"(e.g. {{'*': ..., {next(iter(value), 'method')!r}: ...}})"
        )
    for method in value:
        if not isinstance(method, str):
            raise ValueError(f"{field}={value!r}: keys must be method names or '*', got {method!r}")
    return {method: check(f"{field}[{method!r}]", item) for method, item in value.items()}


def check_method_names(options: Any, methods: Any, class_name: str) -> None:
    """Raise ConfigError if a per-method retry dict names a method the worker class does not have."""
    for field in RETRY_OPTIONS:
        value = getattr(options, field)
        unknown = [m for m in value if m != "*" and m not in methods] if isinstance(value, dict) else []
        if unknown:
            hints = "; ".join(f"{m!r}{closest(m, methods)}" for m in unknown)
            raise ConfigError(
                f"{field} names methods that {class_name} does not have: {hints}; "
                f"allowed: '*', {', '.join(sorted(methods))}"
            )


def option_for(options: Any, field: str, method: str) -> Any:
    """The value of a retry option for ``method``, looking through a per-method dict."""
    value = getattr(options, field)
    if isinstance(value, dict):
        value = value.get(method, value["*"])
    return check_option(field, value)


# ----- the policy of one method -----------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """The retry options that apply to one method, normalised."""

    num_retries: int = 0
    retry_on: tuple = (Exception,)
    backoff: Backoff = Backoff()
    until: Optional[tuple] = None

    @classmethod
    def for_method(cls, options: Any, method: str) -> "RetryPolicy":
        """The policy for ``method`` under a worker's options."""
        return cls(
            num_retries=option_for(options, "num_retries", method),
            retry_on=option_for(options, "retry_on", method),
            backoff=Backoff(
                option_for(options, "retry_algorithm", method),
                option_for(options, "retry_wait", method),
                option_for(options, "retry_jitter", method),
                option_for(options, "retry_max_wait", method),
            ),
            until=option_for(options, "retry_until", method),
        )

    @property
    def trivial(self) -> bool:
        """True when a call is simply run once (no retries, no validation)."""
        return self.num_retries == 0 and not self.until


class Attempts:
    """The record of one call's attempts; decides after each whether to try again."""

    def __init__(self, policy: RetryPolicy, call: Call, worker_class: type) -> None:
        self.policy = policy
        self.call = call
        self.worker_class = worker_class
        self.number = 1
        self.started = time.monotonic()
        self.outcomes: list = []

    def context(self) -> dict:
        """The keywords every retry_on predicate and retry_until validator receives."""
        return {
            "attempt": self.number,
            "method_name": self.call.method,
            "worker_class": self.worker_class,
            "worker_class_name": self.worker_class.__name__,
            "args": self.call.args,
            "kwargs": self.call.kwargs,
            "elapsed_time": time.monotonic() - self.started,
        }

    @property
    def exhausted(self) -> bool:
        """True once the last allowed attempt has been made."""
        return self.number > self.policy.num_retries

    def should_retry(self, error: Exception) -> bool:
        """After an attempt raised: True to try again; False to raise ``error`` now."""
        self.outcomes.append(error)
        if not self._retryable(error):
            return False
        if self.exhausted:
            error.add_note(f"concurry_ray: {self._where()} gave up after {self.number} attempts")
            return False
        return True

    def _retryable(self, error: Exception) -> bool:
        context = None
        for rule in self.policy.retry_on:
            if _is_exception_type(rule):
                if isinstance(error, rule):
                    return True
                continue
            context = context or self.context()
            if rule(exception=error, **context):
                return True
        return False

    def accepts(self, result: Any) -> bool:
        """After an attempt returned: True to return ``result``; False to try again.

        Raises RetryValidationError when ``result`` is rejected and no attempt is left.
        """
        if not self.policy.until:
            return True
        context = self.context()
        if all(validator(result, **context) for validator in self.policy.until):
            return True
        self.outcomes.append(result)
        if self.exhausted:
            raise RetryValidationError(self._rejected_message(), self.outcomes)
        return False

    def next_wait(self, rng: random.Random) -> float:
        """Seconds to sleep before the next attempt (and count the attempt)."""
        wait = self.policy.backoff.seconds(self.number, rng)
        self.number += 1
        return wait

    def _where(self) -> str:
        return f"{self.worker_class.__name__}.{self.call.method}()"

    def _rejected_message(self) -> str:
        lines = [f"attempt {i}: {_describe_outcome(o)}" for i, o in enumerate(self.outcomes, start=1)]
        return (
            f"{self._where()}: retry_until rejected every attempt ({len(self.outcomes)} of "
            f"{self.policy.num_retries + 1}); " + "; ".join(lines)
            + ". Raise num_retries, relax the validators, or handle RetryValidationError.attempts"
        )


def _describe_outcome(outcome: Any) -> str:
    if isinstance(outcome, BaseException):
        return f"raised {type(outcome).__name__}: {outcome}"[:200]
    return f"returned {outcome!r}"[:200]


# ----- running calls ------------------------------------------------------------------


class RetryRunner:
    """Runs each call of one worker under that worker's retry options.

    The host owns one runner per worker. ``retries`` counts the extra attempts
    this worker made (the pool reports it as the worker's retry count).
    ``limits`` is accepted for the host's sake only: an attempt acquires limits
    in its own ``with`` block, which releases them before the next attempt.
    """

    def __init__(self, options: Any, worker_class: type, limits: Any = None) -> None:
        self.options = options
        self.worker_class = worker_class
        self.retries = 0
        self._policies: dict[str, RetryPolicy] = {}
        self.run_once: set[str] = set()  # methods whose policy is trivial, so a host may call them directly
        self._lock = threading.Lock()
        self._rng = random.Random()

    def policy(self, method: str) -> RetryPolicy:
        """The retry policy of ``method`` (computed once per method)."""
        policy = self._policies.get(method)
        if policy is None:
            policy = self._policies[method] = RetryPolicy.for_method(self.options, method)
            if policy.trivial:
                self.run_once.add(method)
        return policy

    def run(self, call: Call, bound: Callable) -> Any:
        """Call ``bound`` with the call's arguments, retrying as the policy says."""
        policy = self.policy(call.method)
        if policy.trivial:
            return bound(*call.args, **call.kwargs)
        attempts = Attempts(policy, call, self.worker_class)
        while True:
            try:
                result = bound(*call.args, **call.kwargs)
            except Exception as error:
                if not attempts.should_retry(error):
                    raise
            else:
                if attempts.accepts(result):
                    return result
            time.sleep(self._next_wait(attempts))

    async def run_async(self, call: Call, bound: Callable) -> Any:
        """Await ``bound`` with the call's arguments, retrying as the policy says."""
        policy = self.policy(call.method)
        if policy.trivial:
            return await bound(*call.args, **call.kwargs)
        attempts = Attempts(policy, call, self.worker_class)
        while True:
            try:
                result = await bound(*call.args, **call.kwargs)
            except Exception as error:
                if not attempts.should_retry(error):
                    raise
            else:
                if attempts.accepts(result):
                    return result
            await asyncio.sleep(self._next_wait(attempts))

    def _next_wait(self, attempts: Attempts) -> float:
        with self._lock:
            self.retries += 1
            wait = attempts.next_wait(self._rng)
        retrying(attempts.number, wait, _describe_outcome(attempts.outcomes[-1]))
        return wait


# ----- crashes: re-sending a call to another worker of the pool ---------------------------
