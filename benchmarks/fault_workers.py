"""The worker classes of ``benchmarks/faults.py``.

They live in a module of their own, on the ``PYTHONPATH`` that ``faults.py``
sets, so that worker processes and Ray actors can import them by name.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from concurry_ray import Worker


class Victim(Worker):
    """Short calls that say which process ran them."""

    def pid(self) -> int:
        """The pid of the process hosting this worker (a child process or a Ray actor)."""
        return os.getpid()

    def work(self, seconds: float, call_id: int, log_path: Optional[str] = None) -> int:
        """Sleep ``seconds`` and return the pid. With ``log_path``, first append ``call_id`` to that
        file (one line, ``O_APPEND``), so every execution of a call leaves a trace, even one
        whose process is killed before it returns."""
        if log_path is not None:
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, f"{call_id}\n".encode())
            finally:
                os.close(fd)
        time.sleep(seconds)
        return os.getpid()

    def echo(self, value: int) -> int:
        """Return ``value``: the call of the soak, which measures the library and nothing else."""
        return value


class Taker(Worker):
    """Takes one call of a shared ``CallLimit`` after another."""

    def take(self, until: float) -> tuple[list, list]:
        """Acquire in a loop until the wall clock reaches ``until``.

        Returns the spans ``(asked, granted)`` (``time.time()`` just before ``acquire`` and just
        after it returned; the grant happened between them) and the names of the errors met
        (an acquisition that times out or finds the holder gone is tried again shortly).
        """
        spans, errors = [], []
        while time.time() < until:
            asked = time.time()
            try:
                with self.limits.acquire(timeout=1.0):
                    spans.append((asked, time.time()))
            except Exception as error:
                errors.append(type(error).__name__)
                time.sleep(0.05)
        return spans, errors
