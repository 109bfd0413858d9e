"""Ray-private APIs are used only behind a check, with a public fallback (concurry_ray/ray/compat.py).

A scan keeps Ray-private names out of the rest of the package. The fallbacks are forced with
stand-ins for Ray's objects, without a Ray runtime; the last test runs a Ray pool with the
private completion hook switched off.
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from types import SimpleNamespace

import pytest
import ray
from ray import exceptions as rex

from concurry_ray import gather, wrap_future
from concurry_ray.ray import compat

from conftest import REPO, RAY_ACTOR
from workers import Counter

RAY_PRIVATE = re.compile(r"\bray\._\w+|\._on_completed\b|\._(?:ray_)?actor_id\b|\.worker\.mode\b|\bglobal_worker\b")
CHECKED_THERE = {"concurry_ray/ray/compat.py", "concurry_ray/ray/option_names.py"}  # option_names must not import Ray


def test_ray_private_names_appear_only_where_they_are_checked():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for package in ("concurry_ray", "local_backends")
        for path in sorted((REPO / package).rglob("*.py"))
        if str(path.relative_to(REPO)) not in CHECKED_THERE
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if RAY_PRIVATE.search(line)
    ]
    assert not found, "Ray-private names outside concurry_ray/ray/compat.py:\n" + "\n".join(found)


class PublicOnlyRef:
    """An ObjectRef as the fallback sees it: ``future()`` and no ``_on_completed``."""

    def __init__(self) -> None:
        self.completed = cf.Future()

    def future(self) -> cf.Future:
        return self.completed


@pytest.fixture
def without_on_completed(monkeypatch):
    monkeypatch.setattr(compat, "HAS_ON_COMPLETED", False)


def test_on_completed_falls_back_to_the_public_future(without_on_completed):
    seen = []
    ref, failed, ready = PublicOnlyRef(), PublicOnlyRef(), PublicOnlyRef()
    compat.on_completed(ref, seen.append)
    compat.on_completed(failed, seen.append)
    assert seen == []
    ref.completed.set_result(42)
    error = rex.RayError("gone")
    failed.completed.set_exception(error)
    ready.completed.set_result("at once")
    compat.on_completed(ready, seen.append)
    assert seen == [42, error, "at once"]


def test_on_completed_uses_the_private_hook_when_ray_has_it(monkeypatch):
    monkeypatch.setattr(compat, "HAS_ON_COMPLETED", True)
    ref = SimpleNamespace(_on_completed=lambda callback: callback("by the hook"))
    seen = []
    compat.on_completed(ref, seen.append)
    assert seen == ["by the hook"]


@pytest.mark.parametrize("task_id, expected", [(None, False), ("16310a0f", True)])
def test_in_ray_worker_falls_back_to_the_task_id(monkeypatch, task_id, expected):
    context = SimpleNamespace(get_task_id=lambda: task_id)  # no .worker
    monkeypatch.setattr(ray, "get_runtime_context", lambda: context)
    assert compat.in_ray_worker() is expected


@pytest.mark.parametrize("mode, expected", [(ray.WORKER_MODE, True), (ray.SCRIPT_MODE, False)])
def test_in_ray_worker_reads_the_worker_mode_when_there_is_one(monkeypatch, mode, expected):
    context = SimpleNamespace(worker=SimpleNamespace(mode=mode), get_task_id=lambda: pytest.fail("not the fallback"))
    monkeypatch.setattr(ray, "get_runtime_context", lambda: context)
    assert compat.in_ray_worker() is expected


def test_a_ray_pool_works_through_the_public_fallback(ray_runtime, without_on_completed):
    with Counter.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init() as pool:
        assert gather([pool.add(i, 1) for i in range(200)], timeout=60) == list(range(1, 201))
        assert pool.asleep(0.01).result(timeout=60) == 0.01
        with pytest.raises(KeyError, match="on purpose"):
            pool.fail("on purpose").result(timeout=60)
    assert wrap_future(ray.put("stored")).result(timeout=60) == "stored"
