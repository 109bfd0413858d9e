"""Ray calls that queue up behind a busy actor travel as one batch task, with every call's
own outcome: order, errors, cancellation, unpicklable arguments, large results, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import CancelledError

import pytest
import ray

from concurry_ray import SerializationError, Worker, WorkerCrashedError, gather
from concurry_ray.futures import Stored, peek

from conftest import RAY_ACTOR


class Log(Worker):
    """A sync-only worker (so its Ray actor batches) that records what it ran, and in which task."""

    def __init__(self) -> None:
        self.seen: list = []
        self.tasks: set = set()

    def add(self, item):
        self.seen.append(item)
        self.tasks.add(ray.get_runtime_context().get_task_id())
        return item

    def fail_on(self, item, bad):
        self.add(item)
        if item == bad:
            raise ValueError(f"item {item} is bad")
        return item

    def blob(self, n: int) -> bytes:
        return b"z" * n

    def size(self, data) -> int:
        return len(data)

    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def pid(self) -> int:
        return os.getpid()

    def note(self, path: str, item: int, seconds: float) -> int:
        """Append ``item`` to the file at ``path`` (one line per run), then sleep."""
        with open(path, "a") as journal:
            journal.write(f"{item}\n")
        time.sleep(seconds)
        return item

    def lock(self):
        return threading.Lock()

    def history(self) -> tuple:
        return list(self.seen), len(self.tasks)


class MixedLog(Log):
    """The same with an async method: its Ray actor is an asyncio actor, whose sync calls batch too."""

    async def ping(self) -> str:
        return "pong"

    async def nap(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds


@pytest.fixture(params=[Log, MixedLog], ids=["plain-actor", "asyncio-actor"])
def log(ray_runtime, request):
    with request.param.options(mode="ray", actor_options=RAY_ACTOR).init() as worker:
        yield worker


def test_a_burst_runs_in_order_in_fewer_tasks_than_calls(log, request):
    assert gather([log.add(i) for i in range(500)], timeout=60) == list(range(500))
    seen, tasks = log.history().result(timeout=30)
    assert seen == list(range(500))
    if request.node.callspec.id == "plain-actor":  # an asyncio actor's sync thread sees no task id
        assert tasks < 100, f"500 queued calls took {tasks} Ray tasks; they were not batched"
    assert log.get_pool_stats()["workers"][0]["completed"] == 501


def test_a_failing_call_in_a_batch_fails_alone(log):
    futures = [log.fail_on(i, 7) for i in range(20)]
    results = gather(futures, return_exceptions=True, timeout=60)
    assert isinstance(results[7], ValueError) and str(results[7]) == "item 7 is bad"
    assert "Remote traceback" in "".join(getattr(results[7], "__notes__", [])) + str(results[7].__cause__ or "")
    assert [r for i, r in enumerate(results) if i != 7] == [i for i in range(20) if i != 7]
    assert log.history().result(timeout=30)[0] == list(range(20))
    worker = log.get_pool_stats()["workers"][0]
    assert (worker["completed"], worker["failed"]) == (20, 1)  # 19 good calls and history()


def test_a_failed_batched_future_passed_on_fails_the_next_call(log):
    futures = [log.fail_on(i, 3) for i in range(10)]
    downstream = log.size(futures[3])
    with pytest.raises(ValueError, match="item 3 is bad"):
        downstream.result(timeout=30)
    assert gather(futures[:3], timeout=30) == [0, 1, 2]


def test_a_queued_call_can_be_cancelled_and_never_runs(log):
    busy = [log.slow(0.3), log.slow(0.3)]
    queued = [log.add(i) for i in range(5)]
    assert queued[2].cancel()
    assert gather(busy + [queued[i] for i in (0, 1, 3, 4)], timeout=30) == [0.3, 0.3, 0, 1, 3, 4]
    with pytest.raises(CancelledError):
        queued[2].result(timeout=1)
    assert log.history().result(timeout=30)[0] == [0, 1, 3, 4]


def test_an_unpicklable_argument_fails_only_its_own_call(log):
    busy = [log.slow(0.3), log.slow(0.3)]
    futures = [log.add(1), log.add(threading.Lock()), log.add(3)]
    with pytest.raises(SerializationError, match="lock"):
        futures[1].result(timeout=30)
    assert gather(busy + [futures[0], futures[2]], timeout=30) == [0.3, 0.3, 1, 3]


def test_an_unpicklable_result_fails_only_its_own_call(log):
    busy = [log.slow(0.3), log.slow(0.3)]
    futures = [log.add(1), log.lock(), log.add(3)]
    results = gather(busy + futures, return_exceptions=True, timeout=30)
    assert results[:3] == [0.3, 0.3, 1] and results[4] == 3
    assert isinstance(results[3], SerializationError) and "lock" in str(results[3])


def test_large_results_of_a_batch_stay_in_the_store(log):
    busy = [log.slow(0.2), log.slow(0.2)]
    blobs = [log.blob(500_000) for _ in range(5)]
    assert all(f.exception(timeout=30) is None for f in blobs)
    assert all(type(peek(f)[0]) is Stored for f in blobs)
    assert log.size(blobs[0]).result(timeout=30) == 500_000
    assert [len(b) for b in gather(blobs, timeout=30)] == [500_000] * 5
    gather(busy, timeout=30)


def test_a_crash_fails_the_calls_sent_to_the_actor_and_reruns_those_waiting_in_the_handle(log):
    """The task queued behind the running one may have started (the running one's reply can be lost
    with the actor), so it fails rather than run twice; calls that never left the handle rerun."""
    pid = log.pid().result(timeout=30)
    running = log.slow(30)
    sent = log.add(0)  # the second task in flight, queued on the actor
    waiting = [log.add(i) for i in range(1, 30)]
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError, match="while running slow"):
        running.result(timeout=10)
    with pytest.raises(WorkerCrashedError, match="add\\(\\) was sent to it; it may have started"):
        sent.result(timeout=10)
    assert gather(waiting, timeout=60) == list(range(1, 30))
    assert log.history().result(timeout=30)[0] == list(range(1, 30))
    assert log.pid().result(timeout=30) != pid


def test_a_crash_in_the_middle_of_a_batch_runs_none_of_its_calls_twice(log, tmp_path):
    pid = log.pid().result(timeout=30)
    journal = tmp_path / "ran.txt"
    first = [log.slow(0.5), log.slow(0.5)]  # two tasks in flight: the next calls wait, then go as one batch
    batch = [log.note(str(journal), i, 0.2) for i in range(10)]
    time.sleep(1.0 + 0.5)  # the batch is running its third call or so
    os.kill(pid, signal.SIGKILL)
    outcomes = gather(first + batch, return_exceptions=True, timeout=60)
    ran = journal.read_text().split()
    assert len(ran) == len(set(ran)), f"calls ran twice: {ran}"
    assert 0 < len(ran) < 10, ran  # the kill came in the middle of the batch
    crashed = [i for i, o in enumerate(outcomes[2:]) if isinstance(o, WorkerCrashedError)]
    assert crashed == list(range(10)), outcomes  # every call of the running batch may have run: all fail


def test_long_async_calls_never_hold_back_a_sync_call(ray_runtime):
    """Async calls run side by side on the actor's loop, so they must not fill the client's window."""
    with MixedLog.options(mode="ray", actor_options=RAY_ACTOR).init() as worker:
        assert worker.add(0).result(timeout=60) == 0
        naps = [worker.nap(3) for _ in range(3)]
        start = time.monotonic()
        assert worker.add(1).result(timeout=30) == 1
        assert time.monotonic() - start < 1.5, "a sync call waited for async calls to finish"
        assert not any(n.done() for n in naps)
        assert gather(naps, timeout=30) == [3, 3, 3]
