"""Reliability promises of thread and process pools: every future settles, stop and resize are
bounded, and nothing is left behind (see "Reliability promises" in the API spec).

Every wait here has a bound, so a regression fails a test instead of hanging the run.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for
from workers import Counter

from concurry_ray import Worker
from concurry_ray.errors import CallTimeoutError, SerializationError, WorkerCrashedError, WorkerInitError
from concurry_ray.futures import Future
from concurry_ray.modes import backend_class
from concurry_ray.options import build_options
from concurry_ray.protocol import Call, WorkerSpec

LOCAL_POOL_MODES = ["thread", "process"]


def _cannot_rebuild():
    raise RuntimeError("this object cannot be rebuilt")


class Unloadable:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return (_cannot_rebuild, ())


class BadPair(Exception):
    """Pickles fine; unpickling calls BadPair(message), a TypeError."""

    def __init__(self, a, b):
        super().__init__(f"{a}{b}")


class Replies(Worker):
    """Returns or raises what the parent process cannot unpickle."""

    def unloadable(self) -> Unloadable:
        return Unloadable()

    def bad_pair(self) -> None:
        raise BadPair("a", "b")

    def echo(self, value):
        return value


class BadPairInit(Worker):
    """A constructor raising an exception that cannot be unpickled."""

    def __init__(self):
        raise BadPair("x", "y")

    def echo(self, value):
        return value


class FailsWhile(Worker):
    """The constructor fails while the file ``path`` exists."""

    def __init__(self, path: str):
        if os.path.exists(path):
            raise ValueError(f"{path} exists")

    def echo(self, value):
        return value


class FailsAfterFirst(Worker):
    """The first build succeeds, every later one fails; each build adds a line to ``log``."""

    def __init__(self, marker: str, log: str):
        with open(log, "a") as file:
            file.write("built\n")
        if os.path.exists(marker):
            raise ValueError("second build refused")
        Path(marker).touch()

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def echo(self, value):
        return value


def in_thread(function, timeout: float):
    """Run ``function`` in a daemon thread; its outcome, or AssertionError if it takes longer than ``timeout``."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"did not finish within {timeout}s"
    return outcome


def workers_named(mode: str, name: str) -> list:
    """The worker threads or processes of the pool called ``name`` still running."""
    if mode == "thread":
        return [t for t in threading.enumerate() if t.name.startswith(f"{name}#")]
    return [p for p in multiprocessing.active_children() if p.name.startswith(f"{name}#")]


def pid_gone(pid: int) -> bool:
    """True once process ``pid`` has ended and been reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# 1. A call that times out while queued -------------------------------------------------
@pytest.mark.parametrize("mode", LOCAL_POOL_MODES)
def test_call_timing_out_in_the_queue_leaves_the_worker_serving(mode, mode_opts):
    with Counter.options(**mode_opts(mode, call_timeout=0.3)).init() as worker:
        slow = worker.sleep(1.0)
        queued = worker.echo("late")
        with pytest.raises(CallTimeoutError):
            queued.result(timeout=5)
        with pytest.raises(CallTimeoutError):
            slow.result(timeout=5)
        time.sleep(1.0)  # the slow call ends; the queued one is skipped
        assert worker.echo("next").result(timeout=5) == "next"


# 2. Outcomes the caller cannot unpickle ---------------------------------------------------
@pytest.mark.parametrize("method", ["unloadable", "bad_pair"])
def test_an_outcome_that_cannot_be_unpickled_fails_only_its_call(method, mode_opts):
    with Replies.options(**mode_opts("process")).init() as worker:
        bad = getattr(worker, method)()
        after = worker.echo("still here")
        with pytest.raises(SerializationError, match="Unloadable|BadPair"):
            bad.result(timeout=5)
        assert after.result(timeout=5) == "still here"
        assert worker.echo(2).result(timeout=5) == 2


def test_a_constructor_error_that_cannot_be_unpickled_fails_init(mode_opts):
    outcome = in_thread(lambda: BadPairInit.options(**mode_opts("process")).init(), timeout=15)
    assert isinstance(outcome.get("error"), WorkerInitError), outcome
    assert "BadPair" in str(outcome["error"]) + str(outcome["error"].__cause__)


# 3. An on-demand pool whose constructor raises -----------------------------------------------
@pytest.mark.parametrize("mode", LOCAL_POOL_MODES)
def test_on_demand_constructor_failure_fails_the_call_and_the_pool_serves_on(mode, mode_opts, tmp_path):
    flag = tmp_path / "broken"
    flag.touch()
    pool = FailsWhile.options(**mode_opts(mode, on_demand=True, max_workers=2)).init(str(flag))
    try:
        for future in [pool.echo(i) for i in range(5)]:
            with pytest.raises(WorkerInitError, match="exists"):
                future.result(timeout=10)
        flag.unlink()
        assert pool.echo("fixed").result(timeout=10) == "fixed"
    finally:
        pool.stop(timeout=5)


# 4. resize and stop are bounded ------------------------------------------------------------
@pytest.mark.parametrize("mode", LOCAL_POOL_MODES)
def test_resize_returns_at_once_and_stop_kills_busy_retired_workers(mode, mode_opts):
    pool = Counter.options(**mode_opts(mode, max_workers=2, name=f"resize-{mode}")).init()
    pids = [f.result(timeout=10) for f in pool.broadcast("pid")]
    busy = pool.broadcast("sleep", 8)
    start = time.monotonic()
    pool.resize(1)
    assert time.monotonic() - start < 1
    start = time.monotonic()
    pool.stop(timeout=1)
    assert time.monotonic() - start < 3
    if mode == "process":
        assert all(future.done() for future in busy)
        wait_for(lambda: all(pid_gone(pid) for pid in pids), timeout=5)


def test_stop_kills_a_busy_worker_retired_by_a_health_check(mode_opts):
    pool = Counter.options(
        **mode_opts("process", max_workers=2, health_check="pid", health_check_interval=0.5)
    ).init()
    pid = pool.broadcast("pid")[1].result(timeout=10)
    pool.broadcast("sleep", 8)  # both miss their next health check and are replaced
    wait_for(lambda: pool.get_pool_stats()["health_replacements"] >= 2, timeout=10)
    start = time.monotonic()
    pool.stop(timeout=1)
    assert time.monotonic() - start < 3
    wait_for(lambda: pid_gone(pid), timeout=3)


# 5. The on-demand reaper -------------------------------------------------------------------
@pytest.mark.parametrize("mode", LOCAL_POOL_MODES)
def test_one_slow_on_demand_worker_does_not_hold_up_reaping(mode, mode_opts):
    name = f"reap-{mode}"
    pool = Counter.options(**mode_opts(mode, on_demand=True, max_workers=8, call_timeout=5, name=name)).init()
    try:
        with pytest.raises(CallTimeoutError):
            pool.sleep(30).result(timeout=10)
        assert [f.result(timeout=10) for f in [pool.echo(i) for i in range(4)]] == list(range(4))
        wait_for(lambda: len(workers_named(mode, name)) <= 1, timeout=4)
    finally:
        pool.stop(timeout=1)


# 6. A replacement whose constructor fails ----------------------------------------------------
def test_failing_replacements_back_off_and_fail_the_waiting_calls(mode_opts, tmp_path):
    log = tmp_path / "builds.log"
    pool = FailsAfterFirst.options(**mode_opts("process")).init(str(tmp_path / "marker"), str(log))
    try:
        pid = pool.pid().result(timeout=10)
        running = pool.sleep(5)
        waiting = [pool.echo(i) for i in range(3)]
        time.sleep(0.3)
        start = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            running.result(timeout=5)
        for future in waiting:
            with pytest.raises(WorkerInitError, match="second build refused"):
                future.result(timeout=15)
        elapsed = time.monotonic() - start
        rebuilds = log.read_text().count("built") - 1
        assert 1 <= rebuilds <= 8
        assert rebuilds <= 2 + 4 * elapsed  # at most a few attempts a second
        with pytest.raises(WorkerInitError, match="second build refused"):
            pool.echo("later").result(timeout=5)
    finally:
        pool.stop(timeout=2)


# 7. A pool garbage-collected without stop() ---------------------------------------------------
@pytest.mark.parametrize("mode", LOCAL_POOL_MODES)
def test_a_collected_pool_stops_its_workers(mode, mode_opts):
    name = f"collected-{mode}"

    def forget_a_pool() -> None:
        pool = Counter.options(**mode_opts(mode, max_workers=2, name=name)).init()
        assert pool.echo(1).result(timeout=10) == 1

    forget_a_pool()
    gc.collect()
    wait_for(lambda: not workers_named(mode, name), timeout=10)


def test_a_call_sent_to_a_process_worker_known_dead_fails_instead_of_waiting():
    options = build_options(mode="process")
    client = backend_class("process")(options).spawn(WorkerSpec(Counter, (), {}, options, "dead-worker"))
    client.ready.result(timeout=60)
    os.kill(client.pid(), signal.SIGKILL)
    wait_for(lambda: not client.alive(), timeout=30)
    with pytest.raises(WorkerCrashedError, match="died before echo\\(\\) was sent"):
        client.submit(Call("echo", (1,), {}), Future()).result(timeout=10)
    client.stop(None)


def test_a_sigkilled_driver_leaves_no_process_worker_behind(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "from workers import Counter\n"
        "if __name__ == '__main__':\n"
        "    pool = Counter.options(mode='process', max_workers=2).init()\n"
        "    pids = sorted(set(f.result(timeout=60) for f in [pool.pid() for _ in range(6)]))\n"
        "    pool.sleep(60)  # one worker is busy when the driver dies\n"
        "    open(sys.argv[1], 'w').write(' '.join(map(str, pids)))\n"
        "    time.sleep(0.5)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    pid_file = tmp_path / "pids"
    # No pipes: orphaned workers would hold them open, and waiting for them would hide the leak.
    done = subprocess.run([sys.executable, str(script), str(pid_file)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=120, cwd=str(Path(__file__).parent))
    assert done.returncode == -signal.SIGKILL
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split()[2] != "Z"
