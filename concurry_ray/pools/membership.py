"""Who the workers of a pool are: starting, replacing and retiring them.

A pool's membership is chosen by its mode (the ``membership`` of its row in
``concurry_ray.modes``). The local one (thread and process modes, and single
workers everywhere) spawns clients itself. The Ray one
(``concurry_ray.ray.membership``) delegates to a balancer actor so that every
copy of a pool handle, in any process of the cluster, sees the same workers and
the same statistics. Either changes the pool only through its Dispatcher.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import WorkerInitError
from ..protocol import Backend, WorkerClient, WorkerSpec
from .dispatch import Dispatcher, Slot, fail_unstarted, stop_all

log = logging.getLogger("concurry_ray")
REBUILD_DELAYS = (0.1, 0.2, 0.4, 0.8)  # seconds before each new try when replacements' constructors keep failing


@dataclass
class Blueprint:
    """What a pool's workers are built from: the class, its arguments, options and shared extras."""

    cls: type
    args: tuple
    kwargs: dict
    options: Any
    extras: dict
    backend: Backend
    _ids: Any = field(default_factory=itertools.count, repr=False)

    @property
    def label(self) -> str:
        """The pool's name in logs and errors: its ``name`` option, else the class name."""
        return self.options.name or self.cls.__name__

    def spec(self) -> WorkerSpec:
        """The spec of one more worker (each gets the next number in its label)."""
        label = f"{self.label}#{next(self._ids)} ({self.options.mode})"
        return WorkerSpec(self.cls, self.args, self.kwargs, self.options, label, self.extras)

    def spawn(self) -> WorkerClient:
        """Start one more worker (its ``ready`` future tells when it is built)."""
        return self.backend.spawn(self.spec())


class LocalMembership:
    """Workers spawned and replaced by the pool handle itself."""

    stops_when_collected = True  # the handle is the only way to the workers: collecting it stops them
    scales_itself = False  # an elastic pool is scaled by an Autoscaler thread on the handle that manages it

    def __init__(self, blueprint: Blueprint, dispatcher: Dispatcher, attach: Any = None) -> None:
        self.blueprint = blueprint
        self.dispatcher = dispatcher
        self._build_failures: dict[int, int] = {}  # per slot: replacements in a row whose constructor failed
        self._indexes = itertools.count()  # slot indexes are never reused, so starts may run at once

    def initial(self, count: int) -> list[tuple[int, WorkerClient]]:
        """The pool's first workers."""
        return self.start(count)

    def start(self, count: int) -> list[tuple[int, WorkerClient]]:
        """Start ``count`` workers, wait until built; WorkerInitError if any constructor failed."""
        clients = [self.blueprint.spawn() for _ in range(count)]
        errors = [c.ready.exception() for c in clients]
        if any(errors):
            for client in clients:
                client.stop(time.monotonic())
            raise next(e for e in errors if e is not None)
        return [(next(self._indexes), client) for client in clients]

    def worker_died(self, slot: Slot, client: WorkerClient, error: BaseException, unstarted: list) -> None:
        """A worker died: put a fresh one in its slot and re-send the calls it never started.

        A worker that died of its constructor (``error`` is a WorkerInitError) is
        replaced after a growing pause (``REBUILD_DELAYS``); after the last one the
        slot is given up and the calls waiting for it fail with that error.
        """
        if self.dispatcher.closed or slot.retired or slot.client is not client:
            fail_unstarted(unstarted, error)
            return
        failures = self._build_failures.get(slot.index, 0) + 1 if isinstance(error, WorkerInitError) else 0
        self._build_failures[slot.index] = failures
        if failures > len(REBUILD_DELAYS):
            self._give_up(slot, error, unstarted)
            return
        log.warning("concurry_ray: %s; starting a replacement", error)
        if not failures:
            self._replace(slot, client, error, unstarted)
            return
        timer = threading.Timer(REBUILD_DELAYS[failures - 1], self._replace, (slot, client, error, unstarted))
        timer.daemon = True
        timer.start()

    def _replace(self, slot: Slot, dead: WorkerClient, error: BaseException, unstarted: list) -> None:
        """Put a fresh worker in place of ``dead`` and re-send ``unstarted`` (they fail if the pool stopped meanwhile)."""
        fresh = self.blueprint.spawn()
        if not self.dispatcher.swap(slot, dead, fresh):
            fresh.stop(time.monotonic())
            fail_unstarted(unstarted, error)
            return
        self.dispatcher.resend(slot, unstarted)

    def _give_up(self, slot: Slot, error: BaseException, unstarted: list) -> None:
        """No worker can be built for ``slot``: retire it and fail the calls waiting for it (all the
        pool's, if it was the last worker) with ``error``."""
        log.error("concurry_ray: no replacement could be built for %s: %s", slot.client.label, error)
        self.dispatcher.retire([slot.index])
        fail_unstarted(unstarted, error)
        self.dispatcher.no_worker_left(error)

    def swap_out(self, slot: Slot) -> None:
        """Put a fresh worker in place of ``slot``'s (an unhealthy one); the old one finishes its calls, then stops."""
        if self.dispatcher.closed or slot.retired:
            return
        self.dispatcher.install_all(self.start(1))
        self.retire(self.dispatcher.retire([slot.index]))

    def retire(self, slots: list[Slot]) -> None:
        """Stop, in the background, workers removed by a resize or a health check once their calls
        finish (the pool's ``stop(timeout)`` cuts that short)."""
        clients = [slot.client for slot in slots]
        if clients:
            threading.Thread(target=stop_all, args=(clients, None), name="concurry-retire", daemon=True).start()

    def touched(self) -> None:
        """Called after every dispatch and completion (the Ray membership reports them)."""

    def before_dispatch(self) -> None:
        """Called before every dispatch: the members here are always current."""

    def call_parked(self) -> None:
        """Called when a call waits in the pool's queue (the Autoscaler reads the queue itself)."""

    def others_load(self) -> dict[int, tuple[int, int]]:
        """In-flight and total calls other handles sent to each worker (none for local pools)."""
        return {}

    def stats(self, local: dict) -> dict:
        """The pool statistics; local pools have only their own."""
        return local

    @property
    def brings_worker_retries(self) -> bool:
        """Whether ``stats()`` brings each live worker's retries itself (so the handle need not ask)."""
        return False

    def stop_clients(self, deadline: Optional[float]) -> None:
        """Stop every worker of the pool, in parallel, by ``deadline``."""
        stop_all(self.dispatcher.clients(), deadline)

    @property
    def manages_pool(self) -> bool:
        """Whether this handle starts, replaces and health-checks the workers (copies of Ray handles do not)."""
        return True

    @property
    def ends_pool(self) -> bool:
        """Whether stopping this handle ends the pool and its own limits holder (not so for a Ray
        copy, a handle attached by name, or the creator of a detached pool)."""
        return True

    def reduce(self) -> Any:
        """How a handle is pickled: local pools cannot leave their process."""
        raise TypeError(
            f"a {self.blueprint.options.mode!r} pool handle cannot be pickled; only mode='ray' pools can be "
            "passed to other processes, tasks and actors"
        )
