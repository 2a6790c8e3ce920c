"""Test doubles for the orchestration layers: no HTTP, no real sleeping, no real clock."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgsend.errors import (
    AuthError,
    ConnectError,
    ConnectionLostError,
    InputError,
    InvalidRequestError,
    RateLimitedError,
    ReadTimeoutError,
    ServerError,
)
from msgsend.models import Channel, DeliveryResult, HealthStatus, ProviderHealth
from msgsend.providers.base import ProviderResponse
from msgsend.ratelimit import Lease

__all__ = [
    "FakeClock",
    "FakeLimiter",
    "FakeProvider",
    "FakeSender",
    "FakeSleep",
    "auth_error",
    "connect_error",
    "connection_lost",
    "invalid_request",
    "ok",
    "rate_limited",
    "read_timeout",
    "server_error",
]


def ok(status_code: int = 200) -> ProviderResponse:
    """Return a successful provider answer."""
    return ProviderResponse(status_code, 0.0, "")


def connect_error(provider: str = "kakaotalk") -> ConnectError:
    return ConnectError(f"{provider}: cannot connect (Connection refused)", provider=provider)


def read_timeout(provider: str = "kakaotalk") -> ReadTimeoutError:
    return ReadTimeoutError(f"{provider}: no answer within 5 s", provider=provider)


def connection_lost(provider: str = "kakaotalk") -> ConnectionLostError:
    return ConnectionLostError(f"{provider}: connection lost after sending", provider=provider)


def rate_limited(provider: str = "kakaotalk", retry_after: float | None = None) -> RateLimitedError:
    return RateLimitedError(
        f"{provider} answered 429 Too Many Requests", provider=provider, retry_after=retry_after
    )


def server_error(provider: str = "kakaotalk", status_code: int = 503) -> ServerError:
    return ServerError(
        f"{provider} answered HTTP {status_code}", provider=provider, status_code=status_code
    )


def auth_error(provider: str = "kakaotalk", status_code: int = 401) -> AuthError:
    return AuthError(
        f"{provider} refused the credentials (HTTP {status_code})",
        provider=provider,
        status_code=status_code,
    )


def invalid_request(provider: str = "kakaotalk", status_code: int = 400) -> InvalidRequestError:
    return InvalidRequestError(
        f"{provider} rejected the message (HTTP {status_code})",
        provider=provider,
        status_code=status_code,
    )


class FakeProvider:
    """A provider whose answers are queued by the test (like llm's ``MockModel``).

    ``enqueue(item, ...)`` queues results (``ProviderResponse``) or exceptions (instances or
    zero-argument callables returning one), consumed one per ``send``. With the queue empty,
    ``send`` succeeds with ``default`` (HTTP 200). ``calls`` logs every ``(recipient, text)``,
    ``message_ids`` the ``message_id`` of each call.
    """

    def __init__(
        self,
        name: str = "kakaotalk",
        *,
        default: ProviderResponse | BaseException | None = None,
        health: ProviderHealth | None = None,
    ) -> None:
        self.name = name
        self.default = default if default is not None else ok()
        self.health = health or ProviderHealth(name, HealthStatus.UP, 1.0, "HTTP 400", 400)
        self.calls: list[tuple[str, str]] = []
        self.message_ids: list[str | None] = []
        self.pings = 0
        self.closed = False
        self._queue: deque[Any] = deque()

    def __repr__(self) -> str:
        return f"FakeProvider({self.name!r}, calls={len(self.calls)})"

    def enqueue(self, *items: Any) -> FakeProvider:
        """Queue the next answers, in order; return self for chaining."""
        self._queue.extend(items)
        return self

    @property
    def pending(self) -> int:
        """Return how many queued answers were not consumed."""
        return len(self._queue)

    def send(self, recipient: str, text: str, *, message_id: str | None = None) -> ProviderResponse:
        self.calls.append((recipient, text))
        self.message_ids.append(message_id)
        item = self._queue.popleft() if self._queue else self.default
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            item = item()
            if isinstance(item, BaseException):
                raise item
        return item

    def ping(self) -> ProviderHealth:
        self.pings += 1
        return self.health

    def close(self) -> None:
        self.closed = True


class FakeClock:
    """A monotonic clock the test moves by hand (``clock()`` reads it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSleep:
    """Record every wait instead of sleeping; optionally move a ``FakeClock`` along."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.waits: list[float] = []
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)

    @property
    def total(self) -> float:
        return sum(self.waits)


@dataclass
class FakeLimiter:
    """A rate limiter that never blocks: ``acquire`` returns ``wait`` and logs the call."""

    wait: float = 0.0
    acquired: list[str] = field(default_factory=list)
    throttled: list[tuple[str, float | None]] = field(default_factory=list)
    closed: bool = False

    settled: list[str] = field(default_factory=list)

    def acquire(self, providers: str | Sequence[str], timeout: float | None = None) -> Lease:
        provider = providers if isinstance(providers, str) else providers[0]
        self.acquired.append(provider)

        def end(lease: Lease, sent: bool) -> None:
            self.settled.append(lease.provider)

        return Lease(provider, self.wait, 0.0, 60.0, end)

    def note_throttled(self, provider: str, retry_after: float | None) -> None:
        self.throttled.append((provider, retry_after))

    def close(self) -> None:
        self.closed = True


class FakeSender:
    """A thread-safe stand-in for Sender that records calls.

    ``fail``: recipients answered ``failed``; ``invalid``: recipients refused with InputError;
    ``latency``: seconds each send takes; ``gate``: every send waits for it (``entered`` counts
    the sends waiting).
    """

    def __init__(
        self,
        *,
        fail: Iterable[str] = (),
        invalid: Iterable[str] = (),
        latency: float = 0.0,
        gate: threading.Event | None = None,
        uncertain: Iterable[str] = (),
    ) -> None:
        self.fail = set(fail)
        self.invalid = set(invalid)
        self.uncertain = set(uncertain)
        self.latency = latency
        self.gate = gate
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, Channel, bool | None]] = []
        #: the ``message_id`` of each call, in the order of ``calls``
        self.message_ids: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def send(
        self,
        recipient: str,
        text: str,
        *,
        via: Channel = Channel.KAKAOTALK,
        fallback: bool | None = None,
        message_id: str | None = None,
    ) -> DeliveryResult:
        with self.lock:
            self.calls.append((recipient, text, via, fallback))
            self.message_ids.append(message_id)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.entered.release()
        try:
            if self.gate is not None:
                assert self.gate.wait(10), "the test never opened the gate"
            if self.latency:
                time.sleep(self.latency)
        finally:
            with self.lock:
                self.in_flight -= 1
        if recipient in self.invalid:
            raise InputError("kakaotalk rejected the message (HTTP 400)")
        if recipient in self.fail:
            return DeliveryResult(
                recipient,
                "failed",
                channel="sms",
                fallback=True,
                attempts=6,
                error="every provider failed (kakaotalk: HTTP 503; sms: HTTP 503)",
                latency_ms=30.0,
                retries=4,
            )
        if via is Channel.KAKAOTALK and recipient.endswith("9"):
            return DeliveryResult(
                recipient, "sent", channel="sms", fallback=True, attempts=4, latency_ms=20.0
            )
        return DeliveryResult(
            recipient,
            "sent",
            channel=str(via),
            attempts=2 if recipient in self.uncertain else 1,
            latency_ms=10.0,
            uncertain=1 if recipient in self.uncertain else 0,
            retries=1 if recipient in self.uncertain else 0,
        )

    @property
    def recipients(self) -> list[str]:
        with self.lock:
            return [call[0] for call in self.calls]
