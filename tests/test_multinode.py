"""The Ray control plane survives faults in a multi-node cluster (several raylets on this machine).

Run as a script, this module is the driver: it builds a ``ray.cluster_utils.Cluster``
of three one-CPU nodes, plays the scenarios below against it and prints one JSON
line of what it saw; the test asserts on that. A subprocess keeps the cluster
apart from the test session's own Ray runtime.

- **A node is lost**: the pool's workers need 0.6 CPU each, so two never share a
  node. The node of one worker is removed; the calls made around the loss all
  settle, and the pool is back at full size on the nodes that remain.
- **The balancer is killed**: calls are served again, by new workers, within 30 s.
- **A named limits holder is killed** while two pools hold its slots: no moment
  has more holders than the capacity, before or after Ray restarts it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_ports, stop_processes_of

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SLOTS = 2
SERVED_WITHIN = 30.0


def _node_args(**extra) -> dict:
    """Ports of a node's own agents, so this cluster never meets the test session's runtime."""
    ports = ("dashboard_agent_listen_port", "metrics_export_port", "runtime_env_agent_port")
    return {"num_cpus": 1, **dict(zip(ports, free_ports(len(ports)))), **extra}


def _settled_within(futures: list, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    return all(_settles(f, deadline) for f in futures)


def _settles(future, deadline: float) -> bool:
    try:
        future.result(timeout=max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        return future.done()
    except Exception:  # a crash is an outcome: the call settled
        pass
    return True


def _wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def lose_a_node(cluster) -> dict:
    """Remove the node of worker 0; report where the workers live before and after."""
    from concurry_ray import gather
    from multinode_workers import Placed

    pool = Placed.options(mode="ray", max_workers=2, actor_options={"num_cpus": 0.6}).init()
    try:
        before = sorted(gather(pool.broadcast("node"), timeout=60))
        doomed = next(node for node in cluster.worker_nodes if node.node_id in before)
        made = [pool.node(i) for i in range(20)]
        cluster.remove_node(doomed)
        made += [pool.node(i) for i in range(20)]
        settled = _settled_within(made, SERVED_WITHIN)

        def back_to_full_size() -> bool:
            try:
                placed = gather(pool.broadcast("node"), timeout=5)
            except Exception:
                return False
            return len(placed) == 2 and doomed.node_id not in placed and len(set(placed)) == 2

        restored = _wait(back_to_full_size, SERVED_WITHIN)
        after = sorted(gather(pool.broadcast("node"), timeout=30))
        return {"before": before, "after": after, "removed": doomed.node_id, "settled": settled,
                "restored": restored, "live_nodes": sorted(nodes_alive())}
    finally:
        pool.stop(timeout=10)


def nodes_alive() -> list[str]:
    import ray

    return [node["NodeID"] for node in ray.nodes() if node["Alive"]]


def kill_the_balancer() -> dict:
    """Kill the pool's balancer actor (Ray restarts it) and time until calls are served again."""
    import ray

    from concurry_ray import WorkerCrashedError, gather
    from multinode_workers import Placed

    pool = Placed.options(mode="ray", max_workers=2, actor_options={"num_cpus": 0.1}).init()
    try:
        old_workers = set(gather(pool.broadcast("pid"), timeout=60))
        ray.kill(pool._members.balancer, no_restart=False)  # its workers die with it
        killed_at, made = time.monotonic(), []

        def served() -> bool:  # by the workers of the restarted balancer
            future = pool.pid()
            made.append(future)
            try:
                return future.result(timeout=5) not in old_workers
            except (WorkerCrashedError, TimeoutError):
                return False

        served_again = _wait(served, SERVED_WITHIN)
        return {"served_again": served_again, "seconds": round(time.monotonic() - killed_at, 2),
                "settled": _settled_within(made, SERVED_WITHIN)}
    finally:
        pool.stop(timeout=10)


def kill_the_limits_holder() -> dict:
    """Two pools hold the slots of a named set while its holder actor is killed and restarted."""
    import ray

    from concurry_ray import LimitSet, ResourceLimit, gather
    from concurry_ray.ray.limits_holder import NAMESPACE
    from multinode_workers import Placed

    limits = LimitSet([ResourceLimit("slots", SLOTS)], shared=True, mode="ray", name="multinode-slots")
    pools = [Placed.options(mode="ray", max_workers=2, actor_options={"num_cpus": 0.1}, limits=limits).init()
             for _ in range(2)]
    try:
        first = [p.hold(0.05) for p in pools for _ in range(20)]
        time.sleep(0.5)
        ray.kill(ray.get_actor("multinode-slots", namespace=NAMESPACE), no_restart=False)
        second = [p.hold(0.05) for p in pools for _ in range(20)]
        outcomes = gather(first + second, return_exceptions=True, timeout=120)
        spans = [o for o in outcomes if isinstance(o, list)]
        errors = sorted({type(o).__name__ for o in outcomes if not isinstance(o, list)})
        return {"spans": len(spans), "most_at_once": _most_at_once(spans), "capacity": SLOTS, "errors": errors}
    finally:
        for p in pools:
            p.stop(timeout=10)
        limits.remove()


def _most_at_once(spans: list) -> int:
    """The largest number of [start, end) spans that overlap (wall-clock times from one machine)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=_node_args(include_dashboard=False))
    try:
        for _ in range(2):
            cluster.add_node(**_node_args())
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        report = {"node_loss": lose_a_node(cluster), "balancer": kill_the_balancer(),
                  "limits": kill_the_limits_holder()}
        print("REPORT " + json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.timeout(420)
def test_a_multi_node_cluster_survives_node_loss_balancer_and_holder_kills():
    ray_tmp = tempfile.mkdtemp(prefix="cmn-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp,
           "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    try:
        run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=400)
    finally:
        stop_processes_of(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT ")]
    assert run.returncode == 0 and lines, (run.stdout[-3000:], run.stderr[-3000:])
    report = json.loads(lines[-1][len("REPORT "):])

    lost = report["node_loss"]
    assert len(set(lost["before"])) == 2, lost  # 0.6 CPU each: one worker per node
    assert lost["settled"], lost
    assert lost["restored"], lost
    assert lost["removed"] not in lost["after"] and len(set(lost["after"])) == 2, lost
    assert set(lost["after"]) <= set(lost["live_nodes"]), lost

    assert report["balancer"]["served_again"] and report["balancer"]["settled"], report["balancer"]

    limits = report["limits"]
    assert limits["spans"] >= 20, limits
    assert limits["most_at_once"] <= limits["capacity"], limits


if __name__ == "__main__":
    main()
