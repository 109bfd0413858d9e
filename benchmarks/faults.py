"""Fault injection: what dies, what is lost and what is left behind, one table per mode.

    python benchmarks/faults.py [--modes MODE ...] [--quick] [--soak N]

Per mode (``process``, ``ray``), on pools of ``WORKERS`` workers:

* **chaos run**: a steady stream of short calls (``IN_FLIGHT`` at a time) while a
  worker process, picked from ``broadcast("pid")``, is SIGKILLed every 0.5-1 s
  (Ray actors are processes on this machine too). After each kill the script
  waits until the pool is back at full size, so every failure belongs to the
  kill before it. Each call appends its id to a file when it starts, so a call
  that ran twice shows.
* **crash-retry run**: the same with ``num_retries=2, retry_on=[WorkerCrashedError]``.
* **soak**: ``--soak`` trivial calls (with a ``call_timeout`` and pool-owned limits,
  so that their registries are used), the driver's RSS sampled every 10k calls.
* **named limit** (Ray only): workers take one call after another of a shared,
  named ``CallLimit`` while its holder actor is killed and restarted by Ray.

Then, once every pool has stopped: the processes, actors and threads that are
left, and the library's own registries in this process. Every wait is bounded.
The script exits with status 1, naming the figures, when one that must be 0 (or
at most 1.00) is not. A local Ray runtime (2 CPUs, no dashboard) is started for
the ray mode only and shut down after it.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import gc
import itertools
import logging
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Optional

import bench_env  # this folder is the script's own, first on sys.path

bench_env.prepare()  # before the worker module is imported

from fault_workers import Taker, Victim  # noqa: E402  (after the path set-up above)

from concurry_ray import CallLimit, LimitSet, ResourceLimit, WorkerCrashedError, timers  # noqa: E402

MODES = ["process", "ray"]
WORKERS = 4
CALL_SECONDS = 0.005
IN_FLIGHT = 2 * WORKERS  # calls kept in flight by the stream: two per worker, so a killed worker is mid-call
KILL_PAUSE = (0.5, 1.0)  # seconds between the pool being back at full size and the next kill
PROBE_TIMEOUT = 10.0  # seconds a broadcast("pid") may take
RECOVERY_BOUND = 60.0  # seconds a pool gets to be back at full size after a kill
SETTLE_BOUND = 60.0  # seconds every call gets to settle after a run (one that does not is lost)
STOP_TIMEOUT = 30.0
LEFTOVER_WAIT = 10.0  # seconds for processes and threads to end after the last stop
POLL_SECONDS = 0.02
SOAK_STEP = 10_000  # calls between two RSS samples
SOAK_CALL_TIMEOUT = 60.0
LIMIT_CAPACITY = 50  # calls per 1 s window of the named limit
LIMIT_WORKERS = 2  # few takers, so each waits little and its span pins its grant down closely
LIMIT_NAME = "faults-benchmark-calls"
RAY_ACTOR_OPTIONS = {"num_cpus": 0.1}


@dataclass
class Sizes:
    """How much each part of a mode does."""

    kills: int
    retry_kills: int
    soak: int
    limit_seconds: float
    holder_kill_after: float


def sizes(quick: bool, soak: int) -> Sizes:
    """Full sizes, or ``--quick`` ones (under a minute per mode)."""
    return Sizes(3, 2, soak, 5.0, 1.5) if quick else Sizes(10, 5, soak, 10.0, 3.0)


# ----- calls and their outcomes -----------------------------------------------------------------
class Outcome:
    """One call: its future, when it settled (done-callback time) and whether its worker crashed."""

    __slots__ = ("future", "crashed", "at")

    def __init__(self, future: cf.Future) -> None:
        self.future = future
        self.crashed = False
        self.at: Optional[float] = None
        future.add_done_callback(self._done)

    def _done(self, future: cf.Future) -> None:
        self.crashed = not future.cancelled() and isinstance(future.exception(), WorkerCrashedError)
        self.at = time.monotonic()


@dataclass
class Record:
    """The calls of one run (the stream's, and the probes that look for live workers) and its kills."""

    calls: list = field(default_factory=list)
    probes: list = field(default_factory=list)
    kills: list = field(default_factory=list)  # time.monotonic() just before each SIGKILL
    recoveries: list = field(default_factory=list)  # seconds from each kill to full size; None: not within the bound
    settled: int = 0  # calls seen settled and not kept (the soak keeps only the calls still pending)

    def track(self, future: cf.Future, probe: bool = False) -> cf.Future:
        """Follow ``future`` until it settles."""
        (self.probes if probe else self.calls).append(Outcome(future))
        return future

    def futures(self) -> list:
        """Every call and probe kept."""
        return [o.future for o in self.calls + self.probes]


def outcome_of(future: cf.Future) -> Any:
    """The result of a settled future, or its error (a CancelledError if it was cancelled)."""
    if future.cancelled():
        return cf.CancelledError()
    return future.exception() or future.result(timeout=SETTLE_BOUND)


def unsettled(records: list) -> tuple[int, int]:
    """(calls that did not settle within SETTLE_BOUND, calls submitted) over ``records``."""
    futures = [f for record in records for f in record.futures()]
    _, not_done = cf.wait(futures, timeout=SETTLE_BOUND)
    return len(not_done), len(futures) + sum(record.settled for record in records)


class Stream:
    """A steady stream of short calls into a pool, ``IN_FLIGHT`` at a time, from a thread of its own."""

    def __init__(self, pool: Any, record: Record, log_path: Optional[str] = None) -> None:
        self._pool = pool
        self._record = record
        self._log_path = log_path
        self._room = threading.Semaphore(IN_FLIGHT)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-stream", daemon=True)

    def _run(self) -> None:
        for call_id in itertools.count():
            # No room for SETTLE_BOUND seconds means calls do not settle: they are counted as lost.
            if not self._room.acquire(timeout=SETTLE_BOUND) or self._stopping.is_set():
                return
            future = self._record.track(self._pool.work(CALL_SECONDS, call_id, self._log_path))
            future.add_done_callback(lambda _: self._room.release())

    def __enter__(self) -> "Stream":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stopping.set()
        self._thread.join(SETTLE_BOUND)


# ----- killing workers ----------------------------------------------------------------------------
def live_pids(pool: Any, record: Record) -> set:
    """The pids of the workers that answer ``pid()`` within PROBE_TIMEOUT."""
    probes = [record.track(f, probe=True) for f in pool.broadcast("pid")]
    done, _ = cf.wait(probes, timeout=PROBE_TIMEOUT)
    return {pid for pid in map(outcome_of, done) if not isinstance(pid, BaseException)}


def back_to_full(pool: Any, record: Record, victim: int, killed_at: float) -> Optional[float]:
    """Seconds from ``killed_at`` until all WORKERS workers answer and none is ``victim``; None past the bound."""
    while time.monotonic() - killed_at < RECOVERY_BOUND:
        pids = live_pids(pool, record)
        if len(pids) == WORKERS and victim not in pids:
            return time.monotonic() - killed_at
        time.sleep(POLL_SECONDS)
    return None


def inject_kills(pool: Any, record: Record, count: int) -> None:
    """SIGKILL a random worker ``count`` times, each once the pool is back at full size and 0.5-1 s have passed."""
    for _ in range(count):
        time.sleep(random.uniform(*KILL_PAUSE))
        pids = live_pids(pool, record)
        if not pids:
            return  # nothing left to kill; the recoveries recorded so far tell why
        victim = random.choice(sorted(pids))
        record.kills.append(time.monotonic())
        os.kill(victim, signal.SIGKILL)
        record.recoveries.append(back_to_full(pool, record, victim, record.kills[-1]))


def crash_delays(record: Record) -> list:
    """For each kill, seconds until the first call failed with WorkerCrashedError (kills that failed no call are left out)."""
    failures = sorted(o.at for o in record.calls if o.crashed and o.at is not None)
    delays = []
    for killed, next_kill in zip(record.kills, record.kills[1:] + [math.inf]):
        first = next((at for at in failures if killed <= at < next_kill), None)
        if first is not None:
            delays.append(first - killed)
    return delays


# ----- the runs -------------------------------------------------------------------------------------
def pool_options(mode: str, **extra: Any) -> dict:
    """Options of a pool of ``mode``: WORKERS workers, small Ray actors."""
    options = {"mode": mode, "max_workers": WORKERS, **extra}
    if mode == "ray":
        options["actor_options"] = RAY_ACTOR_OPTIONS
    return options


def soak_options(mode: str) -> dict:
    """The soak pool's options: a call_timeout (timer entries) and pool-owned limits (a holder)."""
    return pool_options(mode, call_timeout=SOAK_CALL_TIMEOUT, limits=[ResourceLimit("slots", WORKERS)])


def started(cls: type, options: dict) -> ContextManager[Any]:
    """A pool of ``cls``, stopped (within STOP_TIMEOUT) on the way out."""
    return bench_env.started(cls, options, STOP_TIMEOUT)


def warm_up(mode: str) -> None:
    """Start and stop a pool with the soak's options once, so that what the library and its
    runtime start once per process (forkserver, timer thread, Ray's own threads) is there
    before the snapshot that leftovers are compared with."""
    with started(Victim, soak_options(mode)) as pool:
        cf.wait([pool.echo(i) for i in range(WORKERS)], timeout=SETTLE_BOUND)


@dataclass
class KillRun:
    """A stream under kills: its record, the pool's crash retries and the calls that ran more than once."""

    record: Record
    crash_retries: int
    run_twice: int


def kill_run(mode: str, kills: int, **extra: Any) -> KillRun:
    """The stream under ``kills`` kills, in a pool with options ``extra``; every execution is logged to a file."""
    record = Record()
    with tempfile.TemporaryDirectory(prefix="faults-") as folder:
        log_path = os.path.join(folder, "executions")
        with started(Victim, pool_options(mode, **extra)) as pool:
            with Stream(pool, record, log_path):
                inject_kills(pool, record, kills)
            unsettled([record])  # wait (bounded) for the last calls and their retries before reading the count
            retries = pool.get_pool_stats()["load_balancer"]["crash_retries"]
        run_twice = executed_more_than_once(log_path)
    return KillRun(record, retries, run_twice)


def executed_more_than_once(log_path: str) -> int:
    """How many call ids appear more than once in the execution log."""
    if not os.path.exists(log_path):
        return 0
    executions = collections.Counter(Path(log_path).read_text().split())
    return sum(1 for n in executions.values() if n > 1)


def rss_mb() -> float:
    """This process's resident set size in MB (from /proc/self/statm)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def slope(points: list) -> float:
    """The least-squares slope of (x, y) points."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    variance = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / variance if variance else 0.0


def soak(mode: str, calls: int) -> tuple[Record, float]:
    """``calls`` trivial calls in batches, RSS sampled after each; (record, MB per 10k calls)."""
    step = min(SOAK_STEP, max(1, calls // 5))
    record = Record()
    with started(Victim, soak_options(mode)) as pool:
        batch(pool, record, step)  # warm caches and allocator before the first sample
        samples = [(0, rss_mb())]
        for done in range(step, calls + 1, step):
            batch(pool, record, step)
            samples.append((done, rss_mb()))
    return record, slope(samples) * 10_000


def batch(pool: Any, record: Record, count: int) -> None:
    """Submit ``count`` calls and wait (bounded) for all of them; keep only those still pending
    (keeping them all would grow the very RSS being measured), then collect garbage."""
    futures = [pool.echo(i) for i in range(count)]
    _, pending = cf.wait(futures, timeout=SETTLE_BOUND)
    record.settled += count - len(pending)
    for future in pending:
        record.track(future)
    del futures
    gc.collect()


@dataclass
class LimitRun:
    """The named-limit run: its record, the most grants in one window, the grants asked for
    after the kill, and the errors workers met."""

    record: Record
    most: int
    after_kill: int
    errors: collections.Counter


def limit_run(sizes: Sizes) -> LimitRun:
    """Takers draw from a named CallLimit while its holder actor is killed (Ray restarts it)."""
    import ray

    from concurry_ray.ray.naming import NAMESPACE

    record = Record()
    limits = LimitSet([CallLimit(window_seconds=1, capacity=LIMIT_CAPACITY)], shared=True, mode="ray", name=LIMIT_NAME)
    try:
        options = pool_options("ray", max_workers=LIMIT_WORKERS, limits=limits)
        with started(Taker, options) as pool:
            start = time.time()
            futures = [record.track(f) for f in pool.broadcast("take", start + sizes.limit_seconds)]
            time.sleep(sizes.holder_kill_after)
            killed_at = time.time()
            ray.kill(ray.get_actor(LIMIT_NAME, namespace=NAMESPACE), no_restart=False)
            done, _ = cf.wait(futures, timeout=sizes.limit_seconds + SETTLE_BOUND)
            outcomes = [outcome_of(f) for f in done]
    finally:
        limits.remove()
    results = [o for o in outcomes if not isinstance(o, BaseException)]
    spans = [span for spans, _ in results for span in spans]
    errors = collections.Counter(name for _, names in results for name in names)
    errors.update(type(o).__name__ for o in outcomes if isinstance(o, BaseException))
    after_kill = sum(1 for asked, _ in spans if asked >= killed_at)
    return LimitRun(record, most_in_one_window(spans), after_kill, errors)


def most_in_one_window(spans: list, window: float = 1.0) -> int:
    """The most grants certainly made inside one window: asked for and returned within it
    (so scheduling delays cannot put two windows' grants into one)."""
    return max((sum(1 for lo, hi in spans if start <= lo and hi < start + window) for start, _ in spans), default=0)


# ----- what is left -----------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """The processes below this one, its threads and the library's named Ray actors."""

    processes: dict
    threads: set
    actors: set


def descendants(root: int) -> dict:
    """Every process below ``root`` (children, their children ...) with its command line."""
    children = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it ended meanwhile
            children[parent].append(int(entry.name))
    found, below = {}, list(children[root])
    while below:
        pid = below.pop()
        found[pid] = command_line(pid)
        below.extend(children[pid])
    return found


def command_line(pid: int) -> str:
    """The command line of ``pid`` ("?" if it ended meanwhile)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def library_actors(mode: str) -> set:
    """Names of the live actors in the library's Ray namespace: workers, balancers, limits holders."""
    if mode != "ray":
        return set()
    import ray

    from concurry_ray.ray.naming import NAMESPACE

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE}


def snapshot(mode: str) -> Snapshot:
    """What runs now."""
    return Snapshot(descendants(os.getpid()), set(threading.enumerate()), library_actors(mode))


def left_over(mode: str, before: Snapshot) -> Snapshot:
    """What runs now and did not before, except Ray's pool of idle worker processes (Ray's, not ours)."""
    now = snapshot(mode)
    processes = {pid: cmd for pid, cmd in now.processes.items() if pid not in before.processes and not cmd.startswith("ray::IDLE")}
    return Snapshot(processes, now.threads - before.threads, now.actors - before.actors)


def registries(mode: str) -> dict:
    """The sizes of the library's own registries in this process (all 0 once every pool has stopped)."""
    counts = {"timer entries": timers.pending()}
    if mode == "process":
        from local_backends import _live

        counts["process workers"] = _live.count()
    if mode == "ray":
        from concurry_ray.limits import client
        from concurry_ray.ray import limits_holder

        counts["owned limits holders"] = limits_holder.made_here()
        counts["limits clients"] = client.count()
    return counts


def settled_leftovers(mode: str, before: Snapshot) -> tuple[Snapshot, dict]:
    """Leftovers and registries, once they are all gone or LEFTOVER_WAIT has passed."""
    deadline = time.monotonic() + LEFTOVER_WAIT
    while True:
        left, counts = left_over(mode, before), registries(mode)
        clean = not (left.processes or left.threads or left.actors or any(counts.values()))
        if clean or time.monotonic() > deadline:
            return left, counts
        time.sleep(0.2)


# ----- one mode ----------------------------------------------------------------------------------------
@dataclass
class Report:
    """A mode's table: rows of (figure, value, what it must be) and the figures that are not what they must be."""

    mode: str
    rows: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    def add(self, figure: str, value: str, must: str = "", ok: bool = True) -> None:
        self.rows.append((figure, value, must))
        if not ok:
            self.failures.append(f"{self.mode}: {figure}: {value}")


def percentile(values: list, share: float) -> float:
    """The nearest-rank percentile of ``values`` (``share`` from 0 to 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def spread(seconds: list, total: int) -> str:
    """p50 and p99 of ``seconds``, and how many of ``total`` kills they cover."""
    if not seconds:
        return f"none (0 of {total} kills)"
    p50, p99 = (percentile(seconds, q) * 1000 for q in (0.5, 0.99))
    return f"p50 {p50:,.0f} ms, p99 {p99:,.0f} ms ({len(seconds)} of {total} kills)"


def run_mode(mode: str, sizes: Sizes) -> Report:
    """Every part of one mode, then what is left; the mode's table."""
    warm_up(mode)
    before = snapshot(mode)
    print(f"{mode}: chaos run ({sizes.kills} kills) ...", flush=True)
    chaos = kill_run(mode, sizes.kills)
    print(f"{mode}: crash-retry run ({sizes.retry_kills} kills) ...", flush=True)
    retried = kill_run(mode, sizes.retry_kills, num_retries=2, retry_on=[WorkerCrashedError])
    print(f"{mode}: soak ({sizes.soak:,} calls) ...", flush=True)
    soaked, rss_slope = soak(mode, sizes.soak)
    limited = None
    if mode == "ray":
        print(f"{mode}: named limit across a holder kill ...", flush=True)
        limited = limit_run(sizes)
    left, counts = settled_leftovers(mode, before)

    report = Report(mode)
    records = [chaos.record, retried.record, soaked] + ([limited.record] if limited else [])
    add_kill_rows(report, chaos, retried, records)
    add_leftover_rows(report, left, counts, rss_slope, sizes.soak)
    add_limit_row(report, limited)
    return report


def add_kill_rows(report: Report, chaos: KillRun, retried: KillRun, records: list) -> None:
    """Kills, lost calls, failure and recovery times, calls run twice, duplicates per crash retry."""
    kills = len(chaos.record.kills)
    all_kills = kills + len(retried.record.kills)
    report.add("kills injected", f"{kills} (+{len(retried.record.kills)} in the crash-retry run)", "> 0", ok=kills > 0)
    missing, submitted = unsettled(records)
    report.add("calls lost", f"{missing} of {submitted:,}", "0", ok=missing == 0)
    report.add("kill -> failed future (WorkerCrashedError)", spread(crash_delays(chaos.record), kills))
    recoveries = [r for r in chaos.record.recoveries + retried.record.recoveries if r is not None]
    report.add("kill -> pool back at full size", spread(recoveries, all_kills), f"within {RECOVERY_BOUND:.0f} s",
               ok=len(recoveries) == all_kills)
    report.add("calls run twice without crash retries", str(chaos.run_twice), "0", ok=chaos.run_twice == 0)
    ratio = f"{retried.run_twice / retried.crash_retries:.2f}" if retried.crash_retries else "-"
    report.add("duplicate executions per crash retry",
               f"{ratio} ({retried.run_twice} calls ran more than once, {retried.crash_retries} crash retries)")


def add_leftover_rows(report: Report, left: Snapshot, counts: dict, rss_slope: float, calls: int) -> None:
    """Leftovers after stop, the RSS slope of the soak and the registries."""
    value = f"{len(left.processes)} / {len(left.actors)} / {len(left.threads)}"
    what = [f"pid {pid}: {cmd[:60]}" for pid, cmd in left.processes.items()]
    what += [f"actor {name}" for name in sorted(left.actors)] + [f"thread {t.name}" for t in left.threads]
    report.add("processes / actors / threads left after stop", value + (f" ({'; '.join(what)})" if what else ""),
               "0 / 0 / 0", ok=not what)
    report.add(f"driver RSS slope over a {calls:,}-call soak", f"{rss_slope:+.2f} MB per 10k calls", "flat")
    listed = ", ".join(f"{name} {n}" for name, n in counts.items())
    report.add("library registries after stop", listed, "all 0", ok=not any(counts.values()))


def add_limit_row(report: Report, limited: Optional[LimitRun]) -> None:
    """The named limit's largest window across a holder kill, over its capacity (Ray only)."""
    figure = "named limit: most in one 1 s window / capacity"
    if limited is None:
        report.add(figure, "n/a", "<= 1.00")
        return
    ratio = limited.most / LIMIT_CAPACITY
    errors = ", ".join(f"{n} {name}" for name, n in limited.errors.most_common())
    value = f"{ratio:.2f} ({limited.most} of {LIMIT_CAPACITY}; {limited.after_kill} grants asked for after the kill"
    value += f"; errors met: {errors})" if errors else ")"
    report.add(figure, value, "<= 1.00", ok=ratio <= 1.0)


def runtime(mode: str) -> ContextManager[None]:
    """A local Ray runtime for the ray mode only, shut down after it."""
    return bench_env.ray_runtime() if mode == "ray" else nullcontext()


def format_table(report: Report) -> str:
    """One mode's table."""
    width = max(len(figure) for figure, _, _ in report.rows)
    lines = [f"{'figure':<{width}}  {'must be':<16}  value", "-" * (width + 60)]
    lines += [f"{figure:<{width}}  {must:<16}  {value}" for figure, value, must in report.rows]
    return "\n".join(lines)


def main() -> None:
    """Run each mode asked for, print its table, and exit 1 if a must-be figure is not met."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--quick", action="store_true", help="fewer kills and a shorter limit run (under a minute per mode)")
    parser.add_argument("--soak", type=int, default=50_000, help="calls in the soak (default 50000)")
    args = parser.parse_args()
    logging.getLogger("concurry_ray").setLevel(logging.ERROR)  # the replacements of injected kills are expected

    failures = []
    for mode in args.modes:
        with runtime(mode):
            report = run_mode(mode, sizes(args.quick, args.soak))
        print(f"\n{mode}: {WORKERS} workers, calls of {CALL_SECONDS * 1000:g} ms, {IN_FLIGHT} in flight\n")
        print(format_table(report), flush=True)
        failures += report.failures
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
