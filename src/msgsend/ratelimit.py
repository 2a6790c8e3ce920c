"""Client-side rate limiting: one limiter per provider, shared by threads, processes and hosts.

A :class:`RateLimiter` is a thin facade over pyrate-limiter 4: every provider gets its own
bucket (its own SQLite table or Redis key), and :meth:`RateLimiter.acquire` blocks the calling
thread until that bucket admits one more request. The wait loop is ours rather than the
library's ``Limiter.try_acquire``: each attempt takes a fresh timestamp from the store's clock,
asks the bucket for the exact retry-after when it is full, and sleeps through the injected
``sleep``. Waits are therefore measured exactly, and clock and sleep can be faked in tests.
Threads of one process queue for a provider in FIFO order, so none starves.

Strategy x store (``docs/rate-limiting.md`` explains the choices)::

                     memory                sqlite (default)           redis
    sliding-window   InMemoryBucket        SQLiteBucket               RedisBucket, our count bound
    fixed-window     InMemoryBucket        SQLiteBucket               RedisBucket, our count bound
    token-bucket     StateBucket+InMemory  StateBucket+_SQLiteState   StateBucket+RedisStateStore

Clocks: ``memory`` uses the monotonic clock (anchored to the epoch for ``fixed-window``, whose
windows are wall-clock aligned); ``sqlite`` the host's wall clock, common to every process;
``redis`` the Redis server's clock (``TIME``, calibrated against the local monotonic clock), so
hosts whose clocks disagree still share one timeline.

Example::

    limits = {"kakaotalk": Limit(100, 60.0), "sms": Limit(500, 60.0)}
    with RateLimiter(limits, store="memory") as limiter:
        waited = limiter.acquire("kakaotalk")
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgsend.errors import MsgsendError
from msgsend.redact import redact_url

if TYPE_CHECKING:
    import sqlite3
    from types import TracebackType

__all__ = [
    "DEFAULT_STORE",
    "DEFAULT_STRATEGY",
    "RATE_LIMIT_EVENT",
    "STORES",
    "STRATEGIES",
    "Limit",
    "LimiterError",
    "LimiterStats",
    "RateLimiter",
    "check_limiter_settings",
    "default_guard",
    "default_state_path",
]

STRATEGIES = ("sliding-window", "fixed-window", "token-bucket")
STORES = ("memory", "sqlite", "redis")
DEFAULT_STRATEGY = "sliding-window"
DEFAULT_STORE = "sqlite"
#: the alert type raised when a limiter saturates or a provider answers 429 anyway
RATE_LIMIT_EVENT = "rate-limit"

#: (strategy, store) pairs that cannot be run correctly, and why. Every pair is implemented
#: correctly with pyrate-limiter 4.5.1 (token-bucket on SQLite through our own state store),
#: so nothing is refused today; a pair added here is refused by ``check_limiter_settings``.
_REFUSED: dict[tuple[str, str], str] = {}

#: Redis keys are ``<prefix>:<provider>:log`` (window strategies) and ``...:tokens``.
REDIS_KEY_PREFIX = "msgsend:ratelimit"
#: a Redis that does not answer within this many seconds is reported as unreachable
REDIS_TIMEOUT = 2.0

_log = logging.getLogger(__name__)
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class LimiterError(MsgsendError):
    """The limiter's store cannot be used; the message names the ``[limiter]`` setting."""

    kind = "limiter"


def check_limiter_settings(strategy: str, store: str) -> str | None:
    """Return why ``strategy`` on ``store`` is refused, or None when the pair is usable."""
    if strategy not in STRATEGIES:
        return f"unknown strategy {strategy!r}; expected one of {_quoted(STRATEGIES)}"
    if store not in STORES:
        return f"unknown store {store!r}; expected one of {_quoted(STORES)}"
    return _REFUSED.get((strategy, store))


def default_state_path() -> Path:
    """Return the shared SQLite file: ``$XDG_STATE_HOME/msgsend/ratelimit.sqlite``."""
    state_home = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(state_home) if os.path.isabs(state_home) else Path.home() / ".local" / "state"
    return base / "msgsend" / "ratelimit.sqlite"


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests per ``period`` seconds."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count <= 0:
            raise ValueError(
                f"a rate limit needs a positive whole number of requests, not {self.count!r}"
            )
        if (
            isinstance(self.period, bool)
            or not isinstance(self.period, int | float)
            or not math.isfinite(self.period)
            or self.period < 0.001
        ):
            raise ValueError(f"a rate limit period must be at least 1 ms, not {self.period!r}")

    @property
    def per_second(self) -> float:
        """Return the sustained rate in requests per second."""
        return self.count / self.period

    @property
    def period_ms(self) -> int:
        """Return the period in whole milliseconds, as the buckets count it."""
        return max(1, round(self.period * 1000))

    def __str__(self) -> str:
        if self.period == 60:
            return f"{self.count}/minute"
        if self.period == 1:
            return f"{self.count}/second"
        return f"{self.count} per {self.period:g} s"


def default_guard(limit: Limit) -> float:
    """Return the margin (seconds) added to a sliding window: 4% of it, within 10-250 ms.

    A request reaches the provider a little after its slot is granted, and not always equally
    late: with a dozen sender threads on a busy 2-core host that spread reached ~25 ms in our
    measurements, and a new TLS connection adds more. The margin keeps the spread from putting
    N+1 requests into one of the provider's windows. It costs 4% of the throughput of a
    per-second limit, 0.4% of a per-minute one.
    """
    return min(250, max(10, limit.period_ms * 4 // 100)) / 1000


@dataclass(frozen=True)
class LimiterStats:
    """What one provider's limiter did so far in this process."""

    acquired: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    max_wait: float = 0.0
    throttled: int = 0


class _FairLock:
    """A FIFO lock: the longest-waiting thread gets it next, so no worker starves."""

    __slots__ = ("_busy", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self) -> None:
        with self._mutex:
            if not self._busy:
                self._busy = True
                return
            handoff = threading.Lock()
            handoff.acquire()
            self._waiters.append(handoff)
        handoff.acquire()  # released by the holder, which passes the lock on without freeing it

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._busy = False


class _FileLock:
    """A reentrant cross-process lock on ``path``: a thread lock, then a blocking ``flock``.

    Used instead of ``filelock.FileLock``, which polls every 50 ms under contention: a blocked
    ``flock`` is woken by the kernel the moment the holder releases, which keeps shared-budget
    waits exact and lets two providers of one process share the file without polling.
    """

    def __init__(self, path: str) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._fcntl: Any = None
        self._fallback: Any = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            from filelock import FileLock

            self._fallback = FileLock(path, thread_local=False, poll_interval=0.001)
        else:
            self._fcntl = fcntl
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> _FileLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                if self._fd is not None:
                    self._fcntl.flock(self._fd, self._fcntl.LOCK_EX)
                else:  # pragma: no cover - Windows
                    self._fallback.acquire()
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                if self._fd is not None:
                    self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)
                else:  # pragma: no cover - Windows
                    self._fallback.release()
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _SQLiteStateStore:
    """pyrate-limiter ``StateStore`` for TokenBucket/GCRA in a SQLite table (4.5.1 has none).

    One row holds the algorithm's state (GCRA: one theoretical arrival time per rate, integer
    microseconds); ``check`` reads, steps and writes it under the shared file lock, so every
    process on the host spends from the same bucket.
    """

    is_async = False

    def __init__(self, conn: sqlite3.Connection, lock: _FileLock, table: str) -> None:
        self._conn = conn
        self._lock = lock
        self._table = table
        with lock:
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{table}" '
                "(id INTEGER PRIMARY KEY CHECK (id = 0), state TEXT NOT NULL)"
            ).close()
            conn.commit()

    def _load(self, algorithm: Any, rates: list[Any]) -> Any:
        row = self._conn.execute(f'SELECT state FROM "{self._table}" WHERE id = 0').fetchone()
        if row is not None:
            values = str(row[0]).split(",")
            if len(values) == len(rates):
                return algorithm.decode(values)
        return algorithm.initial(rates)

    def check(self, algorithm: Any, rates: list[Any], now: int, weight: int) -> Any:
        with self._lock:
            new_state, decision = algorithm.step(rates, self._load(algorithm, rates), now, weight)
            if decision.allowed:
                self._conn.execute(
                    f'INSERT OR REPLACE INTO "{self._table}" (id, state) VALUES (0, ?)',
                    (",".join(str(value) for value in new_state),),
                ).close()
                self._conn.commit()
            return decision

    def read(self, algorithm: Any, rates: list[Any]) -> Any:
        with self._lock:
            return self._load(algorithm, rates)

    def reset(self) -> None:
        with self._lock:
            self._conn.execute(f'DELETE FROM "{self._table}"').close()
            self._conn.commit()

    def close(self) -> None:
        """The connection belongs to the RateLimiter, which closes it."""


class _Slot:
    """One provider's bucket, its clock, and the bookkeeping around it."""

    def __init__(
        self,
        name: str,
        limit: Limit,
        bucket: Any,
        now_ms: Callable[[], int],
        store_lock: _FileLock | None,
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
        self.turn = _FairLock()
        self.stats_lock = threading.Lock()
        # Read without a lock by queued threads: only used to decide whether they waited.
        self.sleeping = False
        self.sleep_epoch = 0
        self.leak_every_ms = max(1000, limit.period_ms)
        # No honest wait exceeds one (guarded) period; one second of slack on top.
        self.max_wait_ms = max(rate.interval for rate in bucket.rates) + 1000
        self.last_leak_ms: int | None = None
        self.paused_until = -math.inf
        self.saturated = False
        self.last_wait_end = -math.inf
        self.acquired = 0
        self.waits = 0
        self.wait_seconds = 0.0
        self.max_wait = 0.0
        self.throttled = 0

    def try_put(self) -> int:
        """Take a slot now and return 0, or take nothing and return the milliseconds to wait."""
        lock = self.store_lock
        if lock is None:
            return self._try_put()
        with lock:
            return self._try_put()

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
            _log.warning(
                "%s: the rate limiter's store holds entries from the future (did the clock go "
                "back?); resetting its window",
                self.name,
            )
            bucket.flush()
            if bucket.put(item):
                return 0
            wait = int(bucket.waiting(item))
        if wait < 0:  # cannot happen with weight 1 and count >= 1
            raise LimiterError(f"{self.name}: the limit {self.limit} can never admit a request")
        return max(wait, 1)

    def _from_the_future(self, bucket: Any, now: int, wait: int) -> bool:
        """Whether a denial comes from entries stamped well after ``now``."""
        if wait > self.max_wait_ms:  # token bucket: its state is one future time
            return True
        newest = bucket.peek(0)  # window strategies: their waits stay short regardless
        return newest is not None and int(newest.timestamp) > now + 1000

    def record(self, waited: float, delayed: bool, end: float) -> bool:
        """Count one acquire; return True when the limiter just became saturated."""
        with self.stats_lock:
            self.acquired += 1
            if not delayed:
                if self.saturated and end - self.last_wait_end >= self.limit.period:
                    self.saturated = False
                return False
            self.waits += 1
            self.wait_seconds += waited
            self.max_wait = max(self.max_wait, waited)
            self.last_wait_end = end
            if self.saturated:
                return False
            self.saturated = True
            return True

    def stats(self) -> LimiterStats:
        with self.stats_lock:
            return LimiterStats(
                self.acquired, self.waits, self.wait_seconds, self.max_wait, self.throttled
            )


class RateLimiter:
    """Pace requests per provider so that no provider answers 429 because of us.

    Example::

        limits = {"kakaotalk": Limit(100, 60.0), "sms": Limit(500, 60.0)}
        with RateLimiter(limits, strategy="sliding-window", store="sqlite") as limiter:
            limiter.acquire("sms")          # blocks until a slot is free
            print(limiter.stats("sms"))

    ``clock`` (seconds, float) and ``sleep`` are injectable; an injected clock also stamps the
    buckets, so a fake clock drives every store. ``guard`` (seconds) overrides
    :func:`default_guard`, the margin added to each sliding window.
    """

    _closed: bool

    def __init__(
        self,
        limits: Mapping[str, Limit],
        *,
        strategy: str = DEFAULT_STRATEGY,
        store: str = DEFAULT_STORE,
        path: Path | str | None = None,
        redis_url: str | None = None,
        on_event: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        guard: float | None = None,
    ) -> None:
        self._closed = True
        refused = check_limiter_settings(strategy, store)
        if refused is not None:
            raise LimiterError(f"[limiter] {refused}")
        if not limits:
            raise ValueError("RateLimiter needs at least one provider limit")
        for name, limit in limits.items():
            if not _PROVIDER_NAME.match(name):
                raise ValueError(f"invalid provider name {name!r} for a rate limiter")
            if not isinstance(limit, Limit):
                raise TypeError(f"limit for {name!r} must be a Limit, not {type(limit).__name__}")
        if guard is not None and not (math.isfinite(guard) and guard >= 0):
            raise ValueError(f"guard must be a non-negative number of seconds, not {guard!r}")

        self.strategy = strategy
        self.store = store
        self._on_event = on_event
        self._clock: Callable[[], float] = clock or time.monotonic
        self._sleep: Callable[[float], None] = sleep or time.sleep
        self._fake_clock = clock
        self._guard = guard
        self._conn: sqlite3.Connection | None = None
        self._file_lock: _FileLock | None = None
        self._redis: Any = None
        self._store_errors: tuple[type[BaseException], ...] = (OSError,)
        self._slots: dict[str, _Slot] = {}
        self._pid = os.getpid()
        self.path: Path | None = None
        self.redis_url = redis_url

        if store == "memory":
            self._open_memory(limits)
        elif store == "sqlite":
            self._open_sqlite(
                limits, Path(path).expanduser() if path is not None else default_state_path()
            )
        else:
            self._open_redis(limits, redis_url)
        self._closed = False

    # --- construction -----------------------------------------------------------------------

    def _rate(self, limit: Limit) -> Any:
        from pyrate_limiter import Rate

        if self.strategy != "sliding-window":
            return Rate(limit.count, limit.period_ms)
        guard = default_guard(limit) if self._guard is None else self._guard
        return Rate(limit.count, limit.period_ms + round(guard * 1000))

    def _log_algorithm(self) -> Any:
        from pyrate_limiter import FixedWindow, SlidingWindowLog

        return FixedWindow() if self.strategy == "fixed-window" else SlidingWindowLog()

    def _injected_now_ms(self) -> Callable[[], int] | None:
        clock = self._fake_clock
        if clock is None:
            return None
        return lambda: math.floor(clock() * 1000 + 1e-6)

    def _open_memory(self, limits: Mapping[str, Limit]) -> None:
        from pyrate_limiter import InMemoryBucket, InMemoryStateStore, StateBucket, TokenBucket

        now_ms = self._injected_now_ms() or (
            _steady_wall_clock() if self.strategy == "fixed-window" else _monotonic_ms
        )
        for name, limit in limits.items():
            rates = [self._rate(limit)]
            if self.strategy == "token-bucket":
                bucket: Any = StateBucket(rates, TokenBucket(), InMemoryStateStore())
            else:
                bucket = InMemoryBucket(rates, algorithm=self._log_algorithm())
            self._slots[name] = _Slot(name, limit, bucket, now_ms, None)

    def _open_sqlite(self, limits: Mapping[str, Limit], path: Path) -> None:
        import sqlite3

        from pyrate_limiter import SQLiteBucket, SQLiteQueries, StateBucket, TokenBucket, WallClock

        self.path = path
        self._store_errors = (sqlite3.Error, OSError)
        now_ms = self._injected_now_ms() or _wall_ms
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = self._file_lock = _FileLock(str(path) + ".lock")
            conn = self._conn = sqlite3.connect(
                path, isolation_level="DEFERRED", check_same_thread=False, timeout=30.0
            )
            with lock:
                conn.execute("PRAGMA journal_mode=WAL").close()
                # OFF: a commit is not flushed to disk. Safe when a process dies; an OS crash can
                # lose the newest entries or, rarely, the file (the message says to delete it).
                conn.execute("PRAGMA synchronous=OFF").close()
                for name, limit in limits.items():
                    ident = name.replace("-", "_")
                    rates = [self._rate(limit)]
                    fast_put = None
                    if self.strategy == "token-bucket":
                        # Duck-typed StateStore: subclassing would import pyrate-limiter eagerly.
                        store: Any = _SQLiteStateStore(conn, lock, f"tokens_{ident}")
                        bucket: Any = StateBucket(rates, TokenBucket(), store, clock=WallClock())
                    else:
                        table = f"log_{ident}"
                        conn.execute(SQLiteQueries.CREATE_BUCKET_TABLE.format(table=table)).close()
                        conn.execute(
                            SQLiteQueries.CREATE_INDEX_ON_TIMESTAMP.format(
                                index_name=f"idx_{table}_ts", table_name=table
                            )
                        ).close()
                        bucket = SQLiteBucket(
                            rates, conn, table, lock=lock, algorithm=self._log_algorithm()
                        )
                        fast_put = _sqlite_fast_put(conn, table, name, limit.count)
                    self._slots[name] = _Slot(name, limit, bucket, now_ms, lock, fast_put)
                conn.commit()
        except (OSError, sqlite3.Error) as exc:
            self._close_stores()
            hint = (
                " (delete the file to reset it)" if isinstance(exc, sqlite3.DatabaseError) else ""
            )
            raise LimiterError(
                f"[limiter] path {path}: cannot use it ({_reason(exc)}){hint}"
            ) from exc

    def _open_redis(self, limits: Mapping[str, Limit], url: str | None) -> None:
        if not url:
            raise LimiterError('[limiter] redis-url: required when store = "redis"')
        import redis
        from pyrate_limiter import RedisStateStore, StateBucket, TokenBucket, WallClock

        shown = redact_url(url)
        self._store_errors = (redis.RedisError, OSError)
        try:
            client = self._redis = redis.Redis.from_url(
                url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT
            )
        except ValueError as exc:
            raise LimiterError(f"[limiter] redis-url {shown}: {exc}") from exc
        try:
            client.ping()
            script_hash = (
                client.script_load(_redis_log_script()) if self.strategy != "token-bucket" else ""
            )
            server_clock = _RedisClock(client)
        except redis.RedisError as exc:
            self._close_stores()
            raise LimiterError(
                f"[limiter] redis-url {shown}: cannot connect ({_redis_reason(exc)})"
            ) from exc

        now_ms = self._injected_now_ms() or server_clock
        for name, limit in limits.items():
            rates = [self._rate(limit)]
            if self.strategy == "token-bucket":
                store = RedisStateStore(client, f"{REDIS_KEY_PREFIX}:{name}:tokens")
                bucket: Any = StateBucket(rates, TokenBucket(), store, clock=WallClock())
            else:
                key = f"{REDIS_KEY_PREFIX}:{name}:log"
                bucket = _redis_log_bucket(rates, client, key, script_hash, self._log_algorithm())
            self._slots[name] = _Slot(name, limit, bucket, now_ms, None)

    # --- use --------------------------------------------------------------------------------

    def acquire(self, provider: str) -> float:
        """Block until ``provider`` may send one request; return the seconds spent waiting."""
        slot = self._slot(provider)
        clock = self._clock
        start = clock()
        epoch = slot.sleep_epoch
        delayed = slot.sleeping
        slot.turn.acquire()
        try:
            delayed = delayed or slot.sleep_epoch != epoch
            while True:
                pause = slot.paused_until - clock()
                if pause <= 0:
                    try:
                        wait_ms = slot.try_put()
                    except self._store_errors as exc:
                        raise LimiterError(
                            f"[limiter] store {self.store}: {provider}: {_reason(exc)}"
                        ) from exc
                    if wait_ms == 0:
                        break
                    pause = wait_ms / 1000
                delayed = True
                slot.sleeping = True
                slot.sleep_epoch += 1
                try:
                    self._sleep(pause)
                finally:
                    slot.sleeping = False
            end = clock() if delayed else start
        finally:
            slot.turn.release()
        waited = end - start if delayed else 0.0
        if slot.record(waited, delayed, end):
            self._emit(
                provider,
                f"{provider}: client-side rate limit {slot.limit} reached; "
                "sends are waiting for a slot",
            )
        return waited

    def try_acquire(self, provider: str) -> float:
        """Take a slot if one is free now and return 0.0; else take none, return seconds to wait."""
        slot = self._slot(provider)
        slot.turn.acquire()
        try:
            pause = slot.paused_until - self._clock()
            if pause > 0:
                return pause
            try:
                wait_ms = slot.try_put()
            except self._store_errors as exc:
                raise LimiterError(
                    f"[limiter] store {self.store}: {provider}: {_reason(exc)}"
                ) from exc
        finally:
            slot.turn.release()
        if wait_ms == 0:
            slot.record(0.0, False, self._clock())
        return wait_ms / 1000

    def note_throttled(self, provider: str, retry_after: float | None) -> None:
        """Record that ``provider`` answered 429 anyway: raise the alert, pause its sends.

        The pause (``retry_after`` seconds, at most one period of the limit) holds back this
        process's sends only; other processes learn of the 429 from their own responses.
        """
        slot = self._slot(provider)
        pause = 0.0
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            pause = min(retry_after, slot.limit.period)
        now = self._clock()
        with slot.stats_lock:
            slot.throttled += 1
            slot.paused_until = max(slot.paused_until, now + pause)
            # Waiting through the pause is the same episode; do not alert for it again.
            slot.saturated = True
            slot.last_wait_end = max(slot.last_wait_end, now + pause)
        detail = f"; pausing its sends for {pause:.1f} s" if pause else ""
        self._emit(
            provider,
            f"{provider} answered 429 Too Many Requests despite the client-side limit "
            f"{slot.limit}{detail}",
        )

    def stats(self, provider: str) -> LimiterStats:
        """Return what ``provider``'s limiter did so far in this process."""
        return self._slot(provider).stats()

    def limit(self, provider: str) -> Limit:
        """Return the limit configured for ``provider``."""
        return self._slot(provider).limit

    @property
    def providers(self) -> tuple[str, ...]:
        """Return the providers this limiter paces."""
        return tuple(self._slots)

    def close(self) -> None:
        """Release the store's connections and files; the limiter cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        self._close_stores()

    def __enter__(self) -> RateLimiter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _slot(self, provider: str) -> _Slot:
        if self._closed:
            raise LimiterError("the rate limiter is closed")
        if os.getpid() != self._pid:
            # A forked child would share the parent's flock and SQLite connection, so the two
            # would not exclude each other.
            raise LimiterError("a RateLimiter cannot cross fork(); create one in each process")
        try:
            return self._slots[provider]
        except KeyError:
            raise KeyError(f"no rate limit configured for provider {provider!r}") from None

    def _emit(self, provider: str, message: str) -> None:
        """Raise the rate-limit event: the one place it leaves the limiter."""
        _log.debug("%s", message)
        if self._on_event is None:
            return
        try:
            self._on_event(RATE_LIMIT_EVENT, provider, message)
        except Exception:
            _log.warning("the rate-limit alert hook failed", exc_info=True)

    def _close_stores(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._file_lock is not None:
            self._file_lock.close()
            self._file_lock = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.close()
            self._redis = None


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _steady_wall_clock() -> Callable[[], int]:
    """Epoch milliseconds that never go back: the monotonic clock, set to the wall clock once.

    Fixed windows need epoch alignment; the in-memory log also needs timestamps in order.
    """
    offset_ns = time.time_ns() - time.monotonic_ns()
    return lambda: (time.monotonic_ns() + offset_ns) // 1_000_000


def _quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


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


def _sqlite_fast_put(
    conn: sqlite3.Connection, table: str, name: str, count: int
) -> Callable[[int], bool]:
    """Insert without counting the window when the table cannot hold ``count`` rows yet.

    SQLiteBucket.put counts the window on every call, O(rows in it): about 0.5 ms at 30 000
    rows, which a high limit over a minute reaches. Rowids are distinct integers, so
    ``max(rowid) - min(rowid) + 1`` bounds the row count from two index lookups; below the
    limit the put is admitted whatever the window, and the count is skipped. Runs under the
    file lock, like the put it stands in for.
    """
    from pyrate_limiter import SQLiteQueries

    bound_query = f'SELECT (SELECT max(rowid) FROM "{table}") - (SELECT min(rowid) FROM "{table}")'
    insert_query = SQLiteQueries.PUT_ITEM.format(table=table)

    def fast_put(now: int) -> bool:
        (span,) = conn.execute(bound_query).fetchone()
        if span is not None and span + 1 >= count:
            return False
        conn.execute(insert_query, (name, now)).close()
        conn.commit()
        return True

    return fast_put


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
