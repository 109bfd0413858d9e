"""The client side of a served ledger: one multiplexed connection per process and holder.

Any number of threads and event loops of a process share the connection: each
request carries an id, a reader thread hands each reply to whoever waits for it
(an Event for threads, a loop future for coroutines). Releases are sent without
waiting. If the connection drops and the holder can be found again (a Ray holder
restarted by Ray), the client reconnects, tells the new holder which grants it
still holds, and sends its waiting requests again; otherwise waiting requests
fail with :class:`~concurry_ray.LimitsUnavailableError`.

Connecting never outlasts the caller: a request waits for the connection (or
for a reconnect in progress) at most its own ``timeout``, and a holder that
does not complete the handshake within ``CONNECT_TIMEOUT`` is unavailable. A
request whose time is up is withdrawn; whichever comes first -- the withdrawal
or the holder's answer -- decides, and a grant that arrives too late is
released unused.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import socket
import threading
import time
from functools import partial
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection
from typing import Any, Callable, Mapping, Optional

from ..errors import LimitsUnavailableError
from .holders import Holder, Reach
from .server import authenticate, tune_tcp

log = logging.getLogger("concurry_ray")

CONNECT_TIMEOUT = 10.0  # seconds to connect and authenticate, at most
RELOCATE_WAIT = 60.0  # seconds to find a restarted holder again
CANCEL_LOCK_WAIT = 0.5  # seconds a withdrawal waits for the connection; if busy it is dropped (a late grant is released)
STATS_WAIT = 30.0
ADOPTED = 0  # request id of the "adopt" message after a reconnect


class _Reply:
    """A request in flight: its message (kept to resend after a reconnect) and who waits for the answer."""

    __slots__ = ("message", "value", "event", "loop", "future")

    def __init__(self, message: tuple, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.message = message
        self.value: Any = None
        self.loop = loop
        self.event = None if loop else threading.Event()
        self.future = loop.create_future() if loop else None

    def deliver(self, value: Any) -> bool:
        """Hand the answer over; False if nobody can take it (its event loop closed)."""
        self.value = value
        if self.loop is None:
            self.event.set()
            return True
        try:
            self.loop.call_soon_threadsafe(_set_result, self.future, value)
        except RuntimeError:
            return False
        return True

    def outcome(self) -> Any:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _deadline(timeout: Optional[float]) -> Optional[float]:
    """When a request with ``timeout`` gives up; None for no limit (also for 0: a try still needs its answer)."""
    return time.monotonic() + timeout if timeout else None


def _left(deadline: Optional[float]) -> Optional[float]:
    """Seconds until ``deadline`` (None: no limit)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class RemoteHolder(Holder):
    """A holder served by another process, reached at ``locator`` = (address, family, authkey).

    ``relocate(seconds)``, when given, finds the holder again after the
    connection dropped (waiting at most ``seconds`` while it restarts); it
    returns a fresh locator. ``stands_in_for`` is that of the holder served
    (see ``Holder.reaches``).
    """

    def __init__(
        self, key: Any, locator: tuple, relocate: Optional[Callable[[float], tuple]] = None, stands_in_for: Reach = frozenset()
    ) -> None:
        self.key = key
        self._locator = locator
        self._relocate = relocate
        self.stands_in_for = stands_in_for
        self._lock = threading.Lock()
        self._conn: Optional[Connection] = None
        self._pending: dict[int, _Reply] = {}
        self._withdrawn: dict[int, Mapping[str, float]] = {}  # requests given up: a late grant is released unused
        self._held: dict[int, Mapping[str, float]] = {}
        self._late: list[bytes] = []  # releases waiting for the connection to be free
        self._late_lock = threading.Lock()
        self._ids = itertools.count(ADOPTED + 1)

    def __reduce__(self):
        return (client_for, (type(self), self.key, self._locator, self._relocate, self.stands_in_for))

    # ----- the holder protocol -------------------------------------------------------
    def acquire(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[int]:
        rid, deadline = next(self._ids), _deadline(timeout)
        reply = _Reply(("acq", rid, dict(amounts), timeout != 0))
        if not self._ask(rid, reply, deadline):
            return None
        if not reply.event.wait(_left(deadline)) and self._withdraw(rid, reply):
            return None
        reply.event.wait()  # answered, or being answered now
        return rid if reply.outcome() else None

    async def acquire_async(self, amounts: Mapping[str, float], timeout: Optional[float]) -> Optional[int]:
        rid, deadline = next(self._ids), _deadline(timeout)
        reply = _Reply(("acq", rid, dict(amounts), timeout != 0), asyncio.get_running_loop())
        if not self._ask(rid, reply, deadline):
            return None
        try:
            await asyncio.wait_for(asyncio.shield(reply.future), _left(deadline))
        except TimeoutError:
            if self._withdraw(rid, reply):
                return None
            await reply.future
        except asyncio.CancelledError:
            if not self._withdraw(rid, reply):
                reply.future.add_done_callback(partial(self._release_late, rid))
            raise
        return rid if reply.outcome() else None

    def release(self, grant: int, usage: Optional[Mapping[str, float]]) -> None:
        """Return a grant without waiting on a reconnect: if the connection is busy for longer
        than ``CANCEL_LOCK_WAIT``, the release is sent in the background once it is free."""
        self._held.pop(grant, None)  # so a reconnect does not re-declare it
        data = pickle.dumps(("rel", grant, usage))
        if not self._lock.acquire(timeout=CANCEL_LOCK_WAIT):
            self._release_later(data)
            return
        try:
            self._send_released(data)
        finally:
            self._lock.release()

    def stats(self) -> dict:
        rid, deadline = next(self._ids), time.monotonic() + STATS_WAIT
        reply = _Reply(("stats", rid))
        if self._ask(rid, reply, deadline) and reply.event.wait(_left(deadline)):
            return reply.outcome()
        self._pending.pop(rid, None)
        raise self._unavailable(f"did not answer within {STATS_WAIT} s")

    # ----- sending -------------------------------------------------------------------
    def _ask(self, rid: int, reply: _Reply, deadline: Optional[float]) -> bool:
        """Send a request and expect its answer; False if the connection was not free before ``deadline``."""
        if not self._lock.acquire(timeout=-1 if deadline is None else _left(deadline)):
            return False
        try:
            self._pending[rid] = reply
            self._connection(deadline).send_bytes(pickle.dumps(reply.message))
        except LimitsUnavailableError:
            self._pending.pop(rid, None)
            raise
        except OSError:
            pass  # the reader thread reconnects and sends it again, or fails it
        finally:
            self._lock.release()
        return True

    def _withdraw(self, rid: int, reply: _Reply) -> bool:
        """Give up a request whose time is up; False if its answer came first (the caller takes it)."""
        self._withdrawn[rid] = reply.message[2]
        if self._pending.pop(rid, None) is None:
            self._withdrawn.pop(rid, None)
            return False
        if self._lock.acquire(timeout=CANCEL_LOCK_WAIT):
            try:
                if self._conn is not None:
                    self._conn.send_bytes(pickle.dumps(("cancel", rid)))
            except OSError:
                pass  # that connection is gone, and the request with it
            finally:
                self._lock.release()
        return True

    def _release_late(self, rid: int, answer: asyncio.Future) -> None:
        """Release a grant that arrived for a cancelled coroutine."""
        if answer.result() is True:
            self.release(rid, None)

    def _send_released(self, data: bytes) -> None:
        """Send a release (lock held). Without a connection there is nothing to send: the
        holder ended every grant of the connection that closed."""
        try:
            if self._conn is not None:
                self._conn.send_bytes(data)
        except OSError:
            pass  # that connection is closing, and its grants end with it

    def _release_later(self, data: bytes) -> None:
        with self._late_lock:
            self._late.append(data)
            if len(self._late) > 1:
                return  # a sender is already on its way
        threading.Thread(target=self._send_late, name="concurry-limits-release", daemon=True).start()

    def _send_late(self) -> None:
        with self._lock:
            with self._late_lock:
                late, self._late = self._late, []
            for data in late:
                self._send_released(data)

    def _connection(self, deadline: Optional[float]) -> Connection:
        """The live connection (lock held), connecting first if there is none."""
        if self._conn is None:
            try:
                conn = self._dial(deadline)
            except LimitsUnavailableError:
                if self._relocate is None:
                    raise
                self._locator = self._find(deadline)
                conn = self._dial(deadline)
            self._conn = conn
            threading.Thread(target=self._read, args=(conn,), name="concurry-limits-client", daemon=True).start()
        return self._conn

    def _dial(self, deadline: Optional[float]) -> Connection:
        seconds = CONNECT_TIMEOUT if deadline is None else min(CONNECT_TIMEOUT, _left(deadline))
        try:
            return connect(self._locator, seconds)
        except TimeoutError:
            raise self._unavailable(f"did not complete the connection within {seconds:.3g} s") from None
        except (OSError, EOFError, AuthenticationError) as exc:
            raise self._unavailable(f"refused the connection ({exc})") from None

    def _find(self, deadline: Optional[float]) -> tuple:
        try:
            return self._relocate(RELOCATE_WAIT if deadline is None else _left(deadline))
        except Exception as exc:
            raise self._unavailable(f"could not be found again ({type(exc).__name__}: {exc})") from None

    # ----- receiving -------------------------------------------------------------------
    def _read(self, conn: Connection) -> None:
        try:
            while True:
                self._answer(*pickle.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            self._lost(conn)

    def _answer(self, rid: Optional[int], value: Any) -> None:
        """Hand one answer to whoever waits for it."""
        if rid == ADOPTED:
            self._forget(value)
            return
        reply = self._pending.pop(rid, None)
        if reply is None:
            amounts = self._withdrawn.pop(rid, None)
            if value is True:  # a grant for a request given up: nothing was used
                self.release(rid, dict.fromkeys(amounts or (), 0))
            return
        granted = value is True and reply.message[0] == "acq"
        if granted:
            self._held[rid] = reply.message[2]
        if not reply.deliver(value) and granted:
            self.release(rid, None)

    def _forget(self, lost: Any) -> None:
        """Drop the grants a restarted holder could not adopt: their units went to others meanwhile."""
        if not isinstance(lost, list):
            log.warning("concurry_ray: the limits holder at %s refused our grants: %s", self._locator[0], lost)
            return
        for rid in lost:
            self._held.pop(rid, None)
        if lost:
            log.warning(
                "concurry_ray: the limits holder at %s restarted and could not restore %d grant(s): "
                "their units were given to others while it restarted",
                self._locator[0],
                len(lost),
            )

    def _lost(self, conn: Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
            conn.close()
            try:
                self._reconnect()
            except LimitsUnavailableError as exc:
                self._fail_all(exc)
            except OSError as exc:  # the holder went away again while we reconnected
                self._fail_all(self._unavailable(f"dropped the connection while we reconnected ({exc})"))

    def _reconnect(self) -> None:
        """After the connection dropped (lock held): find the holder again and restore our state there."""
        if self._relocate is None or not (self._pending or self._held):
            raise self._unavailable("closed the connection (its pool stopped or its process ended)")
        self._withdrawn.clear()  # they ended with the old connection
        self._locator = self._find(None)
        log.warning("concurry_ray: limits holder restarted; reconnecting and restoring %d grants", len(self._held))
        conn = self._connection(None)
        conn.send_bytes(pickle.dumps(("adopt", ADOPTED, dict(self._held))))
        for _, reply in sorted(self._pending.items()):
            conn.send_bytes(pickle.dumps(reply.message))

    def _fail_all(self, error: LimitsUnavailableError) -> None:
        pending, self._pending = self._pending, {}
        self._held.clear()
        for reply in pending.values():
            reply.deliver(error)

    def _unavailable(self, what: str) -> LimitsUnavailableError:
        return LimitsUnavailableError(f"the limits holder at {self._locator[0]} {what}")


def connect(locator: tuple, seconds: float) -> Connection:
    """An authenticated connection to the holder at ``locator``, made within ``seconds`` (else TimeoutError)."""
    address, family, authkey = locator
    until = time.monotonic() + seconds
    with socket.socket(getattr(socket, family)) as sock:
        sock.settimeout(max(seconds, 1e-3))  # 0 would mean "do not block" to the socket
        sock.connect(address)
        sock.setblocking(True)
        conn = Connection(sock.detach())
    if family == "AF_INET":
        tune_tcp(conn)
    try:
        authenticate(conn, authkey, max(0.0, until - time.monotonic()), server=False)
    except BaseException:
        conn.close()
        raise
    return conn


_CLIENTS: dict[tuple, RemoteHolder] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(cls: type, key: Any, locator: tuple, relocate: Optional[Callable[[], tuple]], stands_in_for: Reach) -> RemoteHolder:
    """The one client of this process for the holder known as ``key``."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((os.getpid(), key))
        if client is None:
            client = _CLIENTS[(os.getpid(), key)] = cls(key, locator, relocate, stands_in_for)
        return client


def forget(key: Any) -> None:
    """Drop this process's client of the holder ``key``, which was removed (a new holder of that name gets a new client)."""
    with _CLIENTS_LOCK:
        _CLIENTS.pop((os.getpid(), key), None)


def count() -> int:
    """How many holder clients this process keeps: one per holder it reached and has not removed."""
    with _CLIENTS_LOCK:
        return len(_CLIENTS)
