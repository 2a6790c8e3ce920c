"""What happens while msgsend sends, as typed events: the core emits, observers listen.

Like httpx's ``event_hooks``: the sender, the circuit breaker, the rate limiter and the bulk
run describe what happened once, as a frozen dataclass passed to ``Events.emit``; the run
statistics (``report.RunStats``), the Prometheus metrics (``metrics.Metrics``), the alert
rules (``alerts``), the log lines (``logs.log_event``) and the progress display are
listeners. A new counter is a line in one listener; a new observable thing is a new event
type here plus the listener lines that care about it.

Events never carry a full phone number or a message text: ``recipient`` fields are masked
(``010-****-5678``) by the emitter.

    events = Events()
    events.subscribe(print)
    events.emit(FellBack("kakaotalk", "sms", "010-****-5678", "HTTP 503"))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "AttemptFinished",
    "CircuitChanged",
    "Emit",
    "Event",
    "Events",
    "FellBack",
    "LimiterStoreChanged",
    "LimiterWaited",
    "Listener",
    "MessageFinished",
    "Overflowed",
    "ProviderPaused",
    "ProviderProbed",
    "RetryScheduled",
    "RowSettled",
    "RunPaused",
    "RunResumed",
    "RunStopped",
]

_log = logging.getLogger("msgsend.events")


class Event:
    """The base of every event (a frozen dataclass)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class AttemptFinished(Event):
    """One attempt on one provider ended (or was refused before sending).

    ``result`` is ``success`` or the error's ``kind`` (``server-error``, ``rate-limited``,
    ``circuit-open``...); ``seconds`` is the request's duration, None when nothing was sent
    (circuit open, provider disabled).
    """

    provider: str
    result: str
    seconds: float | None
    recipient: str = ""
    attempt: int = 0
    status_code: int | None = None
    error: str | None = None
    #: the request may have been delivered although it failed (read timeout, lost answer)
    uncertain: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        """Return whether the provider accepted the message."""
        return self.result == "success"


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """A failed attempt will be retried on the same provider after ``delay`` seconds."""

    provider: str
    retry: int
    delay: float
    error: str
    recipient: str = ""


@dataclass(frozen=True, slots=True)
class FellBack(Event):
    """A message moves from one provider to the next (KakaoTalk → SMS)."""

    from_provider: str
    to_provider: str
    recipient: str
    reason: str


@dataclass(frozen=True, slots=True)
class LimiterWaited(Event):
    """An attempt took a slot of ``provider``'s rate limit after waiting ``seconds`` (≥ 0)."""

    provider: str
    seconds: float


@dataclass(frozen=True, slots=True)
class LimiterStoreChanged(Event):
    """The rate limiter's store went down (``down``) or answers again; ``store`` names it.

    While it is down nothing is sent (never unpaced): bulk rows wait for it.
    """

    store: str
    down: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitChanged(Event):
    """A provider's circuit breaker moved from ``old`` to ``new`` (``circuit.CircuitState``)."""

    provider: str
    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProviderPaused(Event):
    """A provider asked to be left alone longer than ``max-retry-after``: paused ``seconds``."""

    provider: str
    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class MessageFinished(Event):
    """``Sender.send`` settled one message: ``status`` is ``sent`` or ``failed``."""

    recipient: str
    status: str
    channel: str | None
    fallback: bool
    attempts: int
    retries: int = 0
    error: str | None = None
    latency_ms: float | None = None
    limiter_wait_s: float = 0.0
    uncertain: int = 0
    #: ``kakaotalk``, ``sms`` or ``lms`` for the channel that delivered (or last tried)
    kind: str | None = None
    #: with ``fallback``: the channel the message left (fell back or overflowed from)
    fell_back_from: str | None = None

    @property
    def ok(self) -> bool:
        """Return whether the message was delivered."""
        return self.status == "sent"


@dataclass(frozen=True, slots=True)
class RowSettled(Event):
    """A bulk row got its line in the results (or preview) file: emitted once per row.

    ``status`` is ``sent``, ``failed``, ``invalid``, ``duplicate`` or ``ready`` (dry run).
    Rows that never reached the sender (invalid, duplicate) have ``attempts`` 0. The fields
    are what the bulk report counts (``report.RowCounts``): the results line's ``error``
    (its notes too), the message's ``kind``, and for a row the sender handled its
    ``retries``, its read timeouts (``uncertain``) and whether it ``overflow``-ed to SMS.
    """

    row: int
    recipient_masked: str
    status: str
    channel: str | None = None
    fallback: bool = False
    attempts: int = 0
    error: str | None = None
    latency_ms: float | None = None
    #: ``kakaotalk``, ``sms`` or ``lms`` (a long SMS) for a sent, failed or ready row
    kind: str | None = None
    #: sent by SMS because KakaoTalk's budget was full (``fallback`` is set too)
    overflow: bool = False
    retries: int = 0
    #: read timeouts: the message may have been delivered more than once
    uncertain: int = 0


@dataclass(frozen=True, slots=True)
class Overflowed(Event):
    """KakaoTalk's budget had no free slot and SMS's had: the message goes by SMS now.

    Not a fallback (nothing failed): no ``fallback`` alert; the row says ``overflow``.
    """

    from_provider: str
    to_provider: str
    recipient: str


@dataclass(frozen=True, slots=True)
class RunPaused(Event):
    """A bulk run is not sending for now: ``kind`` is ``outage`` or ``quiet-hours``.

    ``until`` (wall clock) is when it tries again, if known. During an outage the run emits
    this again each time that moment passes and it goes on waiting.
    """

    kind: str
    reason: str
    until: datetime | None = None

    def describe(self) -> str:
        """Return the progress line's words: ``waiting until 08:00:00: REASON``.

        The time comes first: a reason may say "until" itself (a limiter store that is down:
        "nothing is sent until it answers"), and a narrow line cuts the reason's end, not it.
        """
        if self.until is None:
            return f"waiting: {self.reason}"
        return f"waiting until {self.until:%H:%M:%S}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RunResumed(Event):
    """A paused bulk run sends again (a delivery ended the outage, or quiet hours ended)."""

    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunStopped(Event):
    """A bulk run stopped before the end of its file; ``left`` rows stay for ``--resume``.

    ``reason`` is the error that stopped it (an outage past ``max-outage``: exit 75; refused
    credentials or a systematic refusal: exit 78).
    """

    reason: str
    exit_code: int
    left: int


@dataclass(frozen=True, slots=True)
class ProviderProbed(Event):
    """A health probe (``msgsend ping``) found ``provider`` ``status`` (up, throttled, down,
    auth-failed) in ``seconds`` (None: not probed, the rate limit was in use)."""

    provider: str
    status: str
    seconds: float | None


#: A listener takes every event and ignores the types it does not handle.
Listener = Callable[[Event], None]
#: What an emitter holds: ``Events.emit`` (or any function of the same shape).
Emit = Callable[[Event], None]


class Events:
    """The one way events leave the core: ``emit`` calls every listener, in order.

    A listener that raises is logged and skipped; it never fails a send. Subscribing the
    same listener twice has no effect. Thread-safe: workers emit concurrently.
    """

    def __init__(self, *listeners: Listener) -> None:
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()
        for listener in listeners:
            self.subscribe(listener)

    def subscribe(self, listener: Listener) -> Listener:
        """Call ``listener`` for every event from now on; return it."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no error if it was not subscribed)."""
        with self._lock:
            self._listeners = tuple(item for item in self._listeners if item != listener)

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every listener."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("event listener %r failed on %s", listener, type(event).__name__)
