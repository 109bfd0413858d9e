"""The holder protocol, and the in-process holder used by sync, asyncio and thread modes.

A *holder* keeps the budget of a LimitSet and answers four questions, whatever
process or machine it lives in::

    acquire(amounts, timeout)         a grant, or None when ``timeout`` passed (0: do not wait)
    acquire_async(amounts, timeout)   the same for async code, without blocking the event loop
    release(grant, usage)             end an acquisition (never raises)
    stats()                           usage per key

``reaches(mode)`` says whether workers of a pool in ``mode`` can use the
holder. It reads the mode table (``modes.MODES``): a holder reaches every mode
whose own shared holder it can stand in for (``stands_in_for``), so a new mode
needs only its row there. The in-process :class:`LocalHolder` wraps a
:class:`~.ledger.Ledger`; the process and Ray holders reach one over a
connection (see ``server.py`` and ``client.py``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from abc import ABC, abstractmethod
from typing import Any, Mapping, NamedTuple, Optional, Sequence

from .. import metrics
from ..errors import ConfigError
from ..modes import LOCAL_HOLDER, MODES
from .ledger import Grant, Ledger
from .models import definition

class PoolOwner(NamedTuple):
    """The named pool a holder is made for (its ``limits=[...]``): a Ray holder takes the pool's name
    and lifetime from it, so a detached pool's budget outlives the driver as the pool does."""

    pool: str
    lifetime: Optional[str] = None

    @property
    def holder_name(self) -> str:
        """The name of the pool's holder: ``{pool}/limits``."""
        return f"{self.pool}/limits"


def usage_label(name: Optional[str], owner: Optional[PoolOwner]) -> str:
    """How metrics name a budget: the set's name, ``{pool}/limits`` for a named pool's, else ``unnamed``."""
    if name is not None:
        return name
    return owner.holder_name if owner is not None else "unnamed"


Reach = Optional[frozenset]  # the ``limits_holder`` entries of modes.MODES a holder stands in for
EVERY_MODE: Reach = None  # a holder every worker can use, whatever its mode


class Holder(ABC):
    """Where a LimitSet's budget lives; see the module docstring."""

    stands_in_for: Reach = frozenset({LOCAL_HOLDER})

    def reaches(self, mode: str) -> bool:
        """Whether workers of ``mode`` (a name in ``modes.MODES``) can use this holder."""
        return self.stands_in_for is EVERY_MODE or MODES[mode].limits_holder in self.stands_in_for

    @abstractmethod
    def acquire(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[Any]:
        """Block until granted (a grant) or ``timeout`` seconds pass (None)."""

    @abstractmethod
    async def acquire_async(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[Any]:
        """Await a grant (or None after ``timeout`` seconds) without blocking the loop."""

    @abstractmethod
    def release(self, grant: Any, usage: Optional[Mapping[str, float]]) -> None:
        """End an acquisition; ``usage`` None means everything requested was used."""

    @abstractmethod
    def stats(self) -> dict:
        """The ledger's stats."""

    def close(self) -> None:
        """Remove the holder and its budget (only its owner calls this)."""


class LocalHolder(Holder):
    """A ledger in this process: a lock, a queue, and an Event per waiting thread."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._usage: Optional[metrics.UsageMeter] = None

    def export_usage(self, label: str) -> None:
        """Sample this budget's usage into Ray metrics under ``label`` while the holder lives."""
        self._usage = metrics.UsageMeter(label, self.ledger.stats)

    def acquire(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[Grant]:
        grant = self.ledger.try_take(amounts)
        if grant is not None or timeout == 0:
            return grant
        granted = threading.Event()
        entry = self.ledger.request(amounts, lambda _: granted.set())
        if isinstance(entry, Grant):
            return entry
        if granted.wait(timeout):
            return entry.grant
        return self.ledger.cancel(entry)

    async def acquire_async(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[Grant]:
        grant = self.ledger.try_take(amounts)
        if grant is not None or timeout == 0:
            return grant
        loop = asyncio.get_running_loop()
        granted = loop.create_future()
        entry = self.ledger.request(amounts, lambda grant: self._wake_loop(loop, granted, grant))
        if isinstance(entry, Grant):
            return entry
        try:
            await asyncio.wait_for(granted, timeout)
        except TimeoutError:
            return self.ledger.cancel(entry)
        except asyncio.CancelledError:
            late = self.ledger.cancel(entry)
            if late is not None:
                self.ledger.release(late, None)
            raise
        return entry.grant

    def _wake_loop(self, loop: asyncio.AbstractEventLoop, granted: asyncio.Future, grant: Grant) -> None:
        try:
            loop.call_soon_threadsafe(_resolve, granted)
        except RuntimeError:  # the loop closed while waiting: nobody will use the grant
            self.ledger.release(grant, None)

    def release(self, grant: Grant, usage: Optional[Mapping[str, float]]) -> None:
        self.ledger.release(grant, usage)

    def stats(self) -> dict:
        return self.ledger.stats()


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class PrivateHolder(LocalHolder):
    """The holder of a set with ``shared=False``: a copy sent elsewhere gets a fresh budget of its own."""

    stands_in_for = EVERY_MODE

    def __reduce__(self):
        return (PrivateHolder.fresh, (tuple(self.ledger.limits.values()),))

    @classmethod
    def fresh(cls, limits: Sequence) -> "PrivateHolder":
        """A new holder with a full budget for ``limits``."""
        return cls(Ledger(limits))


class SharedLocalHolder(LocalHolder):
    """The holder of a shared set in sync, asyncio or thread mode: it cannot leave its process."""

    def __reduce__(self):
        raise TypeError(
            "a LimitSet with mode='thread' (or 'sync', 'asyncio') is held in one process and cannot be sent "
            "to another; build it with mode='process' or mode='ray' to share it across processes"
        )


_NAMED: "weakref.WeakValueDictionary[tuple, LocalHolder]" = weakref.WeakValueDictionary()
_NAMED_LOCK = threading.Lock()


def named_local(name: Optional[str], limits: Sequence, make: type[LocalHolder], owner: Optional[PoolOwner] = None) -> LocalHolder:
    """A new holder of type ``make``, or the live one of that name in this process (same limits only)."""
    if name is None:
        return _metered(make(Ledger(limits)), usage_label(name, owner))
    with _NAMED_LOCK:
        holder = _NAMED.get((make, name))
        if holder is None:
            holder = _NAMED[(make, name)] = _metered(make(Ledger(limits)), name)
        else:
            check_same(name, definition(holder.ledger.limits.values()), definition(limits))
        return holder


def _metered(holder: LocalHolder, label: str) -> LocalHolder:
    """``holder``, whose usage is sampled into Ray metrics when this process records them."""
    if metrics.active():
        holder.export_usage(label)
    return holder


def open_local(limits: Sequence, name: Optional[str], owner: Optional[PoolOwner] = None) -> Holder:
    """The holder of a shared set in sync, asyncio or thread mode (in this process, whatever ``owner``)."""
    return named_local(name, limits, SharedLocalHolder, owner)


def check_same(name: str, existing: list, wanted: list) -> None:
    """ConfigError showing both definitions when a name is reused for different limits."""
    if existing != wanted:
        raise ConfigError(
            f"a LimitSet named {name!r} already exists with different limits:\n"
            f"  existing: {existing}\n  yours:    {wanted}\n"
            "use the same limits to share its budget, or another name"
        )
