"""Operator alerts (SPEC §9): a log record on ``msgsend.alerts`` plus an optional webhook POST.

An alert is logged at once and, when a webhook is configured, posted by one background daemon
thread, so a slow or dead webhook never slows or fails a send. Each (type, provider) pair fires
at most once per ``window`` seconds. Messages are masked with ``logs.mask_text`` before they
are logged or posted, so a full phone number never leaves the process.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from .events import (
    AttemptFinished,
    CircuitChanged,
    Event,
    FellBack,
    LimiterStoreChanged,
    Listener,
    RunStopped,
)
from .logs import mask_text
from .redact import redact_endpoint

if TYPE_CHECKING:
    import requests

__all__ = ["ALERT_TYPES", "Alert", "Alerter", "SupportsEmit", "alert_for", "alert_listener"]

ALERT_TYPES: Final = (
    "auth-failed",
    "provider-down",
    "provider-recovered",
    "rate-limit",
    "fallback",
    "limiter-store-down",
    "limiter-store-recovered",
    "run-stopped",
)

_LEVELS: Final = {
    "auth-failed": logging.ERROR,
    "provider-down": logging.ERROR,
    "limiter-store-down": logging.ERROR,
    "run-stopped": logging.ERROR,
}
_EMOJI: Final = {
    "auth-failed": ":lock:",
    "provider-down": ":rotating_light:",
    "provider-recovered": ":white_check_mark:",
    "rate-limit": ":hourglass_flowing_sand:",
    "fallback": ":twisted_rightwards_arrows:",
    "limiter-store-down": ":no_entry:",
    "limiter-store-recovered": ":white_check_mark:",
    "run-stopped": ":octagonal_sign:",
}
_STOP: Final = object()
#: apprise's NotifyType values per alert type
_APPRISE_TYPES: Final = {
    "auth-failed": "failure",
    "provider-down": "failure",
    "provider-recovered": "success",
}


def _utc_now() -> _dt.datetime:
    """Return the current time in UTC."""
    return _dt.datetime.now(_dt.UTC)


def alert_for(event: Event) -> tuple[str, str | None, str] | None:
    """Return the alert ``(type, provider, message)`` that ``event`` calls for, or None.

    Every alert rule of msgsend is here. A circuit that fails its half-open trial and opens
    again is still the same outage: ``provider-down`` fires when it first opens, and
    ``provider-recovered`` when a trial closes it.

    >>> alert_for(CircuitChanged("sms", "half-open", "closed", "trial request succeeded"))
    ('provider-recovered', 'sms', 'sms answers again; circuit closed')
    """
    match event:
        case AttemptFinished(result="auth-failed", provider=provider, error=error):
            return "auth-failed", provider, f"{error}; {provider} is disabled for this run"
        case AttemptFinished(result="rate-limited", provider=provider):
            # Only the provider's own throttling: the client-side pacing is a metric.
            status = event.status_code or 429
            after = (
                f"; it asks to wait {event.retry_after:g} s"
                if event.retry_after is not None
                else ""
            )
            return "rate-limit", provider, f"{provider} throttled a request (HTTP {status}){after}"
        case FellBack(from_provider=source, to_provider=target, reason=reason):
            return "fallback", source, f"messages fall back from {source} to {target}: {reason}"
        case CircuitChanged(provider=provider, new="open", old=old) if old != "half-open":
            return "provider-down", provider, f"{provider} circuit opened: {event.reason}"
        case CircuitChanged(provider=provider, new="closed", old="half-open"):
            return "provider-recovered", provider, f"{provider} answers again; circuit closed"
        case LimiterStoreChanged(down=True, reason=reason):
            return "limiter-store-down", None, f"{reason}; sends wait for it"
        case LimiterStoreChanged(down=False, store=store):
            return "limiter-store-recovered", None, f"the rate limiter's {store} store answers"
        case RunStopped(reason=reason, exit_code=code, left=left):
            # A bulk run gave up before its end (outage, refused credentials, systematic
            # refusal): someone has to resume it.
            return "run-stopped", None, f"bulk stopped (exit {code}), {left} rows left: {reason}"
    return None


class SupportsEmit(Protocol):
    """What the alert rules need of an alerter (``Alerter``)."""

    def emit(self, type: str, provider: str | None, message: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class _AlertListener:
    alerter: SupportsEmit

    def __call__(self, event: Event) -> None:
        alert = alert_for(event)
        if alert is not None:
            self.alerter.emit(*alert)


def alert_listener(alerter: SupportsEmit) -> Listener:
    """Return the event listener that raises on ``alerter`` the alerts of ``alert_for``.

    The one way events reach an alerter (``Sender(alerter=...)`` and the CLI subscribe it).
    Listeners of the same alerter are equal: subscribing it twice has no effect.
    """
    return _AlertListener(alerter)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, as logged, posted and listed in the run report.

    ``suppressed`` counts the alerts of the same type and provider that the grouping window
    held back since the previous one was sent; ``host``, ``run_id`` and ``input`` say where
    it comes from (several cron hosts, several runs a night).
    """

    type: str
    provider: str | None
    message: str
    at: str  # ISO-8601, UTC
    suppressed: int = 0
    host: str | None = None
    run_id: str | None = None
    input: str | None = None

    @property
    def summary(self) -> str:
        """Return ``type provider: message (+N suppressed)`` for logs."""
        who = f" {self.provider}" if self.provider else ""
        more = (
            f" (and {self.suppressed} more like it since the last alert)" if self.suppressed else ""
        )
        return f"{self.type}{who}: {self.message}{more}"

    @property
    def origin(self) -> str:
        """Return ``host, run ID, input FILE`` (what is known)."""
        parts = [
            self.host or "",
            f"run {self.run_id}" if self.run_id else "",
            f"input {self.input}" if self.input else "",
        ]
        return ", ".join(part for part in parts if part)

    @property
    def text(self) -> str:
        """Return one Slack-friendly line."""
        origin = f" [{self.origin}]" if self.origin else ""
        return f"{_EMOJI.get(self.type, ':warning:')} msgsend {self.summary}{origin}"

    def to_json(self) -> dict[str, Any]:
        """Return the webhook body: type, provider, message, at, origin and Slack's ``text``."""
        return {
            "type": self.type,
            "provider": self.provider,
            "message": self.message,
            "at": self.at,
            "suppressed": self.suppressed,
            "host": self.host,
            "run_id": self.run_id,
            "input": self.input,
            "text": self.text,
        }


class Alerter:
    """Log alerts on ``msgsend.alerts`` and post them to a webhook, deduplicated per window.

    ``emit`` never raises and never blocks on the network: the POST is queued to one daemon
    worker (bounded queue; an alert that does not fit is dropped and counted). ``close``
    flushes what is queued within its timeout, then stops the worker.

        alerter = Alerter("https://hooks.slack.com/services/...")
        alerter.emit("provider-down", "kakaotalk", "circuit open after 5 failures")
        alerter.close()
    """

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
        session: requests.Session | None = None,
        logger: logging.Logger | None = None,
        queue_size: int = 100,
        wall_clock: Callable[[], _dt.datetime] = _utc_now,
        context: Mapping[str, str | None] | None = None,
        apprise_urls: Sequence[str] = (),
    ) -> None:
        self.webhook_url = webhook_url or None
        self.apprise_urls = tuple(apprise_urls)
        #: ``host``, ``run_id`` and ``input`` (the input file's name), stamped on every alert
        self.context = dict(context or {})
        self.window = window
        self.timeout = timeout
        self._clock = clock
        self._wall_clock = wall_clock
        self._session = session
        self._logger = logger if logger is not None else logging.getLogger("msgsend.alerts")
        self._webhook_logger = self._logger.getChild("webhook")
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str | None], float] = {}
        self._held: dict[tuple[str, str | None], int] = {}
        self._apprise: Any = None
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._closed = False
        self._abandon = threading.Event()
        self._sent = 0
        self._failed = 0
        self._dropped = 0
        self._suppressed = 0
        #: every alert that was logged (not the deduplicated ones), for the run report
        self.emitted: list[Alert] = []

    # -- counters --------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        """Return the deliveries that succeeded (webhook posts answered 2xx, apprise notices)."""
        return self._sent

    @property
    def failed(self) -> int:
        """Return the deliveries that failed (error, timeout, non-2xx, apprise refused)."""
        return self._failed

    @property
    def dropped(self) -> int:
        """Return the alerts never posted: queue full, or still queued when ``close`` gave up."""
        return self._dropped

    @property
    def suppressed(self) -> int:
        """Return the alerts skipped as duplicates within the window."""
        return self._suppressed

    @property
    def pending(self) -> int:
        """Return the posts waiting in the queue."""
        return self._queue.qsize()

    @property
    def worker_alive(self) -> bool:
        """Return whether the webhook worker thread is running."""
        return self._thread is not None and self._thread.is_alive()

    # -- emitting --------------------------------------------------------------------------

    def emit(self, type: str, provider: str | None, message: str) -> bool:
        """Log an alert and queue its webhook post; return False if it was a duplicate."""
        try:
            return self._emit(type, provider, message)
        except Exception:  # an alert must never fail a send
            with contextlib.suppress(Exception):
                self._logger.exception("could not emit alert %s", type)
            return False

    def _emit(self, type: str, provider: str | None, message: str) -> bool:
        """Do the work of ``emit``."""
        now = self._clock()
        key = (type, provider)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.window:
                self._suppressed += 1
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            at = self._wall_clock().astimezone(_dt.UTC).isoformat(timespec="seconds")
            alert = Alert(
                type,
                provider,
                mask_text(message),
                at.replace("+00:00", "Z"),
                suppressed=self._held.pop(key, 0),
                host=self.context.get("host"),
                run_id=self.context.get("run_id"),
                input=self.context.get("input"),
            )
            self.emitted.append(alert)
        self._logger.log(
            _LEVELS.get(type, logging.WARNING),
            "%s",
            alert.summary,
            extra={
                "alert_type": type,
                "provider": provider,
                "suppressed": alert.suppressed,
                "host": alert.host,
                "run_id": alert.run_id,
                "input": alert.input,
            },
        )
        if self.webhook_url or self.apprise_urls:
            self._enqueue(alert)
        return True

    def _enqueue(self, alert: Alert) -> None:
        """Hand the alert to the worker, or drop it if the queue is full or closed."""
        with self._lock:
            if self._closed:
                self._dropped += 1
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="msgsend-alert-webhook", daemon=True
                )
                self._thread.start()
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            with self._lock:
                self._dropped += 1
            self._webhook_logger.warning(
                "alert webhook queue is full; %s alert dropped", alert.type
            )

    # -- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        """Post queued alerts until told to stop."""
        session = self._session
        owned = session is None
        if session is None:
            import requests

            session = requests.Session()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if not isinstance(item, Alert):
                    continue
                if self._abandon.is_set():
                    with self._lock:
                        self._dropped += 1
                    continue
                if self.webhook_url:
                    self._post(session, item)
                if self.apprise_urls:
                    self._notify_apprise(item)
        finally:
            if owned:
                session.close()

    def _notify_apprise(self, alert: Alert) -> None:
        """Send one alert to the Apprise URLs (Slack, Teams, Telegram, e-mail...); never raise.

        apprise is imported here, on the first alert of a run that configures it (its import
        alone takes about 200 ms).
        """
        try:
            if self._apprise is None:
                import apprise

                self._apprise = apprise.Apprise()
                for url in self.apprise_urls:
                    if not self._apprise.add(url):
                        self._webhook_logger.warning(
                            "apprise URL %s is not one apprise knows", redact_endpoint(url)
                        )
            ok = bool(
                self._apprise.notify(
                    title=f"msgsend {alert.type}"
                    + (f" {alert.provider}" if alert.provider else ""),
                    body=alert.text,
                    notify_type=_APPRISE_TYPES.get(alert.type, "warning"),
                )
            )
        except Exception as exc:  # a plugin's bug, a missing module: never kill the worker
            ok = False
            self._webhook_logger.warning("apprise delivery failed: %s", type(exc).__name__)
        self._count(ok)
        if not ok:
            self._webhook_logger.warning("apprise could not deliver the %s alert", alert.type)

    def _count(self, ok: bool) -> None:
        """Count one delivery (a webhook post or an apprise notification)."""
        with self._lock:
            if ok:
                self._sent += 1
            else:
                self._failed += 1

    def _post(self, session: requests.Session, alert: Alert) -> None:
        """POST one alert; count the outcome; never raise."""
        assert self.webhook_url is not None
        where = redact_endpoint(self.webhook_url)
        try:
            response = session.post(
                self.webhook_url,
                json=alert.to_json(),
                timeout=self.timeout,
                allow_redirects=False,
            )
            try:
                ok = 200 <= response.status_code < 300
                status = response.status_code
            finally:
                response.close()
        except Exception as exc:  # requests errors, and anything else: never kill the worker
            self._count(False)
            # Only the exception's class: its text repeats the URL, whose path may be a secret.
            self._webhook_logger.warning("alert webhook %s failed: %s", where, type(exc).__name__)
            return
        self._count(ok)
        if not ok:
            self._webhook_logger.warning("alert webhook %s answered HTTP %d", where, status)

    # -- shutting down ---------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Flush queued webhook posts within ``timeout`` seconds, then stop the worker."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None or not thread.is_alive():
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
        thread.join(max(0.0, deadline - time.monotonic()))
        if not thread.is_alive():
            return
        # The webhook is hanging: give up on what is queued; the daemon worker exits once
        # its current request times out and never holds up the process.
        self._abandon.set()
        abandoned = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Alert):
                abandoned += 1
        with self._lock:
            self._dropped += abandoned
        # The drain also took the stop marker if it was queued: queue it again, last.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        self._webhook_logger.warning(
            "alert webhook did not finish within %.1f s; %d queued alert(s) dropped",
            timeout,
            abandoned,
        )

    def __enter__(self) -> Alerter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
