"""Tests for msgsend.metrics: names, counts, the atomic textfile and the Pushgateway push."""

from __future__ import annotations

import base64
import errno
import http.server
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from msgsend.errors import (
    AuthError,
    CircuitOpenError,
    ConnectError,
    ConnectionLostError,
    MsgsendError,
    ProviderDisabledError,
    ProviderPausedError,
    RateLimitedError,
    ReadTimeoutError,
    ServerError,
)
from msgsend.events import (
    AttemptFinished,
    CircuitChanged,
    Events,
    FellBack,
    LimiterWaited,
    MessageFinished,
    ProviderProbed,
    RetryScheduled,
    RowSettled,
)
from msgsend.metrics import Metrics, MetricsExportError

SPEC_NAMES = {
    "msgsend_messages",
    "msgsend_requests",
    "msgsend_request_duration_seconds",
    "msgsend_retries",
    "msgsend_fallbacks",
    "msgsend_overflows",  # issue 13: KakaoTalk rows sent by SMS while KakaoTalk's budget is full
    "msgsend_rate_limit_wait_seconds",
    "msgsend_circuit_open",
    "msgsend_rate_limit_usage_ratio",  # issue 12: our own pacing, a gauge and not an alert
    "msgsend_provider_up",  # issue 12: ping --metrics-file
    "msgsend_provider_probe_seconds",
    "msgsend_last_run_timestamp_seconds",
    "msgsend_last_run_success",
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics(wall_clock=lambda: 1714532400.0)
    m.observe_request("kakaotalk", "server-error", 0.020)
    m.observe_request("kakaotalk", "server-error", 0.030)
    m.observe_retry("kakaotalk")
    m.observe_retry("kakaotalk")
    m.observe_request("kakaotalk", "circuit-open", 0.0)
    m.observe_fallback()
    m.observe_request("sms", "success", 0.004)
    m.observe_message("sms", "sent", "lms")
    m.observe_message(None, "invalid")
    m.observe_message(None, "duplicate")
    m.observe_limiter_wait("sms", 1.5)
    m.observe_limiter_wait("sms", 0.25)
    m.observe_circuit_open("kakaotalk")
    m.finish_run(success=True)
    return m


def test_spec_names_and_counts(metrics):
    text = metrics.to_text()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names == SPEC_NAMES
    messages = "msgsend_messages_total"
    assert value(text, messages, channel="sms", outcome="sent", kind="lms") == 1
    assert value(text, messages, channel="sms", outcome="sent", kind="sms") == 0
    assert value(text, messages, channel="kakaotalk", outcome="sent", kind="kakaotalk") == 0
    assert value(text, messages, channel="none", outcome="invalid", kind="none") == 1
    assert value(text, messages, channel="none", outcome="duplicate", kind="none") == 1
    assert value(text, "msgsend_requests_total", provider="kakaotalk", result="server-error") == 2
    assert value(text, "msgsend_requests_total", provider="kakaotalk", result="circuit-open") == 1
    assert value(text, "msgsend_requests_total", provider="sms", result="success") == 1
    assert value(text, "msgsend_retries_total", provider="kakaotalk") == 2
    assert value(text, "msgsend_retries_total", provider="sms") == 0
    assert value(text, "msgsend_fallbacks_total") == 1
    assert value(text, "msgsend_rate_limit_wait_seconds_total", provider="sms") == 1.75
    assert value(text, "msgsend_circuit_open_total", provider="kakaotalk") == 1
    assert value(text, "msgsend_last_run_success") == 1
    assert value(text, "msgsend_last_run_timestamp_seconds") == 1714532400.0


def test_duration_histogram_skips_requests_never_sent(metrics):
    text = metrics.to_text()
    # the circuit-open refusal is counted as a request but has no duration
    assert value(text, "msgsend_request_duration_seconds_count", provider="kakaotalk") == 2
    assert value(text, "msgsend_request_duration_seconds_sum", provider="kakaotalk") == 0.05
    assert value(text, "msgsend_request_duration_seconds_bucket", provider="sms", le="0.005") == 1
    buckets = {
        labels_["le"]
        for (name, labels), _ in samples(text).items()
        if name == "msgsend_request_duration_seconds_bucket"
        for labels_ in [dict(labels)]
    }
    assert {"0.005", "10.0", "+Inf"} <= buckets


def test_failed_run_gauge():
    m = Metrics()
    m.finish_run(success=False)
    assert m.sample("msgsend_last_run_success") == 0


def test_fresh_registry_per_run():
    first, second = Metrics(), Metrics()
    first.observe_fallback()
    assert second.sample("msgsend_fallbacks_total") == 0
    assert REGISTRY.get_sample_value("msgsend_fallbacks_total") is None


def test_no_recipient_or_free_text_in_labels():
    m = Metrics()
    m.observe_request("010-1234-5678", "success", 0.1)
    m.observe_request("kakaotalk", "010-1234-5678", 0.1)
    m.observe_message("01012345678", "sent")
    m.observe_message("sms", "hello 010-1234-5678")
    m.observe_message("sms", "sent", "010-1234-5678")
    m.observe_retry("Hello World")
    text = m.to_text()
    assert "1234" not in text
    assert "Hello" not in text
    assert value(text, "msgsend_requests_total", provider="other", result="success") == 1
    assert value(text, "msgsend_requests_total", provider="kakaotalk", result="other") == 1
    messages = "msgsend_messages_total"
    assert value(text, messages, channel="other", outcome="sent", kind="none") == 1
    assert value(text, messages, channel="sms", outcome="other", kind="none") == 1
    assert value(text, messages, channel="sms", outcome="sent", kind="other") == 1


@pytest.mark.parametrize(
    ("exc", "label"),
    [
        (None, "success"),
        (ConnectError("x"), "connect-error"),
        (ReadTimeoutError("x"), "read-timeout"),
        (ConnectionLostError("x"), "connection-lost"),
        (RateLimitedError("x"), "rate-limited"),
        (ServerError("x", status_code=503), "server-error"),
        (AuthError("x", status_code=401), "auth-failed"),
        (CircuitOpenError("x"), "circuit-open"),
        (ProviderPausedError("x"), "provider-paused"),
        (MsgsendError("x"), "error"),
        (ProviderDisabledError("x"), "provider-disabled"),
    ],
)
def test_every_error_kind_is_a_result_label(exc, label):
    m = Metrics()
    result = "success" if exc is None else exc.kind
    m.observe_request("kakaotalk", result, 0.1)
    assert m.sample("msgsend_requests_total", {"provider": "kakaotalk", "result": label}) == 1


def test_error_kinds_are_accepted_as_results():
    m = Metrics()
    m.observe_request("kakaotalk", ConnectError("x").kind, 0.1)
    m.observe_request("kakaotalk", ServerError("x").kind, 0.1)
    m.observe_request("kakaotalk", "transport", 0.1)
    assert m.sample("msgsend_requests_total", {"provider": "kakaotalk", "result": "connect-error"})
    assert m.sample("msgsend_requests_total", {"provider": "kakaotalk", "result": "server-error"})
    assert m.sample("msgsend_requests_total", {"provider": "kakaotalk", "result": "error"})


def test_metrics_listen_to_events():
    m = Metrics()
    events = Events(m.on_event)
    events.emit(AttemptFinished("kakaotalk", "server-error", 0.02, status_code=503))
    events.emit(AttemptFinished("kakaotalk", "circuit-open", None))
    events.emit(RetryScheduled("kakaotalk", 1, 1.0, "HTTP 503"))
    events.emit(FellBack("kakaotalk", "sms", "010-****-5678", "HTTP 503"))
    events.emit(LimiterWaited("sms", 0.5))
    events.emit(CircuitChanged("kakaotalk", "closed", "open", "5 failures"))
    events.emit(MessageFinished("010-****-5678", "sent", "sms", True, 2, kind="sms"))
    for status in ("sent", "invalid", "duplicate"):
        events.emit(RowSettled(2, "010-****-5678", status))
    sample = m.sample
    assert sample("msgsend_requests_total", {"provider": "kakaotalk", "result": "server-error"})
    assert sample("msgsend_requests_total", {"provider": "kakaotalk", "result": "circuit-open"})
    assert sample("msgsend_request_duration_seconds_count", {"provider": "kakaotalk"}) == 1
    assert sample("msgsend_retries_total", {"provider": "kakaotalk"}) == 1
    assert sample("msgsend_fallbacks_total") == 1
    assert sample("msgsend_rate_limit_wait_seconds_total", {"provider": "sms"}) == 0.5
    assert sample("msgsend_circuit_open_total", {"provider": "kakaotalk"}) == 1
    # A sent row is the sender's MessageFinished: counted once, not again as a row.
    messages = "msgsend_messages_total"
    assert sample(messages, {"channel": "sms", "outcome": "sent", "kind": "sms"}) == 1
    assert sample(messages, {"channel": "none", "outcome": "invalid", "kind": "none"}) == 1
    assert sample(messages, {"channel": "none", "outcome": "duplicate", "kind": "none"}) == 1


def test_write_textfile_is_atomic_and_world_readable(metrics, tmp_path):
    target = tmp_path / "msgsend.prom"
    target.write_text("old contents\n")
    old_inode = target.stat().st_ino
    metrics.write_textfile(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["msgsend.prom"]
    assert target.stat().st_ino != old_inode  # replaced by rename, not rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    text = target.read_text()
    assert value(text, "msgsend_fallbacks_total") == 1
    metrics.observe_fallback()
    metrics.write_textfile(target)
    assert value(target.read_text(), "msgsend_fallbacks_total") == 2
    assert len(list(tmp_path.iterdir())) == 1


def test_write_textfile_failure_raises_oserror_and_leaves_nothing(metrics, tmp_path):
    with pytest.raises(FileNotFoundError):
        metrics.write_textfile(tmp_path / "missing-dir" / "msgsend.prom")
    target_dir = tmp_path / "is-a-dir.prom"
    target_dir.mkdir()
    with pytest.raises(OSError):
        metrics.write_textfile(target_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-dir.prom"]


def test_write_textfile_writes_a_fifo_or_device_in_place(metrics, tmp_path):
    # Replacing a non-regular target by rename would turn /dev/null (run as root) into a
    # regular file; it is written in place and stays what it was.
    fifo = tmp_path / "metrics.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as handle:
            received.append(handle.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while True:  # the write end opens only once the reader has opened its end
        try:
            metrics.write_textfile(fifo)
            break
        except OSError as exc:
            assert exc.errno == errno.ENXIO and time.monotonic() < deadline
            time.sleep(0.01)
    reader.join(timeout=10)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert value(received[0].decode(), "msgsend_fallbacks_total") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.fifo"]


def test_write_textfile_to_a_fifo_nobody_reads_fails_at_once(metrics, tmp_path):
    fifo = tmp_path / "metrics.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as caught:
        metrics.write_textfile(fifo)
    assert caught.value.errno == errno.ENXIO
    assert stat.S_ISFIFO(fifo.stat().st_mode)


class Recorder:
    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[tuple[str, str, bytes]] = []
        self.auth: list[str | None] = []


def serve(status: int) -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(status)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            recorder.requests.append((self.command, self.path, self.rfile.read(length)))
            recorder.auth.append(self.headers.get("Authorization"))
            self.send_response(recorder.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = _record
        do_POST = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    port = server.server_address[1]
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def gateway() -> Iterator[tuple[str, Recorder]]:
    yield from serve(200)


@pytest.fixture
def broken_gateway() -> Iterator[tuple[str, Recorder]]:
    yield from serve(500)


def test_push_puts_this_runs_metrics(metrics, gateway):
    url, recorder = gateway
    metrics.push(url, job="msgsend", grouping_key={"instance": "cron-1"})
    [(method, path, body)] = recorder.requests
    assert method == "PUT"
    assert path == "/metrics/job/msgsend/instance/cron-1"
    assert value(body.decode(), "msgsend_fallbacks_total") == 1


def test_push_sends_the_urls_credentials_as_basic_auth(metrics, gateway):
    url, recorder = gateway
    metrics.push(url.replace("http://", "http://ops:p%40ss@"), grouping_key={})
    [(method, path, _)] = recorder.requests
    assert (method, path) == ("PUT", "/metrics/job/msgsend")
    assert recorder.auth == ["Basic " + base64.b64encode(b"ops:p@ss").decode()]
    metrics.push(url, grouping_key={})
    assert recorder.auth[1] is None  # no userinfo: no Authorization header


def test_pushadd_posts_and_defaults_to_the_hostname(metrics, gateway):
    url, recorder = gateway
    metrics.push(url.removeprefix("http://"), replace=False)
    [(method, path, _)] = recorder.requests
    assert method == "POST"
    assert path == f"/metrics/job/msgsend/instance/{socket.gethostname()}"


def test_push_failures_raise_a_clear_error(metrics, broken_gateway):
    url, _ = broken_gateway
    with pytest.raises(MetricsExportError, match=r"HTTP 500.*--pushgateway"):
        metrics.push(url)


def test_push_to_nothing_raises(metrics):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(MetricsExportError, match=f"127.0.0.1:{port}"):
        metrics.push(f"http://user:secret@127.0.0.1:{port}", timeout=1)
    try:
        metrics.push(f"http://user:secret@127.0.0.1:{port}", timeout=1)
    except MetricsExportError as exc:
        assert "secret" not in str(exc)


def test_textfile_path_may_be_str(metrics, tmp_path):
    target = tmp_path / "m.prom"
    metrics.write_textfile(Path(str(target)))
    assert target.exists()


def test_rate_limit_usage_ratio_is_the_busiest_window_of_the_run():
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    m = Metrics(limits={"sms": (10, 60.0)}, clock=clock)
    events = Events(m.on_event)
    for _ in range(8):  # 8 of 10 slots in the first minute
        events.emit(LimiterWaited("sms", 0.0))
    clock.now = 120.0
    for _ in range(3):  # a quieter window later does not lower the peak
        events.emit(LimiterWaited("sms", 0.0))
    assert m.sample("msgsend_rate_limit_usage_ratio", {"provider": "sms"}) == 0.8
    for _ in range(9):
        events.emit(LimiterWaited("sms", 2.0))
    assert m.sample("msgsend_rate_limit_usage_ratio", {"provider": "sms"}) == 1.0


def test_health_probes_become_up_and_probe_seconds():
    m = Metrics()
    events = Events(m.on_event)
    events.emit(ProviderProbed("kakaotalk", "up", 0.042))
    events.emit(ProviderProbed("sms", "down", 5.0))
    text = m.to_text()
    assert 'msgsend_provider_up{provider="kakaotalk"} 1.0' in text
    assert 'msgsend_provider_up{provider="sms"} 0.0' in text
    assert 'msgsend_provider_probe_seconds{provider="kakaotalk"} 0.042' in text
