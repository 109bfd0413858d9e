"""Rate, call and resource limits shared by a worker, a pool, a cluster or many drivers.

Models (``models.py``), rate algorithms as pure state machines
(``algorithms.py``), the budget with its fair queue (``ledger.py``, woken by the
one-thread alarm of ``wakeup.py``), the holders that keep a budget in each mode
(``holders.py``, ``served.py``, ``ray_holder.py``, with ``server.py`` and
``client.py`` as their wire), and the ``LimitSet`` a worker uses as
``self.limits`` (``limitset.py``). See ``docs/limits.md``.
"""

from .limitset import Acquisition, LimitSet, empty_limits, pool_limits
from .models import CallLimit, Limit, RateLimit, ResourceLimit

__all__ = [
    "Acquisition",
    "CallLimit",
    "Limit",
    "LimitSet",
    "RateLimit",
    "ResourceLimit",
    "empty_limits",
    "pool_limits",
]
