"""concurry_ray: write a plain class, run it anywhere, on one thread or a Ray cluster.

    from concurry_ray import Worker

    class Doubler(Worker):
        def double(self, x: int) -> int:
            return 2 * x

    with Doubler.options(mode="ray", max_workers=4).init() as pool:
        print(pool.double(21).result())   # 42
"""

from .config import global_config, temp_config
from .enums import (
    ExecutionMode,
    LoadBalancingAlgorithm,
    PollingAlgorithm,
    RateLimitAlgorithm,
    RateWindow,
    RetryAlgorithm,
    ReturnWhen,
)
from .errors import (
    CallTimeoutError,
    ConfigError,
    LimitsUnavailableError,
    PoolStoppedError,
    RetryValidationError,
    SerializationError,
    WorkerCrashedError,
    WorkerInitError,
)
from .futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Future,
    as_completed,
    async_gather,
    async_wait,
    gather,
    wait,
)
from .limits import Acquisition, CallLimit, LimitSet, RateLimit, ResourceLimit
from .pool import Pool
from .progress import ProgressBar
from .task import Task, TaskWorker, task
from .worker import Worker, WorkerBuilder

__all__ = [
    "Worker",
    "WorkerBuilder",
    "Pool",
    "TaskWorker",
    "Task",
    "task",
    "ProgressBar",
    "global_config",
    "temp_config",
    "Future",
    "LimitSet",
    "CallLimit",
    "RateLimit",
    "ResourceLimit",
    "Acquisition",
    "wait",
    "gather",
    "as_completed",
    "async_gather",
    "async_wait",
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "ExecutionMode",
    "LoadBalancingAlgorithm",
    "PollingAlgorithm",
    "RateLimitAlgorithm",
    "RateWindow",
    "RetryAlgorithm",
    "ReturnWhen",
    "ConfigError",
    "SerializationError",
    "CallTimeoutError",
    "WorkerInitError",
    "WorkerCrashedError",
    "PoolStoppedError",
    "LimitsUnavailableError",
    "RetryValidationError",
]
