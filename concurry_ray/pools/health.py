"""Health checks: call a worker method on every worker at an interval; replace failures.

With ``health_check="method_name"`` (and ``health_check_interval`` seconds), a
pool calls that method on each worker. A worker whose check returns a falsy
value, raises, or does not answer within the interval is retired (its calls
finish) and a fresh worker takes its place. Dead workers need no check: they are
replaced as soon as their death is seen.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
from typing import Callable

from ..futures import Future
from ..protocol import Call
from .dispatch import Dispatcher, Slot

log = logging.getLogger("concurry_ray")


class HealthMonitor:
    """A daemon thread that checks a pool's workers until the pool stops."""

    def __init__(self, dispatcher: Dispatcher, swap_out: Callable[[Slot], None], method: str, interval: float) -> None:
        self.dispatcher = dispatcher
        self.swap_out = swap_out
        self.method = method
        self.interval = interval
        self.replaced = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="concurry-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            for slot in self.dispatcher.ready_slots():
                if not self._stopped.is_set() and not self._healthy(slot):
                    self._replace(slot)

    def _healthy(self, slot: Slot) -> bool:
        future = slot.client.submit(Call(self.method, (), {}), Future())
        try:
            return bool(future.result(timeout=self.interval))
        except (Exception, cf.CancelledError) as exc:
            log.warning("concurry_ray: health check %s() of %s failed: %r", self.method, slot.client.label, exc)
            return False

    def _replace(self, slot: Slot) -> None:
        log.warning("concurry_ray: %s is unhealthy; replacing it", slot.client.label)
        try:
            self.swap_out(slot)
            self.replaced += 1
        except Exception as exc:
            if not self._stopped.is_set():
                log.error("concurry_ray: could not replace unhealthy %s: %r", slot.client.label, exc)

    def stop(self) -> None:
        """Stop checking (the pool is stopping)."""
        self._stopped.set()
