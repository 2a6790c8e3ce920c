"""The message service: ``Sender.send`` delivers one message, KakaoTalk first, SMS as fallback.

Layers, outermost first (each can be tested alone)::

    Sender.send ─ validation, fallback KakaoTalk → SMS
      └ call_with_retry ─ attempts on one provider, exponential backoff, Retry-After
          └ CircuitBreaker.before_request ─ fail fast while the provider is down
              └ RateLimiter.acquire ─ wait for a slot of the provider's budget
                  └ Provider.send ─ exactly one HTTP request

The breaker sits inside the retry loop so that it sees every attempt: an outage opens it
after ``failure-threshold`` requests, not ``failure-threshold x max-attempts``, and a
retry wait is cut short when the circuit opens meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .errors import (
    AllProvidersFailedError,
    AuthError,
    InputError,
    MsgsendError,
    ProviderError,
    RateLimitedError,
)
from .models import Channel, DeliveryResult, mask_recipient, normalize_recipient, validate_message
from .report import RunStats
from .retry import RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from .alerts import Alerter
    from .circuit import CircuitBreaker, CircuitState
    from .config import Config
    from .metrics import Metrics
    from .providers import Provider

__all__ = ["Limiter", "Sender"]

log = logging.getLogger("msgsend.client")


class Limiter(Protocol):
    """What the service needs of a rate limiter (``ratelimit.RateLimiter``)."""

    def acquire(self, provider: str) -> float: ...

    def note_throttled(self, provider: str, retry_after: float | None) -> None: ...


class Sender:
    """Deliver messages through the configured providers.

    Example::

        with Sender.from_config(load_config()) as sender:
            result = sender.send("010-1234-5678", "안녕하세요")
            print(result.status, result.channel)
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        *,
        retry: RetryPolicy | None = None,
        fallback: bool = True,
        limiter: Limiter | None = None,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        alerter: Alerter | None = None,
        metrics: Metrics | None = None,
        stats: RunStats | None = None,
        sleep: Callable[[float], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.retry = retry or RetryPolicy()
        self.fallback = fallback
        self.limiter = limiter
        self.breakers = dict(breakers or {})
        self.alerter = alerter
        self.metrics = metrics
        self.stats = stats or RunStats()
        self._sleep = sleep
        self._on_close = on_close
        # Set while a provider's circuit is open: retry waits on that provider end early.
        self._circuit_open = {name: threading.Event() for name in self.providers}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        alerter: Alerter | None = None,
        metrics: Metrics | None = None,
        limiter: Limiter | None = None,
        pool_size: int | None = None,
        stats: RunStats | None = None,
    ) -> Sender:
        """Build providers, limiter and breakers from ``config``."""
        from .circuit import CircuitBreaker
        from .providers import build_provider

        pool = max(pool_size or 0, config.bulk.concurrency, 4)
        providers = {
            name: build_provider(config.provider(name), pool_size=pool)
            for name in (Channel.KAKAOTALK.value, Channel.SMS.value)
        }
        owned_limiter = None
        if limiter is None:
            owned_limiter = limiter = build_limiter(config, alerter=alerter)
        sender: Sender

        def on_change(provider: str, old: CircuitState, new: CircuitState, reason: str) -> None:
            sender._circuit_changed(provider, old, new, reason)

        breakers = {
            name: CircuitBreaker(
                name,
                config.circuit_breaker.failure_threshold,
                config.circuit_breaker.reset_timeout,
                on_change=on_change,
            )
            for name in providers
        }

        def close_owned() -> None:
            if owned_limiter is not None:
                owned_limiter.close()

        sender = cls(
            providers,
            retry=RetryPolicy.from_config(
                config.retry.max_attempts,
                config.retry.backoff_delay,
                config.retry.multiplier,
                config.retry.max_delay,
            ),
            fallback=config.fallback,
            limiter=limiter,
            breakers=breakers,
            alerter=alerter,
            metrics=metrics,
            stats=stats,
            on_close=close_owned,
        )
        return sender

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the providers' connection pools and a limiter this sender built."""
        for provider in self.providers.values():
            provider.close()
        if self._on_close is not None:
            self._on_close()

    # ------------------------------------------------------------------ sending

    def send(
        self,
        recipient: str,
        text: str,
        *,
        via: Channel | str = Channel.KAKAOTALK,
        fallback: bool | None = None,
    ) -> DeliveryResult:
        """Deliver ``text`` to ``recipient``; return the outcome, never raise for provider errors.

        Raises InputError for a recipient or message that no provider could take.
        """
        channel = Channel(via)
        number = normalize_recipient(recipient)
        validate_message(text, channel)
        use_fallback = self.fallback if fallback is None else fallback
        chain = [channel]
        if use_fallback and channel is Channel.KAKAOTALK and Channel.SMS.value in self.providers:
            chain.append(Channel.SMS)

        result = DeliveryResult(recipient=number, status="failed")
        masked = mask_recipient(number)
        started = time.perf_counter()
        errors: list[MsgsendError] = []
        for index, current in enumerate(chain):
            if index > 0:
                try:
                    validate_message(text, current)
                except InputError as exc:
                    errors.append(InputError(f"no fallback: {exc}", provider=current.value))
                    break
                self._fallback(chain[index - 1].value, current.value, masked, errors[-1])
                result.fallback = True
            result.channel = current.value
            try:
                self._deliver(current.value, number, text, result)
            except MsgsendError as exc:
                errors.append(exc)
                if not exc.fallback:
                    break
                continue
            result.status = "sent"
            break

        result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        if result.status != "sent":
            final = errors[-1] if len(errors) == 1 else AllProvidersFailedError(errors)
            result.error = str(final)
            result.error_kind = errors[-1].kind if errors else None
        self.stats.message(result.channel, result.ok)
        if self.metrics is not None:
            self.metrics.observe_message(
                result.channel or "none", "sent" if result.ok else "failed"
            )
        log.log(
            logging.INFO if result.ok else logging.WARNING,
            "%s %s via %s%s after %d attempt(s)%s",
            masked,
            "sent" if result.ok else "FAILED",
            result.channel,
            " (fallback)" if result.fallback else "",
            result.attempts,
            f": {result.error}" if result.error else "",
            extra={
                "event": "result",
                "recipient": masked,
                "status": result.status,
                "channel": result.channel,
                "fallback": result.fallback,
                "attempts": result.attempts,
            },
        )
        return result

    def _deliver(self, provider_name: str, number: str, text: str, result: DeliveryResult) -> None:
        """Send on one provider with retries; raise the last error if it never succeeds."""
        provider = self.providers[provider_name]
        breaker = self.breakers.get(provider_name)
        masked = mask_recipient(number)

        def attempt() -> None:
            if breaker is not None:
                try:
                    breaker.before_request()
                except MsgsendError as exc:
                    # Nothing was sent: counted, but not as a request with a duration.
                    self.stats.request(provider_name, exc.kind, None)
                    if self.metrics is not None:
                        self.metrics.observe_request(provider_name, exc.kind, 0.0)
                    raise
            if self.limiter is not None:
                waited = self._acquire(provider_name)
                result.limiter_wait_s += waited
            result.attempts += 1
            result.attempts_by_channel[provider_name] = (
                result.attempts_by_channel.get(provider_name, 0) + 1
            )
            log.debug("%s attempt %d on %s: %r", masked, result.attempts, provider_name, text)
            started = time.perf_counter()
            try:
                provider.send(number, text)
            except ProviderError as exc:
                self._failed(
                    provider_name, exc, time.perf_counter() - started, breaker, masked, result
                )
                raise
            elapsed = time.perf_counter() - started
            self._observe_request(provider_name, "success", elapsed)
            if breaker is not None:
                breaker.record_success()

        def on_retry(retry_number: int, delay: float, error: MsgsendError) -> None:
            result.retries += 1
            self.stats.retry(provider_name)
            if self.metrics is not None:
                self.metrics.observe_retry(provider_name)
            log.info(
                "%s retry %d on %s in %.1f s after: %s",
                masked,
                retry_number,
                provider_name,
                delay,
                error,
                extra={"event": "retry", "recipient": masked, "provider": provider_name},
            )

        call_with_retry(
            attempt,
            self.retry,
            wait=lambda delay: self._wait(provider_name, delay),
            on_retry=on_retry,
        )

    def _acquire(self, provider_name: str) -> float:
        assert self.limiter is not None
        try:
            waited = self.limiter.acquire(provider_name)
        except MsgsendError:
            raise
        except Exception as exc:  # a limiter store failing mid-run fails the message, not the run
            raise MsgsendError(
                f"rate limiter for {provider_name} failed: {exc}", provider=provider_name
            ) from exc
        self.stats.limiter_wait(provider_name, waited)
        if self.metrics is not None and waited > 0:
            self.metrics.observe_limiter_wait(provider_name, waited)
        return waited

    def _failed(
        self,
        provider_name: str,
        exc: ProviderError,
        elapsed: float,
        breaker: CircuitBreaker | None,
        masked: str,
        result: DeliveryResult,
    ) -> None:
        self._observe_request(provider_name, exc.kind, elapsed)
        log.info(
            "%s attempt %d on %s failed: %s",
            masked,
            result.attempts,
            provider_name,
            exc,
            extra={
                "event": "attempt-failed",
                "recipient": masked,
                "provider": provider_name,
                "status_code": exc.status_code,
                "error": exc.kind,
            },
        )
        if exc.uncertain:
            result.uncertain += 1
            self.stats.uncertain(provider_name)
        if isinstance(exc, AuthError):
            if breaker is not None:
                breaker.disable(str(exc))
            self._alert(
                "auth-failed", provider_name, f"{exc}; {provider_name} is disabled for this run"
            )
        else:
            if isinstance(exc, RateLimitedError):
                if self.limiter is not None:
                    self.limiter.note_throttled(provider_name, exc.retry_after)
                else:
                    self._alert(
                        "rate-limit",
                        provider_name,
                        f"{provider_name} answered 429 Too Many Requests",
                    )
            if breaker is not None:
                # Only outages count; any HTTP answer ends a half-open trial.
                breaker.record_failure(exc)

    def _observe_request(self, provider_name: str, result: str, seconds: float) -> None:
        self.stats.request(provider_name, result, seconds)
        if self.metrics is not None:
            self.metrics.observe_request(provider_name, result, seconds)

    def _fallback(self, from_name: str, to_name: str, masked: str, error: MsgsendError) -> None:
        self.stats.fallback(from_name)
        if self.metrics is not None:
            self.metrics.observe_fallback()
        log.info(
            "%s falling back from %s to %s: %s",
            masked,
            from_name,
            to_name,
            error,
            extra={"event": "fallback", "recipient": masked, "provider": from_name},
        )
        self._alert(
            "fallback", from_name, f"messages fall back from {from_name} to {to_name}: {error}"
        )

    def _wait(self, provider_name: str, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
            return
        # Returns at once if the circuit is (or becomes) open: the next attempt fails fast.
        self._circuit_open[provider_name].wait(delay)

    def _alert(self, kind: str, provider: str | None, message: str) -> None:
        if self.alerter is not None:
            self.alerter.emit(kind, provider, message)

    def _circuit_changed(self, provider: str, old: Any, new: Any, reason: str) -> None:
        from .circuit import CircuitState

        event = self._circuit_open.get(provider)
        if new in (CircuitState.OPEN, CircuitState.DISABLED):
            if event is not None:
                event.set()
        elif event is not None:
            event.clear()
        if new is CircuitState.OPEN:
            self.stats.circuit_opened(provider)
            if self.metrics is not None:
                self.metrics.observe_circuit_open(provider)
            if old is not CircuitState.HALF_OPEN:
                self._alert("provider-down", provider, f"{provider} circuit opened: {reason}")
        elif new is CircuitState.CLOSED and old is CircuitState.HALF_OPEN:
            self._alert("provider-recovered", provider, f"{provider} answers again; circuit closed")


def build_limiter(config: Config, *, alerter: Alerter | None = None) -> Any:
    """Return the ``RateLimiter`` of ``config``; raise ConfigError if its store is unusable."""
    from .errors import ConfigError
    from .ratelimit import Limit, LimiterError, RateLimiter

    def on_event(kind: str, provider: str, message: str) -> None:
        if alerter is not None:
            alerter.emit(kind, provider, message)

    limits = {
        name: Limit(
            count=config.provider(name).rate_limit.count,
            period=config.provider(name).rate_limit.period,
        )
        for name in ("kakaotalk", "sms")
    }
    try:
        return RateLimiter(
            limits,
            strategy=config.limiter.strategy,
            store=config.limiter.store,
            path=config.limiter.path,
            redis_url=config.limiter.redis_url,
            on_event=on_event,
        )
    except LimiterError as exc:
        raise ConfigError(str(exc), source=str(config.path) if config.path else None) from exc
