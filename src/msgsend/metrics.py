"""Prometheus metrics for one msgsend run (SPEC §9), in a registry of their own.

Every run gets a fresh ``CollectorRegistry`` (never the process-global one), so a textfile or
a Pushgateway push holds exactly this run's numbers. prometheus_client is imported when a
``Metrics`` is created, not when this module is imported, to keep ``msgsend --version`` fast.
Label values are checked against closed sets and anything unexpected becomes ``other``, so a
recipient or a message can never end up in a label.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from .errors import MsgsendError
from .events import (
    AttemptFinished,
    CircuitChanged,
    Event,
    LimiterWaited,
    MessageFinished,
    Overflowed,
    ProviderProbed,
    RetryScheduled,
    RowSettled,
)
from .models import CHANNELS, MessageKind
from .redact import redact_url

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

__all__ = [
    "CHANNEL_LABELS",
    "DURATION_BUCKETS",
    "KIND_LABELS",
    "MESSAGE_OUTCOMES",
    "REQUEST_RESULTS",
    "Metrics",
    "MetricsExportError",
]

CHANNEL_LABELS: Final = (*CHANNELS, "none")
MESSAGE_OUTCOMES: Final = ("sent", "failed", "invalid", "duplicate")
#: what a message cost (``models.message_kind``); ``none`` for rows never sent
KIND_LABELS: Final = (*(kind.value for kind in MessageKind), "none")
REQUEST_RESULTS: Final = (
    "success",
    "connect-error",
    "read-timeout",
    "connection-lost",
    "rate-limited",
    "server-error",
    "auth-failed",
    "invalid-request",
    "circuit-open",
    "provider-paused",
    "provider-disabled",
    "error",
)
#: 5 ms .. 10 s: a local sandbox answers in milliseconds, a timeout is 5 s (connect) + read.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: results that are not HTTP requests at all: counted, but kept out of the duration histogram
_NOT_SENT: Final = frozenset({"circuit-open", "provider-paused", "provider-disabled"})
_PROVIDER_LABEL = re.compile(r"^[a-z][a-z0-9_\-]{0,31}$")
_OTHER: Final = "other"
#: ``MsgsendError.kind`` values that differ from their result label
_RESULT_ALIASES: Final = {
    "connect": "connect-error",
    "transport": "error",
    "http": "error",
    "provider": "error",
}


class MetricsExportError(MsgsendError):
    """The metrics could not be pushed; the run's outcome is unaffected."""

    kind = "metrics"


def _safe_label(value: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else ``other``."""
    return value if value in allowed else _OTHER


def _provider_label(provider: str) -> str:
    """Return a provider name fit for a label, or ``other``."""
    return provider if _PROVIDER_LABEL.match(provider) else _OTHER


class Metrics:
    """The counters, histogram and gauges of one run, in their own registry.

    metrics = Metrics()
    metrics.observe_request("kakaotalk", "success", 0.042)
    metrics.finish_run(success=True)
    metrics.write_textfile(Path("/var/lib/node_exporter/msgsend.prom"))
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        providers: Iterable[str] = CHANNELS,
        wall_clock: Callable[[], float] = time.time,
        limits: Mapping[str, tuple[int, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self._wall_clock = wall_clock
        self._clock = clock
        #: (count, period) of each provider's rate limit, for the usage ratio
        self._limits = dict(limits or {})
        self._slots: dict[str, deque[float]] = {}
        reg = self.registry
        self.messages_total: Counter = Counter(
            "msgsend_messages_total",
            "Messages processed, by the channel that delivered (or last tried), outcome and "
            "kind (kakaotalk, sms, or lms: a long SMS).",
            ["channel", "outcome", "kind"],
            registry=reg,
        )
        self.requests_total: Counter = Counter(
            "msgsend_requests_total",
            "Provider requests, by result (circuit-open, provider-paused: not sent).",
            ["provider", "result"],
            registry=reg,
        )
        self.request_duration_seconds: Histogram = Histogram(
            "msgsend_request_duration_seconds",
            "Duration of one HTTP request to a provider.",
            ["provider"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self.retries_total: Counter = Counter(
            "msgsend_retries_total",
            "Attempts beyond the first on the same provider.",
            ["provider"],
            registry=reg,
        )
        self.fallbacks_total: Counter = Counter(
            "msgsend_fallbacks_total",
            "Messages that left KakaoTalk for SMS (fallback or overflow), once per message.",
            registry=reg,
        )
        self.overflows_total: Counter = Counter(
            "msgsend_overflows_total",
            "Messages sent by SMS because KakaoTalk's rate limit had no free slot (overflow).",
            registry=reg,
        )
        self.rate_limit_wait_seconds_total: Counter = Counter(
            "msgsend_rate_limit_wait_seconds_total",
            "Time spent waiting for the client-side rate limiter.",
            ["provider"],
            registry=reg,
        )
        self.circuit_open_total: Counter = Counter(
            "msgsend_circuit_open_total",
            "Times the provider's circuit breaker opened.",
            ["provider"],
            registry=reg,
        )
        self.rate_limit_usage_ratio: Gauge = Gauge(
            "msgsend_rate_limit_usage_ratio",
            "Highest share of the provider's rate limit this run took within one period of the "
            "limit (1: at the limit, sends waited for slots).",
            ["provider"],
            registry=reg,
        )
        self.provider_up: Gauge = Gauge(
            "msgsend_provider_up",
            "1 if the health probe found the provider able to deliver (up or throttled), else 0.",
            ["provider"],
            registry=reg,
        )
        self.provider_probe_seconds: Gauge = Gauge(
            "msgsend_provider_probe_seconds",
            "Duration of the provider's health probe.",
            ["provider"],
            registry=reg,
        )
        self.last_run_timestamp_seconds: Gauge = Gauge(
            "msgsend_last_run_timestamp_seconds",
            "Unix time at which the run finished.",
            registry=reg,
        )
        self.last_run_success: Gauge = Gauge(
            "msgsend_last_run_success",
            "1 if every message of the run was delivered, else 0.",
            registry=reg,
        )
        # Series that exist from the start, so rate() and alerts see a 0 rather than nothing.
        for channel, kind in (("kakaotalk", "kakaotalk"), ("sms", "sms"), ("sms", "lms")):
            for outcome in ("sent", "failed"):
                self.messages_total.labels(channel=channel, outcome=outcome, kind=kind)
        for outcome in ("invalid", "duplicate"):
            self.messages_total.labels(channel="none", outcome=outcome, kind="none")
        for provider in providers:
            label = _provider_label(provider)
            self.requests_total.labels(provider=label, result="success")
            self.retries_total.labels(provider=label)
            self.rate_limit_wait_seconds_total.labels(provider=label)
            self.circuit_open_total.labels(provider=label)

    # -- observations ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Update the series ``event`` concerns (the listener ``Sender`` and bulk feed)."""
        match event:
            case AttemptFinished(provider=provider, result=result, seconds=seconds):
                self.observe_request(provider, result, seconds)
            case RetryScheduled(provider=provider):
                self.observe_retry(provider)
            case Overflowed():
                self.overflows_total.inc()
            case LimiterWaited(provider=provider, seconds=seconds):
                self.observe_limiter_wait(provider, seconds)
                self.observe_slot(provider)
            case CircuitChanged(provider=provider, new="open"):
                self.observe_circuit_open(provider)
            case MessageFinished(channel=channel, status=status, kind=kind):
                self.observe_message(channel, status, kind)
                if event.fallback:  # once per message, as --json's ``fallbacks`` counts it
                    self.observe_fallback()
            case ProviderProbed(provider=provider, status=status, seconds=seconds):
                self.observe_probe(provider, up=status in ("up", "throttled"), seconds=seconds)
            case RowSettled(status="invalid" | "duplicate" as status):
                # Rows that never reached the sender; the others are MessageFinished events.
                self.observe_message(None, status)

    def observe_request(self, provider: str, result: str, seconds: float | None) -> None:
        """Count one provider request and, if it was sent, its duration.

        ``result`` is a label of ``REQUEST_RESULTS`` or an error's ``kind`` (``connect`` is
        counted as ``connect-error``); anything else is counted as ``other``.
        """
        label = _provider_label(provider)
        result = _safe_label(_RESULT_ALIASES.get(result, result), REQUEST_RESULTS)
        self.requests_total.labels(provider=label, result=result).inc()
        if seconds is not None and result not in _NOT_SENT:
            self.request_duration_seconds.labels(provider=label).observe(max(0.0, seconds))

    def observe_message(self, channel: str | None, outcome: str, kind: str | None = None) -> None:
        """Count one message's final outcome (channel and kind None: never sent)."""
        self.messages_total.labels(
            channel=_safe_label(channel or "none", CHANNEL_LABELS),
            outcome=_safe_label(outcome, MESSAGE_OUTCOMES),
            kind=_safe_label(kind or "none", KIND_LABELS),
        ).inc()

    def observe_retry(self, provider: str) -> None:
        """Count one retry on ``provider``."""
        self.retries_total.labels(provider=_provider_label(provider)).inc()

    def observe_fallback(self) -> None:
        """Count one KakaoTalk → SMS fallback."""
        self.fallbacks_total.inc()

    def observe_limiter_wait(self, provider: str, seconds: float) -> None:
        """Add time spent waiting for ``provider``'s rate limiter."""
        if seconds > 0:
            self.rate_limit_wait_seconds_total.labels(provider=_provider_label(provider)).inc(
                seconds
            )

    def observe_slot(self, provider: str) -> None:
        """Count one slot taken of ``provider``'s rate limit (for the usage ratio)."""
        limit = self._limits.get(provider)
        if limit is None:
            return
        count, period = limit
        now = self._clock()
        taken = self._slots.setdefault(provider, deque(maxlen=max(1, count)))
        taken.append(now)
        while taken and now - taken[0] >= period:
            taken.popleft()
        gauge = self.rate_limit_usage_ratio.labels(provider=_provider_label(provider))
        ratio = min(1.0, len(taken) / count)
        if ratio > (self.sample("msgsend_rate_limit_usage_ratio", {"provider": provider}) or 0):
            gauge.set(ratio)

    def observe_probe(self, provider: str, *, up: bool, seconds: float | None) -> None:
        """Record one health probe of ``provider``."""
        label = _provider_label(provider)
        self.provider_up.labels(provider=label).set(1 if up else 0)
        if seconds is not None:
            self.provider_probe_seconds.labels(provider=label).set(seconds)

    def observe_circuit_open(self, provider: str) -> None:
        """Count one opening of ``provider``'s circuit."""
        self.circuit_open_total.labels(provider=_provider_label(provider)).inc()

    def finish_run(self, success: bool) -> None:
        """Stamp the end of the run and whether every message was delivered."""
        self.last_run_timestamp_seconds.set(self._wall_clock())
        self.last_run_success.set(1 if success else 0)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """Return the value of one sample (e.g. ``msgsend_fallbacks_total``), or None."""
        return self.registry.get_sample_value(name, dict(labels or {}))

    # -- export ----------------------------------------------------------------------------

    def to_text(self) -> str:
        """Return the metrics in the Prometheus text format."""
        from prometheus_client import generate_latest

        return generate_latest(self._exposed()).decode("utf-8")

    def _exposed(self) -> Collector:
        """Return the registry as exported: without the ``*_created`` series.

        A per-run file has no use for counter creation times, and they double the series;
        prometheus_client can only switch them off process-wide, so they are filtered here.
        """
        from prometheus_client.registry import Collector

        registry = self.registry

        class WithoutCreated(Collector):
            def collect(self) -> Iterable[Metric]:
                for family in registry.collect():
                    family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                    yield family

        return WithoutCreated()

    def write_textfile(self, path: Path) -> None:
        """Write the metrics to ``path`` atomically (node_exporter textfile collector), mode 0644.

        The temporary file is a hidden ``.NAME.*.tmp`` in the same directory, so the collector,
        which reads ``*.prom``, never sees a half-written file. Raises ``OSError`` (with
        ``strerror`` and ``filename``) if the directory is missing or not writable.

        A target that exists and is not a regular file (``/dev/null``, ``/dev/stdout``, a
        FIFO) is written in place: replacing it would turn a device node into a regular file
        (run as root, ``--metrics-file /dev/null`` would replace the host's ``/dev/null``).
        """
        path = Path(path)
        data = self.to_text().encode("utf-8")
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            # O_NONBLOCK: a FIFO nobody reads fails at once (ENXIO) instead of hanging.
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "wb") as handle:
                os.set_blocking(fd, True)
                handle.write(data)
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def push(
        self,
        gateway_url: str,
        job: str = "msgsend",
        timeout: float = 5.0,
        *,
        grouping_key: Mapping[str, str] | None = None,
        replace: bool = True,
    ) -> None:
        """Push the metrics to a Pushgateway; raise MetricsExportError if that fails.

        ``replace`` (PUT) swaps the whole group for this run's numbers; otherwise POST
        replaces only the metric names pushed. The group is ``job`` plus ``grouping_key``,
        by default ``{"instance": <hostname>}`` so several cron hosts do not overwrite each
        other; pass ``{}`` for the job alone.
        """
        from prometheus_client import push_to_gateway, pushadd_to_gateway

        key = dict(grouping_key) if grouping_key is not None else {"instance": socket.gethostname()}
        send = push_to_gateway if replace else pushadd_to_gateway
        where = redact_url(gateway_url)
        try:
            url, handler = _with_basic_auth(gateway_url)
            send(
                url,
                job=job,
                registry=self._exposed(),
                grouping_key=key,
                timeout=timeout,
                handler=handler,
            )
        except Exception as exc:  # URLError, HTTPError, OSError, ValueError: one clear error
            reason = _describe(exc)
            raise MetricsExportError(
                f"could not push metrics to {where} (job {job!r}): {reason}; "
                "check --pushgateway and that the Pushgateway is running"
            ) from exc


def _describe(exc: BaseException) -> str:
    """Return a short reason for a push failure, without the URL."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _with_basic_auth(url: str) -> tuple[str, Callable[..., Callable[[], None]]]:
    """Return ``url`` without its ``user:password@`` and a handler sending them as Basic auth.

    urllib would take the userinfo for part of the host name ("Name or service not known"):
    a Pushgateway behind basic auth (``http://user:pw@pushgateway:9091``) could not be used.
    """
    import base64
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None:
        return url, _closing_handler
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    auth = ("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode("ascii"))

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        return _closing_handler(url, method, timeout, [*headers, auth], data)

    return urlunsplit(parts._replace(netloc=netloc)), handler


def _closing_handler(
    url: str,
    method: str,
    timeout: float | None,
    headers: list[tuple[str, str]],
    data: bytes,
) -> Callable[[], None]:
    """Return a Pushgateway request that closes its response (prometheus_client's leaks it)."""
    import urllib.error
    import urllib.request

    def handle() -> None:
        request = urllib.request.Request(url, data=data, method=method)
        for name, value in headers:
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise

    return handle
