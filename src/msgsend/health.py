"""Health checks: is each provider reachable and does it accept our credentials?

A probe is an authenticated ``POST`` of ``{}``: the provider validates the body after the
credentials, so 400/422 means up and authenticated while nothing is delivered (SPEC §6).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import LimiterTimeout, LimiterUnavailableError
from .events import ProviderProbed
from .models import HealthStatus, ProviderHealth

if TYPE_CHECKING:
    from .client import Sender

__all__ = ["HealthReport", "check_health"]


@dataclass(frozen=True)
class HealthReport:
    """The health of the providers checked, and what it means for delivery."""

    providers: list[ProviderHealth]

    @property
    def overall(self) -> str:
        """Return ``ok`` (all up), ``degraded`` (some unusable or throttled) or ``critical``."""
        statuses = [p.status for p in self.providers]
        if all(s is HealthStatus.UP for s in statuses):
            return "ok"
        usable = [s for s in statuses if s in (HealthStatus.UP, HealthStatus.THROTTLED)]
        # A throttled provider still delivers (later): only none usable is critical.
        return "degraded" if usable else "critical"

    @property
    def exit_code(self) -> int:
        """Return the exit code of SPEC §8: 0 ok, 1 degraded, 2 critical."""
        return {"ok": 0, "degraded": 1, "critical": 2}[self.overall]

    def to_json(self) -> dict[str, Any]:
        """Return the ``ping --json`` document."""
        return {
            "providers": {
                p.provider: {
                    "status": p.status.value,
                    "latency_ms": p.latency_ms,
                    "detail": p.detail,
                }
                for p in self.providers
            },
            "overall": self.overall,
        }


#: How long a probe may wait for a rate-limiter slot before it reports the provider throttled.
SLOT_WAIT = 5.0


def check_health(
    sender: Sender, names: Sequence[str] | None = None, *, slot_wait: float = SLOT_WAIT
) -> HealthReport:
    """Probe ``names`` (default: every provider) in parallel, through the rate limiter.

    A probe counts against the provider's budget like a message. When that budget is in use
    (a bulk send at the limit) and no slot comes within ``slot_wait`` seconds, or the limiter's
    store is unreachable, the provider is reported ``throttled`` without a request, so a health
    check never hangs and never sends unpaced.

    Example::

        report = check_health(Sender.from_config(load_config()))
        report.overall  # "ok"
    """
    chosen = list(names) if names else list(sender.providers)

    def probe(name: str) -> ProviderHealth:
        if sender.limiter is None:
            return sender.providers[name].ping()
        try:
            lease = sender.limiter.acquire(name, timeout=slot_wait)
        except LimiterTimeout as exc:
            return ProviderHealth(
                name,
                HealthStatus.THROTTLED,
                None,
                f"not probed: the client-side rate limit is in use (next slot in {exc.wait:.1f} s)",
            )
        except LimiterUnavailableError as exc:
            # Never an unpaced request, and never an exit code outside ping's 0/1/2: the
            # provider's health is unknown, so it is reported throttled (degraded), not down.
            return ProviderHealth(
                name, HealthStatus.THROTTLED, None, f"not probed: rate limiter unavailable: {exc}"
            )
        with lease:  # settled when the provider answered
            return sender.providers[name].ping()

    with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        results = list(pool.map(probe, chosen))
    for health in results:
        seconds = None if health.latency_ms is None else health.latency_ms / 1000
        sender.events.emit(ProviderProbed(health.provider, health.status.value, seconds))
    return HealthReport(results)
