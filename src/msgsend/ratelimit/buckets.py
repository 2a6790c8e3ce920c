"""pyrate-limiter buckets behind the :class:`~msgsend.ratelimit.core.ProviderStore` interface."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from .core import Limit, log, never_admits


class BucketStore:
    """A pyrate-limiter bucket: a slot is stamped when taken; settle and cancel keep it."""

    def __init__(
        self,
        name: str,
        limit: Limit,
        bucket: Any,
        now_ms: Callable[[], int],
        store_lock: Any = None,
        fast_put: Callable[[int], bool] | None = None,
    ) -> None:
        from pyrate_limiter import RateItem

        self.name = name
        self.limit = limit
        self.bucket = bucket
        self.now_ms = now_ms
        self.store_lock = store_lock
        self.fast_put = fast_put
        self._rate_item = RateItem
        self.leak_every_ms = max(1000, limit.period_ms)
        # No honest wait exceeds one (guarded) period; one second of slack on top.
        self.max_wait_ms = max(rate.interval for rate in bucket.rates) + 1000
        self.last_leak_ms: int | None = None

    def take(self, hold_ms: int) -> tuple[Any, int]:
        lock = self.store_lock
        with lock if lock is not None else contextlib.nullcontext():
            wait = self._try_put()
        return (True, 0) if wait == 0 else (None, wait)

    def settle(self, token: Any) -> None:
        """The bucket stamped the entry when it was taken; nothing to do."""

    def cancel(self, token: Any) -> None:
        """pyrate-limiter buckets cannot remove one entry; the slot stays taken."""

    def _try_put(self) -> int:
        bucket = self.bucket
        now = self.now_ms()
        last_leak = self.last_leak_ms
        if last_leak is None or not 0 <= now - last_leak < self.leak_every_ms:
            # Ours, not the library's Leaker thread: trims on the caller's (maybe fake) clock.
            bucket.leak(now)
            self.last_leak_ms = now
        if self.fast_put is not None and self.fast_put(now):
            return 0
        item = self._rate_item(self.name, now)
        if bucket.put(item):
            return 0
        wait = int(bucket.waiting(item))
        if self._from_the_future(bucket, now, wait):
            # The clock went back (a wall-clock step on this host, or on the Redis server).
            # Waiting it out could take hours; forgetting the window admits at most one
            # extra window's worth, once.
            log.warning(
                "%s: the rate limiter's store holds entries from the future (did the clock go "
                "back?); resetting its window",
                self.name,
            )
            bucket.flush()
            if bucket.put(item):
                return 0
            wait = int(bucket.waiting(item))
        if wait < 0:  # cannot happen with weight 1 and count >= 1
            raise never_admits(self.name, self.limit)
        return max(wait, 1)

    def _from_the_future(self, bucket: Any, now: int, wait: int) -> bool:
        """Whether a denial comes from entries stamped well after ``now``."""
        if wait > self.max_wait_ms:  # token bucket: its state is one future time
            return True
        newest = bucket.peek(0)  # window strategies: their waits stay short regardless
        return newest is not None and int(newest.timestamp) > now + 1000


def rate(limit: Limit, strategy: str, guard: float | None) -> Any:
    """The pyrate-limiter Rate of ``limit``: a sliding window is widened by the guard."""
    from pyrate_limiter import Rate

    from .core import default_guard

    if strategy != "sliding-window":
        return Rate(limit.count, limit.period_ms)
    margin = default_guard(limit) if guard is None else guard
    return Rate(limit.count, limit.period_ms + round(margin * 1000))


def log_algorithm(strategy: str) -> Any:
    from pyrate_limiter import FixedWindow, SlidingWindowLog

    return FixedWindow() if strategy == "fixed-window" else SlidingWindowLog()
