"""Tests for msgsend.alerts: dedupe, log records, and the off-the-hot-path webhook."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from msgsend.alerts import ALERT_TYPES, Alert, Alerter, alert_for, alert_listener
from msgsend.events import (
    AttemptFinished,
    CircuitChanged,
    Events,
    FellBack,
    LimiterWaited,
    MessageFinished,
)

FIXED_NOW = dt.datetime(2024, 5, 1, 3, 0, 0, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Webhook:
    url: str
    bodies: list[dict[str, object]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    received: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def caplog_alerts(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="msgsend")
    return caplog


def serve(mode: str) -> Iterator[Webhook]:
    """Run a local webhook: ``ok`` answers 204, ``error`` 500, ``hang`` waits to be released."""
    state: dict[str, Webhook] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hook = state["hook"]
            length = int(self.headers.get("Content-Length", "0"))
            hook.bodies.append(json.loads(self.rfile.read(length)))
            hook.received.set()
            if mode == "hang":
                hook.release.wait(timeout=5)
            self.send_response(500 if mode == "error" else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    hook = Webhook(url=f"http://127.0.0.1:{port}/services/T000/B000/SECRETTOKEN")
    state["hook"] = hook
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield hook
    finally:
        hook.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def ok_hook() -> Iterator[Webhook]:
    yield from serve("ok")


@pytest.fixture
def error_hook() -> Iterator[Webhook]:
    yield from serve("error")


@pytest.fixture
def hanging_hook() -> Iterator[Webhook]:
    yield from serve("hang")


@pytest.fixture
def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def wait_until_stopped(alerter: Alerter, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while alerter.worker_alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alerter.worker_alive


def test_each_type_once_per_window_per_provider():
    clock = FakeClock()
    alerter = Alerter(clock=clock)
    for alert_type in ALERT_TYPES:
        assert alerter.emit(alert_type, "kakaotalk", "first") is True
        assert alerter.emit(alert_type, "kakaotalk", "again") is False
        assert alerter.emit(alert_type, "sms", "other provider") is True
    clock.advance(59.9)
    assert alerter.emit("provider-down", "kakaotalk", "still deduplicated") is False
    clock.advance(0.1)
    assert alerter.emit("provider-down", "kakaotalk", "next window") is True
    assert alerter.suppressed == len(ALERT_TYPES) + 1
    assert len(alerter.emitted) == 2 * len(ALERT_TYPES) + 1
    alerter.close()


def test_log_record_levels_and_fields(caplog_alerts):
    alerter = Alerter(clock=FakeClock())
    alerter.emit("provider-down", "kakaotalk", "circuit open after 5 failures")
    alerter.emit("rate-limit", "sms", "429 from sms")
    alerter.emit("provider-recovered", "kakaotalk", "trial succeeded")
    records = [r for r in caplog_alerts.records if r.name == "msgsend.alerts"]
    assert [(r.levelno, r.alert_type, r.provider) for r in records] == [
        (logging.ERROR, "provider-down", "kakaotalk"),
        (logging.WARNING, "rate-limit", "sms"),
        (logging.WARNING, "provider-recovered", "kakaotalk"),
    ]
    assert records[0].getMessage() == "provider-down kakaotalk: circuit open after 5 failures"


def test_alert_json_shape():
    alert = Alert("provider-down", "kakaotalk", "5 failures", "2024-05-01T03:00:00Z")
    assert alert.to_json() == {
        "type": "provider-down",
        "provider": "kakaotalk",
        "message": "5 failures",
        "at": "2024-05-01T03:00:00Z",
        "suppressed": 0,
        "host": None,
        "run_id": None,
        "input": None,
        "text": ":rotating_light: msgsend provider-down kakaotalk: 5 failures",
    }
    assert Alert("fallback", None, "x", "t").text.endswith("msgsend fallback: x")


def test_webhook_receives_the_json(ok_hook, caplog_alerts):
    alerter = Alerter(ok_hook.url, clock=FakeClock(), wall_clock=lambda: FIXED_NOW)
    assert alerter.emit("auth-failed", "sms", "sms refused the credentials (HTTP 401)")
    alerter.close(timeout=5)
    assert not alerter.worker_alive
    assert ok_hook.bodies == [
        {
            "type": "auth-failed",
            "provider": "sms",
            "message": "sms refused the credentials (HTTP 401)",
            "at": "2024-05-01T03:00:00Z",
            "suppressed": 0,
            "host": None,
            "run_id": None,
            "input": None,
            "text": ":lock: msgsend auth-failed sms: sms refused the credentials (HTTP 401)",
        }
    ]
    assert (alerter.sent, alerter.failed, alerter.dropped) == (1, 0, 0)


def test_no_full_phone_number_in_logs_or_webhook(ok_hook, caplog_alerts):
    alerter = Alerter(ok_hook.url, clock=FakeClock())
    alerter.emit("fallback", "kakaotalk", "fell back to SMS for 010-1234-5678 and 01098765432")
    alerter.close(timeout=5)
    body = json.dumps(ok_hook.bodies)
    for text in (caplog_alerts.text, body, repr(alerter.emitted)):
        assert "1234-5678" not in text
        assert "01098765432" not in text
        assert "98765432" not in text
    assert "010-****-5678" in body
    assert "010-****-5432" in caplog_alerts.text


@pytest.mark.parametrize("kind", ["error", "refused", "hanging"])
def test_bad_webhooks_never_slow_emit_and_close_is_bounded(
    kind, request, refused_url, caplog_alerts
):
    url = refused_url if kind == "refused" else request.getfixturevalue(f"{kind}_hook").url
    alerter = Alerter(url, clock=FakeClock(), timeout=5.0)
    started = time.perf_counter()
    for alert_type in ALERT_TYPES:
        alerter.emit(alert_type, "kakaotalk", "something happened")
    # A hanging webhook answers after 5 s at the earliest: emitting never waits for it
    # (margins that hold on a loaded machine).
    assert time.perf_counter() - started < 2.5

    started = time.perf_counter()
    if kind == "hanging":
        alerter.close(timeout=0.2)
        assert time.perf_counter() - started < 2.5  # not the 5 s the POST may hang
        assert alerter.worker_alive  # stuck in the first POST; the rest was given up
        assert alerter.dropped >= len(ALERT_TYPES) - 1
        request.getfixturevalue("hanging_hook").release.set()
    else:
        alerter.close(timeout=5)  # returns once every POST failed: a loaded machine has time
        assert alerter.failed == len(ALERT_TYPES)
        assert alerter.sent == 0
    wait_until_stopped(alerter)
    assert "SECRETTOKEN" not in caplog_alerts.text  # the webhook path may be a secret


def test_full_queue_drops_and_counts(hanging_hook):
    alerter = Alerter(hanging_hook.url, clock=FakeClock(), queue_size=1)
    for alert_type in ALERT_TYPES:
        alerter.emit(alert_type, "sms", "x")
    # at most one POST in flight and one queued: the others are dropped
    assert alerter.dropped >= len(ALERT_TYPES) - 2
    hanging_hook.release.set()
    alerter.close(timeout=5)
    wait_until_stopped(alerter)


def test_emit_after_close_is_logged_but_not_posted(ok_hook, caplog_alerts):
    alerter = Alerter(ok_hook.url, clock=FakeClock())
    alerter.emit("rate-limit", "sms", "one")
    alerter.close(timeout=5)
    assert alerter.emit("rate-limit", "kakaotalk", "late") is True
    assert alerter.dropped == 1
    assert len(ok_hook.bodies) == 1
    assert "late" in caplog_alerts.text


def test_without_webhook_no_thread_is_started():
    alerter = Alerter(None, clock=FakeClock())
    alerter.emit("fallback", "kakaotalk", "x")
    assert not alerter.worker_alive
    alerter.close()


def test_emit_never_raises():
    def broken_clock() -> dt.datetime:
        raise RuntimeError("clock broke")

    alerter = Alerter(clock=FakeClock(), wall_clock=broken_clock)
    assert alerter.emit("fallback", "kakaotalk", "x") is False


def test_context_manager_closes(ok_hook):
    with Alerter(ok_hook.url, clock=FakeClock()) as alerter:
        alerter.emit("provider-down", "sms", "down")
    assert not alerter.worker_alive
    assert alerter.sent == 1


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("closed", "open", "provider-down"),
        ("half-open", "open", None),  # the same outage: alerted when it first opened
        ("half-open", "closed", "provider-recovered"),
        ("open", "half-open", None),
        ("closed", "disabled", None),  # the refused attempt raised auth-failed already
    ],
)
def test_circuit_transitions_alert_once_per_outage(old, new, expected):
    alert = alert_for(CircuitChanged("kakaotalk", old, new, "reason"))
    assert (alert[0] if alert else None) == expected


def test_provider_throttling_is_an_alert_and_pacing_is_not():
    throttled = AttemptFinished("sms", "rate-limited", 0.01, status_code=429, retry_after=2.0)
    assert alert_for(throttled) == (
        "rate-limit",
        "sms",
        "sms throttled a request (HTTP 429); it asks to wait 2 s",
    )
    assert alert_for(LimiterWaited("sms", 30.0)) is None
    assert alert_for(AttemptFinished("sms", "server-error", 0.01, status_code=503)) is None


def test_refused_credentials_and_fallbacks_alert():
    refused = AttemptFinished("kakaotalk", "auth-failed", 0.01, error="HTTP 401")
    assert alert_for(refused) == (
        "auth-failed",
        "kakaotalk",
        "HTTP 401; kakaotalk is disabled for this run",
    )
    fell = alert_for(FellBack("kakaotalk", "sms", "010-****-5678", "HTTP 503"))
    assert fell == ("fallback", "kakaotalk", "messages fall back from kakaotalk to sms: HTTP 503")


def test_alerter_listens_to_events():
    alerter = Alerter(clock=FakeClock())
    events = Events(alert_listener(alerter))
    events.emit(CircuitChanged("sms", "closed", "open", "5 consecutive failures"))
    events.emit(MessageFinished("010-****-5678", "sent", "sms", False, 1))
    assert [(a.type, a.provider) for a in alerter.emitted] == [("provider-down", "sms")]
    # the same alerter's listener twice is one listener: subscribing it again has no effect
    assert alert_listener(alerter) == alert_listener(alerter)


def test_the_next_alert_says_how_many_the_window_held_back():
    clock = FakeClock()
    alerter = Alerter(clock=clock, wall_clock=lambda: FIXED_NOW)
    alerter.emit("rate-limit", "sms", "sms throttled a request (HTTP 429)")
    for _ in range(3):
        assert alerter.emit("rate-limit", "sms", "again") is False
    alerter.emit("rate-limit", "kakaotalk", "another provider: its own group")
    clock.advance(61)
    alerter.emit("rate-limit", "sms", "still throttled")
    first, other, second = alerter.emitted
    assert (first.suppressed, other.suppressed, second.suppressed) == (0, 0, 3)
    assert second.to_json()["suppressed"] == 3
    assert "3 more like it" in second.text
    clock.advance(61)
    alerter.emit("rate-limit", "sms", "once more")
    assert alerter.emitted[-1].suppressed == 0  # counted from the last alert sent


def test_every_alert_says_where_it_comes_from(ok_hook):
    context = {"host": "cron-3", "run_id": "a1b2c3d4e5f6", "input": "campaign.csv"}
    alerter = Alerter(ok_hook.url, clock=FakeClock(), context=context)
    alerter.emit("provider-down", "kakaotalk", "circuit opened")
    alerter.close(timeout=5)
    [body] = ok_hook.bodies
    assert {k: body[k] for k in context} == context
    assert "cron-3, run a1b2c3d4e5f6, input campaign.csv" in str(body["text"])


def test_apprise_urls_get_every_alert(ok_hook):
    pytest.importorskip("apprise")
    # apprise's json:// plugin POSTs {"title", "message", "type", ...} to the URL.
    target = ok_hook.url.replace("http://", "json://")
    alerter = Alerter(None, clock=FakeClock(), apprise_urls=[target], context={"host": "h1"})
    alerter.emit("provider-down", "sms", "circuit opened")
    alerter.close(timeout=10)
    assert alerter.sent == 1, alerter.failed
    [body] = ok_hook.bodies
    assert body["title"] == "msgsend provider-down sms"
    assert "circuit opened" in str(body["message"]) and "h1" in str(body["message"])
    assert body["type"] == "failure"


def test_apprise_failing_is_counted_never_raised(refused_url):
    pytest.importorskip("apprise")
    alerter = Alerter(
        None, clock=FakeClock(), apprise_urls=[refused_url.replace("http://", "json://")]
    )
    alerter.emit("fallback", "kakaotalk", "x")
    alerter.close(timeout=10)
    assert (alerter.sent, alerter.failed) == (0, 1)
