"""The :class:`RateLimiter` facade: one wait loop, leases, alerts, the schedule estimate."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from msgsend.errors import LimiterError, LimiterTimeout, LimiterUnavailableError
from msgsend.events import Emit, LimiterStoreChanged

from .core import (
    DEFAULT_HOLD,
    DEFAULT_STORE,
    DEFAULT_STRATEGY,
    Lease,
    Limit,
    LimiterStats,
    Slot,
    check_limiter_settings,
    default_guard,
    log,
    reason,
)
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SQLiteStore, default_state_path

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["RateLimiter"]

_T = TypeVar("_T")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
#: how often a waiter for several providers looks again at one whose queue is busy here
_BUSY_RECHECK = 0.05
#: most slots one take may take for the threads queued behind it (a store that can: sqlite)
_BATCH = 8
#: seconds a slot taken for a queued thread may wait for it before it is given back
_SPARE_FRESH = 0.05


class RateLimiter:
    """Pace requests per provider so that no provider answers 429 because of us.

    Example::

        limits = {"kakaotalk": Limit(100, 60.0), "sms": Limit(500, 60.0)}
        with RateLimiter(limits, strategy="sliding-window", store="sqlite") as limiter:
            lease = limiter.acquire("sms")        # blocks until a slot is free
            try:
                ...                               # send the request
            finally:
                lease.settle()                    # answered: count the slot from now

    ``emit`` receives a ``LimiterStoreChanged`` event when the store goes down and when it
    answers again. ``clock`` (seconds, float) and ``sleep`` are injectable; an injected clock
    also stamps the stores, so a fake clock drives every store. ``guard`` (seconds) overrides
    :func:`default_guard`, the margin added to each sliding window. ``hold`` (seconds, one
    value or one per provider) is how long a lease that is never settled keeps its slot.
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
        emit: Emit | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        guard: float | None = None,
        hold: float | Mapping[str, float] | None = None,
        wait_for_store: bool = False,
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
        holds = hold if isinstance(hold, Mapping) else dict.fromkeys(limits, hold)
        self._hold: dict[str, float] = {}
        for name in limits:
            seconds = holds.get(name)
            seconds = DEFAULT_HOLD if seconds is None else seconds
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"hold must be a positive number of seconds, not {seconds!r}")
            self._hold[name] = float(seconds)

        self.strategy = strategy
        self.store = store
        self._emit = emit
        self._down_lock = threading.Lock()
        self._down = False
        self._clock: Callable[[], float] = clock or time.monotonic
        self._sleep: Callable[[float], None] = sleep or time.sleep
        self._guard = guard
        self._pid = os.getpid()
        self.path: Path | None = None
        self.redis_url = redis_url
        now_ms = None if clock is None else (lambda: math.floor(clock() * 1000 + 1e-6))

        backend: MemoryStore | SQLiteStore | RedisStore
        try:
            if store == "memory":
                backend = MemoryStore(strategy, guard, now_ms)
            elif store == "sqlite":
                self.path = Path(path).expanduser() if path is not None else default_state_path()
                backend = SQLiteStore(self.path, strategy, guard, now_ms)
            else:
                backend = RedisStore(redis_url, strategy, guard, now_ms, wait=wait_for_store)
                if backend.unavailable is not None:  # waited for, as when lost mid-run
                    self._store_down(backend.unavailable)
        except LimiterUnavailableError as exc:  # down at start: an outage, alerted as one
            self._store_down(exc)
            raise
        self._backend = backend
        try:
            self._slots = {
                name: Slot(name, limit, backend.provider(name, limit))
                for name, limit in limits.items()
            }
        except BaseException:
            backend.close()
            raise
        self._closed = False

    # --- use --------------------------------------------------------------------------------

    def acquire(self, providers: str | Sequence[str], timeout: float | None = None) -> Lease:
        """Wait for a slot of ``providers`` (in order of preference); return its lease.

        With several providers the lease is on whichever frees first (the first listed when
        several are free). ``timeout`` (seconds) bounds the wait: LimiterTimeout when no slot
        can come in time. LimiterUnavailableError when the store is down: never unpaced.
        """
        names = (providers,) if isinstance(providers, str) else tuple(providers)
        if not names:
            raise ValueError("acquire needs at least one provider")
        slots = [self._slot(name) for name in names]
        clock = self._clock
        start = clock()
        deadline = None if timeout is None else start + max(0.0, timeout)
        queued = slots[0] if len(slots) == 1 else None
        delayed = False
        if queued is not None:
            if queued.spares and queued.paused_until <= start:
                # Taken for this process by the last take: no need to queue for the turn
                # (waking the queued threads one by one costs more than the take).
                spare = self._spare(queued)
                if spare is not None:
                    return self._granted(queued, spare[0], start, False, spare[1])
            # One provider: queue behind this process's other waiters, in arrival order.
            epoch, delayed = queued.sleep_epoch, queued.sleeping
            if not queued.turn.acquire(None if deadline is None else max(0.0, deadline - start)):
                raise self._timed_out(names, timeout, queued.next_try - clock())
            delayed = delayed or queued.sleep_epoch != epoch
        try:
            while True:
                pause = math.inf
                for slot in slots:
                    if queued is None and not slot.turn.acquire(timeout=0):
                        # Another thread here queues for it: look again when it tries.
                        pause = min(pause, max(slot.next_try - clock(), _BUSY_RECHECK))
                        continue
                    try:
                        wait = slot.paused_until - clock()
                        if wait <= 0:
                            if queued is not None:
                                spare = self._spare(slot)
                                if spare is not None:
                                    token, taken_at = spare
                                    return self._granted(slot, token, start, delayed, taken_at)
                            token, wait_ms = self._take(slot, batch=queued is not None)
                            if token is not None:
                                return self._granted(slot, token, start, delayed)
                            wait = wait_ms / 1000
                    finally:
                        if queued is None:
                            slot.turn.release()
                    pause = min(pause, wait)
                now = clock()
                if deadline is not None and now + pause > deadline:
                    raise self._timed_out(names, timeout, pause)
                delayed = True
                for slot in slots:
                    slot.next_try = now + pause
                if queued is not None:
                    queued.sleeping = True
                    queued.sleep_epoch += 1
                try:
                    self._sleep(pause)
                finally:
                    if queued is not None:
                        queued.sleeping = False
        finally:
            if queued is not None:
                queued.turn.release()

    def _take(self, slot: Slot, batch: bool = False) -> tuple[Any, int]:
        hold_ms = round(self._hold[slot.name] * 1000)
        take_many = getattr(slot.store, "take_many", None)
        want = 1
        if batch and take_many is not None:
            # As many as are queued now, or as were asked for since the last batch.
            demand = max(slot.turn.waiting(), slot.spare_demand)
            want = 1 + min(demand, _BATCH - 1)
        if want == 1 or take_many is None:
            return self._in_store(slot.name, lambda: slot.store.take(hold_ms))
        taken_at = self._clock()
        tokens, wait_ms = self._in_store(slot.name, lambda: take_many(hold_ms, want))
        if not tokens:
            return None, wait_ms
        slot.spare_demand = 0
        slot.spares.extend((token, taken_at) for token in tokens[1:])
        return tokens[0], 0

    def _spare(self, slot: Slot) -> tuple[Any, float] | None:
        """A slot the last take took for this process, if one is fresh; stale ones go back."""
        while True:
            try:
                token, taken_at = slot.spares.popleft()
            except IndexError:
                return None
            if self._clock() - taken_at <= _SPARE_FRESH:
                slot.spare_demand += 1
                return token, taken_at
            slot.spare_demand = 0
            self._give_back(slot, token)

    def _give_back(self, slot: Slot, token: Any) -> None:
        self._release(slot, token, None)

    def _in_store(self, provider: str, call: Callable[[], _T]) -> _T:
        """Run one store call; a failure is LimiterUnavailableError and a store-down event."""
        try:
            result = call()
        except LimiterUnavailableError as exc:  # a lock held too long: names its holder
            self._store_down(exc)
            raise
        except self._backend.errors as exc:
            if self._closed:  # closed by another thread meanwhile: not an outage
                raise LimiterError("the rate limiter is closed") from exc
            error = LimiterUnavailableError(
                f"[limiter] store {self.store}: {provider}: {reason(exc)}; "
                "nothing is sent until it answers",
                provider=provider,
            )
            self._store_down(error)
            raise error from exc
        if self._down:
            self._store_up()
        return result

    def _store_down(self, error: LimiterUnavailableError) -> None:
        with self._down_lock:
            if self._down:
                return
            self._down = True
        self._notify(LimiterStoreChanged(self.store, True, str(error)))

    def _store_up(self) -> None:
        with self._down_lock:
            if not self._down:
                return
            self._down = False
        self._notify(LimiterStoreChanged(self.store, False, "answers again"))

    def _granted(
        self, slot: Slot, token: Any, start: float, delayed: bool, taken_at: float | None = None
    ) -> Lease:
        end = self._clock()
        waited = end - start if delayed else 0.0
        slot.record(waited, delayed)
        # A slot taken for this thread while it queued counts from when it was taken.
        return Lease(
            slot.name,
            waited,
            end,
            (end if taken_at is None else taken_at) + self._hold[slot.name],
            lambda lease, sent: self._end(slot, token, lease, sent),
        )

    def _end(self, slot: Slot, token: Any, lease: Lease, sent: bool) -> None:
        """Settle or cancel a lease in the store; a store failure here is logged, not raised.

        The request has gone (or was never sent): failing now would lose its outcome. An entry
        the store could not settle keeps its slot until the lease's deadline, which is safe.
        """
        if not self._closed:
            self._release(slot, token, lease if sent else None)

    def _release(self, slot: Slot, token: Any, settled: Lease | None) -> None:
        """Settle the slot of ``settled``, or cancel the slot (None); log a store failure."""
        try:
            if settled is not None:
                self._in_store(slot.name, lambda: slot.store.settle(token))
                slot.held(self._clock() - settled.acquired_at)
            else:
                self._in_store(slot.name, lambda: slot.store.cancel(token))
        except (LimiterUnavailableError, LimiterError) as exc:
            log.warning(
                "%s: could not %s a rate-limit slot (%s); it is released at its deadline",
                slot.name,
                "cancel" if settled is None else "settle",
                exc,
            )

    def _timed_out(
        self, names: Sequence[str], timeout: float | None, wait: float
    ) -> LimiterTimeout:
        wait = max(0.0, wait)
        which = " or ".join(names)
        return LimiterTimeout(
            f"{which}: no rate-limit slot within {timeout or 0:g} s (next in about {wait:.1f} s)",
            provider=names[0],
            wait=wait,
        )

    def note_throttled(self, provider: str, retry_after: float | None) -> None:
        """Record that ``provider`` answered 429 anyway: pause its sends in this process.

        The pause (``retry_after`` seconds, at most one period of the limit) holds back this
        process's sends only; other processes learn of the 429 from their own responses. The
        ``rate-limit`` alert comes from the attempt's event (``alerts.alert_for``).
        """
        slot = self._slot(provider)
        pause = 0.0
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            pause = min(retry_after, slot.limit.period)
        with slot.stats_lock:
            slot.throttled += 1
            slot.paused_until = max(slot.paused_until, self._clock() + pause)

    def schedule(self, provider: str, remaining: int) -> float:
        """Estimate the seconds from now until the last of ``remaining`` more sends may start.

        From the limit, the strategy and the mean time a lease was held here (the provider's
        answer time, during which a slot stays taken). For the ETA of a bulk send.
        """
        slot = self._slot(provider)
        if remaining <= 0:
            return 0.0
        limit = slot.limit
        count, period = limit.count, limit.period
        with slot.stats_lock:
            hold = slot.mean_hold
        if self.strategy == "token-bucket":
            return max(0, remaining - count) * (period / count) + hold
        cycle = period + hold
        if self.strategy == "sliding-window":
            cycle += default_guard(limit) if self._guard is None else self._guard
        return ((remaining - 1) // count) * cycle

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
        for slot in self._slots.values():
            while slot.spares:
                self._give_back(slot, slot.spares.popleft()[0])
        self._closed = True
        self._backend.close()

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

    def _slot(self, provider: str) -> Slot:
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

    def _notify(self, event: LimiterStoreChanged) -> None:
        """Hand ``event`` to ``emit``; a failing listener never fails a send."""
        if self._emit is None:
            return
        try:
            self._emit(event)
        except Exception:
            log.warning("a rate-limit event listener failed", exc_info=True)
