"""Scale: what a call, a start-up and a stats read cost as Ray pools grow; many handle copies; elastic pools.

    python benchmarks/scale.py [--quick] [--sections SECTION ...] [--calls N] [--repeat R]

One table, a row per figure, grouped by section:

* ``calls``: Ray pools of 2, 8 and 32 workers against as many raw Ray actors called
  round robin, microseconds per call for a burst (submit N calls, then wait for all)
  and for one call and its result, N times in a row (target <= 1.2x);
* ``startup``: from ``.init()`` until one broadcast has answered, against starting
  as many raw actors and waiting for a trivial method on each (target <= 1.3x);
* ``stats``: ``get_pool_stats()`` at 2, 8 and 32 workers, median ms (target < 5 ms);
* ``copies``: 1, 4 and 16 Ray tasks, each with its own copy of one pool handle,
  dispatching 1 ms calls at once: calls per second over all of them, and the CPU
  the pool's balancer actor spends per 1,000 calls (target: the throughput grows
  with the copies until the workers are saturated);
* ``elastic-thread``, ``elastic-ray``: a pool of 1 to 8 workers (idle_timeout 1 s)
  under bursts of 100 calls of 50 ms, 2 s apart: burst start until 8 workers, burst
  end until 1 worker, and the worker-seconds spent against a fixed pool of 8.

Ours and the baselines take turns going first in each repeat; figures are medians.
``*`` marks a missed target. A local Ray runtime (2 CPUs, no dashboard) is started
for the Ray sections only; ``elastic-thread`` runs before it, without Ray. Every
wait is bounded, every pool is stopped and every raw actor killed.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional

import bench_env  # this folder is the script's own, first on sys.path

bench_env.prepare()  # before the worker module is imported

from scale_workers import Echo, Gate, RawEcho, dispatch_from_copy  # noqa: E402  (after the path set-up above)

from concurry_ray import gather  # noqa: E402

SECTIONS = ["calls", "startup", "stats", "copies", "elastic-thread", "elastic-ray"]
RAY_SECTIONS = [s for s in SECTIONS if s != "elastic-thread"]
RAY_ACTOR_OPTIONS = {"num_cpus": 0.01}
WAIT = 120.0  # seconds any one wait may take: a gather, a ray.get, the copies getting ready
STOP_TIMEOUT = 60.0
SETTLE_SECONDS = 0.05  # a pause before each measurement, as in dispatch.py (which says why)
STARTUP_PAUSE = 1.0  # before each start-up: the actors of the one before exit meanwhile
WARMUP_CALLS = 200
CALL_TARGET = 1.2
STARTUP_TARGET = 1.3
STATS_TARGET_MS = 5.0
COPIES_WORKERS = 8
COPY_CALL_SECONDS = 0.001
GROWS_BY = 1.1  # a copies row must reach this many times the throughput of the row before it ...
SATURATED = 0.8  # ... unless that row already reached this share of the ideal throughput
REPORT_SETTLE = 0.1  # after a copies run, for the copies' last reports to reach the balancer
ELASTIC = {"min_workers": 1, "max_workers": 8, "idle_timeout": 1.0}
BURST_CALLS = 100
BURST_CALL_SECONDS = 0.05
BURST_GAP = 2.0  # seconds from the end of a burst to the start of the next
SAMPLE_SECONDS = 0.02
SHRINK_BOUND = 10.0  # seconds past idle_timeout the pool gets to be back at min after the last burst


@dataclass
class Plan:
    """How much each section does."""

    sizes: tuple  # Ray pool sizes of the calls, startup and stats sections
    calls: int  # calls per measurement of the calls section
    repeat: int  # measurements per figure of the calls section
    startups: int  # start-ups per side and size
    stats_reads: int
    copies: tuple  # numbers of handle copies
    copy_calls: int  # calls each copy makes per run
    copy_repeat: int  # runs per number of copies
    bursts: int


def make_plan(quick: bool, calls: Optional[int], repeat: Optional[int]) -> Plan:
    """The full plan, or the ``--quick`` one; ``--calls`` and ``--repeat`` override the calls section's."""
    if quick:
        plan = Plan((2, 8), 300, 3, 1, 10, (1, 4), 200, 1, 1)
    else:
        plan = Plan((2, 8, 32), 2000, 5, 3, 30, (1, 4, 16), 1000, 3, 3)
    plan.calls = calls or plan.calls
    plan.repeat = repeat or plan.repeat
    return plan


@dataclass
class Row:
    """One line of the table; ``missed`` puts a ``*`` next to the ratio."""

    section: str
    name: str
    ours: str
    baseline: str = ""
    ratio: Optional[float] = None
    target: str = ""
    missed: bool = False


def us(value: float) -> str:
    """Microseconds, as a cell."""
    return f"{value:,.1f} us"


def ms(value: float) -> str:
    """Milliseconds, as a cell."""
    return f"{value:,.2f} ms"


def seconds(value: float) -> str:
    """Seconds, as a cell."""
    return f"{value:,.2f} s"


def ratio_row(section: str, name: str, ours: float, base: float, unit: Callable[[float], str], limit: float) -> Row:
    """A row comparing ``ours`` with ``base``, whose ratio must stay at or under ``limit``."""
    ratio = ours / base
    return Row(section, name, unit(ours), unit(base), ratio, f"<= {limit:g}x", ratio > limit)


# ----- measuring ---------------------------------------------------------------------------------------
def taking_turns(runs: dict, repeat: int, pause: float = SETTLE_SECONDS) -> dict:
    """What each run returns, over ``repeat`` rounds: round r starts with the r-th run, so each goes
    first in turn; ``pause`` seconds pass before every run."""
    samples: dict = {name: [] for name in runs}
    order = list(runs)
    for turn in range(repeat):
        first = turn % len(order)
        for name in order[first:] + order[:first]:
            time.sleep(pause)
            samples[name].append(runs[name]())
    return samples


def us_per_call(run: Callable[[int], Any], calls: int) -> Callable[[], float]:
    """A run that makes ``calls`` calls through ``run`` and returns microseconds per call."""

    def timed() -> float:
        start = time.perf_counter()
        run(calls)
        return (time.perf_counter() - start) / calls * 1e6

    return timed


def wait_until(predicate: Callable[[], bool], bound: float) -> bool:
    """Poll ``predicate`` until it holds (True) or ``bound`` seconds have passed (False)."""
    deadline = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(SAMPLE_SECONDS)
    return True


def started_pool(options: dict) -> ContextManager[Any]:
    """An ``Echo`` pool with ``options``, stopped (within STOP_TIMEOUT) on the way out."""
    return bench_env.started(Echo, options, STOP_TIMEOUT)


def ray_pool_options(size: int) -> dict:
    """A Ray pool of ``size`` workers with tiny CPU shares."""
    return {"mode": "ray", "max_workers": size, "actor_options": RAY_ACTOR_OPTIONS}


@functools.cache
def raw_actor_class() -> Any:
    """The Ray actor class of ``RawEcho``, made once (as the library makes its own once per worker
    class), so that no start-up of raw actors pays for exporting it."""
    import ray

    return ray.remote(**RAY_ACTOR_OPTIONS)(RawEcho)


@contextmanager
def raw_actors(count: int) -> Iterator[list]:
    """``count`` hand-written Ray actors with the same CPU shares, killed on the way out."""
    import ray

    actors = [raw_actor_class().remote() for _ in range(count)]
    try:
        yield actors
    finally:
        for actor in actors:
            ray.kill(actor)


# ----- calls and stats -------------------------------------------------------------------------------
def size_rows(size: int, plan: Plan, sections: list) -> list[Row]:
    """The calls rows (against ``size`` raw actors) and the stats rows of one Ray pool of ``size``."""
    rows = []
    with started_pool(ray_pool_options(size)) as pool:
        if "calls" in sections:
            with raw_actors(size) as actors:
                rows += call_rows(pool, actors, plan)
        if "stats" in sections:
            time.sleep(STARTUP_PAUSE)  # the raw actors exit meanwhile
            rows += [stats_row(pool, size, plan.stats_reads), stats_row(pool, size, plan.stats_reads, busy=True)]
    return rows


def call_rows(pool: Any, actors: list, plan: Plan) -> list[Row]:
    """Microseconds per call through ``pool`` and through ``actors`` round robin: a burst, and one call + result."""
    import ray

    size = len(actors)

    def ours_burst(calls: int) -> None:
        gather([pool.echo(i) for i in range(calls)], timeout=WAIT)

    def raw_burst(calls: int) -> None:
        ray.get([actors[i % size].echo.remote(i) for i in range(calls)], timeout=WAIT)

    def ours_one(calls: int) -> None:
        for i in range(calls):
            pool.echo(i).result(timeout=WAIT)

    def raw_one(calls: int) -> None:
        for i in range(calls):
            ray.get(actors[i % size].echo.remote(i), timeout=WAIT)

    ours_burst(WARMUP_CALLS)
    raw_burst(WARMUP_CALLS)
    rows = []
    for label, ours, raw in (("submit N, then gather", ours_burst, raw_burst), ("one call + result", ours_one, raw_one)):
        runs = {"ours": us_per_call(ours, plan.calls), "raw": us_per_call(raw, plan.calls)}
        figures = {side: statistics.median(values) for side, values in taking_turns(runs, plan.repeat).items()}
        name = f"pool of {size} vs {size} raw actors: {label}"
        rows.append(ratio_row("calls", name, figures["ours"], figures["raw"], us, CALL_TARGET))
    return rows


def stats_row(pool: Any, size: int, reads: int, busy: bool = False) -> Row:
    """The median time of one ``get_pool_stats()`` on a pool of ``size``; ``busy``: each read follows
    (untimed) one call on every worker, so the balancer asks every worker for its counts."""
    samples = []
    for _ in range(reads):
        if busy:
            gather(pool.broadcast("echo", 0), timeout=WAIT)
        time.sleep(SETTLE_SECONDS)
        start = time.perf_counter()
        stats = pool.get_pool_stats()
        samples.append((time.perf_counter() - start) * 1e3)
        if stats["total_workers"] != size:
            raise RuntimeError(f"get_pool_stats() reports {stats['total_workers']} workers in a pool of {size}")
    median = statistics.median(samples)
    if busy:
        return Row("stats", f"... after a call on every worker, pool of {size}", ms(median), target="reported")
    name = f"get_pool_stats(), pool of {size}"
    return Row("stats", name, ms(median), target=f"< {STATS_TARGET_MS:g} ms", missed=median >= STATS_TARGET_MS)


# ----- start-up --------------------------------------------------------------------------------------
def startup_row(size: int, repeats: int) -> Row:
    """Seconds until a Ray pool of ``size`` has answered one broadcast, against ``size`` raw actors
    having answered one call each; each start-up is torn down before the next."""
    import ray

    def pool_start() -> float:
        start = time.perf_counter()
        with started_pool(ray_pool_options(size)) as pool:
            gather(pool.broadcast("echo", 0), timeout=WAIT)
            return time.perf_counter() - start

    def raw_start() -> float:
        start = time.perf_counter()
        with raw_actors(size) as actors:
            ray.get([actor.echo.remote(0) for actor in actors], timeout=WAIT)
            return time.perf_counter() - start

    samples = taking_turns({"ours": pool_start, "raw": raw_start}, repeats, pause=STARTUP_PAUSE)
    ours, raw = (statistics.median(samples[side]) for side in ("ours", "raw"))
    return ratio_row("startup", f"pool of {size} vs {size} raw actors, until all ready", ours, raw, seconds, STARTUP_TARGET)


# ----- handle copies ---------------------------------------------------------------------------------
def balancer_pids() -> set:
    """The processes below this one whose command line names ``PoolBalancer``: Ray titles an actor's
    process ``ray::PoolBalancer`` (``ray::PoolBalancer.method`` while a method runs), and the Ray
    runtime this script started runs below it (other Ray sessions on the machine do not)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"PoolBalancer" in (entry / "cmdline").read_bytes() and below_us(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue  # it ended meanwhile
    return found


def below_us(pid: int) -> bool:
    """Whether process ``pid`` descends from this one (OSError if one on the way ended meanwhile)."""
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if pid == os.getpid():
            return True
    return False


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copies_rows(plan: Plan) -> list[Row]:
    """Throughput of 1, 4, 16 handle copies dispatching at once into one pool, and its balancer's CPU per 1,000 calls.

    The balancer's process is the one process below this one titled ``PoolBalancer`` that appeared
    while the pool started; if there is not exactly one, its CPU is shown as n/a."""
    import ray

    task = ray.remote(num_cpus=0.01)(dispatch_from_copy)
    gate_class = ray.remote(num_cpus=0)(Gate)
    before = balancer_pids()
    with started_pool(ray_pool_options(COPIES_WORKERS)) as pool:
        appeared = balancer_pids() - before
        pid = appeared.pop() if len(appeared) == 1 else None
        runs = {copies: lambda copies=copies: copies_run(task, gate_class, pool, pid, copies, plan.copy_calls)
                for copies in plan.copies}
        samples = taking_turns(runs, plan.copy_repeat)
    ideal = COPIES_WORKERS / COPY_CALL_SECONDS
    rates = {copies: statistics.median(rate for rate, _ in results) for copies, results in samples.items()}
    first, previous = rates[plan.copies[0]], None
    rows = []
    for copies in plan.copies:
        rate = rates[copies]
        missed = previous is not None and rate < GROWS_BY * previous and previous < SATURATED * ideal
        label = f"{copies} cop{'y' if copies == 1 else 'ies'}"
        name = f"{label} -> pool of {COPIES_WORKERS}, {COPY_CALL_SECONDS * 1e3:g} ms calls: calls/s"
        rows.append(Row("copies", name, f"{rate:,.0f} ({rate / ideal:.0%} of ideal)", f"{first:,.0f} (1 copy)",
                        rate / first, "grows until saturated", missed))
        cpu = None if pid is None else statistics.median(cpu for _, cpu in samples[copies])
        rows.append(Row("copies", f"{label}: balancer CPU per 1,000 calls", "n/a" if cpu is None else ms(cpu * 1e3)))
        previous = rate
    return rows


def copies_run(task: Any, gate_class: Any, pool: Any, pid: Optional[int], copies: int, calls: int) -> tuple:
    """``copies`` Ray tasks, each with its own copy of ``pool``, wait at a gate until all are ready,
    then make ``calls`` calls each. Returns (calls per second, from the first call begun to the last
    one done; the balancer's CPU seconds per 1,000 calls, or None without its pid)."""
    import ray

    gate = gate_class.remote()
    try:
        done = [task.remote(pool, gate, calls, COPY_CALL_SECONDS, WAIT) for _ in range(copies)]
        if not wait_until(lambda: ray.get(gate.arrived.remote(), timeout=WAIT) == copies, WAIT):
            raise TimeoutError(f"{copies} copies of the pool handle were not ready within {WAIT:g} s")
        cpu_before = cpu_seconds(pid) if pid is not None else 0.0
        ray.get(gate.open.remote(), timeout=WAIT)
        spans = ray.get(done, timeout=WAIT)
        time.sleep(REPORT_SETTLE)
        cpu = cpu_seconds(pid) - cpu_before if pid is not None else None
    finally:
        ray.kill(gate)
    total = copies * calls
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    return total / elapsed, None if cpu is None else cpu / total * 1000


# ----- elastic pools ---------------------------------------------------------------------------------
class Sampler:
    """Reads a pool's ``total_workers`` every SAMPLE_SECONDS in a thread of its own, keeping
    (``time.monotonic()`` just before the read, count)."""

    def __init__(self, pool: Any) -> None:
        self.samples: list = []
        self._pool = pool
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stopped.is_set():
            at = time.monotonic()
            self.samples.append((at, self._pool.get_pool_stats()["total_workers"]))
            self._stopped.wait(max(0.0, at + SAMPLE_SECONDS - time.monotonic()))

    def latest(self) -> Optional[int]:
        """The last count read, if any."""
        return self.samples[-1][1] if self.samples else None

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stopped.set()
        self._thread.join(WAIT)


def first_reached(samples: list, since: float, until: float, count: int) -> Optional[float]:
    """Seconds from ``since`` to the first sample in [since, until] showing ``count`` workers; None if none does."""
    return next((at - since for at, n in samples if since <= at <= until and n == count), None)


def worker_seconds(samples: list, start: float, end: float) -> float:
    """The worker count integrated over [start, end], each sample holding until the next."""
    total = 0.0
    for (at, count), (next_at, _) in zip(samples, samples[1:] + [(end, 0)]):
        low, high = max(at, start), min(next_at, end)
        if high > low:
            total += count * (high - low)
    return total


def spread(values: list) -> str:
    """The median (and, over several bursts, the largest) of ``values``, and how many were reached."""
    reached = [v for v in values if v is not None]
    if not reached:
        return "not reached"
    text = seconds(statistics.median(reached))
    if len(values) > 1:
        text += f" (max {max(reached):.2f})"
    if len(reached) < len(values):
        text += f", {len(reached)} of {len(values)} bursts"
    return text


def elastic_rows(mode: str, bursts: int) -> list[Row]:
    """An elastic pool of ``mode`` under ``bursts`` bursts: time to max size, time back to min size,
    and its worker-seconds against a fixed pool of max size over the same run."""
    low, high = ELASTIC["min_workers"], ELASTIC["max_workers"]
    options = {"mode": mode, **ELASTIC}
    if mode == "ray":
        options["actor_options"] = RAY_ACTOR_OPTIONS
    spans = []
    with started_pool(options) as pool, Sampler(pool) as sampler:
        if not wait_until(lambda: sampler.latest() == low, WAIT):
            raise TimeoutError(f"the {mode} pool did not start at {low} worker(s) within {WAIT:g} s")
        run_start = time.monotonic()
        for burst in range(bursts):
            if burst:
                time.sleep(BURST_GAP)
            start = time.monotonic()
            gather([pool.nap(BURST_CALL_SECONDS) for _ in range(BURST_CALLS)], timeout=WAIT)
            spans.append((start, time.monotonic()))
        wait_until(lambda: sampler.latest() == low, ELASTIC["idle_timeout"] + SHRINK_BOUND)
        run_end = time.monotonic()
    samples = sampler.samples
    closes = [start for start, _ in spans[1:]] + [run_end]  # each burst's figures stop at the next burst
    to_max = [first_reached(samples, start, close, high) for (start, _), close in zip(spans, closes)]
    to_min = [first_reached(samples, end, close, low) for (_, end), close in zip(spans, closes)]
    used, fixed = worker_seconds(samples, run_start, run_end), high * (run_end - run_start)
    section, name = f"elastic-{mode}", f"{mode} pool of {low} to {high}"
    return [
        Row(section, f"{name}: burst start -> {high} workers", spread(to_max)),
        Row(section, f"{name}: burst end -> {low} worker", spread(to_min)),
        Row(section, f"{name}: worker-seconds vs fixed pool of {high}", seconds(used), seconds(fixed), used / fixed),
    ]


# ----- the run -----------------------------------------------------------------------------------------
def ray_rows(sections: list, plan: Plan) -> list[Row]:
    """The rows of every Ray section asked for (Ray running)."""
    rows = []
    for size in plan.sizes:
        if "calls" in sections or "stats" in sections:
            progress(f"calls and stats, pool of {size}")
            rows += size_rows(size, plan, sections)
    if "startup" in sections:
        for size in plan.sizes:
            progress(f"startup, pool of {size}")
            rows.append(startup_row(size, plan.startups))
    if "copies" in sections:
        progress(f"copies {', '.join(map(str, plan.copies))}")
        rows += copies_rows(plan)
    if "elastic-ray" in sections:
        progress("elastic-ray")
        rows += elastic_rows("ray", plan.bursts)
    return rows


def progress(what: str) -> None:
    """Say what is being measured now."""
    print(f"measuring {what} ...", flush=True)


def ratio_cell(row: Row) -> str:
    """The ratio (if any), then ``*`` if the row missed its target (a space if not, to keep the column)."""
    return (f"{row.ratio:.2f}" if row.ratio is not None else "") + ("*" if row.missed else " ")


def format_table(rows: list[Row]) -> str:
    """The table: section, row, ours, baseline, ratio (``*`` when the target is missed) and target."""
    header = ("section", "row", "ours", "baseline", "ratio", "target")
    cells = [header] + [(r.section, r.name, r.ours, r.baseline, ratio_cell(r), r.target) for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i == 4 else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
             for line in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main() -> None:
    """Measure the sections asked for (elastic-thread first, then Ray's) and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="pool sizes 2 and 8, 1 and 4 copies, fewer calls and repeats, one burst")
    parser.add_argument("--sections", nargs="+", default=SECTIONS, choices=SECTIONS)
    parser.add_argument("--calls", type=int, help="calls per measurement in the calls section (default 2000, quick 300)")
    parser.add_argument("--repeat", type=int, help="measurements per figure in the calls section (default 5, quick 3)")
    args = parser.parse_args()
    plan = make_plan(args.quick, args.calls, args.repeat)

    rows = []
    if "elastic-thread" in args.sections:
        progress("elastic-thread")
        rows += elastic_rows("thread", plan.bursts)
    if set(args.sections) & set(RAY_SECTIONS):
        with bench_env.ray_runtime():
            rows += ray_rows(args.sections, plan)
    rows.sort(key=lambda row: SECTIONS.index(row.section))
    print(f"\nmedians; calls: {plan.calls} calls x {plan.repeat}; startup: {plan.startups} per side; "
          f"stats: {plan.stats_reads} reads; copies: {plan.copy_calls} calls each x {plan.copy_repeat}; "
          f"elastic: {plan.bursts} burst(s) of {BURST_CALLS} x {BURST_CALL_SECONDS * 1e3:g} ms\n"
          f"ratio = ours / baseline (elastic: worker-seconds / a fixed pool's); * = target missed; "
          f"copies: ideal = {COPIES_WORKERS} workers / {COPY_CALL_SECONDS * 1e3:g} ms\n")
    print(format_table(rows))


if __name__ == "__main__":
    main()
