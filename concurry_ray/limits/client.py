"""The client side of a served ledger: one multiplexed connection per process and holder.

Any number of threads and event loops of a process share the connection: each
request carries an id, a reader thread hands each reply to whoever waits for it
(an Event for threads, a loop future for coroutines). Releases are sent without
waiting. If the connection drops and the holder can be found again (a Ray holder
restarted by Ray), the client reconnects, tells the new holder which grants it
still holds, and sends its waiting requests again; otherwise waiting requests
fail with :class:`~concurry_ray.LimitsUnavailableError`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import threading
from multiprocessing.connection import Client, Connection
from typing import Any, Callable, Mapping, Optional

from ..errors import LimitsUnavailableError
from .holders import Holder, Reach
from .server import tune_tcp

log = logging.getLogger("concurry_ray")

CANCEL_WAIT = 30.0  # seconds to wait for the holder to confirm a cancellation
STATS_WAIT = 30.0


class _Reply:
    """A request in flight: its message (kept to resend after a reconnect) and who waits for the answer."""

    __slots__ = ("message", "value", "event", "loop", "future", "withdrawn", "abandoned")

    def __init__(self, message: tuple, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.message = message
        self.value: Any = None
        self.loop = loop
        self.event = None if loop else threading.Event()
        self.future = loop.create_future() if loop else None
        self.withdrawn = False  # a cancellation was sent
        self.abandoned = False  # nobody will use a grant that still arrives: release it

    def deliver(self, value: Any) -> bool:
        """Hand the answer over; False if nobody will take it (abandoned, or its event loop closed)."""
        self.value = value
        if self.loop is None:
            self.event.set()
            return not self.abandoned
        try:
            self.loop.call_soon_threadsafe(_set_result, self.future, value)
        except RuntimeError:
            return False
        return not self.abandoned

    def outcome(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


class RemoteHolder(Holder):
    """A holder served by another process, reached at ``locator`` = (address, family, authkey).

    ``relocate()``, when given, finds the holder again after the connection
    dropped (and blocks while it restarts); it returns a fresh locator.
    ``stands_in_for`` is that of the holder served (see ``Holder.reaches``).
    """

    def __init__(
        self, key: Any, locator: tuple, relocate: Optional[Callable[[], tuple]] = None, stands_in_for: Reach = frozenset()
    ) -> None:
        self.key = key
        self._locator = locator
        self._relocate = relocate
        self.stands_in_for = stands_in_for
        self._lock = threading.Lock()
        self._conn: Optional[Connection] = None
        self._pending: dict[int, _Reply] = {}
        self._held: dict[int, Mapping[str, float]] = {}
        self._ids = itertools.count(1)

    def __reduce__(self):
        return (client_for, (type(self), self.key, self._locator, self._relocate, self.stands_in_for))

    # ----- the holder protocol -------------------------------------------------------
    def acquire(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[int]:
        rid = next(self._ids)
        reply = self._ask(rid, _Reply(("acq", rid, dict(amounts), timeout != 0)))
        if not reply.event.wait(timeout or None):
            self._withdraw(rid, reply)
            if not reply.event.wait(CANCEL_WAIT):
                raise self._unavailable("did not answer a cancellation")
        return rid if reply.outcome() else None

    async def acquire_async(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[int]:
        rid = next(self._ids)
        reply = self._ask(rid, _Reply(("acq", rid, dict(amounts), timeout != 0), asyncio.get_running_loop()))
        try:
            await asyncio.wait_for(asyncio.shield(reply.future), timeout or None)
        except TimeoutError:
            self._withdraw(rid, reply)
            await asyncio.wait_for(reply.future, CANCEL_WAIT)
        except asyncio.CancelledError:
            reply.abandoned = True
            self._withdraw(rid, reply)
            raise
        return rid if reply.outcome() else None

    def release(self, grant: int, usage: Optional[Mapping[str, float]]) -> None:
        self._held.pop(grant, None)
        try:
            self._send(("rel", grant, usage))
        except (OSError, LimitsUnavailableError):
            pass  # the holder releases everything of a connection that closes

    def stats(self) -> dict:
        rid = next(self._ids)
        reply = self._ask(rid, _Reply(("stats", rid)))
        if not reply.event.wait(STATS_WAIT):
            self._pending.pop(rid, None)
            raise self._unavailable(f"did not answer within {STATS_WAIT} s")
        return reply.outcome()

    # ----- sending -------------------------------------------------------------------
    def _ask(self, rid: int, reply: _Reply) -> _Reply:
        self._pending[rid] = reply
        try:
            self._send(reply.message)
        except LimitsUnavailableError:
            self._pending.pop(rid, None)
            raise
        except OSError:
            pass  # the reader thread reconnects and sends it again, or fails it
        return reply

    def _withdraw(self, rid: int, reply: _Reply) -> None:
        reply.withdrawn = True
        try:
            self._send(("cancel", rid))
        except (OSError, LimitsUnavailableError) as exc:
            if self._pending.pop(rid, None) is not None:
                reply.deliver(exc if isinstance(exc, LimitsUnavailableError) else self._unavailable(str(exc)))

    def _send(self, message: tuple) -> None:
        data = pickle.dumps(message)
        with self._lock:
            self._connection().send_bytes(data)

    def _connection(self) -> Connection:
        """The live connection (lock held), connecting first if there is none."""
        if self._conn is None:
            try:
                conn = self._dial()
            except LimitsUnavailableError:
                if self._relocate is None:
                    raise
                self._locator = self._find()
                conn = self._dial()
            self._conn = conn
            threading.Thread(target=self._read, args=(conn,), name="concurry-limits-client", daemon=True).start()
        return self._conn

    def _dial(self) -> Connection:
        address, family, authkey = self._locator
        try:
            conn = Client(address, family, authkey=authkey)
        except (OSError, EOFError) as exc:
            raise self._unavailable(f"refused the connection ({exc})") from None
        if family == "AF_INET":
            tune_tcp(conn)
        return conn

    def _find(self) -> tuple:
        try:
            return self._relocate()
        except Exception as exc:
            raise self._unavailable(f"could not be found again ({type(exc).__name__}: {exc})") from None

    # ----- receiving -------------------------------------------------------------------
    def _read(self, conn: Connection) -> None:
        try:
            while True:
                rid, value = pickle.loads(conn.recv_bytes())
                reply = self._pending.pop(rid, None)
                if reply is None:
                    continue
                granted = value is True and reply.message[0] == "acq"
                if granted:
                    self._held[rid] = reply.message[2]
                if not reply.deliver(value) and granted:
                    self.release(rid, None)
        except (EOFError, OSError):
            self._lost(conn)

    def _lost(self, conn: Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
            conn.close()
            try:
                self._reconnect()
            except LimitsUnavailableError as exc:
                self._fail_all(exc)

    def _reconnect(self) -> None:
        """After the connection dropped (lock held): find the holder again and restore our state there."""
        if self._relocate is None or not (self._pending or self._held):
            raise self._unavailable("closed the connection (its pool stopped or its process ended)")
        self._locator = self._find()
        log.warning("concurry_ray: limits holder restarted; reconnecting and restoring %d grants", len(self._held))
        conn = self._connection()
        conn.send_bytes(pickle.dumps(("adopt", 0, dict(self._held))))
        for rid, reply in sorted(self._pending.items()):
            conn.send_bytes(pickle.dumps(reply.message))
            if reply.withdrawn:
                conn.send_bytes(pickle.dumps(("cancel", rid)))

    def _fail_all(self, error: LimitsUnavailableError) -> None:
        pending, self._pending = self._pending, {}
        self._held.clear()
        for reply in pending.values():
            reply.deliver(error)

    def _unavailable(self, what: str) -> LimitsUnavailableError:
        return LimitsUnavailableError(f"the limits holder at {self._locator[0]} {what}")


_CLIENTS: dict[tuple, RemoteHolder] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(cls: type, key: Any, locator: tuple, relocate: Optional[Callable[[], tuple]], stands_in_for: Reach) -> RemoteHolder:
    """The one client of this process for the holder known as ``key``."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((os.getpid(), key))
        if client is None:
            client = _CLIENTS[(os.getpid(), key)] = cls(key, locator, relocate, stands_in_for)
        return client
