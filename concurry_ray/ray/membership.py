"""Ray pools: membership through the pool's balancer actor, and handles that travel.

The handle a driver builds creates the balancer actor (which creates the worker
actors). Pickling the handle gives a small object: the balancer's handle plus
the worker class and options. Unpickled in a Ray task, actor or Serve replica,
it asks the balancer for the members and dispatches straight to them. Each copy
reports its counters to the balancer from a background thread that sleeps until
there is something to report and then sends one batch, so calls never wait for
the balancer. A copy that has had nothing in flight for ``IDLE_LEAVE_SECONDS``
leaves the balancer (which keeps what it counted) and its thread ends, so the
copies that every Ray task unpickles do not pile up; used again, it joins anew.

The balancer scales an elastic pool (see ``scaling.py``): a handle reports the
calls waiting in it for a worker, and keeps reporting while they wait, so it
learns of new workers as they join. A copy, and any handle of an elastic pool,
brings its view of the members up to date before it dispatches if that view is
older than ``STALE_VIEW_SECONDS`` (calls park meanwhile), so it never sends a
call to a worker that was retired and has ended.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from typing import Any, Optional

import ray

from ..errors import PoolStoppedError
from ..host import rebuild_init_error
from ..pools.dispatch import Dispatcher, Slot, fail_unstarted
from ..pools.membership import Blueprint, LocalMembership
from .backend import RayClient
from .balancer import Counters, open_balancer, unwrap
from .scaling import STALE_VIEW_SECONDS

log = logging.getLogger("concurry_ray")
REPORT_BATCH_SECONDS = 0.02
"""How long a handle that shares its pool with other handles gathers counters before it reports them."""
ALONE_REPORT_SECONDS = 0.5
"""The same for a pool's only handle: nobody needs its figures sooner, and get_pool_stats() reports
first. A report is a Ray call, so reporting every 20 ms cost a lone driver about 5 % per call."""
SHARED_AFTER_PICKLING_SECONDS = 5.0
"""How long the creating handle keeps to short batches after it was pickled, even before the copy
has joined the balancer; after that it follows the number of handles joined."""
IDLE_LEAVE_SECONDS = 2.0
"""How long a copy of a pool handle stays joined to the balancer with nothing to report."""
BALANCER_TIMEOUT = 120.0


@dataclasses.dataclass
class AttachInfo:
    """What a pickled Ray pool handle carries: enough to dispatch at once, without asking the balancer."""

    balancer: Any
    cls: type
    options: Any
    extras: dict
    version: int
    members: dict[int, Any]
    taken_at: float  # time.time() when the members were read: a copy unpickled later knows their age


def attach_pool(info: AttachInfo) -> Any:
    """Rebuild a pool handle from its pickled form (called by pickle)."""
    return info.cls.__concurry_handle__()(info.cls, info.options, (), {}, attach=info)


class RayMembership(LocalMembership):
    """Members held by the pool's balancer actor; this handle reports to it in batches.

    Only the creating handle (the owner) starts, resizes and health-checks the
    pool; a copy attaches from what its pickle carries, without a round trip,
    and learns of changes from its reports. A worker's death is reported to
    the balancer by whichever handle sees it; the balancer replaces it once.
    """

    stops_when_collected = False  # copies may still use the pool; the driver's exit ends its actors
    scales_itself = True  # the balancer scales an elastic pool

    def __init__(self, blueprint: Blueprint, dispatcher: Dispatcher, attach: Optional[AttachInfo] = None) -> None:
        super().__init__(blueprint, dispatcher)
        self.handle_id = uuid.uuid4().hex
        self._attach = attach
        if attach is None:
            self.balancer, self.owner = open_balancer(blueprint, self.handle_id)
        else:
            self.balancer, self.owner = attach.balancer, False
        self._ends_pool = self.owner and blueprint.options.lifetime != "detached"
        self._version = -1
        self._others: dict[int, tuple[int, int]] = {}
        self._dirty = threading.Event()
        self._hurry = threading.Event()  # cuts the report thread's pause short: stopping, or just shared
        self._closed = False
        self._handles = 1  # handles joined to the balancer, as of this handle's last report
        self._pickled_at = float("-inf")
        self._flusher: Optional[threading.Thread] = None
        self._flusher_lock = threading.Lock()  # starting the report thread, and its ending when idle
        self._baseline: tuple[dict[int, Counters], int] = ({}, 0)  # own counters when it last left the balancer
        self._report_lock = threading.Lock()  # a report and a leave of this handle never cross on the way
        self._guards_view = blueprint.options.elastic or not self.owner  # its members may change behind its back
        age = max(0.0, time.time() - attach.taken_at) if attach is not None else 0.0
        self._synced_at = time.monotonic() - age  # when this handle's view of the members was last current
        self._refreshing = threading.Lock()

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return ray.get(getattr(self.balancer, method).remote(*args), timeout=BALANCER_TIMEOUT)
        except Exception as exc:
            raise unwrap(exc) from None

    def _call_until_closed(self, method: str, *args: Any) -> Any:
        """``_call``, given up (PoolStoppedError) as soon as this handle stops: a worker the cluster
        cannot place yet must not keep a thread of a stopped pool waiting."""
        ref = getattr(self.balancer, method).remote(*args)
        deadline = time.monotonic() + BALANCER_TIMEOUT
        while not ray.wait([ref], timeout=0.25)[0] and time.monotonic() < deadline:
            if self._closed:
                ray.cancel(ref)
                raise PoolStoppedError(f"the {self.blueprint.label} pool stopped before its new worker was placed")
        try:
            return ray.get(ref, timeout=0)
        except Exception as exc:
            raise unwrap(exc) from None

    def _clients(self, version: int, members: dict[int, Any]) -> list:
        self._version = version
        return [(i, self._client(i, actor)) for i, actor in sorted(members.items())]

    def _client(self, index: int, actor: Any) -> RayClient:
        label = f"{self.blueprint.label}#{index} (ray)"
        return RayClient(actor, self.blueprint.cls, label, owner=self._ends_pool)

    def initial(self, count: int) -> list:
        if self._attach is not None:
            return self._clients(self._attach.version, self._attach.members)
        return self.start(count if self.owner else 0)  # a handle attaching by name starts nothing

    @property
    def manages_pool(self) -> bool:
        return self.owner

    @property
    def ends_pool(self) -> bool:
        return self._ends_pool

    def start(self, count: int) -> list:
        if count == 0:
            return self._clients(*self._call("members"))
        version, members, failure = self._call_until_closed("grow", count)
        if failure is not None:
            raise rebuild_init_error(*failure)
        known = set(self.dispatcher.indexes())
        return self._clients(version, {i: a for i, a in members.items() if i not in known})

    def worker_died(self, slot: Slot, client: RayClient, error: BaseException, unstarted: list) -> None:
        """Ask the balancer for the replacement (once for all handles), off the Ray callback thread."""
        threading.Thread(target=self._replace, args=(slot, client, error, unstarted), daemon=True).start()

    def _replace(self, slot: Slot, client: RayClient, error: BaseException, unstarted: list) -> None:
        if self.dispatcher.closed:
            fail_unstarted(unstarted, error)
            return
        try:
            version, members, failure = self._call("replace", slot.index, client.actor)
        except Exception as exc:
            fail_unstarted(unstarted, error)
            self._balancer_lost(exc)
            return
        self._sync(version, members)
        self.dispatcher.resend(slot, unstarted)
        if failure is not None:
            self.dispatcher.no_worker_left(rebuild_init_error(*failure))

    def _balancer_lost(self, exc: BaseException) -> None:
        """The balancer cannot be reached (the pool was stopped, or its actor is gone for good):
        the calls waiting in this handle fail, and so do later ones (a copy refuses them)."""
        if self.dispatcher.closed:
            return
        log.log(logging.ERROR if self.owner else logging.DEBUG,
                "concurry_ray: the %s pool cannot be reached any more: %s", self.blueprint.label, exc)
        error = PoolStoppedError(f"the {self.blueprint.label} pool was stopped (or its balancer actor is gone): {exc}")
        if not self.owner:
            self.dispatcher.close()
            self.dispatcher.fail_parked(error)
            return
        self.dispatcher.retire(self.dispatcher.indexes())
        self.dispatcher.no_worker_left(error)

    def _sync(self, version: int, members: dict[int, Any]) -> None:
        """Make this handle's slots match the balancer's members."""
        dispatcher = self.dispatcher
        for index, actor in members.items():
            slot = dispatcher.slot(index)
            if slot is None or slot.client.actor != actor:  # Ray's actor handles compare by actor id
                dispatcher.install(index, self._client(index, actor))
        dispatcher.retire([index for index in dispatcher.indexes() if index not in members])
        self._version = version
        dispatcher.release_parked()

    def retire(self, slots: list[Slot]) -> None:
        for slot in slots:
            slot.client.drain(None)
            slot.client.retries()  # its final count, kept once the balancer has ended the actor
        self._version = self._call("retire", [s.index for s in slots])

    def before_dispatch(self) -> None:
        """If this handle's view of the members may be stale, park calls until it is current again."""
        if self._guards_view and time.monotonic() - self._synced_at > STALE_VIEW_SECONDS:
            if self._refreshing.acquire(blocking=False):
                self.dispatcher.hold()
                threading.Thread(target=self._refresh_view, name="concurry-ray-members", daemon=True).start()

    def _refresh_view(self) -> None:
        try:
            asked_at = time.monotonic()
            self._sync(*self._call("members"))
            self._synced_at = asked_at
        except Exception as exc:  # dispatch with the members it knows; a gone worker is handled as ever
            log.debug("concurry_ray: the members of %s could not be read: %s", self.blueprint.label, exc)
        finally:
            self._refreshing.release()
            self.dispatcher.resume()

    def call_parked(self) -> None:
        """A call waits for a worker: report at once, so the balancer can add one."""
        if self._waits_for_workers():
            self._hurry.set()
            self.touched()

    def _waits_for_workers(self) -> bool:
        """Whether calls wait in this handle for a worker the balancer may still add."""
        options = self.blueprint.options
        return options.elastic and self.dispatcher.queued() > 0 and len(self.dispatcher.live_slots()) < options.pool_size

    def touched(self) -> None:
        if not self._dirty.is_set():  # set() takes a lock; most calls find it already set
            self._dirty.set()
        if self._flusher is None:  # checked after setting _dirty: an ending thread looks at _dirty last
            self._start_flusher()

    def _start_flusher(self) -> None:
        with self._flusher_lock:
            if self._flusher is None and not self._closed:
                self._flusher = threading.Thread(target=self._flush_loop, name="concurry-ray-report", daemon=True)
                self._flusher.start()

    def _flush_loop(self) -> None:
        try:
            self._report_until_closed()
        except Exception as exc:  # the balancer is gone, and reporting with it
            if not self._closed:  # a copy outliving its pool is normal: the creating handle stopped it
                self._balancer_lost(exc)

    def _report_until_closed(self) -> None:
        while True:
            if not self._dirty.wait(None if self.owner else IDLE_LEAVE_SECONDS):
                if self._closed or self._left_when_idle():
                    return
                continue
            waiting = self._waits_for_workers()
            self._hurry.wait(REPORT_BATCH_SECONDS if waiting or self._shared() else ALONE_REPORT_SECONDS)
            if self._closed:
                return
            self._hurry.clear()
            self._dirty.clear()
            self.flush()
            if self._waits_for_workers():  # keep reporting, to hear of the workers the balancer adds
                self._dirty.set()

    def flush(self) -> None:
        """Send this handle's counters to the balancer and learn the others' loads."""
        with self._report_lock:
            mine, report = self._report()
            asked_at = time.monotonic()
            version, loads, self._handles = self._call("report", *report)
        # The balancer's totals hold this handle's calls from earlier stints too, so take all of them off.
        self._others = {
            i: (max(0, active - mine.get(i, (0, 0))[1]), max(0, total - mine.get(i, (0, 0))[0]))
            for i, (active, total) in loads.items()
        }
        if version != self._version:
            self._sync(*self._call("members"))
        self._synced_at = asked_at
        self._joined()

    def _report(self) -> tuple[dict[int, Counters], tuple[str, dict[int, Counters], int, int]]:
        """This handle's own counters, and what it reports: its id, its counters since it joined,
        the calls it dispatched, the calls waiting in it for a worker."""
        mine, dispatched = self._counters()
        return mine, (self.handle_id, *self._since_joined(mine, dispatched), self.dispatcher.queued())

    def _joined(self) -> None:
        """A copy that reported (maybe from get_pool_stats()) runs the thread that leaves again when idle."""
        if self._flusher is None and not self.owner:
            self._start_flusher()

    def _shared(self) -> bool:
        """Whether other handles use the pool now: this one is a copy, another is joined, or it was just pickled."""
        pickled_lately = time.monotonic() - self._pickled_at < SHARED_AFTER_PICKLING_SECONDS
        return not self.owner or self._handles > 1 or pickled_lately

    def _counters(self) -> tuple[dict[int, Counters], int]:
        """This handle's own counters per worker, and the calls it dispatched."""
        return self.dispatcher.counters()

    def _since_joined(self, mine: dict[int, Counters], dispatched: int) -> tuple[dict[int, Counters], int]:
        """The counters to report: what changed since this handle last left the balancer
        (which kept what it had counted until then); in-flight calls are a level, reported as they are."""
        past, past_dispatched = self._baseline
        since = {}
        for index, (sent, in_flight, completed, failed) in mine.items():
            was = past.get(index, (0, 0, 0, 0))
            since[index] = (sent - was[0], in_flight, completed - was[2], failed - was[3])
        return since, dispatched - past_dispatched

    def _leave(self) -> bool:
        """Hand this copy's counters to the balancer for good and leave it; False if calls are in flight."""
        with self._report_lock:
            mine, dispatched = self._counters()
            if any(counters[1] for counters in mine.values()):
                return False
            self._call("leave", self.handle_id, *self._since_joined(mine, dispatched))
            self._baseline = (mine, dispatched)
            return True

    def _left_when_idle(self) -> bool:
        """On the report thread of an idle copy: leave the balancer; True if the thread should end."""
        if not self._leave():
            return False
        with self._flusher_lock:
            if self._dirty.is_set():  # used again meanwhile: stay, and the next report joins again
                return False
            self._flusher = None
            return True

    def others_load(self) -> dict[int, tuple[int, int]]:
        return self._others

    @property
    def brings_worker_retries(self) -> bool:
        return not (self.dispatcher.closed and self.owner)

    def stats(self, local: dict) -> dict:
        """Figures from the balancer: every handle's calls, not only this one's, in one round trip
        (with this handle's report; a stopped copy has left and does not join again)."""
        if self.dispatcher.closed and self.owner:
            return local
        if self.dispatcher.closed:
            shared = self._call("stats")
        else:
            with self._report_lock:
                shared = self._call("stats", self._report()[1])
            self._joined()
        if shared["version"] != self._version and not self.dispatcher.closed:  # scaled since this handle last heard
            self._sync(*self._call("members"))
            local = dict(local, total_workers=len(self.dispatcher.live_slots()))
        workers = shared["workers"]
        balancer = dict(local["load_balancer"], total_dispatched=shared["total_dispatched"])
        if "active_calls" in balancer:
            balancer["active_calls"] = {i: w["in_flight"] for i, w in workers.items()}
            balancer["total_active"] = sum(balancer["active_calls"].values())
        if "total_calls" in balancer:
            balancer["total_calls"] = {i: w["dispatched"] for i, w in workers.items()}
        merged_workers = {i: {k: v for k, v in w.items() if k != "dispatched"} for i, w in workers.items()}
        retries = local["retries"] + sum(w["retries"] or 0 for w in workers.values())
        return dict(local, load_balancer=balancer, workers=merged_workers, handles=shared["handles"], retries=retries,
                    **shared["scaling"])

    def stop_clients(self, deadline: Optional[float]) -> None:
        for client in self.dispatcher.clients():
            client.drain(deadline)
        with self._flusher_lock:
            self._closed = True
            flusher = self._flusher
        self._hurry.set()
        self._dirty.set()
        if self._ends_pool:
            try:
                self._call("shutdown")
            finally:
                ray.kill(self.balancer, no_restart=True)
        else:
            if flusher is not None:
                flusher.join(BALANCER_TIMEOUT)  # so that no report of it reaches the balancer after the leave
            self._say_goodbye()
        for client in self.dispatcher.on_demand_clients():
            client.stop(deadline)

    def _say_goodbye(self) -> None:
        """A stopping copy leaves the balancer (or, with calls still in flight, reports them);
        if the pool itself was stopped first, there is nobody left to tell."""
        try:
            if not self._leave():
                self.flush()
        except Exception as exc:
            log.debug("concurry_ray: a copy of %s stopped after its pool: %s", self.blueprint.label, exc)

    def reduce(self) -> Any:
        if self.dispatcher.closed:
            raise TypeError(f"the {self.blueprint.label} pool handle is stopped and cannot be passed on")
        was_shared = self._shared()
        self._pickled_at = time.monotonic()
        if not was_shared:  # a copy is being made: report now, and in short batches while it is joined
            self._hurry.set()
            self.touched()
        members = {s.index: s.client.actor for s in self.dispatcher.live_slots()}
        blueprint = self.blueprint
        info = AttachInfo(self.balancer, blueprint.cls, blueprint.options, blueprint.extras, self._version, members,
                          time.time() - (time.monotonic() - self._synced_at))
        return attach_pool, (info,)
