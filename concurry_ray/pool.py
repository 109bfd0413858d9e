"""The handle a user holds: one worker or a pool of them, behind one interface.

A :class:`Pool` owns a list of slots, each with one live worker client of the
pool's backend, and dispatches each method call to one of them through the
balancing algorithm. A single worker is simply a pool of one. The pool also
owns what is the same in every mode: argument futures, on-demand workers,
backpressure with priorities, replacing dead workers, draining on stop, stats.
"""

from __future__ import annotations

import concurrent.futures
import functools
import heapq
import itertools
import operator
import logging
import threading
import time
from dataclasses import dataclass, field
from queue import SimpleQueue
from typing import Any, Callable, Optional

from .balancing import make_balancer
from .errors import ConfigError, PoolStoppedError, closest
from .futures import Future, as_future, chain, failed, is_awaitable_result, seconds_left, settle
from .deadlines import expire_after
from .health import HealthMonitor
from .host import public_methods
from .nested import collect_arguments, replace
from .options import WorkerOptions
from .retry import check_method_names, crash_retries, follow_crashes
from .modes import backend_class
from .protocol import Backend, Call, WorkerClient, WorkerSpec

log = logging.getLogger("concurry_ray")


@dataclass
class Slot:
    """One position in a pool: the current worker there and its counters.

    ``dispatched`` and ``handed_over`` change under the pool's lock, which a
    dispatching caller holds anyway; ``completed`` and ``failed`` change under
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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    on_done: Optional[Callable[[Future], None]] = field(default=None, repr=False)
    moved: set = field(default_factory=set, repr=False)  # futures of handed-over calls not finished yet

    @property
    def in_flight(self) -> int:
        """Calls sent here that have neither finished nor been handed over."""
        return self.dispatched - self.completed - self.failed - self.handed_over

    def hand_over(self, futures: list) -> None:
        """Record calls that will finish elsewhere (pool lock held): they no longer count here."""
        with self.lock:
            self.handed_over += len(futures)
            self.moved.update(futures)

    def health(self) -> dict:
        """The per-worker figures reported by ``get_pool_stats()``."""
        return {
            "alive": self.client.alive() and not self.retired,
            "restarts": self.restarts,
            "in_flight": self.in_flight,
            "completed": self.completed,
            "failed": self.failed,
            "retries": self.client.retries(),
        }


@dataclass(order=True)
class _Parked:
    sort_key: tuple
    call: Call = field(compare=False)
    future: Future = field(compare=False)


class MethodCaller:
    """``pool.method``: call it to submit; ``.options(priority=N)`` for a per-call priority."""

    __slots__ = ("_pool", "_name", "_priority")

    def __init__(self, pool: "Pool", name: str, priority: int = 0) -> None:
        self._pool, self._name, self._priority = pool, name, priority

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._pool._submit(self._name, args, kwargs, self._priority)

    def options(self, *, priority: int = 0) -> "MethodCaller":
        """The same method with a priority: higher runs first when calls wait in the pool's queue."""
        return MethodCaller(self._pool, self._name, priority)

    def __repr__(self) -> str:
        return f"<method {self._name} of {self._pool!r}>"


class Pool:
    """A worker or a pool of workers of one class; every public method returns a Future.

    Build it with ``MyWorker.options(...).init(...)``. Calls are spread over the
    workers by the ``load_balancing`` algorithm. Use it as a context manager (or
    call ``stop()``) to stop every worker. See ``get_pool_stats()`` for figures.

    The handle's own names (``OWN_NAMES``) are never taken by a worker method: a
    class defining one is refused by ``.options()``, except ``close``, where the
    worker's method wins (``handle.close()`` calls it; ``stop()`` stops).
    """

    OWN_NAMES: frozenset = frozenset(
        {"stop", "get_pool_stats", "get_worker_stats", "resize", "broadcast", "options", "close"}
    )

    @classmethod
    def check_worker_class(cls, worker_cls: type, methods: Optional[list] = None) -> None:
        """ConfigError naming each method of ``worker_cls`` (default: its public ones) that the
        handle keeps for itself; ``close`` is allowed (it then calls the worker's method)."""
        names = public_methods(worker_cls) if methods is None else methods
        clashes = sorted(set(names) & (cls.OWN_NAMES - {"close"}))
        if clashes:
            listed = ", ".join(f"{name}()" for name in clashes)
            raise ConfigError(
                f"{worker_cls.__name__} defines {listed}, which the handle keeps for itself "
                f"(its own names: {', '.join(sorted(cls.OWN_NAMES))}); rename the method"
            )

    def __init__(self, cls: type, options: WorkerOptions, args: tuple, kwargs: dict, attach: Any = None) -> None:
        self._cls = cls
        self._options = options
        self._args, self._kwargs = args, kwargs
        self._methods = frozenset(public_methods(cls))
        check_method_names(options, self._methods, cls.__name__)
        if options.health_check is not None and options.health_check not in self._methods:
            raise ConfigError(
                f"health_check={options.health_check!r} is not a public method of {cls.__name__}"
                f"{closest(options.health_check, self._methods)}"
            )
        self._backend: Backend = backend_class(options.mode)(options)
        self._balancer = make_balancer(options.balancing)
        self._lock = threading.RLock()
        self._slots: dict[int, Slot] = {}
        self._roster: list[Slot] = []  # the slots not retired, in index order
        self._parked: list[_Parked] = []
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._stopped = False
        self._total_dispatched = 0
        self._crash_retries = 0
        self._past_retries = 0  # retries made by workers that were replaced or reaped
        self._crash_budget = {m: crash_retries(options, m) for m in self._methods}
        self._on_demand_clients: set = set()
        self._reaper: Optional[_Reaper] = None
        self._extras = self._shared_extras() if attach is None else attach.extras
        self._members = self._backend.membership(self, attach)
        self._adopt_all(self._members.initial(options.pool_size))
        self._health = self._start_health_checks()
        if "close" in self._methods:  # the worker's close() wins over the handle's
            self.__dict__["close"] = MethodCaller(self, "close")

    # ----- construction -------------------------------------------------
    def _shared_extras(self) -> dict:
        from .limits import pool_limits

        limits = pool_limits(self._options.limits, self._options.mode)
        return {"limits": limits} if limits is not None else {}

    def _label_base(self) -> str:
        return self._options.name or self._cls.__name__

    def _spec(self) -> WorkerSpec:
        index = next(self._ids)
        label = f"{self._label_base()}#{index} ({self._options.mode})"
        return WorkerSpec(self._cls, self._args, self._kwargs, self._options, label, self._extras)

    def _start_health_checks(self) -> Optional[HealthMonitor]:
        check = self._options.health_check
        if check is None or self._options.on_demand:
            return None
        return HealthMonitor(self, check, self._options.health_check_interval)

    def _replace_worker(self, slot: Slot) -> None:
        """Put a fresh worker in place of ``slot``'s; the old one finishes its calls, then stops."""
        with self._lock:
            if self._stopped or slot.retired:
                return
        self._adopt_all(self._members.start(1))
        self._retire([slot])
        self._members.retire([slot])

    def _adopt_all(self, clients: list) -> None:
        with self._lock:
            for index, client in clients:
                slot = Slot(index, client)
                self._install(slot, client)
                self._slots[index] = slot
            self._roster_changed()

    def _retire(self, slots: list[Slot]) -> None:
        """Take ``slots`` out of dispatch (their workers finish what they have)."""
        with self._lock:
            for slot in slots:
                slot.retired = True
            self._roster_changed()

    def _roster_changed(self) -> None:
        """Recompute the slots calls may go to, after slots were added or retired (lock held)."""
        self._roster = [s for s in self._slots.values() if not s.retired]

    def _install(self, slot: Slot, client: WorkerClient) -> None:
        """Make ``client`` the worker of ``slot``; its death is reported to the membership."""
        if slot.client is not client:
            self._past_retries += slot.client.retries() or 0
        slot.client = client
        slot.on_done = functools.partial(self._finished, slot)
        client.on_death = lambda dead, error, unstarted: self._members.replace(slot, dead, error, unstarted)

    # ----- calling ----------------------------------------------------------
    def __getattr__(self, name: str) -> MethodCaller:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(
                f"{self._cls.__name__} has no public method {name!r}{closest(name, self._methods)}"
            )
        caller = MethodCaller(self, name)
        self.__dict__[name] = caller
        return caller

    def _submit(self, method: str, args: tuple, kwargs: dict, priority: int = 0) -> Any:
        future = self._submit_future(method, args, kwargs, priority)
        return future.result() if self._options.blocking else future

    def _submit_future(self, method: str, args: tuple, kwargs: dict, priority: int = 0) -> Future:
        """Submit a call and return its future, whatever ``blocking`` says."""
        if self._stopped:
            raise PoolStoppedError(f"{self!r} is stopped; {method}() cannot be called. Build a new one with .init()")
        call = Call(method, args, kwargs)
        pending = collect_arguments(args, kwargs, _is_future_arg) if self._options.unwrap_futures else None
        future = self._after(pending, call, priority) if pending else self._dispatch(call, priority)
        if self._options.call_timeout is not None:
            expire_after(future, self._options.call_timeout, f"{self._cls.__name__}.{method}()")
        return future

    def _after(self, pending: list, call: Call, priority: int) -> Future:
        """Submit ``call`` once its argument futures are done, without blocking the caller."""
        native = [p for p in pending if self._backend.passes_natively(p)]
        waiting = [p for p in pending if not self._backend.passes_natively(p)]
        by_id = {id(p): self._backend.native_form(p) for p in native}
        if not waiting:
            return self._dispatch(_substituted(call, by_id), priority)
        outer = Future()
        remaining = [len(waiting)]
        lock = threading.Lock()

        def one_done(_: Any) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            failed = next((as_future(p).exception() for p in waiting if as_future(p).exception()), None)
            if failed is not None:
                settle(outer, error=failed)
                return
            values = {**by_id, **{id(p): as_future(p).result() for p in waiting}}
            try:
                chain(self._dispatch(_substituted(call, values), priority), outer)
            except PoolStoppedError as exc:
                settle(outer, error=exc)

        for p in waiting:
            as_future(p).add_done_callback(one_done)
        return outer

    def _dispatch(self, call: Call, priority: int = 0) -> Future:
        """Send a call now or park it; re-send it elsewhere after a crash when retry_on allows."""
        future = self._dispatch_once(call, priority)
        retries = self._crash_budget[call.method]
        return follow_crashes(future, lambda: self._redispatch(call, priority), retries) if retries else future

    def _redispatch(self, call: Call, priority: int) -> Future:
        with self._lock:
            self._crash_retries += 1
        return self._dispatch_once(call, priority)

    def _dispatch_once(self, call: Call, priority: int = 0) -> Future:
        with self._lock:
            if self._stopped:
                raise PoolStoppedError(f"{self!r} is stopped; {call.method}() was not run")
            future = self._try_send(call)
            if future is None:
                future = Future()
                heapq.heappush(self._parked, _Parked((-priority, next(self._seq)), call, future))
                # A call may have finished (without the pool lock) since _try_send looked.
                self._release_parked()
            return future

    def _try_send(self, call: Call) -> Optional[Future]:
        """Send a call to a worker now if one has room, else None (lock held)."""
        if self._options.on_demand:
            cap = self._options.worker_cap
            if cap and self._on_demand_live >= cap:
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
        limit = self._options.max_queued_tasks
        if slot.client.alive() and (limit is None or slot.in_flight < limit):
            return slot
        candidates = self._candidates()
        return self._choose(candidates) if candidates else None

    def _has_room(self, slot: Slot) -> bool:
        limit = self._options.max_queued_tasks
        return limit is None or slot.in_flight < limit

    def _send(self, slot: Slot, call: Call) -> Future:
        """Submit ``call`` to ``slot``'s worker and count it there."""
        slot.dispatched += 1
        future = Future(slot.on_done)
        slot.client.submit(call, future)
        self._members.touched()
        return future

    def _live_slots(self) -> list[Slot]:
        return self._roster

    def _ready_slots(self) -> list[Slot]:
        """Live slots whose worker can take calls now (not dead and awaiting a replacement)."""
        return [s for s in self._roster if s.client.alive()]

    def _candidates(self) -> list[Slot]:
        """Ready slots with room for one more call under ``max_queued_tasks``."""
        return [s for s in self._ready_slots() if self._has_room(s)]

    def _choose(self, candidates: list[Slot]) -> Slot:
        figure = self._balancer.load
        if figure is None:
            return candidates[self._balancer.pick(len(candidates), None)]
        loads = list(map(operator.attrgetter(figure), candidates))
        others = self._members.others_load()
        if others:
            column = 0 if figure == "in_flight" else 1
            loads = [load + others.get(s.index, (0, 0))[column] for load, s in zip(loads, candidates)]
        return candidates[self._balancer.pick(len(candidates), loads)]

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
        if self._parked:
            with self._lock:
                self._release_parked()
        self._members.touched()

    def _release_parked(self) -> None:
        """Send parked calls, highest priority first, while workers have room (lock held).

        Also while the pool stops: ``stop()`` drains parked calls before it stops the workers.
        """
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

    @property
    def _on_demand_live(self) -> int:
        return len(self._on_demand_clients)

    def _send_on_demand(self, call: Call) -> Future:
        client = self._backend.spawn(self._spec())
        self._on_demand_clients.add(client)
        client.on_death = lambda c, error, unstarted: [settle(f, error=error) for _, f in unstarted]
        future = Future()
        future.add_done_callback(lambda f: self._on_demand_done(client))
        return client.submit(call, future)

    def _on_demand_done(self, client: WorkerClient) -> None:
        self._reaper_queue().put(client)
        with self._lock:
            self._on_demand_clients.discard(client)
            self._release_parked()

    def _reaper_queue(self) -> SimpleQueue:
        if self._reaper is None:
            self._reaper = _Reaper(self._reaped)
        return self._reaper.queue

    def _reaped(self, client: WorkerClient) -> None:
        with self._lock:
            self._past_retries += client.retries() or 0

    # ----- lifecycle ------------------------------------------------------------
    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop every worker: running and queued calls finish first.

        ``timeout`` bounds the whole stop (not each worker); calls still waiting
        when it passes are cancelled with ``CancelledError``. Results of calls
        that completed are never discarded. Calling ``stop()`` twice is harmless.
        """
        if self._refuse_calls():
            self._wind_down(timeout)

    def close(self, timeout: Optional[float] = None) -> None:
        """The same as :meth:`stop`, unless the worker class defines ``close()``: then
        ``handle.close(...)`` calls the worker's method (a Future) and ``stop()`` stops."""
        self.stop(timeout)

    def _refuse_calls(self) -> bool:
        """From now on refuse new calls (PoolStoppedError); False if the handle was stopped already."""
        with self._lock:
            if self._stopped:
                return False
            self._stopped = True
            return True

    def _wind_down(self, timeout: Optional[float]) -> None:
        """Finish the calls already made (parked ones included), then stop every worker (see stop())."""
        if self._health is not None:
            self._health.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._drain_parked(deadline)
        self._members.stop_clients(deadline)
        if self._reaper is not None:
            self._reaper.close()
        self._backend.shutdown()
        limits = self._extras.get("limits")
        if limits is not None and hasattr(limits, "release_owned"):
            limits.release_owned()

    def _drain_parked(self, deadline: Optional[float]) -> None:
        """Wait, until ``deadline``, for the calls parked in the pool's queue; cancel those still parked then."""
        with self._lock:
            waiting = [p.future for p in self._parked]
        if waiting:
            concurrent.futures.wait(waiting, timeout=seconds_left(deadline))
        with self._lock:
            parked, self._parked = self._parked, []
        for p in parked:
            p.future.cancel() or settle(p.future, error=PoolStoppedError(f"{self!r} stopped before this call was sent"))

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ----- resizing, broadcast, stats --------------------------------------------
    def resize(self, max_workers: int) -> None:
        """Grow or shrink a persistent pool; workers removed finish their calls first."""
        if self._options.on_demand:
            raise ConfigError("resize() applies to persistent pools; an on-demand pool has no fixed size")
        if max_workers < 1 or (max_workers > 1 and not self._backend.supports_pools):
            raise ConfigError(f"resize({max_workers}): the new size must be >= 1 (and 1 in mode {self._options.mode!r})")
        if self._stopped:
            raise PoolStoppedError(f"{self!r} is stopped; it cannot be resized")
        live = self._live_slots()
        if max_workers > len(live):
            self._adopt_all(self._members.start(max_workers - len(live)))
            return
        leaving = live[max_workers:]
        self._retire(leaving)
        self._members.retire(leaving)

    def broadcast(self, method: str, *args: Any, **kwargs: Any) -> list[Future]:
        """Call ``method`` once on every live worker; their futures in worker order."""
        if method not in self._methods:
            raise AttributeError(f"{self._cls.__name__} has no public method {method!r}{closest(method, self._methods)}")
        if self._stopped:
            raise PoolStoppedError(f"{self!r} is stopped; broadcast({method!r}) was not run")
        with self._lock:
            return [self._send(slot, Call(method, args, kwargs)) for slot in self._live_slots()]

    def get_pool_stats(self) -> dict:
        """Pool size, state, balancer figures and per-worker health, as a plain dict.

        In Ray mode the figures cover every copy of this handle (tasks, actors,
        Serve replicas), as collected by the pool's balancer actor.
        """
        return self._members.stats(self._local_stats())

    def get_worker_stats(self, worker_index: int) -> dict:
        """The figures of one worker: ``worker_index`` counts the pool's live workers from 0, in
        the order of ``get_pool_stats()["workers"]``; IndexError outside ``0 .. total_workers-1``.

        Returns ``worker_id`` (the index given), ``stopped`` (the pool's state) and the
        worker's health figures (alive, restarts, in_flight, completed, failed, retries).
        """
        if isinstance(worker_index, bool) or not isinstance(worker_index, int):
            raise TypeError(f"worker_index must be an int (got {type(worker_index).__name__}: {worker_index!r})")
        stats = self.get_pool_stats()
        workers = [stats["workers"][key] for key in sorted(stats["workers"])]
        if not 0 <= worker_index < len(workers):
            allowed = f"indexes 0 to {len(workers) - 1}" if workers else "no live workers"
            raise IndexError(
                f"worker_index={worker_index} is out of range: pool size {len(workers)} ({allowed}) in {self!r}"
            )
        return {"worker_id": worker_index, "stopped": stats["stopped"], **workers[worker_index]}

    def _local_stats(self) -> dict:
        with self._lock:
            live = list(self._live_slots())
            every_slot = list(self._slots.values())
            past_retries = self._past_retries
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
            stats = {
                "mode": self._options.mode,
                "total_workers": self._on_demand_live if self._options.on_demand else len(live),
                "max_workers": self._options.worker_cap,
                "on_demand": self._options.on_demand,
                "on_demand_active": self._on_demand_live,
                "stopped": self._stopped,
                "queued": len(self._parked),
                "health_replacements": self._health.replaced if self._health is not None else 0,
                "load_balancer": balancer,
            }
        # Outside the lock: asking a Ray worker for its retry count is a round trip (all asked at once).
        for slot in live:
            slot.client.ask_retries()
        stats["workers"] = {s.index: s.health() for s in live}
        retired = [s.client.retries() for s in every_slot if s.retired]
        stats["retries"] = past_retries + sum(w["retries"] or 0 for w in stats["workers"].values()) + sum(
            r or 0 for r in retired
        )
        return stats

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        kind = "on-demand pool" if self._options.on_demand else (
            "worker" if self._options.pool_size == 1 else f"pool of {len(self._live_slots())}"
        )
        return f"<{self._cls.__name__} {kind}, mode={self._options.mode!r}, {state}>"

    def __reduce__(self):
        return self._members.reduce()

    def __del__(self) -> None:
        if not getattr(self, "_stopped", True) and getattr(self, "_slots", None) is not None:
            log.debug("concurry_ray: %r garbage-collected without stop()", self)


class _Reaper:
    """A thread that stops finished on-demand workers (never from their own thread)."""

    def __init__(self, on_stopped: Callable[[WorkerClient], None]) -> None:
        self.queue: SimpleQueue = SimpleQueue()
        self._on_stopped = on_stopped
        self._thread = threading.Thread(target=self._run, name="concurry-reaper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            client = self.queue.get()
            if client is None:
                return
            client.stop(None)
            self._on_stopped(client)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=30)


def _is_future_arg(value: Any) -> bool:
    return is_awaitable_result(value)


def _substituted(call: Call, by_id: dict) -> Call:
    args, kwargs = replace((call.args, call.kwargs), by_id)
    return Call(call.method, tuple(args), kwargs)
