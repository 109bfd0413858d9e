"""concurry 0.13.2 compatibility of workers and handles: the ``@worker`` decorator and class
keywords, ``Executor()``, ``get_worker_stats()``, and the names a handle keeps for itself."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time

import pytest
from conftest import ALL_MODES, POOL_MODES, RAY_ACTOR

from concurry_ray import ConfigError, Executor, PoolStoppedError, Worker, WorkerBuilder, gather, worker
from concurry_ray.host import Host
from concurry_ray.options import build_options
from concurry_ray.protocol import Call, WorkerSpec


def add(x: int, y: int) -> int:
    return x + y


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two is not allowed")
    return x


class Compute(Worker):
    """The guide's compute worker."""

    def compute(self, x: int) -> int:
        return x**2


class Coordinator(Worker):
    """The guide's coordinator: owns an inner pool, and its own close() stops it."""

    def __init__(self) -> None:
        self.compute_pool = Compute.options(mode="thread", max_workers=2).init()

    def process_batch(self, values: list) -> list:
        return gather([self.compute_pool.compute(x) for x in values], timeout=30)

    def close(self) -> str:
        self.compute_pool.stop()
        return "inner pool stopped"


class Secretive(Worker):
    """Has private methods that no handle may reach."""

    def __init__(self) -> None:
        self.touched = False

    def _secret(self) -> str:
        self.touched = True
        return "secret"

    async def _async_secret(self) -> str:
        self.touched = True
        return "secret"

    def was_touched(self) -> bool:
        return self.touched


# ----- @worker and class keywords -------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_decorator_options_become_class_defaults(mode, mode_opts):
    @worker(**mode_opts(mode))
    class Greeter:
        def __init__(self, name: str) -> None:
            self.name = name

        def greet(self, greeting: str = "hello") -> str:
            return f"{greeting} {self.name} from {os.getpid()}"

        async def agreet(self) -> str:
            await asyncio.sleep(0.01)
            return f"hi {self.name}"

    assert issubclass(Greeter, Worker) and Greeter.__name__ == "Greeter"
    handle = Greeter("ada")  # calling the class starts a worker with the decorator's options
    try:
        assert f"mode={mode!r}" in repr(handle)
        assert handle.greet().result(timeout=60).startswith("hello ada from ")
        assert handle.agreet().result(timeout=60) == "hi ada"
    finally:
        handle.stop()
    builder = Greeter.options(blocking=True)  # .options() still works, starting from the decorator's options
    assert isinstance(builder, WorkerBuilder) and builder.options.mode == mode and builder.options.blocking
    with builder.init("bob") as blocking:
        assert blocking.greet("hey").startswith("hey bob")


def test_bare_decorator_makes_a_plain_worker_class():
    @worker
    class Plain:
        def value(self) -> int:
            return 7

    assert issubclass(Plain, Worker)
    assert Plain().value() == 7  # no options given: calling the class builds a plain instance
    with Plain.options(mode="sync").init() as handle:
        assert handle.value().result() == 7


def test_class_keywords_share_the_decorator_path():
    class Pooled(Worker, mode="thread", max_workers=2):
        def pid(self) -> int:
            return os.getpid()

    class Child(Pooled):
        pass

    class Manual(Pooled, auto_init=False):
        pass

    with Pooled() as pool:
        assert "pool of 2" in repr(pool) and pool.get_pool_stats()["total_workers"] == 2
    with Child() as pool:  # the keywords are inherited
        assert "pool of 2" in repr(pool)
    assert type(Manual()) is Manual
    assert Manual.options().options.max_workers == 2
    assert Pooled.options(max_workers=3).options.max_workers == 3

    @worker(mode="sync", max_workers=1)
    class Overridden(Worker, mode="thread", max_workers=2):
        pass

    with Overridden() as handle:  # the decorator comes last, so it wins
        assert "mode='sync'" in repr(handle)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "thred"}, "mode='thred'"),
        ({"max_workers": -1}, "max_workers=-1 must be >= 0"),
        ({"mode": "sync", "max_workers": 4}, "max_workers=4 is not allowed in mode 'sync'"),
        ({"mdoe": "thread"}, "unknown option 'mdoe' (did you mean 'mode'?)"),
    ],
)
def test_bad_options_fail_at_decoration(options, message):
    with pytest.raises(ConfigError) as info:

        @worker(**options)
        class Bad:
            pass

    assert message in str(info.value)
    with pytest.raises(ConfigError) as info:

        class AlsoBad(Worker, **options):
            pass

    assert message in str(info.value)


# ----- Executor ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_executor_is_a_concurrent_futures_executor(mode, mode_opts):
    with Executor(**mode_opts(mode)) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        assert executor.submit(add, 2, y=3).result(timeout=60) == 5
        assert list(executor.map(add, [1, 2, 3], [10, 20, 30], timeout=60, chunksize=2)) == [11, 22, 33]
        with pytest.raises(ValueError, match="two is not allowed"):
            list(executor.map(fail_on_two, range(4)))

        async def main() -> list:
            loop = asyncio.get_running_loop()
            return await asyncio.gather(*[loop.run_in_executor(executor, add, i, i) for i in range(4)])

        assert asyncio.run(main()) == [0, 2, 4, 6]
    with pytest.raises(RuntimeError):  # PoolStoppedError is a RuntimeError, as the executor's own
        executor.submit(add, 1, 1)


def test_executor_takes_the_pool_options():
    with Executor("thread", max_workers=3, load_balancing="least_active") as executor:
        stats = executor.get_pool_stats()
        assert stats["total_workers"] == 3 and stats["load_balancer"]["algorithm"] == "LeastActiveLoad"
    with Executor(mode="thread", on_demand=True, max_workers=2) as executor:
        assert sorted(executor.map(nap, [0.05] * 6)) == [0.05] * 6
        assert executor.get_pool_stats()["on_demand"] is True


def test_executor_map_timeout_counts_from_the_call():
    with Executor(mode="thread", max_workers=2) as executor:
        results = executor.map(nap, [0.01, 2.0], timeout=0.5)
        assert next(results) == 0.01
        with pytest.raises(TimeoutError):
            next(results)
        with pytest.raises(ValueError, match="chunksize=0 must be an int >= 1"):
            executor.map(nap, [1], chunksize=0)


@pytest.mark.parametrize("mode", ["thread", "asyncio"])
def test_shutdown_cancel_futures_cancels_what_has_not_started(mode):
    executor = Executor(mode=mode, max_workers=1)
    running = executor.submit(nap, 0.5)
    time.sleep(0.2)
    queued = [executor.submit(nap, 0.01) for _ in range(5)]
    executor.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) == 0.5
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="stopped"):
        executor.submit(nap, 0)


def test_shutdown_without_wait_returns_at_once_and_finishes_the_calls():
    executor = Executor(mode="thread", max_workers=2)
    futures = [executor.submit(nap, 0.3) for _ in range(4)]
    start = time.monotonic()
    executor.shutdown(wait=False)
    assert time.monotonic() - start < 0.2
    with pytest.raises(RuntimeError, match="stopped"):
        executor.submit(nap, 0)
    assert [f.result(timeout=10) for f in futures] == [0.3] * 4
    executor.shutdown()  # a second shutdown is harmless


@pytest.mark.parametrize("mode", POOL_MODES)
def test_stop_drains_calls_parked_in_the_pool_queue(mode, mode_opts):
    pool = Executor(**mode_opts(mode, max_workers=1, max_queued_tasks=1))
    futures = [pool.submit(nap, 0.05) for _ in range(5)]
    pool.shutdown()  # wait=True: every call already made runs, none is cancelled
    assert [f.result(timeout=0) for f in futures] == [0.05] * 5


# ----- get_worker_stats ----------------------------------------------------------------


@pytest.mark.parametrize("mode", POOL_MODES)
def test_get_worker_stats_reports_one_worker(mode, mode_opts):
    with Compute.options(**mode_opts(mode, max_workers=3)).init() as pool:
        gather(pool.broadcast("compute", 2), timeout=60)
        gather(pool.broadcast("compute", 3), timeout=60)

        def figures() -> list:
            return [pool.get_worker_stats(i) for i in range(3)]

        deadline = time.monotonic() + 30  # Ray handles report their counts in the background
        while sum(w["completed"] for w in figures()) < 6:
            assert time.monotonic() < deadline, "the completed calls were not counted in time"
            time.sleep(0.1)
        for index, stats in enumerate(figures()):
            assert stats["worker_id"] == index and stats["stopped"] is False
            assert stats["alive"] is True and stats["completed"] == 2 and stats["failed"] == 0
            assert stats["in_flight"] == 0 and stats["restarts"] == 0
        for bad in (3, -1):
            with pytest.raises(IndexError, match=rf"worker_index={bad} is out of range: pool size 3 \(indexes 0 to 2\)"):
                pool.get_worker_stats(bad)


def test_get_worker_stats_of_a_single_worker_and_an_on_demand_pool():
    with Compute.options(mode="sync").init() as single:
        single.compute(2).result()
        assert single.get_worker_stats(0)["completed"] == 1
    with Compute.options(mode="thread", on_demand=True).init() as on_demand:
        with pytest.raises(IndexError, match=r"worker_index=0 is out of range: pool size 0 \(no live workers\)"):
            on_demand.get_worker_stats(0)


# ----- the names a handle keeps for itself ----------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_worker_close_wins_and_stop_stops(mode, mode_opts):
    coordinator = Coordinator.options(**mode_opts(mode)).init()
    assert coordinator.process_batch([1, 2, 3, 4, 5]).result(timeout=60) == [1, 4, 9, 16, 25]
    closing = coordinator.close()  # the worker's close(): a call like any other
    assert closing.result(timeout=60) == "inner pool stopped"
    with pytest.raises(PoolStoppedError, match="Compute"):  # the inner pool is stopped; the coordinator is not
        coordinator.process_batch([1]).result(timeout=60)
    assert "running" in repr(coordinator)
    coordinator.stop()
    assert "stopped" in repr(coordinator)
    with pytest.raises(PoolStoppedError):
        coordinator.close()


def test_close_stops_a_handle_whose_worker_has_none():
    pool = Compute.options(mode="thread", max_workers=2).init()
    assert pool.close() is None
    assert pool.get_pool_stats()["stopped"] is True


@pytest.mark.parametrize("name", ["stop", "get_pool_stats", "get_worker_stats", "resize", "broadcast", "options"])
def test_a_method_with_a_handle_name_is_refused(name):
    cls = type(f"Uses_{name}", (Worker,), {name: lambda self: "mine", "other": lambda self: 1})
    assert getattr(cls(), name)() == "mine"  # on instances (inside the worker) the method is untouched
    with pytest.raises(ConfigError, match=rf"Uses_{name} defines {name}\(\), which the handle keeps for itself"):
        cls.options(mode="thread")
    with pytest.raises(ConfigError, match=rf"defines {name}\(\)"):
        worker(mode="thread")(cls)()  # the decorator's auto-init goes through .options() too


def test_every_clash_is_named_at_once():
    class Busy(Worker):
        def stop(self) -> None: ...

        def resize(self) -> None: ...

        def close(self) -> None: ...

    with pytest.raises(ConfigError, match=r"Busy defines resize\(\), stop\(\), which") as info:
        Busy.options(mode="sync")
    assert "close" not in str(info.value).split("which")[0]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_private_methods_are_unreachable(mode, mode_opts):
    with Secretive.options(**mode_opts(mode)).init() as handle:
        for name in ("_secret", "_async_secret", "_missing"):
            with pytest.raises(AttributeError, match="no public method"):
                getattr(handle, name)
        with pytest.raises(AttributeError, match="no public method '_secret'"):
            handle.broadcast("_secret")
        assert handle.was_touched().result(timeout=60) is False


@pytest.mark.parametrize("name", ["_secret", "_async_secret", "__init__", "was_touched_typo"])
def test_the_host_refuses_names_that_are_not_public_methods(name):
    spec = WorkerSpec(Secretive, (), {}, build_options(mode="sync"), "Secretive#0 (test)")
    host = Host(spec)
    with pytest.raises(AttributeError, match=rf"Secretive has no public method '{name}'"):
        host.run(Call(name, (), {}))
    with pytest.raises(AttributeError, match=rf"Secretive has no public method '{name}'"):
        asyncio.run(host.run_async(Call(name, (), {})))
    assert host.run(Call("was_touched", (), {})) is False


def test_ray_actor_refuses_a_private_method_sent_in_a_batch(ray_runtime):
    from concurry_ray.ray.actor import Failed, start_actor

    spec = WorkerSpec(Secretive, (), {}, build_options(mode="ray", actor_options=RAY_ACTOR), "Secretive#0 (test)")
    actor = start_actor(spec, RAY_ACTOR)
    try:
        assert ray_runtime.get(actor.__concurry_ready__.remote(), timeout=60) is None
        calls = [tuple(Call(name, (), {})) for name in ("_secret", "__init__", "was_touched")]
        refs = actor.__concurry_batch__.options(num_returns=len(calls) + 1).remote(calls)
        receipts = ray_runtime.get(refs[0], timeout=60)
        for refused in receipts[:2]:
            assert type(refused) is Failed and isinstance(refused.error, AttributeError)
            assert "no public method" in str(refused.error)
        assert receipts[2] is False
    finally:
        ray_runtime.kill(actor)
