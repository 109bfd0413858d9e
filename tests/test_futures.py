"""The public Future API: Future methods, wait, gather, as_completed, async_gather, async_wait.

Calls that must stay pending for a while use the async method ``asleep``: in sync
mode a sync method runs inline at submit time, while async methods run on the
worker's own event loop in every mode, so ``asleep`` is pending in all of them.

Most tests share one stateless-use Counter per mode (fixture ``w``, stopped at the
end of the module) because a Ray actor takes about a second to start; tests that
need a fresh worker or a pool build their own and stop it in ``with``/``finally``.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures as cf
import gc
import sys
import threading
import time
import types
import weakref
from concurrent.futures import CancelledError, ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from conftest import ALL_MODES, POOL_MODES, REPO
from workers import Counter

from concurry_ray import futures as futures_module

from concurry_ray import (
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


@contextmanager
def counter(mode_opts, mode, **extra):
    """A started Counter (warmed up, so start-up time is not measured), stopped on exit."""
    w = Counter.options(**mode_opts(mode, **extra)).init()
    try:
        w.echo(0).result(timeout=60)
        yield w
    finally:
        w.stop()


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def cancelled_plain_future() -> cf.Future:
    future = cf.Future()
    assert future.cancel()
    return future


# ----- Future methods ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_completed_future_state(mode, w):
    future = w.echo({"k": 7})
    assert isinstance(future, Future) and isinstance(future, cf.Future)
    assert future.result(timeout=30) == {"k": 7}
    assert future.done()
    assert not future.running()
    assert not future.cancelled()
    assert future.exception(timeout=0) is None
    assert future.cancel() is False, "a finished call cannot be cancelled"
    assert not future.cancelled()
    assert repr(future).startswith("<concurry_ray.Future")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_exception_returns_the_error(mode, w):
    future = w.fail("no such key")
    error = future.exception(timeout=30)
    assert type(error) is KeyError
    assert error.args == ("no such key",)
    assert future.done() and not future.cancelled() and not future.running()
    with pytest.raises(KeyError, match="no such key"):
        future.result(timeout=0)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_running_call_is_running_then_done(mode, w):
    future = w.asleep(0.4)
    assert wait_until(lambda: future.running() or future.done())
    assert future.running() and not future.done() and not future.cancelled()
    with pytest.raises(cf.TimeoutError):
        future.exception(timeout=0.05)
    assert future.result(timeout=30) == 0.4
    assert future.done() and not future.running()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_result_timeout_raises_quickly_and_call_still_completes(mode, w):
    future = w.asleep(0.8)
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.1)
    elapsed = time.monotonic() - start
    assert 0.09 <= elapsed < 0.6
    assert not future.done()
    assert future.result(timeout=30) == 0.8
    assert future.exception(timeout=0) is None


@pytest.mark.parametrize("mode", ALL_MODES)
def test_add_done_callback_called_once_with_the_future(mode, w):
    before = []
    future = w.asleep(0.3)
    assert not future.done()
    future.add_done_callback(before.append)
    assert before == []
    assert future.result(timeout=30) == 0.3
    # set_result wakes result() before it runs callbacks: give the callback a moment.
    assert wait_until(lambda: before, timeout=5)
    time.sleep(0.05)
    assert len(before) == 1 and before[0] is future

    after = []
    future.add_done_callback(after.append)  # already done: called at once, in this thread
    assert len(after) == 1 and after[0] is future
    assert len(before) == 1

    failed = w.fail("cb")
    errors = []
    failed.add_done_callback(lambda f: errors.append(f.exception()))
    assert wait_until(lambda: errors, timeout=30)
    assert type(errors[0]) is KeyError and errors[0].args == ("cb",)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_await_future_inside_asyncio_run(mode, w):

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        slept = await w.asleep(0.3)  # the loop keeps running while we wait
        echoed = await w.echo("x")
        task.cancel()
        try:
            await w.fail("awaited")
        except KeyError as exc:
            error = exc
        return slept, echoed, ticks, error

    slept, echoed, ticks, error = asyncio.run(asyncio.wait_for(main(), 60))
    assert (slept, echoed) == (0.3, "x")
    assert ticks >= 5, f"the event loop was blocked while awaiting a worker future ({ticks} ticks)"
    assert type(error) is KeyError and error.args == ("awaited",)


def test_await_plain_future_set_from_another_thread():
    future = Future()
    threading.Timer(0.05, future.set_result, [42]).start()

    async def main():
        return await future

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 42


def test_cancel_queued_call_on_thread_worker(mode_opts):
    with counter(mode_opts, "thread") as w:
        running = w.sleep(0.5)
        queued = w.incr()
        seen = []
        queued.add_done_callback(seen.append)
        assert wait_until(running.running)
        assert not queued.running() and not queued.done()

        assert queued.cancel() is True
        assert queued.cancelled() and queued.done() and not queued.running()
        assert seen == [queued]
        with pytest.raises(CancelledError):
            queued.result(timeout=0)
        with pytest.raises(CancelledError):
            queued.exception(timeout=0)
        assert running.cancel() is False, "a running call cannot be cancelled"

        # gather fails at once on the cancelled call, without waiting for the running one.
        start = time.monotonic()
        with pytest.raises(CancelledError):
            gather([running, queued])
        assert time.monotonic() - start < 0.3
        assert not running.done()

        assert running.result(timeout=30) == 0.5
        assert not running.cancelled()
        assert w.incr().result(timeout=30) == 1, "the cancelled incr() must not have run"
        assert w.echo("still serving").result(timeout=30) == "still serving"


# ----- wait ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wait_timeout_returns_done_and_not_done_originals(mode, w):
    fast = w.echo(1)
    slow = w.asleep(0.8)
    start = time.monotonic()
    done, not_done = wait([fast, slow], timeout=0.2)
    assert time.monotonic() - start < 0.6
    assert isinstance(done, set) and isinstance(not_done, set)
    assert done == {fast} and not_done == {slow}
    assert next(iter(done)) is fast and next(iter(not_done)) is slow

    done, not_done = wait([fast, slow], timeout=30)
    assert done == {fast, slow} and not_done == set()
    assert slow.result(timeout=0) == 0.8


@pytest.mark.parametrize("mode", ALL_MODES)
def test_wait_first_completed_and_first_exception(mode, w):
    slow = w.asleep(0.8)
    fast = w.asleep(0.05)
    start = time.monotonic()
    done, not_done = wait([slow, fast], return_when=FIRST_COMPLETED, timeout=30)
    assert time.monotonic() - start < 0.6
    assert done == {fast} and not_done == {slow}

    failing = w.fail("first exception")
    done, not_done = wait([slow, failing], return_when=FIRST_EXCEPTION, timeout=30)
    assert failing in done and slow in not_done
    assert slow.result(timeout=30) == 0.8


def test_wait_accepts_plain_concurrent_futures():
    never = cf.Future()
    ready = cf.Future()
    ready.set_result("ready")
    ours = Future()
    with ThreadPoolExecutor(2) as pool:
        pooled = pool.submit(time.sleep, 0.05)
        start = time.monotonic()
        done, not_done = wait([never, ready, ours, pooled], timeout=0.3)
        assert time.monotonic() - start < 1.0
        assert done == {ready, pooled}
        assert not_done == {never, ours}

        done, not_done = wait([never, ready], return_when=FIRST_COMPLETED, timeout=30)
        assert done == {ready} and not_done == {never}
    assert wait([]) == (set(), set())
    (plain,), not_done = wait([1])  # a plain value counts as done, as wrap_future makes it (concurry does too)
    assert isinstance(plain, Future) and plain.result() == 1 and not not_done


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_wait_gather_as_completed_accept_ray_object_refs(ray_runtime, mode_opts):
    ray = ray_runtime
    nap = ray.remote(num_cpus=0)(_nap)
    with counter(mode_opts, "ray") as w:
        ready_ref = ray.put(5)
        pending_ref = nap.remote(1.0)
        worker_future = w.echo("w")
        done, not_done = wait([ready_ref, worker_future, pending_ref], timeout=0.3)
        assert done == {ready_ref, worker_future}
        assert not_done == {pending_ref}
        assert any(d is ready_ref for d in done), "wait must return the ObjectRef itself"
        assert all(isinstance(n, ray.ObjectRef) for n in not_done)

        assert gather([ready_ref, worker_future, "plain", pending_ref], timeout=30) == [5, "w", "plain", 1.0]

        slow_ref = nap.remote(0.5)
        fast_ref = ray.put("fast")
        order = list(as_completed([slow_ref, fast_ref], timeout=30))
        assert order[0] is fast_ref and order[1] is slow_ref


# ----- gather -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_list_keeps_input_order_and_passes_plain_values(mode, w):
    futures = [w.asleep(0.3), w.echo("b"), 3, w.asleep(0.1), None, w.echo([1, 2])]
    assert gather(futures, timeout=30) == [0.3, "b", 3, 0.1, None, [1, 2]]
    assert gather((w.echo(i) for i in range(3)), timeout=30) == [0, 1, 2]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_dict_by_key(mode, w):
    result = gather({"slow": w.asleep(0.2), "fast": w.echo(1), "plain": "p", 4: w.echo([4])}, timeout=30)
    assert result == {"slow": 0.2, "fast": 1, "plain": "p", 4: [4]}
    assert list(result) == ["slow", "fast", "plain", 4]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_return_exceptions_puts_errors_in_place(mode, w):
    result = gather([w.echo(1), w.fail("bad"), cancelled_plain_future(), "plain"], return_exceptions=True, timeout=30)
    assert result[0] == 1
    assert type(result[1]) is KeyError and result[1].args == ("bad",)
    assert type(result[2]) is CancelledError
    assert result[3] == "plain"

    by_key = gather({"ok": w.asleep(0.05), "err": w.fail("keyed")}, return_exceptions=True, timeout=30)
    assert by_key["ok"] == 0.05
    assert type(by_key["err"]) is KeyError and by_key["err"].args == ("keyed",)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_fails_fast_on_a_later_failure(mode, w):
    slow = w.asleep(5)
    failing = w.fail("fast failure")
    start = time.monotonic()
    with pytest.raises(KeyError, match="fast failure"):
        gather([slow, failing])
    elapsed = time.monotonic() - start
    assert elapsed < 3, f"gather waited {elapsed:.1f}s for an earlier pending call before raising"
    assert not slow.done()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_raises_first_failure_in_input_order(mode, w):
    first, second = w.fail("first"), w.fail("second")
    wait([first, second], timeout=30)
    with pytest.raises(KeyError, match="first"):
        gather([w.echo(0), first, second])
    with pytest.raises(KeyError, match="second"):
        gather({"b": second, "a": first})


def test_gather_cancelled_plain_future_raises_at_once():
    never = cf.Future()  # would block forever if gather waited for it
    start = time.monotonic()
    with pytest.raises(CancelledError):
        gather([never, cancelled_plain_future()])
    with pytest.raises(CancelledError):
        gather({"pending": never, "cancelled": cancelled_plain_future()})
    assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("mode", ALL_MODES)
def test_gather_timeout_says_how_many_are_pending(mode, w):
    futures = [w.echo(1), w.asleep(0.8), w.asleep(0.8)]
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError, match=r"2 of 3 futures still pending after 0.2s"):
        gather(futures, timeout=0.2)
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 0.6
    with pytest.raises(cf.TimeoutError, match=r"2 of 3 futures still pending"):
        gather(futures, timeout=0.05, return_exceptions=True)
    assert gather(futures, timeout=30) == [1, 0.8, 0.8]


def test_gather_empty_and_plain_values():
    assert gather([]) == []
    assert gather({}) == {}
    assert gather([], timeout=0) == []
    assert gather([1, "a", None]) == [1, "a", None]
    assert gather({"x": 1}) == {"x": 1}


# ----- as_completed -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_as_completed_yields_originals_in_completion_order(mode, mode_opts):
    if mode in POOL_MODES:
        handle = Counter.options(**mode_opts(mode), max_workers=2).init()
        slow_call = handle.sleep  # the pool sends the fast call to the other, idle worker
    else:
        handle = Counter.options(**mode_opts(mode)).init()
        slow_call = handle.asleep  # one worker: the async call runs concurrently with echo
    try:
        gather([handle.echo(0), handle.echo(0)], timeout=60)
        slow = slow_call(0.5)
        fast = handle.echo("fast")
        start = time.monotonic()
        order = list(as_completed([slow, fast], timeout=30))
        assert len(order) == 2 and order[0] is fast and order[1] is slow
        assert time.monotonic() - start >= 0.3
        assert slow.result(timeout=0) == 0.5 and fast.result(timeout=0) == "fast"
    finally:
        handle.stop()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_as_completed_honours_timeout(mode, w):
    slow = w.asleep(0.8)
    fast = w.echo(1)
    start = time.monotonic()
    iterator = as_completed([slow, fast], timeout=0.2)
    assert next(iterator) is fast
    with pytest.raises(cf.TimeoutError):
        next(iterator)
    assert time.monotonic() - start < 0.6
    assert slow.result(timeout=30) == 0.8


# ----- async_gather / async_wait ------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_async_gather_list_dict_and_exceptions(mode, w):

    async def main():
        listed = await async_gather([w.asleep(0.2), w.echo("b"), 3])
        keyed = await async_gather({"a": w.echo(1), "b": w.asleep(0.05), "c": "plain"})
        mixed = await async_gather([w.fail("async bad"), w.echo(2)], return_exceptions=True)
        try:
            await async_gather([w.echo(0), w.fail("raised")])
        except KeyError as exc:
            raised = exc
        empty = await async_gather([])
        return listed, keyed, mixed, raised, empty

    listed, keyed, mixed, raised, empty = asyncio.run(asyncio.wait_for(main(), 60))
    assert listed == [0.2, "b", 3]
    assert keyed == {"a": 1, "b": 0.05, "c": "plain"} and list(keyed) == ["a", "b", "c"]
    assert type(mixed[0]) is KeyError and mixed[0].args == ("async bad",) and mixed[1] == 2
    assert type(raised) is KeyError and raised.args == ("raised",)
    assert empty == []


@pytest.mark.parametrize("mode", ALL_MODES)
def test_async_wait_timeout_and_first_completed(mode, w):

    async def main():
        slow = w.asleep(0.8)
        fast = w.echo(1)
        start = time.monotonic()
        timed = await async_wait([slow, fast], timeout=0.2)
        timed_elapsed = time.monotonic() - start
        slow2 = w.asleep(0.8)
        quick = w.asleep(0.05)
        first = await async_wait([slow2, quick], return_when=FIRST_COMPLETED)
        everything = await async_wait([slow, slow2, fast])
        empty = await async_wait([])
        return (slow, fast, slow2, quick), timed, timed_elapsed, first, everything, empty

    (slow, fast, slow2, quick), timed, timed_elapsed, first, everything, empty = asyncio.run(
        asyncio.wait_for(main(), 60)
    )
    assert timed == ({fast}, {slow})
    assert 0.15 <= timed_elapsed < 0.6
    assert first == ({quick}, {slow2})
    assert everything == ({slow, slow2, fast}, set())
    assert empty == (set(), set())
    assert slow.result(timeout=0) == 0.8


# ----- memory -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_futures_are_not_retained_after_gather(mode, mode_opts):
    count = 300 if mode == "ray" else 2000
    with counter(mode_opts, mode) as w:
        futures = [w.incr() for _ in range(count)]
        assert gather(futures, timeout=60) == list(range(1, count + 1))
        assert wait(futures, timeout=30)[1] == set()
        assert len(list(as_completed(futures, timeout=30))) == count
        refs = [weakref.ref(f) for f in futures]
        del futures
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        assert alive <= count // 100, f"{alive} of {count} futures are still referenced after gather"


# ----- backends' part: futures.py knows none ---------------------------------------------


def test_futures_module_imports_nothing_of_ray():
    tree = ast.parse((REPO / "concurry_ray" / "futures.py").read_text())
    nodes = list(ast.walk(tree))
    imported = [alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names]
    imported += [f"{'.' * node.level}{node.module or ''}" for node in nodes if isinstance(node, ast.ImportFrom)]
    assert [name for name in imported if "ray" in name.split(".")] == []  # neither ray nor .ray (concurry_ray.ray)


def test_a_stored_value_is_fetched_once_and_never_blocking_the_event_loop():
    fetches: list = []

    async def fetch_async():
        fetches.append("async")
        return "big"

    def fresh() -> Future:
        future = Future()
        future.set_result(futures_module.Stored(lambda timeout: fetches.append(timeout) or "big", fetch_async))
        return future

    future = fresh()
    assert future.result(timeout=5) == "big" and future.result() == "big" and fetches == [5]

    async def main():
        awaited = fresh()
        return await awaited, await awaited, await async_gather([fresh()])

    assert asyncio.run(main()) == ("big", "big", ["big"]) and fetches == [5, "async", "async"]


def test_a_registered_adapter_is_loaded_once_its_module_is_imported(monkeypatch):
    class Token:
        def __init__(self, value):
            self.value = value

    for name in ("_adapters", "_kinds", "_waiting"):  # restored after the test
        monkeypatch.setattr(futures_module, name, type(getattr(futures_module, name))(getattr(futures_module, name)))
    home = types.ModuleType("token_adapter_home")
    home.ADAPTER = futures_module.Adapter(Token, lambda token: futures_module.finished_future(token.value))
    monkeypatch.setitem(sys.modules, "token_adapter_home", home)
    futures_module.register_adapter("token_adapter_home:ADAPTER", when_imported="token_lib")
    assert not futures_module.is_awaitable_result(Token(1))  # token_lib not imported: no Token can be pending
    monkeypatch.setitem(sys.modules, "token_lib", types.ModuleType("token_lib"))
    assert gather([Token(1), 2, Token(3)], timeout=5) == [1, 2, 3]
    assert wrap_future(Token(4)).result(timeout=5) == 4
    assert home.ADAPTER in futures_module._adapters
    assert ("token_lib", "token_adapter_home:ADAPTER") not in futures_module._waiting



@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_cancelled_argument_future_cancels_the_call(w):
    blocker = cf.Future()
    call = w.echo(blocker)
    blocker.cancel()
    with pytest.raises(cf.CancelledError):
        call.result(timeout=10)
    assert call.cancelled()
    assert w.echo("after").result(timeout=30) == "after"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_an_asyncio_future_argument_settled_later_on_its_own_loop(w):
    async def main() -> object:
        pending = asyncio.get_running_loop().create_future()
        call = w.echo(pending)
        asyncio.get_running_loop().call_later(0.05, pending.set_result, 7)
        return await asyncio.wait_for(asyncio.wrap_future(call), timeout=30)

    assert asyncio.run(main()) == 7
