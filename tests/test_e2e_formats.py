"""Both request formats end to end: the real CLI against the real sandbox on loopback.

The sandbox serves a format strictly (a request not exactly in it is a 400, never a 200
recording ``undefined``), so a message that arrives intact went out in the right shape.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from msgsend.cli import app
from msgsend.formats import HealthFormat, RequestFormat, preset
from msgsend.sandbox import DEFAULT_TOKENS, ProviderOptions, Sandbox, SandboxOptions

runner = CliRunner()

TRICKY = '주문 #12 & 배송비=0원, 100% "무료"\n문의: a+b@example.com'


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def _options(wire_format: str, **extra: Any) -> SandboxOptions:
    def one(name: str) -> ProviderOptions:
        return ProviderOptions(
            rate_limit=None, request_format=preset(wire_format, name), **extra.get(name, {})
        )

    return SandboxOptions(
        kakaotalk=one("kakaotalk"), sms=one("sms"), kakaotalk_fail_suffixes=("0000",)
    )


@pytest.fixture(params=["default", "assignment"])
def wire_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def served(wire_format: str) -> Iterator[Sandbox]:
    """The sandbox serving ``wire_format``."""
    with Sandbox(_options(wire_format)) as sandbox:
        yield sandbox


def _config(
    tmp_path: Path, wire_format: str, sandbox: Sandbox, monkeypatch: Any, toml: str = ""
) -> Path:
    """``config init --format`` output (or ``toml``), pointed at ``sandbox`` by the environment."""
    path = tmp_path / "msgsend.toml"
    if toml:
        path.write_text(toml, encoding="utf-8")
        path.chmod(0o600)
    else:
        result = invoke("config", "init", "--format", wire_format, str(path), "--force")
        assert result.exit_code == 0, result.output
    monkeypatch.setenv("MSGSEND_KAKAOTALK_BASE_URL", sandbox.kakaotalk_url)
    monkeypatch.setenv("MSGSEND_SMS_BASE_URL", sandbox.sms_url)
    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "memory")
    monkeypatch.setenv("MSGSEND_RETRY_BACKOFF_DELAY", "10")
    return path


# --------------------------------------------------------------------------- send


@pytest.mark.parametrize("via", ["kakaotalk", "sms"])
def test_send_in_either_format_arrives_intact(
    served: Sandbox, wire_format: str, via: str, tmp_path: Path, monkeypatch: Any
) -> None:
    config = _config(tmp_path, wire_format, served, monkeypatch)
    result = invoke("send", "+82 10-1234-5678", TRICKY, "--via", via, "--config", str(config))
    assert result.exit_code == 0, result.output
    [received] = served.received()
    assert (received.provider, received.status) == (via, 200)
    assert (received.recipient, received.message) == ("010-1234-5678", TRICKY)


def test_a_request_in_the_wrong_format_is_refused_not_recorded_as_sent(
    tmp_path: Path, monkeypatch: Any
) -> None:
    with Sandbox(_options("assignment")) as sandbox:
        config = _config(tmp_path, "default", sandbox, monkeypatch)
        result = invoke("send", "010-1234-5678", "hi", "--json", "--config", str(config))
        assert result.exit_code == 1
        document = json.loads(result.stdout)
        assert document["status"] == "failed" and document["attempts"] == 1
        assert "HTTP 400" in document["error"] and "'recipient'" in document["error"]
        [received] = sandbox.received()
        assert received.status == 400 and received.recipient is None


# --------------------------------------------------------------------------- bulk


def _rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "message"])
        writer.writerows(rows)
    return path


def _statuses(results: Path) -> dict[str, str]:
    with results.open(encoding="utf-8-sig", newline="") as handle:
        return {row["row"]: row["status"] for row in csv.DictReader(handle)}


def test_bulk_in_either_format_delivers_every_row_intact(
    served: Sandbox, wire_format: str, tmp_path: Path, monkeypatch: Any
) -> None:
    config = _config(tmp_path, wire_format, served, monkeypatch)
    texts = [TRICKY, "a=1&b=2", "%41%42 + space", "줄\n바꿈", "'quote'"]
    source = _rows(tmp_path / "in.csv", [(f"010-2000-{1000 + i}", t) for i, t in enumerate(texts)])
    sms_source = _rows(tmp_path / "sms.csv", [("010-3000-1000", TRICKY)])
    result = invoke("bulk", str(source), "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    result = invoke("bulk", str(sms_source), "--via", "sms", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    delivered = {(r.provider, r.recipient, r.message) for r in served.delivered()}
    expected = {("kakaotalk", f"010-2000-{1000 + i}", t) for i, t in enumerate(texts)}
    assert delivered == expected | {("sms", "010-3000-1000", TRICKY)}
    assert served.count(status=400) == 0


def test_bulk_resume_sends_a_retried_row_with_the_same_message_id(
    tmp_path: Path, monkeypatch: Any
) -> None:
    keyed = RequestFormat(
        path="/kakaotalk-messages",
        fields={"phone": "{recipient_digits}", "message": "{message}"},
        headers={"Idempotency-Key": "{message_id}"},
    )
    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=None, request_format=keyed),
        sms=ProviderOptions(rate_limit=None),
        kakaotalk_fail_suffixes=("0000",),
    )
    with Sandbox(options) as sandbox:
        toml = (
            '[kakaotalk.request]\nfields = { phone = "{recipient_digits}", '
            'message = "{message}" }\nheaders = { Idempotency-Key = "{message_id}" }\n'
        )
        config = _config(tmp_path, "default", sandbox, monkeypatch, toml)
        source = _rows(tmp_path / "in.csv", [("010-4000-1000", "one"), ("010-4000-0000", "two")])
        result = invoke("bulk", str(source), "--no-fallback", "--config", str(config))
        assert result.exit_code == 1, result.output
        first_ids = {r.recipient: r.message_id for r in sandbox.received()}
        assert all(first_ids.values()) and len(set(first_ids.values())) == 2
        sandbox.set_kakaotalk_failures(suffixes=())
        sandbox.reset()
        result = invoke("bulk", str(source), "--no-fallback", "--resume", "--config", str(config))
        assert result.exit_code == 0, result.output
        [again] = sandbox.received()
        assert again.recipient == "010-4000-0000" and again.status == 200
        assert again.message_id == first_ids["010-4000-0000"]


# --------------------------------------------------------------------------- ping


def test_ping_in_either_format(
    served: Sandbox, wire_format: str, tmp_path: Path, monkeypatch: Any
) -> None:
    config = _config(tmp_path, wire_format, served, monkeypatch)
    result = invoke("ping", "--json", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["overall"] == "ok"
    assert not served.delivered()  # the default probe delivers nothing


def test_ping_at_a_real_health_endpoint_with_token_auth(tmp_path: Path, monkeypatch: Any) -> None:
    health = HealthFormat(method="GET", path="/health", body="none", healthy_statuses=(200,))
    token_auth = {"auth_type": "header", "header_name": "X-API-Key", "health": health}
    with Sandbox(_options("assignment", sms=token_auth)) as sandbox:
        toml = """
[sms.auth]
type = "header"
header-name = "X-API-Key"
[sms.request]
body = "form"
query = { phone = "{recipient}" }
fields = { message = "{message}" }
[sms.health]
method = "GET"
path = "/health"
body = "none"
healthy-statuses = [200]
"""
        config = _config(tmp_path, "assignment", sandbox, monkeypatch, toml)
        monkeypatch.setenv("MSGSEND_SMS_AUTH_TOKEN", DEFAULT_TOKENS["sms"])
        result = invoke("ping", "--json", "--provider", "sms", "--config", str(config))
        assert result.exit_code == 0, result.output
        sms = json.loads(result.stdout)["providers"]["sms"]
        assert (sms["status"], sms["detail"]) == ("up", "HTTP 200")
        assert [(r.provider, r.status) for r in sandbox.received()] == [("sms", 200)]
        result = invoke("send", "010-1234-5678", TRICKY, "--via", "sms", "--config", str(config))
        assert result.exit_code == 0, result.output
        monkeypatch.setenv("MSGSEND_SMS_AUTH_TOKEN", "wrong")
        result = invoke("ping", "--json", "--provider", "sms", "--config", str(config))
        sms = json.loads(result.stdout)["providers"]["sms"]
        assert sms["status"] == "auth-failed"
        assert "MSGSEND_SMS_AUTH_TOKEN" in sms["detail"] and "wrong" not in result.output


# --------------------------------------------------------------------------- success checks


@pytest.mark.parametrize(("expected", "ok"), [('"ok"', True), ('"OK"', False)])
def test_success_json_decides_delivery(
    served: Sandbox, wire_format: str, expected: str, ok: bool, tmp_path: Path, monkeypatch: Any
) -> None:
    config = _config(tmp_path, wire_format, served, monkeypatch)
    monkeypatch.setenv("MSGSEND_KAKAOTALK_REQUEST_SUCCESS_JSON", f'{{"status": {expected}}}')
    result = invoke("send", "010-1234-5678", "hi", "--json", "--config", str(config))
    document = json.loads(result.stdout)
    assert (result.exit_code, document["status"]) == ((0, "sent") if ok else (1, "failed"))
    if not ok:
        # Refused: one attempt, no fallback, the answer quoted.
        assert document["attempts"] == 1 and not document["fallback"]
        assert 'success-json expects "OK"' in document["error"] and '"id"' in document["error"]
        assert served.count("sms") == 0


# --------------------------------------------------------------------------- --sandbox


def test_embedded_sandbox_serves_the_configured_format(tmp_path: Path, monkeypatch: Any) -> None:
    # The number ending in 0000 fails on the embedded KakaoTalk: retried, then sent by SMS.
    monkeypatch.setenv("MSGSEND_RETRY_BACKOFF_DELAY", "10")
    config = tmp_path / "a.toml"
    assert invoke("config", "init", "--format", "assignment", str(config)).exit_code == 0
    result = invoke("send", "010-1234-5678", TRICKY, "--sandbox", "--config", str(config))
    assert result.exit_code == 0, result.output
    result = invoke(
        "send", "010-1234-5678", TRICKY, "--via", "sms", "--sandbox", "--config", str(config)
    )
    assert result.exit_code == 0, result.output
    source = _rows(tmp_path / "in.csv", [("010-5000-1000", TRICKY), ("010-5000-0000", "fallback")])
    result = invoke("bulk", str(source), "--sandbox", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["sent"] == 2
    assert document["sent_by_channel"] == {"kakaotalk": 1, "sms": 1}
    result = invoke("ping", "--sandbox", "--config", str(config), "--json")
    assert result.exit_code == 0, result.output


def test_embedded_sandbox_with_bearer_auth(tmp_path: Path) -> None:
    config = tmp_path / "b.toml"
    config.write_text('[sms.auth]\ntype = "bearer"\ntoken = "real-token"\n', encoding="utf-8")
    config.chmod(0o600)
    result = invoke(
        "send", "010-1234-5678", "hi", "--via", "sms", "--sandbox", "--config", str(config)
    )
    assert result.exit_code == 0, result.output
    assert "real-token" not in result.output


# --------------------------------------------------------------------------- msgsend sandbox


def test_sandbox_command_serves_the_assignment_format(tmp_path: Path, monkeypatch: Any) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "msgsend", "sandbox", "--format", "assignment",
         "--kakaotalk-port", "0", "--sms-port", "0", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline()
        assert "assignment format" in banner, banner
        urls = re.findall(r"(?:POST) (http://127\.0\.0\.1:\d+)(/\S+)", banner)
        assert [path.split("?")[0] for _, path in urls] == ["/kakaotalk-messages", "/sms"]
        assert "/sms?phone=..." in banner and "(form)" in banner
        monkeypatch.setenv("MSGSEND_KAKAOTALK_BASE_URL", urls[0][0])
        monkeypatch.setenv("MSGSEND_SMS_BASE_URL", urls[1][0])
        monkeypatch.setenv("MSGSEND_LIMITER_STORE", "memory")
        config = tmp_path / "a.toml"
        assert invoke("config", "init", "--format", "assignment", str(config)).exit_code == 0
        for via in ("kakaotalk", "sms"):
            result = invoke("send", "010-1234-5678", TRICKY, "--via", via, "--config", str(config))
            assert result.exit_code == 0, result.output
        result = invoke("ping", "--config", str(config))
        assert result.exit_code == 0, result.output
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, rest = proc.communicate(timeout=10)  # reads and closes the stderr pipe
        except subprocess.TimeoutExpired:
            proc.kill()
            _, rest = proc.communicate(timeout=10)
    # SIGTERM (a service manager's stop) ends it cleanly, saying what it served.
    assert proc.returncode == 0, rest
    assert "sandbox: stopped after" in rest
