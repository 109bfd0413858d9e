"""Ray application metrics of pools and limit sets (``ray.util.metrics``), exported while Ray is initialised.

=================================  =========  ==============================  ==========================================
Name (Prometheus: ``ray_`` first)   Kind       Tags                            What
=================================  =========  ==============================  ==========================================
``concurry_calls``                 counter    pool, method, outcome           calls settled; outcome is one of OUTCOMES
``concurry_call_seconds``          histogram  pool, method                    from submit until the future settled
``concurry_workers``               gauge      pool                            live workers
``concurry_in_flight``             gauge      pool                            calls sent to a worker, not finished
``concurry_queued``                gauge      pool                            calls waiting in the pool for a worker
``concurry_restarts``              counter    pool                            workers replaced after they died
``concurry_limit_wait_seconds``    histogram  limit_set, key                  how long an acquisition waited
``concurry_limit_used``            gauge      limit_set, key                  units in use, sampled where the budget is
=================================  =========  ==============================  ==========================================

``pool`` is the pool's ``name`` option, else its worker class; ``limit_set`` is the
set's name, else ``unnamed``: tags stay few whatever the program does. Each figure is
recorded in the process that knows it: calls by the handle that made them (every
copy of a Ray handle counts its own; Prometheus adds them up), waits by the worker
that waited, usage by the limits holder.

Recording costs a dict update on the caller's path; a daemon thread hands the
figures to Ray every ``PERIOD`` seconds and samples the gauges then. Where Ray is
not initialised nothing is recorded, and Ray is never imported for it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import sys
import threading
import time
import weakref
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Callable, Iterable, Iterator

from .errors import CallTimeoutError, WorkerCrashedError
from .futures import Future, peek

log = logging.getLogger("concurry_ray")

PERIOD = 1.0  # seconds between two hand-overs to Ray
LATENCY_BOUNDARIES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300]
OUTCOMES = ("ok", "error", "timeout", "crashed", "cancelled")

# name -> (kind, description, tag keys)
METRICS = {
    "concurry_calls": ("counter", "Calls settled, by pool, method and outcome", ("pool", "method", "outcome")),
    "concurry_call_seconds": ("histogram", "Seconds from submitting a call until its future settled", ("pool", "method")),
    "concurry_workers": ("gauge", "Live workers of a pool", ("pool",)),
    "concurry_in_flight": ("gauge", "Calls sent to a pool's workers and not finished", ("pool",)),
    "concurry_queued": ("gauge", "Calls waiting in a pool for a free worker", ("pool",)),
    "concurry_restarts": ("counter", "Workers of a pool replaced after they died", ("pool",)),
    "concurry_limit_wait_seconds": ("histogram", "Seconds a limits acquisition waited", ("limit_set", "key")),
    "concurry_limit_used": ("gauge", "Units of a limit in use", ("limit_set", "key")),
}

Sample = tuple[str, tuple, float]  # (metric, tag values, value)


def active() -> bool:
    """Whether this process records metrics: Ray is initialised here (Ray is not imported to find out)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


class _Recorder:
    """This process's buffer of counts and observations, and the thread that hands them to Ray."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        self._observed: dict[tuple, list] = collections.defaultdict(list)
        self._samplers: list[weakref.WeakMethod] = []
        self._calls: collections.deque = collections.deque()  # (pool, method, outcome, seconds) per call
        self._meters: dict[str, Any] = {}
        self._started = False  # this process's hand-over thread runs

    def count(self, metric: str, tags: tuple, amount: float = 1) -> None:
        with self._lock:
            self._counts[(metric, tags)] += amount
        self._start()

    def call_settled(self, pool: str, method: str, outcome: str, seconds: float) -> None:
        """One call's outcome and latency: appended without a lock (this runs once per call),
        added up at the next hand-over."""
        self._calls.append((pool, method, outcome, seconds))
        self._start()

    def observe(self, metric: str, tags: tuple, value: float) -> None:
        with self._lock:
            self._observed[(metric, tags)].append(value)
        self._start()

    def sample_with(self, method: Callable[[], Iterable[Sample]]) -> None:
        """Call the bound ``method`` at every hand-over while its object lives; it returns gauge values."""
        with self._lock:
            self._samplers.append(weakref.WeakMethod(method))
        self._start()

    def _start(self) -> None:
        """Start this process's hand-over thread, once (after that, one attribute read)."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
            threading.Thread(target=self._run, name="concurry-metrics", daemon=True).start()
        atexit.register(self._last_flush)  # after ray.init: it runs before Ray's own exit hook

    def _forked(self) -> None:
        """In a forked child: nothing recorded yet, no thread yet (the parent's did not come along)."""
        self.__init__()

    def _run(self) -> None:
        while True:
            time.sleep(PERIOD)
            if active():
                try:
                    self.flush()
                except Exception as exc:  # Ray shutting down, say: the next hand-over tries again
                    log.debug("concurry_ray: could not hand metrics to Ray: %s", exc)

    def _last_flush(self) -> None:
        if active():
            self.flush()

    def flush(self) -> None:
        """Hand everything recorded since the last call to Ray, and sample the gauges."""
        self._add_up_calls()
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
            observed, self._observed = self._observed, collections.defaultdict(list)
            samplers = [s for s in self._samplers if s() is not None]
            self._samplers = samplers
        for (metric, tags), amount in counts.items():
            self._meter(metric).inc(amount, self._tags(metric, tags))
        for (metric, tags), values in observed.items():
            meter, tag_map = self._meter(metric), self._tags(metric, tags)
            for value in values:
                meter.observe(value, tag_map)
        for sampler in samplers:
            method = sampler()
            for metric, tags, value in (method() if method is not None else ()):
                self._meter(metric).set(value, self._tags(metric, tags))

    def _add_up_calls(self) -> None:
        calls = self._calls
        with self._lock:
            for _ in range(len(calls)):  # only what is there now: calls settling meanwhile wait for the next
                pool, method, outcome, seconds = calls.popleft()
                self._counts[("concurry_calls", (pool, method, outcome))] += 1
                self._observed[("concurry_call_seconds", (pool, method))].append(seconds)

    def _meter(self, metric: str) -> Any:
        meter = self._meters.get(metric)
        if meter is None:
            from ray.util import metrics

            kind, description, tag_keys = METRICS[metric]
            if kind == "histogram":
                meter = metrics.Histogram(metric, description, LATENCY_BOUNDARIES, tag_keys)
            else:
                meter = (metrics.Counter if kind == "counter" else metrics.Gauge)(metric, description, tag_keys)
            self._meters[metric] = meter
        return meter

    @staticmethod
    def _tags(metric: str, values: tuple) -> dict:
        return dict(zip(METRICS[metric][2], values))


RECORDER = _Recorder()
os.register_at_fork(after_in_child=RECORDER._forked)


class PoolMeter:
    """The metrics of one pool handle: its calls as they settle, and its load sampled at each hand-over."""

    def __init__(self, pool: str, load: Callable[[], dict]) -> None:
        self.pool = pool
        self._load = load
        self._restarts = 0
        self._stopped = False
        RECORDER.sample_with(self.sample)

    def watch(self, method: str, future: Future) -> None:
        """Count ``future``'s outcome and time when it settles."""
        started = time.monotonic()
        pool = self.pool

        def settled(done: Future) -> None:
            RECORDER.call_settled(pool, method, outcome_of(done), time.monotonic() - started)

        future.add_done_callback(settled)

    def sample(self) -> list[Sample]:
        """The pool's gauges now (all zero once stopped); restarts since the last sample are counted."""
        load = {"workers": 0, "in_flight": 0, "queued": 0, "restarts": self._restarts} if self._stopped else self._load()
        new_restarts, self._restarts = load["restarts"] - self._restarts, load["restarts"]
        if new_restarts > 0:
            RECORDER.count("concurry_restarts", (self.pool,), new_restarts)
        tags = (self.pool,)
        return [("concurry_workers", tags, load["workers"]), ("concurry_in_flight", tags, load["in_flight"]),
                ("concurry_queued", tags, load["queued"])]

    def stop(self) -> None:
        """The pool stopped: its gauges read zero from now on."""
        self._stopped = True


def outcome_of(future: Future) -> str:
    """One of OUTCOMES for a settled future."""
    error = peek(future)[1]
    if error is None:
        return "ok"
    if isinstance(error, CancelledError):
        return "cancelled"
    if isinstance(error, CallTimeoutError):
        return "timeout"
    return "crashed" if isinstance(error, WorkerCrashedError) else "error"


def waiting(label: str, keys: Iterable[str]) -> AbstractContextManager:
    """Around an acquisition from the budget ``label``: its wait is observed per key, when this
    process records metrics (an acquisition that fails is not observed)."""
    if not active():
        return _NOTHING
    return _timed(label, tuple(keys))


_NOTHING = nullcontext()


@contextmanager
def _timed(set_name: str, keys: tuple) -> Iterator[None]:
    started = time.monotonic()
    yield
    waited = time.monotonic() - started
    for key in keys:
        RECORDER.observe("concurry_limit_wait_seconds", (set_name, key), waited)


class UsageMeter:
    """Samples a budget's units in use per key, where the budget is kept (a limits holder)."""

    def __init__(self, set_name: str, stats: Callable[[], dict]) -> None:
        self.set_name = set_name
        self._stats = stats
        RECORDER.sample_with(self.sample)

    def sample(self) -> list[Sample]:
        return [("concurry_limit_used", (self.set_name, key), figures["used"])
                for key, figures in self._stats()["limits"].items()]
