"""The main function of a worker process (process mode)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

import cloudpickle

from concurry_ray.errors import WorkerInitError
from concurry_ray.host import Host, describe_unpicklable, init_failure, portable_error

from ._live import close_forgotten_workers


def packed(value) -> tuple[str, bytes]:
    """The type name of ``value`` and its pickle, sent apart so the parent can tell which value it
    could not unpickle and carry on reading."""
    return type(value).__qualname__, cloudpickle.dumps(value)


def exit_with_parent() -> None:
    """End this process as soon as the process that started it ends (killed included), even in the
    middle of a call: a watcher thread waits on the parent's sentinel, which multiprocessing hands
    every child (it becomes ready when the parent's end of it closes)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="concurry-parent-watch", daemon=True).start()


def child_main(conn, spec_bytes: bytes) -> None:
    """Build the host, then run calls from ``conn`` until told to stop or the pipe closes."""
    exit_with_parent()
    send_lock = threading.Lock()
    where = f"process {os.getpid()}"

    def send(message) -> None:
        with send_lock:
            conn.send_bytes(cloudpickle.dumps(message))

    try:
        spec = cloudpickle.loads(spec_bytes)
        where = f"{spec.label}, pid {os.getpid()}"
        host = Host(spec)
    except WorkerInitError as exc:
        message, cause = init_failure(exc, where, cloudpickle.dumps)
        send((message, *packed(cause)))
        return
    except BaseException as exc:
        send((f"worker could not be unpickled in {where}: {exc}", *packed(portable_error(exc, where, cloudpickle.dumps))))
        return
    send(None)

    def reply(call_id: int, ok: bool, value) -> None:
        if not ok:
            value = portable_error(value, where, cloudpickle.dumps)
        try:
            send((call_id, ok, *packed(value), host.retries))
        except Exception as exc:
            error = describe_unpicklable("the result", value, exc, where)
            send((call_id, False, *packed(error), host.retries))

    pending: set = set()

    def _settled(future, call_id: int) -> None:
        pending.discard(future)
        error = future.exception()
        reply(call_id, error is None, error if error is not None else future.result())
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            break
        if data == b"\0":
            break
        call_id = int.from_bytes(data[:8], "little")
        try:
            call = cloudpickle.loads(data[8:])
        except BaseException as exc:
            reply(call_id, False, exc)
            continue
        if host.is_async(call.method):
            future = host.run_on_loop(call)
            pending.add(future)
            future.add_done_callback(lambda f, cid=call_id: _settled(f, cid))
            continue
        try:
            reply(call_id, True, host.run(call))
        except BaseException as exc:
            reply(call_id, False, exc)
    for future in list(pending):
        future.exception()
    host.close()
    close_forgotten_workers()  # the process ends through multiprocessing's bootstrap, which runs no atexit hooks
