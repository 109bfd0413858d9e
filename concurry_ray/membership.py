"""Who the workers of a pool are: starting, replacing and retiring them.

A pool asks its backend for a membership. The local one (thread and process
modes, and single workers everywhere) spawns clients itself. The Ray one
(``concurry_ray.ray.membership``) delegates to a balancer actor so that every
copy of a pool handle, in any process of the cluster, sees the same workers and
the same statistics.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional

from .futures import chain, settle
from .protocol import WorkerClient

if TYPE_CHECKING:
    from .pool import Pool, Slot

log = logging.getLogger("concurry_ray")


class LocalMembership:
    """Workers spawned and replaced by the pool handle itself."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool

    def initial(self, count: int) -> list[tuple[int, WorkerClient]]:
        """The pool's first workers."""
        return self.start(count)

    def start(self, count: int) -> list[tuple[int, WorkerClient]]:
        """Start ``count`` workers, wait until built; WorkerInitError if any constructor failed."""
        clients = [self.pool._backend.spawn(self.pool._spec()) for _ in range(count)]
        errors = [c.ready.exception() for c in clients]
        if any(errors):
            for client in clients:
                client.stop(time.monotonic())
            raise next(e for e in errors if e is not None)
        first = len(self.pool._slots)
        return list(enumerate(clients, start=first))

    def replace(self, slot: "Slot", client: WorkerClient, error: BaseException, unstarted: list) -> None:
        """A worker died: put a fresh one in its slot and re-send the calls it never started."""
        pool = self.pool
        with pool._lock:
            if pool._stopped or slot.retired or slot.client is not client:
                fail_all(unstarted, error)
                return
            log.warning("concurry_ray: %s; starting a replacement", error)
            slot.restarts += 1
            pool._install(slot, pool._backend.spawn(pool._spec()))
            resend(pool, slot, unstarted)
            pool._release_parked()

    def retire(self, slots: list["Slot"]) -> None:
        """Stop workers removed by a resize, after their calls finish."""
        for slot in slots:
            slot.client.stop(None)

    def touched(self) -> None:
        """Called after every dispatch and completion (the Ray membership reports them)."""

    def others_load(self) -> dict[int, tuple[int, int]]:
        """In-flight and total calls other handles sent to each worker (none for local pools)."""
        return {}

    def stats(self, local: dict) -> dict:
        """The pool statistics; local pools have only their own."""
        return local

    def stop_clients(self, deadline: Optional[float]) -> None:
        """Stop every worker of the pool, in parallel, by ``deadline``."""
        stop_all([s.client for s in self.pool._slots.values()] + list(self.pool._on_demand_clients), deadline)

    def reduce(self) -> Any:
        """How a handle is pickled: local pools cannot leave their process."""
        raise TypeError(
            f"a {self.pool._options.mode!r} pool handle cannot be pickled; only mode='ray' pools can be "
            "passed to other processes, tasks and actors"
        )


def stop_all(clients: list[WorkerClient], deadline: Optional[float]) -> None:
    """Stop clients in parallel threads and wait for all of them."""
    import threading

    threads = [threading.Thread(target=c.stop, args=(deadline,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def fail_all(unstarted: list, error: BaseException) -> None:
    """Fail (call, future) pairs that can no longer run."""
    for _, future in unstarted:
        settle(future, error=error)


def resend(pool: "Pool", slot: "Slot", unstarted: list) -> None:
    """Dispatch again calls that ``slot``'s dead worker never started (pool lock held)."""
    slot.hand_over([future for _, future in unstarted])
    for call, future in unstarted:
        try:
            chain(pool._dispatch_once(call), future)
        except Exception as exc:
            settle(future, error=exc)
