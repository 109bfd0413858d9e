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
    PoolNotFoundError,
    PoolStoppedError,
    RetryValidationError,
    SerializationError,
    TimerError,
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
    wrap_future,
)
from .future_types import AsyncioFuture, BaseFuture, ConcurrentFuture, RayFuture, SyncFuture
from .limits import Acquisition, CallLimit, Limit, LimitPool, LimitSet, LimitSetAcquisition, RateLimit, ResourceLimit
from .named_pools import get_pool, remove_pool
from .options import RetryConfig
from .pools.handle import Pool
from .progress import ProgressBar
from .task import Executor, Task, TaskWorker, task
from .timer import Timer
from .worker import Worker, WorkerBuilder, worker

__all__ = [
    "Worker",
    "WorkerBuilder",
    "Pool",
    "get_pool",
    "remove_pool",
    "TaskWorker",
    "Task",
    "task",
    "worker",
    "Executor",
    "ProgressBar",
    "RetryConfig",
    "Timer",
    "TimerError",
    "global_config",
    "temp_config",
    "Future",
    "BaseFuture",
    "SyncFuture",
    "ConcurrentFuture",
    "AsyncioFuture",
    "RayFuture",
    "wrap_future",
    "LimitSet",
    "CallLimit",
    "RateLimit",
    "ResourceLimit",
    "Acquisition",
    "Limit",
    "LimitPool",
    "LimitSetAcquisition",
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
    "PoolNotFoundError",
    "LimitsUnavailableError",
    "RetryValidationError",
]
