"""Tests for msgsend.redact: one way to hide secrets and escape control characters."""

from __future__ import annotations

import pytest

from msgsend import redact
from msgsend.redact import (
    MASK,
    printable,
    redact_endpoint,
    redact_headers,
    redact_text,
    redact_url,
)

URLS = [
    ("redis://user:pw@cache:6379/0", "redis://user:***@cache:6379/0"),
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    (
        "rediss://default:p%40ss@cache.example.com:6380",
        "rediss://default:***@cache.example.com:6380",
    ),
    ("unix:///run/redis.sock?db=1&password=pw", "unix:///run/redis.sock?db=1&password=***"),
    (
        "https://api.example.com/v1?token=abc&lang=ko",
        "https://api.example.com/v1?token=***&lang=ko",
    ),
    ("https://api.example.com/v1?api_key=abc#top", "https://api.example.com/v1?api_key=***#top"),
    ("http://user:pw@[::1]:9091/metrics", "http://user:***@[::1]:9091/metrics"),
    ("user:pw@pushgw:9091", "user:***@pushgw:9091"),
    ("redis://cache:6379/0", "redis://cache:6379/0"),
    ("http://localhost:8081", "http://localhost:8081"),
    ("http://user@host/x", "http://user@host/x"),
    ("", ""),
]


@pytest.mark.parametrize(("url", "shown"), URLS)
def test_redact_url_hides_passwords_and_credential_parameters(url, shown):
    assert redact_url(url) == shown


ENDPOINTS = [
    ("https://hooks.slack.com/services/T00/B00/XXXX", "https://hooks.slack.com"),
    ("https://u:pw@hooks.example.com:8443/x?token=1", "https://hooks.example.com:8443"),
    ("http://alerts/hook/abc", "http://alerts"),
    ("tgram://123456789:AAHdqTcvbXorGKB/12315544", "tgram://***"),
    ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", "discord://***"),
    ("slack://TokenA/TokenB/TokenC/#channel", "slack://***"),
    ("mailto://user:pass@mail.example.com?to=ops@example.com", "mailto://mail.example.com"),
    ("json://localhost:8000/path/token", "json://localhost:8000"),
    ("not a url", "?://***"),
]


@pytest.mark.parametrize(("url", "shown"), ENDPOINTS)
def test_redact_endpoint_keeps_scheme_and_host_only(url, shown):
    assert redact_endpoint(url) == shown


def test_redact_headers_hides_credential_values_only():
    headers = {
        "Authorization": "Bearer abc.def",
        "X-Api-Key": "k3y",
        "X-Auth-Token": "t0k",
        "Cookie": "session=1",
        "X-Custom": "Token abcdef",
        "Accept": "application/json",
        "X-Request-Id": "{message_id}",
    }
    assert redact_headers(headers) == {
        "Authorization": MASK,
        "X-Api-Key": MASK,
        "X-Auth-Token": MASK,
        "Cookie": MASK,
        "X-Custom": MASK,
        "Accept": "application/json",
        "X-Request-Id": "{message_id}",
    }


TEXTS = [
    ("Authorization: Basic YXV0b2V2ZXI6MTIzNA==", "Authorization: ***"),
    ("{'Authorization': 'Bearer abc.def'}", "{'Authorization': '***'}"),
    ("sent with bearer eyJhbGciOiJIUzI1NiJ9.x", "sent with bearer ***"),
    ("password=1234 and token: xyz", "password=*** and token: ***"),
    ("MSGSEND_SMS_AUTH_PASSWORD=5678", "MSGSEND_SMS_AUTH_PASSWORD=***"),
    ("POST http://u:pw@host:1/x failed", "POST http://u:***@host:1/x failed"),
    ("redis://:pw@cache:6379 refused", "redis://:***@cache:6379 refused"),
    ("basic validation failed", "basic validation failed"),
    # a configuration error names a secret key, and keeps its words
    (
        "c.toml: sms.auth.password: expected a string, got a number (hidden)",
        "c.toml: sms.auth.password: expected a string, got a number (hidden)",
    ),
    ("c.toml: kakaotalk.auth.token: unknown key", "c.toml: kakaotalk.auth.token: unknown key"),
    (
        "c.toml: sms.request.headers.Authorization: header 'Authorization' may not be set here",
        "c.toml: sms.request.headers.Authorization: header 'Authorization' may not be set here",
    ),
    ("request failed; Authorization: Bearer x", "request failed; Authorization: ***"),
]


@pytest.mark.parametrize(("text", "shown"), TEXTS)
def test_redact_text_hides_credentials_in_prose(text, shown):
    assert redact_text(text) == shown


PRINTABLE = [
    ("plain 한글 text", "plain 한글 text"),
    ("bad\x1b[2Jrequest", "bad\\x1b[2Jrequest"),
    ("line\r\nforged: INFO ok", "line\\r\\nforged: INFO ok"),
    ("a\tb\x00c\x07d\x7fe", "a\\tb\\x00c\\x07d\\x7fe"),
    ("\x9bcsi", "\\x9bcsi"),
    ("evil\u202etxt.exe \u2066x\u2069", "evil\\u202etxt.exe \\u2066x\\u2069"),
]


@pytest.mark.parametrize(("text", "shown"), PRINTABLE)
def test_printable_escapes_control_and_bidi_characters(text, shown):
    assert printable(text) == shown


def test_one_redaction_module_is_used_everywhere():
    """The former private helpers are gone: every caller uses msgsend.redact."""
    from msgsend import alerts, logs, metrics, ratelimit

    for module in (alerts, metrics, ratelimit):
        assert not hasattr(module, "_safe_url")
        assert not hasattr(module, "_mask_url")
    assert not hasattr(logs, "_SECRET_PATTERNS")
    assert sorted(redact.__all__) == redact.__all__
