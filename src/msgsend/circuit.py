"""A per-provider circuit breaker (SPEC §3): stop calling a provider that is down.

States::

    CLOSED ──(failure_threshold consecutive outage failures)──▶ OPEN
    OPEN ──(reset_timeout elapsed, next caller)──▶ HALF_OPEN: that caller is the single trial
    HALF_OPEN ──(trial succeeds, or the provider answers at all)──▶ CLOSED
    HALF_OPEN ──(trial fails with an outage)──▶ OPEN (timer restarts)
    any ──(disable(): 401/403)──▶ DISABLED, for the rest of the process

The breaker is written here rather than taken from pybreaker because pybreaker holds one lock
around the whole wrapped call, which serialises every concurrent send of a worker pool behind
one HTTP request. Here the lock guards only the bookkeeping; the request runs outside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

from .errors import AuthError, CircuitOpenError, HTTPStatusError, ProviderDisabledError
from .events import CircuitChanged, Emit

__all__ = ["CircuitBreaker", "CircuitState"]

T = TypeVar("T")


class CircuitState(StrEnum):
    """The state of one provider's circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"
    DISABLED = "disabled"


class CircuitBreaker:
    """Fail fast on a provider after consecutive outage failures; probe it again later.

    Thread-safe: many workers may share one breaker. Only failures whose exception has
    ``outage`` set (connect errors, timeouts, 5xx) count. Other answers (429, invalid request)
    neither count nor reset the count while closed, so a flapping provider still opens the
    circuit; but in half-open any HTTP answer proves the provider is up and closes it. An
    ``AuthError`` disables the provider. Only the caller that was admitted as the half-open
    trial (same thread) decides the trial; reports from requests admitted earlier are ignored
    while open or half-open. A trial that never reports expires after ``trial_timeout``
    (default ``reset_timeout``) and the next caller becomes the trial.

        breaker = CircuitBreaker("kakaotalk", 5, 30, emit=events.emit)
        result = breaker.call(lambda: provider.send(message))
    """

    def __init__(
        self,
        provider: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        emit: Emit | None = None,
        trial_timeout: float | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be positive")
        self.provider = provider
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.trial_timeout = float(trial_timeout if trial_timeout is not None else reset_timeout)
        self._clock = clock
        self._emit = emit
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_count = 0
        self._opened_at = 0.0
        self._trial_thread: int | None = None
        self._trial_started = 0.0
        self._last_error = ""
        self._disabled_reason: str | None = None

    # -- read-only views -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """Return the current state (OPEN turns HALF_OPEN at the next ``before_request``)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Return the outage failures counted since the last success or closing."""
        return self._failures

    @property
    def opened_count(self) -> int:
        """Return how many times the circuit has opened."""
        return self._opened_count

    @property
    def disabled_reason(self) -> str | None:
        """Return why the provider was disabled, or None."""
        return self._disabled_reason

    def seconds_until_trial(self) -> float:
        """Return how long until an open circuit admits a trial (0 if not open)."""
        with self._lock:
            if self._state is not CircuitState.OPEN:
                return 0.0
            return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.provider!r}, state={self._state.value!r}, "
            f"failures={self._failures}/{self.failure_threshold})"
        )

    # -- the protocol ----------------------------------------------------------------------

    def before_request(self) -> None:
        """Admit a request, or raise CircuitOpenError / ProviderDisabledError to fail fast."""
        changes: list[tuple[CircuitState, CircuitState, str]] = []
        try:
            with self._lock:
                self._admit(changes)
        finally:
            self._notify(changes)

    def record_success(self) -> None:
        """Report that an admitted request succeeded."""
        changes: list[tuple[CircuitState, CircuitState, str]] = []
        with self._lock:
            if self._state is CircuitState.CLOSED:
                self._failures = 0
            elif self._state is CircuitState.HALF_OPEN and self._is_trial():
                self._close("trial request succeeded", changes)
        self._notify(changes)

    def record_failure(self, exc: BaseException) -> None:
        """Report that an admitted request failed with ``exc``."""
        if isinstance(exc, AuthError):
            self.disable(str(exc))
            return
        outage = bool(getattr(exc, "outage", False))
        changes: list[tuple[CircuitState, CircuitState, str]] = []
        with self._lock:
            if self._state is CircuitState.CLOSED:
                if outage:
                    self._failures += 1
                    self._last_error = str(exc)
                    if self._failures >= self.failure_threshold:
                        self._open(f"{self._failures} consecutive failures, last: {exc}", changes)
            elif self._state is CircuitState.HALF_OPEN and self._is_trial():
                if outage:
                    self._last_error = str(exc)
                    self._open(f"trial request failed: {exc}", changes)
                elif isinstance(exc, HTTPStatusError):
                    self._close(f"provider answered the trial (HTTP {exc.status_code})", changes)
                else:
                    # Says nothing about the provider (a bug, an interrupt): free the slot.
                    self._trial_thread = None
        self._notify(changes)

    def disable(self, reason: str) -> None:
        """Disable the provider for the rest of the process (credentials refused)."""
        changes: list[tuple[CircuitState, CircuitState, str]] = []
        with self._lock:
            if self._state is not CircuitState.DISABLED:
                changes.append((self._state, CircuitState.DISABLED, reason))
                self._state = CircuitState.DISABLED
                self._disabled_reason = reason
                self._trial_thread = None
        self._notify(changes)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` through the breaker, reporting its outcome."""
        self.before_request()
        try:
            result = fn()
        except BaseException as exc:
            self.record_failure(exc)
            raise
        self.record_success()
        return result

    # -- internals (called with the lock held) ---------------------------------------------

    def _admit(self, changes: list[tuple[CircuitState, CircuitState, str]]) -> None:
        """Decide whether the calling thread may send now."""
        state = self._state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.DISABLED:
            raise ProviderDisabledError(
                f"{self.provider} is disabled for this run: {self._disabled_reason}",
                provider=self.provider,
            )
        now = self._clock()
        if state is CircuitState.OPEN:
            remaining = self.reset_timeout - (now - self._opened_at)
            if remaining > 0:
                raise CircuitOpenError(
                    f"{self.provider} circuit is open after {self.failure_threshold} "
                    f"consecutive failures (last: {self._last_error}); "
                    f"next trial in {remaining:.1f} s",
                    provider=self.provider,
                )
            changes.append(
                (state, CircuitState.HALF_OPEN, "reset timeout elapsed; sending one trial")
            )
            self._state = CircuitState.HALF_OPEN
            self._grant_trial(now)
            return
        # HALF_OPEN: one trial at a time; a trial that never reported expires.
        if self._trial_thread is not None and now - self._trial_started < self.trial_timeout:
            raise CircuitOpenError(
                f"{self.provider} circuit is half-open and its trial request is in flight",
                provider=self.provider,
            )
        self._grant_trial(now)

    def _grant_trial(self, now: float) -> None:
        """Make the calling thread the half-open trial."""
        self._trial_thread = threading.get_ident()
        self._trial_started = now

    def _is_trial(self) -> bool:
        """Return whether the calling thread holds the trial permit."""
        return self._trial_thread == threading.get_ident()

    def _open(self, reason: str, changes: list[tuple[CircuitState, CircuitState, str]]) -> None:
        """Move to OPEN and start the reset timer."""
        changes.append((self._state, CircuitState.OPEN, reason))
        self._state = CircuitState.OPEN
        self._opened_at = self._clock()
        self._opened_count += 1
        self._trial_thread = None

    def _close(self, reason: str, changes: list[tuple[CircuitState, CircuitState, str]]) -> None:
        """Move to CLOSED with a fresh count."""
        changes.append((self._state, CircuitState.CLOSED, reason))
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._trial_thread = None

    def _notify(self, changes: list[tuple[CircuitState, CircuitState, str]]) -> None:
        """Emit a ``CircuitChanged`` event per transition, outside the lock."""
        if self._emit is None:
            return
        for old, new, reason in changes:
            self._emit(CircuitChanged(self.provider, old, new, reason))
