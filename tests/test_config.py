"""global_config and temp_config: defaults for every option, per mode, scoped overrides."""

from __future__ import annotations

import asyncio
import threading

import pytest
from workers import Counter

from concurry_ray import ConfigError, global_config, temp_config
from concurry_ray.enums import RetryAlgorithm
from concurry_ray.options import build_options


@pytest.fixture(autouse=True)
def clean_config():
    global_config.reset()
    yield
    global_config.reset()


def test_shipped_defaults_are_visible():
    assert global_config.defaults.mode == "thread"
    assert global_config.defaults.num_retries == 0
    assert global_config.defaults.retry_on == [Exception]
    assert global_config.ray.retry_wait == 1.0
    assert global_config.defaults.as_dict()["retry_jitter"] == 0.3


def test_defaults_apply_to_new_workers_and_per_mode_wins():
    global_config.defaults.num_retries = 2
    global_config.defaults.retry_algorithm = "Linear"
    global_config.process.num_retries = 5
    assert global_config.defaults.retry_algorithm is RetryAlgorithm.Linear, "stored in canonical form"
    assert (build_options().num_retries, build_options(mode="process").num_retries) == (2, 5)
    assert global_config.process.num_retries == 5 and global_config.thread.num_retries == 2
    assert build_options(mode="process", num_retries=1).num_retries == 1, "an explicit option wins"
    global_config.defaults.mode = "sync"
    with Counter.options().init() as w:
        assert w.get_pool_stats()["mode"] == "sync"


def test_bad_defaults_are_rejected_when_set():
    with pytest.raises(ConfigError, match="global_config.defaults: .*retry_jitter=2 must be between 0 and 1"):
        global_config.defaults.retry_jitter = 2
    with pytest.raises(ConfigError, match="max_workers=3 is not allowed in mode 'sync'"):
        global_config.sync.max_workers = 3
    with pytest.raises(ConfigError, match="'num_retires' \\(did you mean 'num_retries'\\?\\)"):
        global_config.defaults.num_retires = 1
    with pytest.raises(ConfigError, match="not per mode"):
        global_config.ray.mode = "thread"
    with pytest.raises(AttributeError, match="did you mean 'max_workers'"):
        global_config.defaults.max_worker
    assert global_config.defaults.retry_jitter == 0.3


def test_temp_config_overrides_and_restores_even_on_error():
    global_config.ray.num_retries = 4
    with temp_config(num_retries=1, thread_retry_wait=0.5, global_retry_jitter=0.0):
        assert build_options().num_retries == 1
        assert build_options(mode="ray").num_retries == 1, "a temp_config override beats a mode's global default"
        assert (build_options().retry_wait, build_options(mode="process").retry_wait) == (0.5, 1.0)
        with pytest.raises(KeyError):
            with temp_config(thread_num_retries=7):
                assert build_options().num_retries == 7
                assert global_config.thread.num_retries == 7
                raise KeyError("inside")
        assert build_options().num_retries == 1
        assert build_options().retry_jitter == 0.0
    assert build_options().num_retries == 0 and build_options(mode="ray").num_retries == 4


def test_temp_config_validates_on_entry():
    with pytest.raises(ConfigError, match="temp_config: .*retry_wait=-1 must be >= 0"):
        with temp_config(retry_wait=-1):
            pass
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        with temp_config(ray_colour="red"):
            pass


def test_temp_config_is_isolated_between_threads():
    barrier = threading.Barrier(2)
    seen: dict = {}

    def run(name: str, retries: int) -> None:
        with temp_config(num_retries=retries):
            barrier.wait(timeout=5)
            seen[name] = build_options().num_retries
            barrier.wait(timeout=5)
        seen[name + " after"] = build_options().num_retries

    threads = [threading.Thread(target=run, args=("a", 1)), threading.Thread(target=run, args=("b", 2))]
    for t in threads:
        t.start()
    with temp_config(num_retries=3):
        for t in threads:
            t.join()
        assert build_options().num_retries == 3
    assert seen == {"a": 1, "b": 2, "a after": 0, "b after": 0}


def test_temp_config_is_isolated_between_asyncio_tasks():
    async def build_in(retries: int) -> int:
        with temp_config(num_retries=retries):
            await asyncio.sleep(0.01)
            return build_options().num_retries

    async def main():
        return await asyncio.gather(build_in(1), build_in(2))

    assert asyncio.run(main()) == [1, 2]


def test_temp_config_works_as_a_decorator():
    @temp_config(max_workers=3)
    def configured() -> int:
        return build_options().max_workers

    assert configured() == 3 and build_options().max_workers is None


def test_mutable_defaults_are_copied_per_worker():
    global_config.ray.actor_options = {"num_cpus": 0.5}
    first, second = build_options(mode="ray"), build_options(mode="ray")
    assert first.actor_options == {"num_cpus": 0.5}
    assert first.actor_options is not second.actor_options


def test_every_registered_mode_has_a_scope(monkeypatch):
    from concurry_ray.modes import MODES, Mode

    monkeypatch.setitem(MODES, "inline", Mode("local_backends.thread:ThreadBackend"))
    try:
        global_config.inline.num_retries = 2
        assert global_config.inline.num_retries == 2 and global_config.thread.num_retries == 0
        assert global_config.threads.num_retries == 0, "aliases name the same scope"
        with pytest.raises(AttributeError, match="no scope 'rayy'.*did you mean 'ray'"):
            global_config.rayy
    finally:
        global_config.reset()
