"""The balancer actor of a Ray pool: membership and load figures shared by every handle.

Every copy of a Ray pool handle (the driver's, and any that a Ray task, actor or
Serve replica unpickled) dispatches calls straight to the worker actors. The
balancer is not on that path: handles report their counters to it in batches,
and get back the loads other handles put on each worker, the membership version,
and (on request) the members themselves; a copy that goes idle or stops leaves,
and the balancer keeps what it counted. It creates, replaces and retires the
worker actors, so all handles agree on who the workers are, and it scales an
elastic pool (see ``scaling.py``); since it owns the workers, they die with it,
and it dies with the driver that created the pool (unless the pool is detached).

If its process dies, Ray restarts it (``max_restarts=-1``): the restarted
balancer starts the pool's first workers again on its first call, and every
handle moves to them when it next reports or sees a worker die. Counters start
again from zero; calls in flight at the crash fail with WorkerCrashedError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any, Optional

import ray

from ..errors import ConfigError
from ..pools.autoscale import TICK_SECONDS
from ..protocol import WorkerSpec
from .actor import start_actor
from .compat import actor_was_restarted
from .naming import NAMESPACE, balancer_name, pool_name, worker_name
from .outcomes import unwrap_ray_error
from .scaling import RETIRE_GRACE_SECONDS, BalancerScaler

class InitFailed(Exception):
    """A worker constructor failed; args[0] is (message, cause) for rebuild_init_error."""


Counters = tuple[int, int, int, int]  # dispatched, in_flight, completed, failed
LOOKUP_TIMEOUT = 60.0
RETIRE_WAIT_SECONDS = 60.0
"""How long a retired worker waits, after its grace, for the calls handles report in flight on it."""
COUNTS_TIMEOUT = 5.0
"""How long stats wait for a busy worker's own counts (a plain actor answers on its control thread)."""


class PoolBalancer:
    """Owns the worker actors of one Ray pool and aggregates what handles report."""

    def __init__(
        self, template: WorkerSpec, actor_options: dict, size: int, pool: str, definition: dict, creator: str
    ) -> None:
        self._template = template
        self._actor_options = actor_options
        self._about = {"pool": pool, "definition": definition, "creator": creator}
        self._rebuild = size if actor_was_restarted() else 0
        self._rebuilding: Any = None  # the task that starts the workers again after a restart
        self._replacing: dict[int, Any] = {}  # index -> the task replacing that worker
        self._failed: dict[int, Any] = {}  # index -> why its last replacement could not be built
        self._members: dict[int, Any] = {}
        self._restarts: dict[int, int] = {}
        self._tokens: dict[int, str] = {}  # index -> the token its current worker tells of changes with
        self._counted: dict[int, tuple[int, int, int]] = {}  # index -> its worker's own counts, as last read
        self._changed: set[int] = set()  # workers whose counts changed since they were last read
        self._next_index = 0
        self._version = uuid.uuid4().int >> 80  # differs between incarnations, so handles notice a restart
        self._reports: dict[str, dict[int, Counters]] = {}
        self._dispatched: dict[str, int] = {}
        self._departed: dict[int, Counters] = {}  # what handles that left counted, per worker
        self._departed_dispatched = 0
        self._queued: dict[str, int] = {}  # per handle: calls waiting in it for a worker
        self._retiring: dict[int, Any] = {}  # index -> a retired worker that has not ended yet
        options = template.options
        self._scaler = BalancerScaler(self, options, template.extras.get("limits")) if options.elastic else None

    def _spec(self, index: int) -> WorkerSpec:
        return dataclasses.replace(self._template, label=f"{self._template.label}#{index} (ray)")

    async def _started(self, specs: dict[int, WorkerSpec]) -> dict[int, Any]:
        """Start actors and wait until built; raise InitFailed carrying the constructor's error."""
        pool = self._about["pool"]
        actors = {i: start_actor(spec, self._actor_options, worker_name(pool, i)) for i, spec in specs.items()}
        try:
            outcomes = await asyncio.gather(*(a.__concurry_ready__.remote() for a in actors.values()),
                                            return_exceptions=True)
        except asyncio.CancelledError:  # the pool is ending while they start (or wait for room)
            _kill_all(actors.values())
            raise
        failure = next((o for o in outcomes if o is not None), None)
        if failure is not None:
            _kill_all(actors.values())
            if isinstance(failure, BaseException):
                failure = (f"a worker of the pool could not start: {unwrap(failure)}", unwrap(failure))
            raise InitFailed(failure)
        me = ray.get_runtime_context().current_actor
        for index, actor in actors.items():
            self._tokens[index] = uuid.uuid4().hex
            self._counted.pop(index, None)  # not read yet: the next stats read asks it
            actor.__concurry_report_to__.remote(me, index, self._tokens[index])
        return actors

    def _current(self) -> tuple[int, dict[int, Any]]:
        return self._version, dict(self._members)

    async def _rebuilt(self) -> None:
        """After a restart, start the pool's first workers again (once; every call waits for it);
        and, for an elastic pool, start scaling."""
        if self._scaler is not None:
            self._scaler.start()
        if self._rebuild and self._rebuilding is None:
            self._rebuilding = asyncio.ensure_future(self.grow(self._rebuild))
        if self._rebuilding is not None:
            await asyncio.shield(self._rebuilding)

    def about(self) -> dict:
        """The pool's name, its definition (class and options, as text) and the id of the handle that made it."""
        return self._about

    async def attach_info(self) -> tuple[type, Any, dict, int, dict[int, Any]]:
        """What a handle needs to attach without knowing the class: class, options, extras, version, members."""
        await self._rebuilt()
        template = self._template
        return (template.cls, template.options, template.extras, *self._current())

    async def members(self) -> tuple[int, dict[int, Any]]:
        """The membership version and the worker actor of each index."""
        await self._rebuilt()
        return self._current()

    async def grow(self, count: int) -> tuple[int, dict[int, Any], Any]:
        """Start ``count`` more workers: (version, members, None), or (.., .., (message, cause)) if one failed."""
        if self._scaler is not None:
            self._scaler.start()
        indexes = range(self._next_index, self._next_index + count)
        self._next_index += count
        try:
            actors = await self._started({i: self._spec(i) for i in indexes})
        except InitFailed as failed:
            return (*self._current(), failed.args[0])
        self._members.update(actors)
        self._restarts.update({i: 0 for i in actors})
        self._version += 1
        return (*self._current(), None)

    async def replace(self, index: int, dead_actor: Any) -> tuple[int, dict[int, Any], Any]:
        """Replace a dead worker once, however many handles report its death (at the same time too).

        Returns (version, members, failure): ``failure`` is the constructor's (message, cause)
        when the replacement could not be built (the worker then leaves the pool), else None.
        """
        await self._rebuilt()
        if index not in self._replacing:
            current = self._members.get(index)
            if current is None or current != dead_actor:  # Ray's actor handles compare by actor id
                return (*self._current(), None if current is not None else self._failed.get(index))
            _kill_all([current])  # a worker only unreachable for a while must not run on beside its replacement
            task = self._replacing[index] = asyncio.ensure_future(self._replace(index))
            task.add_done_callback(lambda _: self._replacing.pop(index, None))
        return await asyncio.shield(self._replacing[index])

    async def _replace(self, index: int) -> tuple[int, dict[int, Any], Any]:
        try:
            (actor,) = (await self._started({index: self._spec(index)})).values()
        except InitFailed as failed:
            del self._members[index]
            self._failed[index] = failed.args[0]
            self._version += 1
            return (*self._current(), failed.args[0])
        self._members[index] = actor
        self._restarts[index] += 1
        self._version += 1
        return (*self._current(), None)

    def retire(self, indexes: list[int]) -> int:
        """Remove workers from the pool. Each ends ``RETIRE_GRACE_SECONDS`` later, once no handle
        reports calls in flight on it (a handle may not know yet, and still send it calls), and
        after the calls already sent to it."""
        for index in indexes:
            actor = self._leave_members(index)
            if actor is not None:
                self._retiring[index] = actor
                asyncio.ensure_future(self._end_when_unused(index))
        self._version += 1
        return self._version

    def _leave_members(self, index: int) -> Any:
        self._tokens.pop(index, None)
        self._counted.pop(index, None)
        self._changed.discard(index)
        return self._members.pop(index, None)

    async def _end_when_unused(self, index: int) -> None:
        await asyncio.sleep(RETIRE_GRACE_SECONDS)
        for _ in range(int(RETIRE_WAIT_SECONDS / TICK_SECONDS)):
            if not any(counters.get(index, (0, 0))[1] for counters in self._reports.values()):
                break
            await asyncio.sleep(TICK_SECONDS)
        actor = self._retiring.pop(index, None)
        if actor is not None:  # else the pool was drained or shut down meanwhile
            actor.__ray_terminate__.remote()

    def waiting(self) -> int:
        """Calls waiting in the handles for a worker, as last reported."""
        return sum(self._queued.values())

    def loads(self) -> dict[int, tuple[int, int]]:
        """Per worker, the calls in flight and the calls sent, from every handle."""
        return {i: (s[1], s[0]) for i, s in self._totals().items()}

    async def report(
        self, handle_id: str, counters: dict[int, Counters], dispatched: int, queued: int = 0
    ) -> tuple[int, dict[int, tuple[int, int]], int]:
        """Store one handle's counters and the calls waiting in it for a worker; return the
        version, every worker's in-flight and total calls, and how many handles are joined
        (have reported and not left)."""
        await self._rebuilt()
        self._store(handle_id, counters, dispatched, queued)
        return self._version, self.loads(), len(self._reports)

    def _store(self, handle_id: str, counters: dict[int, Counters], dispatched: int, queued: int = 0) -> None:
        self._reports[handle_id] = counters
        self._dispatched[handle_id] = dispatched
        self._queued[handle_id] = queued

    def leave(self, handle_id: str, counters: dict[int, Counters], dispatched: int) -> None:
        """A handle stopped, or has had nothing in flight for a while: keep what it counted, forget it."""
        self._reports.pop(handle_id, None)
        self._dispatched.pop(handle_id, None)
        self._queued.pop(handle_id, None)
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

    def worker_changed(self, index: int, token: str) -> None:
        """A worker's own counts changed since they were last read (see ``counts.py``)."""
        if self._tokens.get(index) == token:
            self._changed.add(index)

    async def stats(self, report: Optional[tuple[str, dict[int, Counters], int, int]] = None) -> dict:
        """Aggregated figures of every handle: dispatched calls and per-worker health.

        ``report`` is the asking handle's report (handle id, counters, dispatched, queued), stored
        first, so one round trip brings the figures up to date. Completed and failed calls,
        and retries, are also counted by the workers themselves (see ``counts.py``), so a
        call whose result was delivered is counted even before its handle reported it.
        Only the workers whose counts changed since they were last read are asked.
        """
        if report is not None:
            self._store(*report)
        totals = self._totals()  # taken with the figures below, before reports can arrive during the await
        reported_total, handles = self._departed_dispatched + sum(self._dispatched.values()), len(self._reports)
        counted = await self._worker_counts(list(totals))
        workers, extra = {}, 0
        for index, (sent, in_flight, completed, failed) in totals.items():
            done = counted.get(index, (0, 0, None))
            completed, failed = max(completed, done[0]), max(failed, done[1])
            dispatched = max(sent, completed + failed)
            extra += dispatched - sent
            workers[index] = {
                "alive": True,
                "restarts": self._restarts.get(index, 0),
                "in_flight": min(in_flight, dispatched - completed - failed),
                "completed": completed,
                "failed": failed,
                "retries": done[2],
                "dispatched": dispatched,
            }
        scaling = self._scaler.state.stats() if self._scaler is not None else {}
        return {"total_dispatched": reported_total + extra, "workers": workers, "handles": handles,
                "scaling": scaling, "version": self._version}

    async def _worker_counts(self, indexes: list[int]) -> dict[int, tuple[int, int, int]]:
        """Each worker's own counts of calls completed and failed, and of retries: as last read,
        or read now if they changed since (or were never read). A worker that does not answer
        keeps its last counts, or is left out."""
        asked = {i: self._members[i] for i in indexes if i in self._members
                 and (i in self._changed or i not in self._counted)}
        self._changed.difference_update(asked)  # a change told from now on is read at the next read
        tokens = {i: self._tokens.get(i) for i in asked}
        answers = await asyncio.gather(
            *(asyncio.wait_for(actor.__concurry_counts__.remote(), COUNTS_TIMEOUT) for actor in asked.values()),
            return_exceptions=True)
        for index, answer in zip(asked, answers):
            if isinstance(answer, BaseException):
                self._changed.add(index)
            elif self._tokens.get(index) == tokens[index]:  # the same worker, still a member
                self._counted[index] = tuple(answer)
        return {i: self._counted[i] for i in indexes if i in self._counted}

    async def drain(self, timeout: float) -> int:
        """Stop scaling and end every worker (each exits after the calls already sent to it);
        kill those still running after ``timeout`` seconds. Returns how many had to be killed."""
        actors = self._end_membership()
        for actor in actors:
            actor.__ray_terminate__.remote()
        exits = [asyncio.ensure_future(_exited(actor)) for actor in actors]
        if not exits:
            return 0
        _, running = await asyncio.wait(exits, timeout=timeout)
        for actor, exit_ in zip(actors, exits):
            if exit_ in running:
                exit_.cancel()
                ray.kill(actor, no_restart=True)
        return len(running)

    def shutdown(self) -> None:
        """Stop scaling and kill every worker actor at once."""
        _kill_all(self._end_membership())

    def _end_membership(self) -> list:
        """Stop scaling; take every worker, retired ones too, out of the pool and return them."""
        if self._scaler is not None:
            self._scaler.stop()
        actors = [self._leave_members(index) for index in list(self._members)] + list(self._retiring.values())
        self._retiring.clear()
        self._version += 1
        return actors


RemotePoolBalancer = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(PoolBalancer)


def _kill_all(actors: Any) -> None:
    for actor in actors:
        ray.kill(actor, no_restart=True)


async def _exited(actor: Any) -> None:
    """Wait until ``actor`` has exited (a call to a gone actor fails)."""
    try:
        while True:
            await actor.__concurry_ready__.remote()
            await asyncio.sleep(0.05)
    except ray.exceptions.RayError:
        return


HANDLE_OPTIONS = ("blocking", "unwrap_futures", "call_timeout")
"""Options that shape one handle, not the pool: handles of one pool may differ in them."""


def definition_of(blueprint: Any) -> dict:
    """What two handles of one named pool must agree on: the class and the pool's options, as text."""
    options = blueprint.options.model_dump(exclude=set(HANDLE_OPTIONS) | {"limits"})
    limits = blueprint.options.limits
    options["limits"] = None if limits is None else repr(limits)
    cls = blueprint.cls
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "options": {k: repr(v) for k, v in sorted(options.items())}}


def open_balancer(blueprint: Any, handle_id: str) -> tuple[Any, bool]:
    """The pool's balancer actor, and whether this handle created it (and so starts the workers).

    ConfigError, showing both definitions, if a pool of that name exists with another definition.
    """
    options = blueprint.options
    pool = pool_name(options.name, blueprint.cls)
    template = dataclasses.replace(blueprint.spec(), label=blueprint.label)
    definition = definition_of(blueprint)
    actor_options = {"name": balancer_name(pool), "namespace": NAMESPACE, "get_if_exists": options.name is not None}
    if options.lifetime is not None:
        actor_options["lifetime"] = options.lifetime
    balancer = RemotePoolBalancer.options(**actor_options).remote(
        template, blueprint.backend.actor_options, options.initial_size, pool, definition, handle_id
    )
    if options.name is None:
        return balancer, True
    about = ray.get(balancer.about.remote(), timeout=LOOKUP_TIMEOUT)
    if about["creator"] == handle_id:
        return balancer, True
    if about["definition"] != definition:
        raise ConfigError(
            f"a pool named {pool!r} exists with another definition; attach with the same class and options, "
            f"use concurry_ray.get_pool({pool!r}), or pick another name.\n"
            f"  existing: {about['definition']}\n  yours:    {definition}"
        )
    return balancer, False


def unwrap(error: BaseException) -> BaseException:
    """The user-facing form of an error raised by a balancer call."""
    return unwrap_ray_error(error, "the pool's balancer actor")
