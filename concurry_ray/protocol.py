"""The actor protocol: the one interface every execution mode implements.

A *backend* (one module per mode) knows how to ``spawn`` a worker from a
:class:`WorkerSpec`. What it returns is a :class:`WorkerClient`: the client side
of one live worker, with four operations::

    submit(call, future)        run a method call; ``future`` settles with its outcome
    ready                       a Future that completes when the constructor ran
    alive()                     is the worker still there?
    stop(deadline)              finish what was queued, then stop; cancel the rest at the deadline

Everything above this line (pools, balancing, retries, limits, argument futures,
stats) is written once and works for every backend. Modes are looked up by name
in ``modes.MODES``; adding a mode means adding one module and one row there.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, NamedTuple, Optional

from .futures import Future, settle
from .methods import is_async_method

class Call(NamedTuple):
    """One method call: what the host runs.

    ``trace`` is the caller's W3C trace context (a plain dict holding ``traceparent``)
    when the call is traced, else None; see ``concurry_ray.tracing``. Whoever rebuilds
    a call keeps it (``call._replace(...)``).
    """

    method: str
    args: tuple
    kwargs: dict
    trace: Optional[dict] = None


@dataclass
class WorkerSpec:
    """Everything a host needs to build one worker, in any process."""

    cls: type
    args: tuple
    kwargs: dict
    options: Any
    label: str = "worker"
    extras: dict = field(default_factory=dict)


class WorkerClient(ABC):
    """Client side of one live worker; see the module docstring."""

    ready: Future
    label: str = "worker"

    def __init__(self) -> None:
        self.on_death: Optional[Callable[["WorkerClient", BaseException, list], None]] = None

    @abstractmethod
    def submit(self, call: Call, future: Future) -> Future:
        """Send a call and return at once; ``future`` (returned for convenience) settles with its outcome.

        The caller makes the future, so its done-callbacks are in place before
        the call can finish on another thread.
        """

    @abstractmethod
    def alive(self) -> bool:
        """False once the worker has died or been stopped."""

    @abstractmethod
    def stop(self, deadline: Optional[float]) -> None:
        """Let queued calls finish, then stop; at ``deadline`` cancel what is left."""

    def _is_async(self, method: str) -> bool:
        """Whether ``method`` of the worker class (``self._cls``) is async."""
        return is_async_method(self._cls, method)

    def retries(self) -> Optional[int]:
        """Retries the worker has made so far; None if it cannot tell (e.g. it died).

        Local backends read their host's counter (kept in ``self._host``); backends
        whose host lives elsewhere override this.
        """
        host = getattr(self, "_host", None)
        return host.retries if host is not None else None

    def ask_retries(self) -> None:
        """Start finding out the retry count, so that many workers can be asked at once;
        ``retries()`` then reads the answer. Only a backend that asks a remote worker overrides it."""

    def pid(self) -> Optional[int]:
        """The operating-system process id of the worker, where it has its own."""
        return os.getpid()

    def _died(self, error: BaseException, unstarted: list) -> None:
        """Report death once: ``unstarted`` holds (call, future) pairs that never began and may run elsewhere."""
        callback, self.on_death = self.on_death, None
        if callback is not None:
            callback(self, error, unstarted)
        else:
            for _, future in unstarted:
                if not future.done():
                    future.set_exception(error)


class Backend(ABC):
    """One execution mode. Subclasses set the class attributes and implement ``spawn``."""

    name: ClassVar[str]
    supports_pools: ClassVar[bool] = True
    on_demand_default_max_workers: ClassVar[int] = 0
    supports_detached: ClassVar[bool] = False  # pools that outlive their driver (lifetime="detached")
    crosses_process: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        self.options = options

    @classmethod
    def check_options(cls, options: Any) -> None:
        """Raise ConfigError if ``options`` can never work in this mode (called by ``.options()``)."""

    @abstractmethod
    def spawn(self, spec: WorkerSpec) -> WorkerClient:
        """Start a worker; return its client at once (``client.ready`` tells when it is built)."""

    def passes_natively(self, value: Any) -> bool:
        """True if ``value`` (a future) can be sent unresolved and the worker resolves it."""
        return False

    def native_form(self, value: Any) -> Any:
        """What to send in place of a future that :meth:`passes_natively`."""
        return value

    def shutdown(self) -> None:
        """Release resources the backend holds for its pool."""


def split_on_crash(pending: list, crash: BaseException) -> list:
    """Fail the calls a dead worker may have been running; return the (call, future) pairs it never started.

    ``pending`` lists (call, future, is_async) in the order the calls were sent.
    Sync calls run one at a time in that order, so only the first unsettled sync
    call can have been running; async calls start on arrival, so all of them fail.
    """
    unstarted, running_seen = [], False
    for call, future, is_async in pending:
        if is_async or not running_seen:
            running_seen = running_seen or not is_async
            settle(future, error=type(crash)(f"{crash} while running {call.method}()"))
        else:
            unstarted.append((call, future))
    return unstarted
