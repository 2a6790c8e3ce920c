"""Client-side rate limiting: one limiter per provider, shared by threads, processes and hosts.

A :class:`RateLimiter` paces each provider through a store: ``memory`` (one process),
``sqlite`` (every process on a host, the default) or ``redis`` (every host). One wait loop,
:meth:`RateLimiter.acquire`, returns a :class:`Lease` on a slot: settle it when the provider
answered, so the slot is counted from then. With several providers it waits for whichever
frees first. ``docs/rate-limiting.md`` explains strategies, stores and guarantees.

Modules: ``core`` (limits, leases, settings), ``limiter`` (the facade and its wait loop),
``memory``, ``sqlite``, ``redis`` (one per store), ``standins`` (limiters for a store that
could not be opened at start).

Example::

    limits = {"kakaotalk": Limit(100, 60.0), "sms": Limit(500, 60.0)}
    with RateLimiter(limits, store="memory") as limiter:
        with limiter.acquire("kakaotalk") as lease:
            ...  # send; the lease settles when the block ends
"""

from __future__ import annotations

from msgsend.errors import LimiterError, LimiterTimeout, LimiterUnavailableError

from .core import (
    DEFAULT_HOLD,
    DEFAULT_STORE,
    DEFAULT_STRATEGY,
    STORES,
    STRATEGIES,
    Lease,
    Limit,
    LimiterStats,
    check_limiter_settings,
    default_guard,
)
from .limiter import RateLimiter
from .sqlite import default_state_path

__all__ = [
    "DEFAULT_HOLD",
    "DEFAULT_STORE",
    "DEFAULT_STRATEGY",
    "STORES",
    "STRATEGIES",
    "Lease",
    "Limit",
    "LimiterError",
    "LimiterStats",
    "LimiterTimeout",
    "LimiterUnavailableError",
    "RateLimiter",
    "check_limiter_settings",
    "default_guard",
    "default_state_path",
]
