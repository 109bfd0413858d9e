"""The public API is exactly what __all__ says, and every public name is documented."""

import inspect

import concurry_ray


def test_all_matches_public_names():
    public = {name for name in vars(concurry_ray) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(concurry_ray, name))}
    assert set(concurry_ray.__all__) == public - modules
    assert len(concurry_ray.__all__) == len(set(concurry_ray.__all__))


def test_every_public_name_has_a_docstring():
    for name in concurry_ray.__all__:
        obj = getattr(concurry_ray, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"


# concurry 0.13.2's top-level __all__ (its private sentinel ``_NO_ARG`` aside): a program importing any of them runs here.
CONCURRY_NAMES = [
    "BaseFuture", "SyncFuture", "ConcurrentFuture", "AsyncioFuture", "wrap_future", "ExecutionMode",
    "LoadBalancingAlgorithm", "PollingAlgorithm", "ReturnWhen", "TaskWorker", "Worker", "worker", "task", "Executor",
    "wait", "gather", "async_wait", "async_gather", "ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION",
    "RateLimitAlgorithm", "RateWindow", "RetryAlgorithm", "Limit", "RateLimit", "CallLimit", "ResourceLimit",
    "Acquisition", "LimitSetAcquisition", "LimitSet", "LimitPool", "RetryConfig", "RetryValidationError",
    "ProgressBar", "Timer", "TimerError", "global_config", "temp_config",
]


def test_every_public_name_of_concurry_is_exported():
    missing = [name for name in CONCURRY_NAMES + ["RayFuture"] if name not in concurry_ray.__all__]
    assert missing == []
