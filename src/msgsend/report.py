"""The run report: what the seed's monitoring dashboard asks for, gathered while sending.

Response time p50/p95/max per provider, success and failure counts, retries, fallbacks,
read timeouts (possible duplicates), and the time spent waiting for the rate limiter.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProviderStats", "RunStats", "percentile"]


def percentile(values: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of ``values`` (``fraction`` in 0..1), None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    # Nearest rank is ceil(fraction * n); the epsilon keeps 0.55 * 100 = 55.000000000000007
    # at rank 55. (round(x + 0.5) was one rank too high whenever fraction * n was whole.)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    index = max(0, min(len(ordered) - 1, rank - 1))
    return ordered[index]


@dataclass
class ProviderStats:
    """Counters of one provider for one run."""

    requests: int = 0
    results: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
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
        lat = self.latencies
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
                "p50": _ms(percentile(lat, 0.50)),
                "p95": _ms(percentile(lat, 0.95)),
                "max": _ms(max(lat) if lat else None),
            },
            "limiter": {
                "waits": self.limiter_waits,
                "wait_seconds": round(self.limiter_wait_seconds, 3),
                "max_wait_seconds": round(self.limiter_wait_max, 3),
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class RunStats:
    """Thread-safe per-provider counters that the message service feeds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.providers: dict[str, ProviderStats] = {}
        self.fallbacks = 0

    def _get(self, provider: str) -> ProviderStats:
        stats = self.providers.get(provider)
        if stats is None:
            stats = self.providers[provider] = ProviderStats()
        return stats

    def request(self, provider: str, result: str, seconds: float | None) -> None:
        """Count one HTTP attempt and its outcome; ``seconds`` None when nothing was sent."""
        with self._lock:
            stats = self._get(provider)
            stats.results[result] = stats.results.get(result, 0) + 1
            if seconds is not None:
                stats.requests += 1
                stats.latencies.append(seconds)

    def retry(self, provider: str) -> None:
        """Count one retry on ``provider``."""
        with self._lock:
            self._get(provider).retries += 1

    def limiter_wait(self, provider: str, seconds: float) -> None:
        """Add the time one acquire waited for the rate limiter."""
        with self._lock:
            stats = self._get(provider)
            if seconds > 0:
                stats.limiter_waits += 1
                stats.limiter_wait_seconds += seconds
                stats.limiter_wait_max = max(stats.limiter_wait_max, seconds)

    def message(self, provider: str | None, delivered: bool) -> None:
        """Count a message's final outcome on the channel that delivered it or failed last."""
        if provider is None:
            return
        with self._lock:
            stats = self._get(provider)
            if delivered:
                stats.delivered += 1
            else:
                stats.failed += 1

    def fallback(self, from_provider: str) -> None:
        """Count one fallback away from ``from_provider``."""
        with self._lock:
            self.fallbacks += 1
            self._get(from_provider).fallbacks_from += 1

    def uncertain(self, provider: str) -> None:
        """Count a read timeout or lost connection: the message may have been delivered."""
        with self._lock:
            self._get(provider).uncertain += 1

    def circuit_opened(self, provider: str) -> None:
        """Count one opening of ``provider``'s circuit."""
        with self._lock:
            self._get(provider).circuit_opened += 1

    def to_json(self) -> dict[str, Any]:
        """Return the run report as a JSON-able dict."""
        with self._lock:
            return {
                "providers": {name: s.to_json() for name, s in sorted(self.providers.items())},
                "fallbacks": self.fallbacks,
            }
