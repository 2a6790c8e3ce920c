"""Tests for msgsend.events: one emit function, listeners isolated, the sender's event trail."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from fakes import FakeClock, FakeLimiter, FakeProvider, FakeSleep, ok, server_error
from msgsend.bulk import BulkOptions, send_bulk
from msgsend.client import Sender
from msgsend.events import (
    AttemptFinished,
    Event,
    Events,
    FellBack,
    LimiterWaited,
    MessageFinished,
    RetryScheduled,
    RowSettled,
)
from msgsend.models import DeliveryResult
from msgsend.report import RowCounts
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


# -- a bulk run's rows: one RowSettled each, the report is its listener ------------------------


class _ScriptedSender:
    """Answers each recipient as scripted: kakaotalk, fallback, overflow, failed, timeouts."""

    def send(
        self, recipient: str, text: str, *, overflow: bool = False, **kwargs: Any
    ) -> DeliveryResult:
        last = recipient[-1]
        if last == "1":  # delivered by KakaoTalk after two retries
            return DeliveryResult(recipient, "sent", "kakaotalk", attempts=3, retries=2)
        if last == "2":  # fell back to SMS; one read timeout on the way
            return DeliveryResult(
                recipient, "sent", "sms", fallback=True, attempts=2, retries=0, uncertain=1
            )
        if last == "3":  # KakaoTalk's budget was full: by SMS at once
            assert overflow
            return DeliveryResult(
                recipient, "sent", "sms", fallback=True, overflow=True, attempts=1
            )
        return DeliveryResult(  # every provider failed
            recipient,
            "failed",
            "sms",
            fallback=True,
            attempts=4,
            retries=2,
            error="every provider failed: HTTP 503",
        )


def test_a_bulk_run_settles_each_row_once_and_its_report_is_what_a_listener_counts(
    tmp_path: Path,
) -> None:
    long_text = "가" * 100  # too long for one SMS: an LMS
    source = tmp_path / "in.csv"
    source.write_text(
        "phone,message\n"
        "010-1234-0001,hello\n"
        f"010-1234-0002,{long_text}\n"
        "010-1234-0003,hello three\n"
        "010-1234-0004,hello four\n"
        "bad,hello\n"
        "010-1234-0001,hello\n",
        encoding="utf-8",
    )
    seen: list[Event] = []
    options = BulkOptions(fallback=True, overflow=True, concurrency=2)
    report = send_bulk(source, _ScriptedSender(), options, emit=seen.append)

    rows = [event for event in seen if isinstance(event, RowSettled)]
    assert sorted(event.row for event in rows) == [1, 2, 3, 4, 5, 6]  # each row exactly once
    by_row = {event.row: event for event in rows}
    assert (by_row[1].status, by_row[1].kind, by_row[1].retries) == ("sent", "kakaotalk", 2)
    assert (by_row[2].kind, by_row[2].fallback, by_row[2].uncertain) == ("lms", True, 1)
    assert (by_row[3].channel, by_row[3].overflow, by_row[3].kind) == ("sms", True, "sms")
    assert (by_row[4].status, by_row[4].retries, by_row[4].overflow) == ("failed", 2, False)
    assert by_row[4].error == "every provider failed: HTTP 503"
    assert (by_row[5].status, by_row[5].kind, by_row[5].attempts) == ("invalid", None, 0)
    assert (by_row[6].status, by_row[6].error) == ("duplicate", "duplicate of row 1")
    # Events never carry a full number or the message text.
    for event in rows:
        assert "1234" not in repr(event) and long_text not in repr(event)

    # What any listener derives from the events is the report's row counts, field by field.
    listener = RowCounts()
    for event in seen:
        listener.on_event(event)
    for name in (spec.name for spec in dataclasses.fields(RowCounts)):
        assert getattr(report, name) == getattr(listener, name), name
    document = report.to_json()
    assert (document["sent"], document["failed"], document["invalid"]) == (3, 1, 1)
    assert document["duplicate"] == 1 and document["sent_by_channel"] == {"kakaotalk": 1, "sms": 2}
    assert document["kinds"] == {"kakaotalk": 1, "lms": 1, "sms": 1}
    assert (document["fallbacks"], document["overflows"], document["uncertain"]) == (3, 1, 1)
    assert document["retries"] == 4
    assert document["failed_rows"] == [{"row": 4, "error": "every provider failed: HTTP 503"}]
    assert [entry["row"] for entry in document["invalid_rows"]] == [5]
