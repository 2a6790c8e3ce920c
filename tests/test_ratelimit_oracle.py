"""msgsend's stores against pyrate-limiter's buckets, the reference for the three strategies.

msgsend no longer runs on pyrate-limiter (its buckets cannot hold a slot until the answer), but
when every lease is settled at once (zero transit) each strategy must admit and deny exactly
as the library's own bucket does, and name the same wait. Random walks on a fake clock.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from msgsend.ratelimit import Limit, LimiterTimeout, RateLimiter
from test_ratelimit import FakeClock

pyrate = pytest.importorskip("pyrate_limiter")


def reference(strategy: str, limit: Limit) -> Any:
    rates = [pyrate.Rate(limit.count, limit.period_ms)]
    if strategy == "token-bucket":
        return pyrate.StateBucket(rates, pyrate.TokenBucket(), pyrate.InMemoryStateStore())
    algorithm = pyrate.FixedWindow() if strategy == "fixed-window" else pyrate.SlidingWindowLog()
    return pyrate.InMemoryBucket(rates, algorithm=algorithm)


def reference_take(bucket: Any, now_ms: int) -> int:
    """0 when the library's bucket admits at ``now_ms``, else its wait in ms (at least 1)."""
    bucket.leak(now_ms)
    item = pyrate.RateItem("p", now_ms)
    if bucket.put(item):
        return 0
    return max(1, int(bucket.waiting(item)))


def our_take(limiter: RateLimiter) -> int:
    try:
        lease = limiter.acquire("p", timeout=0)
    except LimiterTimeout as exc:
        return round(exc.wait * 1000)
    lease.settle()
    return 0


@pytest.mark.parametrize("strategy", ["sliding-window", "fixed-window", "token-bucket"])
@pytest.mark.parametrize("seed", range(4))
def test_zero_transit_matches_pyrate_limiter(strategy: str, seed: int) -> None:
    rng = random.Random(seed)
    limit = Limit(rng.choice([1, 2, 3, 5, 7]), rng.choice([0.1, 0.25, 1.0]))
    clock = FakeClock()
    bucket = reference(strategy, limit)
    with RateLimiter(
        {"p": limit}, strategy=strategy, store="memory", clock=clock, guard=0
    ) as limiter:
        offset = 0
        for step in range(200):
            offset += rng.choice([0, 0, 1, rng.randrange(0, limit.period_ms), limit.period_ms])
            clock.at(offset)
            now_ms = round(clock() * 1000)
            assert our_take(limiter) == reference_take(bucket, now_ms), (step, offset, limit)
