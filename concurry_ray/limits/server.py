"""Serve a ledger to other processes over ``multiprocessing.connection``.

The process-mode holder runs a :class:`Server` in the driver; the Ray holder runs
one inside its detached actor. Each client process keeps one connection, served
by one thread here. Messages (client -> server; ``rid`` is the client's request id)::

    ("acq", rid, amounts, wait)   -> (rid, True) when granted; (rid, False) at once if not and not ``wait``
    ("cancel", rid)               -> (rid, False) if still waiting (a grant sent already stands)
    ("rel", rid, usage)           end acquisition ``rid``; no reply
    ("adopt", rid, {rid: amounts}) -> (rid, True): count grants made by this holder's previous life
    ("stats", rid)                -> (rid, stats)

Waits are server-side and event-driven: a waiting request costs nothing until the
ledger grants it. When a connection closes -- the client process ended, was
killed, or lost the network -- everything it held is released and its waiting
requests are withdrawn, so a dead worker never keeps a slot.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import Any, Optional

from .ledger import Grant, Ledger, Waiter

log = logging.getLogger("concurry_ray")

KEEPALIVE = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 2, "TCP_KEEPCNT": 3}


class Server:
    """Accepts connections to one ledger until ``close()``."""

    def __init__(self, ledger: Ledger, host: Optional[str] = None) -> None:
        self.ledger = ledger
        self.family = "AF_INET" if host else "AF_UNIX"
        self.authkey = os.urandom(32)
        self._listener = Listener((host, 0) if host else None, self.family, authkey=self.authkey)
        self.address = self._listener.address
        self._sessions: set[Session] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="concurry-limits-accept", daemon=True).start()

    @property
    def locator(self) -> tuple:
        """What a client needs to connect: (address, family, authkey)."""
        return (self.address, self.family, self.authkey)

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except (OSError, EOFError, AuthenticationError) as exc:
                if self._closed:
                    return
                log.debug("concurry_ray: limits server refused a connection: %s", exc)
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                session = Session(self.ledger, conn, self._sessions.discard)
                self._sessions.add(session)
            if self.family == "AF_INET":
                tune_tcp(conn)
            threading.Thread(target=session.run, name="concurry-limits-session", daemon=True).start()

    def close(self) -> None:
        """Stop accepting and drop every connection (their clients see the holder gone)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions)
        try:
            Client(self.address, self.family, authkey=self.authkey).close()  # wakes accept()
        except OSError:
            pass
        self._listener.close()
        for session in sessions:  # all first: a session's grants, released as it ends, must not go to another
            session.mute()
        for session in sessions:
            session.end()


class Session:
    """One client connection: its grants and waiting requests, released when it closes."""

    def __init__(self, ledger: Ledger, conn: Connection, on_close) -> None:
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
                message = pickle.loads(self.conn.recv_bytes())
                getattr(self, "_" + message[0])(*message[1:])
        except (EOFError, OSError):
            pass
        finally:
            self._close()

    def _reply(self, rid: int, value: Any) -> None:
        try:
            with self._lock:
                self.conn.send_bytes(pickle.dumps((rid, value)))
        except (OSError, ValueError):
            pass  # the reader sees the closed connection and releases everything

    def _acq(self, rid: int, amounts: dict, wait: bool) -> None:
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

    def _rel(self, rid: int, usage: Optional[dict]) -> None:
        grant = self._grants.pop(rid, None)
        if grant is not None:
            self.ledger.release(grant, usage)

    def _adopt(self, rid: int, held: dict) -> None:
        for held_rid, amounts in held.items():
            self._grants[held_rid] = self.ledger.adopt(amounts)
        self._reply(rid, True)

    def _stats(self, rid: int) -> None:
        self._reply(rid, self.ledger.stats())

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
