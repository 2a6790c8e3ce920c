"""Limiters that stand in for a :class:`RateLimiter` whose store could not be opened at start.

:class:`StoreAwaitedLimiter` opens the store at a later acquire (a bulk run whose sqlite lock
another process held: its rows wait, as for a Redis down at start); :class:`UnavailableLimiter`
refuses every acquire with the error of the start (``msgsend ping``: degraded, never unpaced).
Neither ever grants a slot without the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from msgsend.errors import LimiterUnavailableError, MsgsendError
from msgsend.events import Emit, LimiterStoreChanged

if TYPE_CHECKING:
    from .core import Lease

__all__ = ["StoreAwaitedLimiter", "UnavailableLimiter"]


class StoreAwaitedLimiter:
    """A limiter whose store was unavailable at start (its lock held): opened at a later acquire.

    ``build(emit)`` opens the real limiter. Until it succeeds, each acquire raises its
    LimiterUnavailableError (one thread tries to open it at a time; the others get the last
    error at once), so a bulk run's rows wait within ``[bulk] max-outage`` as for a Redis that
    does not answer at start. Its opening is the store's recovery (the store-down event came
    from the first attempt); the failed attempts emit nothing more, the opened limiter's events
    go to ``emit`` as usual. Any other error of ``build`` is unavailability too: rows wait,
    never fail untried.
    """

    def __init__(
        self,
        build: Callable[[Emit], Any],
        error: LimiterUnavailableError,
        emit: Emit | None = None,
    ) -> None:
        self._build = build
        self._error = error
        self._emit = emit
        self._real: Any = None
        self._opening = threading.Lock()

    def _limiter(self) -> Any:
        real = self._real
        if real is not None:
            return real
        if not self._opening.acquire(blocking=False):
            raise self._error
        try:
            if self._real is None:
                try:
                    self._real = self._build(self._forward)
                except LimiterUnavailableError as exc:
                    self._error = exc
                    raise
                except MsgsendError as exc:
                    self._error = LimiterUnavailableError(str(exc))
                    raise self._error from exc
                self._forward(LimiterStoreChanged(self._real.store, False, "answers again"))
            return self._real
        finally:
            self._opening.release()

    def _forward(self, event: Any) -> None:
        if self._real is not None and self._emit is not None:
            self._emit(event)

    def acquire(self, providers: str | Sequence[str], timeout: float | None = None) -> Lease:
        """Open the store if needed (or raise its error), then wait for a slot as usual."""
        return self._limiter().acquire(providers, timeout)  # type: ignore[no-any-return]

    def note_throttled(self, provider: str, retry_after: float | None) -> None:
        """Pass a provider's 429 on to the opened limiter (nothing to note before)."""
        if self._real is not None:
            self._real.note_throttled(provider, retry_after)

    def close(self) -> None:
        """Close the opened limiter, if it was opened."""
        if self._real is not None:
            self._real.close()


class UnavailableLimiter:
    """A limiter whose store could not be reached at start: every acquire says so again."""

    def __init__(self, error: LimiterUnavailableError) -> None:
        self.error = error

    def acquire(self, providers: str | Sequence[str], timeout: float | None = None) -> Lease:
        """Raise the error of the start: nothing is sent unpaced."""
        raise self.error

    def note_throttled(self, provider: str, retry_after: float | None) -> None:
        """Note nothing: there is no store to note in."""
        return None
