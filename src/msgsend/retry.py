"""Retry on one provider: exponential backoff that honours Retry-After (SPEC §3).

``RetryPolicy`` says what to wait; ``call_with_retry`` runs the attempts with the
``backoff`` library (imported when a first attempt failed), which counts the tries and
gives up on errors that are not ``retryable``. The wait itself is taken by our wait
generator through an injected ``wait`` function rather than by backoff's ``time.sleep``:
that keeps the waits exact (no jitter unless asked), lets tests run without sleeping, and
lets the message service cut a wait short when the provider's circuit opens meanwhile (the
next attempt would fail fast anyway).

A Retry-After longer than ``max_retry_after`` is not slept: the error is not retried on
that provider (``should_retry`` says no), and the message service pauses the provider
until then instead (the message goes on by fallback, or waits in bulk).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

from .errors import MsgsendError, RateLimitedError

__all__ = ["RetryPolicy", "call_with_retry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one provider, after urllib3's ``Retry``.

    ``total`` counts every attempt, the first included. The wait before attempt n+1 is
    ``backoff_factor x multiplier^(n-1)`` seconds, at most ``backoff_max``; a 429's
    Retry-After replaces it when longer (and may exceed ``backoff_max``: the provider
    said so), up to ``max_retry_after``: a longer one is not waited for on this message.
    """

    total: int = 3
    backoff_factor: float = 1.0
    multiplier: float = 2.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.0
    respect_retry_after: bool = True
    max_retry_after: float = 60.0

    def backoff_for(self, retry_number: int) -> float:
        """Return the exponential wait before retry ``retry_number`` (1 = the second attempt)."""
        delay = self.backoff_factor * self.multiplier ** (retry_number - 1)
        delay = min(delay, self.backoff_max)
        if self.backoff_jitter:
            delay += random.uniform(0, self.backoff_jitter)
        return max(0.0, delay)

    def too_long(self, error: BaseException) -> bool:
        """Return whether ``error`` asks for a wait longer than ``max_retry_after``."""
        return (
            self.respect_retry_after
            and isinstance(error, RateLimitedError)
            and error.retry_after is not None
            and error.retry_after > self.max_retry_after
        )

    def should_retry(self, error: BaseException, attempts: int) -> bool:
        """Return whether attempt ``attempts + 1`` on the same provider may follow ``error``."""
        return (
            attempts < self.total
            and bool(getattr(error, "retryable", False))
            and not self.too_long(error)
        )

    def wait_for(self, retry_number: int, error: BaseException | None) -> float:
        """Return the wait before retry ``retry_number`` after ``error``."""
        delay = self.backoff_for(retry_number)
        if (
            self.respect_retry_after
            and isinstance(error, RateLimitedError)
            and error.retry_after is not None
        ):
            delay = max(delay, error.retry_after)
        return delay

    @classmethod
    def from_config(
        cls,
        max_attempts: int,
        delay: float,
        multiplier: float,
        max_delay: float,
        max_retry_after: float = 60.0,
    ) -> RetryPolicy:
        """Return the policy of a ``[retry]`` table (delays in seconds)."""
        return cls(
            total=max_attempts,
            backoff_factor=delay,
            multiplier=multiplier,
            backoff_max=max_delay,
            max_retry_after=max_retry_after,
        )


def call_with_retry(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    wait: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, float, MsgsendError], None] | None = None,
) -> T:
    """Call ``attempt`` until it succeeds, ``policy.should_retry`` says no, or ``total`` tries.

    ``on_retry(retry_number, delay, error)`` is called before each wait. The last error
    is re-raised unchanged.
    """
    retry_number = 0

    def wait_before_retry(error: MsgsendError) -> None:
        nonlocal retry_number
        retry_number += 1
        delay = policy.wait_for(retry_number, error)
        if on_retry is not None:
            on_retry(retry_number, delay, error)
        if delay > 0:
            wait(delay)

    def giveup(error: Exception) -> bool:
        # The count is max_tries's; should_retry adds the kind of error and Retry-After.
        return not policy.should_retry(error, 0)

    try:
        return attempt()
    except MsgsendError as exc:
        if policy.total <= 1 or giveup(exc):
            raise
        wait_before_retry(exc)
    # Only a message whose first attempt failed gets here: backoff imports asyncio, ~20 ms of
    # CPU that a `msgsend send` delivered at once would pay (docs/benchmarks.md, 3b).
    import backoff

    def waits() -> Generator[float, MsgsendError | None, None]:
        error = yield 0.0  # primed by backoff with send(None)
        while True:
            if error is not None:
                wait_before_retry(error)
            # backoff sleeps for what we yield: we have waited already.
            error = yield 0.0

    retrying = backoff.on_exception(
        waits,
        MsgsendError,
        max_tries=policy.total - 1,  # the attempts after the first
        giveup=giveup,
        jitter=None,
        logger=None,
    )(attempt)
    return retrying()
