"""The handle a user holds: one worker or a pool of them, behind one interface.

A :class:`Pool` is what ``MyWorker.options(...).init(...)`` returns. It turns
method calls into :class:`~concurry_ray.protocol.Call`s (waiting, without
blocking the caller, for futures passed as arguments), hands them to its
:class:`~concurry_ray.pools.dispatch.Dispatcher`, and offers ``stop``,
``resize``, ``broadcast`` and the stats. A single worker is simply a pool of one.
Which workers exist is the business of the pool's membership (chosen by its
mode), and which worker gets a call that of the Dispatcher.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Optional

from .. import metrics, tracing
from ..deadlines import expire_after
from ..display import pool_html, pool_repr, read_stats
from ..errors import ConfigError, PoolStoppedError, closest
from ..futures import Future, as_future, chain, is_awaitable_result, settle, when_all_done
from ..methods import public_methods
from ..modes import backend_class, membership_class
from ..nested import collect_arguments, replace
from ..options import WorkerOptions
from ..protocol import Backend, Call
from ..retry import check_method_names
from .autoscale import Autoscaler
from .balancing import make_balancer
from .crashes import crash_retries
from .dispatch import Dispatcher, deadline_after
from .health import HealthMonitor
from .membership import Blueprint

log = logging.getLogger("concurry_ray")


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
        self._methods = frozenset(public_methods(cls))
        check_method_names(options, self._methods, cls.__name__)
        if options.health_check is not None and options.health_check not in self._methods:
            raise ConfigError(
                f"health_check={options.health_check!r} is not a public method of {cls.__name__}"
                f"{closest(options.health_check, self._methods)}"
            )
        self._backend: Backend = backend_class(options.mode)(options)
        extras = self._shared_extras() if attach is None else attach.extras
        self._blueprint = Blueprint(cls, args, kwargs, options, extras, self._backend)
        self._dispatcher = Dispatcher(
            options,
            make_balancer(options.balancing),
            self._blueprint.spawn,
            {m: crash_retries(options, m) for m in self._methods},
            functools.partial(_describe, cls.__name__, options),
        )
        self._members = membership_class(options.mode)(self._blueprint, self._dispatcher, attach)
        self._dispatcher.connect(self._members)
        self._stopper = _Stopper(self._dispatcher, self._members, self._backend, None, extras.get("limits"))
        try:
            self._dispatcher.install_all(self._members.initial(options.initial_size))
        except BaseException:  # a failed .init() leaves nothing behind: workers, balancer, limits holder
            self._dispatcher.close()
            self._stopper.wind_down(0)
            raise
        self._health = self._stopper.health = self._start_health_checks()
        self._meter = self._stopper.meter = self._start_metrics()
        self._scaler = self._stopper.scaler = self._start_autoscaler(extras.get("limits"))
        if self._members.stops_when_collected:
            weakref.finalize(self, self._stopper.collected, self._blueprint.label).atexit = False
        if "close" in self._methods:  # the worker's close() wins over the handle's
            self.__dict__["close"] = MethodCaller(self, "close")

    def _shared_extras(self) -> dict:
        from ..limits import PoolOwner, pool_limits

        options = self._options
        owner = PoolOwner(options.name, options.lifetime) if options.name is not None else None
        limits = pool_limits(options.limits, options.mode, owner)
        return {"limits": limits} if limits is not None else {}

    def _start_health_checks(self) -> Optional[HealthMonitor]:
        check = self._options.health_check
        if check is None or self._options.on_demand or not self._members.manages_pool:
            return None
        return HealthMonitor(self._dispatcher, self._members.swap_out, check, self._options.health_check_interval)

    def _start_metrics(self) -> Optional[metrics.PoolMeter]:
        if not metrics.active():
            return None
        return metrics.PoolMeter(self._options.name or self._cls.__name__, self._dispatcher.load)

    def _start_autoscaler(self, limits: Any) -> Optional[Autoscaler]:
        if not self._options.elastic or not self._members.manages_pool or self._members.scales_itself:
            return None
        return Autoscaler(self._dispatcher, self._members, self._options, limits)

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
        """Submit a call and return its future, whatever ``blocking`` says; traced (a PRODUCER
        span until the future settles) when ``tracing.wanted()``."""
        if self._dispatcher.closed:
            raise PoolStoppedError(f"{self!r} is stopped; {method}() cannot be called. Build a new one with .init()")
        if not tracing.wanted():
            future = self._send(Call(method, args, kwargs), priority)
        else:
            span = tracing.CallerSpan(self._options, self._cls.__name__, method)
            future = span.follow(self._send, Call(method, args, kwargs, span.carrier), priority)
        if self._meter is not None:
            self._meter.watch(method, future)
        return future

    def _send(self, call: Call, priority: int) -> Future:
        """Dispatch ``call`` (once its argument futures are done) under the handle's ``call_timeout``."""
        pending = collect_arguments(call.args, call.kwargs, _is_future_arg) if self._options.unwrap_futures else None
        future = self._after(pending, call, priority) if pending else self._dispatcher.dispatch(call, priority)
        if self._options.call_timeout is not None:
            expire_after(future, self._options.call_timeout, f"{self._cls.__name__}.{call.method}()")
        return future

    def _after(self, pending: list, call: Call, priority: int) -> Future:
        """Submit ``call`` once its argument futures are done, without blocking the caller.

        An argument future that fails or is cancelled settles the call with that
        outcome: its exception, or cancelled.
        """
        native = [p for p in pending if self._backend.passes_natively(p)]
        waiting = [(p, as_future(p)) for p in pending if not self._backend.passes_natively(p)]
        by_id = {id(p): self._backend.native_form(p) for p in native}
        if not waiting:
            return self._dispatcher.dispatch(_substituted(call, by_id), priority)
        outer = Future()

        def all_done() -> None:
            if any(f.cancelled() for _, f in waiting):
                outer.cancel()
                return
            error = next((f.exception() for _, f in waiting if f.exception() is not None), None)
            if error is not None:
                settle(outer, error=error)
                return
            values = {**by_id, **{id(p): f.result() for p, f in waiting}}
            try:
                chain(self._dispatcher.dispatch(_substituted(call, values), priority), outer)
            except PoolStoppedError as exc:
                settle(outer, error=exc)

        when_all_done([f for _, f in waiting], all_done)
        return outer

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
        return self._dispatcher.close()

    def _wind_down(self, timeout: Optional[float]) -> None:
        """Finish the calls already made (parked ones included), then stop every worker (see stop())."""
        self._stopper.wind_down(timeout)

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
        if self._dispatcher.closed:
            raise PoolStoppedError(f"{self!r} is stopped; it cannot be resized")
        live = self._dispatcher.live_slots()
        if max_workers > len(live):
            self._dispatcher.install_all(self._members.start(max_workers - len(live)))
            return
        self._members.retire(self._dispatcher.retire([s.index for s in live[max_workers:]]))

    def broadcast(self, method: str, *args: Any, **kwargs: Any) -> list[Future]:
        """Call ``method`` once on every live worker; their futures in worker order. Traced (one
        PRODUCER span over every worker's CONSUMER span) when ``tracing.wanted()``."""
        if method not in self._methods:
            raise AttributeError(f"{self._cls.__name__} has no public method {method!r}{closest(method, self._methods)}")
        if self._dispatcher.closed:
            raise PoolStoppedError(f"{self!r} is stopped; broadcast({method!r}) was not run")
        if not tracing.wanted():
            return self._dispatcher.send_to_all(Call(method, args, kwargs))
        span = tracing.CallerSpan(self._options, self._cls.__name__, method, broadcast=True)
        return span.follow_all(self._dispatcher.send_to_all, Call(method, args, kwargs, span.carrier))

    def get_pool_stats(self) -> dict:
        """Pool size, state, balancer figures and per-worker health, as a plain dict.

        In Ray mode the figures cover every copy of this handle (tasks, actors,
        Serve replicas), as collected by the pool's balancer actor.
        """
        local = self._dispatcher.stats(ask_workers=not self._members.brings_worker_retries)
        local["health_replacements"] = self._health.replaced if self._health is not None else 0
        if self._scaler is not None:
            local.update(self._scaler.stats())
        return self._members.stats(local)

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

    def __repr__(self) -> str:
        return _describe(self._cls.__name__, self._options, self._dispatcher)

    def _repr_html_(self) -> str:
        """The pool as a small table in a notebook: mode, state, workers alive/total, calls in
        flight and queued, usage per limit key. A stopped pool shows what it knows without
        asking its workers or limits holder; stats that cannot be read are shown as such."""
        summary = self._dispatcher.summary()
        name = self._options.name
        if summary["stopped"]:
            return pool_html(self._cls.__name__, summary, name=name)
        limits = self._blueprint.extras.get("limits")
        usage = read_stats(limits.get_stats) if limits is not None else None
        return pool_html(self._cls.__name__, {**summary, **read_stats(self.get_pool_stats)}, usage, name=name)

    def __reduce__(self):
        return self._members.reduce()


@dataclass
class _Stopper:
    """What stopping a pool takes, apart from the handle, so that it also runs when the handle
    is garbage-collected without ``stop()`` (it must not refer to the handle)."""

    dispatcher: Dispatcher
    members: Any
    backend: Backend
    health: Optional[HealthMonitor]
    limits: Any
    scaler: Optional[Autoscaler] = None
    meter: Optional[metrics.PoolMeter] = None

    def wind_down(self, timeout: Optional[float]) -> None:
        """Finish the calls already made (parked ones included), then stop every worker (see Pool.stop())."""
        for helper in (self.health, self.scaler):
            if helper is not None:
                helper.stop()
        deadline = deadline_after(timeout)
        self.dispatcher.drain_parked(deadline)
        self.members.stop_clients(deadline)
        self.dispatcher.stop_reaper(deadline)
        self.backend.shutdown()
        if self.limits is not None and self.members.ends_pool and hasattr(self.limits, "release_owned"):
            self.limits.release_owned()
        if self.meter is not None:
            self.meter.stop()

    def collected(self, name: str) -> None:
        """The handle was garbage-collected: unless it was stopped, let its calls finish and stop
        its workers, in the background (this runs wherever the garbage collector ran)."""
        if self.dispatcher.close():
            log.debug("concurry_ray: %s garbage-collected without stop(); stopping its workers", name)
            threading.Thread(target=self.wind_down, args=(None,), name="concurry-shutdown", daemon=True).start()


def _describe(cls_name: str, options: WorkerOptions, dispatcher: Dispatcher) -> str:
    """A handle's repr: its class, size, name, mode and state (no worker is asked)."""
    return pool_repr(cls_name, dispatcher.summary(), options.name)


def _is_future_arg(value: Any) -> bool:
    return is_awaitable_result(value)


def _substituted(call: Call, by_id: dict) -> Call:
    args, kwargs = replace((call.args, call.kwargs), by_id)
    return call._replace(args=tuple(args), kwargs=kwargs)
