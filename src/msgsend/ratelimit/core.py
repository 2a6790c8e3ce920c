"""What every limiter store shares: limits, leases, the per-provider slot, settings checks."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "DEFAULT_HOLD",
    "DEFAULT_STORE",
    "DEFAULT_STRATEGY",
    "STORES",
    "STRATEGIES",
    "Lease",
    "Limit",
    "LimiterStats",
    "Policy",
    "ProviderStore",
    "check_limiter_settings",
    "default_guard",
]

STRATEGIES = ("sliding-window", "fixed-window", "token-bucket")
STORES = ("memory", "sqlite", "redis")
DEFAULT_STRATEGY = "sliding-window"
DEFAULT_STORE = "sqlite"
#: seconds a lease that is never settled (its process died) keeps its slot
DEFAULT_HOLD = 60.0
#: milliseconds: the longest hold another process sharing a store may give its leases (two
#: provider timeouts at config's 300 s bound, plus the client's 2 s margin). A held slot up to
#: this far ahead is another process's, not a sign that the clock went back.
SHARED_HOLD_MS = 602_000

#: (strategy, store) pairs that cannot be run correctly, and why. Every pair is implemented,
#: so nothing is refused today; a pair added here is refused by ``check_limiter_settings``.
_REFUSED: dict[tuple[str, str], str] = {}

log = logging.getLogger("msgsend.ratelimit")


def check_limiter_settings(strategy: str, store: str) -> str | None:
    """Return why ``strategy`` on ``store`` is refused, or None when the pair is usable."""
    if strategy not in STRATEGIES:
        return f"unknown strategy {strategy!r}; expected one of {quoted(STRATEGIES)}"
    if store not in STORES:
        return f"unknown store {store!r}; expected one of {quoted(STORES)}"
    return _REFUSED.get((strategy, store))


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
        """Return the period in whole milliseconds, as the stores count it."""
        return max(1, round(self.period * 1000))

    def __str__(self) -> str:
        if self.period == 60:
            return f"{self.count}/minute"
        if self.period == 1:
            return f"{self.count}/second"
        return f"{self.count} per {self.period:g} s"


def default_guard(limit: Limit) -> float:
    """Return the margin (seconds) added to a sliding window: 0.1% of it, within 2-250 ms.

    A slot is held from acquisition until the provider's answer and counted from then, so the
    provider's arrival stamp always falls inside the span we count: no transit delay needs a
    margin. What is left is clock granularity (stamps in whole milliseconds, on two clocks) and
    NTP slewing the host clock (at most 0.05%): 2 ms for a per-second limit, 60 ms for a
    per-minute one. Measured in bench/bench_limit.py: 0 x 429 with it.
    """
    return min(250, max(2, limit.period_ms // 1000)) / 1000


class Policy:
    """One provider's strategy in whole milliseconds (GCRA in microseconds), store-agnostic.

    Window strategies keep one entry per slot with the time it stops counting (``expires``):
    a held slot until ``expiry(deadline)``, a settled one until ``expiry(settled_at)``. The
    token bucket keeps GCRA's theoretical arrival time (TAT) plus the held slots' deadlines.
    The memory and sqlite stores call these; the redis store runs the same rules in Lua.
    """

    def __init__(self, strategy: str, limit: Limit, guard: float | None) -> None:
        self.strategy = strategy
        self.count = limit.count
        self.period_ms = limit.period_ms
        margin = default_guard(limit) if guard is None else guard
        self.guard_ms = round(margin * 1000) if strategy == "sliding-window" else 0
        # GCRA's emission interval, rounded up: a rate that does not divide evenly errs on
        # the strict side.
        self.emission_us = max(1, -(-self.period_ms * 1000 // self.count))

    def expiry(self, at_ms: int) -> int:
        """When a slot counted from ``at_ms`` stops counting (window strategies)."""
        if self.strategy == "fixed-window":
            return at_ms - at_ms % self.period_ms + self.period_ms
        # +1: an entry exactly one period old still counts (the window is closed).
        return at_ms + self.period_ms + self.guard_ms + 1

    def window_wait(self, now_ms: int, occupied: int, settled: list[int], held: list[int]) -> int:
        """Milliseconds until a window with ``occupied`` live entries may have a free slot.

        ``settled`` holds the earliest expiries of settled entries (sorted, enough of them),
        ``held`` the expiries of every held one. A held slot settled now would expire at
        ``expiry(now)``, so that is its earliest possible end: the wait is a lower bound.
        """
        if occupied < self.count:
            return 0
        need = occupied - self.count + 1
        soonest = self.expiry(now_ms)
        ends = sorted([*settled[:need], *(min(end, soonest) for end in held)])
        return max(1, ends[need - 1] - now_ms)

    def token_wait(self, now_ms: int, tat_us: int, held: int) -> int:
        """Milliseconds until the token bucket admits one more (0: now), ``held`` slots held."""
        now_us = now_ms * 1000
        emission = self.emission_us
        excess = max(tat_us, now_us) + (held + 1) * emission - self.count * emission - now_us
        if excess <= 0:
            return 0
        if held >= self.count:
            excess = max(excess, emission)  # a held slot must settle first, then refill
        return max(1, -(-excess // 1000))

    def token_settle(self, tat_us: int, at_ms: int) -> int:
        """GCRA's step for one slot counted at ``at_ms``: the new TAT."""
        return max(tat_us, at_ms * 1000) + self.emission_us

    def future_bound(self, now_ms: int, hold_ms: int) -> int:
        """No honest entry or TAT lies beyond this; one that does means the clock went back.

        Another process may hold its slots longer than ``hold_ms`` (its provider timeouts
        differ): its held slots, ``SHARED_HOLD_MS`` ahead at most, are no reason to reset.
        """
        span = self.period_ms + self.guard_ms + max(hold_ms, SHARED_HOLD_MS) + 1000
        return now_ms + 2 * span if self.strategy == "token-bucket" else now_ms + span


@dataclass(frozen=True)
class LimiterStats:
    """What one provider's limiter did so far in this process."""

    acquired: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    max_wait: float = 0.0
    throttled: int = 0


class ProviderStore(Protocol):
    """One provider's share of a store: take a slot, settle or cancel it, read the schedule.

    ``take`` returns ``(token, 0)`` with a slot taken, or ``(None, wait_ms)`` with none taken
    and the milliseconds after which one may be free (a lower bound: the caller asks again).
    Each store reads its own clock (an injected one in tests).
    """

    def take(self, hold_ms: int) -> tuple[Any, int]: ...

    def settle(self, token: Any) -> None: ...

    def cancel(self, token: Any) -> None: ...


class FairLock:
    """A FIFO lock: the longest-waiting thread gets it next, so no worker starves."""

    __slots__ = ("_busy", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._busy = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock in arrival order; False when ``timeout`` seconds passed first."""
        with self._mutex:
            if not self._busy:
                self._busy = True
                return True
            if timeout is not None and timeout <= 0:
                return False
            handoff = threading.Lock()
            handoff.acquire()
            self._waiters.append(handoff)
        # Released by the holder, which passes the lock on without freeing it.
        if handoff.acquire(timeout=-1 if timeout is None else timeout):
            return True
        with self._mutex:
            try:
                self._waiters.remove(handoff)
            except ValueError:
                # Handed over between the timeout and the mutex: we hold it now.
                return True
        return False

    def waiting(self) -> int:
        """Return how many threads wait for the lock now."""
        return len(self._waiters)

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._busy = False


class Slot:
    """One provider's store, the in-process queue in front of it, and its bookkeeping."""

    def __init__(self, name: str, limit: Limit, store: ProviderStore) -> None:
        self.name = name
        self.limit = limit
        self.store = store
        self.turn = FairLock()
        self.stats_lock = threading.Lock()
        # Read without a lock by queued threads: only used to decide whether they waited.
        self.sleeping = False
        self.sleep_epoch = 0
        # When this process's head waiter looks again (for waiters on several providers).
        self.next_try = -math.inf
        self.paused_until = -math.inf
        self.acquired = 0
        self.waits = 0
        self.wait_seconds = 0.0
        self.max_wait = 0.0
        self.throttled = 0
        # Mean seconds a lease was held (acquire to settle), for the schedule estimate.
        self.mean_hold = 0.0
        # Slots a take took for this process's next acquires (token, when taken); deque
        # operations are atomic, so they are handed out without the turn.
        self.spares: deque[tuple[Any, float]] = deque()
        #: spares handed out since the last batch was taken (how many the next may take)
        self.spare_demand = 0

    def record(self, waited: float, delayed: bool) -> None:
        """Count one acquire and, when it had to wait, the wait."""
        with self.stats_lock:
            self.acquired += 1
            if delayed:
                self.waits += 1
                self.wait_seconds += waited
                self.max_wait = max(self.max_wait, waited)

    def held(self, seconds: float) -> None:
        """Fold one lease's hold time into the running mean (recent ones weigh more)."""
        with self.stats_lock:
            self.mean_hold = (
                seconds if self.mean_hold == 0 else 0.9 * self.mean_hold + 0.1 * seconds
            )

    def stats(self) -> LimiterStats:
        with self.stats_lock:
            return LimiterStats(
                self.acquired, self.waits, self.wait_seconds, self.max_wait, self.throttled
            )


class Lease:
    """One slot of a provider's budget, held from acquisition until :meth:`settle`.

    Settle it when the provider answered or the request failed: the slot is counted from
    then. :meth:`cancel` gives it back when nothing was sent. A lease never settled (the
    process died) keeps its slot until ``deadline`` and is then counted from there.
    Used as a context manager it settles on exit.
    """

    __slots__ = ("_done", "_lock", "_on_end", "acquired_at", "deadline", "provider", "waited")

    def __init__(
        self,
        provider: str,
        waited: float,
        acquired_at: float,
        deadline: float,
        on_end: Callable[[Lease, bool], None],
    ) -> None:
        self.provider = provider
        self.waited = waited
        self.acquired_at = acquired_at
        self.deadline = deadline
        self._on_end = on_end
        self._done = False
        self._lock = threading.Lock()

    @property
    def settled(self) -> bool:
        """Whether the lease was settled or cancelled already."""
        return self._done

    def settle(self) -> None:
        """The provider answered (or the request failed): count the slot from now. Idempotent."""
        self._end(sent=True)

    def cancel(self) -> None:
        """Nothing was sent: give the slot back. Idempotent; no-op after ``settle``."""
        self._end(sent=False)

    def _end(self, *, sent: bool) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._on_end(self, sent)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.settle()

    def __repr__(self) -> str:
        state = "settled" if self._done else "held"
        return f"<Lease {self.provider} {state} waited={self.waited:.3f}s>"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def steady_wall_clock() -> Callable[[], int]:
    """Epoch milliseconds that never go back: the monotonic clock, set to the wall clock once.

    Fixed windows need epoch alignment; the in-memory log also needs timestamps in order.
    """
    offset_ns = time.time_ns() - time.monotonic_ns()
    return lambda: (time.monotonic_ns() + offset_ns) // 1_000_000


def quoted(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def reason(exc: BaseException) -> str:
    """A short reason for a store error: the OS's words when there are some."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def clock_went_back(name: str) -> None:
    """Warn that a store held entries from the future; the caller resets that provider."""
    log.warning(
        "%s: the rate limiter's store holds entries from the future (did the clock go back?); "
        "resetting its window",
        name,
    )
