"""The balancer actor of a Ray pool: membership and load figures shared by every handle.

Every copy of a Ray pool handle (the driver's, and any that a Ray task, actor or
Serve replica unpickled) dispatches calls straight to the worker actors. The
balancer is not on that path: handles report their counters to it in batches,
and get back the loads other handles put on each worker, the membership version,
and (on request) the members themselves; a copy that goes idle or stops leaves,
and the balancer keeps what it counted. It creates, replaces and retires the
worker actors, so all handles agree on who the workers are; since it owns them,
they die with it, and it dies with the driver that created the pool.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import ray

from ..protocol import WorkerSpec
from .actor import start_actor
from .outcomes import unwrap_ray_error

class InitFailed(Exception):
    """A worker constructor failed; args[0] is (message, cause) for rebuild_init_error."""


Counters = tuple[int, int, int, int]  # dispatched, in_flight, completed, failed


class PoolBalancer:
    """Owns the worker actors of one Ray pool and aggregates what handles report."""

    def __init__(self, template: WorkerSpec, actor_options: dict) -> None:
        self._template = template
        self._actor_options = actor_options
        self._members: dict[int, Any] = {}
        self._restarts: dict[int, int] = {}
        self._next_index = 0
        self._version = 0
        self._reports: dict[str, dict[int, Counters]] = {}
        self._dispatched: dict[str, int] = {}
        self._departed: dict[int, Counters] = {}  # what handles that left counted, per worker
        self._departed_dispatched = 0

    def _spec(self, index: int) -> WorkerSpec:
        return dataclasses.replace(self._template, label=f"{self._template.label}#{index} (ray)")

    async def _started(self, specs: dict[int, WorkerSpec]) -> dict[int, Any]:
        """Start actors and wait until built; raise InitFailed carrying the constructor's error."""
        actors = {index: start_actor(spec, self._actor_options) for index, spec in specs.items()}
        outcomes = await asyncio.gather(*(a.__concurry_ready__.remote() for a in actors.values()), return_exceptions=True)
        failure = next((o for o in outcomes if o is not None), None)
        if failure is not None:
            for actor in actors.values():
                ray.kill(actor, no_restart=True)
            if isinstance(failure, BaseException):
                failure = (f"a worker of the pool could not start: {unwrap(failure)}", unwrap(failure))
            raise InitFailed(failure)
        return actors

    def members(self) -> tuple[int, dict[int, Any]]:
        """The membership version and the worker actor of each index."""
        return self._version, dict(self._members)

    async def grow(self, count: int) -> tuple[int, dict[int, Any], Any]:
        """Start ``count`` more workers: (version, members, None), or (.., .., (message, cause)) if one failed."""
        indexes = range(self._next_index, self._next_index + count)
        self._next_index += count
        try:
            actors = await self._started({i: self._spec(i) for i in indexes})
        except InitFailed as failed:
            return (*self.members(), failed.args[0])
        self._members.update(actors)
        self._restarts.update({i: 0 for i in actors})
        self._version += 1
        return (*self.members(), None)

    async def replace(self, index: int, dead_actor_id: str) -> tuple[int, dict[int, Any]]:
        """Replace a dead worker once, however many handles report its death."""
        current = self._members.get(index)
        if current is not None and current._actor_id.hex() == dead_actor_id:
            try:
                (actor,) = (await self._started({index: self._spec(index)})).values()
                self._members[index] = actor
                self._restarts[index] += 1
            except InitFailed:
                del self._members[index]
            self._version += 1
        return self.members()

    def retire(self, indexes: list[int]) -> int:
        """Remove workers from the pool; each exits after the calls already sent to it."""
        for index in indexes:
            actor = self._members.pop(index, None)
            if actor is not None:
                actor.__ray_terminate__.remote()
        self._version += 1
        return self._version

    def report(
        self, handle_id: str, counters: dict[int, Counters], dispatched: int
    ) -> tuple[int, dict[int, tuple[int, int]], int]:
        """Store one handle's counters; return the version, every worker's in-flight and total
        calls, and how many handles are joined (have reported and not left)."""
        self._reports[handle_id] = counters
        self._dispatched[handle_id] = dispatched
        return self._version, {i: (s[1], s[0]) for i, s in self._totals().items()}, len(self._reports)

    def leave(self, handle_id: str, counters: dict[int, Counters], dispatched: int) -> None:
        """A handle stopped, or has had nothing in flight for a while: keep what it counted, forget it."""
        self._reports.pop(handle_id, None)
        self._dispatched.pop(handle_id, None)
        self._departed_dispatched += dispatched
        for index, (sent, _, completed, failed) in counters.items():
            past = self._departed.get(index, (0, 0, 0, 0))
            self._departed[index] = (past[0] + sent, 0, past[2] + completed, past[3] + failed)

    def _totals(self) -> dict[int, list[int]]:
        totals = {index: list(self._departed.get(index, (0, 0, 0, 0))) for index in self._members}
        for counters in self._reports.values():
            for index, values in counters.items():
                if index in totals:
                    totals[index] = [a + b for a, b in zip(totals[index], values)]
        return totals

    def stats(self) -> dict:
        """Aggregated figures of every handle: dispatched calls and per-worker health."""
        workers = {
            index: {
                "alive": True,
                "restarts": self._restarts.get(index, 0),
                "in_flight": values[1],
                "completed": values[2],
                "failed": values[3],
                "dispatched": values[0],
            }
            for index, values in self._totals().items()
        }
        total = self._departed_dispatched + sum(self._dispatched.values())
        return {"total_dispatched": total, "workers": workers, "handles": len(self._reports)}

    def shutdown(self) -> None:
        """Kill every worker actor at once."""
        for actor in self._members.values():
            ray.kill(actor, no_restart=True)
        self._members.clear()
        self._version += 1


RemotePoolBalancer = ray.remote(num_cpus=0, max_restarts=0)(PoolBalancer)


def unwrap(error: BaseException) -> BaseException:
    """The user-facing form of an error raised by a balancer call."""
    return unwrap_ray_error(error, "the pool's balancer actor")
