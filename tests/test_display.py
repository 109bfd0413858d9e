"""Readable handles: repr names class, size, mode and state; _repr_html_ renders a small table."""

from __future__ import annotations

import pytest
from conftest import ALL_MODES, POOL_MODES
from workers import Counter

from concurry_ray import LimitPool, LimitSet, RateLimit, ResourceLimit, Worker, task
from concurry_ray.display import limits_html, pool_html, pool_repr, read_stats

KEY = "<to&ken>"  # a limit key that must be escaped
ESCAPED_KEY = "&lt;to&amp;ken&gt;"


class Spender(Worker):
    """Takes rate units from its pool's limits."""

    def spend(self, key: str, amount: int) -> int:
        with self.limits.acquire(requested={key: amount}):
            return amount


def size_of(mode: str) -> int:
    return 2 if mode in POOL_MODES else 1


@pytest.mark.parametrize("mode", ALL_MODES)
def test_repr_names_class_size_mode_and_state(mode, mode_opts):
    size = size_of(mode)
    pool = Counter.options(**mode_opts(mode, max_workers=size)).init()
    kind = "pool of 2" if size == 2 else "worker"
    assert repr(pool) == f"<Counter {kind}, mode={mode!r}, running>"
    pool.stop()
    assert repr(pool) == f"<Counter {kind}, mode={mode!r}, stopped>"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_pool_html_shows_mode_workers_and_limit_usage(mode, mode_opts):
    size = size_of(mode)
    options = mode_opts(mode, max_workers=size, limits=[RateLimit(KEY, "hour", 100)])
    with Spender.options(**options).init() as pool:
        assert pool.spend(KEY, 7).result(timeout=60) == 7
        page = pool._repr_html_()
        assert page.startswith("<table") and page.count("<table") == 2
        for shown in (f">{mode}<", ">running<", f">{size} alive / {size}<", ">in flight<", ">queued<", ">7 / 100<"):
            assert shown in page
        assert ESCAPED_KEY in page and KEY not in page
    page = pool._repr_html_()
    assert ">stopped<" in page and f">{mode}<" in page and "stopped>" in repr(pool)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_limit_set_html_shows_usage_per_key(mode, mode_opts):
    limit_set = LimitSet([RateLimit(KEY, "hour", 100), ResourceLimit("slots", 2)], shared=True, mode=mode_opts(mode)["mode"])
    try:
        with limit_set.acquire(requested={KEY: 30}):
            page = limit_set._repr_html_()
        assert ">30 / 100<" in page and ">1 / 2<" in page, "an acquire takes one slot of each resource not named"
        assert ESCAPED_KEY in page and KEY not in page and f">{limit_set.mode}<" in page
    finally:
        limit_set.remove()


def test_class_and_pool_names_are_escaped():
    odd = type("Odd<&>", (Counter,), {})
    with odd.options(mode="thread", name="a&b").init() as pool:
        assert repr(pool) == "<Odd<&> worker, name='a&b', mode='thread', running>"
        page = pool._repr_html_()
    assert "Odd&lt;&amp;&gt; &#x27;a&amp;b&#x27;" in page and "Odd<" not in page


def test_on_demand_pool_shows_active_workers_and_cap():
    with Counter.options(mode="thread", on_demand=True, max_workers=3).init() as pool:
        assert repr(pool) == "<Counter on-demand pool (0 active, max 3), mode='thread', running>"
        assert ">0 active, max 3<" in pool._repr_html_()


def test_stats_that_cannot_be_read_are_shown_not_raised():
    def unreachable() -> dict:
        raise ConnectionError("holder <gone>")

    with Counter.options(mode="thread", max_workers=2).init() as pool:
        pool.get_pool_stats = unreachable  # as when a Ray balancer is gone
        page = pool._repr_html_()
    assert ">thread<" in page and ">running<" in page and ">2<" in page
    assert "ConnectionError: holder &lt;gone&gt;" in page
    limit_set = LimitSet([ResourceLimit("slots", 1)])
    limit_set.get_stats = unreachable
    assert "stats unavailable" in limit_set._repr_html_()


def test_limit_pool_html_shows_each_set_without_its_config():
    sets = [LimitSet([ResourceLimit(KEY, 4)], shared=True, name="eu&us", config={"api_key": "secret"}),
            LimitSet([ResourceLimit(KEY, 4)], shared=True)]
    pool = LimitPool(sets)
    with pool.acquire(requested={KEY: 3}):
        page = pool._repr_html_()
    assert "limits of set eu&amp;us" in page
    assert "limits of set #1" in page and ">3 / 4<" in page and ">0 / 4<" in page
    assert "secret" not in page and ">RoundRobin<" in page


def test_private_pool_limits_are_not_shown_as_usage():
    with Spender.options(mode="thread", max_workers=2, limits=LimitSet([RateLimit(KEY, "hour", 100)])).init() as pool:
        pool.spend(KEY, 5).result(timeout=30)
        page = pool._repr_html_()
    assert "each worker has a budget of its own" in page and ">5 / 100<" not in page


def test_task_html_does_not_start_workers():
    @task(mode="thread")
    def double(x: int) -> int:
        return 2 * x

    assert ">not started<" in double._repr_html_() and "not started" in repr(double)
    assert double(4).result(timeout=30) == 8
    assert ">1 alive / 1<" in double._repr_html_() and ">completed<" in double._repr_html_()
    double.stop()


def test_render_functions_escape_and_tolerate_missing_figures():
    assert pool_repr("C", {}) == "<C pool of 0, mode=None, running>"
    page = pool_html("<script>", {}, {"unavailable": "x < y"}, name="<b>")
    assert "<script>" not in page and "<b>" not in page and "x &lt; y" in page
    assert "<script>" not in limits_html("LimitSet", {"name": "<script>", "limits": {"<i>": {}}})
    assert read_stats(lambda: {"a": 1}) == {"a": 1}
    assert read_stats(lambda: 1 / 0) == {"unavailable": "ZeroDivisionError: division by zero"}
