"""Ray's completion callbacks run on one C++ thread; its Python thread state is kept between
callbacks instead of being rebuilt for each one (see concurry_ray/ray/callback_thread.py)."""

from __future__ import annotations

import threading
from collections import Counter as Tally

from workers import Counter

from conftest import RAY_ACTOR

CALLS = 10


def test_callbacks_on_rays_thread_keep_their_thread_state(ray_runtime):
    local = threading.local()
    fresh: Tally = Tally()  # thread -> callbacks that found no thread-local value there
    seen: Tally = Tally()  # thread -> callbacks that ran there

    def on_done(_future) -> None:
        thread = threading.get_ident()
        seen[thread] += 1
        if not hasattr(local, "mark"):
            fresh[thread] += 1
            local.mark = True
        ran.set()

    main = threading.get_ident()
    with Counter.options(mode="ray", actor_options=RAY_ACTOR).init() as worker:
        for _ in range(CALLS):
            ran = threading.Event()
            future = worker.sleep(0.03)  # still running when the callback is added
            future.add_done_callback(on_done)
            assert ran.wait(timeout=30)
    on_ray_thread = sum(count for thread, count in seen.items() if thread != main)
    assert on_ray_thread >= CALLS - 2, seen  # the callbacks did run on Ray's thread
    assert all(count <= 1 for count in fresh.values()), f"fresh thread states per thread: {dict(fresh)}"
