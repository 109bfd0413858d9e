"""Ray results: a large one stays in the object store until the caller asks for it;
a small one arrives with the call's receipt. Errors are never reported as unhandled."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from concurry_ray import Worker, async_gather, gather
from concurry_ray.futures import Stored, peek

from conftest import RAY_ACTOR

BIG = 1_000_000


class Blob(Worker):
    def make(self, n: int) -> bytes:
        return b"x" * n

    async def make_async(self, n: int) -> bytes:
        return b"y" * n

    def size(self, data: bytes) -> int:
        return len(data)

    def small(self) -> dict:
        return {"a": [1, 2, 3], "b": "text"}

    def boom(self) -> None:
        raise ValueError("boom on purpose")


@pytest.fixture(scope="module")
def blob(ray_runtime):
    with Blob.options(mode="ray", actor_options=RAY_ACTOR).init() as worker:
        yield worker


@pytest.mark.parametrize("method", ["make", "make_async"])
def test_a_large_result_stays_in_the_object_store_until_asked_for(blob, method):
    future = getattr(blob, method)(BIG)
    assert future.exception(timeout=30) is None  # finished, without fetching the value
    assert type(peek(future)[0]) is Stored
    assert blob.size(future).result(timeout=30) == BIG  # passed on worker to worker
    assert type(peek(future)[0]) is Stored
    value = future.result(timeout=30)
    assert len(value) == BIG and value[:1] in (b"x", b"y")
    assert peek(future)[0] is value  # fetched once, then kept
    assert future.result(timeout=30) is value


def test_a_small_result_arrives_with_the_receipt(blob):
    future = blob.small()
    assert future.exception(timeout=30) is None
    assert peek(future)[0] == {"a": [1, 2, 3], "b": "text"}


def test_stored_results_through_gather_await_and_as_completed(blob):
    assert [len(v) for v in gather([blob.make(BIG), blob.make(10), blob.make_async(BIG)], timeout=30)] == [BIG, 10, BIG]
    assert gather({"a": blob.make(BIG), "b": 1}, timeout=30)["a"] == b"x" * BIG

    async def awaited() -> list:
        gathered = await async_gather([blob.make(BIG), blob.small()])
        return [len(await blob.make(BIG)), len(await blob.make_async(BIG)), len(gathered[0]), gathered[1]["b"]]

    assert asyncio.run(asyncio.wait_for(awaited(), 30)) == [BIG, BIG, BIG, "text"]


def test_a_failed_call_is_raised_and_not_reported_as_unhandled(blob):
    records: list = []
    handler = logging.Handler()
    handler.emit = records.append
    ray_logger = logging.getLogger("ray._private.worker")
    ray_logger.addHandler(handler)
    try:
        future = blob.boom()
        with pytest.raises(ValueError, match="boom on purpose"):
            future.result(timeout=30)
        gather([blob.boom() for _ in range(5)], return_exceptions=True, timeout=30)
        del future
        gc.collect()
        time.sleep(0.5)  # Ray reports an unread error when its last reference goes away
    finally:
        ray_logger.removeHandler(handler)
    assert [r.getMessage() for r in records if "Unhandled error" in r.getMessage()] == []
    assert blob.get_pool_stats()["workers"][0]["failed"] >= 6


def test_an_async_actor_keeps_serving_a_caller_whose_argument_failed(ray_runtime):
    from workers import Counter  # has an async method, so its Ray actor is an asyncio actor

    with Counter.options(mode="ray", actor_options=RAY_ACTOR).init() as worker:
        failed = worker.fail("upstream")
        with pytest.raises(KeyError, match="upstream"):
            worker.echo([failed]).result(timeout=30)  # the nested failed future raises in the actor
        assert worker.add(1, 2).result(timeout=10) == 3  # this sender's next sync call still gets its turn
