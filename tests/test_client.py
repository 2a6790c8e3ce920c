"""Tests for msgsend.client.Sender: retry, fallback and breakers over FakeProviders.

No HTTP and no sleeping: providers are ``FakeProvider``s with queued outcomes, waits are
recorded by ``FakeSleep`` and breakers run on a ``FakeClock``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from fakes import (
    FakeClock,
    FakeLimiter,
    FakeProvider,
    FakeSleep,
    auth_error,
    connect_error,
    connection_lost,
    invalid_request,
    ok,
    rate_limited,
    read_timeout,
    server_error,
)
from msgsend.circuit import CircuitBreaker, CircuitState
from msgsend.client import Sender
from msgsend.errors import InputError, LimiterUnavailableError, MsgsendError
from msgsend.events import CircuitChanged, Events
from msgsend.models import DeliveryResult
from msgsend.report import RunStats
from msgsend.retry import RetryPolicy

RECIPIENT = "010-1234-5678"
TEXT = "안녕하세요, 배송이 시작되었습니다."


@dataclass
class FakeAlerter:
    alerts: list[tuple[str, str | None, str]] = field(default_factory=list)

    def emit(self, type: str, provider: str | None, message: str) -> bool:
        self.alerts.append((type, provider, message))
        return True

    @property
    def kinds(self) -> list[tuple[str, str | None]]:
        return [(kind, provider) for kind, provider, _ in self.alerts]


@dataclass
class Rig:
    """A Sender over two FakeProviders, with its fake sleep, clock, limiter and alerter."""

    kakao: FakeProvider
    sms: FakeProvider
    sleep: FakeSleep
    clock: FakeClock
    alerter: FakeAlerter
    sender: Sender
    changes: list[tuple[str, Any, Any, str]]

    def send(self, recipient: str = RECIPIENT, text: str = TEXT, **kwargs: Any) -> DeliveryResult:
        return self.sender.send(recipient, text, **kwargs)

    @property
    def stats(self) -> dict[str, Any]:
        return self.sender.stats.to_json()


def make_rig(
    *,
    retry: RetryPolicy | None = None,
    fallback: bool = True,
    limiter: FakeLimiter | None = None,
    breakers: bool = False,
    failure_threshold: int | None = None,
    reset_timeout: float = 30.0,
    window_size: int = 20,
    minimum_calls: int = 10,
    failure_rate_threshold: float = 0.5,
) -> Rig:
    """A sender on fake providers; ``failure_threshold=N``: N failed messages in a row open."""
    if failure_threshold is not None:
        window_size = minimum_calls = failure_threshold
        failure_rate_threshold = 1.0
    kakao, sms = FakeProvider("kakaotalk"), FakeProvider("sms")
    clock = FakeClock()
    sleep = FakeSleep(clock)
    alerter = FakeAlerter()
    changes: list[tuple[str, Any, Any, str]] = []

    events = Events()

    def on_change(event: Any) -> None:
        if isinstance(event, CircuitChanged):
            changes.append((event.provider, event.old, event.new, event.reason))

    events.subscribe(on_change)
    breaker_map = (
        {
            name: CircuitBreaker(
                name,
                window_size=window_size,
                minimum_calls=minimum_calls,
                failure_rate_threshold=failure_rate_threshold,
                reset_timeout=reset_timeout,
                clock=clock,
                emit=events.emit,
            )
            for name in ("kakaotalk", "sms")
        }
        if breakers
        else None
    )
    sender = Sender(
        {"kakaotalk": kakao, "sms": sms},  # type: ignore[dict-item]
        retry=retry or RetryPolicy(),
        fallback=fallback,
        limiter=limiter,
        breakers=breaker_map,
        alerter=alerter,
        events=events,
        sleep=sleep,
    )
    return Rig(kakao, sms, sleep, clock, alerter, sender, changes)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


def repeat(make: Callable[[], MsgsendError], times: int = 3) -> list[MsgsendError]:
    return [make() for _ in range(times)]


# ---------------------------------------------------------------------- SPEC §3 on KakaoTalk

# id, KakaoTalk outcome (each attempt), KakaoTalk attempts, waits, falls back, uncertain
SPEC_TABLE: list[tuple[str, Callable[[], MsgsendError], int, list[float], bool, int]] = [
    ("connect-error", connect_error, 3, [1.0, 2.0], True, 0),
    ("read-timeout", read_timeout, 3, [1.0, 2.0], True, 3),
    ("connection-lost", connection_lost, 3, [1.0, 2.0], True, 3),
    ("429", rate_limited, 3, [1.0, 2.0], True, 0),
    ("429-retry-after-longer", lambda: rate_limited(retry_after=5.0), 3, [5.0, 5.0], True, 0),
    ("429-retry-after-shorter", lambda: rate_limited(retry_after=0.5), 3, [1.0, 2.0], True, 0),
    ("500", lambda: server_error(status_code=500), 3, [1.0, 2.0], True, 0),
    ("502", lambda: server_error(status_code=502), 3, [1.0, 2.0], True, 0),
    ("503", lambda: server_error(status_code=503), 3, [1.0, 2.0], True, 0),
    ("504", lambda: server_error(status_code=504), 3, [1.0, 2.0], True, 0),
    ("401", lambda: auth_error(status_code=401), 1, [], True, 0),
    ("403", lambda: auth_error(status_code=403), 1, [], True, 0),
    ("400", lambda: invalid_request(status_code=400), 1, [], False, 0),
    ("404", lambda: invalid_request(status_code=404), 1, [], False, 0),
    ("422", lambda: invalid_request(status_code=422), 1, [], False, 0),
]


@pytest.mark.parametrize(
    ("make_error", "kakao_attempts", "waits", "falls_back", "uncertain"),
    [row[1:] for row in SPEC_TABLE],
    ids=[row[0] for row in SPEC_TABLE],
)
def test_kakaotalk_outcome_then_sms_succeeds(
    rig, make_error, kakao_attempts, waits, falls_back, uncertain
):
    last = make_error()
    rig.kakao.enqueue(*repeat(make_error, kakao_attempts - 1), last)
    result = rig.send()
    assert len(rig.kakao.calls) == kakao_attempts
    assert rig.kakao.calls[0] == (RECIPIENT, TEXT)
    assert rig.sleep.waits == waits
    assert result.uncertain == uncertain
    assert result.retries == kakao_attempts - 1
    if falls_back:
        assert rig.sms.calls == [(RECIPIENT, TEXT)]
        assert result.to_json() == {
            "recipient": RECIPIENT,
            "status": "sent",
            "channel": "sms",
            "fallback": True,
            "attempts": kakao_attempts + 1,
            "error": None,
        }
        assert result.attempts_by_channel == {"kakaotalk": kakao_attempts, "sms": 1}
        assert ("fallback", "kakaotalk") in rig.alerter.kinds
    else:
        assert rig.sms.calls == []
        assert result.to_json() == {
            "recipient": RECIPIENT,
            "status": "failed",
            "channel": None,
            "fallback": False,
            "attempts": 1,
            "error": str(last),
        }
        assert result.channel == "kakaotalk"  # the channel tried last
        assert result.error_kind == "invalid-request"
        assert ("fallback", "kakaotalk") not in rig.alerter.kinds


@pytest.mark.parametrize(
    ("make_error", "kakao_attempts", "waits", "falls_back", "uncertain"),
    [row[1:] for row in SPEC_TABLE if row[4]],
    ids=[row[0] for row in SPEC_TABLE if row[4]],
)
def test_kakaotalk_outcome_and_sms_fails_too(
    rig, make_error, kakao_attempts, waits, falls_back, uncertain
):
    rig.kakao.enqueue(*repeat(make_error, kakao_attempts))
    sms_errors = repeat(lambda: server_error("sms", 503))
    rig.sms.enqueue(*sms_errors)
    result = rig.send()
    assert len(rig.kakao.calls) == kakao_attempts
    assert len(rig.sms.calls) == 3
    assert rig.sleep.waits == [*waits, 1.0, 2.0]  # SMS has its own attempts
    assert result.status == "failed"
    assert result.channel == "sms"
    assert result.fallback is True
    assert result.attempts == kakao_attempts + 3
    assert result.error is not None
    assert result.error.startswith("every provider failed (kakaotalk")
    assert result.error.endswith("; sms answered HTTP 503)")  # each error named once
    assert result.error_kind == "server-error"
    assert result.to_json()["channel"] is None


def test_success_at_once(rig):
    result = rig.send()
    assert (result.status, result.channel, result.fallback, result.attempts) == (
        "sent",
        "kakaotalk",
        False,
        1,
    )
    assert result.error is None
    assert rig.sms.calls == []
    assert rig.sleep.waits == []


@pytest.mark.parametrize("make_error", [connect_error, read_timeout, rate_limited, server_error])
def test_transient_error_then_success_on_kakaotalk(rig, make_error):
    rig.kakao.enqueue(make_error(), ok(201))
    result = rig.send()
    assert (result.status, result.channel, result.fallback, result.attempts) == (
        "sent",
        "kakaotalk",
        False,
        2,
    )
    assert rig.sleep.waits == [1.0]
    assert rig.sms.calls == []


def test_recipient_is_sent_normalized(rig):
    result = rig.send("+82 10 1234 5678")
    assert result.recipient == "010-1234-5678"
    assert rig.kakao.calls == [("010-1234-5678", TEXT)]


def test_max_attempts_and_backoff_from_the_policy():
    rig = make_rig(retry=RetryPolicy(total=5, backoff_factor=0.5, multiplier=3.0, backoff_max=4.0))
    rig.kakao.enqueue(*repeat(server_error, 5))
    result = rig.send()
    assert len(rig.kakao.calls) == 5
    assert rig.sleep.waits == [0.5, 1.5, 4.0, 4.0]
    assert result.attempts == 6
    assert result.channel == "sms"


# ---------------------------------------------------------------------- no fallback


@pytest.mark.parametrize("how", ["sender", "call"])
def test_no_fallback(how):
    rig = make_rig(fallback=how != "sender")
    last = server_error()
    rig.kakao.enqueue(server_error(), server_error(), last)
    result = rig.send(fallback=False) if how == "call" else rig.send()
    assert rig.sms.calls == []
    assert result.to_json() == {
        "recipient": RECIPIENT,
        "status": "failed",
        "channel": None,
        "fallback": False,
        "attempts": 3,
        "error": str(last),
    }
    assert rig.sleep.waits == [1.0, 2.0]


def test_no_fallback_after_auth_error():
    rig = make_rig(fallback=False)
    rig.kakao.enqueue(auth_error())
    result = rig.send()
    assert (result.status, result.attempts, result.error_kind) == ("failed", 1, "auth-failed")
    assert rig.sms.calls == []


def test_call_can_turn_fallback_on():
    rig = make_rig(fallback=False)
    rig.kakao.enqueue(auth_error())
    assert rig.send(fallback=True).channel == "sms"


def test_via_sms_has_no_fallback(rig):
    last = server_error("sms", 502)
    rig.sms.enqueue(server_error("sms"), server_error("sms"), last)
    result = rig.send(via="sms")
    assert rig.kakao.calls == []
    assert len(rig.sms.calls) == 3
    assert (result.status, result.channel, result.fallback, result.attempts) == (
        "failed",
        "sms",
        False,
        3,
    )
    assert result.error == str(last)


def test_via_sms_success(rig):
    result = rig.send(via="sms")
    assert (result.status, result.channel, result.fallback, result.attempts) == (
        "sent",
        "sms",
        False,
        1,
    )
    assert rig.kakao.calls == []


def test_without_an_sms_provider_there_is_no_fallback():
    kakao = FakeProvider("kakaotalk").enqueue(auth_error())
    sender = Sender({"kakaotalk": kakao}, sleep=FakeSleep())  # type: ignore[dict-item]
    result = sender.send(RECIPIENT, TEXT)
    assert (result.status, result.fallback, result.attempts) == ("failed", False, 1)


# ---------------------------------------------------------------------- auth and breakers


def test_auth_error_alerts_at_once(rig):
    rig.kakao.enqueue(auth_error())
    rig.send()
    assert rig.alerter.kinds[0] == ("auth-failed", "kakaotalk")


def test_auth_error_without_breakers_disables_nothing(rig):
    rig.kakao.enqueue(auth_error())
    first = rig.send()
    second = rig.send()
    assert first.channel == "sms"
    assert (second.channel, second.fallback) == ("kakaotalk", False)
    assert len(rig.kakao.calls) == 2


def test_auth_error_with_a_breaker_skips_kakaotalk_for_the_next_message():
    rig = make_rig(breakers=True)
    rig.kakao.enqueue(auth_error())
    first = rig.send()
    assert (first.status, first.channel, first.fallback, first.attempts) == ("sent", "sms", True, 2)
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.DISABLED
    second = rig.send()
    assert len(rig.kakao.calls) == 1  # KakaoTalk not called again
    assert (second.status, second.channel, second.fallback, second.attempts) == (
        "sent",
        "sms",
        True,
        1,
    )
    assert second.attempts_by_channel == {"sms": 1}
    assert rig.sleep.waits == []
    # still disabled much later: for the rest of the process
    rig.clock.advance(3600)
    assert rig.send().channel == "sms"
    assert len(rig.kakao.calls) == 1


def test_disabled_kakaotalk_with_no_fallback_fails_fast():
    rig = make_rig(breakers=True, fallback=False)
    rig.kakao.enqueue(auth_error())
    rig.send()
    result = rig.send()
    assert (result.status, result.attempts, result.error_kind) == ("failed", 0, "provider-disabled")
    assert "disabled" in (result.error or "")
    assert len(rig.kakao.calls) == 1


def test_outages_open_the_circuit_and_kakaotalk_is_skipped():
    rig = make_rig(breakers=True, failure_threshold=2)
    rig.kakao.enqueue(*repeat(server_error, 10))
    first = rig.send()
    # a message's retries count once: one failed message does not open a threshold of two
    assert len(rig.kakao.calls) == 3
    assert (first.status, first.channel, first.fallback) == ("sent", "sms", True)
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.CLOSED
    second = rig.send()
    # the second message's first failure opens it: its retry fails fast and falls back
    assert second.attempts_by_channel == {"kakaotalk": 1, "sms": 1}
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.OPEN
    assert ("provider-down", "kakaotalk") in rig.alerter.kinds
    waits_before = list(rig.sleep.waits)
    third = rig.send()
    assert len(rig.kakao.calls) == 4
    assert (third.channel, third.fallback, third.attempts) == ("sms", True, 1)
    assert rig.sleep.waits == waits_before  # no retry waits on an open circuit
    assert rig.stats["providers"]["kakaotalk"]["circuit_opened"] == 1


def test_circuit_half_open_trial_recovers():
    rig = make_rig(breakers=True, failure_threshold=1, reset_timeout=30.0)
    rig.kakao.enqueue(server_error())
    rig.send()
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.OPEN
    rig.clock.advance(31)
    result = rig.send()  # the trial goes through and succeeds
    assert (result.channel, result.fallback) == ("kakaotalk", False)
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.CLOSED
    assert ("provider-recovered", "kakaotalk") in rig.alerter.kinds


def test_sms_circuit_open_fails_fast():
    rig = make_rig(breakers=True, failure_threshold=1)
    rig.sms.enqueue(server_error("sms"))
    rig.send(via="sms")
    result = rig.send(via="sms")
    assert (result.status, result.attempts, result.error_kind) == ("failed", 0, "circuit-open")
    assert len(rig.sms.calls) == 1


def test_half_open_trial_answered_429_closes_the_circuit():
    rig = make_rig(breakers=True, failure_threshold=1, reset_timeout=30.0)
    rig.kakao.enqueue(server_error())
    rig.send()
    rig.clock.advance(31)
    rig.kakao.enqueue(rate_limited(), ok())
    result = rig.send()
    # the provider answered: it is up, only throttling; the retry goes to KakaoTalk again
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.CLOSED
    assert (result.channel, result.fallback) == ("kakaotalk", False)


def test_rate_limited_does_not_open_the_circuit():
    rig = make_rig(breakers=True, failure_threshold=1)
    rig.kakao.enqueue(*repeat(rate_limited))
    rig.send()
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.CLOSED


def test_invalid_request_does_not_open_the_circuit():
    rig = make_rig(breakers=True, failure_threshold=1)
    rig.kakao.enqueue(invalid_request())
    rig.send()
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.CLOSED


# ------------------------------------------------ recipient failures vs outages (#13 point 2)


class RefusingProvider(FakeProvider):
    """A provider that answers 500 for some numbers and 200 for the others."""

    def __init__(self, name: str, refused: set[str]) -> None:
        super().__init__(name)
        self.refused = refused

    def send(self, recipient: str, text: str, *, message_id: str | None = None) -> Any:
        if recipient in self.refused:
            self.calls.append((recipient, text))
            raise server_error(self.name, status_code=500)
        return super().send(recipient, text)


def numbers(count: int) -> list[str]:
    return [f"010-{5000 + i // 1000:04d}-{1000 + i % 1000:04d}" for i in range(count)]


@pytest.mark.parametrize("where", ["first", "mixed"])
def test_recipient_specific_500s_never_open_the_circuits(where):
    rig = make_rig(breakers=True)  # the defaults: 20 messages, at least 10, half failed
    recipients = numbers(100)
    bad = set(recipients[:5] if where == "first" else recipients[::10])  # 5 % and 10 %
    rig.sender.providers = {
        "kakaotalk": RefusingProvider("kakaotalk", bad),
        "sms": RefusingProvider("sms", bad),
    }
    results = [rig.send(number) for number in recipients]
    for number, result in zip(recipients, results, strict=True):
        if number in bad:
            assert (result.status, result.error_kind) == ("failed", "server-error")
        else:
            assert (result.status, result.channel, result.fallback) == ("sent", "kakaotalk", False)
    assert all(b.opened_count == 0 for b in rig.sender.breakers.values())
    assert not any(kind == "provider-down" for kind, _ in rig.alerter.kinds)


def test_a_kakaotalk_outage_goes_to_sms_within_a_few_messages():
    rig = make_rig(breakers=True)
    rig.kakao.default = server_error()
    results = [rig.send(number) for number in numbers(30)]
    assert all((r.status, r.channel) == ("sent", "sms") for r in results)
    assert rig.sender.breakers["kakaotalk"].state is CircuitState.OPEN
    # nine messages of three attempts; the tenth message's first failure opens the circuit
    assert len(rig.kakao.calls) == 9 * 3 + 1
    assert ("provider-down", "kakaotalk") in rig.alerter.kinds


# ------------------------------------------------ no channel now: defer (#13 points 2-4)


def open_both(rig: Rig) -> None:
    for breaker in rig.sender.breakers.values():
        for _ in range(breaker.minimum_calls):
            breaker.record_failure(server_error())


def test_open_circuits_make_a_message_wait_not_fail():
    rig = make_rig(breakers=True, reset_timeout=30.0)
    open_both(rig)
    rig.clock.advance(10.0)
    result = rig.send()
    assert (result.status, result.attempts, result.unavailable) == ("failed", 0, True)
    assert result.available_in == pytest.approx(20.0)
    failed = sum(p["failed"] for p in rig.stats["providers"].values())
    assert failed == 0  # a waiting message is not counted
    rig.clock.advance(20.0)
    assert rig.send().status == "sent"  # the trial closes it


def test_a_message_refused_by_one_channel_does_not_wait():
    rig = make_rig(breakers=True)
    rig.sender.breakers["sms"].disable("sms refused the credentials (HTTP 401)")
    rig.kakao.enqueue(invalid_request())
    result = rig.send()
    assert (result.status, result.error_kind, result.unavailable) == (
        "failed",
        "invalid-request",
        False,
    )


# ------------------------------------------------ Retry-After over the cap (#13 point 4)


@pytest.mark.parametrize("retry_after", [61.0, 999999999.0])
def test_a_long_retry_after_pauses_the_provider_instead_of_the_send(retry_after):
    rig = make_rig(breakers=True, retry=RetryPolicy(max_retry_after=60.0))
    rig.kakao.enqueue(rate_limited(retry_after=retry_after))
    first = rig.send()
    assert (first.status, first.channel, first.fallback) == ("sent", "sms", True)
    assert first.attempts_by_channel == {"kakaotalk": 1, "sms": 1}
    assert rig.sleep.waits == []  # nothing slept
    breaker = rig.sender.breakers["kakaotalk"]
    assert breaker.paused_for() == pytest.approx(retry_after)
    assert breaker.state is CircuitState.CLOSED  # throttling is no outage
    second = rig.send()
    assert (second.channel, second.fallback) == ("sms", True)
    assert len(rig.kakao.calls) == 1  # paused: not called again
    waiting = rig.send(via="kakaotalk", fallback=False)
    assert (waiting.unavailable, waiting.error_kind) == (True, "provider-paused")
    assert waiting.available_in == pytest.approx(retry_after)
    rig.clock.advance(retry_after)
    assert (rig.send().channel, len(rig.kakao.calls)) == ("kakaotalk", 2)


def test_a_retry_after_within_the_cap_is_still_waited_for():
    rig = make_rig(breakers=True, retry=RetryPolicy(max_retry_after=60.0))
    rig.kakao.enqueue(rate_limited(retry_after=60.0))
    result = rig.send()
    assert (result.channel, rig.sleep.waits) == ("kakaotalk", [60.0])
    assert rig.sender.breakers["kakaotalk"].paused_for() == 0.0


# ---------------------------------------------------------------------- input errors


@pytest.mark.parametrize(
    ("recipient", "text", "kwargs", "words"),
    [
        ("02-123-4567", TEXT, {}, "invalid recipient"),
        ("010-1234", TEXT, {}, "invalid recipient"),
        ("", TEXT, {}, "invalid recipient"),
        (RECIPIENT, "", {}, "empty message"),
        (RECIPIENT, "   ", {"via": "sms"}, "empty message"),
        (RECIPIENT, "가" * 1001, {}, "too long for KakaoTalk"),
        (RECIPIENT, "가" * 1001, {"via": "sms"}, "too long for SMS"),
        (RECIPIENT, "축하해요 🎉", {"via": "sms"}, "no EUC-KR encoding"),
    ],
)
def test_input_errors_before_any_request(rig, recipient, text, kwargs, words):
    with pytest.raises(InputError, match=words):
        rig.send(recipient, text, **kwargs)
    assert rig.kakao.calls == []
    assert rig.sms.calls == []
    assert rig.stats == {"providers": {}, "fallbacks": 0}


def test_a_message_too_long_for_kakaotalk_goes_straight_to_sms(rig):
    text = "a" * 1200  # too long for KakaoTalk, an LMS for SMS
    result = rig.send(text=text)
    assert rig.kakao.calls == []
    assert rig.sms.calls == [(RECIPIENT, text)]
    assert (result.status, result.channel, result.fallback) == ("sent", "sms", False)
    assert (
        result.note == "too long for KakaoTalk (1200 characters, at most 1000): sent by SMS as LMS"
    )
    assert result.error is None


def test_a_message_too_long_for_kakaotalk_is_refused_without_fallback(rig):
    with pytest.raises(InputError, match="too long for KakaoTalk: 1200 characters"):
        rig.send(text="a" * 1200, fallback=False)
    assert rig.kakao.calls == [] and rig.sms.calls == []


def test_unknown_channel_is_refused(rig):
    with pytest.raises(ValueError):
        rig.send(via="email")


def test_longest_kakaotalk_message_still_fits_sms(rig):
    # 1,000 Korean characters are 2,000 bytes in EUC-KR: exactly the SMS limit
    text = "똠" * 1000
    rig.kakao.enqueue(auth_error())
    result = rig.send(text=text)
    assert (result.status, result.channel, result.fallback) == ("sent", "sms", True)
    assert rig.sms.calls == [(RECIPIENT, text)]


def test_message_sms_cannot_carry_means_no_fallback(rig):
    # Fine for KakaoTalk, impossible by SMS: KakaoTalk's failure is final, and says why.
    text = "가" * 990 + " 🎉"
    rig.kakao.enqueue(*repeat(server_error))
    result = rig.send(text=text)
    assert rig.sms.calls == []
    assert (result.status, result.fallback, result.attempts) == ("failed", False, 3)
    assert result.error is not None
    assert "no fallback" in result.error
    assert "cannot be sent by SMS" in result.error
    assert "HTTP 503" in result.error  # and why KakaoTalk failed
    assert rig.stats["fallbacks"] == 0


def test_emoji_means_no_fallback(rig):
    rig.kakao.enqueue(auth_error())
    result = rig.send(text="감사합니다 🙏")
    assert rig.sms.calls == []
    assert result.status == "failed"
    assert "no EUC-KR encoding" in (result.error or "")


# ---------------------------------------------------------------------- limiter


def test_limiter_is_asked_before_every_attempt():
    limiter = FakeLimiter(wait=0.25)
    rig = make_rig(limiter=limiter)
    rig.kakao.enqueue(server_error(), server_error(), server_error())
    result = rig.send()
    assert limiter.acquired == ["kakaotalk"] * 3 + ["sms"]
    assert limiter.settled == limiter.acquired  # each lease settled once its attempt ended
    assert result.limiter_wait_s == pytest.approx(1.0)
    stats = rig.stats["providers"]
    assert stats["kakaotalk"]["limiter"] == {"waits": 3, "wait_seconds": 0.75,
                                             "max_wait_seconds": 0.25}  # fmt: skip
    assert stats["sms"]["limiter"]["waits"] == 1


def test_429_is_reported_to_the_limiter_and_alerted_once():
    limiter = FakeLimiter()
    rig = make_rig(limiter=limiter)
    rig.kakao.enqueue(rate_limited(retry_after=3.0))
    rig.send()
    assert limiter.throttled == [("kakaotalk", 3.0)]
    assert rig.alerter.kinds.count(("rate-limit", "kakaotalk")) == 1
    assert "wait 3 s" in rig.alerter.alerts[0][2]


def test_waiting_for_the_limiter_is_not_an_alert():
    rig = make_rig(limiter=FakeLimiter(wait=5.0))
    rig.send()
    assert rig.alerter.alerts == []


def test_429_without_limiter_alerts(rig):
    rig.kakao.enqueue(rate_limited())
    rig.send()
    assert ("rate-limit", "kakaotalk") in rig.alerter.kinds


def test_broken_limiter_fails_the_message_not_the_run():
    class Broken(FakeLimiter):
        def acquire(self, providers: Any, timeout: float | None = None) -> Any:
            raise OSError("database is locked")

    rig = make_rig(limiter=Broken())
    result = rig.send()
    assert result.status == "failed"
    assert "rate limiter for kakaotalk failed" in (result.error or "")
    assert rig.kakao.calls == []


def test_a_store_lock_held_too_long_is_a_wait_not_a_failure():
    # The sqlite store's lock error names its holder but no provider: the message still
    # waits for its channel (bulk keeps the row), never failed with 0 attempts.
    class Locked(FakeLimiter):
        def acquire(self, providers: Any, timeout: float | None = None) -> Any:
            raise LimiterUnavailableError(
                "[limiter] path rl.sqlite.lock: locked by process 42 for more than 2 s",
                holder="process 42",
            )

    rig = make_rig(limiter=Locked())
    result = rig.send()
    assert (result.status, result.attempts, result.unavailable) == ("failed", 0, True)
    assert result.error_kind == "limiter-unavailable"
    assert rig.kakao.calls == [] and rig.sms.calls == []


# ---------------------------------------------------------------------- stats


def test_a_waiting_messages_earlier_5xx_is_not_counted_again_by_the_breaker():
    # Bad numbers that opened the circuits at the start of a file wait; re-sent into the
    # fresh window after the circuit closes, their 5xx must not weigh again (they reopened
    # it and sent every healthy row by SMS for another reset-timeout).
    rig = make_rig(breakers=True, window_size=4, minimum_calls=2)
    first = rig.send(refused_by=("kakaotalk",))
    assert first.refused_by == ("kakaotalk",)
    rig.kakao.enqueue(*repeat(server_error), *repeat(server_error))
    for _ in range(2):
        result = rig.send(refused_by=("kakaotalk",))
        assert (result.status, result.channel, result.refused_by) == ("sent", "sms", ("kakaotalk",))
    kakaotalk = rig.sender.breakers["kakaotalk"]
    assert kakaotalk.state is CircuitState.CLOSED and kakaotalk.failures == 0
    rig.kakao.enqueue(*repeat(server_error))
    assert rig.send().refused_by == ("kakaotalk",)  # a message not seen before: it counts
    assert kakaotalk.state is CircuitState.OPEN  # 1 of 2 failed


def test_fallbacks_are_counted_once_per_settled_message():
    # A message that fell back and then had to wait (both channels paused) is not an outcome
    # yet: the report and the metric count a fallback when a message settles by one, as
    # bulk's results and --json do, never once per try.
    from msgsend.metrics import Metrics

    rig = make_rig(breakers=True)
    stats, metrics = RunStats(), Metrics()
    rig.sender.events.subscribe(stats.on_event)
    rig.sender.events.subscribe(metrics.on_event)
    for breaker in rig.sender.breakers.values():
        breaker.pause(60.0, "asked to wait")
    waiting = rig.send()
    assert waiting.unavailable and waiting.fallback  # it left KakaoTalk, then waited
    rig.clock.advance(61.0)
    rig.kakao.enqueue(*repeat(server_error, 3))
    settled = rig.send()
    assert (settled.status, settled.channel, settled.fallback) == ("sent", "sms", True)
    report = stats.to_json()
    assert report["fallbacks"] == 1
    assert report["providers"]["kakaotalk"]["fallbacks_from"] == 1
    assert metrics.sample("msgsend_fallbacks_total") == 1


def test_read_timeouts_are_counted_as_uncertain(rig):
    rig.kakao.enqueue(read_timeout(), connection_lost(), ok())
    result = rig.send()
    assert (result.status, result.channel, result.uncertain) == ("sent", "kakaotalk", 2)
    assert rig.stats["providers"]["kakaotalk"]["uncertain"] == 2


def test_run_stats_match_the_messages():
    stats = RunStats()
    rig = make_rig()
    rig.sender.events.subscribe(stats.on_event)
    rig.kakao.enqueue(
        *repeat(server_error),  # message 1: three failures, then SMS
        ok(),  # message 2
        invalid_request(),  # message 3: refused, no fallback
        read_timeout(), ok(),  # message 4: one uncertain retry
    )  # fmt: skip
    results = [rig.send() for _ in range(4)]
    assert [(r.status, r.channel) for r in results] == [
        ("sent", "sms"),
        ("sent", "kakaotalk"),
        ("failed", "kakaotalk"),
        ("sent", "kakaotalk"),
    ]
    report = stats.to_json()
    kakao, sms = report["providers"]["kakaotalk"], report["providers"]["sms"]
    assert report["fallbacks"] == 1
    assert kakao["requests"] == 7
    assert kakao["results"] == {"invalid-request": 1, "read-timeout": 1, "server-error": 3,
                                "success": 2}  # fmt: skip
    assert kakao["success_rate"] == round(2 / 7, 4)
    assert (kakao["delivered"], kakao["failed"]) == (2, 1)
    assert kakao["retries"] == 3
    assert kakao["fallbacks_from"] == 1
    assert kakao["uncertain"] == 1
    assert kakao["latency_ms"]["p50"] is not None
    assert sms["requests"] == 1
    assert sms["results"] == {"success": 1}
    assert (sms["delivered"], sms["failed"], sms["retries"]) == (1, 0, 0)
    assert sum(r.retries for r in results) == 3


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [(1, 0.5, 1), (2, 0.5, 1), (4, 0.5, 2), (10, 0.5, 5), (20, 0.95, 19), (100, 0.95, 95),
     (100, 0.55, 55), (3, 0.0, 1), (3, 1.0, 3), (0, 0.5, None)],
)  # fmt: skip
def test_run_report_percentiles_are_nearest_rank_within_two_percent(n, fraction, expected):
    # (the histogram lives in report.py; kept here beside the RunStats numbers it feeds)
    from msgsend.report import LatencyHistogram

    histogram = LatencyHistogram()
    for value in range(n, 0, -1):
        histogram.add(float(value))
    if expected is None:
        assert histogram.quantile(fraction) is None
    else:
        assert histogram.quantile(fraction) == pytest.approx(expected, rel=0.02)
    assert histogram.max == (float(n) if n else None)


@pytest.mark.parametrize("latency", [14.2, 14.25, 3.07, 999.9])
def test_no_latency_quantile_is_above_the_max(latency):
    # A run's summary showed "p95 14.3, max 14.2": the bucket's middle, above the one sample.
    from msgsend.report import LatencyHistogram

    histogram = LatencyHistogram()
    histogram.add(latency)
    for q in (0.5, 0.95, 1.0):
        value = histogram.quantile(q)
        assert value is not None and value <= round(latency, 1)


def test_latency_histogram_memory_does_not_grow_with_the_count():
    from msgsend.report import LatencyHistogram

    histogram = LatencyHistogram()
    for i in range(2_000):
        histogram.add(5.0 + (i % 50))  # 5..54 ms
    assert histogram.n == 2_000
    assert len(histogram.counts) < 150  # buckets, not samples


def test_close_closes_providers(rig):
    closed = []
    rig.sender._on_close = lambda: closed.append(True)
    with rig.sender:
        pass
    assert rig.kakao.closed and rig.sms.closed
    assert closed == [True]


# ---------------------------------------------------------------------- from_config


def test_from_config_wires_retry_fallback_and_breakers():
    from msgsend.config import load_config

    config = load_config(
        overrides={
            "retry.max-attempts": 4,
            "retry.backoff-delay": 0,
            "retry.max-retry-after": 5,
            "circuit-breaker.window-size": 4,
            "circuit-breaker.minimum-calls": 2,
            "circuit-breaker.failure-rate-threshold": 1.0,
            "fallback.enabled": False,
        }
    )
    limiter = FakeLimiter()
    sender = Sender.from_config(config, limiter=limiter)
    with sender:
        assert sender.retry.total == 4
        assert sender.retry.backoff_factor == 0.0
        assert sender.fallback is False
        assert sender.limiter is limiter
        assert set(sender.breakers) == {"kakaotalk", "sms"}
        assert sender.retry.max_retry_after == 5.0
        breaker = sender.breakers["kakaotalk"]
        assert (breaker.window_size, breaker.minimum_calls) == (4, 2)
        assert breaker.failure_rate_threshold == 1.0
        for provider in sender.providers.values():
            provider.close()
        kakao = FakeProvider("kakaotalk").enqueue(*repeat(server_error, 8))
        sender.providers = {"kakaotalk": kakao, "sms": FakeProvider("sms")}  # type: ignore[dict-item]
        assert sender.send(RECIPIENT, TEXT).error_kind == "server-error"
        assert len(kakao.calls) == 4
        result = sender.send(RECIPIENT, TEXT)
        assert len(kakao.calls) == 5  # the second message's first failure opened it
        assert result.status == "failed"
        assert result.error_kind == "circuit-open"
        assert sender.stats.to_json()["providers"]["kakaotalk"]["circuit_opened"] == 1
    assert limiter.closed is False  # a borrowed limiter is not closed


def test_the_message_that_meets_a_long_retry_after_waits_when_it_has_no_other_channel():
    rig = make_rig(breakers=True, retry=RetryPolicy(max_retry_after=60.0))
    rig.kakao.enqueue(rate_limited(retry_after=600.0))
    result = rig.send(fallback=False)
    assert (result.status, result.unavailable, result.error_kind) == (
        "failed",
        True,
        "provider-paused",
    )
    assert result.available_in == pytest.approx(600.0)
    assert "max-retry-after" in (result.error or "")
    assert rig.sleep.waits == []
