"""What the benchmark scripts share: their environment, a local Ray runtime, pools stopped on the way out.

``prepare()`` must run before a script imports its worker module: it puts the
repository and this folder on ``sys.path`` and on ``PYTHONPATH``, so that worker
processes and Ray actors import the workers (and ``concurry_ray``) by name.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def prepare() -> None:
    """Set up this process and the workers it starts: no usage stats, no Ray token auth, import paths."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    paths = [str(REPO), str(HERE)]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


@contextmanager
def ray_runtime() -> Iterator[None]:
    """A local Ray runtime (2 CPUs, no dashboard, quiet), shut down on the way out, so that Ray's own
    processes load the machine only while a Ray measurement runs."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def started(cls: type, options: dict, stop_timeout: float) -> Iterator[Any]:
    """A pool of ``cls`` with ``options``, stopped (within ``stop_timeout`` seconds) on the way out."""
    pool = cls.options(**options).init()
    try:
        yield pool
    finally:
        pool.stop(timeout=stop_timeout)
