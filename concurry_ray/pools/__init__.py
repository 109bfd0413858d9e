"""Pools: the user's handle and what runs behind it.

``handle.py`` is the handle a user holds (method callers, blocking, stats,
resize, broadcast, pickling); ``dispatch.py`` is the Dispatcher, the one owner
of the pool's slots, parked calls, lock and on-demand workers; ``membership.py``
starts, replaces and retires workers (``concurry_ray.ray.membership`` does it
through a balancer actor); ``health.py`` checks workers on an interval;
``balancing.py`` picks a worker; ``crashes.py`` re-sends a call whose worker died.
Collaborators change a pool's state only through the Dispatcher's methods.
"""
