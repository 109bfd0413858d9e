"""Shared fixtures: one Ray runtime per test session, and mode parametrisation helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray workers and worker processes must import the test modules that define worker classes.
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
for path in (str(TESTS), str(REPO)):
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)

from workers import Counter  # noqa: E402  (after the path set-up above)

ALL_MODES = ["sync", "asyncio", "thread", "process", "ray"]
POOL_MODES = ["thread", "process", "ray"]
RAY_ACTOR = {"num_cpus": 0.1}


def wait_for(predicate, timeout: float = 20.0) -> None:
    """Wait until predicate() is true, failing the test after ``timeout`` seconds
    (for figures that arrive in the background, such as Ray pool stats)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def actor_gone(actor, timeout: float = 30.0) -> bool:
    """Whether the Ray ``actor`` is dead: a call to it fails with RayActorError (within ``timeout``)."""
    import ray

    try:
        ray.get(actor.__ray_ready__.remote(), timeout=timeout)
    except ray.exceptions.RayActorError:
        return True
    return False


def pids_using(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (our cluster's own temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop_processes_of(marker: str) -> None:
    """TERM, then KILL, every process whose command line mentions ``marker`` (e.g. a test cluster's temp dir)."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        for pid in pids_using(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids_using(marker) and time.monotonic() < deadline:
            time.sleep(0.1)


class Head(NamedTuple):
    """A test cluster's head: its address, the environment for its drivers, its Prometheus port."""

    address: str
    env: dict
    metrics_port: int


def free_port() -> int:
    """A TCP port free on loopback right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports free on loopback right now (held open together while chosen,
    so that no two are the same)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture
def ray_head():
    """A separate Ray head (``ray start --head``) on loopback with its own temp dir and ports, and a
    dashboard (Ray's state API), for tests with several driver processes: yields a ``Head`` (its
    address, the env for its drivers, its metrics port); stopped by the pids it started. Its
    processes hand metrics to Ray's agent every second."""
    temp_dir = tempfile.mkdtemp(prefix="crl-", dir="/tmp")  # short: Ray's socket paths live under it
    inherited = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env = {**inherited, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_metrics_report_interval_ms": "1000", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    flags = ("--port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
             "--metrics-export-port", "--ray-client-server-port", "--node-manager-port", "--object-manager-port",
             "--dashboard-port")
    ports = dict(zip(flags, free_ports(len(flags))))
    port = ports.pop("--port")
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={temp_dir}",
               "--disable-usage-stats", *(f"{flag}={value}" for flag, value in ports.items())]
    try:
        subprocess.run(command, env=env, check=True, timeout=90, capture_output=True)
        yield Head(f"127.0.0.1:{port}", env, ports["--metrics-export-port"])
    finally:
        stop_processes_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_runtime():
    """Start one local Ray runtime for the whole session and shut it down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, resources={"test_slot": 2}, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def mode_opts(request):
    """Options for a test parametrised with ``mode``: small Ray actors, Ray started lazily."""

    def build(mode: str, **extra):
        if mode == "ray":
            request.getfixturevalue("ray_runtime")
            extra.setdefault("actor_options", RAY_ACTOR)
        return {"mode": mode, **extra}

    return build


@pytest.fixture(scope="module")
def shared_workers():
    """One Counter per mode for the whole test module (a Ray actor takes about a second to start)."""
    workers: dict = {}
    yield workers
    for worker in workers.values():
        worker.stop(timeout=10)


@pytest.fixture
def w(mode, mode_opts, shared_workers):
    """The test module's Counter for ``mode``; tests using it must not depend on its state."""
    if mode not in shared_workers:
        shared_workers[mode] = Counter.options(**mode_opts(mode)).init()
    worker = shared_workers[mode]
    assert worker.echo("ping").result(timeout=60) == "ping"
    return worker
