"""What the library runs in a Ray cluster: every pool and limits holder, the job that made it, and the orphans.

Read from Ray's state API (``ray.util.state``), which the dashboard serves: the
cluster must run one (``ray start`` does by default). Every actor the library
creates lives in the namespace ``concurry_ray`` under a readable name (see
``naming``), so a pool is its balancer ``{pool}/balancer`` and its workers
``{pool}/w{i}``, and any other actor there is a limits holder.

An *orphan* is something nobody can use any more and nobody asked to keep:

* a pool whose creating job has ended, unless it was made with ``lifetime="detached"``
  (Ray ends such pools itself, so this catches the ones it has not), and the
  workers of a pool whose balancer is gone;
* the holder of a pool's ``limits=[...]`` whose pool is gone;
* a named LimitSet's holder (detached, so that others find it by name) whose
  creating job has ended and to which no process is connected.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import ray

from .balancer import LOOKUP_TIMEOUT
from .limits_holder import remove_holder
from .named_pools import find_balancer, remove_pool
from .naming import NAMESPACE, role_of

STATE_TIMEOUT = 30.0  # seconds one state API request may take
STATE_LIMIT = 10_000  # the most entries the state API returns by default
ENDED_JOB_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
NO_BALANCER = "MISSING"  # the ``state`` of a pool whose workers outlived their balancer


class NotFound(LookupError):
    """No pool or limits holder of that name."""


class Ambiguous(ValueError):
    """A pool and a limits holder share the name; say which kind is meant."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One pool or limits holder, as ``concurry-ray ls`` shows it."""

    name: str
    kind: str  # "pool" or "limits"
    job: Optional[str]  # the id of the job that created it
    job_ended: bool
    alive: bool  # its balancer (pool) or holder actor is running
    state: str  # Ray's state of that actor (NO_BALANCER for a pool without one)
    detached: bool
    workers: Optional[int] = None  # a pool's live workers
    clients: Optional[int] = None  # processes connected to a holder
    pool: Optional[str] = None  # the pool a holder serves (its limits=[...])
    actors: tuple[str, ...] = ()  # a pool's worker actors

    def as_dict(self) -> dict:
        """The entry as plain JSON-ready data."""
        return {**dataclasses.asdict(self), "actors": list(self.actors)}


def inventory() -> list[Entry]:
    """Every pool and limits holder in the cluster (sorted by name), with their owner jobs' state."""
    from ray.util.state import list_actors

    actors = list_actors(address=_cluster(), filters=[("ray_namespace", "=", NAMESPACE)], limit=STATE_LIMIT,
                         detail=True, timeout=STATE_TIMEOUT, raise_on_missing_output=False)
    ended = _ended_jobs()
    pools: dict[str, dict[str, list]] = {}
    holders = []
    for actor in actors:
        if actor.state == "DEAD" or not actor.name:
            continue
        pool, role = role_of(actor.name)
        if pool is None:
            holders.append(actor)
        else:
            pools.setdefault(pool, {"balancer": [], "worker": []})[role].append(actor)
    entries = [_pool_entry(name, parts, ended) for name, parts in pools.items()]
    entries += _holder_entries(holders, ended)
    return sorted(entries, key=lambda e: (e.name, e.kind))


def orphans(entries: list[Entry]) -> list[Entry]:
    """The entries nobody can use any more and nobody asked to keep (see the module docstring)."""
    live_pools = {e.name for e in entries if e.kind == "pool" and e.alive}
    return [e for e in entries if _orphaned(e, live_pools)]


def find(name: str, kind: Optional[str] = None) -> Entry:
    """The pool or holder called ``name`` (of ``kind`` when given): NotFound listing what there is,
    Ambiguous when both a pool and a holder have that name and ``kind`` is None."""
    entries = inventory()
    found = [e for e in entries if e.name == name and kind in (None, e.kind)]
    if not found:
        known = ", ".join(f"{e.name} ({e.kind})" for e in entries) or "none"
        raise NotFound(f"no {kind or 'pool or limits holder'} named {name!r} in this cluster (there are: {known})")
    if len(found) > 1:
        raise Ambiguous(f"{name!r} is both a pool and a limits holder; say which with --kind pool or --kind limits")
    return found[0]


def stats(entry: Entry) -> dict:
    """A pool's figures across every handle (from its balancer) or a holder's usage per key."""
    if entry.kind == "pool":
        balancer = find_balancer(entry.name)
        about, figures = ray.get([balancer.about.remote(), balancer.stats.remote()], timeout=LOOKUP_TIMEOUT)
        definition = about["definition"]
        figures.pop("version")  # of the members: the handles' business
        scaling = figures.pop("scaling")  # min_workers, scaled_up, scaled_down of an elastic pool
        return {"name": entry.name, "kind": "pool", "class": definition["class"],
                "options": definition["options"], **figures, **scaling}
    holder = ray.get_actor(entry.name, namespace=NAMESPACE)
    about, usage = ray.get([holder.about.remote(), holder.stats.remote()], timeout=LOOKUP_TIMEOUT)
    return {"name": entry.name, "kind": "limits", **about, **usage}


def remove(entry: Entry, timeout: float) -> int:
    """Drain and remove a pool (returns how many workers had to be killed) or remove a holder (0)."""
    if entry.kind == "limits":
        remove_holder(entry.name)
        return 0
    if entry.state != NO_BALANCER:
        return remove_pool(entry.name, timeout)
    for name in entry.actors:  # nothing left to drain through: end the workers
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass  # gone meanwhile
    return len(entry.actors)


def _cluster() -> str:
    """The connected cluster's address, for the state API (which would otherwise guess, and refuse
    to when this machine runs several Ray instances)."""
    return ray.get_runtime_context().gcs_address


def _ended_jobs() -> set[str]:
    from ray.util.state import list_jobs

    jobs = list_jobs(address=_cluster(), limit=STATE_LIMIT, timeout=STATE_TIMEOUT, raise_on_missing_output=False)
    return {job.job_id for job in jobs if job.job_id and str(job.status).rsplit(".", 1)[-1] in ENDED_JOB_STATES}


def _pool_entry(name: str, parts: dict[str, list], ended: set[str]) -> Entry:
    balancer = parts["balancer"][0] if parts["balancer"] else None
    workers = parts["worker"]
    first = balancer if balancer is not None else workers[0]
    return Entry(
        name=name, kind="pool", job=first.job_id, job_ended=first.job_id in ended,
        alive=balancer is not None and balancer.state == "ALIVE",
        state=balancer.state if balancer is not None else NO_BALANCER,
        detached=bool(first.is_detached),
        workers=sum(1 for w in workers if w.state == "ALIVE"),
        actors=tuple(sorted(w.name for w in workers)),
    )


def _holder_entries(actors: list, ended: set[str]) -> list[Entry]:
    """Each holder with what it says about itself (asked all at once; a holder that does not answer says nothing)."""
    asked = [_ask_about(a.name) if a.state == "ALIVE" else None for a in actors]
    entries = []
    for actor, ref in zip(actors, asked):
        about = _answer(ref)
        entries.append(Entry(
            name=actor.name, kind="limits", job=actor.job_id, job_ended=actor.job_id in ended,
            alive=actor.state == "ALIVE", state=actor.state, detached=bool(actor.is_detached),
            clients=about.get("clients"), pool=about.get("pool"),
        ))
    return entries


def _ask_about(name: str) -> Any:
    try:
        return ray.get_actor(name, namespace=NAMESPACE).about.remote()
    except ValueError:  # gone since it was listed
        return None


def _answer(ref: Any) -> dict:
    if ref is None:
        return {}
    try:
        return ray.get(ref, timeout=LOOKUP_TIMEOUT)
    except (ray.exceptions.RayError, ValueError):
        return {}


def _orphaned(entry: Entry, live_pools: set[str]) -> bool:
    if entry.kind == "pool":
        return entry.state == NO_BALANCER or (entry.job_ended and not entry.detached)
    if entry.pool is not None:
        return entry.pool not in live_pools
    return entry.job_ended and entry.clients == 0
