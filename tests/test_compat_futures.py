"""concurry 0.13.2's Future names and keywords: BaseFuture and its four kinds, wrap_future,
and wait/gather/async_wait/async_gather with ``*futs``, ``return_when`` spellings,
``polling``, ``progress``, ``recurse`` and ``iter``.

Pending calls use the async method ``asleep``, which runs on the worker's own event
loop in every mode, so it stays pending while other calls complete. One Counter per
mode serves the whole module (a Ray actor takes about a second to start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time

import pytest
from conftest import ALL_MODES

from concurry_ray import (
    ALL_COMPLETED,
    AsyncioFuture,
    BaseFuture,
    ConcurrentFuture,
    ConfigError,
    Future,
    PollingAlgorithm,
    RayFuture,
    ReturnWhen,
    SyncFuture,
    async_gather,
    async_wait,
    gather,
    wait,
    wrap_future,
)

NAMES = [BaseFuture, SyncFuture, ConcurrentFuture, AsyncioFuture, RayFuture]


def done_future(value) -> cf.Future:
    future = cf.Future()
    future.set_result(value)
    return future


def failed_future(error: BaseException) -> cf.Future:
    future = cf.Future()
    future.set_exception(error)
    return future


def settle_later(future: cf.Future, value, delay: float = 0.1) -> None:
    threading.Timer(delay, future.set_result, [value]).start()


class Counts:
    """A progress callback that records what it was called with."""

    def __init__(self):
        self.calls: list = []
        self.elapsed: list = []

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        self.calls.append((done, total))
        self.elapsed.append(elapsed)


# ----- the five names -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_name_matches_futures_of_every_mode(mode, w):
    pending, finished, failing = w.asleep(0.2), w.echo(1), w.fail("x")
    wrapped = [wrap_future(done_future(2)), wrap_future(3), wrap_future(finished)]
    for future in [pending, finished, failing, *wrapped]:
        for name in NAMES:
            assert isinstance(future, name), (future, name.__name__)
    assert gather([pending, finished, wrapped[0], wrapped[1]], timeout=30) == [0.2, 1, 2, 3]


def test_names_are_abstract_bases_of_our_future():
    for name in NAMES:
        assert issubclass(Future, name) and issubclass(name, BaseFuture)
        assert not isinstance(cf.Future(), name)  # as in concurry: a raw future is not one until wrapped
        assert not isinstance(42, name)
    with pytest.raises(TypeError, match="BaseFuture is abstract: use wrap_future"):
        BaseFuture()


def test_constructors_build_our_future():
    done = SyncFuture(result_value=42)
    assert type(done) is Future and done.done() and done.result() == 42
    error = ValueError("bad")
    assert SyncFuture(exception_value=error).exception() is error
    assert SyncFuture().result() is None
    with pytest.raises(TypeError, match="exception_value must be an exception or None, got str"):
        SyncFuture(exception_value="not an exception")

    source = cf.Future()
    wrapped = ConcurrentFuture(source)
    assert type(wrapped) is Future and not wrapped.done()
    source.set_result("late")
    assert wrapped.result(timeout=5) == "late"
    ours = Future()
    assert ConcurrentFuture(ours) is ours

    with pytest.raises(TypeError, match="expected a concurrent.futures.Future, got int"):
        ConcurrentFuture(5)
    with pytest.raises(TypeError, match="expected an asyncio.Future, got Future"):
        AsyncioFuture(cf.Future())
    with pytest.raises(TypeError, match="expected a Ray ObjectRef, got str"):
        RayFuture("ref")


# ----- wrap_future ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wrap_future_returns_our_future_as_it_is(mode, w):
    future = w.asleep(0.05)
    assert wrap_future(future) is future
    assert future.result(timeout=30) == 0.05


def test_wrap_future_of_a_plain_value_is_done():
    for value in [7, None, [1, 2], {"k": 1}, "text"]:
        future = wrap_future(value)
        assert type(future) is Future and future.done() and future.result() == value
    generator = (i for i in range(2))
    assert wrap_future(generator).result() is generator  # a generator is a value, not a coroutine


def test_wrap_future_of_a_concurrent_future_follows_it():
    source = cf.Future()
    wrapped = wrap_future(source)
    assert type(wrapped) is Future and not wrapped.done()
    settle_later(source, "ok", 0.05)
    assert wrapped.result(timeout=5) == "ok"

    error = KeyError("lost")
    assert wrap_future(failed_future(error)).exception(timeout=5) is error

    with cf.ThreadPoolExecutor(1) as pool:
        assert wrap_future(pool.submit(sum, [1, 2])).result(timeout=5) == 3


def test_cancelling_the_wrapper_cancels_the_original_and_back():
    source = cf.Future()
    wrapped = wrap_future(source)
    assert wrapped.cancel()
    assert source.cancelled()

    source = cf.Future()
    wrapped = wrap_future(source)
    source.cancel()
    assert wrapped.cancelled()


def test_wrap_future_of_an_asyncio_future_from_another_thread():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        source = asyncio.run_coroutine_threadsafe(_make_future(), loop).result(timeout=5)
        wrapped = wrap_future(source)
        assert type(wrapped) is Future and not wrapped.done()
        loop.call_soon_threadsafe(source.set_result, "from the loop")
        assert wrapped.result(timeout=5) == "from the loop"

        failing = asyncio.run_coroutine_threadsafe(_make_future(), loop).result(timeout=5)
        wrapped_failing = wrap_future(failing)
        loop.call_soon_threadsafe(failing.set_exception, ValueError("async bad"))
        assert isinstance(wrapped_failing.exception(timeout=5), ValueError)

        cancelled = asyncio.run_coroutine_threadsafe(_make_future(), loop).result(timeout=5)
        wrapped_cancelled = wrap_future(cancelled)
        loop.call_soon_threadsafe(cancelled.cancel)
        with pytest.raises(cf.CancelledError):
            wrapped_cancelled.result(timeout=5)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


async def _make_future() -> asyncio.Future:
    return asyncio.get_running_loop().create_future()


def test_wrap_future_never_blocks_the_asyncio_futures_own_loop():
    async def main():
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        ready.set_result("ready")
        copied = wrap_future(ready)
        assert copied.done() and copied.result(timeout=0) == "ready"  # copied at once, on the loop's thread

        later = loop.create_future()
        wrapped = wrap_future(later)
        loop.call_later(0.05, later.set_result, "later")
        assert await wrapped == "later"

        to_cancel = loop.create_future()
        assert wrap_future(to_cancel).cancel()
        await asyncio.sleep(0)
        assert to_cancel.cancelled()

        async def square(x):
            await asyncio.sleep(0.01)
            return x * x

        scheduled = wrap_future(square(6))
        assert isinstance(scheduled, BaseFuture) and await scheduled == 36
        return True

    assert asyncio.run(asyncio.wait_for(main(), 10))


def test_wrap_future_of_a_coroutine_needs_a_running_loop():
    async def nothing():
        return None

    with pytest.raises(RuntimeError, match="needs a running event loop"):
        wrap_future(nothing())


def test_wrap_future_of_a_ray_object_ref(ray_runtime):
    ray = ray_runtime
    ref = ray.put({"k": 1})
    wrapped = wrap_future(ref)
    assert type(wrapped) is Future and isinstance(wrapped, RayFuture)
    assert wrapped.result(timeout=30) == {"k": 1}
    assert RayFuture(ref).result(timeout=30) == {"k": 1}
    assert gather(ref, wrapped, timeout=30) == [{"k": 1}, {"k": 1}]


# ----- wait -------------------------------------------------------------------------------


FIRST_COMPLETED_SPELLINGS = ["FIRST_COMPLETED", "first_completed", "first", "FirstCompleted", ReturnWhen.FIRST_COMPLETED]


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("spelling", FIRST_COMPLETED_SPELLINGS, ids=str)
def test_wait_return_when_first_completed_in_any_spelling(mode, w, spelling):
    slow, fast = w.asleep(0.5), w.echo("fast")
    start = time.monotonic()
    done, not_done = wait([slow, fast], return_when=spelling, timeout=30)
    assert fast in done and time.monotonic() - start < 0.45
    assert slow.result(timeout=30) == 0.5


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize("spelling", ["FIRST_EXCEPTION", "first-exception", "exception", ReturnWhen.FIRST_EXCEPTION], ids=str)
def test_wait_return_when_first_exception_in_any_spelling(mode, w, spelling):
    slow, failing = w.asleep(0.5), w.fail("boom")
    done, not_done = wait(slow, failing, return_when=spelling, timeout=30)
    assert failing in done and slow in not_done
    assert slow.result(timeout=30) == 0.5


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wait_takes_futures_one_by_one_and_all_completed_spellings(mode, w):
    first, second = w.asleep(0.05), w.echo(2)
    for spelling in ["ALL_COMPLETED", "all", "All Completed", ReturnWhen.ALL_COMPLETED, ALL_COMPLETED]:
        assert wait(first, second, return_when=spelling, timeout=30) == ({first, second}, set())
    assert wait(first, timeout=30) == ({first}, set())  # one future alone
    assert wait({"a": first, "b": second}, timeout=30) == ({first, second}, set())  # a dict: its values


def test_wait_timeout_still_returns_without_raising():
    never = cf.Future()
    ready = done_future(1)
    start = time.monotonic()
    assert wait(never, ready, timeout=0.1) == ({ready}, {never})
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("waiter", [wait, async_wait], ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", ["bogus", "first_complete_ish", 3, None])
def test_bad_return_when_is_a_config_error_naming_the_value(waiter, bad):
    with pytest.raises(ConfigError, match=rf"return_when={bad!r} is not a known ReturnWhen") as raised:
        result = waiter([done_future(1)], return_when=bad)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    assert isinstance(raised.value, ValueError)


def test_bad_return_when_suggests_a_spelling():
    with pytest.raises(ConfigError, match=r"did you mean 'FIRST_COMPLETED'"):
        wait([done_future(1)], return_when="FIRST_COMPLETD")


@pytest.mark.parametrize("function", [wait, gather], ids=lambda f: f.__name__)
def test_polling_is_validated_and_ignored(function):
    for polling in ["adaptive", "Fixed", "exponential", "PROGRESSIVE", PollingAlgorithm.Adaptive, None]:
        function([done_future(1)], polling=polling, timeout=5)
    with pytest.raises(ConfigError, match=r"polling='sometimes' is not a known PollingAlgorithm"):
        function([done_future(1)], polling="sometimes")


def test_a_structure_and_more_futures_is_a_config_error():
    for call in (lambda: wait([done_future(1)], done_future(2)), lambda: gather({"a": 1}, done_future(2))):
        with pytest.raises(ConfigError, match="not both.*timeout= are keywords"):
            call()
    with pytest.raises(ValueError):  # concurry raised ValueError; ConfigError is one
        gather([done_future(1)], 5)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wait_recurse_waits_for_nested_futures(mode, w):
    slow, fast, deep = w.asleep(0.2), w.echo(1), w.echo(2)
    nested = [[slow, fast], {"k": (deep, "plain")}, 5]
    done, not_done = wait(nested, recurse=True, timeout=30)
    assert done == {slow, fast, deep} and not_done == set()
    never = cf.Future()
    done, not_done = wait([[never], fast], recurse=True, timeout=0.05)
    assert done == {fast} and not_done == {never}
    done, not_done = wait([[slow], 5], timeout=30)  # without recurse each item is taken as wrap_future takes it
    assert all(type(f) is Future for f in done) and not not_done
    assert sorted((f.result() for f in done), key=repr) == [5, [slow]]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wait_progress_bar_dict_and_callback(mode, w):
    futures = [w.echo(i) for i in range(4)] + [w.asleep(0.05)]
    counts = Counts()
    assert wait(futures, progress=counts, timeout=30)[1] == set()
    assert sorted(counts.calls) == [(n, 5) for n in range(1, 6)]
    assert all(0 <= seconds < 30 for seconds in counts.elapsed)
    assert wait(futures, progress=True, timeout=30)[1] == set()
    assert wait(futures, progress={"desc": "Checking", "disable": True}, timeout=30)[1] == set()


# ----- gather -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_takes_futures_one_by_one(mode, w):
    slow, fast = w.asleep(0.1), w.echo("fast")
    assert gather(slow, fast, 3, timeout=30) == [0.1, "fast", 3]
    assert gather(fast, timeout=30) == ["fast"]  # one future alone is a list of one
    assert gather((slow, fast), timeout=30) == [0.1, "fast"]
    assert gather({"s": slow, "f": fast}, timeout=30) == {"s": 0.1, "f": "fast"}


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_recurse_rebuilds_nested_structures(mode, w):
    nested = [[w.asleep(0.1), w.echo(1)], {"k": (w.echo(2), "plain")}, 5]
    assert gather(nested, recurse=True, timeout=30) == [[0.1, 1], {"k": (2, "plain")}, 5]
    keyed = gather({"a": [w.echo("x"), {"b": w.echo("y")}], "c": 3}, recurse=True, timeout=30)
    assert keyed == {"a": ["x", {"b": "y"}], "c": 3}
    inner = w.echo(7)
    assert gather([[inner]], timeout=30) == [[inner]]  # without recurse, nested futures are left alone
    assert gather(inner, [w.echo(8)], recurse=True, timeout=30) == [7, [8]]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_recurse_errors_and_timeout(mode, w):
    nested = [[w.echo(1), w.fail("deep")], w.echo(2)]
    with pytest.raises(KeyError, match="deep"):
        gather(nested, recurse=True, timeout=30)
    mixed = gather(nested, recurse=True, return_exceptions=True, timeout=30)
    assert mixed[0][0] == 1 and type(mixed[0][1]) is KeyError and mixed[1] == 2
    with pytest.raises(cf.TimeoutError, match="1 of 2 futures still pending"):
        gather([{"slow": w.asleep(0.5)}, w.echo(0)], recurse=True, timeout=0.1)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_iter_yields_index_and_result_as_they_complete(mode, w):
    slow, fast = w.asleep(0.3), w.echo("fast")
    pairs = list(gather([slow, fast, "plain"], iter=True, timeout=30))
    assert pairs[-1] == (0, 0.3) and sorted(pairs[:2]) == [(1, "fast"), (2, "plain")]
    keyed = list(gather({"slow": w.asleep(0.3), "fast": w.echo(1)}, iter=True, timeout=30))
    assert keyed == [("fast", 1), ("slow", 0.3)]
    assert list(gather(w.asleep(0.2), w.echo(2), iter=True, timeout=30)) == [(1, 2), (0, 0.2)]
    assert list(gather([], iter=True)) == [] and list(gather({}, iter=True)) == []


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_iter_errors_timeout_recurse_and_progress(mode, w):
    pairs = dict(gather([w.fail("bad"), w.echo(1)], iter=True, return_exceptions=True, timeout=30))
    assert type(pairs[0]) is KeyError and pairs[1] == 1
    iterator = gather([w.asleep(0.3), w.fail("raised")], iter=True, timeout=30)
    with pytest.raises(KeyError, match="raised"):
        next(iterator)
    iterator = gather([w.echo(0), w.asleep(0.5)], iter=True, timeout=0.1)
    assert next(iterator) == (0, 0)
    with pytest.raises(cf.TimeoutError, match="1 of 2 items still pending"):
        next(iterator)
    nested = list(gather([[w.asleep(0.2), w.echo(1)], {"k": w.echo(2)}], iter=True, recurse=True, timeout=30))
    assert nested == [(1, {"k": 2}), (0, [0.2, 1])]
    counts = Counts()
    assert len(list(gather([w.echo(i) for i in range(3)], iter=True, progress=counts, timeout=30))) == 3
    assert counts.calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_progress_bar_dict_and_callback(mode, w):
    futures = [w.echo(i) for i in range(3)] + [w.asleep(0.05), "plain"]
    counts = Counts()
    assert gather(futures, progress=counts, timeout=30) == [0, 1, 2, 0.05, "plain"]
    assert sorted(counts.calls) == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the futures, not the plain value
    assert gather(futures, progress=True, timeout=30)[3] == 0.05
    assert gather(futures, progress={"desc": "Collecting", "disable": True}, timeout=30)[0] == 0


# ----- async_wait / async_gather ----------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_async_wait_keywords(mode, w):
    async def main():
        slow, fast = w.asleep(0.5), w.echo(1)
        first = await async_wait(slow, fast, return_when="first", timeout=30)
        counts = Counts()
        every = await async_wait({"a": slow, "b": fast}, return_when=ReturnWhen.ALL_COMPLETED, progress=counts)
        failing = w.fail("x")
        failed = await async_wait([w.asleep(0.5), failing], return_when="FirstException", timeout=30)
        return (slow, fast, failing), first, every, counts, failed

    (slow, fast, failing), first, every, counts, failed = asyncio.run(asyncio.wait_for(main(), 60))
    assert first == ({fast}, {slow})
    assert every == ({slow, fast}, set()) and sorted(counts.calls) == [(1, 2), (2, 2)]
    assert failing in failed[0] and len(failed[1]) == 1


def test_async_wait_takes_coroutines_and_plain_values():
    async def main():
        async def compute(x):
            await asyncio.sleep(0.01)
            return x

        done, not_done = await async_wait([compute(1), 2])
        return {f.result() for f in done}, not_done

    assert asyncio.run(main()) == ({1, 2}, set())


@pytest.mark.parametrize("mode", ALL_MODES)
def test_async_gather_keywords(mode, w):
    async def main():
        async def compute(x):
            await asyncio.sleep(0.01)
            return x * 10

        counts = Counts()
        spread = await async_gather(w.asleep(0.05), w.echo(1), compute(2), 3, progress=counts, timeout=30)
        keyed = await async_gather({"a": compute(1), "b": w.echo("b")}, timeout=30)
        single = await async_gather(w.echo("one"))
        slow = w.asleep(0.5)
        start = time.monotonic()
        try:
            await async_gather([slow, w.echo(0)], timeout=0.1)
        except cf.TimeoutError as exc:
            timed_out = (str(exc), time.monotonic() - start)
        return spread, counts, keyed, single, timed_out, slow

    spread, counts, keyed, single, timed_out, slow = asyncio.run(asyncio.wait_for(main(), 60))
    assert spread == [0.05, 1, 20, 3] and sorted(counts.calls) == [(n, 4) for n in range(1, 5)]
    assert keyed == {"a": 10, "b": "b"} and single == ["one"]
    assert "1 of 2 still pending after 0.1s" in timed_out[0] and timed_out[1] < 0.45
    assert slow.result(timeout=30) == 0.5  # a timeout leaves the calls running


def test_async_gather_timeout_is_not_mistaken_for_a_calls_own_timeout_error():
    async def main():
        async def times_out():
            raise TimeoutError("the call's own")

        with pytest.raises(TimeoutError, match="the call's own"):
            await async_gather([times_out()], timeout=5)
        return True

    assert asyncio.run(main())
