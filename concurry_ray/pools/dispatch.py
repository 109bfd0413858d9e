"""The Dispatcher: the one owner of a pool's slots, parked calls, lock and on-demand workers.

Every change to which worker sits where, which calls wait in the pool's queue
and what is counted happens here, under the Dispatcher's lock, through its
public methods (``install``, ``swap``, ``retire``, ``resend``,
``release_parked``, ``fail_parked`` ...). The handle calls them to submit and
stop; a membership calls them to add, replace and retire workers; a health
monitor only reads ``ready_slots()``. Nobody else touches the fields.

Events go the other way through one listener (the pool's membership): a worker
died, calls were dispatched or finished, and (Ray) the load other handles put
on each worker.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import operator
import threading
import time
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Protocol

from ..errors import PoolStoppedError
from ..futures import Future, chain, failed, seconds_left, settle
from ..protocol import Call, WorkerClient
from .balancing import Balancer
from .crashes import follow_crashes

log = logging.getLogger("concurry_ray")
REAP_GRACE_SECONDS = 5.0  # an on-demand worker whose call is done gets this long to exit
HOLD_TIMEOUT = 30.0  # the longest a broadcast waits for held calls to be resumed


class Listener(Protocol):
    """What a Dispatcher tells its pool's membership."""

    def worker_died(self, slot: "Slot", client: WorkerClient, error: BaseException, unstarted: list) -> None:
        """``client`` (the worker of ``slot``) died; ``unstarted`` holds the (call, future) pairs it never began."""

    def touched(self) -> None:
        """Calls were dispatched or finished."""

    def before_dispatch(self) -> None:
        """A call is about to be dispatched (the lock is not held): bring the members up to date if need be."""

    def call_parked(self) -> None:
        """A call was parked: no worker has room for it."""

    def others_load(self) -> dict[int, tuple[int, int]]:
        """In-flight and total calls that other handles sent to each worker."""


class Alone:
    """The listener of a pool nobody else dispatches into, before its membership connects."""

    def worker_died(self, slot: "Slot", client: WorkerClient, error: BaseException, unstarted: list) -> None:
        fail_unstarted(unstarted, error)

    def touched(self) -> None:
        pass

    def before_dispatch(self) -> None:
        pass

    def call_parked(self) -> None:
        pass

    def others_load(self) -> dict[int, tuple[int, int]]:
        return {}


@dataclass
class Slot:
    """One position in a pool: the current worker there and its counters.

    ``dispatched`` and ``handed_over`` change under the Dispatcher's lock, which
    a dispatching caller holds anyway; ``completed`` and ``failed`` change under
    ``lock``, taken only by the threads that finish calls. So dispatching and
    finishing never wait for each other.
    """

    index: int
    client: WorkerClient
    dispatched: int = 0
    completed: int = 0
    failed: int = 0
    handed_over: int = 0  # calls re-sent to another worker after this one died
    restarts: int = 0
    retired: bool = False
    idle_since: float = field(default_factory=time.monotonic)  # when it last had nothing in flight
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    on_done: Optional[Callable[[Future], None]] = field(default=None, repr=False)
    moved: set = field(default_factory=set, repr=False)  # futures of handed-over calls not finished yet

    @property
    def in_flight(self) -> int:
        """Calls sent here that have neither finished nor been handed over."""
        return self.dispatched - self.completed - self.failed - self.handed_over

    def health(self, ask_retries: bool = True) -> dict:
        """The per-worker figures reported by ``get_pool_stats()`` (retries None unless asked)."""
        return {
            "alive": self.client.alive() and not self.retired,
            "restarts": self.restarts,
            "in_flight": self.in_flight,
            "completed": self.completed,
            "failed": self.failed,
            "retries": self.client.retries() if ask_retries else None,
        }


@dataclass(order=True)
class _Parked:
    sort_key: tuple
    call: Call = field(compare=False)
    future: Future = field(compare=False)


class Dispatcher:
    """Sends each call to a worker with room, or parks it (highest priority first) until one has room.

    ``spawn()`` builds one on-demand worker; ``crash_budget`` says per method how
    often a call whose worker died may be re-sent; ``describe(dispatcher)`` names
    the pool in error messages.
    """

    def __init__(
        self,
        options: Any,
        balancer: Balancer,
        spawn: Callable[[], WorkerClient],
        crash_budget: dict[str, int],
        describe: Callable[["Dispatcher"], str],
    ) -> None:
        self._options = options
        self._balancer = balancer
        self._spawn = spawn
        self._crash_budget = crash_budget
        self._describe = describe
        self._listener: Listener = Alone()
        self._lock = threading.RLock()
        self._slots: dict[int, Slot] = {}
        self._roster: list[Slot] = []  # the slots not retired, in index order
        self._parked: list[_Parked] = []
        self._seq = itertools.count()
        self._closed = False
        self._total_dispatched = 0
        self._crash_retries = 0
        self._past_retries = 0  # retries made by workers that were replaced or reaped
        self._on_demand: set = set()
        self._reaper = _Reaper(self._reaped)
        self._unserved: Optional[BaseException] = None  # why calls fail at once: no worker is left, none can be built
        self._resumed = threading.Event()  # cleared by hold(): the membership is bringing the members up to date
        self._resumed.set()
        # An elastic pool keeps calls in its own queue while its workers are busy: they wait there for
        # the workers it adds, and their number tells it to grow.
        self._queue_limit = options.max_queued_tasks or (1 if options.elastic else None)

    def connect(self, listener: Listener) -> None:
        """Tell ``listener`` (the pool's membership) about deaths, activity and other handles' loads."""
        self._listener = listener

    # ----- workers ------------------------------------------------------------
    def install(self, index: int, client: WorkerClient) -> Slot:
        """Make ``client`` the worker at ``index`` (a new slot, or a replacement counted as a restart)."""
        with self._lock:
            slot = self._slots.get(index)
            if slot is None:
                slot = self._slots[index] = Slot(index, client)
                self._roster_changed()
                self._unserved = None
            elif slot.client is not client:
                self._past_retries += slot.client.retries() or 0
                slot.restarts += 1
            self._attach(slot, client)
            self.release_parked()
            return slot

    def install_all(self, clients: Iterable[tuple[int, WorkerClient]]) -> None:
        """Install several workers at once (a pool's first workers, or a resize)."""
        with self._lock:
            for index, client in clients:
                self.install(index, client)

    def swap(self, slot: Slot, dead: WorkerClient, fresh: WorkerClient) -> bool:
        """Put ``fresh`` in place of ``dead`` at ``slot``; False (nothing changed) if the pool is
        closed, the slot retired, or ``dead`` is no longer its worker."""
        with self._lock:
            if self._closed or slot.retired or slot.client is not dead:
                return False
            self.install(slot.index, fresh)
            return True

    def retire(self, indexes: Iterable[int]) -> list[Slot]:
        """Take the slots at ``indexes`` out of dispatch (their workers finish what they have)."""
        with self._lock:
            slots = [self._slots[i] for i in indexes if i in self._slots and not self._slots[i].retired]
            for slot in slots:
                slot.retired = True
            self._roster_changed()
            return slots

    def _attach(self, slot: Slot, client: WorkerClient) -> None:
        slot.client = client
        slot.on_done = functools.partial(self._finished, slot)
        client.on_death = functools.partial(self._died, slot)

    def _died(self, slot: Slot, client: WorkerClient, error: BaseException, unstarted: list) -> None:
        self._listener.worker_died(slot, client, error, unstarted)

    def _roster_changed(self) -> None:
        self._roster = [s for s in self._slots.values() if not s.retired]

    # ----- reading ------------------------------------------------------------
    def slot(self, index: int) -> Optional[Slot]:
        """The slot at ``index``, retired or not; None if there is none."""
        return self._slots.get(index)

    def indexes(self) -> list[int]:
        """The index of every slot, retired ones included."""
        return list(self._slots)

    def live_slots(self) -> list[Slot]:
        """The slots calls may go to (not retired), in index order."""
        return self._roster

    def ready_slots(self) -> list[Slot]:
        """Live slots whose worker can take calls now (not dead and awaiting a replacement)."""
        return [s for s in self._roster if s.client.alive()]

    def clients(self) -> list[WorkerClient]:
        """Every worker this pool started and has not reaped: its slots' and its on-demand ones."""
        with self._lock:
            return [s.client for s in self._slots.values()] + list(self._on_demand)

    def on_demand_clients(self) -> list[WorkerClient]:
        """The on-demand workers alive now."""
        with self._lock:
            return list(self._on_demand)

    def counters(self) -> tuple[dict[int, tuple[int, int, int, int]], int]:
        """Per slot (dispatched, in flight, completed, failed), and the calls dispatched in all."""
        with self._lock:
            mine = {s.index: (s.dispatched, s.in_flight, s.completed, s.failed) for s in self._slots.values()}
            return mine, self._total_dispatched

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called: new calls are refused."""
        return self._closed

    # ----- calls --------------------------------------------------------------
    def dispatch(self, call: Call, priority: int = 0) -> Future:
        """Send a call now or park it; re-send it elsewhere after a crash when retry_on allows."""
        self._listener.before_dispatch()
        future = self._dispatch_once(call, priority)
        retries = self._crash_budget.get(call.method, 0)
        return follow_crashes(future, lambda: self._redispatch(call, priority), retries) if retries else future

    def _redispatch(self, call: Call, priority: int) -> Future:
        with self._lock:
            self._crash_retries += 1
        return self._dispatch_once(call, priority)

    def _dispatch_once(self, call: Call, priority: int = 0) -> Future:
        with self._lock:
            if self._closed:
                raise PoolStoppedError(f"{self._describe(self)} is stopped; {call.method}() was not run")
            future = self._try_send(call)
            if future is None and self._unserved is not None and not self._roster:
                future = Future()
                future.set_exception(self._unserved)
            elif future is None:
                future = Future()
                heapq.heappush(self._parked, _Parked((-priority, next(self._seq)), call, future))
                self._listener.call_parked()
                # A call may have finished (without the lock) since _try_send looked.
                self.release_parked()
            return future

    def send_to_all(self, call: Call) -> list[Future]:
        """Send ``call`` once to every live worker, now (``broadcast``); their futures in worker order.

        If the membership holds calls while it brings the members up to date, this waits for
        that first (at most ``HOLD_TIMEOUT`` seconds; then it goes to the workers it knows)."""
        self._listener.before_dispatch()
        self._resumed.wait(HOLD_TIMEOUT)
        with self._lock:
            return [self._send(slot, call) for slot in self._roster]

    def resend(self, slot: Slot, unstarted: list) -> None:
        """Dispatch again the (call, future) pairs that ``slot``'s dead worker never started."""
        with self._lock:
            with slot.lock:
                slot.handed_over += len(unstarted)
                slot.moved.update(future for _, future in unstarted)
            for call, future in unstarted:
                try:
                    chain(self._dispatch_once(call), future)
                except Exception as exc:
                    settle(future, error=exc)

    def hold(self) -> None:
        """Park calls from now on, until :meth:`resume` (the members may be out of date)."""
        self._resumed.clear()

    def resume(self) -> None:
        """Send calls to workers again, the parked ones first."""
        with self._lock:
            self._resumed.set()
            self.release_parked()

    def _try_send(self, call: Call) -> Optional[Future]:
        """Send a call to a worker now if one has room, else None (lock held)."""
        if not self._resumed.is_set():
            return None
        if self._options.on_demand:
            cap = self._options.worker_cap
            if cap and len(self._on_demand) >= cap:
                return None
            self._total_dispatched += 1
            return self._send_on_demand(call)
        slot = self._pick_slot()
        if slot is None:
            return None
        self._total_dispatched += 1
        return self._send(slot, call)

    def _pick_slot(self) -> Optional[Slot]:
        """The slot for the next call, or None if none can take it (lock held).

        The balancer first chooses among all slots; only when its choice is dead
        or full does it choose again among the slots that can take a call.
        """
        roster = self._roster
        if not roster:
            return None
        balancer = self._balancer
        slot = self._choose(roster) if balancer.load else roster[balancer.pick(len(roster), None)]
        if slot.client.alive() and self._has_room(slot):
            return slot
        candidates = [s for s in self.ready_slots() if self._has_room(s)]
        return self._choose(candidates) if candidates else None

    def _has_room(self, slot: Slot) -> bool:
        limit = self._queue_limit
        return limit is None or slot.in_flight < limit

    def _choose(self, candidates: list[Slot]) -> Slot:
        figure = self._balancer.load
        if figure is None:
            return candidates[self._balancer.pick(len(candidates), None)]
        loads = list(map(operator.attrgetter(figure), candidates))
        others = self._listener.others_load()
        if others:
            column = 0 if figure == "in_flight" else 1
            loads = [load + others.get(s.index, (0, 0))[column] for load, s in zip(loads, candidates)]
        return candidates[self._balancer.pick(len(candidates), loads)]

    def _send(self, slot: Slot, call: Call) -> Future:
        slot.dispatched += 1
        future = Future(slot.on_done)
        slot.client.submit(call, future)
        self._listener.touched()
        return future

    def _finished(self, slot: Slot, future: Future) -> None:
        call_failed = failed(future)
        with slot.lock:
            if slot.moved and future in slot.moved:
                slot.moved.discard(future)  # it was re-sent; its new slot counts it
                return
            if call_failed:
                slot.failed += 1
            else:
                slot.completed += 1
            if not slot.in_flight:
                slot.idle_since = time.monotonic()
        if self._parked:
            with self._lock:
                self.release_parked()
        self._listener.touched()

    # ----- the queue of parked calls ------------------------------------------
    def release_parked(self) -> None:
        """Send parked calls, highest priority first, while workers have room.

        Also while the pool stops: ``stop()`` drains parked calls before it stops the workers.
        """
        with self._lock:
            while self._parked:
                parked = self._parked[0]
                if parked.future.done():
                    heapq.heappop(self._parked)
                    continue
                future = self._try_send(parked.call)
                if future is None:
                    return
                heapq.heappop(self._parked)
                chain(future, parked.future)

    def fail_parked(self, error: BaseException) -> None:
        """Fail every parked call with ``error`` (no worker is left to run them)."""
        with self._lock:
            parked, self._parked = self._parked, []
        for p in parked:
            settle(p.future, error=error)

    def no_worker_left(self, error: BaseException) -> None:
        """No worker is left and none can be built: fail the parked calls with ``error``, and the
        calls made from now on, until a worker is installed again."""
        with self._lock:
            if self._roster:
                return
            self._unserved = error
            self.fail_parked(error)

    def queued(self) -> int:
        """How many calls wait in the pool's queue."""
        return len(self._parked)

    def idle_times(self) -> dict[int, float]:
        """Per live slot, how long (seconds) it has had nothing in flight from this handle; 0 while busy."""
        now = time.monotonic()
        return {s.index: 0.0 if s.in_flight else now - s.idle_since for s in self._roster}

    # ----- stopping -----------------------------------------------------------
    def close(self) -> bool:
        """Refuse new calls from now on; False if it was closed already."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return True

    def drain_parked(self, deadline: Optional[float]) -> None:
        """Wait, until ``deadline``, for the calls parked in the queue; cancel those still parked then."""
        with self._lock:
            waiting = [p.future for p in self._parked]
        if waiting:
            wait_all(waiting, timeout=seconds_left(deadline))
        with self._lock:
            parked, self._parked = self._parked, []
        for p in parked:
            error = PoolStoppedError(f"{self._describe(self)} stopped before this call was sent")
            p.future.cancel() or settle(p.future, error=error)

    def stop_reaper(self, deadline: Optional[float]) -> None:
        """Wait, until ``deadline`` at the latest, for the finished on-demand workers being stopped."""
        self._reaper.close(deadline)

    # ----- on-demand workers --------------------------------------------------
    def _send_on_demand(self, call: Call) -> Future:
        client = self._spawn()
        self._on_demand.add(client)
        client.on_death = lambda dead, error, unstarted: fail_unstarted(unstarted, error)
        future = Future()
        future.add_done_callback(lambda f: self._on_demand_done(client))
        return client.submit(call, future)

    def _on_demand_done(self, client: WorkerClient) -> None:
        self._reaper.reap(client)
        with self._lock:
            self._on_demand.discard(client)
            self.release_parked()

    def _reaped(self, client: WorkerClient) -> None:
        with self._lock:
            self._past_retries += client.retries() or 0

    # ----- figures --------------------------------------------------------------
    def summary(self) -> dict:
        """The figures known without asking any worker: mode, size, cap, state and queue.

        It takes no lock, so a ``repr`` never waits; ``stats()`` calls it under the lock.
        """
        options = self._options
        return {
            "mode": options.mode,
            "total_workers": len(self._on_demand) if options.on_demand else len(self._roster),
            "max_workers": options.worker_cap,
            "on_demand": options.on_demand,
            "on_demand_active": len(self._on_demand),
            "stopped": self._closed,
            "queued": len(self._parked),
        }

    def load(self) -> dict:
        """What metrics sample, without a lock: live workers, calls in flight and queued, restarts so far."""
        slots = list(self._slots.values())
        summary = self.summary()
        return {
            "workers": summary["total_workers"],
            "in_flight": sum(s.in_flight for s in slots if not s.retired),
            "queued": summary["queued"],
            "restarts": sum(s.restarts for s in slots),
        }

    def stats(self, ask_workers: bool = True) -> dict:
        """The figures this handle keeps: size, state, queue, balancer and per-worker health.

        Without ``ask_workers`` the live workers' retries are not asked for (None; the Ray
        balancer brings them) and ``retries`` counts only the calls of workers gone."""
        with self._lock:
            live = list(self._roster)
            retired = [s for s in self._slots.values() if s.retired]
            balancer: dict[str, Any] = {
                "algorithm": self._balancer.display_name,
                "total_dispatched": self._total_dispatched,
                "crash_retries": self._crash_retries,
            }
            if balancer["algorithm"] == "LeastActiveLoad":
                balancer["active_calls"] = {s.index: s.in_flight for s in live}
                balancer["total_active"] = sum(s.in_flight for s in live)
            if balancer["algorithm"] == "LeastTotalLoad":
                balancer["total_calls"] = {s.index: s.dispatched for s in live}
            stats = {**self.summary(), "load_balancer": balancer}
            past_retries = self._past_retries
        # Outside the lock: asking a Ray worker for its retry count is a round trip (all asked at once).
        if ask_workers:
            for slot in live:
                slot.client.ask_retries()
        stats["workers"] = {s.index: s.health(ask_workers) for s in live}
        worker_retries = sum(w["retries"] or 0 for w in stats["workers"].values())
        stats["retries"] = past_retries + worker_retries + sum(s.client.retries() or 0 for s in retired)
        return stats


def fail_unstarted(unstarted: list, error: BaseException) -> None:
    """Fail (call, future) pairs that can no longer run: the one place calls that never started end."""
    for _, future in unstarted:
        settle(future, error=error)


class _Reaper:
    """Stops finished on-demand workers (never from their own thread), each in a thread of its own,
    so a worker still busy (its call timed out or was cancelled) holds up no other.

    A worker gets ``REAP_GRACE_SECONDS`` to finish; then a process is killed, a thread abandoned.
    """

    def __init__(self, on_stopped: Callable[[WorkerClient], None]) -> None:
        self._on_stopped = on_stopped
        self._lock = threading.Lock()
        self._stopping: set[threading.Thread] = set()

    def reap(self, client: WorkerClient) -> None:
        """Stop ``client`` in the background."""
        thread = threading.Thread(target=self._stop, args=(client,), name="concurry-reaper", daemon=True)
        with self._lock:
            self._stopping.add(thread)
        thread.start()

    def _stop(self, client: WorkerClient) -> None:
        client.stop(time.monotonic() + REAP_GRACE_SECONDS)
        self._on_stopped(client)
        with self._lock:
            self._stopping.discard(threading.current_thread())

    def close(self, deadline: Optional[float]) -> None:
        """Wait, until ``deadline`` at the latest, for the workers being stopped."""
        with self._lock:
            stopping = list(self._stopping)
        for thread in stopping:
            thread.join(seconds_left(deadline))


def stop_all(clients: list[WorkerClient], deadline: Optional[float]) -> None:
    """Stop clients in parallel threads (each cancels what it has left at ``deadline``) and wait for all of them."""
    threads = [threading.Thread(target=c.stop, args=(deadline,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def deadline_after(timeout: Optional[float]) -> Optional[float]:
    """The ``time.monotonic()`` deadline ``timeout`` seconds from now (None: no deadline)."""
    return None if timeout is None else time.monotonic() + timeout
