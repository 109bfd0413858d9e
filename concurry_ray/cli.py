"""``concurry-ray``: list, inspect and clean up the pools and limits holders of a Ray cluster.

    concurry-ray ls                      every pool and limits holder: kind, owner job, alive, workers, detached
    concurry-ray stats NAME              a pool's figures across every handle, or a holder's usage per key
    concurry-ray rm NAME                 drain and remove a named pool, or remove a limits holder
    concurry-ray gc [--dry-run]          remove (or list) the orphans: see ``ray/inventory.py``

Every subcommand takes ``--address`` (default: ``RAY_ADDRESS``, else ``auto``) and
``--json``. Exit status: 0 on success, 1 when NAME is not found, 2 on bad usage,
3 when the cluster or its state API (served by the dashboard) cannot be reached.
Also runs as ``python -m concurry_ray``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any, Callable, Optional, Sequence

OK, NOT_FOUND, BAD_USAGE, UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT = 5.0  # seconds to reach the cluster's GCS port


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one subcommand; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or bad usage (2)
        return int(exit_.code or 0)
    # Given before or after the subcommand (so no parser holds a default that would hide the other).
    args.address = getattr(args, "address", None) or os.environ.get("RAY_ADDRESS") or "auto"
    args.json = getattr(args, "json", False)
    from .ray import inventory

    try:
        _connect(args.address)
    except (OSError, RuntimeError, ValueError) as exc:  # ConnectionError is an OSError
        return _fail(UNREACHABLE, f"cannot reach a Ray cluster at {args.address!r}: {exc}")
    try:
        return args.run(args)
    except inventory.NotFound as exc:
        return _fail(NOT_FOUND, str(exc))
    except inventory.Ambiguous as exc:
        return _fail(BAD_USAGE, str(exc))
    except Exception as exc:  # the state API (dashboard) down or timing out, a request refused...
        if type(exc).__name__ in ("ServerUnavailable", "RayStateApiException"):
            return _fail(UNREACHABLE, f"Ray's state API (served by the dashboard) failed: {exc}")
        raise
    finally:
        import ray

        ray.shutdown()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default=argparse.SUPPRESS,
                        help="the Ray cluster (default: $RAY_ADDRESS, else 'auto')")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    parser = argparse.ArgumentParser(prog="concurry-ray", parents=[common],
                                     description="List, inspect and clean up concurry_ray pools and limits holders.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_, description=help_)
        sub.set_defaults(run=run)
        return sub

    command("ls", _ls, "every pool and limits holder in the cluster")
    named = {"stats": (_stats, "a pool's figures across every handle, or a limits holder's usage per key"),
             "rm": (_rm, "drain and remove a pool, or remove a limits holder")}
    for name, (run, help_) in named.items():
        sub = command(name, run, help_)
        sub.add_argument("name", help="a name as `concurry-ray ls` shows it")
        sub.add_argument("--kind", choices=("pool", "limits"), help="when a pool and a limits holder share the name")
    commands.choices["rm"].add_argument("--timeout", type=float, default=60.0,
                                        help="seconds the workers have to finish their calls (default 60)")
    gc = command("gc", _gc, "remove the pools and limits holders whose owner job ended and that were not made to outlive it")
    gc.add_argument("--dry-run", action="store_true", help="only list them")
    return parser


def _connect(address: str) -> None:
    """Join the cluster at ``address``; ConnectionError at once if nothing listens there
    (``ray.init`` would keep retrying a wrong address for minutes)."""
    import ray

    from .ray.naming import NAMESPACE

    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    ray.init(address=address, namespace=NAMESPACE, logging_level="ERROR", log_to_driver=False)
    # Ray's state API takes RAY_ADDRESS over its address argument: make it the cluster just joined.
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def _ls(args: argparse.Namespace) -> int:
    from .ray.inventory import inventory, orphans

    entries = inventory()
    orphaned = {(e.name, e.kind) for e in orphans(entries)}
    rows = [{**e.as_dict(), "orphan": (e.name, e.kind) in orphaned} for e in entries]
    if args.json:
        _print_json(rows)
    else:
        _print_table(rows)
    return OK


def _stats(args: argparse.Namespace) -> int:
    from .ray.inventory import find, stats

    figures = stats(find(args.name, args.kind))
    print(json.dumps(figures, default=str) if args.json else json.dumps(figures, default=str, indent=2))
    return OK


def _rm(args: argparse.Namespace) -> int:
    from .ray.inventory import find, remove

    entry = find(args.name, args.kind)
    killed = remove(entry, args.timeout)
    if args.json:
        _print_json({"removed": entry.name, "kind": entry.kind, "killed": killed})
    else:
        print(f"removed {entry.kind} {entry.name!r}" + (f" ({killed} workers killed at the deadline)" if killed else ""))
    return OK


def _gc(args: argparse.Namespace) -> int:
    from .ray.inventory import inventory, orphans, remove

    found = orphans(inventory())
    if not args.dry_run:
        for entry in found:
            remove(entry, timeout=0)  # nobody is left to wait for
    if args.json:
        _print_json({"dry_run": args.dry_run, "orphans": [e.as_dict() for e in found]})
    elif not found:
        print("no orphans")
    else:
        verb = "would remove" if args.dry_run else "removed"
        for entry in found:
            print(f"{verb} {entry.kind} {entry.name!r} (job {entry.job}, ended)")
    return OK


COLUMNS = (("NAME", "name"), ("KIND", "kind"), ("JOB", "job"), ("ALIVE", "alive"), ("WORKERS", "workers"),
           ("CLIENTS", "clients"), ("DETACHED", "detached"), ("ORPHAN", "orphan"))


def _print_table(rows: list[dict]) -> None:
    if not rows:
        print("no pools or limits holders")
        return
    cells = [[title for title, _ in COLUMNS]] + [[_cell(row, key) for _, key in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(row: dict, key: str) -> str:
    value = row[key]
    if key == "job" and value is not None and row["job_ended"]:
        return f"{value} (ended)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=str))


def _fail(status: int, message: str) -> int:
    print(f"concurry-ray: {message}", file=sys.stderr)
    return status
