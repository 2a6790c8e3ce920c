"""The run report: what the seed's monitoring dashboard asks for, gathered while sending.

Response time p50/p95/max per provider, success and failure counts, retries, fallbacks,
read timeouts (possible duplicates), and the time spent waiting for the rate limiter.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from .events import (
    AttemptFinished,
    CircuitChanged,
    Event,
    LimiterWaited,
    MessageFinished,
    RetryScheduled,
    RowSettled,
)

__all__ = ["LatencyHistogram", "ProviderStats", "RowCounts", "RunStats"]

#: how many invalid / failed rows the counts keep for display (the results file has them all)
REPORT_ROWS_CAP = 100


class LatencyHistogram:
    """Latencies in milliseconds as a bounded log-bucket histogram (buckets 2% wide).

    Memory stays the same however many requests a run makes; quantiles are within about 2%.
    """

    _BASE = 0.1
    _LOG_RATIO = math.log(1.02)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.max: float | None = None

    def add(self, ms: float) -> None:
        """Count one latency of ``ms`` milliseconds."""
        index = 0 if ms <= self._BASE else int(math.log(ms / self._BASE) / self._LOG_RATIO) + 1
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.max = ms if self.max is None else max(self.max, ms)

    def quantile(self, q: float) -> float | None:
        """Return the ``q`` quantile (0..1) in milliseconds, None before the first latency."""
        if not self.n:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                if index == 0:
                    return self._BASE
                middle = self._BASE * math.exp((index - 0.5) * self._LOG_RATIO)
                # A bucket's middle may lie above the largest latency in it: never show a
                # quantile above the max shown beside it.
                assert self.max is not None
                return round(min(middle, self.max), 1)
        return None  # pragma: no cover


@dataclass
class ProviderStats:
    """Counters of one provider for one run."""

    requests: int = 0
    results: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    retries: int = 0
    limiter_waits: int = 0
    limiter_wait_seconds: float = 0.0
    limiter_wait_max: float = 0.0
    delivered: int = 0
    failed: int = 0
    fallbacks_from: int = 0
    uncertain: int = 0
    circuit_opened: int = 0

    def to_json(self) -> dict[str, Any]:
        """Return the provider's part of the run report."""
        successes = self.results.get("success", 0)
        return {
            "requests": self.requests,
            "results": dict(sorted(self.results.items())),
            "success_rate": round(successes / self.requests, 4) if self.requests else None,
            "delivered": self.delivered,
            "failed": self.failed,
            "retries": self.retries,
            "fallbacks_from": self.fallbacks_from,
            "uncertain": self.uncertain,
            "circuit_opened": self.circuit_opened,
            "latency_ms": {
                "p50": self.latency.quantile(0.50),
                "p95": self.latency.quantile(0.95),
                "max": None if self.latency.max is None else round(self.latency.max, 1),
            },
            "limiter": {
                "waits": self.limiter_waits,
                "wait_seconds": round(self.limiter_wait_seconds, 3),
                "max_wait_seconds": round(self.limiter_wait_max, 3),
            },
        }


@dataclass(slots=True, kw_only=True)
class RowCounts:
    """A bulk run's rows per status, channel and kind: the one listener of ``RowSettled``.

    ``bulk.BulkReport`` (what ``send_bulk`` returns, ``--json``'s counts, the summary) is a
    ``RowCounts``, and so are the progress line's counts: a new row status or count is a line
    in ``on_event``. Not locked: a run hands it one event at a time.
    """

    sent: int = 0
    failed: int = 0
    invalid: int = 0
    duplicate: int = 0
    #: dry run: rows that would be sent
    ready: int = 0
    sent_by_channel: dict[str, int] = field(default_factory=dict)
    #: messages sent (dry run: ready) per kind: ``kakaotalk``, ``sms``, ``lms`` (a long SMS)
    kinds: dict[str, int] = field(default_factory=dict)
    #: rows that fell back (whether or not SMS then delivered: as the run report's per-provider
    #: ``fallbacks_from`` counts them, so --json says one thing)
    fallbacks: int = 0
    #: rows sent by SMS because KakaoTalk's budget was full (counted in ``fallbacks`` too)
    overflows: int = 0
    #: rows that saw a read timeout: they may have been delivered more than once
    uncertain: int = 0
    retries: int = 0
    #: the first ``REPORT_ROWS_CAP`` invalid / failed rows and why
    invalid_rows: list[tuple[int, str]] = field(default_factory=list)
    failed_rows: list[tuple[int, str]] = field(default_factory=list)

    def on_event(self, event: Event) -> None:
        """Count a settled row (an events listener; other events are ignored)."""
        if not isinstance(event, RowSettled):
            return
        status = event.status
        if event.kind and status in ("sent", "ready"):
            self.kinds[event.kind] = self.kinds.get(event.kind, 0) + 1
        self.fallbacks += event.fallback
        self.overflows += event.overflow
        self.retries += event.retries
        self.uncertain += bool(event.uncertain)
        if status == "sent":
            self.sent += 1
            name = event.channel or "unknown"
            self.sent_by_channel[name] = self.sent_by_channel.get(name, 0) + 1
        elif status == "failed":
            self.failed += 1
            if len(self.failed_rows) < REPORT_ROWS_CAP:
                self.failed_rows.append((event.row, event.error or "failed"))
        elif status == "invalid":
            self.invalid += 1
            if len(self.invalid_rows) < REPORT_ROWS_CAP:
                self.invalid_rows.append((event.row, event.error or "invalid"))
        elif status == "duplicate":
            self.duplicate += 1
        elif status == "ready":
            self.ready += 1

    @property
    def processed(self) -> int:
        """Rows settled by this run (skipped ones, settled by an earlier run, excluded)."""
        return self.sent + self.failed + self.invalid + self.duplicate + self.ready


class RunStats:
    """Thread-safe per-provider counters: a listener of the sender's events.

    stats = RunStats()
    sender.events.subscribe(stats.on_event)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.providers: dict[str, ProviderStats] = {}
        self.fallbacks = 0

    def _get(self, provider: str) -> ProviderStats:
        stats = self.providers.get(provider)
        if stats is None:
            stats = self.providers[provider] = ProviderStats()
        return stats

    def on_event(self, event: Event) -> None:
        """Count what ``event`` says; ignore the events that carry no counter."""
        with self._lock:
            match event:
                case AttemptFinished(provider=provider, result=result, seconds=seconds):
                    stats = self._get(provider)
                    stats.results[result] = stats.results.get(result, 0) + 1
                    if seconds is not None:  # None: refused before anything was sent
                        stats.requests += 1
                        stats.latency.add(seconds * 1000)
                    if event.uncertain:
                        stats.uncertain += 1
                case RetryScheduled(provider=provider):
                    self._get(provider).retries += 1
                case LimiterWaited(provider=provider, seconds=seconds):
                    stats = self._get(provider)
                    if seconds > 0:
                        stats.limiter_waits += 1
                        stats.limiter_wait_seconds += seconds
                        stats.limiter_wait_max = max(stats.limiter_wait_max, seconds)
                case MessageFinished(channel=str(channel)):
                    stats = self._get(channel)
                    if event.ok:
                        stats.delivered += 1
                    else:
                        stats.failed += 1
                    # Once per message, when it settles (as bulk's results and --json count
                    # it): not per FellBack, which a row that waits for a channel emits on
                    # each try; an overflowed message counts too.
                    if event.fallback:
                        self.fallbacks += 1
                        if event.fell_back_from is not None:
                            self._get(event.fell_back_from).fallbacks_from += 1
                case CircuitChanged(provider=provider, new="open"):
                    self._get(provider).circuit_opened += 1

    def to_json(self) -> dict[str, Any]:
        """Return the run report as a JSON-able dict."""
        with self._lock:
            return {
                "providers": {name: s.to_json() for name, s in sorted(self.providers.items())},
                "fallbacks": self.fallbacks,
            }
