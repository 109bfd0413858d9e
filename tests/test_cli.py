"""`concurry-ray` (and `python -m concurry_ray`) against a real `ray start --head` cluster on loopback.

A second driver process owns a pool, a detached pool with ``limits=[...]`` and a
named LimitSet. While it runs, ``ls`` shows all of them with its job and nothing is
an orphan; after it exits, Ray ends the plain pool, ``gc --dry-run`` lists exactly
the LimitSet's holder (its job ended and nobody is connected) and ``gc`` removes
it, while the detached pool and its holder stay until ``rm``. Run as a script,
this module is that driver: ``python test_cli.py ADDRESS``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).parent / "concurry-ray")
WORKER = {"num_cpus": 0.1}


def own(address: str) -> None:
    """The owner driver: make the pools and the set, say READY with its job id, live until stdin closes."""
    import ray

    from concurry_ray import LimitSet, ResourceLimit, gather
    from workers import Counter

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    budget = LimitSet([ResourceLimit(key="slots", capacity=3)], shared=True, mode="ray", name="cli-budget")
    pool = Counter.options(mode="ray", name="cli-pool", max_workers=2, actor_options=WORKER).init()
    kept = Counter.options(mode="ray", name="cli-kept", lifetime="detached", max_workers=1, actor_options=WORKER,
                           limits=[ResourceLimit(key="slots", capacity=1)]).init()
    gather([pool.echo(i) for i in range(4)] + [kept.echo(0)], timeout=60)
    with budget.acquire({"slots": 1}):  # this process is now a client of the holder
        pass
    print("READY " + ray.get_runtime_context().get_job_id(), flush=True)
    sys.stdin.read()


def cli(env: dict, *args: str, module: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "concurry_ray"] if module else [CLI]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=120)


def cli_json(env: dict, *args: str, module: bool = False):
    """What a successful ``--json`` run printed."""
    run = cli(env, *args, "--json", module=module)
    assert run.returncode == 0, f"{args} exited with {run.returncode}:\n{run.stdout}\n{run.stderr}"
    return json.loads(run.stdout)


def listed(address: str, env: dict) -> dict:
    return {row["name"]: row for row in cli_json(env, "ls", "--address", address)}


def wait_until(check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


@pytest.mark.parametrize("argv", [["--address", "127.0.0.1:1", "ls"], ["ls", "--address", "127.0.0.1:1"],
                                  ["--json", "stats", "x", "--address", "127.0.0.1:1"]])
def test_the_address_counts_before_or_after_the_subcommand(argv, capsys):
    from concurry_ray.cli import main

    assert main(argv) == 3
    assert "cannot reach a Ray cluster at '127.0.0.1:1'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["rm"], ["ls", "--kind", "pool"], ["nope"], ["gc", "--timeout", "x"]])
def test_bad_usage_exits_with_2(argv, capsys):
    from concurry_ray.cli import main

    assert main(argv) == 2
    assert "usage: concurry-ray" in capsys.readouterr().err


@pytest.mark.timeout(600)
def test_an_operator_lists_inspects_and_cleans_a_cluster(ray_head):
    address, env, _ = ray_head
    owner = subprocess.Popen([sys.executable, __file__, address], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        ready = owner.stdout.readline()
        assert ready.startswith("READY "), f"the owner driver did not start: {ready!r}"
        job = ready.split()[1]
        check_while_the_owner_runs(address, env, job)
    finally:
        owner.stdin.close()
        owner.wait(timeout=60)
    check_after_the_owner_exited(address, env, job)


def check_while_the_owner_runs(address: str, env: dict, job: str) -> None:
    rows = listed(address, env)
    assert sorted(rows) == ["cli-budget", "cli-kept", "cli-kept/limits", "cli-pool"]
    assert {n: (r["kind"], r["job"], r["job_ended"], r["alive"], r["detached"], r["workers"]) for n, r in rows.items()} == {
        "cli-pool": ("pool", job, False, True, False, 2),
        "cli-kept": ("pool", job, False, True, True, 1),
        "cli-kept/limits": ("limits", job, False, True, True, None),
        "cli-budget": ("limits", job, False, True, True, None),
    }
    assert rows["cli-kept/limits"]["pool"] == "cli-kept" and rows["cli-budget"]["pool"] is None
    assert rows["cli-budget"]["clients"] == 1
    assert not any(row["orphan"] for row in rows.values())

    assert cli_json(env, "gc", "--dry-run", "--address", address)["orphans"] == []

    pool = cli_json(env, "stats", "cli-pool", "--address", address, module=True)
    assert pool["class"] == "workers.Counter" and len(pool["workers"]) == 2
    assert sum(w["completed"] for w in pool["workers"].values()) == 4
    budget = cli_json(env, "--address", address, "stats", "cli-budget")
    assert budget["limits"]["slots"]["capacity"] == 3 and budget["limits"]["slots"]["used"] == 0
    assert budget["clients"] == 1

    table = cli(env, "ls", "--address", address).stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "JOB", "ALIVE", "WORKERS", "CLIENTS", "DETACHED", "ORPHAN"]
    assert table[-1].split() == ["cli-pool", "pool", job, "yes", "2", "-", "no", "no"]


def check_after_the_owner_exited(address: str, env: dict, job: str) -> None:
    wait_until(lambda: "cli-pool" not in listed(address, env), 30)  # Ray ends a pool with its driver
    rows = listed(address, env)
    assert rows["cli-budget"]["job_ended"] and rows["cli-budget"]["clients"] == 0
    assert [name for name, row in rows.items() if row["orphan"]] == ["cli-budget"]

    dry = cli_json(env, "gc", "--dry-run", "--address", address)
    assert [o["name"] for o in dry["orphans"]] == ["cli-budget"] and dry["dry_run"]
    assert "cli-budget" in listed(address, env)  # a dry run removes nothing
    done = cli(env, "gc", "--address", address)
    assert done.returncode == 0 and done.stdout.strip() == f"removed limits 'cli-budget' (job {job}, ended)"
    assert sorted(listed(address, env)) == ["cli-kept", "cli-kept/limits"]  # made to outlive its driver

    removed = cli_json(env, "rm", "cli-kept", "--address", address)
    assert removed == {"removed": "cli-kept", "kind": "pool", "killed": 0}
    wait_until(lambda: not listed(address, env), 15)  # the pool's holder went with it

    again = cli(env, "rm", "cli-kept", "--address", address)
    assert again.returncode == 1 and "no pool or limits holder named 'cli-kept'" in again.stderr
    assert cli(env, "stats", "--address", address).returncode == 2  # NAME missing
    assert cli(env, "ls", "--address", "127.0.0.1:1").returncode == 3  # nothing listens there


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    own(sys.argv[1])
