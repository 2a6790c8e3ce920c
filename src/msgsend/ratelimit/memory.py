"""The ``memory`` store: one process's threads share each provider's budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .buckets import BucketStore, log_algorithm, rate
from .core import Limit, ProviderStore, monotonic_ms, steady_wall_clock


class MemoryStore:
    """Buckets in this process's memory; nothing is shared with other processes."""

    errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self, strategy: str, guard: float | None, now_ms: Callable[[], int] | None
    ) -> None:
        self.strategy = strategy
        self.guard = guard
        # Fixed windows are aligned to the epoch; the others only need a clock that never
        # goes back.
        self.now_ms = now_ms or (
            steady_wall_clock() if strategy == "fixed-window" else monotonic_ms
        )

    def provider(self, name: str, limit: Limit) -> ProviderStore:
        from pyrate_limiter import InMemoryBucket, InMemoryStateStore, StateBucket, TokenBucket

        rates = [rate(limit, self.strategy, self.guard)]
        if self.strategy == "token-bucket":
            bucket: Any = StateBucket(rates, TokenBucket(), InMemoryStateStore())
        else:
            bucket = InMemoryBucket(rates, algorithm=log_algorithm(self.strategy))
        return BucketStore(name, limit, bucket, self.now_ms)

    def close(self) -> None:
        """Nothing to release."""
