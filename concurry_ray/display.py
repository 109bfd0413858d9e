"""What handles look like: a one-line ``repr`` and, for notebooks, a small HTML table.

Everything here renders plain stats dicts -- the output of ``Pool.get_pool_stats()``,
``LimitSet.get_stats()`` and ``LimitPool.get_stats()`` -- so it works the same in
every mode and imports nothing else of the library. Jupyter shows the HTML of any
object with a ``_repr_html_`` method; no widget library is needed. Every string
that comes from the user (class names, pool names, limit keys, error messages) is
escaped, and a figure that is missing is shown as ``-`` rather than raising.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Iterable, Mapping, Optional

UNKNOWN = "-"
CELL = "padding:1px 8px;text-align:left"
TABLE = "border-collapse:collapse;margin:2px 0"
CAPTION = "text-align:left;font-weight:bold;padding:2px 0"
LIMITS_HEADINGS = ("key", "kind", "used / capacity", "waiting")
SETTINGS = (  # (row label, stats key) shown at the top of a limits table, when present
    ("mode", "mode"),
    ("shared", "shared"),
    ("limit sets", "num_limit_sets"),
    ("load balancing", "load_balancing"),
    ("granted", "granted"),
    ("waiting", "waiting"),
)


def read_stats(getter: Callable[[], Mapping[str, Any]]) -> dict:
    """What ``getter()`` returns, or ``{"unavailable": reason}`` when it raises (a stopped
    pool, a limits holder removed, a Ray actor gone): a display must never fail."""
    try:
        return dict(getter())
    except Exception as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def pool_repr(cls_name: str, summary: Mapping[str, Any], name: Optional[str] = None) -> str:
    """A handle's one-line repr: ``<Counter pool of 4, mode='thread', running>``.

    ``summary`` holds the figures every stats dict of a pool has (``mode``,
    ``total_workers``, ``max_workers``, ``on_demand``, ``stopped``); ``name`` is the
    pool's ``name`` option.
    """
    named = f", name={name!r}" if name else ""
    return f"<{cls_name} {_kind(summary)}{named}, mode={summary.get('mode')!r}, {_state(summary)}>"


def pool_html(
    cls_name: str,
    stats: Mapping[str, Any],
    limits: Optional[Mapping[str, Any]] = None,
    *,
    name: Optional[str] = None,
    state: Optional[str] = None,
) -> str:
    """A small table of a pool's figures: mode, state, workers alive/total, calls in flight,
    queued, completed and failed, then (``limits``: its limit stats) the usage per limit key.

    ``stats`` is ``get_pool_stats()``, or as much of it as is known; ``state``
    overrides the state read from ``stats["stopped"]`` (e.g. ``"not started"``).
    """
    persistent = None if stats.get("on_demand") else stats.get("workers")  # on-demand ones are not listed
    rows = [
        ("mode", stats.get("mode", UNKNOWN)),
        ("state", state or _state(stats)),
        ("workers", _workers_cell(stats)),
        ("in flight", _in_flight(stats)),
        ("queued", stats.get("queued", UNKNOWN)),
        ("completed", _total(persistent, "completed")),
        ("failed", _total(persistent, "failed")),
    ]
    usage = _limits_table(limits, in_pool=True) if limits else ""
    return _table(_label(cls_name, name), rows + _unavailable(stats)) + usage


def limits_html(kind: str, stats: Mapping[str, Any]) -> str:
    """A small table of a ``LimitSet``'s or ``LimitPool``'s ``get_stats()``: its settings,
    then per limit key the units used of its capacity and the requests waiting."""
    rows = [(label, stats[key]) for label, key in SETTINGS if key in stats]
    return _table(_label(kind, stats.get("name")), rows) + _limits_table(stats)


# ----- pools ---------------------------------------------------------------------------
def _kind(summary: Mapping[str, Any]) -> str:
    size, cap = summary.get("total_workers", 0), summary.get("max_workers")
    if summary.get("on_demand"):
        return f"on-demand pool ({size} active, {_cap(cap)})"
    return "worker" if cap == 1 and size <= 1 else f"pool of {size}"


def _cap(cap: Any) -> str:
    """An on-demand pool's cap on live workers (0 or None: none)."""
    return f"max {cap}" if cap else "no cap"


def _state(stats: Mapping[str, Any]) -> str:
    return "stopped" if stats.get("stopped") else "running"


def _workers_cell(stats: Mapping[str, Any]) -> str:
    total = stats.get("total_workers", UNKNOWN)
    if stats.get("on_demand"):
        return f"{total} active, {_cap(stats.get('max_workers'))}"
    workers = stats.get("workers")
    if workers is None:
        return str(total)
    return f"{sum(1 for w in workers.values() if w.get('alive'))} alive / {total}"


def _in_flight(stats: Mapping[str, Any]) -> Any:
    """Calls running now: one per on-demand worker, or those sent to the persistent workers."""
    if stats.get("on_demand"):
        return stats.get("on_demand_active", UNKNOWN)
    return _total(stats.get("workers"), "in_flight")


def _total(workers: Optional[Mapping[Any, Mapping]], figure: str) -> Any:
    """``figure`` summed over the workers' figures; ``-`` when they are not known."""
    if workers is None:
        return UNKNOWN
    return sum(w.get(figure) or 0 for w in workers.values())


def _unavailable(stats: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [("stats unavailable", stats["unavailable"])] if "unavailable" in stats else []


# ----- limits --------------------------------------------------------------------------
def _limits_table(stats: Mapping[str, Any], in_pool: bool = False) -> str:
    """Per key of a LimitSet's stats (or of each set of a LimitPool's): usage and waiters.

    ``in_pool``: the limits of a pool, where a private set (``shared=False``) is only a
    template, each worker having a budget of its own, so its usage is not shown.
    """
    if "limit_sets" in stats:
        sets = [(s.get("name") or f"#{i}", s) for i, s in enumerate(stats["limit_sets"])]
        return "".join(_limits_table_of(f"limits of set {label}", s, in_pool) for label, s in sets)
    return _limits_table_of("limits", stats, in_pool)


def _limits_table_of(title: str, stats: Mapping[str, Any], in_pool: bool) -> str:
    if in_pool and stats.get("shared") is False:
        return _table(title, [("private", "each worker has a budget of its own")])
    if "limits" not in stats:
        return _table(title, _unavailable(stats))
    rows = [_limit_row(key, figures) for key, figures in stats["limits"].items()]
    return _table(title, rows or [("no limits", "")], LIMITS_HEADINGS)


def _limit_row(key: str, figures: Mapping[str, Any]) -> tuple:
    used = f"{_number(figures.get('used'))} / {_number(figures.get('capacity'))}"
    return key, figures.get("kind", UNKNOWN), used, figures.get("waiting", UNKNOWN)


def _number(value: Any) -> str:
    """Figures as people read them: ``7.5``, ``100`` (not ``99.99999999``)."""
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return UNKNOWN if value is None else str(value)


# ----- HTML ----------------------------------------------------------------------------
def _label(kind: str, name: Optional[str]) -> str:
    return f"{kind} {name!r}" if name else kind


def _table(title: str, rows: Iterable[tuple], headings: tuple = ()) -> str:
    """An HTML table with a caption; every cell is escaped."""
    head = _row("th", headings) if headings else ""
    body = "".join(_row("td", row) for row in rows)
    return f'<table style="{TABLE}"><caption style="{CAPTION}">{_escape(title)}</caption>{head}{body}</table>'


def _row(tag: str, cells: Iterable[Any]) -> str:
    return "<tr>" + "".join(f'<{tag} style="{CELL}">{_escape(cell)}</{tag}>' for cell in cells) + "</tr>"


def _escape(value: Any) -> str:
    if isinstance(value, bool):
        value = "yes" if value else "no"
    return html.escape(str(value))
