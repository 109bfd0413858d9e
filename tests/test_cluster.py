"""The cluster recipe end to end: a loopback Ray head of our own, `ray job submit` of the example.

The head gets its own temp dir and free ports (GCS, dashboard and every agent port) so it
never meets the session's runtime or the other test sessions on this machine, and it is
stopped by the process ids of that temp dir (cluster/stop_head.sh), never `ray stop`.

The scripts' own checks (a private head dir, one Ray release for driver and head) run
against a stand-in ray CLI that records what it is asked, without Ray.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import free_ports

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
RAY_VERSION = (CLUSTER / "ray-version").read_text().strip()
FAKE_RAY = """#!/usr/bin/env bash
if [[ "$1" == --version ]]; then echo "ray, version $FAKE_RAY_VERSION"; exit 0; fi
echo "$*" >> "$FAKE_RAY_LOG"
"""

needs_ray_cli = pytest.mark.skipif(not (BIN / "ray").exists(), reason="the ray CLI is not next to this python")


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
        RAY_VERSION=importlib.metadata.version("ray"),  # this venv's Ray, whichever of the range it is
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


@needs_ray_cli
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


@needs_ray_cli
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


def test_rayjob_manifest_runs_the_same_job_with_token_auth():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayJob")
    spec = manifest["spec"]
    assert spec["entrypoint"] == "python examples/pool_job.py"
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"].endswith(".zip")
    assert any(p.startswith("concurry-ray @ ") for p in runtime_env["pip"])
    # the dashboard listens on all addresses of the head pod, so it must want the cluster's token
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert cluster["authOptions"] == {"mode": "token"}
    # (its Ray release is checked in test_versions.py)


@pytest.fixture
def fake_ray(tmp_path):
    """Environment for the cluster scripts with a stand-in ray CLI of the recipes' Ray release."""
    ray = tmp_path / "bin" / "ray"
    ray.parent.mkdir()
    ray.write_text(FAKE_RAY)
    ray.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_VERSION", "RAY_ADDRESS", "RAY_JOB_ADDRESS", "RAY_DASHBOARD_PORT")}
    env.update(RAY=str(ray), PYTHON=sys.executable, FAKE_RAY_VERSION=RAY_VERSION,
               FAKE_RAY_LOG=str(tmp_path / "ray.log"), RAY_HEAD_DIR=str(tmp_path / "head"))
    return env


def asked(env: dict) -> str:
    """What the stand-in ray CLI was asked to do (one line per call)."""
    log = Path(env["FAKE_RAY_LOG"])
    return log.read_text() if log.exists() else ""


def test_start_head_makes_a_private_dir_and_submit_job_uses_what_it_recorded(fake_ray):
    started = run("start_head.sh", fake_ray, 60)
    assert started.returncode == 0, started.stdout + started.stderr
    head_dir = Path(fake_ray["RAY_HEAD_DIR"])
    assert head_dir.stat().st_mode & 0o777 == 0o700
    settings = (head_dir / "head.env").read_text()
    assert f"export RAY_VERSION={RAY_VERSION}\n" in settings
    assert f"--temp-dir={head_dir}/ray " in asked(fake_ray) and "--dashboard-host=127.0.0.1 " in asked(fake_ray)
    port = re.search(r"RAY_DASHBOARD_PORT=(\d+)", settings).group(1)

    submitted = run("submit_job.sh", fake_ray, 60)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert f"job submit --address http://127.0.0.1:{port} " in asked(fake_ray)


def test_the_scripts_refuse_a_ray_cli_of_another_release(fake_ray):
    other = dict(fake_ray, FAKE_RAY_VERSION="2.0.0")
    for script in ("start_head.sh", "submit_job.sh"):
        refused = run(script, other, 60)
        assert refused.returncode != 0
        assert f"is Ray 2.0.0, but this head runs Ray {RAY_VERSION}" in refused.stderr
    assert asked(other) == "" and not Path(other["RAY_HEAD_DIR"]).exists()
    # a head of that release, asked for by name
    assert run("start_head.sh", dict(other, RAY_VERSION="2.0.0"), 60).returncode == 0
    # submit_job.sh holds the CLI to the release the head recorded, whatever RAY_VERSION says
    refused = run("submit_job.sh", dict(fake_ray, RAY_VERSION=RAY_VERSION), 60)
    assert refused.returncode != 0 and "but this head runs Ray 2.0.0" in refused.stderr


def someone_elses(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a directory of another user needs root")
    os.chown(path, 65534, 65534)  # nobody


@pytest.mark.parametrize("setup", [
    pytest.param(lambda path: path.chmod(0o777), id="world-writable"),
    pytest.param(lambda path: path.chmod(0o750), id="group-readable"),
    pytest.param(someone_elses, id="someone-elses"),
])
def test_the_scripts_refuse_a_head_dir_that_is_not_private(fake_ray, tmp_path, setup):
    """Another local user may have made the default /tmp dir first, or be able to write into it:
    neither script starts a head in it nor sources its head.env."""
    head_dir = Path(fake_ray["RAY_HEAD_DIR"])
    head_dir.mkdir(mode=0o700)
    sourced = tmp_path / "head.env was sourced"
    (head_dir / "head.env").write_text(f"touch '{sourced}'\n")
    setup(head_dir)
    for script in ("start_head.sh", "submit_job.sh"):
        refused = run(script, fake_ray, 60)
        assert refused.returncode != 0, refused.stdout
        assert str(head_dir) in refused.stderr
    assert asked(fake_ray) == "", "ray was run"
    assert not sourced.exists()


def test_the_scripts_refuse_a_head_dir_that_is_a_symlink(fake_ray, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    Path(fake_ray["RAY_HEAD_DIR"]).symlink_to(target)
    for script in ("start_head.sh", "submit_job.sh"):
        refused = run(script, fake_ray, 60)
        assert refused.returncode != 0 and "is not a directory" in refused.stderr
    assert asked(fake_ray) == ""
