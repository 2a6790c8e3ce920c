"""Tests for msgsend.outage and the bulk run's waiting: outages, quiet hours, systematic stops.

Every test injects its clocks: a ``FakeClock`` read as both the monotonic and the wall clock,
and a ``FakeSleep`` that moves it; nothing waits in real time.
"""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from tests.fakes import FakeClock, FakeProvider, FakeSleep, auth_error, server_error

from msgsend.alerts import alert_for
from msgsend.bulk import BulkOptions, RunClocks, send_bulk
from msgsend.circuit import CircuitBreaker
from msgsend.client import Sender
from msgsend.errors import InvalidRequestError, OutageError, RefusedError, SystematicRefusalError
from msgsend.events import Event, RunPaused, RunResumed, RunStopped
from msgsend.models import Channel, DeliveryResult, Refusal
from msgsend.outage import (
    MAX_HOLD,
    MIN_HOLD,
    SYSTEMATIC_REFUSALS,
    QuietHours,
    RefusalStreak,
    SendGate,
)
from msgsend.retry import RetryPolicy

SEOUL = ZoneInfo("Asia/Seoul")


def at(text: str) -> float:
    """Epoch seconds of a Seoul local time such as ``2026-11-30 20:59``."""
    return datetime.fromisoformat(text).replace(tzinfo=SEOUL).timestamp()


def seoul(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock(), SEOUL)


# -- quiet hours ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "resume"),
    [
        ("2026-11-30 20:59:59", None),
        ("2026-11-30 21:00:00", "2026-12-01 08:00"),  # the window includes its start
        ("2026-11-30 23:30:00", "2026-12-01 08:00"),
        ("2026-12-01 00:00:00", "2026-12-01 08:00"),
        ("2026-12-01 07:59:59", "2026-12-01 08:00"),
        ("2026-12-01 08:00:00", None),  # ... and not its end
        ("2026-12-01 12:00:00", None),
    ],
)
def test_quiet_hours_across_midnight(local: str, resume: str | None) -> None:
    quiet = QuietHours.parse("21:00-08:00", "Asia/Seoul")
    when = datetime.fromisoformat(local).replace(tzinfo=SEOUL)
    expected = None if resume is None else datetime.fromisoformat(resume).replace(tzinfo=SEOUL)
    assert quiet.resume_at(when) == expected


def test_quiet_hours_within_one_day_and_in_another_zone() -> None:
    quiet = QuietHours.parse("12:00-13:30", "Asia/Seoul")
    noon_utc = datetime(2026, 11, 30, 3, 15, tzinfo=ZoneInfo("UTC"))  # 12:15 in Seoul
    assert quiet.resume_at(noon_utc) == datetime(2026, 11, 30, 13, 30, tzinfo=SEOUL)
    assert quiet.resume_at(datetime(2026, 11, 30, 13, 30, tzinfo=SEOUL)) is None
    assert str(quiet) == "12:00-13:30 Asia/Seoul"


@pytest.mark.parametrize(
    ("spec", "zone", "complaint"),
    [
        ("21:00", "Asia/Seoul", "HH:MM-HH:MM"),
        ("25:00-08:00", "Asia/Seoul", "HH:MM-HH:MM"),
        ("21:00-21:00", "Asia/Seoul", "must differ"),
        ("21:00-08:00", "Asia/Nowhere", "unknown time zone"),
    ],
)
def test_quiet_hours_refuses_what_it_cannot_read(spec: str, zone: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        QuietHours.parse(spec, zone)


# -- the gate ------------------------------------------------------------------------------------


def gate(clock: FakeClock, **kwargs: object) -> tuple[SendGate, FakeSleep, list[BaseException]]:
    sleep = FakeSleep(clock)
    stops: list[BaseException] = []
    made = SendGate(clock=clock, wall=clock, wait=sleep, on_stop=stops.append, **kwargs)  # type: ignore[arg-type]
    return made, sleep, stops


def test_hold_waits_for_the_hint_and_stops_after_max_outage_without_a_delivery() -> None:
    clock = FakeClock()
    gate_, sleep, stops = gate(clock, max_outage=100)
    assert gate_.hold("kakaotalk circuit open", 25.0)
    assert sleep.waits == [25.0]
    assert gate_.hold("kakaotalk circuit open", None)  # unknown: re-check soon
    assert sleep.waits[-1] == 1.0
    assert gate_.hold("kakaotalk circuit open", 10_000.0)  # never longer than MAX_HOLD
    assert sleep.waits[-1] == MAX_HOLD
    assert gate_.hold("kakaotalk circuit open", 0.01)  # nor shorter than MIN_HOLD
    assert sleep.waits[-1] == MIN_HOLD
    while gate_.hold("still down", 30.0):
        pass
    assert clock() - 1000.0 == pytest.approx(100.0)  # to the deadline, not past it
    assert len(stops) == 1 and isinstance(stops[0], OutageError)
    assert "no provider could deliver for 100 s" in str(stops[0])
    assert "still down" in str(stops[0])
    assert not gate_.before_send() and not gate_.hold("again", 1.0)
    assert len(stops) == 1  # reported once


def test_a_delivery_restarts_the_outage_clock() -> None:
    clock = FakeClock()
    gate_, _, stops = gate(clock, max_outage=60)
    clock.advance(50)
    gate_.delivered()
    clock.advance(50)  # 100 s since the start, 50 since the delivery
    assert gate_.hold("down", 5.0) and not stops
    clock.advance(10)
    assert not gate_.hold("down", 5.0)
    assert stops


def test_pause_is_told_when_it_starts_when_overdue_and_when_it_ends() -> None:
    clock = FakeClock(at("2026-11-30 10:00"))
    shown: list[Event] = []
    gate_, _, _ = gate(clock, emit=shown.append)
    gate_.hold("sms circuit open", 20.0)
    assert len(shown) == 1 and isinstance(shown[0], RunPaused) and shown[0].kind == "outage"
    # Shown in the host's local time (as the operator's terminal shows it).
    first_until = datetime.fromtimestamp(at("2026-11-30 10:00:20")).astimezone()
    assert shown[0].describe() == f"waiting until {first_until:%H:%M:%S}: sms circuit open"
    gate_.hold("sms circuit open", 20.0)  # its moment passed: told again, with the new one
    assert len(shown) == 2 and isinstance(shown[1], RunPaused) and shown[1].until is not None
    assert shown[1].until.timestamp() == at("2026-11-30 10:00:40")
    gate_.delivered()
    assert shown[-1] == RunResumed("outage", "sms circuit open")
    gate_.delivered()
    assert len(shown) == 3


def test_quiet_hours_pause_sending_until_the_window_ends() -> None:
    clock = FakeClock(at("2026-11-30 20:59"))
    quiet = QuietHours.parse("21:00-08:00", "Asia/Seoul")
    shown: list[Event] = []
    gate_, sleep, stops = gate(clock, quiet_hours=quiet, emit=shown.append, max_outage=300)
    assert gate_.before_send() and sleep.waits == []
    clock.advance(60)
    assert gate_.before_send()
    assert seoul(clock) == datetime(2026, 12, 1, 8, 0, tzinfo=SEOUL)
    assert max(sleep.waits) <= 60  # re-checked every minute
    assert isinstance(shown[0], RunPaused) and shown[0].kind == "quiet-hours"
    assert shown[0].describe() == "waiting until 08:00:00: quiet hours 21:00-08:00 Asia/Seoul"
    assert shown[1:] == [RunResumed("quiet-hours", "quiet hours 21:00-08:00 Asia/Seoul")]
    assert gate_.quiet_s == pytest.approx(11 * 3600)
    # Eleven hours of quiet do not count as an outage: the run still has its 300 s.
    assert gate_.hold("kakaotalk circuit open", 30.0) and not stops


class TimedProvider(FakeProvider):
    """A FakeProvider that notes the (fake) time of each request."""

    def __init__(self, name: str, clock: FakeClock) -> None:
        super().__init__(name)
        self.clock = clock
        self.times: list[datetime] = []

    def send(self, recipient: str, text: str, *, message_id: str | None = None) -> object:
        self.times.append(seoul(self.clock))
        return super().send(recipient, text, message_id=message_id)


@pytest.mark.parametrize("stopped", [False, True])
def test_quiet_hours_are_checked_before_each_attempt_retries_too(
    tmp_path: Path, stopped: bool
) -> None:
    """A message begun at 20:59:59 whose retry falls after 21:00 waits for 08:00 to retry."""
    clock = FakeClock(at("2026-11-30 20:59") + 59)
    stop = threading.Event()
    sleep = FakeSleep(clock)

    def run_wait(seconds: float) -> None:  # the quiet-hours pause; Ctrl-C arrives during it
        sleep(seconds)
        if stopped:
            stop.set()

    kakaotalk = TimedProvider("kakaotalk", clock).enqueue(server_error(status_code=503))
    sms = TimedProvider("sms", clock)
    sender = Sender(
        {"kakaotalk": kakaotalk, "sms": sms},  # type: ignore[dict-item]
        retry=RetryPolicy(total=3, backoff_factor=2.0),
        sleep=FakeSleep(clock),  # the retry's 2 s: from 20:59:59 to 21:00:01
    )
    source = write_rows(tmp_path / "in.csv", 1)
    report = send_bulk(
        source,
        sender,
        BulkOptions(concurrency=1, quiet_hours=QuietHours.parse("21:00-08:00", "Asia/Seoul")),
        stop=stop,
        clocks=RunClocks(monotonic=clock, wall=clock, wait=run_wait),
    )
    assert kakaotalk.times[0] == datetime(2026, 11, 30, 20, 59, 59, tzinfo=SEOUL)
    assert sms.times == []
    if stopped:  # nothing more went out; the row is left for --resume, not failed
        assert kakaotalk.times[1:] == [] and report.interrupted
        assert recorded(report.results_path) == {}
    else:
        assert kakaotalk.times[1:] == [datetime(2026, 12, 1, 8, 0, tzinfo=SEOUL)]
        assert recorded(report.results_path)[1]["status"] == "sent"
        assert report.quiet_s == pytest.approx(11 * 3600 - 1)


def test_ignoring_quiet_hours_is_no_window() -> None:
    clock = FakeClock(at("2026-11-30 23:00"))
    gate_, sleep, _ = gate(clock, quiet_hours=None)
    assert gate_.before_send() and sleep.waits == []


def test_a_stopping_run_ends_the_quiet_pause() -> None:
    clock = FakeClock(at("2026-11-30 23:00"))
    stop = threading.Event()
    sleep = FakeSleep(clock)

    def wait(seconds: float) -> None:
        sleep(seconds)
        stop.set()

    gate_ = SendGate(
        quiet_hours=QuietHours.parse("21:00-08:00"),
        stopping=stop.is_set,
        clock=clock,
        wall=clock,
        wait=wait,
    )
    assert not gate_.before_send()
    assert len(sleep.waits) == 1


# -- the refusal streak ----------------------------------------------------------------------------


def refusal(status: int = 400, provider: str = "kakaotalk") -> Refusal:
    return Refusal(provider, status, "invalid-request", '{"error": "bad field"}')


def test_twenty_identical_refusals_in_a_row_stop() -> None:
    streak = RefusalStreak()
    for _ in range(SYSTEMATIC_REFUSALS - 1):
        assert streak.observe(refusal()) is None
    error = streak.observe(refusal())
    assert isinstance(error, SystematicRefusalError)
    assert "20 rows in a row were refused by kakaotalk with HTTP 400" in str(error)
    assert '{"error": "bad field"}' in str(error)
    assert "request format" in str(error) and "credentials" in str(error)


def test_a_different_outcome_ends_the_streak() -> None:
    streak = RefusalStreak(limit=3)
    assert streak.observe(refusal()) is None
    assert streak.observe(refusal()) is None
    assert streak.observe(None) is None  # a delivery (or another kind of failure)
    assert streak.observe(refusal()) is None
    assert streak.observe(refusal(status=422)) is None  # another signature starts over
    assert streak.observe(refusal(status=422)) is None
    assert streak.observe(refusal(status=422, provider="sms")) is None
    assert streak.observe(refusal(status=422, provider="sms")) is None
    assert streak.observe(refusal(status=422, provider="sms")) is not None


def test_rows_retried_by_resume_do_not_count() -> None:
    streak = RefusalStreak(limit=2)
    assert streak.observe(refusal()) is None
    for _ in range(5):
        assert streak.observe(refusal(), retried=True) is None
    assert streak.observe(refusal()) is not None


# -- the sender says why a message was not sent ---------------------------------------------------


def test_sender_marks_a_message_no_channel_could_take_now() -> None:
    clock = FakeClock()
    breakers = {
        name: CircuitBreaker(
            name,
            window_size=1,
            minimum_calls=1,
            failure_rate_threshold=1.0,
            reset_timeout=30,
            clock=clock,
        )
        for name in ("kakaotalk", "sms")
    }
    kakaotalk = FakeProvider("kakaotalk", default=server_error("kakaotalk"))
    sms = FakeProvider("sms", default=server_error("sms"))
    sender = Sender(
        {"kakaotalk": kakaotalk, "sms": sms},
        retry=RetryPolicy(total=1),
        breakers=breakers,
        sleep=FakeSleep(clock),
    )
    # Both answer 503 and both circuits open on it: the failure is the outage's, it can wait.
    first = sender.send("010-1234-5678", "hello")
    assert first.status == "failed" and first.attempts == 2
    assert first.unavailable and first.available_in == pytest.approx(30.0)
    clock.advance(10)
    second = sender.send("010-1234-5678", "hello")
    assert second.status == "failed" and second.attempts == 0
    assert second.unavailable and second.available_in == pytest.approx(20.0)
    assert second.refusal is None and not second.credentials_refused
    # Not an outcome yet (a bulk row waits): counted once it settles, not while it waits.
    assert sender.stats.to_json()["providers"]["sms"]["failed"] == 0


def test_a_failure_while_a_channel_is_up_is_the_message_own() -> None:
    # A provider that answers 500 for one number: its circuit stays closed, the row fails.
    breakers = {
        name: CircuitBreaker(
            name, window_size=5, minimum_calls=5, failure_rate_threshold=1.0, reset_timeout=30
        )
        for name in ("kakaotalk", "sms")
    }
    sender = Sender(
        {
            "kakaotalk": FakeProvider("kakaotalk", default=server_error("kakaotalk", 500)),
            "sms": FakeProvider("sms", default=server_error("sms", 500)),
        },
        retry=RetryPolicy(total=1),
        breakers=breakers,
        sleep=FakeSleep(),
    )
    result = sender.send("010-1234-5678", "hello")
    assert result.status == "failed" and not result.unavailable and result.refusal is None
    assert sender.stats.to_json()["providers"]["sms"]["failed"] == 1


def test_a_message_only_kakaotalk_can_carry_waits_for_kakaotalk() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "kakaotalk",
        window_size=1,
        minimum_calls=1,
        failure_rate_threshold=1.0,
        reset_timeout=30,
        clock=clock,
    )
    sms = FakeProvider("sms")
    sender = Sender(
        {"kakaotalk": FakeProvider("kakaotalk", default=server_error("kakaotalk")), "sms": sms},
        retry=RetryPolicy(total=1),
        breakers={"kakaotalk": breaker},
        sleep=FakeSleep(clock),
    )
    emoji = "주문이 출발했어요 🚚"  # no EUC-KR encoding: SMS cannot carry it
    result = sender.send("010-1234-5678", emoji)
    assert result.status == "failed" and result.unavailable
    assert result.available_in == pytest.approx(30.0) and sms.calls == []


def test_sender_marks_credentials_refused_everywhere() -> None:
    sender = Sender(
        {
            "kakaotalk": FakeProvider("kakaotalk", default=auth_error("kakaotalk")),
            "sms": FakeProvider("sms", default=auth_error("sms", 403)),
        },
        sleep=FakeSleep(),
    )
    result = sender.send("010-1234-5678", "hello")
    assert result.credentials_refused and not result.unavailable


def test_sender_quotes_a_refusal_with_numbers_masked() -> None:
    refusing = InvalidRequestError(
        "kakaotalk rejected the message (HTTP 400)",
        provider="kakaotalk",
        status_code=400,
        body='{"error":  "unknown field phoneNumber",\n "to": "010-1234-5678"}',
    )
    sender = Sender(
        {"kakaotalk": FakeProvider("kakaotalk", default=refusing), "sms": FakeProvider("sms")},
        sleep=FakeSleep(),
    )
    result = sender.send("010-1234-5678", "hello")
    assert result.refusal is not None
    assert result.refusal.signature == ("kakaotalk", 400, "invalid-request")
    assert result.refusal.excerpt == '{"error": "unknown field phoneNumber", "to": "010-****-5678"}'


# -- bulk: rows wait, the run stops and resumes ---------------------------------------------------


class ScriptedSender:
    """Answers by a script: ``answer(recipient, call_number)`` returns the DeliveryResult."""

    def __init__(self, answer: Callable[[str, int], DeliveryResult]) -> None:
        self.answer = answer
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def send(
        self,
        recipient: str,
        text: str,
        *,
        via: Channel = Channel.KAKAOTALK,
        fallback: bool | None = None,
        message_id: str | None = None,
        before_attempt: Callable[[], bool] | None = None,
    ) -> DeliveryResult:
        with self.lock:
            self.calls.append(recipient)
            number = len(self.calls)
        return self.answer(recipient, number)


def sent(recipient: str) -> DeliveryResult:
    return DeliveryResult(recipient, "sent", channel="kakaotalk", attempts=1, latency_ms=5.0)


def unavailable(recipient: str, attempts: int = 0, hint: float | None = 30.0) -> DeliveryResult:
    return DeliveryResult(
        recipient,
        "failed",
        channel="sms",
        attempts=attempts,
        error="kakaotalk circuit open; sms circuit open",
        unavailable=True,
        available_in=hint,
    )


def refused(recipient: str, status: int = 400) -> DeliveryResult:
    return DeliveryResult(
        recipient,
        "failed",
        channel="kakaotalk",
        attempts=1,
        error=f"kakaotalk rejected the message (HTTP {status})",
        refusal=Refusal("kakaotalk", status, "invalid-request", '{"error": "bad"}'),
    )


def write_rows(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "message"])
        for i in range(1, n + 1):
            writer.writerow([f"010-1000-{i:04d}", f"message {i}"])
    return path


def recorded(path: Path) -> dict[int, dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {int(line["row"]): line for line in csv.DictReader(handle)}


def fake_clocks(clock: FakeClock) -> RunClocks:
    return RunClocks(monotonic=clock, wall=clock, wait=FakeSleep(clock))


def test_a_row_waits_through_a_short_outage_and_is_sent(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 3)
    clock = FakeClock()

    def answer(recipient: str, call: int) -> DeliveryResult:
        # Row 2 finds both channels down twice (one attempt the first time), then goes.
        if call == 2:
            return unavailable(recipient, attempts=3)
        if call == 3:
            return unavailable(recipient)
        return sent(recipient)

    events: list[Event] = []
    report = send_bulk(
        source,
        ScriptedSender(answer),
        BulkOptions(concurrency=1),
        clocks=fake_clocks(clock),
        emit=events.append,
    )
    rows = recorded(report.results_path)
    assert [rows[i]["status"] for i in (1, 2, 3)] == ["sent"] * 3
    assert rows[2]["attempts"] == "4"  # the tries before the wait count
    assert report.exit_code == 0 and report.stopped is None and report.failed == 0
    assert report.outage_wait_s == pytest.approx(60.0)  # from the first wait to the delivery
    pauses = [e for e in events if isinstance(e, RunPaused | RunResumed)]
    assert isinstance(pauses[0], RunPaused) and "circuit open" in pauses[0].describe()
    assert isinstance(pauses[-1], RunResumed)
    assert not any(isinstance(e, RunStopped) for e in events)


def test_a_long_outage_stops_the_run_with_75_and_resume_sends_the_rest(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 5)
    clock = FakeClock()
    down = True

    def answer(recipient: str, call: int) -> DeliveryResult:
        if recipient.endswith("0001") or not down:
            return sent(recipient)
        return unavailable(recipient)

    sender = ScriptedSender(answer)
    events: list[Event] = []
    report = send_bulk(
        source,
        sender,
        BulkOptions(concurrency=1, max_outage=120),
        clocks=fake_clocks(clock),
        emit=events.append,
    )
    assert report.stop_code == 75 and report.exit_code == 75
    assert report.stopped is not None and "no provider could deliver" in report.stopped
    assert report.sent == 1 and report.failed == 0 and report.left == 4
    assert not report.interrupted
    assert list(recorded(report.results_path)) == [1]  # nothing recorded failed
    assert 120 <= clock() - 1000.0 <= 121
    document = report.to_json()
    assert document["stopped"] == report.stopped and document["left"] == 4
    assert events[-1] == RunStopped(report.stopped, 75, 4)
    alert = alert_for(events[-1])
    assert alert is not None and alert[0] == "run-stopped" and alert[1] is None
    assert alert[2].startswith("bulk stopped (exit 75), 4 rows left: no provider could deliver")

    down = False
    again = send_bulk(
        source,
        sender,
        BulkOptions(concurrency=1, resume=True),
        clocks=fake_clocks(clock),
    )
    assert again.exit_code == 0 and again.sent == 4 and again.skipped == 1
    assert {row["status"] for row in recorded(report.results_path).values()} == {"sent"}


def test_outage_stop_with_several_workers_leaves_no_row_failed(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 40)
    clock = FakeClock()
    lock = threading.Lock()

    def wait(seconds: float) -> None:
        with lock:
            clock.advance(seconds)

    report = send_bulk(
        source,
        ScriptedSender(lambda recipient, call: unavailable(recipient)),
        BulkOptions(concurrency=4, max_outage=60),
        clocks=RunClocks(monotonic=clock, wall=clock, wait=wait),
    )
    assert report.exit_code == 75 and report.left == 40
    assert recorded(report.results_path) == {}
    # Four rows waited at once for 60 s: the run waited 60 s, not 240.
    assert 60 <= report.outage_wait_s <= 61


def test_interrupt_during_an_outage_wins_with_130(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 3)
    clock = FakeClock()
    stop = threading.Event()
    sleep = FakeSleep(clock)

    def wait(seconds: float) -> None:
        sleep(seconds)
        if len(sleep.waits) == 2:
            stop.set()

    report = send_bulk(
        source,
        ScriptedSender(lambda recipient, call: unavailable(recipient)),
        BulkOptions(concurrency=1),
        stop=stop,
        clocks=RunClocks(monotonic=clock, wall=clock, wait=wait),
    )
    assert report.interrupted and report.exit_code == 130 and report.stopped is None
    assert recorded(report.results_path) == {}


def test_credentials_refused_everywhere_stop_at_once_with_78(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 6)

    def answer(recipient: str, call: int) -> DeliveryResult:
        return DeliveryResult(
            recipient,
            "failed",
            channel="sms",
            attempts=2 if call == 1 else 0,
            error="every provider failed (kakaotalk refused the credentials (HTTP 401); ...)",
            credentials_refused=True,
        )

    sender = ScriptedSender(answer)
    report = send_bulk(source, sender, BulkOptions(concurrency=1))
    assert report.exit_code == 78 and report.stop_code == 78
    assert report.stopped is not None and "refused our credentials" in report.stopped
    rows = recorded(report.results_path)
    assert list(rows) == [1] and rows[1]["status"] == "failed"  # the row that was tried
    assert len(sender.calls) <= 2 and report.left == 5


def test_workers_meeting_the_same_stop_log_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = write_rows(tmp_path / "in.csv", 8)
    together = threading.Barrier(4)

    def answer(recipient: str, call: int) -> DeliveryResult:
        together.wait(timeout=10)  # four workers hold a row each, then all are refused
        return DeliveryResult(
            recipient, "failed", channel="sms", attempts=2, error="401", credentials_refused=True
        )

    with caplog.at_level(logging.WARNING, logger="msgsend.bulk"):
        report = send_bulk(source, ScriptedSender(answer), BulkOptions(concurrency=4))
    assert report.exit_code == 78 and report.failed == 4
    stops = [r for r in caplog.records if "refused our credentials" in r.getMessage()]
    assert len(stops) == 1


def test_twenty_rows_refused_alike_stop_the_run_with_78(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 50)
    sender = ScriptedSender(lambda recipient, call: refused(recipient))
    report = send_bulk(source, sender, BulkOptions(concurrency=1))
    assert report.exit_code == 78
    assert report.stopped is not None
    assert "20 rows in a row were refused by kakaotalk with HTTP 400" in report.stopped
    assert report.failed == 20 and report.left == 30
    assert len(sender.calls) == 20
    assert sorted(recorded(report.results_path)) == list(range(1, 21))


def test_refusals_among_deliveries_do_not_stop(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 60)

    def answer(recipient: str, call: int) -> DeliveryResult:
        return sent(recipient) if call % 10 == 0 else refused(recipient)

    report = send_bulk(source, ScriptedSender(answer), BulkOptions(concurrency=1))
    assert report.stopped is None and report.exit_code == 1
    assert report.failed == 54 and report.sent == 6


def test_rows_failed_before_do_not_count_towards_the_stop_on_resume(tmp_path: Path) -> None:
    source = write_rows(tmp_path / "in.csv", 45)

    # First run: rows 1-19 refused (a run of 19 never stops), then row 20 delivered and the
    # rest refused until the streak stops the run.
    def first(recipient: str, call: int) -> DeliveryResult:
        return sent(recipient) if call == 20 else refused(recipient)

    report = send_bulk(source, ScriptedSender(first), BulkOptions(concurrency=1))
    assert report.exit_code == 78 and report.failed == 39 and report.left == 5

    # Resume: the 39 failed rows are refused again (for their own reasons) and do not count;
    # the 5 new rows are delivered.
    def second(recipient: str, call: int) -> DeliveryResult:
        return sent(recipient) if int(recipient[-4:]) > 40 else refused(recipient)

    again = send_bulk(source, ScriptedSender(second), BulkOptions(concurrency=1, resume=True))
    assert again.stopped is None and again.sent == 5 and again.failed == 39


def test_a_success_json_refusal_is_a_refusal_with_its_own_signature() -> None:
    refused = RefusedError.from_answer(
        "kakaotalk", 200, 'success-json expects {"result": "ok"}', '{"result": "fail"}'
    )
    sender = Sender(
        {"kakaotalk": FakeProvider("kakaotalk", default=refused), "sms": FakeProvider("sms")},
        sleep=FakeSleep(),
    )
    result = sender.send("010-1234-5678", "hello")
    assert result.refusal is not None
    assert result.refusal.signature == ("kakaotalk", 200, "refused")
    assert result.refusal.excerpt == '{"result": "fail"}'
    streak = RefusalStreak(limit=2)
    assert streak.observe(result.refusal) is None
    stop = streak.observe(result.refusal)
    assert stop is not None and "kakaotalk with HTTP 200 (refused)" in str(stop)


def test_ctrl_c_delivered_to_another_thread_is_heard_while_workers_are_paused(
    tmp_path: Path,
) -> None:
    """The kernel may hand SIGINT to any thread; the main thread must still run its handler.

    The run's main thread waits for workers paused by quiet hours: a wait without a timeout
    would leave the handler pending (and Ctrl-C unheard) until the window ends.
    """
    import datetime as dt
    import signal

    source = write_rows(tmp_path / "in.csv", 2)
    now = dt.datetime.now(dt.UTC)
    window = f"{now - dt.timedelta(hours=1):%H:%M}-{now + dt.timedelta(hours=1):%H:%M}"
    stop = threading.Event()
    watchdog_fired = threading.Event()
    paused = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())

    def interrupt_from_another_thread() -> None:
        paused.wait(15)  # the workers wait for quiet hours to end
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        if not stop.wait(15):  # never hang the suite: fail instead
            watchdog_fired.set()
            stop.set()

    helper = threading.Thread(target=interrupt_from_another_thread, daemon=True)
    helper.start()
    try:
        report = send_bulk(
            source,
            ScriptedSender(lambda recipient, call: sent(recipient)),
            BulkOptions(concurrency=1, quiet_hours=QuietHours.parse(window, "UTC")),
            stop=stop,
            emit=lambda event: paused.set() if isinstance(event, RunPaused) else None,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        helper.join(20)
    assert paused.is_set() and not watchdog_fired.is_set(), (
        "the interrupt was not heard while workers were paused"
    )
    assert report.interrupted
    assert recorded(report.results_path) == {}  # nothing sent: both rows left for --resume
