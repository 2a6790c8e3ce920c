"""The ``redis`` store: every host using one Redis database shares each provider's budget.

Keys are ``msgsend:ratelimit:<provider>:log`` (window strategies, a sorted set) or
``...:tokens`` (token bucket, a hash). Every timestamp is on the Redis server's timeline.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from msgsend.errors import LimiterError
from msgsend.redact import redact_url

from .buckets import BucketStore, log_algorithm, rate
from .core import Limit, ProviderStore

__all__ = ["REDIS_KEY_PREFIX", "REDIS_TIMEOUT", "RedisStore"]

#: Redis keys are ``<prefix>:<provider>:log`` (window strategies) and ``...:tokens``.
REDIS_KEY_PREFIX = "msgsend:ratelimit"
#: a Redis that does not answer within this many seconds is reported as unreachable
REDIS_TIMEOUT = 2.0


class RedisStore:
    """One Redis database shared by every host; one script call per take."""

    def __init__(
        self,
        url: str | None,
        strategy: str,
        guard: float | None,
        now_ms: Callable[[], int] | None,
    ) -> None:
        if not url:
            raise LimiterError('[limiter] redis-url: required when store = "redis"')
        import redis

        self.strategy = strategy
        self.guard = guard
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.shown = redact_url(url)
        self.client: Any = None
        try:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
            )
        except ValueError as exc:
            raise LimiterError(f"[limiter] redis-url {self.shown}: {exc}") from exc
        self.client = client
        try:
            client.ping()
            self.script_hash = (
                client.script_load(_redis_log_script()) if strategy != "token-bucket" else ""
            )
            server_clock = _RedisClock(client)
        except redis.RedisError as exc:
            self.close()
            raise LimiterError(
                f"[limiter] redis-url {self.shown}: cannot connect ({_redis_reason(exc)})"
            ) from exc
        self.now_ms = now_ms or server_clock

    def provider(self, name: str, limit: Limit) -> ProviderStore:
        from pyrate_limiter import RedisStateStore, StateBucket, TokenBucket, WallClock

        rates = [rate(limit, self.strategy, self.guard)]
        if self.strategy == "token-bucket":
            store = RedisStateStore(self.client, f"{REDIS_KEY_PREFIX}:{name}:tokens")
            bucket: Any = StateBucket(rates, TokenBucket(), store, clock=WallClock())
        else:
            key = f"{REDIS_KEY_PREFIX}:{name}:log"
            bucket = _redis_log_bucket(
                rates, self.client, key, self.script_hash, log_algorithm(self.strategy)
            )
        return BucketStore(name, limit, bucket, self.now_ms)

    def close(self) -> None:
        if self.client is not None:
            # Closing a broken connection: nothing is left to release.
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None


def _redis_reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if "Timeout" in type(exc).__name__:
        return f"no answer within {REDIS_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


_redis_script_cache: list[str] = []


def _redis_log_script() -> str:
    """The library's sorted-set admit script, counting entries up to +inf instead of ``now``.

    Each client stamps its request before the script runs, so two clients' scripts can run in
    the opposite order to their timestamps. The library counts only ``[window_start, now]``
    and would then miss the entry a client with a later timestamp has just added; counting
    ``[window_start, +inf)`` makes the check hold whatever the order (as SQLiteBucket does).
    """
    if not _redis_script_cache:
        from pyrate_limiter.buckets.redis_bucket import LuaScript

        original = "redis.call('ZCOUNT', bucket, window_start, now)"
        if original not in LuaScript.PUT_ITEM:  # pragma: no cover - a pyrate-limiter upgrade
            raise LimiterError("pyrate-limiter's Redis script changed; msgsend needs an update")
        _redis_script_cache.append(
            LuaScript.PUT_ITEM.replace(
                original, "redis.call('ZCOUNT', bucket, window_start, '+inf')"
            )
        )
    return _redis_script_cache[0]


class _RedisClock:
    """The Redis server's clock, read through a local monotonic offset.

    Hosts must stamp entries on one timeline, so the server's ``TIME`` is the reference. Asking
    it on every acquire would double the round trips; instead the offset to the local monotonic
    clock is measured from the fastest of a few ``TIME`` calls, and again every minute. Its
    error is at most half that round trip (well under the sliding-window guard), and because
    the admit script counts to +inf, entries stamped slightly out of order stay correct.
    """

    RECALIBRATE_NS = 60_000_000_000

    def __init__(self, client: Any) -> None:
        self._client = client
        self._offset_ns = 0
        self._calibrated_at = 0
        self._calibrate(samples=3)

    def _calibrate(self, samples: int) -> None:
        best: tuple[int, int] | None = None
        for _ in range(samples):
            before = time.monotonic_ns()
            seconds, micros = self._client.time()
            after = time.monotonic_ns()
            server_ns = int(seconds) * 1_000_000_000 + int(micros) * 1000
            sample = (after - before, server_ns - (before + after) // 2)
            if best is None or sample[0] < best[0]:
                best = sample
        assert best is not None
        self._offset_ns = best[1]
        self._calibrated_at = time.monotonic_ns()

    def __call__(self) -> int:
        now = time.monotonic_ns()
        if now - self._calibrated_at >= self.RECALIBRATE_NS:
            self._calibrate(samples=1)
            now = time.monotonic_ns()
        return (now + self._offset_ns) // 1_000_000


def _redis_log_bucket(
    rates: list[Any], client: Any, key: str, script_hash: str, algorithm: Any
) -> Any:
    """The library's RedisBucket around our script; its key expires when the provider idles."""
    from pyrate_limiter import RedisBucket

    bucket = RedisBucket(rates, client, key, script_hash, algorithm)
    ttl_ms = 2 * max(rate.interval for rate in rates)

    def leak_and_expire(current_timestamp: int | None = None) -> int:
        # RedisBucket.leak removes scores up to the bound *inclusive*, dropping an entry that
        # sits exactly on the window's start while it still counts (the other buckets keep
        # it). "(" makes the bound exclusive.
        assert current_timestamp is not None
        bound = algorithm.leak_bound(bucket.rates, current_timestamp)
        removed = int(client.zremrangebyscore(key, "-inf", f"({bound}"))
        client.pexpire(key, ttl_ms)
        return removed

    bucket.leak = leak_and_expire  # type: ignore[method-assign]
    return bucket
