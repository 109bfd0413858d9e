"""The process-mode holder: a ledger in this process, served to worker processes.

Code in this process uses the ledger directly (microseconds). The first time the
LimitSet is pickled -- when a process pool sends it to its workers -- a
:class:`~.server.Server` starts on a Unix socket, and the copy each worker
unpickles is a :class:`~.client.RemoteHolder` connected to it.
"""

from __future__ import annotations

import os
import threading
from typing import Optional, Sequence

from ..modes import LOCAL_HOLDER
from .client import RemoteHolder, client_for
from .holders import Holder, LocalHolder, PoolOwner, named_local
from .server import Server

_SERVED: dict[str, tuple[int, "ServedHolder"]] = {}


class ServedHolder(LocalHolder):
    """A ledger here; pickles into a client of the server that serves it."""

    stands_in_for = frozenset({LOCAL_HOLDER, f"{__name__}:open_served"})

    def __init__(self, ledger) -> None:
        super().__init__(ledger)
        self._server: Optional[Server] = None
        self._lock = threading.Lock()

    def _serve(self) -> Server:
        with self._lock:
            if self._server is None:
                self._server = Server(self.ledger)
                _SERVED[self._server.address] = (os.getpid(), self)
            return self._server

    def __reduce__(self):
        return (attach, (self._serve().locator,))

    def close(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            _SERVED.pop(server.address, None)
            server.close()


def attach(locator: tuple) -> Holder:
    """The holder a pickled ServedHolder becomes: itself in its own process, a client elsewhere."""
    served = _SERVED.get(locator[0])
    if served is not None and served[0] == os.getpid():
        return served[1]
    return client_for(RemoteHolder, locator[0], locator, None, ServedHolder.stands_in_for)


def open_served(limits: Sequence, name: Optional[str], owner: Optional[PoolOwner] = None) -> Holder:
    """The holder of a shared set in process mode (served by this process; ``owner`` changes nothing)."""
    return named_local(name, limits, ServedHolder, owner)
