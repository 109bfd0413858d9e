"""Ray metrics of pools and limit sets, read back from a real Ray metrics endpoint (Prometheus text).

A driver process on a `ray start --head` cluster runs a thread, a process and a Ray
pool, each named and with ``limits=[...]``, makes known numbers of calls, and waits
while the test scrapes the head's metrics port. Run as a script, this module is
that driver: ``python test_metrics.py ADDRESS``.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

MODES = ("thread", "process", "ray")
ECHOES, FAILURES, HOLDS = 6, 2, 3


def drive(address: str) -> None:
    """The driver: per mode, ECHOES calls that succeed, FAILURES that raise and HOLDS that take a slot."""
    import ray

    from concurry_ray import ResourceLimit, wait
    from workers import Counter

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    pools = [Counter.options(mode=mode, name=f"met-{mode}", max_workers=2, actor_options={"num_cpus": 0.1},
                             limits=[ResourceLimit(key="slots", capacity=2)]).init() for mode in MODES]
    for pool in pools:
        calls = [pool.echo(i) for i in range(ECHOES)] + [pool.fail("x") for _ in range(FAILURES)]
        calls += [pool.slots_in_use() for _ in range(HOLDS)]
        wait(calls, timeout=60)
    print("READY", flush=True)
    sys.stdin.read()
    for pool in pools:
        pool.stop()


def scrape(port: int) -> dict:
    """Our samples on the metrics page: {(name, sorted label items): value}, summed over the labels Ray
    adds (each process exports its own figures: two workers' waits are two samples)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "concurry" in sample.name:
                labels = {k: v for k, v in sample.labels.items() if k in ("pool", "method", "outcome", "limit_set", "key", "le")}
                key = (sample.name, tuple(sorted(labels.items())))
                samples[key] = samples.get(key, 0) + sample.value
    return samples


def value(samples: dict, name: str, **labels: str):
    return samples.get((name, tuple(sorted(labels.items()))))


def expected(mode: str) -> dict:
    pool = f"met-{mode}"
    figures = {
        ("ray_concurry_calls_total", (("method", "echo"), ("outcome", "ok"), ("pool", pool))): ECHOES,
        ("ray_concurry_calls_total", (("method", "fail"), ("outcome", "error"), ("pool", pool))): FAILURES,
        ("ray_concurry_calls_total", (("method", "slots_in_use"), ("outcome", "ok"), ("pool", pool))): HOLDS,
        ("ray_concurry_call_seconds_count", (("method", "echo"), ("pool", pool))): ECHOES,
        ("ray_concurry_workers", (("pool", pool),)): 2,
        ("ray_concurry_in_flight", (("pool", pool),)): 0,
        ("ray_concurry_queued", (("pool", pool),)): 0,
        ("ray_concurry_limit_used", (("key", "slots"), ("limit_set", f"{pool}/limits"))): 0,
    }
    if mode != "process":  # a process pool's workers are not Ray processes: they export nothing
        figures[("ray_concurry_limit_wait_seconds_count", (("key", "slots"), ("limit_set", f"{pool}/limits")))] = HOLDS
    return figures


@pytest.mark.timeout(300)
def test_pools_and_limit_sets_export_ray_metrics_in_every_mode(ray_head):
    driver = subprocess.Popen([sys.executable, __file__, ray_head.address], env=ray_head.env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "READY"
        wanted = {key: figure for mode in MODES for key, figure in expected(mode).items()}
        deadline, seen = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            seen = scrape(ray_head.metrics_port)
            if all(seen.get(key) == figure for key, figure in wanted.items()):
                break
            time.sleep(1)
        assert {k: seen.get(k) for k in wanted} == wanted
        latency = value(seen, "ray_concurry_call_seconds_bucket", pool="met-ray", method="echo", le="+Inf")
        assert latency == ECHOES
    finally:
        driver.stdin.close()
        driver.wait(timeout=60)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    drive(sys.argv[1])
