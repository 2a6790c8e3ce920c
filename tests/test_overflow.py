"""Overflow: a KakaoTalk message goes by SMS at once when only SMS's budget has a free slot.

The rate limiter is the real one (memory store) on a ``FakeClock``; its waits move the clock,
so "the budget is full" is exact and nothing sleeps.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tests.fakes import FakeClock, FakeProvider, FakeSleep, server_error

from msgsend.bulk import BulkOptions, send_bulk
from msgsend.circuit import CircuitBreaker
from msgsend.client import Sender
from msgsend.events import Event, Events, FellBack, Overflowed
from msgsend.models import Channel, DeliveryResult
from msgsend.ratelimit import Limit, RateLimiter
from msgsend.retry import RetryPolicy

TRUCK = "주문이 출발했어요 🚚"  # no EUC-KR encoding: SMS cannot carry it


class Setup:
    """KakaoTalk 2 and SMS 3 messages a minute, fake providers, events recorded."""

    def __init__(self, *, kakaotalk: int = 2, sms: int = 3, failing_sms: bool = False) -> None:
        self.clock = FakeClock()
        self.sleep = FakeSleep(self.clock)
        self.limiter = RateLimiter(
            {"kakaotalk": Limit(kakaotalk, 60.0), "sms": Limit(sms, 60.0)},
            store="memory",
            clock=self.clock,
            sleep=self.sleep,
            guard=0.0,
        )
        self.kakaotalk = FakeProvider("kakaotalk")
        self.sms = FakeProvider("sms", default=server_error("sms") if failing_sms else None)
        self.events: list[Event] = []
        self.breakers = {
            name: CircuitBreaker(
                name,
                window_size=1,
                minimum_calls=1,
                failure_rate_threshold=1.0,
                reset_timeout=30,
                clock=self.clock,
            )
            for name in ("kakaotalk", "sms")
        }
        self.sender = Sender(
            {"kakaotalk": self.kakaotalk, "sms": self.sms},
            retry=RetryPolicy(total=1),
            limiter=self.limiter,
            breakers=self.breakers,
            events=Events(self.events.append),
            sleep=self.sleep,
        )

    def send(self, text: str = "안내", **kwargs: object) -> DeliveryResult:
        return self.sender.send("010-1234-5678", text, **kwargs)  # type: ignore[arg-type]


def test_overflow_sends_by_sms_while_kakaotalk_is_full_and_waits_for_the_first_free() -> None:
    setup = Setup()
    results = [setup.send(overflow=True) for _ in range(5)]
    assert [r.channel for r in results] == ["kakaotalk"] * 2 + ["sms"] * 3
    assert [r.overflow for r in results] == [False] * 2 + [True] * 3
    assert all(r.fallback == r.overflow for r in results)
    assert setup.sleep.waits == []  # nothing waited: both budgets were used at once
    assert sum(isinstance(e, Overflowed) for e in setup.events) == 3
    assert not any(isinstance(e, FellBack) for e in setup.events)  # no fallback alert
    sixth = setup.send(overflow=True)  # both full: whichever frees first (KakaoTalk, at 60 s)
    assert sixth.channel == "kakaotalk" and not sixth.overflow
    assert setup.sleep.total == pytest.approx(60.0, abs=0.01)


def test_overflows_are_counted_in_their_own_metric() -> None:
    from msgsend.metrics import Metrics

    metrics = Metrics()
    setup = Setup()
    setup.sender.events.subscribe(metrics.on_event)
    for _ in range(3):
        setup.send(overflow=True)
    assert metrics.sample("msgsend_overflows_total") == 1
    # and once in fallbacks, as the row is recorded (fallback=true) and --json counts it
    assert metrics.sample("msgsend_fallbacks_total") == 1


def test_without_overflow_a_kakaotalk_message_waits_for_kakaotalk() -> None:
    setup = Setup()
    results = [setup.send() for _ in range(3)]
    assert [r.channel for r in results] == ["kakaotalk"] * 3
    assert setup.sleep.total == pytest.approx(60.0, abs=0.01)


@pytest.mark.parametrize(
    ("why", "kwargs", "text"),
    [
        ("fallback off", {"fallback": False}, "안내"),
        ("the row names its channel", {"via": Channel.SMS}, "안내"),
        ("SMS cannot carry it", {}, TRUCK),
    ],
)
def test_overflow_never_applies(why: str, kwargs: dict[str, object], text: str) -> None:
    setup = Setup()
    via = kwargs.get("via", Channel.KAKAOTALK)
    results = [setup.send(text, overflow=True, **kwargs) for _ in range(3)]
    assert all(not r.overflow for r in results), why
    assert {r.channel for r in results} == {str(via)}


def test_no_overflow_onto_an_open_circuit() -> None:
    setup = Setup()
    setup.breakers["sms"].record_failure(server_error("sms"))  # threshold 1: open
    results = [setup.send(overflow=True) for _ in range(3)]
    assert [r.channel for r in results] == ["kakaotalk"] * 3
    assert setup.sms.calls == []


def test_an_overflowed_message_that_sms_fails_goes_back_to_kakaotalk() -> None:
    setup = Setup(failing_sms=True)
    setup.send(overflow=True)
    setup.send(overflow=True)
    third = setup.send(overflow=True)  # KakaoTalk full: SMS, which answers 503
    assert third.status == "sent" and third.channel == "kakaotalk"
    assert not third.overflow and not third.fallback
    assert len(setup.sms.calls) == 1
    assert not any(isinstance(e, FellBack) for e in setup.events)


def test_an_unused_slot_is_given_back() -> None:
    setup = Setup(kakaotalk=1, sms=1)
    setup.breakers["kakaotalk"].disable("HTTP 401")  # KakaoTalk refuses at the breaker
    first = setup.send(overflow=True)  # KakaoTalk disabled: no overflow, plain fallback
    assert first.channel == "sms" and not first.overflow
    assert setup.limiter.stats("kakaotalk").acquired == 0


# -- bulk -------------------------------------------------------------------------------------


class RecordingSender:
    """Sends nothing; answers an overflow when asked to overflow, and records how it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Channel, bool]] = []

    def send(
        self,
        recipient: str,
        text: str,
        *,
        via: Channel = Channel.KAKAOTALK,
        fallback: bool | None = None,
        overflow: bool = False,
        message_id: str | None = None,
    ) -> DeliveryResult:
        self.calls.append((recipient, via, overflow))
        channel = "sms" if overflow else str(via)
        return DeliveryResult(
            recipient, "sent", channel=channel, fallback=overflow, overflow=overflow, attempts=1
        )


def test_bulk_overflows_only_rows_without_a_via_cell(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "message", "via"])
        writer.writerow(["010-1000-0001", "one", ""])
        writer.writerow(["010-1000-0002", "two", "kakaotalk"])
        writer.writerow(["010-1000-0003", "three", "sms"])
    sender = RecordingSender()
    report = send_bulk(source, sender, BulkOptions(concurrency=1, overflow=True))
    assert sorted((r, o) for r, _, o in sender.calls) == [
        ("010-1000-0001", True),
        ("010-1000-0002", False),
        ("010-1000-0003", False),
    ]
    with report.results_path.open(encoding="utf-8-sig", newline="") as handle:
        rows = {int(line["row"]): line for line in csv.DictReader(handle)}
    assert (rows[1]["channel"], rows[1]["fallback"], rows[1]["error"]) == (
        "sms",
        "true",
        "overflow",
    )
    assert rows[2]["error"] == "" and rows[2]["fallback"] == "false"
    assert report.overflows == 1 and report.fallbacks == 1
    assert report.to_json()["overflows"] == 1


def test_bulk_without_overflow_never_asks_for_it(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("phone,message\n010-1000-0001,one\n", encoding="utf-8")
    sender = RecordingSender()
    send_bulk(source, sender, BulkOptions(concurrency=1))
    assert sender.calls == [("010-1000-0001", Channel.KAKAOTALK, False)]
