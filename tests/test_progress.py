"""ProgressBar counts, states and styles; progress=True in wait, gather and map."""

from __future__ import annotations

import io
import threading

import pytest

from concurry_ray import ConfigError, ProgressBar, TaskWorker, gather, wait


def test_iterating_counts_every_item_and_succeeds():
    out = io.StringIO()
    bar = ProgressBar(range(25), desc="items", style="std", file=out)
    assert list(bar) == list(range(25))
    assert (bar.n, bar.total) == (25, 25)
    assert "items" in out.getvalue() and "25/25" in out.getvalue()
    assert "closed" in repr(bar)


def test_generator_without_len_and_early_exit_closes_the_bar():
    bar = ProgressBar((i for i in range(100)), file=io.StringIO())
    assert bar.total is None
    for item in bar:
        if item == 9:
            break
    del item
    assert bar.n == 9
    bar.update(5)
    assert bar.n == 9, "a closed bar ignores updates"


def test_manual_updates_from_many_threads():
    bar = ProgressBar(total=8000, desc="threads", file=io.StringIO())

    def work():
        for _ in range(1000):
            bar.update()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.n == 8000
    bar.set_total(9000)
    assert bar.total == 9000
    bar.success("done")


def test_failure_and_context_manager():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        with ProgressBar(total=3, file=out, style="std") as bar:
            bar.update(2)
            raise RuntimeError("boom")
    assert bar.n == 2 and "closed" in repr(bar)
    other = ProgressBar(total=3, disable=True)
    other.update(3)
    other.failure("gave up")
    assert other.n == 3


def test_default_style_is_tqdm_auto_so_notebooks_get_widgets(monkeypatch):
    import tqdm.auto
    import tqdm.std

    made = []

    class NotebookBar(tqdm.std.tqdm):  # what tqdm.auto gives inside Jupyter
        def __init__(self, *args, **kwargs):
            made.append(kwargs["desc"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", NotebookBar)
    bar = ProgressBar(total=2, desc="by hand", file=io.StringIO())
    assert type(bar._bar) is NotebookBar
    bar.close()
    with TaskWorker.options(mode="thread", max_workers=2).init() as pool:
        assert list(pool.map(abs, [-1, -2], progress={"file": io.StringIO()})) == [1, 2]
        assert gather([pool.submit(abs, -3)], progress={"file": io.StringIO(), "desc": "gather"}) == [3]
    assert made == ["by hand", "map", "gather"]


def test_unknown_style_is_a_config_error():
    with pytest.raises(ConfigError, match="style='rey' is not a progress bar style \\(did you mean 'ray'\\?\\)"):
        ProgressBar(total=1, style="rey")


def test_iterating_a_bar_without_iterable_is_a_type_error():
    with pytest.raises(TypeError, match="update"):
        list(ProgressBar(total=3, disable=True))


def test_wait_and_gather_show_progress():
    out = io.StringIO()
    with TaskWorker.options(mode="thread", max_workers=2).init() as pool:
        futures = [pool.submit(abs, -i) for i in range(6)]
        assert gather(futures, progress={"file": out, "desc": "gathering"}) == list(range(6))
        done, not_done = wait(futures, progress={"file": out, "desc": "waiting"})
    assert len(done) == 6 and not not_done
    assert "gathering" in out.getvalue() and "waiting" in out.getvalue()


def count_in_ray_worker(n: int) -> tuple:
    bar = ProgressBar(range(n), desc="inside ray", style="ray")
    for _ in bar:
        pass
    return bar.n, type(bar._bar).__module__


def test_ray_style_inside_a_ray_worker_reports_through_ray(mode_opts):
    with TaskWorker.options(**mode_opts("ray")).init() as pool:
        assert pool.submit(count_in_ray_worker, 12).result(timeout=60) == (12, "ray.experimental.tqdm_ray")
    bar = ProgressBar(total=2, style="ray", file=io.StringIO())
    assert type(bar._bar).__module__.startswith("tqdm"), "outside Ray workers the bar draws itself"
    bar.close()
