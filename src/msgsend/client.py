"""The message service: ``Sender.send`` delivers one message, KakaoTalk first, SMS as fallback.

Layers, outermost first (each can be tested alone)::

    Sender.send ─ validation, fallback KakaoTalk → SMS
      └ call_with_retry ─ attempts on one provider, exponential backoff, Retry-After
          └ CircuitBreaker.before_request ─ fail fast while the provider is down
              └ RateLimiter.acquire ─ a lease on a slot, settled when the provider answers
                  └ Provider.send ─ exactly one HTTP request

The breaker sits inside the retry loop so that every attempt is admitted by it (a half-open
trial is one attempt, and a retry wait is cut short when the circuit opens meanwhile), but
its window counts each message once: every attempt is reported with the message it is for.
A recipient that KakaoTalk (otherwise delivering) answered 5xx for and SMS does too is not
counted against SMS: two providers refusing one number says something about the number.
A Retry-After longer than ``max-retry-after`` is not waited for: the provider is paused
until then (``CircuitBreaker.pause``) and the message goes on by fallback.

When no channel of a message can be tried now (circuits open, providers paused), the result
says so (``unavailable``, ``available_in``) instead of counting a failure: a bulk run keeps
the row waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .alerts import SupportsEmit, alert_listener
from .circuit import CircuitBreaker, CircuitState
from .errors import (
    AllProvidersFailedError,
    AuthError,
    CircuitOpenError,
    InputError,
    MsgsendError,
    ProviderDisabledError,
    ProviderError,
    ProviderPausedError,
    ProviderUnavailableError,
    RateLimitedError,
    ServerError,
)
from .events import (
    AttemptFinished,
    CircuitChanged,
    Emit,
    Event,
    Events,
    FellBack,
    LimiterWaited,
    MessageFinished,
    Overflowed,
    RetryScheduled,
)
from .formats import new_message_id
from .logs import log_event, mask_text
from .models import (
    CHANNELS,
    Channel,
    DeliveryResult,
    Outgoing,
    Refusal,
    mask_recipient,
    message_kind,
    prepare_message,
    validate_message,
)
from .report import RunStats
from .retry import RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from .config import Config
    from .metrics import Metrics
    from .providers import Provider
    from .ratelimit import Lease

__all__ = ["Limiter", "Sender"]

log = logging.getLogger("msgsend.client")

#: seconds a rate-limit lease outlives the provider's timeouts when its process dies
HOLD_MARGIN = 2.0
#: characters of a refusing provider's answer quoted when a run stops on systematic refusal
REFUSAL_EXCERPT = 160


class Limiter(Protocol):
    """What the service needs of a rate limiter (``ratelimit.RateLimiter``)."""

    def acquire(self, providers: str | Sequence[str], timeout: float | None = None) -> Lease: ...

    def note_throttled(self, provider: str, retry_after: float | None) -> None: ...


class Sender:
    """Deliver messages through the configured providers.

    Everything observable leaves as an event on ``events`` (see ``events.py``): the run's
    ``stats`` and the log lines listen by default; ``metrics`` and ``alerter``, when given,
    are subscribed too.

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
        alerter: SupportsEmit | None = None,
        metrics: Metrics | None = None,
        stats: RunStats | None = None,
        events: Events | None = None,
        sleep: Callable[[float], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.retry = retry or RetryPolicy()
        self.fallback = fallback
        self.limiter = limiter
        self.breakers = dict(breakers or {})
        self.stats = stats or RunStats()
        self.events = events if events is not None else Events()
        self._sleep = sleep
        self._on_close = on_close
        # Set while a provider's circuit is open: retry waits on that provider end early.
        self._circuit_open = {name: threading.Event() for name in self.providers}
        # A message id is made only when some provider's format sends one ({message_id}).
        self._make_ids = any(
            getattr(provider, "uses_message_id", True) for provider in self.providers.values()
        )
        self.events.subscribe(self._follow_circuits)
        self.events.subscribe(self.stats.on_event)
        self.events.subscribe(log_event)
        if metrics is not None:
            self.events.subscribe(metrics.on_event)
        if alerter is not None:
            self.events.subscribe(alert_listener(alerter))

    # ------------------------------------------------------------------ construction

    @property
    def makes_message_ids(self) -> bool:
        """Return whether some provider's format sends ``{message_id}`` (else none is made)."""
        return self._make_ids

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        alerter: SupportsEmit | None = None,
        metrics: Metrics | None = None,
        limiter: Limiter | None = None,
        pool_size: int | None = None,
        stats: RunStats | None = None,
        events: Events | None = None,
    ) -> Sender:
        """Build providers, limiter and breakers from ``config``; they emit on ``events``."""
        from .providers import build_provider

        events = events if events is not None else Events()

        pool = max(pool_size or 0, config.bulk.concurrency, 4)
        providers = {
            name: build_provider(config.provider(name), pool_size=pool) for name in CHANNELS
        }
        owned_limiter = None
        if limiter is None:
            owned_limiter = limiter = build_limiter(config, emit=events.emit)
        settings = config.circuit_breaker
        breakers = {
            name: CircuitBreaker(
                name,
                window_size=settings.window_size,
                minimum_calls=settings.minimum_calls,
                failure_rate_threshold=settings.failure_rate_threshold,
                reset_timeout=settings.reset_timeout,
                emit=events.emit,
            )
            for name in providers
        }

        def close_owned() -> None:
            if owned_limiter is not None:
                owned_limiter.close()

        return cls(
            providers,
            retry=RetryPolicy.from_config(
                config.retry.max_attempts,
                config.retry.backoff_delay,
                config.retry.multiplier,
                config.retry.max_delay,
                config.retry.max_retry_after,
            ),
            fallback=config.fallback,
            limiter=limiter,
            breakers=breakers,
            alerter=alerter,
            metrics=metrics,
            stats=stats,
            events=events,
            on_close=close_owned,
        )

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
        overflow: bool = False,
        message_id: str | None = None,
        refused_by: Collection[str] = (),
        before_attempt: Callable[[], bool] | None = None,
    ) -> DeliveryResult:
        """Deliver ``text`` to ``recipient``; return the outcome, never raise for provider errors.

        With ``overflow`` (and fallback on), a KakaoTalk message goes by SMS at once when
        KakaoTalk's budget has no free slot and SMS's has (``result.overflow``); it waits for
        whichever frees first. ``message_id`` fills a format's ``{message_id}``: every attempt
        and the fallback of this message carry it (default: a fresh id). Raises InputError for
        a recipient or message that no provider could take. ``refused_by``: providers that
        answered an earlier try of this message (before it waited) with a 5xx.
        ``before_attempt`` is asked before every attempt after the first (a retry, the
        fallback): a bulk run's quiet hours block it until they end, and when it answers False
        (the run is stopping) the message is left as waiting, nothing more sent.
        """
        message = prepare_message(recipient, text, via, fallback=self.falls_back(fallback))
        return self.send_prepared(
            message,
            fallback=fallback,
            overflow=overflow,
            message_id=message_id,
            refused_by=refused_by,
            before_attempt=before_attempt,
        )

    def falls_back(self, fallback: bool | None = None) -> bool:
        """Return whether a message may go by SMS after KakaoTalk (``fallback`` None: configured).

        Also whether a message too long for KakaoTalk may go by SMS (``prepare_message``).
        """
        use_fallback = self.fallback if fallback is None else fallback
        return use_fallback and Channel.SMS.value in self.providers

    def send_prepared(
        self,
        message: Outgoing,
        *,
        fallback: bool | None = None,
        overflow: bool = False,
        message_id: str | None = None,
        refused_by: Collection[str] = (),
        before_attempt: Callable[[], bool] | None = None,
    ) -> DeliveryResult:
        """Deliver a message checked at the edge (``prepare_message``) without checking it again.

        It goes by ``message.channel``, then, if this sender falls back, by SMS (which checks
        the text for SMS first). The keywords are those of :meth:`send`::

            message = prepare_message("010-1234-5678", "안녕하세요", fallback=sender.falls_back())
            result = sender.send_prepared(message)
        """
        number, text, channel, note = message.recipient, message.text, message.channel, message.note
        can_fall_back = self.falls_back(fallback)
        if message_id is None and self._make_ids:
            message_id = new_message_id()
        chain = [channel]
        if can_fall_back and channel is Channel.KAKAOTALK:
            chain.append(Channel.SMS)

        result = DeliveryResult(
            recipient=number, status="failed", note=note, refused_by=tuple(refused_by)
        )
        masked = mask_recipient(number)
        started = time.perf_counter()
        errors: list[MsgsendError] = []
        lease = None
        if overflow and len(chain) == 2 and self._may_overflow(text):
            # One wait for whichever budget frees first; KakaoTalk wins when both are free.
            try:
                lease = self._acquire(tuple(c.value for c in chain))
            except MsgsendError:
                lease = None  # the store is down: the first attempt meets it and says so
            if lease is not None and lease.provider == Channel.SMS.value:
                # KakaoTalk stays the fallback of an overflowed message: nothing failed.
                chain.reverse()
                result.overflow = result.fallback = True
                self.events.emit(Overflowed(Channel.KAKAOTALK.value, Channel.SMS.value, masked))
        try:
            for index, current in enumerate(chain):
                if index > 0:
                    try:
                        validate_message(text, current)
                    except InputError as exc:
                        errors.append(InputError(f"no fallback: {exc}", provider=current.value))
                        break
                    if result.overflow:
                        result.overflow = result.fallback = False  # back on its own channel
                    else:
                        self.events.emit(
                            FellBack(chain[index - 1].value, current.value, masked, str(errors[-1]))
                        )
                        result.fallback = True
                result.channel = current.value
                # A recipient that an earlier channel, otherwise answering, refused with a 5xx
                # and this one refuses too is about the recipient, not this provider: its
                # window does not count it. (An earlier channel with no success lately may be
                # down as well.)
                refused_before = current.value in refused_by or any(
                    isinstance(e, ServerError) and self._answering(e.provider) for e in errors
                )
                try:
                    self._deliver(
                        current.value,
                        number,
                        text,
                        result,
                        message_id,
                        lease if index == 0 else None,
                        refused_before=refused_before,
                        before_attempt=before_attempt,
                    )
                except MsgsendError as exc:
                    errors.append(exc)
                    if not exc.fallback:
                        break
                    continue
                result.status = "sent"
                break
        finally:
            if lease is not None:
                lease.cancel()  # never used (a circuit refused first): give the slot back

        result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        if result.status != "sent":
            final = errors[-1] if len(errors) == 1 else AllProvidersFailedError(errors)
            result.error = str(final)
            result.error_kind = errors[-1].kind if errors else None
            self._classify_failure(result, errors, [c.value for c in chain])
        if result.unavailable:
            # Not an outcome yet: a bulk run keeps the row and tries it again, and the message
            # is counted when it settles. The waiting is what the run reports.
            return result
        self.events.emit(
            MessageFinished(
                recipient=masked,
                status=result.status,
                channel=result.channel,
                fallback=result.fallback,
                attempts=result.attempts,
                retries=result.retries,
                error=result.error,
                latency_ms=result.latency_ms,
                limiter_wait_s=result.limiter_wait_s,
                uncertain=result.uncertain,
                kind=message_kind(text, result.channel).value if result.channel else None,
                fell_back_from=channel.value if result.fallback else None,
            )
        )
        return result

    def _classify_failure(
        self, result: DeliveryResult, errors: list[MsgsendError], chain: list[str]
    ) -> None:
        """Say whether a failed message may simply wait, can never go, or was refused."""
        if not errors:
            return
        if all(isinstance(e, AuthError | ProviderDisabledError) for e in errors):
            result.credentials_refused = True
            return
        if all(e.fallback or e.unavailable or isinstance(e, InputError) for e in errors):
            # Nothing refused the message itself (a channel that cannot carry it is skipped).
            # If every channel of it is now down (its circuit open, even when this message's
            # own request reopened it) or unusable, the failure is the outage's, not the
            # message's: it can wait for a channel.
            hints = self._unavailable_channels(errors, chain)
            if hints is not None:
                result.unavailable = True
                known = [h for h in hints if h is not None]
                result.available_in = min(known) if known and len(known) == len(hints) else None
                return
        last = errors[-1]
        if isinstance(last, ProviderError) and last.provider and not last.retryable:
            body = " ".join(str(getattr(last, "body", "") or "").split())
            result.refusal = Refusal(
                provider=last.provider,
                status_code=last.status_code,
                kind=last.kind,
                excerpt=mask_text(body[:REFUSAL_EXCERPT]),
            )

    def _unavailable_channels(
        self, errors: list[MsgsendError], chain: list[str]
    ) -> list[float | None] | None:
        """Return, per channel that may come back, seconds until it may; None if one is up.

        Channels disabled for the run (credentials refused) and channels that cannot carry the
        message are skipped; at least one channel must be one that may come back.
        """
        from .circuit import CircuitState

        last_error = {e.provider: e for e in errors}
        hints: list[float | None] = []
        for name in chain:
            if name not in last_error:
                continue  # not reached: an unavailable error before it ended the chain
            error = last_error[name]
            breaker = self.breakers.get(name)
            state = breaker.state if breaker is not None else None
            if isinstance(error, AuthError | ProviderDisabledError | InputError) or (
                state is CircuitState.DISABLED
            ):
                continue  # refused our credentials, or cannot carry this message
            if state is CircuitState.OPEN:
                assert breaker is not None
                seconds = breaker.available_in()  # the trial, or a longer pause
                hints.append(seconds if seconds > 0 else None)
            elif error is not None and error.unavailable:
                hints.append(self._available_in(error))
            else:
                return None  # this channel can be tried now: the message failed on its own
        return hints or None

    def _answering(self, provider: str | None) -> bool:
        """Return whether ``provider`` got messages through lately (its breaker says so)."""
        breaker = self.breakers.get(provider or "")
        return breaker is not None and breaker.answering

    def _available_in(self, error: MsgsendError) -> float | None:
        """Return seconds until the channel of an ``unavailable`` error may take messages."""
        breaker = self.breakers.get(error.provider or "")
        if isinstance(error, CircuitOpenError) and breaker is not None:
            seconds = breaker.available_in()
            return seconds if seconds > 0 else None  # a trial is in flight: soon
        return error.available_in

    def _may_overflow(self, text: str) -> bool:
        """Return whether a KakaoTalk message may go by SMS when KakaoTalk's budget is full.

        Only with a limiter to ask, both circuits closed (an outage is fallback's business) and
        a message SMS can carry.
        """
        from .circuit import CircuitState

        if self.limiter is None:
            return False
        for name in CHANNELS:
            breaker = self.breakers.get(name)
            if breaker is not None and breaker.state is not CircuitState.CLOSED:
                return False
        try:
            validate_message(text, Channel.SMS)
        except InputError:
            return False
        return True

    def _deliver(
        self,
        provider_name: str,
        number: str,
        text: str,
        result: DeliveryResult,
        message_id: str | None,
        lease: Lease | None = None,
        *,
        refused_before: bool = False,
        before_attempt: Callable[[], bool] | None = None,
    ) -> None:
        """Send on one provider with retries; raise the last error if it never succeeds.

        ``lease``, a slot already taken on ``provider_name``, serves the first attempt.
        ``refused_before``: an earlier channel refused this recipient with a 5xx (see ``send``).
        """
        provider = self.providers[provider_name]
        breaker = self.breakers.get(provider_name)
        masked = mask_recipient(number)
        taken = [lease] if lease is not None else []

        def attempt() -> None:
            if before_attempt is not None and result.attempts and not before_attempt():
                raise ProviderUnavailableError(
                    "the run is stopping: the message waits for --resume", provider=provider_name
                )
            if breaker is not None:
                try:
                    breaker.before_request(message=result)
                except MsgsendError as exc:
                    # Nothing was sent: counted, but not as a request with a duration.
                    self.events.emit(
                        AttemptFinished(
                            provider_name,
                            exc.kind,
                            None,
                            masked,
                            result.attempts,
                            error=str(exc),
                        )
                    )
                    raise
            lease: Lease | None
            if taken:
                lease = taken.pop()
            else:
                lease = self._acquire(provider_name) if self.limiter is not None else None
            if lease is not None:
                result.limiter_wait_s += lease.waited
            result.attempts += 1
            result.attempts_by_channel[provider_name] = (
                result.attempts_by_channel.get(provider_name, 0) + 1
            )
            log.debug("%s attempt %d on %s: %r", masked, result.attempts, provider_name, text)
            started = time.perf_counter()
            try:
                try:
                    provider.send(number, text, message_id=message_id)
                finally:
                    # The provider answered or the request failed: its slot counts from now.
                    if lease is not None:
                        lease.settle()
            except ProviderError as exc:
                if isinstance(exc, ServerError) and provider_name not in result.refused_by:
                    result.refused_by = (*result.refused_by, provider_name)
                self._failed(
                    provider_name,
                    exc,
                    time.perf_counter() - started,
                    breaker,
                    masked,
                    result,
                    count=not (refused_before and isinstance(exc, ServerError)),
                )
                if isinstance(exc, RateLimitedError) and self.retry.too_long(exc):
                    # Not this message's failure: the provider is paused, the message goes on
                    # by fallback or (no other channel) waits like any other.
                    raise ProviderPausedError(
                        f"{provider_name} asked to wait {exc.retry_after:.0f} s, more than "
                        f"[retry] max-retry-after = {self.retry.max_retry_after:g} s",
                        provider=provider_name,
                        available_in=exc.retry_after,
                    ) from exc
                raise
            elapsed = time.perf_counter() - started
            self.events.emit(
                AttemptFinished(provider_name, "success", elapsed, masked, result.attempts)
            )
            if breaker is not None:
                breaker.record_success(message=result)

        def on_retry(retry_number: int, delay: float, error: MsgsendError) -> None:
            result.retries += 1
            self.events.emit(RetryScheduled(provider_name, retry_number, delay, str(error), masked))

        call_with_retry(
            attempt,
            self.retry,
            wait=lambda delay: self._wait(provider_name, delay),
            on_retry=on_retry,
        )

    def _acquire(self, provider_name: str | tuple[str, ...]) -> Lease:
        """Take a lease on one slot of ``provider_name``'s budget (or the first of several)."""
        assert self.limiter is not None
        names = (provider_name,) if isinstance(provider_name, str) else provider_name
        try:
            lease = self.limiter.acquire(provider_name)
        except MsgsendError as exc:
            if exc.provider is None:
                # A store error that names no provider (the sqlite lock held too long) is
                # still this channel's: without it the row could not wait for the channel.
                exc.provider = names[0]
            raise
        except Exception as exc:  # a limiter store failing mid-run fails the message, not the run
            raise MsgsendError(
                f"rate limiter for {' or '.join(names)} failed: {exc}", provider=names[0]
            ) from exc
        self.events.emit(LimiterWaited(lease.provider, lease.waited))
        return lease

    def _failed(
        self,
        provider_name: str,
        exc: ProviderError,
        elapsed: float,
        breaker: CircuitBreaker | None,
        masked: str,
        result: DeliveryResult,
        *,
        count: bool,
    ) -> None:
        retry_after = exc.retry_after if isinstance(exc, RateLimitedError) else None
        self.events.emit(
            AttemptFinished(
                provider_name,
                exc.kind,
                elapsed,
                masked,
                result.attempts,
                status_code=exc.status_code,
                error=str(exc),
                uncertain=exc.uncertain,
                retry_after=retry_after,
            )
        )
        if exc.uncertain:
            result.uncertain += 1
        if isinstance(exc, AuthError):
            if breaker is not None:
                breaker.disable(str(exc))
            return
        if isinstance(exc, RateLimitedError):
            if self.limiter is not None:
                self.limiter.note_throttled(provider_name, retry_after)
            if breaker is not None and retry_after is not None and self.retry.too_long(exc):
                breaker.pause(
                    retry_after,
                    f"it asked to wait {retry_after:.0f} s, more than "
                    f"[retry] max-retry-after = {self.retry.max_retry_after:g} s",
                )
        if breaker is not None:
            # The window counts each message once; any HTTP answer ends a half-open trial.
            breaker.record_failure(exc, message=result, count=count)

    def _wait(self, provider_name: str, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
            return
        # Returns at once if the circuit is (or becomes) open: the next attempt fails fast.
        self._circuit_open[provider_name].wait(delay)

    def _follow_circuits(self, event: Event) -> None:
        """End retry waits on a provider whose circuit opens (a listener: control, not stats)."""
        if not isinstance(event, CircuitChanged):
            return
        waiting = self._circuit_open.get(event.provider)
        if waiting is None:
            return
        if event.new in (CircuitState.OPEN, CircuitState.DISABLED):
            waiting.set()
        else:
            waiting.clear()


def build_limiter(config: Config, *, emit: Emit | None = None, wait_for_store: bool = False) -> Any:
    """Return the ``RateLimiter`` of ``config``; raise ConfigError if its store is unusable.

    An unreachable store (Redis down, a sqlite lock another process holds) raises
    LimiterUnavailableError: try again later. With ``wait_for_store`` a limiter is returned
    anyway and every acquire raises that error until the store answers (a bulk run's rows wait
    for it, within ``[bulk] max-outage``): Redis reconnects by itself, a locked sqlite store is
    opened at a later acquire (``ratelimit.standins.StoreAwaitedLimiter``).
    """
    from .errors import ConfigError
    from .ratelimit import Limit, LimiterError, LimiterUnavailableError, RateLimiter

    limits = {
        name: Limit(
            count=config.provider(name).rate_limit.count,
            period=config.provider(name).rate_limit.period,
        )
        for name in CHANNELS
    }
    # A lease whose process died before the answer keeps its slot until the request could
    # no longer be answered: the provider's timeouts, plus a margin.
    hold = {
        name: config.provider(name).connect_timeout
        + config.provider(name).read_timeout
        + HOLD_MARGIN
        for name in limits
    }
    try:
        return RateLimiter(
            limits,
            strategy=config.limiter.strategy,
            store=config.limiter.store,
            path=config.limiter.path,
            redis_url=config.limiter.redis_url,
            hold=hold,
            emit=emit,
            wait_for_store=wait_for_store,
        )
    except LimiterUnavailableError as exc:
        if not wait_for_store:
            raise
        from .ratelimit.standins import StoreAwaitedLimiter

        # Its store-down event is out already (RateLimiter alerts a store down at start).
        return StoreAwaitedLimiter(lambda emit: build_limiter(config, emit=emit), exc, emit)
    except LimiterError as exc:
        raise ConfigError(str(exc), source=str(config.path) if config.path else None) from exc
