"""End to end: outages, circuit breaker, alerts, metrics and masking through the real CLI (issue 5).

Every run sends to the real sandbox on loopback; webhooks and the Pushgateway are local
``http.server`` instances that record what they receive.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import itertools
import json
import re
import socketserver
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from e2e import phone, read_results, write_config, write_csv
from msgsend import cli
from msgsend.cli import app
from msgsend.events import CircuitChanged, MessageFinished
from msgsend.sandbox import ProviderOptions, Sandbox, SandboxOptions
from test_e2e_outage import Watch

runner = CliRunner()

#: a full Korean mobile number, in any of the forms msgsend accepts
FULL_NUMBER = re.compile(
    r"(?<![\d*])(?:\+?82[\s.\-]?|0)1[016789][\s.\-]?\d{3,4}[\s.\-]?\d{4}(?!\d)"
)


# ---------------------------------------------------------------------------- helpers


def numbered(path: Path, n: int) -> Path:
    return write_csv(path, ((phone(i), f"안내 {i}") for i in range(1, n + 1)))


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` in Prometheus text, keyed by their sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def slow_sandbox(latency_ms: float) -> Sandbox:
    return Sandbox(
        SandboxOptions(
            kakaotalk=ProviderOptions(latency_ms=latency_ms, rate_limit=None),
            sms=ProviderOptions(latency_ms=latency_ms, rate_limit=None),
        )
    )


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a hanging answer is expected


class Recorder:
    """A loopback HTTP server that records every request; ``hang`` delays each answer."""

    def __init__(self, hang: float = 0.0) -> None:
        self.hang = hang
        self.release = threading.Event()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder._handle(self)

            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(
                Recorded(
                    handler.command,
                    handler.path,
                    {k.lower(): v for k, v in handler.headers.items()},
                    body,
                    time.monotonic(),
                )
            )
        if self.hang:
            self.release.wait(self.hang)
        try:
            handler.send_response(200)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(r.body) for r in self.requests]

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# ---------------------------------------------------------------------------- circuit breaker


def test_kakaotalk_outage_costs_a_handful_of_requests(sandbox: Any, tmp_path: Path) -> None:
    """503 for everything: the circuit opens, retry waits end early, all goes by SMS.

    The breaker counts messages (ten must have begun to fail), not attempts: the first eight
    messages in flight go through their retry (the default 1 s wait); the next ones open it,
    and the open circuit ends the retry waits of the others in flight.
    """
    n, concurrency, attempts = 32, 8, 2
    source = numbered(tmp_path / "in.csv", n)
    # The default first retry wait (1 s), long beside anything else a message does here, so
    # that a message that sat it out stands apart even on a loaded machine. Without the
    # breaker KakaoTalk would see 64 requests and every row would sit out the wait; two
    # attempts, not three, spare the first eight a 2 s wait.
    config = write_config(
        tmp_path / "msgsend.toml", sandbox, fast_retries=False, max_attempts=attempts
    )
    sandbox.set_down("kakaotalk")

    started = time.monotonic()
    result = invoke(
        "bulk", str(source), "--json", "--concurrency", str(concurrency), "--config", str(config)
    )
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert sandbox.count("kakaotalk") <= concurrency * attempts + concurrency + 2
    assert sandbox.count("sms") == sandbox.count("sms", status=200) == n
    assert collections.Counter(r.recipient for r in sandbox.delivered("sms")) == (
        collections.Counter(phone(i) for i in range(1, n + 1))
    )
    results = read_results(tmp_path / "in.results.csv")
    assert {(x["status"], x["channel"], x["fallback"]) for x in results} == {
        ("sent", "sms", "true")
    }
    assert "provider-down" in result.stderr
    assert elapsed < 6
    # only the first messages in flight sat out their retry waits: the open circuit ended
    # the waits of the others
    assert sum(float(x["latency_ms"]) > 1000 for x in results) <= concurrency
    document = json.loads(result.stdout)
    assert document["sent_by_channel"] == {"sms": n}
    assert document["report"]["providers"]["kakaotalk"]["circuit_opened"] == 1


def test_kakaotalk_stopped_mid_run_and_the_numbers_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KakaoTalk stops as its 10th message is delivered (in the worker that saw it, before the
    # run goes on): ten successes in the window, so ten failed messages open the circuit,
    # and the rest go straight to SMS.
    n, before_stop = 30, 10
    rows = [(phone(i), f"안내 {i}") for i in range(1, n + 1)]
    rows += [("02-123-4567", "유선"), rows[0]]  # one invalid row, one duplicate
    source = write_csv(tmp_path / "in.csv", rows)
    metrics_path = tmp_path / "msgsend.prom"
    watch = Watch(monkeypatch)

    with slow_sandbox(10) as sandbox:
        config = write_config(tmp_path / "msgsend.toml", sandbox)
        delivered = itertools.count(1)
        watch.on(
            lambda event: (
                isinstance(event, MessageFinished)
                and event.channel == "kakaotalk"
                and next(delivered) == before_stop
            ),
            lambda: sandbox.stop("kakaotalk"),
        )
        result = invoke(
            "bulk", str(source), "--json", "--concurrency", "4",
            "--metrics-file", str(metrics_path), "--config", str(config),
        )  # fmt: skip
        assert not sandbox.running("kakaotalk") and not watch.errors, "KakaoTalk never stopped"
        kakaotalk_delivered = sandbox.count("kakaotalk", status=200)
        sms_delivered = sandbox.count("sms", status=200)

    assert result.exit_code == 1, result.output  # the invalid row
    assert "provider-down" in result.stderr
    results = read_results(tmp_path / "in.results.csv")
    assert len(results) == n + 2
    sent = [x for x in results if x["status"] == "sent"]
    assert len(sent) == n  # the run went on by SMS
    by_channel = collections.Counter(x["channel"] for x in sent)
    assert by_channel["kakaotalk"] >= before_stop and by_channel["sms"] >= 1
    assert by_channel["sms"] == sum(1 for x in sent if x["fallback"] == "true")

    # --json agrees with the results file
    document = json.loads(result.stdout)
    statuses = collections.Counter(x["status"] for x in results)
    for status in ("sent", "failed", "invalid", "duplicate"):
        assert document[status] == statuses[status], status
    assert document["sent_by_channel"] == dict(by_channel)
    assert document["fallbacks"] == by_channel["sms"]

    # the metrics file agrees with the results file ...
    text = metrics_path.read_text(encoding="utf-8")
    messages = {
        (dict(labels)["channel"], dict(labels)["outcome"], dict(labels)["kind"]): value
        for labels, value in samples(text, "msgsend_messages_total").items()
        if value
    }
    expected = collections.Counter(
        (x["channel"] or "none", x["status"], x["kind"] or "none") for x in results
    )
    assert messages == dict(expected)
    # ... and with what the sandbox delivered
    requests = {
        (dict(labels)["provider"], dict(labels)["result"]): value
        for labels, value in samples(text, "msgsend_requests_total").items()
    }
    assert requests[("sms", "success")] == sms_delivered == by_channel["sms"]
    # A request in flight when KakaoTalk stopped may be delivered with its answer lost: the
    # client saw "connection lost" (counted, and the row flagged uncertain).
    lost = requests.get(("kakaotalk", "connection-lost"), 0)
    assert requests[("kakaotalk", "success")] <= kakaotalk_delivered
    assert kakaotalk_delivered <= requests[("kakaotalk", "success")] + lost
    assert requests[("kakaotalk", "success")] == by_channel["kakaotalk"]
    assert samples(text, "msgsend_circuit_open_total")[(("provider", "kakaotalk"),)] == 1
    assert samples(text, "msgsend_fallbacks_total")[()] == by_channel["sms"]
    assert samples(text, "msgsend_last_run_success")[()] == 0  # one row was invalid
    report = document["report"]["providers"]
    assert report["sms"]["results"]["success"] == requests[("sms", "success")]
    assert report["kakaotalk"]["results"]["success"] == requests[("kakaotalk", "success")]


def test_provider_recovered_after_the_reset_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KakaoTalk is back as its circuit opens (in the thread that opened it). 60 rows x 20 ms
    # / 4 workers: at least 0.3 s, three reset timeouts of 0.1 s; at 200 rows a second at
    # most, some 25 rows go by SMS while it is open and its trial is in flight.
    n = 60
    source = numbered(tmp_path / "in.csv", n)
    watch = Watch(monkeypatch)
    with slow_sandbox(20) as sandbox:
        # Threshold 1: the first 503 opens the circuit for sure, even if KakaoTalk is back
        # before the other requests in flight are answered.
        config = write_config(
            tmp_path / "msgsend.toml", sandbox, failures_to_open=1, reset_timeout=0.1
        )
        sandbox.set_down("kakaotalk")
        watch.on(
            lambda event: isinstance(event, CircuitChanged) and event.new == "open",
            lambda: sandbox.set_down("kakaotalk", False),
        )
        result = invoke(
            "bulk", str(source), "--json", "--concurrency", "4", "--config", str(config)
        )
        assert not watch.errors
        kakaotalk = sandbox.received("kakaotalk")

    assert result.exit_code == 0, result.output
    assert "provider-down" in result.stderr
    assert "provider-recovered" in result.stderr
    failed_at = [r.monotonic for r in kakaotalk if r.status == 503]
    delivered_at = [r.monotonic for r in kakaotalk if r.status == 200]
    assert delivered_at and max(failed_at) < min(delivered_at)
    results = read_results(tmp_path / "in.results.csv")
    by_channel = collections.Counter(x["channel"] for x in results if x["status"] == "sent")
    assert by_channel["sms"] >= 1 and by_channel["kakaotalk"] >= 20
    assert by_channel["kakaotalk"] == len(delivered_at)
    last = sorted(results, key=lambda x: x["finished_at"])[-15:]
    assert {(x["channel"], x["fallback"]) for x in last} == {("kakaotalk", "false")}


@pytest.mark.parametrize("concurrency", [1, 8])
def test_401_disables_kakaotalk_for_the_whole_run(
    sandbox: Any, tmp_path: Path, concurrency: int
) -> None:
    """One refused request disables KakaoTalk; only requests already in flight also go out.

    With one worker that is exactly one KakaoTalk request for the whole bulk; with N workers
    up to N requests can leave before the first 401 comes back.
    """
    n = max(8, 2 * concurrency)  # rows that start after the 401 came back, for every worker
    source = numbered(tmp_path / "in.csv", n)
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_status("kakaotalk", 401)

    result = invoke("bulk", str(source), "--concurrency", str(concurrency), "--config", str(config))

    assert result.exit_code == 0, result.output
    if concurrency == 1:
        assert sandbox.count("kakaotalk") == 1
    else:
        assert 1 <= sandbox.count("kakaotalk") <= concurrency
    assert {r.status for r in sandbox.received("kakaotalk")} == {401}
    assert sandbox.count("sms", status=200) == sandbox.count("sms") == n
    assert result.stderr.count("auth-failed") == 1
    results = read_results(tmp_path / "in.results.csv")
    assert {(x["status"], x["channel"], x["fallback"]) for x in results} == {
        ("sent", "sms", "true")
    }


# ---------------------------------------------------------------------------- webhooks


def test_webhook_receives_the_provider_down_alert(sandbox: Any, tmp_path: Path) -> None:
    # The circuit opens at about the tenth message; the rows after it fall back again, and
    # each kind of alert still goes out once.
    source = numbered(tmp_path / "in.csv", 16)
    with Recorder() as hook:
        config = write_config(
            tmp_path / "msgsend.toml", sandbox, webhook=f"{hook.url}/hooks/T0KEN-secret"
        )
        sandbox.set_down("kakaotalk")
        before = dt.datetime.now(dt.UTC)
        result = invoke("bulk", str(source), "--config", str(config))
        after = dt.datetime.now(dt.UTC)
        # the alerter flushes its queue before the command returns
        bodies = hook.bodies()
        requests = list(hook.requests)

    assert result.exit_code == 0, result.output
    assert all(r.method == "POST" and r.path == "/hooks/T0KEN-secret" for r in requests)
    assert all(r.headers["content-type"].startswith("application/json") for r in requests)
    types = collections.Counter(body["type"] for body in bodies)
    assert types["provider-down"] == 1  # once per type and provider
    assert all(count == 1 for count in types.values())
    [down] = [body for body in bodies if body["type"] == "provider-down"]
    assert set(down) == {
        "type",
        "provider",
        "message",
        "at",
        "text",
        "suppressed",
        "host",
        "run_id",
        "input",
    }
    assert down["input"] == "in.csv" and down["host"] and len(down["run_id"]) == 12
    assert down["provider"] == "kakaotalk"
    assert "circuit opened" in down["message"]
    assert "provider-down" in down["text"] and "kakaotalk" in down["text"]
    at = dt.datetime.fromisoformat(down["at"].replace("Z", "+00:00"))
    assert down["at"].endswith("Z")
    assert before - dt.timedelta(seconds=2) <= at <= after + dt.timedelta(seconds=2)
    assert "T0KEN" not in result.stderr


def test_a_hanging_webhook_does_not_slow_the_run(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 12
    source = numbered(tmp_path / "in.csv", n)
    # The command waits this long for queued alerts at exit (5 s in production).
    monkeypatch.setattr(cli, "ALERT_FLUSH_TIMEOUT", 0.3)
    with Recorder(hang=30) as hook:
        config = write_config(tmp_path / "msgsend.toml", sandbox, webhook=f"{hook.url}/hook")
        sandbox.set_down("kakaotalk")
        started = time.monotonic()
        result = invoke("bulk", str(source), "--json", "--config", str(config))
        wall = time.monotonic() - started
        assert hook.requests, "the webhook was never called"
        hook.release.set()

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["sent"] == n
    # The webhook hangs 30 s: neither the sends nor the exit waited for it.
    assert wall < 30
    assert "alert webhook did not finish within 0.3 s" in result.stderr


# ---------------------------------------------------------------------------- masking


def test_no_full_number_or_secret_in_logs_stderr_metrics_or_webhooks(
    sandbox: Any, tmp_path: Path
) -> None:
    rows = [
        ("010-1234-5678", "주문 안내"),
        ("01023456789", "회신은 010-3333-4444 또는 01055556666로 주세요"),
        ("+82 10-3456-7890", "해외 형식"),
        ("010-2468-0000", "카카오톡 실패"),
        ("010-9999-8888 ext", "잘못된 번호"),
    ]
    source = write_csv(tmp_path / "in.csv", rows)
    log_path = tmp_path / "msgsend.log"
    metrics_path = tmp_path / "msgsend.prom"
    with Recorder() as hook:
        config = write_config(
            tmp_path / "msgsend.toml", sandbox, failures_to_open=2, webhook=f"{hook.url}/h"
        )
        sandbox.set_kakaotalk_failures(suffixes=("0000",))
        result = invoke(
            "bulk", str(source), "-vv", "--log-file", str(log_path), "--log-format", "json",
            "--metrics-file", str(metrics_path), "--concurrency", "1", "--config", str(config),
        )  # fmt: skip
        webhook_bodies = [r.body.decode("utf-8") for r in hook.requests]

    assert result.exit_code == 1, result.output  # the invalid row
    assert sandbox.count("sms", status=200) >= 1  # something did fall back
    log_text = log_path.read_text(encoding="utf-8")
    records = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["level"] == "DEBUG" for r in records)  # -vv
    assert any(r.get("recipient") == "010-****-5678" for r in records)
    assert any("010-****-4444" in r["message"] for r in records)  # message text, masked
    assert webhook_bodies and any("fallback" in body for body in webhook_bodies)

    places = {
        "log file": log_text,
        "stderr": result.stderr,
        "metrics file": metrics_path.read_text(encoding="utf-8"),
        **{f"webhook body {i}": body for i, body in enumerate(webhook_bodies)},
    }
    secrets = [
        "authorization",
        "autoever:",
        base64.b64encode(b"autoever:1234").decode(),
        base64.b64encode(b"autoever:5678").decode(),
    ]
    for where, text in places.items():
        assert not FULL_NUMBER.search(text), (where, FULL_NUMBER.findall(text))
        for secret in secrets:
            assert secret.lower() not in text.lower(), (where, secret)
        assert not re.search(r"(?i)passw(or)?d\W{0,5}(1234|5678)", text), where
        assert not re.search(r"(?<![\w*.\-])(1234|5678)(?![\w.])", text), (where, "password")


# ---------------------------------------------------------------------------- metrics push


def test_pushgateway_receives_the_metrics_at_exit(sandbox: Any, tmp_path: Path) -> None:
    n = 5
    source = numbered(tmp_path / "in.csv", n)
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    with Recorder() as gateway:
        result = invoke("bulk", str(source), "--pushgateway", gateway.url, "--config", str(config))
        pushes = list(gateway.requests)

    assert result.exit_code == 0, result.output
    [push] = pushes
    assert push.method == "PUT"
    assert push.path.startswith("/metrics/job/msgsend/instance/")
    assert push.at > max(r.monotonic for r in sandbox.delivered())  # after the last message
    text = push.body.decode("utf-8")
    messages = samples(text, "msgsend_messages_total")
    assert messages[(("channel", "kakaotalk"), ("kind", "kakaotalk"), ("outcome", "sent"))] == n
    requests = samples(text, "msgsend_requests_total")
    assert requests[(("provider", "kakaotalk"), ("result", "success"))] == n
    assert samples(text, "msgsend_last_run_success")[()] == 1
    stamp = samples(text, "msgsend_last_run_timestamp_seconds")[()]
    assert abs(stamp - time.time()) < 60


# ---------------------------------------------------------------------------- send -v


def test_send_verbose_prints_the_provider_report(sandbox: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    result = invoke("send", "010-2345-6789", "안녕하세요", "-v", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "per provider" in result.stderr
    for column in ("provider", "sent", "failed", "retries", "p50 ms", "p95 ms", "wait s"):
        assert column in result.stderr, column
    assert re.search(r"kakaotalk\s*│\s*1\s*│\s*0\s*│\s*1\s*│", result.stderr), result.stderr
    assert "\x1b[" not in result.stderr

    quiet = invoke("send", "010-2345-6789", "안녕하세요", "--config", str(config))
    assert "per provider" not in quiet.stderr


def test_a_failed_send_is_not_a_successful_run_in_the_metrics(sandbox: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_down("kakaotalk")
    metrics_path = tmp_path / "send.prom"
    failed = invoke(
        "send", "010-2345-6789", "안녕", "--no-fallback", "--metrics-file", str(metrics_path),
        "--config", str(config),
    )  # fmt: skip
    assert failed.exit_code == 1
    text = metrics_path.read_text(encoding="utf-8")
    assert samples(text, "msgsend_last_run_success")[()] == 0
    assert (
        samples(text, "msgsend_messages_total")[
            (("channel", "kakaotalk"), ("kind", "kakaotalk"), ("outcome", "failed"))
        ]
        == 1
    )

    sandbox.set_down("kakaotalk", False)
    sent = invoke(
        "send", "010-2345-6789", "안녕", "--metrics-file", str(metrics_path),
        "--config", str(config),
    )  # fmt: skip
    assert sent.exit_code == 0
    assert samples(metrics_path.read_text(encoding="utf-8"), "msgsend_last_run_success")[()] == 1


def test_send_json_verbose_includes_the_report(sandbox: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "msgsend.toml", sandbox)
    sandbox.set_kakaotalk_failures(suffixes=("0000",))
    result = invoke("send", "010-2345-0000", "안녕", "--json", "-v", "--config", str(config))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["channel"], document["fallback"], document["attempts"]) == ("sms", True, 4)
    report = document["report"]
    assert report["fallbacks"] == 1
    kakaotalk, sms = report["providers"]["kakaotalk"], report["providers"]["sms"]
    assert kakaotalk["requests"] == 3 and kakaotalk["results"] == {"server-error": 3}
    assert kakaotalk["retries"] == 2 and kakaotalk["fallbacks_from"] == 1
    assert sms["requests"] == 1 and sms["delivered"] == 1
    assert sms["latency_ms"]["p50"] is not None

    plain = invoke("send", "010-2345-6789", "안녕", "--json", "--config", str(config))
    assert "report" not in json.loads(plain.stdout)


# ---------------------------------------------------------------------------- ping


def test_ping_shows_the_provider_detail_verbatim(sandbox: Any, tmp_path: Path) -> None:
    """A wrong base-url (404) names the table to fix; the hint is text, not rich markup."""
    config = tmp_path / "msgsend.toml"
    config.write_text(
        f'[kakaotalk]\nbase-url = "{sandbox.sms_url}"\n'  # the SMS server: 404 for KakaoTalk
        f'[sms]\nbase-url = "{sandbox.sms_url}"\n[limiter]\nstore = "memory"\n',
        encoding="utf-8",
    )
    result = invoke("ping", "--config", str(config))
    assert result.exit_code == 1, result.output
    assert "check [kakaotalk] base-url" in result.stdout
    assert "\x1b[" not in result.stdout
