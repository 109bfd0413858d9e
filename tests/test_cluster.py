"""The cluster recipe end to end: a loopback Ray head of our own, `ray job submit` of the example.

The head gets its own temp dir and free ports (GCS, dashboard and every agent port) so it
never meets the session's runtime or the other test sessions on this machine, and it is
stopped by the process ids of that temp dir (cluster/stop_head.sh), never `ray stop`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
BIN = Path(sys.executable).parent
PORTS = [
    "RAY_HEAD_PORT",
    "RAY_DASHBOARD_PORT",
    "RAY_AGENT_LISTEN_PORT",
    "RAY_AGENT_GRPC_PORT",
    "RAY_RUNTIME_ENV_AGENT_PORT",
    "RAY_METRICS_PORT",
    "RAY_CLIENT_SERVER_PORT",
    "RAY_NODE_MANAGER_PORT",
    "RAY_OBJECT_MANAGER_PORT",
]
EXPECTED_SUM = sum(i * i for i in range(50))

pytestmark = pytest.mark.skipif(not (BIN / "ray").exists(), reason="the ray CLI is not next to this python")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all bound at once, so none repeats)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def run(script: str, env: dict, timeout: float, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER / script), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def head():
    """A Ray head on 127.0.0.1, started by cluster/start_head.sh; stopped by its own pids."""
    head_dir = tempfile.mkdtemp(prefix="cch-", dir="/tmp")  # short: Ray puts unix sockets in it
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHON=sys.executable,
        RAY=str(BIN / "ray"),
        RAY_HEAD_DIR=head_dir,
        RAY_HEAD_CPUS="2",
        **dict(zip(PORTS, map(str, free_ports(len(PORTS))))),
    )
    env.pop("RAY_ADDRESS", None)
    try:
        started = run("start_head.sh", env, 90)
        assert started.returncode == 0, f"start_head.sh failed:\n{started.stdout}\n{started.stderr}"
        yield env
    finally:
        stopped = run("stop_head.sh", env, 60)
        left = run("stop_head.sh", env, 30, "--list").stdout.split()
        shutil.rmtree(head_dir, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not left, f"processes of the test head still running: {left}"


def test_ray_job_submit_runs_the_pool_example_on_a_loopback_head(head):
    job = run("submit_job.sh", head, 120)
    output = job.stdout + job.stderr
    assert job.returncode == 0, f"ray job submit failed:\n{output}"
    assert re.search(r"Job '\S+' succeeded", output), output
    result = re.search(r"pool_job: sum=(\d+) calls=(\d+) workers=(\d+)", output)
    assert result, f"no result line in the job's output:\n{output}"
    assert tuple(map(int, result.groups())) == (EXPECTED_SUM, 50, 2)
    shipped = re.search(r"pool_job: concurry_ray from (\S+)", output)
    assert shipped and "working_dir_files" in shipped.group(1), "the job did not run the shipped checkout"


def test_stop_head_leaves_other_ray_processes_alone(head):
    """The pids stop_head.sh would signal are this head's: marked by start_head.sh, or below one that is."""
    marker = f"CONCURRY_RAY_HEAD={head['RAY_HEAD_DIR']}".encode()

    def ours(pid: str) -> bool:
        proc = Path(f"/proc/{pid}")
        return marker in (proc / "environ").read_bytes().split(b"\0") or (
            head["RAY_HEAD_DIR"].encode() in (proc / "cmdline").read_bytes()
        )

    listed = run("stop_head.sh", head, 30, "--list").stdout.split()
    assert len(listed) >= 5, f"the head's processes were not found: {listed}"
    for pid in listed:
        try:
            chain = [pid]
            while chain[-1] not in ("0", "1"):
                chain.append(Path(f"/proc/{chain[-1]}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert any(ours(p) for p in chain[:-1]), f"pid {pid} is not this head's"
        except FileNotFoundError:
            continue  # exited meanwhile


def test_rayjob_manifest_runs_the_same_job():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    assert spec["entrypoint"] == "python examples/pool_job.py"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"].endswith(".zip")
    assert any(p.startswith("concurry-ray @ ") for p in runtime_env["pip"])
    cluster = spec["rayClusterSpec"]
    ray_version = cluster["rayVersion"]
    images = [c["image"] for c in cluster["headGroupSpec"]["template"]["spec"]["containers"]]
    for group in cluster["workerGroupSpecs"]:
        images += [c["image"] for c in group["template"]["spec"]["containers"]]
    assert all(image.split(":")[1].startswith(ray_version) for image in images)
    assert f"ray[default]=={ray_version}" in (REPO / "pyproject.toml").read_text()
