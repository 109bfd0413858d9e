"""Serve a ledger to other processes over ``multiprocessing.connection``.

The process-mode holder runs a :class:`Server` in the driver; the Ray holder runs
one inside its detached actor. Each client process keeps one connection, served
by one thread here. Messages (client -> server; ``rid`` is the client's request id)::

    ("acq", rid, amounts, wait)   -> (rid, True) when granted; (rid, False) at once if not and not ``wait``
    ("cancel", rid)               -> (rid, False) if still waiting (a grant sent already stands)
    ("rel", rid, usage)           end acquisition ``rid``; no reply
    ("adopt", rid, {rid: amounts}) -> (rid, [rids not adopted]): count grants made by this holder's
                                     previous life; those that no longer fit are gone
    ("stats", rid)                -> (rid, stats)

Every message is checked before it is acted on: only these operations, request
ids that are integers (and not in use, for a new request), known keys, amounts
that are finite numbers from 0 to the key's capacity, usage from 0 to what was
granted. A bad message is answered ``(rid, ConfigError)`` and the session goes
on, so a faulty or hostile client can neither inflate a budget nor reach
anything else.

Waits are server-side and event-driven: a waiting request costs nothing until the
ledger grants it. When a connection closes -- the client process ended, was
killed, or lost the network -- everything it held is released and its waiting
requests are withdrawn, so a dead worker never keeps a slot. Each connection is
authenticated on its own thread within ``HANDSHAKE_TIMEOUT``, so a peer that
connects and stays silent delays nobody.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import pickle
import socket
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from typing import Any, Callable, Optional

from ..errors import ConfigError
from ..timers import call_at
from .ledger import Grant, Ledger, Waiter

log = logging.getLogger("concurry_ray")

KEEPALIVE = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3}
HANDSHAKE_TIMEOUT = 5.0  # seconds a new connection has to authenticate
BACKLOG = 128  # connections waiting to be accepted (a client's connect does not wait for room)


class Server:
    """Accepts connections to one ledger until ``close()``."""

    def __init__(self, ledger: Ledger, host: Optional[str] = None) -> None:
        self.ledger = ledger
        self.family = "AF_INET" if host else "AF_UNIX"
        self.authkey = os.urandom(32)
        # No authkey here: each connection authenticates on its own thread (see _serve).
        self._listener = Listener((host, 0) if host else None, self.family, backlog=BACKLOG)
        self.address = self._listener.address
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="concurry-limits-accept", daemon=True).start()

    @property
    def clients(self) -> int:
        """How many client connections are open now (one per process using the budget)."""
        with self._lock:
            return len(self._sessions)

    @property
    def locator(self) -> tuple:
        """What a client needs to connect: (address, family, authkey)."""
        return (self.address, self.family, self.authkey)

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except OSError as exc:
                if self._closed:
                    return
                log.debug("concurry_ray: limits server could not accept a connection: %s", exc)
                continue
            if self._closed:
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), name="concurry-limits-session", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        """Authenticate one connection, then answer it until it closes."""
        if self.family == "AF_INET":
            tune_tcp(conn)
        try:
            authenticate(conn, self.authkey, HANDSHAKE_TIMEOUT, server=True)
        except (OSError, EOFError, AuthenticationError) as exc:
            log.debug("concurry_ray: limits server refused a connection: %s", exc)
            conn.close()
            return
        with self._lock:
            if self._closed:
                conn.close()
                return
            session = Session(self.ledger, conn, self._sessions.discard)
            self._sessions.add(session)
        session.run()

    def close(self) -> None:
        """Stop accepting and drop every connection (their clients see the holder gone)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions)
        try:
            Client(self.address, self.family).close()  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        for session in sessions:  # all first: a session's grants, released as it ends, must not go to another
            session.mute()
        for session in sessions:
            session.end()


class Session:
    """One client connection: its grants and waiting requests, released when it closes."""

    def __init__(self, ledger: Ledger, conn: Connection, on_close: Callable[["Session"], None]) -> None:
        self.ledger = ledger
        self.conn = conn
        self._on_close = on_close
        self._lock = threading.Lock()
        self._grants: dict[int, Grant] = {}
        self._waiters: dict[int, Waiter] = {}
        self._closed = False

    def run(self) -> None:
        """Answer messages until the connection closes, then release what it held."""
        try:
            while True:
                self._handle(self.conn.recv_bytes())
        except (EOFError, OSError):
            pass
        finally:
            self._close()

    def _handle(self, data: bytes) -> None:
        """Check one message and carry it out; a bad one is answered with a ConfigError."""
        message = _load(data)
        try:
            operation, arguments = _parse(message)
            operation(self, *arguments)
        except ConfigError as error:
            self._reply(_rid_of(message), error)

    def _reply(self, rid: Optional[int], value: Any) -> None:
        try:
            with self._lock:
                self.conn.send_bytes(pickle.dumps((rid, value)))
        except (OSError, ValueError):
            pass  # the reader sees the closed connection and releases everything

    def _acq(self, rid: int, amounts: Any, wait: Any) -> None:
        amounts = self._checked(amounts)
        if not isinstance(wait, bool):
            raise ConfigError(f"wait={wait!r} must be True or False")
        self._check_new(rid)
        if not wait:
            grant = self.ledger.try_take(amounts)
        else:
            entry = self.ledger.request(amounts, lambda granted: self._granted(rid, granted))
            if isinstance(entry, Waiter):
                with self._lock:
                    if entry.grant is None:  # else _granted() has answered already
                        self._waiters[rid] = entry
                return
            grant = entry
        if grant is not None:
            with self._lock:
                self._grants[rid] = grant
        self._reply(rid, grant is not None)

    def _granted(self, rid: int, grant: Grant) -> None:
        with self._lock:
            self._waiters.pop(rid, None)
            closed = self._closed
            if not closed:
                self._grants[rid] = grant
        if closed:
            self.ledger.release(grant, None)
        else:
            self._reply(rid, True)

    def _cancel(self, rid: int) -> None:
        waiter = self._waiters.pop(rid, None)
        if waiter is not None and self.ledger.cancel(waiter) is None:
            self._reply(rid, False)

    def _rel(self, rid: int, usage: Any) -> None:
        with self._lock:
            grant = self._grants.pop(rid, None)
        if grant is None:
            return  # released already, or a lease the holder could not adopt after a restart
        try:
            _check_usage(usage, grant.amounts)
        except ConfigError:
            self.ledger.release(grant, None)  # counted as all used: a bad report never refunds
            raise
        self.ledger.release(grant, usage)

    def _adopt(self, rid: int, held: Any) -> None:
        if not isinstance(held, dict):
            raise ConfigError(f"adopt needs a dict of request id -> amounts (got {type(held).__name__})")
        self._reply(rid, [held_rid for held_rid, amounts in held.items() if not self._adopted(held_rid, amounts)])

    def _adopted(self, rid: Any, amounts: Any) -> bool:
        """Count one grant of the holder's previous life; False if it is invalid or no longer fits."""
        try:
            self._check_new(rid)
            grant = self.ledger.adopt(self._checked(amounts))
        except ConfigError as error:
            log.warning("concurry_ray: limits holder refused to adopt grant %r: %s", rid, error)
            return False
        if grant is not None:
            with self._lock:
                self._grants[rid] = grant
        return grant is not None

    def _stats(self, rid: int) -> None:
        self._reply(rid, self.ledger.stats())

    def _checked(self, amounts: Any) -> dict[str, float]:
        """``amounts`` if it maps known keys to numbers from 0 to their capacity; ConfigError otherwise."""
        if not isinstance(amounts, dict):
            raise ConfigError(f"amounts must be a dict of key -> units (got {type(amounts).__name__})")
        limits = self.ledger.limits
        for key, amount in amounts.items():
            if key not in limits:
                raise ConfigError(f"unknown limit key {key!r}; this holder has: {', '.join(limits)}")
            _check_units(f"requested {key!r}", amount, limits[key].capacity)
        return dict(amounts)

    def _check_new(self, rid: Any) -> None:
        """ConfigError unless ``rid`` is a request id this session does not use yet."""
        if not _is_rid(rid):
            raise ConfigError(f"request id {rid!r} must be an integer")
        with self._lock:
            if rid in self._grants or rid in self._waiters:
                raise ConfigError(f"request id {rid} is in use already")

    def mute(self) -> None:
        """From now on answer nothing: grants still arriving are released."""
        with self._lock:
            self._closed = True

    def end(self) -> None:
        """Answer nothing more, and hang up."""
        self.mute()
        hang_up(self.conn)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            waiters, self._waiters = list(self._waiters.values()), {}
            grants, self._grants = list(self._grants.values()), {}
        for waiter in waiters:
            self.ledger.cancel(waiter)  # one granted meanwhile is released by _granted()
        for grant in grants:
            self.ledger.release(grant, None)
        self.conn.close()
        self._on_close(self)


OPERATIONS: dict[str, tuple[Callable[..., None], int]] = {  # name -> (method, arguments after the rid)
    "acq": (Session._acq, 2),
    "cancel": (Session._cancel, 0),
    "rel": (Session._rel, 1),
    "adopt": (Session._adopt, 1),
    "stats": (Session._stats, 0),
}


def _load(data: bytes) -> Any:
    """The message in ``data``; None if it cannot be read (answered as a bad message)."""
    try:
        return pickle.loads(data)
    except Exception as exc:  # unpickling garbage raises many kinds of error; any is a bad message
        log.debug("concurry_ray: limits holder got an unreadable message: %r", exc)
        return None


def _parse(message: Any) -> tuple[Callable[..., None], tuple]:
    """The method a message calls and its arguments (the rid first); ConfigError if it is not a limits message."""
    operation, arity = None, -1
    if _rid_of(message) is not None and isinstance(message[0], str):
        operation, arity = OPERATIONS.get(message[0], (None, -1))
    if operation is None or len(message) != arity + 2:
        raise ConfigError(f"not a limits message: {message!r:.200} (operations: {', '.join(OPERATIONS)})")
    return operation, message[1:]


def _rid_of(message: Any) -> Optional[int]:
    """The request id of a message, if it has one."""
    if isinstance(message, tuple) and len(message) > 1 and _is_rid(message[1]):
        return message[1]
    return None


def _is_rid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_units(what: str, value: Any, upper: float) -> None:
    """ConfigError unless ``value`` is a finite number from 0 to ``upper``."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 <= value <= upper):
        raise ConfigError(f"{what}={value!r} must be a number from 0 to {upper:g}")


def _check_usage(usage: Any, granted: dict) -> None:
    """ConfigError unless ``usage`` is None or maps granted keys to numbers from 0 to the amount granted."""
    if usage is None:
        return
    if not isinstance(usage, dict):
        raise ConfigError(f"usage must be None or a dict of key -> units (got {type(usage).__name__})")
    for key, used in usage.items():
        if key not in granted:
            raise ConfigError(f"usage of {key!r} was reported but it was not granted")
        _check_units(f"usage {key!r}", used, granted[key])


class _Watchdog:
    """Hangs up a connection after ``seconds`` unless stopped first."""

    def __init__(self, conn: Connection, seconds: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._fired = self._stopped = False
        self._entry = call_at(time.monotonic() + seconds, self._fire)

    def _fire(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._fired = True
        hang_up(self._conn)

    def stop(self) -> bool:
        """Stop watching; False if it hung up already."""
        self._entry.cancel()
        with self._lock:
            self._stopped = True
            return not self._fired


def authenticate(conn: Connection, authkey: bytes, seconds: float, server: bool) -> None:
    """The ``multiprocessing`` handshake, both ways, within ``seconds`` (a silent peer is hung up on).

    Raises AuthenticationError for a wrong key, EOFError or OSError (TimeoutError
    when the time ran out) for a peer that did not complete it.
    """
    watchdog = _Watchdog(conn, seconds)
    try:
        if server:
            deliver_challenge(conn, authkey)
            answer_challenge(conn, authkey)
        else:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
    except (OSError, EOFError) as exc:
        if watchdog.stop():
            raise
        raise TimeoutError(f"no handshake within {seconds:g} s") from exc
    if not watchdog.stop():
        raise TimeoutError(f"no handshake within {seconds:g} s")


def _socket_of(conn: Connection) -> socket.socket:
    """A socket object for the connection's descriptor (closing it leaves the connection open)."""
    return socket.socket(fileno=os.dup(conn.fileno()))


def hang_up(conn: Connection) -> None:
    """End a connection: the peer sees it end, and our thread reading it wakes up and closes it."""
    try:
        with _socket_of(conn) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its reader


def tune_tcp(conn: Connection) -> None:
    """Send small messages at once (no Nagle delay) and notice a peer host that vanished (about 11 s)."""
    with _socket_of(conn) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
