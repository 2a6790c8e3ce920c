"""The ``redis`` store: every host using one Redis database shares each provider's budget.

Each take, settle and cancel is one Lua script call, atomic on the server, stamped with the
server's ``TIME``: hosts whose clocks disagree still share one timeline, and the order of
stamps is the order of events. Keys per provider: ``msgsend:ratelimit:<provider>:settled``
and ``...:held`` (sorted sets of slot -> when it stops counting) for the window strategies,
``...:held`` and ``...:gcra`` (GCRA's TAT) for the token bucket. Keys expire when idle.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from typing import Any

from msgsend.errors import LimiterError, LimiterUnavailableError
from msgsend.redact import redact_url

from .core import SHARED_HOLD_MS, Limit, Policy, ProviderStore, clock_went_back

__all__ = ["REDIS_KEY_PREFIX", "REDIS_TIMEOUT", "RedisStore"]

#: Redis keys are ``<prefix>:<provider>:<part>``
REDIS_KEY_PREFIX = "msgsend:ratelimit"
#: a Redis that does not answer within this many seconds is down (connect and each command)
REDIS_TIMEOUT = 2.0

# Numbers leave Lua through string.format('%.0f'): redis.call would print them with %.14g,
# which loses the low digits of a microsecond TAT.
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(x) return string.format('%.0f', x) end
"""

_WINDOW_EXPIRY = """
local count, period, guard = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local fixed, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
local function expiry(at)
  if fixed == 1 then return at - at % period + period end
  return at + period + guard + 1
end
"""

#: KEYS settled, held; ARGV now|"", count, period, guard, fixed, ttl, hold, member
_WINDOW_TAKE = (
    _PRELUDE
    + _WINDOW_EXPIRY
    + """
local hold, member = tonumber(ARGV[7]), ARGV[8]
local reset = 0
local bound = now + period + guard + math.max(hold, """
    + str(SHARED_HOLD_MS)
    + """) + 1000
for _, key in ipairs(KEYS) do
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] and tonumber(newest[2]) > bound then reset = 1 end
end
if reset == 1 then redis.call('DEL', KEYS[1], KEYS[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now))
local occupied = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if occupied < count then
  redis.call('ZADD', KEYS[2], num(expiry(now + hold)), member)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return {1, 0, reset}
end
local need = occupied - count + 1
local soonest = expiry(now)
local ends = {}
local settled = redis.call('ZRANGE', KEYS[1], 0, need - 1, 'WITHSCORES')
for i = 2, #settled, 2 do table.insert(ends, tonumber(settled[i])) end
local held = redis.call('ZRANGE', KEYS[2], 0, need - 1, 'WITHSCORES')
for i = 2, #held, 2 do table.insert(ends, math.min(tonumber(held[i]), soonest)) end
table.sort(ends)
return {0, math.max(1, ends[need] - now), reset}
"""
)

#: KEYS settled, held; ARGV now|"", count, period, guard, fixed, ttl, member
_WINDOW_SETTLE = (
    _PRELUDE
    + _WINDOW_EXPIRY
    + """
redis.call('ZREM', KEYS[2], ARGV[7])
redis.call('ZADD', KEYS[1], num(expiry(now)), ARGV[7])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
)

_TOKEN_ARGS = """
local count, emission, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
"""

#: KEYS gcra, held; ARGV now|"", count, emission_us, ttl, hold, member, span (from now)
_TOKEN_TAKE = (
    _PRELUDE
    + _TOKEN_ARGS
    + """
local hold, member, span = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local reset = 0
local newest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if tat / 1000 > now + span or (newest[2] and tonumber(newest[2]) > now + span) then
  redis.call('DEL', KEYS[1], KEYS[2])
  tat = 0
  reset = 1
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', num(now), 'WITHSCORES')
for i = 2, #expired, 2 do tat = math.max(tat, tonumber(expired[i]) * 1000) + emission end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now))
  redis.call('HSET', KEYS[1], 'tat', num(tat))
end
local held = redis.call('ZCARD', KEYS[2])
local now_us = now * 1000
local excess = math.max(tat, now_us) + (held + 1) * emission - count * emission - now_us
if excess <= 0 then
  redis.call('ZADD', KEYS[2], num(now + hold), member)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  return {1, 0, reset}
end
if held >= count and excess < emission then excess = emission end
return {0, math.max(1, math.ceil(excess / 1000)), reset}
"""
)

#: KEYS gcra, held; ARGV now|"", count, emission_us, ttl, member
_TOKEN_SETTLE = (
    _PRELUDE
    + _TOKEN_ARGS
    + """
redis.call('ZREM', KEYS[2], ARGV[5])
tat = math.max(tat, now * 1000) + emission
redis.call('HSET', KEYS[1], 'tat', num(tat))
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
)


class RedisStore:
    """One Redis database shared by every host; one script call per take, settle, cancel."""

    def __init__(
        self,
        url: str | None,
        strategy: str,
        guard: float | None,
        now_ms: Callable[[], int] | None,
        *,
        wait: bool = False,
    ) -> None:
        if not url:
            raise LimiterError('[limiter] redis-url: required when store = "redis"')
        import redis

        self.strategy = strategy
        self.guard = guard
        self.now_ms = now_ms
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.shown = redact_url(url)
        self.client: Any = None
        #: set when the server could not be reached at start and ``wait`` was given
        self.unavailable: LimiterUnavailableError | None = None
        try:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
            )
        except ValueError as exc:
            raise LimiterError(f"[limiter] redis-url {self.shown}: {exc}") from exc
        self.client = client
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            self.close()
            raise LimiterError(
                f"[limiter] redis-url {self.shown}: refused the credentials ({exc})"
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            # Down, not misconfigured: an outage, tried again later (exit 75 for one send).
            down = LimiterUnavailableError(
                f"[limiter] redis-url {self.shown}: cannot connect ({_redis_reason(exc)}); "
                "nothing is sent until it answers"
            )
            if not wait:
                self.close()
                raise down from exc
            # A bulk run waits for it as for a store lost mid-run: every take fails (and the
            # row waits) until the server answers; the client reconnects by itself.
            self.unavailable = down
        except redis.RedisError as exc:
            self.close()
            raise LimiterError(f"[limiter] redis-url {self.shown}: {exc}") from exc
        windows = strategy != "token-bucket"
        self.take_script = client.register_script(_WINDOW_TAKE if windows else _TOKEN_TAKE)
        self.settle_script = client.register_script(_WINDOW_SETTLE if windows else _TOKEN_SETTLE)
        # Unique across hosts and processes: a slot's member in the sorted sets.
        self.prefix = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}:"

    def provider(self, name: str, limit: Limit) -> ProviderStore:
        return _RedisSlots(self, name, Policy(self.strategy, limit, self.guard))

    def close(self) -> None:
        if self.client is not None:
            # Closing a broken connection: nothing is left to release.
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None


class _RedisSlots:
    """One provider's keys; the rules of :class:`~msgsend.ratelimit.core.Policy`, in Lua."""

    def __init__(self, store: RedisStore, name: str, policy: Policy) -> None:
        self.store = store
        self.name = name
        self.policy = policy
        base = f"{REDIS_KEY_PREFIX}:{name}"
        windows = policy.strategy != "token-bucket"
        self.keys = [f"{base}:settled" if windows else f"{base}:gcra", f"{base}:held"]
        self.ids = itertools.count(1)

    def _now(self) -> str:
        now_ms = self.store.now_ms
        return "" if now_ms is None else str(now_ms())

    def _args(self, hold_ms: int) -> list[Any]:
        policy = self.policy
        ttl = 2 * (policy.period_ms + policy.guard_ms + hold_ms) + 1000
        if policy.strategy == "token-bucket":
            return [self._now(), policy.count, policy.emission_us, ttl]
        fixed = 1 if policy.strategy == "fixed-window" else 0
        return [self._now(), policy.count, policy.period_ms, policy.guard_ms, fixed, ttl]

    def take(self, hold_ms: int) -> tuple[str | None, int]:
        member = f"{self.store.prefix}{next(self.ids)}"
        args = [*self._args(hold_ms), hold_ms, member]
        if self.policy.strategy == "token-bucket":
            args.append(self.policy.future_bound(0, hold_ms))
        taken, wait, reset = self.store.take_script(keys=self.keys, args=args)
        if reset:
            clock_went_back(self.name)
        return (member, 0) if taken else (None, int(wait))

    def settle(self, token: str) -> None:
        # The hold only sizes the keys' idle expiry here; the provider's default is plenty.
        self.store.settle_script(keys=self.keys, args=[*self._args(60_000), token])

    def cancel(self, token: str) -> None:
        self.store.client.zrem(self.keys[1], token)


def _redis_reason(exc: BaseException) -> str:
    import redis

    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    if isinstance(exc, redis.TimeoutError):
        return f"no answer within {REDIS_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__
