"""Every spelling concurry accepts for a named choice means the same thing here (and bad ones are refused clearly)."""

from __future__ import annotations

import pytest
from conftest import RAY_ACTOR
from workers import Counter

from concurry_ray import (
    CallLimit,
    ConfigError,
    ExecutionMode,
    LimitSet,
    LoadBalancingAlgorithm,
    RateLimit,
    RateLimitAlgorithm,
    RateWindow,
    RetryAlgorithm,
    ReturnWhen,
)
from concurry_ray.enums import parse
from concurry_ray.modes import canonical_mode
from concurry_ray.options import build_options

MODES = [
    (ExecutionMode.Sync, "sync", ["sync", "Sync", "SYNC", "synchronous"]),
    (ExecutionMode.Asyncio, "asyncio", ["asyncio", "Asyncio", "async", "asynchronous"]),
    (ExecutionMode.Threads, "thread", ["thread", "threads", "Threads", "THREAD"]),
    (ExecutionMode.Processes, "process", ["process", "processes", "Processes", "proc", "procs"]),
    (ExecutionMode.Ray, "ray", ["ray", "Ray", "RAY"]),
]
BALANCING = [
    (LoadBalancingAlgorithm.RoundRobin, ["RoundRobin", "round_robin", "round-robin", "rr", "RR"]),
    (LoadBalancingAlgorithm.LeastActiveLoad, ["LeastActiveLoad", "least_active_load", "least_active", "active"]),
    (LoadBalancingAlgorithm.LeastTotalLoad, ["LeastTotalLoad", "least_total_load", "least_total", "total"]),
    (LoadBalancingAlgorithm.Random, ["Random", "random", "rand", "RAND"]),
]
RATE_ALGORITHMS = [
    (RateLimitAlgorithm.TokenBucket, ["TokenBucket", "token_bucket", "token-bucket", "token bucket", "token"]),
    (RateLimitAlgorithm.LeakyBucket, ["LeakyBucket", "leaky_bucket", "leaky"]),
    (RateLimitAlgorithm.SlidingWindow, ["SlidingWindow", "sliding_window", "sliding", "SLIDING"]),
    (RateLimitAlgorithm.FixedWindow, ["FixedWindow", "fixed_window", "fixed"]),
    (RateLimitAlgorithm.GCRA, ["GCRA", "gcra", "Generic cell rate algorithm", "generic_cell_rate"]),
]
WINDOWS = [
    (1.0, RateWindow.Secondly, ["second", "seconds", "sec", "secs", "per_second", "per_sec", "Secondly", 1]),
    (60.0, RateWindow.Minutely, ["minute", "minutes", "min", "mins", "per_minute", "per_mins", "Minutely", 60]),
    (3600.0, RateWindow.Hourly, ["hour", "hours", "hr", "hrs", "per_hour", "Hourly", 3600]),
    (86400.0, RateWindow.Daily, ["day", "days", "per_day", "Daily", 86400]),
    (604800.0, RateWindow.Weekly, ["week", "weeks", "wk", "per_week", "Weekly", 604800]),
]
RETRY_ALGORITHMS = [
    (RetryAlgorithm.Exponential, ["Exponential", "exponential", "EXPONENTIAL"]),
    (RetryAlgorithm.Linear, ["Linear", "linear"]),
    (RetryAlgorithm.Fibonacci, ["Fibonacci", "fibonacci"]),
    (RetryAlgorithm.Fixed, ["Fixed", "fixed", "constant"]),
]
RETURN_WHEN = [
    (ReturnWhen.ALL_COMPLETED, ["ALL_COMPLETED", "all_completed", "all"]),
    (ReturnWhen.FIRST_COMPLETED, ["FIRST_COMPLETED", "first"]),
    (ReturnWhen.FIRST_EXCEPTION, ["FIRST_EXCEPTION", "exception"]),
]


def cases(table):
    return [pytest.param(member, spelling, id=f"{member.name}-{spelling}") for member, spellings in table
            for spelling in [*spellings, member]]


@pytest.mark.parametrize("member, spelling", cases([(m, s) for m, _, s in MODES]))
def test_mode_spellings_name_one_mode(member, spelling):
    name = next(name for m, name, _ in MODES if m is member)
    assert canonical_mode(spelling) == name
    assert build_options(mode=spelling).mode == name


@pytest.mark.parametrize("member, name, spellings", MODES, ids=[name for _, name, _ in MODES])
def test_a_worker_runs_in_the_mode_every_spelling_names(member, name, spellings, request):
    extra = {}
    if name == "ray":
        request.getfixturevalue("ray_runtime")
        extra["actor_options"] = RAY_ACTOR
    for spelling in [spellings[1], member]:
        with Counter.options(mode=spelling, **extra).init(start=1) as worker:
            assert worker.incr().result(timeout=30) == 2
            assert worker.get_pool_stats()["mode"] == name


@pytest.mark.parametrize("member, spelling", cases(BALANCING))
def test_balancing_spellings(member, spelling):
    assert build_options(mode="thread", max_workers=2, load_balancing=spelling).balancing is member


@pytest.mark.parametrize("mode", ["thread", "process", "ray"])
def test_balancing_enum_members_drive_a_pool(mode, mode_opts):
    options = mode_opts(mode, max_workers=2, load_balancing=LoadBalancingAlgorithm.LeastActiveLoad)
    with Counter.options(**options).init() as pool:
        assert [f.result(timeout=30) for f in [pool.add(i, 1) for i in range(4)]] == [1, 2, 3, 4]
        assert pool.get_pool_stats()["load_balancer"]["algorithm"] == "LeastActiveLoad"
    with Counter.options(**mode_opts(mode, max_workers=2, load_balancing="RR")).init() as pool:
        assert pool.get_pool_stats()["load_balancer"]["algorithm"] == "RoundRobin"


@pytest.mark.parametrize("member, spelling", cases(RATE_ALGORITHMS))
def test_rate_algorithm_spellings(member, spelling):
    assert RateLimit(key="tokens", window=1, capacity=10, algorithm=spelling).algorithm is member
    assert CallLimit(window=1, capacity=10, algorithm=spelling).algorithm is member


@pytest.mark.parametrize("seconds, member, spellings", WINDOWS, ids=[m.name for _, m, _ in WINDOWS])
def test_window_spellings(seconds, member, spellings):
    assert member.to_seconds() == seconds
    for spelling in [*spellings, member]:
        limit = RateLimit(key="tokens", window=spelling, capacity=5)
        assert limit.window == limit.window_seconds == seconds, spelling
        assert RateLimit(key="tokens", window_seconds=spelling, capacity=5).window == seconds


@pytest.mark.parametrize("member, spelling", cases(RETRY_ALGORITHMS))
def test_retry_algorithm_spellings(member, spelling):
    assert build_options(retry_algorithm=spelling).retry_algorithm is member
    assert build_options(retry_algorithm={"*": spelling}).retry_algorithm == {"*": member}


@pytest.mark.parametrize("member, spelling", cases(RETURN_WHEN))
def test_return_when_spellings(member, spelling):
    assert parse(ReturnWhen, spelling, "return_when") is member


def test_an_enum_built_limit_set_enforces_its_algorithm():
    limits = LimitSet([RateLimit(key="calls", window=RateWindow.Minutely, capacity=2,
                                 algorithm=RateLimitAlgorithm.FixedWindow)], shared=True, mode=ExecutionMode.Threads)
    assert limits.mode == "thread"
    assert limits.try_acquire({"calls": 2})
    assert not limits.try_acquire({"calls": 1})
    assert limits.get_stats()["limits"]["calls"]["algorithm"] is RateLimitAlgorithm.FixedWindow


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: build_options(mode="threds"), "mode='threds' is not a known ExecutionMode (did you mean 'Threads'?)"),
        (lambda: build_options(mode="auto"), "mode='auto' cannot run a worker; choose one of: sync, asyncio, thread"),
        (lambda: build_options(mode=3), "mode=3 is not a known ExecutionMode"),
        (lambda: build_options(load_balancing="round_robbin"), "did you mean 'RoundRobin'?"),
        (lambda: build_options(load_balancing=["rr"]), "load_balancing=['rr'] is not a known LoadBalancingAlgorithm"),
        (lambda: RateLimit(key="t", window=1, capacity=1, algorithm="slidingg"), "did you mean 'SlidingWindow'?"),
        (lambda: RateLimit(key="t", window="fortnight", capacity=1), "window_seconds='fortnight' is not a known RateWindow"),
        (lambda: build_options(retry_algorithm="quadratic"), "retry_algorithm='quadratic' is not a known RetryAlgorithm"),
        (lambda: parse(ReturnWhen, "never", "return_when"), "return_when='never' is not a known ReturnWhen"),
    ],
)
def test_unknown_spellings_are_config_errors_naming_value_and_choices(build, message):
    with pytest.raises(ConfigError) as info:
        build()
    assert message in str(info.value)
    assert "allowed:" in str(info.value) or "choose one of" in str(info.value)


def test_global_config_scopes_answer_to_every_mode_spelling():
    from concurry_ray import global_config

    assert global_config.Threads.num_retries == global_config.thread.num_retries



def test_concurrys_top_level_ray_resources_are_actor_options():
    options = build_options(mode="ray", num_cpus=0.5, num_gpus=0, resources={"disk": 1})
    assert options.actor_options == {"num_cpus": 0.5, "num_gpus": 0, "resources": {"disk": 1}}
    with pytest.raises(ConfigError, match="num_cpus given both as an option and in actor_options"):
        build_options(mode="ray", num_cpus=1, actor_options={"num_cpus": 2})


def test_a_ray_worker_runs_with_top_level_num_cpus(ray_runtime):
    with Counter.options(mode="ray", num_cpus=0.1).init(start=5) as worker:
        assert worker.incr().result(timeout=30) == 6
