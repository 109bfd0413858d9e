"""Autoscaling of a Ray pool, done inside its balancer actor.

The balancer of an elastic Ray pool scales it, so the pool keeps scaling when no
handle manages it: a detached pool whose creator has gone, used by jobs and
Serve replicas that come and go. Every ``TICK_SECONDS`` a :class:`BalancerScaler`
reads what the handles reported (calls in flight and sent per worker, calls
waiting in them for a worker) and applies the same
:func:`~concurry_ray.pools.autoscale.plan` as thread and process pools use.

Each new worker starts in a task of its own, so one the cluster cannot place yet
holds up neither the calls (they go to the others) nor the next workers. A
retired worker leaves the members at once and ends ``RETIRE_GRACE_SECONDS``
later (see ``PoolBalancer.retire``): a handle's view of the members is never
older than ``STALE_VIEW_SECONDS`` when it dispatches, so no call reaches a
worker after it ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from ..pools.autoscale import TICK_SECONDS, ScalingState, limits_wait

log = logging.getLogger("concurry_ray")
STALE_VIEW_SECONDS = 1.0
"""The oldest view of the members that a handle of an elastic pool, or a copy, dispatches with."""
RETIRE_GRACE_SECONDS = 3.0
"""How long a retired worker still takes calls: longer than any handle's view can be stale."""


class BalancerScaler:
    """Grows and shrinks the pool of ``balancer`` (a PoolBalancer) through its public methods."""

    def __init__(self, balancer: Any, options: Any, limits: Any) -> None:
        self.balancer = balancer
        self.limits = limits
        self.state = ScalingState(options)
        self._task: Optional[asyncio.Future] = None
        self._adding: set = set()  # the tasks starting a worker

    def start(self) -> None:
        """Start scaling (on the balancer's event loop), once."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self._tick()
            except Exception as exc:  # e.g. the pool's limits holder cannot be reached: try again later
                log.warning("concurry_ray: scaling the %s pool failed: %r", self.balancer.about()["pool"], exc)

    async def _tick(self) -> None:
        waiting = self.balancer.waiting()
        limits_waiting = None
        if waiting and self.limits is not None:  # reading a Ray holder blocks: off the event loop
            limits_waiting = await asyncio.get_running_loop().run_in_executor(None, limits_wait, self.limits)
        loads = self.balancer.loads()
        idle_for = self.state.idle_times(loads)
        # A worker no handle has sent a call yet is still on its way for the calls waiting: the
        # handles hear of it at their next report. Growing again before then over-shoots (and,
        # under limits, before it shows whether its call would wait on a limit too).
        joining = [index for index, (_, sent) in loads.items() if sent == 0] if waiting else []
        for index in joining:
            del idle_for[index]
        step = self.state.step(idle_for, waiting, limits_waiting, len(joining))
        for _ in range(step.grow):
            self._add_worker()
        if step.retire:
            self.balancer.retire(step.retire)
            self.state.scaled_down += len(step.retire)

    def _add_worker(self) -> None:
        self.state.starting += 1
        task = asyncio.ensure_future(self.balancer.grow(1))
        self._adding.add(task)
        task.add_done_callback(self._added)

    def _added(self, task: asyncio.Future) -> None:
        self._adding.discard(task)
        self.state.starting -= 1
        if task.cancelled():
            return
        failure = task.exception() or task.result()[2]
        if failure is None:
            self.state.scaled_up += 1
        else:
            log.warning("concurry_ray: the %s pool could not add a worker: %r", self.balancer.about()["pool"], failure)

    def stop(self) -> None:
        """Stop scaling, and starting workers (the pool is ending)."""
        for task in [self._task, *self._adding]:
            if task is not None:
                task.cancel()
