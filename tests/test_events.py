"""Tests for msgsend.events: one emit function, listeners isolated, the sender's event trail."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fakes import FakeClock, FakeLimiter, FakeProvider, FakeSleep, ok, server_error
from msgsend.client import Sender
from msgsend.events import (
    AttemptFinished,
    Event,
    Events,
    FellBack,
    LimiterWaited,
    MessageFinished,
    RetryScheduled,
)
from msgsend.retry import RetryPolicy


def test_every_listener_gets_every_event_in_order() -> None:
    seen: list[tuple[str, Event]] = []
    events = Events(lambda e: seen.append(("a", e)))
    events.subscribe(lambda e: seen.append(("b", e)))
    event = LimiterWaited("sms", 0.5)
    events.emit(event)
    assert seen == [("a", event), ("b", event)]


def test_subscribing_twice_calls_once_and_unsubscribe_stops() -> None:
    seen: list[Event] = []
    events = Events()
    events.subscribe(seen.append)
    events.subscribe(seen.append)
    events.emit(LimiterWaited("sms", 0.0))
    events.unsubscribe(seen.append)
    events.emit(LimiterWaited("sms", 0.0))
    assert len(seen) == 1


def test_a_failing_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    seen: list[Event] = []
    events = Events(broken, seen.append)
    with caplog.at_level(logging.ERROR, "msgsend.events"):
        events.emit(LimiterWaited("sms", 0.0))
    assert len(seen) == 1
    assert "listener bug" in caplog.text


def test_events_are_immutable() -> None:
    event = LimiterWaited("sms", 1.0)
    with pytest.raises(AttributeError):
        event.seconds = 2.0  # type: ignore[misc]


def test_the_sender_tells_what_happened_to_a_message_that_fell_back() -> None:
    kakao, sms = FakeProvider("kakaotalk"), FakeProvider("sms")
    kakao.enqueue(server_error(), server_error())
    sms.enqueue(ok())
    trail: list[Event] = []
    sender = Sender(
        {"kakaotalk": kakao, "sms": sms},  # type: ignore[dict-item]
        retry=RetryPolicy(total=2),
        limiter=FakeLimiter(wait=0.25),
        sleep=FakeSleep(FakeClock()),
        events=Events(trail.append),
    )
    sender.send("010-1234-5678", "안녕하세요")
    kinds: list[Any] = [type(event).__name__ for event in trail]
    assert kinds == [
        "LimiterWaited",
        "AttemptFinished",
        "RetryScheduled",
        "LimiterWaited",
        "AttemptFinished",
        "FellBack",
        "LimiterWaited",
        "AttemptFinished",
        "MessageFinished",
    ]
    attempts = [e for e in trail if isinstance(e, AttemptFinished)]
    assert [(a.provider, a.result, a.attempt) for a in attempts] == [
        ("kakaotalk", "server-error", 1),
        ("kakaotalk", "server-error", 2),
        ("sms", "success", 3),
    ]
    retry = next(e for e in trail if isinstance(e, RetryScheduled))
    assert (retry.provider, retry.retry) == ("kakaotalk", 1)
    fell = next(e for e in trail if isinstance(e, FellBack))
    assert (fell.from_provider, fell.to_provider) == ("kakaotalk", "sms")
    finished = trail[-1]
    assert isinstance(finished, MessageFinished)
    assert (finished.status, finished.channel, finished.fallback, finished.attempts) == (
        "sent",
        "sms",
        True,
        3,
    )
    assert finished.limiter_wait_s == pytest.approx(0.75)


def test_events_never_carry_the_full_number() -> None:
    kakao = FakeProvider("kakaotalk")
    kakao.enqueue(server_error(), ok())
    trail: list[Event] = []
    sender = Sender(
        {"kakaotalk": kakao},  # type: ignore[dict-item]
        sleep=FakeSleep(FakeClock()),
        events=Events(trail.append),
    )
    sender.send("010-1234-5678", "안녕하세요")
    assert trail
    assert all("1234" not in repr(event) for event in trail)
