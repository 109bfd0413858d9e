"""Rate, call and resource limits shared by a worker, a pool, a cluster or many drivers.

Models (``models.py``), rate algorithms as pure state machines
(``algorithms.py``), the budget with its fair queue (``ledger.py``, woken by the
alarm of ``wakeup.py``), the holders that keep a budget in each mode
(``holders.py``, ``served.py``, with ``server.py`` and ``client.py`` as their
wire; Ray mode's holder lives in ``concurry_ray/ray/limits_holder.py``, so that
nothing here imports Ray), the ``LimitSet`` a worker uses as ``self.limits``
(``limitset.py``), the ``LimitPool`` of several sets (``limitpool.py``), and
what a pool's ``limits=`` option accepts (``pool_option.py``). See
``docs/limits.md``.
"""

from .holders import PoolOwner
from .limitpool import LimitPool, PoolAcquisition
from .limitset import Acquisition, LimitSet, LimitSetAcquisition, empty_limits
from .models import CallLimit, Limit, RateLimit, ResourceLimit
from .pool_option import check_limits_option, pool_limits

__all__ = [
    "Acquisition",
    "CallLimit",
    "Limit",
    "LimitPool",
    "LimitSet",
    "LimitSetAcquisition",
    "PoolAcquisition",
    "PoolOwner",
    "RateLimit",
    "ResourceLimit",
    "check_limits_option",
    "empty_limits",
    "pool_limits",
]
