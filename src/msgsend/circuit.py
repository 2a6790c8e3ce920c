"""A per-provider circuit breaker (SPEC §3): stop calling a provider that is down.

The circuit opens on the failure *rate* of the provider's recent messages, not on a run of
consecutive failures, so that a few recipients the provider refuses (blocked numbers,
carrier errors: real providers answer 500 for those) never open it while the others go
through, and a real outage still opens it within about ``minimum_calls`` messages. This is
resilience4j's ``COUNT_BASED`` sliding window (``slidingWindowSize``,
``minimumNumberOfCalls``, ``failureRateThreshold``) with one difference: an entry of the
window is a *message*, not an attempt. A message enters the window with its first outcome on
the provider; its retries add nothing, except that a message that failed and then got
through on a retry turns into a success. A recipient the provider refuses then weighs one
failure, not ``max-attempts`` failures, which is what separates it from an outage; and an
outage is seen as soon as ``minimum_calls`` messages have *begun* to fail, without waiting
for their retries.

States::

    CLOSED ──(>= minimum_calls messages in the window and
              failures / calls >= failure_rate_threshold)──▶ OPEN
    OPEN ──(reset_timeout elapsed, next caller)──▶ HALF_OPEN: that caller is the single trial
    HALF_OPEN ──(trial succeeds, or the provider answers 4xx or 429)──▶ CLOSED (window
              emptied)
    HALF_OPEN ──(trial fails: no answer, timeout, 502/503/504 ...)──▶ OPEN (timer restarts)
    HALF_OPEN ──(trial answered 500)──▶ HALF_OPEN, that message *suspect*: its own retries
              go on (not as trials), and the next *other* message is the next trial
              (2xx/4xx/429: CLOSED; no answer: OPEN; 500: suspect too, until
              ``minimum_calls`` messages in a row answered 500: OPEN)
    any ──(disable(): 401/403)──▶ DISABLED, for the rest of the process

Besides its state, a provider can be *paused* (``pause``): it asked, with a Retry-After
longer than ``max-retry-after``, not to be called before some time. While paused or open,
``before_request`` raises a ``ProviderUnavailableError`` (``ProviderPausedError`` /
``CircuitOpenError``) carrying ``available_in``, and ``available_in()`` tells a waiting caller
(a bulk run whose rows wait out an outage) how long that is.

The breaker is written here rather than taken from pybreaker because pybreaker holds one lock
around the whole wrapped call, which serialises every concurrent send of a worker pool behind
one HTTP request. Here the lock guards only the bookkeeping; the request runs outside it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar

from .errors import (
    AuthError,
    CircuitOpenError,
    HTTPStatusError,
    ProviderDisabledError,
    ProviderPausedError,
    RateLimitedError,
)
from .events import CircuitChanged, Emit, ProviderPaused

__all__ = ["CircuitBreaker", "CircuitState"]

T = TypeVar("T")

#: A trial answered 500 is ambiguous: 500 is what a provider answers when it refuses one
#: request (a blocked number, a carrier error), and also what a broken provider answers to
#: everything. Reopening on it lets waiting rows that the provider refuses be the trials of
#: every half-open and keep the circuit open (a file whose first 60 numbers are refused
#: reopened it 55 times, 30 s each, when a second 500 reopened it); closing on it lets a
#: provider that answers 500 to everything go on serving every message, and flaps the
#: provider-down/-recovered alerts. So it decides nothing: that message is *suspect* (it
#: settles on its own, its retries are let through and not counted), and the next message,
#: a different one, is the next trial. Only ``minimum_calls`` different messages answered 500
#: in a row reopen the circuit: the evidence that opened it from closed, and what a provider
#: answering 500 to everything costs per ``reset_timeout``.
_REFUSED_ONE = 500

_Changes = list[tuple["CircuitState", "CircuitState", str]]


class CircuitState(StrEnum):
    """The state of one provider's circuit."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"
    DISABLED = "disabled"


class CircuitBreaker:
    """Fail fast on a provider whose recent messages mostly failed; probe it again later.

    Thread-safe: many workers may share one breaker. The window holds the outcome of the
    last ``window_size`` messages: an outage failure (``exc.outage``: connect errors,
    timeouts, 5xx) is a failure; any other answer of the provider (2xx, an invalid-request
    4xx) is a success, since the provider is up; throttling and errors that say nothing
    about the provider are not recorded. In half-open an HTTP answer other than 500 proves
    the provider is up and closes the circuit; a 500 hands the decision to a second trial
    message (see ``_REFUSED_ONE``). An ``AuthError`` disables the provider. Only the caller that
    was admitted as the half-open trial (same thread) decides the trial; reports from
    requests admitted earlier are ignored while open or half-open. A trial that never
    reports expires after ``trial_timeout`` (default ``reset_timeout``) and the next caller
    becomes the trial.

        breaker = CircuitBreaker("kakaotalk", window_size=20, minimum_calls=10, emit=events.emit)
        result = breaker.call(lambda: provider.send(message))
    """

    def __init__(
        self,
        provider: str,
        *,
        window_size: int = 20,
        minimum_calls: int = 10,
        failure_rate_threshold: float = 0.5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Emit | None = None,
        trial_timeout: float | None = None,
    ) -> None:
        if window_size < 1:
            raise ValueError("window_size must be at least 1")
        if not 1 <= minimum_calls <= window_size:
            raise ValueError("minimum_calls must be from 1 to window_size")
        if not 0 < failure_rate_threshold <= 1:
            raise ValueError("failure_rate_threshold must be above 0 and at most 1")
        if reset_timeout <= 0:
            raise ValueError("reset_timeout must be positive")
        self.provider = provider
        self.window_size = window_size
        self.minimum_calls = minimum_calls
        self.failure_rate_threshold = float(failure_rate_threshold)
        self.reset_timeout = float(reset_timeout)
        self.trial_timeout = float(trial_timeout if trial_timeout is not None else reset_timeout)
        self._clock = clock
        self._emit = emit
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        #: one ``[failed, message]`` per message; ``_pending`` finds a failed message's entry
        #: (by ``id``: the entry holds the message, so the id is not reused meanwhile)
        self._window: deque[list[Any]] = deque()
        self._pending: dict[int, list[Any]] = {}
        self._failures = 0
        self._opened_count = 0
        self._opened_at = 0.0
        self._paused_until = -math.inf
        self._pause_reason = ""
        self._trial_thread: int | None = None
        self._trial_started = 0.0
        #: the messages whose half-open trial was answered 500, in a row: the next trial
        #: must be another message; ``minimum_calls`` of them reopen the circuit
        self._suspects: list[object | None] = []
        self._last_error = ""
        self._open_reason = ""
        self._disabled_reason: str | None = None

    # -- read-only views -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """Return the current state (OPEN turns HALF_OPEN at the next ``before_request``)."""
        return self._state

    @property
    def calls(self) -> int:
        """Return how many messages the window holds now."""
        return len(self._window)

    @property
    def failures(self) -> int:
        """Return how many of the messages in the window failed with an outage."""
        return self._failures

    @property
    def answering(self) -> bool:
        """Return whether the provider got messages through lately (a success in the window)."""
        return self._state is CircuitState.CLOSED and len(self._window) > self._failures

    @property
    def failure_rate(self) -> float | None:
        """Return failures / calls in the window, or None below ``minimum_calls``."""
        with self._lock:
            calls = len(self._window)
            return self._failures / calls if calls >= self.minimum_calls else None

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

    def paused_for(self) -> float:
        """Return how long the provider's pause (a long Retry-After) still lasts (0: none)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def available_in(self) -> float:
        """Return the seconds until a request may be tried: 0 now, ``math.inf`` if disabled.

        Open: until the trial; paused: until the pause ends; half-open with the trial in
        flight: until that trial expires at the latest (it usually decides sooner).
        """
        with self._lock:
            now = self._clock()
            wait = max(0.0, self._paused_until - now)
            if self._state is CircuitState.DISABLED:
                return math.inf
            if self._state is CircuitState.OPEN:
                wait = max(wait, self.reset_timeout - (now - self._opened_at))
            elif self._state is CircuitState.HALF_OPEN and self._trial_thread is not None:
                wait = max(wait, self.trial_timeout - (now - self._trial_started))
            return max(0.0, wait)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.provider!r}, state={self._state.value!r}, "
            f"failures={self._failures}/{len(self._window)} of {self.window_size})"
        )

    # -- the protocol ----------------------------------------------------------------------

    def before_request(self, *, message: object | None = None) -> None:
        """Admit a request, or raise ProviderUnavailableError / ProviderDisabledError.

        ``message``: the message the request is an attempt of (as in ``record_failure``);
        the retries of a half-open trial answered 500 are admitted without being trials.
        """
        changes: _Changes = []
        try:
            with self._lock:
                self._admit(changes, message)
        finally:
            self._notify(changes)

    def record_success(self, *, message: object | None = None) -> None:
        """Report that an admitted request succeeded (an attempt of ``message``, if given)."""
        changes: _Changes = []
        with self._lock:
            if self._state is CircuitState.CLOSED:
                self._count(False, message, changes)
            elif self._state is CircuitState.HALF_OPEN and (
                self._is_trial() or self._is_suspect(message)
            ):
                self._close("trial request succeeded", changes)
        self._notify(changes)

    def record_failure(
        self, exc: BaseException, *, message: object | None = None, count: bool = True
    ) -> None:
        """Report that an admitted request failed with ``exc``.

        ``message`` identifies the message the attempt was for (any object, the same for
        all its attempts): the window holds one entry per message. Without it every call
        is a message of its own. ``count=False`` keeps the attempt out of the window (a
        recipient that an earlier channel refused too) while it still decides a trial.
        """
        if isinstance(exc, AuthError):
            self.disable(str(exc))
            return
        outage = bool(getattr(exc, "outage", False))
        changes: _Changes = []
        with self._lock:
            if self._state is CircuitState.CLOSED:
                if not count:
                    pass
                elif outage:
                    self._last_error = str(exc)
                    self._count(True, message, changes)
                elif isinstance(exc, HTTPStatusError) and not isinstance(exc, RateLimitedError):
                    self._count(False, message, changes)  # the provider answered: it is up
            elif self._state is CircuitState.HALF_OPEN and self._is_trial():
                refused_one = getattr(exc, "status_code", None) == _REFUSED_ONE
                if refused_one and len(self._suspects) + 1 < self.minimum_calls:
                    # Ambiguous (see _REFUSED_ONE): another message decides.
                    self._last_error = str(exc)
                    self._suspects.append(message)
                    self._trial_thread = None
                elif outage:
                    self._last_error = str(exc)
                    reason = (
                        f"{len(self._suspects) + 1} trial messages in a row"
                        if refused_one
                        else "trial request"
                    )
                    self._open(f"{reason} failed: {exc}", changes)
                elif isinstance(exc, HTTPStatusError):
                    self._close(f"provider answered the trial (HTTP {exc.status_code})", changes)
                else:
                    # Says nothing about the provider (a bug, an interrupt): free the slot.
                    self._trial_thread = None
        self._notify(changes)

    def pause(self, seconds: float, reason: str) -> None:
        """Refuse requests for ``seconds`` (a Retry-After too long to wait out per message)."""
        if not seconds > 0:
            return
        with self._lock:
            until = self._clock() + seconds
            if until <= self._paused_until:
                return
            self._paused_until = until
            self._pause_reason = reason
        if self._emit is not None:
            self._emit(ProviderPaused(self.provider, seconds, reason))

    def disable(self, reason: str) -> None:
        """Disable the provider for the rest of the process (credentials refused)."""
        changes: _Changes = []
        with self._lock:
            if self._state is not CircuitState.DISABLED:
                changes.append((self._state, CircuitState.DISABLED, reason))
                self._state = CircuitState.DISABLED
                self._disabled_reason = reason
                self._trial_thread = None
        self._notify(changes)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` through the breaker as one message, reporting its outcome."""
        self.before_request()
        try:
            result = fn()
        except BaseException as exc:
            self.record_failure(exc)
            raise
        self.record_success()
        return result

    # -- internals (called with the lock held) ---------------------------------------------

    def _admit(self, changes: _Changes, message: object | None = None) -> None:
        """Decide whether the calling thread may send now."""
        state = self._state
        if state is CircuitState.DISABLED:
            raise ProviderDisabledError(
                f"{self.provider} is disabled for this run: {self._disabled_reason}",
                provider=self.provider,
            )
        now = self._clock()
        paused = self._paused_until - now
        if paused > 0:
            raise ProviderPausedError(
                f"{self.provider} is paused for {paused:.1f} s more ({self._pause_reason})",
                provider=self.provider,
                available_in=paused,
            )
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.OPEN:
            remaining = self.reset_timeout - (now - self._opened_at)
            if remaining > 0:
                raise CircuitOpenError(
                    f"{self.provider} circuit is open ({self._open_reason}); "
                    f"next trial in {remaining:.1f} s",
                    provider=self.provider,
                    available_in=remaining,
                )
            changes.append(
                (state, CircuitState.HALF_OPEN, "reset timeout elapsed; sending one trial")
            )
            self._state = CircuitState.HALF_OPEN
            self._grant_trial(now)
            return
        # HALF_OPEN: a suspect's retries go (not as trials); one trial at a time; a trial
        # that never reported expires.
        if self._is_suspect(message):
            return
        in_flight = now - self._trial_started
        if self._trial_thread is not None and in_flight < self.trial_timeout:
            raise CircuitOpenError(
                f"{self.provider} circuit is half-open and its trial request is in flight",
                provider=self.provider,
                available_in=self.trial_timeout - in_flight,
            )
        self._grant_trial(now)

    def _count(self, failed: bool, message: object | None, changes: _Changes) -> None:
        """Add one message's outcome to the window (or amend it); open on the failure rate."""
        if message is not None:
            entry = self._pending.get(id(message))
            if entry is not None:
                if not failed:  # it failed before and got through now
                    entry[0] = False
                    self._failures -= 1
                    del self._pending[id(message)]
                return
        entry = [failed, message]
        self._window.append(entry)
        if failed:
            self._failures += 1
            if message is not None:
                self._pending[id(message)] = entry
        if len(self._window) > self.window_size:
            old_failed, old_message = self._window.popleft()
            if old_failed:
                self._failures -= 1
                if old_message is not None:
                    self._pending.pop(id(old_message), None)
        calls = len(self._window)
        if (
            failed
            and calls >= self.minimum_calls
            and self._failures >= self.failure_rate_threshold * calls
        ):
            self._open(
                f"{self._failures} of the last {calls} messages failed "
                f"({self._failures / calls:.0%}), last: {self._last_error}",
                changes,
            )

    def _grant_trial(self, now: float) -> None:
        """Make the calling thread the half-open trial."""
        self._trial_thread = threading.get_ident()
        self._trial_started = now

    def _is_trial(self) -> bool:
        """Return whether the calling thread holds the trial permit."""
        return self._trial_thread == threading.get_ident()

    def _is_suspect(self, message: object | None) -> bool:
        """Return whether ``message`` is a half-open trial that was answered 500."""
        return message is not None and any(message is suspect for suspect in self._suspects)

    def _open(self, reason: str, changes: _Changes) -> None:
        """Move to OPEN and start the reset timer."""
        changes.append((self._state, CircuitState.OPEN, reason))
        self._state = CircuitState.OPEN
        self._open_reason = reason
        self._opened_at = self._clock()
        self._opened_count += 1
        self._trial_thread = None
        self._reset_window()

    def _close(self, reason: str, changes: _Changes) -> None:
        """Move to CLOSED with an empty window."""
        changes.append((self._state, CircuitState.CLOSED, reason))
        self._state = CircuitState.CLOSED
        self._trial_thread = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._suspects = []
        self._window.clear()
        self._pending.clear()
        self._failures = 0

    def _notify(self, changes: _Changes) -> None:
        """Emit a ``CircuitChanged`` event per transition, outside the lock."""
        if self._emit is None:
            return
        for old, new, reason in changes:
            self._emit(CircuitChanged(self.provider, old, new, reason))
