"""Tests for msgsend.formats: placeholders, body kinds, encoding, success checks, bad formats.

Every encoding claim is checked by decoding with the standard decoder a server would use
(``json.loads``, ``parse_qsl``), never by comparing against hand-encoded strings alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests_mock
from typer.testing import CliRunner

from fakes import FakeProvider, FakeSender, FakeSleep, server_error
from msgsend.bulk import BulkOptions, send_bulk
from msgsend.cli import app
from msgsend.client import Sender
from msgsend.config import load_config
from msgsend.errors import ConfigError, InvalidRequestError, RefusedError
from msgsend.formats import (
    CONTENT_TYPES,
    FORMAT_NAMES,
    AuthSpec,
    FormatError,
    HealthFormat,
    RequestBuilder,
    RequestFormat,
    bulk_message_id,
    check_auth,
    check_health_format,
    check_request_format,
    health_body,
    new_message_id,
    preset,
    refusal,
)
from msgsend.providers import KakaoTalkProvider, SmsProvider
from msgsend.retry import RetryPolicy

RECIPIENT = "010-1234-5678"
LONG_SMS = "가" * 46  # 92 EUC-KR bytes: an LMS

# text that breaks naive encoders: separators, escapes, quotes, newlines, Korean, emoji
TRICKY_TEXTS = [
    "a&b=c",
    "100% sure, %20 stays",
    'say "hi" and \\ backslash',
    "it's",
    "line one\nline two\r\nthree",
    "안녕하세요, 홍길동님! 주문하신 상품이 발송되었습니다.",
    "a+b c",
    "emoji 😀 ok",
    "tab\there",
    "semi;colon #hash ?q /slash",
    "{recipient} stays literal",
]


def _format(**changes: Any) -> RequestFormat:
    base: dict[str, Any] = {
        "path": "/send",
        "fields": {"to": "{recipient}", "text": "{message}"},
    }
    base.update(changes)
    return RequestFormat(**base)


def _json_body(built: Any) -> dict[str, Any]:
    assert built.body is not None
    document = json.loads(built.body.decode("utf-8"))
    assert isinstance(document, dict)
    return document


# --------------------------------------------------------------------------- placeholders

# template, channel, text, message id, expected rendering
PLACEHOLDER_TABLE = [
    ("{recipient}", "kakaotalk", "hi", None, "010-1234-5678"),
    ("{recipient_digits}", "kakaotalk", "hi", None, "01012345678"),
    ("{recipient_e164}", "kakaotalk", "hi", None, "+821012345678"),
    ("{message}", "kakaotalk", "안녕 & bye", None, "안녕 & bye"),
    ("{kind}", "kakaotalk", LONG_SMS, None, "kakaotalk"),
    ("{kind}", "sms", "가" * 45, None, "sms"),
    ("{kind}", "sms", LONG_SMS, None, "lms"),
    ("{message_id}", "sms", "hi", "row-7-id", "row-7-id"),
    ("to {recipient} as {kind}", "sms", "hi", None, "to 010-1234-5678 as sms"),
    ("{{literal}} {recipient_digits}", "sms", "hi", None, "{literal} 01012345678"),
    ("fixed", "sms", "hi", None, "fixed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "channel", "text", "message_id", "expected"), PLACEHOLDER_TABLE
)
def test_each_placeholder_renders_its_value_in_a_json_field(
    template: str, channel: str, text: str, message_id: str | None, expected: str
) -> None:
    fmt = _format(fields={"to": "{recipient}", "text": "{message}", "value": template})
    built = RequestBuilder(fmt, channel).build(RECIPIENT, text, message_id)
    assert _json_body(built)["value"] == expected


def test_message_id_without_one_given_is_a_fresh_uuid_per_message() -> None:
    fmt = _format(fields={"to": "{recipient}", "text": "{message}", "id": "{message_id}"})
    builder = RequestBuilder(fmt, "sms")
    first = _json_body(builder.build(RECIPIENT, "hi"))["id"]
    second = _json_body(builder.build(RECIPIENT, "hi"))["id"]
    assert first != second and len(first) == 36


def test_bulk_message_id_is_stable_per_results_file_row_and_message() -> None:
    one = bulk_message_id("/data/a.results.csv", 7, RECIPIENT, "hi")
    assert one == bulk_message_id("/data/a.results.csv", 7, RECIPIENT, "hi")
    others = {
        bulk_message_id("/data/b.results.csv", 7, RECIPIENT, "hi"),  # another run's file
        bulk_message_id("/data/a.results.csv", 8, RECIPIENT, "hi"),  # another row
        bulk_message_id("/data/a.results.csv", 7, "010-1234-5679", "hi"),
        bulk_message_id("/data/a.results.csv", 7, RECIPIENT, "hi!"),
    }
    assert one not in others and len(others) == 4
    assert new_message_id() != new_message_id()


# --------------------------------------------------------------------------- body kinds


def test_json_body_carries_the_fields_in_order_with_a_json_content_type() -> None:
    builder = RequestBuilder(preset("default", "sms"), "sms")
    built = builder.build(RECIPIENT, "hello")
    assert list(_json_body(built)) == ["phoneNumber", "content"]
    assert _json_body(built) == {"phoneNumber": RECIPIENT, "content": "hello"}
    assert builder.static_headers["Content-Type"] == CONTENT_TYPES["json"]
    assert built.query == "" and built.headers is None


def test_form_body_is_urlencoded_utf8_with_a_form_content_type() -> None:
    builder = RequestBuilder(preset("assignment", "sms"), "sms")
    built = builder.build(RECIPIENT, "a&b=c 안녕")
    assert built.body is not None
    assert parse_qsl(built.body.decode("ascii"), strict_parsing=True) == [("message", "a&b=c 안녕")]
    assert builder.static_headers["Content-Type"] == CONTENT_TYPES["form"]
    assert parse_qsl(built.query[1:], strict_parsing=True) == [("phone", RECIPIENT)]


def test_no_body_sends_everything_in_the_query_and_no_content_type() -> None:
    fmt = _format(
        method="GET", body="none", fields={}, query={"to": "{recipient}", "text": "{message}"}
    )
    builder = RequestBuilder(fmt, "sms")
    built = builder.build(RECIPIENT, "hi there")
    assert built.body is None
    assert "Content-Type" not in builder.static_headers
    assert dict(parse_qsl(built.query[1:])) == {"to": RECIPIENT, "text": "hi there"}


def test_headers_with_placeholders_are_per_message_and_static_ones_set_once() -> None:
    fmt = _format(headers={"Idempotency-Key": "{message_id}", "X-Channel": "sms {{v1}}"})
    builder = RequestBuilder(fmt, "sms")
    built = builder.build(RECIPIENT, "hi", "abc")
    assert built.headers == {"Idempotency-Key": "abc"}
    assert builder.static_headers["X-Channel"] == "sms {v1}"


def test_a_format_may_set_its_own_content_type() -> None:
    fmt = _format(headers={"Content-Type": "application/json"})
    assert RequestBuilder(fmt, "sms").static_headers == {"Content-Type": "application/json"}


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tricky_text_arrives_intact_in_a_json_string(text: str) -> None:
    built = RequestBuilder(_format(), "kakaotalk").build(RECIPIENT, text)
    assert _json_body(built)["text"] == text


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tricky_text_arrives_intact_in_a_form_field(text: str) -> None:
    built = RequestBuilder(_format(body="form"), "kakaotalk").build(RECIPIENT, text)
    assert built.body is not None
    pairs = parse_qsl(built.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert pairs == [("to", RECIPIENT), ("text", text)]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tricky_text_arrives_intact_in_a_query_parameter(text: str) -> None:
    fmt = _format(query={"text": "{message}"}, fields={"to": "{recipient}"})
    built = RequestBuilder(fmt, "kakaotalk").build(RECIPIENT, text)
    assert built.query.startswith("?")
    assert parse_qsl(built.query[1:], keep_blank_values=True, strict_parsing=True) == [
        ("text", text)
    ]


def test_query_encoding_leaves_no_separator_or_plus_ambiguous() -> None:
    fmt = _format(query={"text": "{message}", "to": "{recipient_e164}"}, fields={"x": "y"})
    built = RequestBuilder(fmt, "kakaotalk").build(RECIPIENT, "a b+c&d=e%f/g")
    # A '+' that means plus and a space that might be read as '+' are both escaped.
    assert built.query == "?text=a%20b%2Bc%26d%3De%25f%2Fg&to=%2B821012345678"


# --------------------------------------------------------------------------- answers

# statuses, json checks, answered status, answered body, refused?, words in the reason
SUCCESS_TABLE = [
    ((), {}, 200, "", False, ""),
    ((), {}, 204, "not json at all", False, ""),
    ((200,), {}, 200, "", False, ""),
    ((200,), {}, 202, "", True, "202 is not one of success-statuses (200)"),
    ((), {"result": "OK"}, 200, '{"result": "OK", "id": 1}', False, ""),
    ((), {"result": "OK"}, 200, '{"result": "FAIL"}', True, "'result' = \"FAIL\""),
    ((), {"result": "OK"}, 200, '{"id": 1}', True, "has no 'result'"),
    ((), {"result": "OK"}, 200, "OK", True, "not JSON"),
    ((), {"result": "OK"}, 200, "", True, "not a JSON object"),
    ((), {"result": "OK"}, 200, '["OK"]', True, "not a JSON object"),
    ((), {"code": 0}, 200, '{"code": 0}', False, ""),
    ((), {"code": 0}, 200, '{"code": 0.0}', False, ""),
    ((), {"code": 0}, 200, '{"code": "0"}', True, "expects 0"),
    ((), {"ok": True}, 200, '{"ok": true}', False, ""),
    ((), {"ok": True}, 200, '{"ok": 1}', True, "expects true"),
    ((), {"code": 1}, 200, '{"code": true}', True, "expects 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("statuses", "checks", "status", "body", "refused", "words"), SUCCESS_TABLE
)
def test_success_checks(
    statuses: tuple[int, ...],
    checks: dict[str, Any],
    status: int,
    body: str,
    refused: bool,
    words: str,
) -> None:
    reason = refusal(_format(success_statuses=statuses, success_json=checks), status, body)
    assert (reason is not None) is refused
    if refused:
        assert reason is not None and words in reason


def test_health_defaults_to_the_spec_probe() -> None:
    health = HealthFormat()
    assert [s for s in (200, 204, 400, 422, 401, 404, 429, 500) if health.is_healthy(s)] == [
        200,
        204,
        400,
        422,
    ]
    assert health_body("json") == b"{}" and health_body("form") == b""
    assert health_body("none") is None
    only = HealthFormat(method="GET", path="/health", body="none", healthy_statuses=(200,))
    assert only.is_healthy(200) and not only.is_healthy(400)


def test_auth_headers_per_type_and_secrets_never_in_repr() -> None:
    assert AuthSpec("basic", "u", "p").basic == ("u", "p")
    assert AuthSpec("basic", "u", "p").headers() == {}
    assert AuthSpec("bearer", token="t0k").headers() == {"Authorization": "Bearer t0k"}
    assert AuthSpec("header", token="t0k", header_name="X-API-Key").headers() == {
        "X-API-Key": "t0k"
    }
    for spec in (AuthSpec("basic", "u", "s3cret"), AuthSpec("bearer", token="s3cret")):
        assert "s3cret" not in repr(spec)


# --------------------------------------------------------------------------- bad formats

# changes to a good format, the key named, words of the message
BAD_FORMATS = [
    ({"fields": {"to": "{recipient}", "text": "{mesage}"}}, "request.fields.text",
     "did you mean {message}"),
    ({"fields": {"to": "{recipient}", "text": "{message}", "x": "{0}"}}, "request.fields.x",
     "unknown placeholder {0}"),
    ({"fields": {"to": "{recipient}", "text": "{}"}}, "request.fields.text", "unknown placeholder"),
    ({"fields": {"to": "{recipient.x}", "text": "{message}"}}, "request.fields.to",
     "unknown placeholder"),
    ({"fields": {"to": "{recipient!r}", "text": "{message}"}}, "request.fields.to",
     "conversions and format specs"),
    ({"fields": {"to": "{recipient:>20}", "text": "{message}"}}, "request.fields.to",
     "conversions and format specs"),
    ({"fields": {"to": "{recipient", "text": "{message}"}}, "request.fields.to", "literal brace"),
    ({"query": {"q": "{message}}"}}, "request.query.q", "literal brace"),
    ({"body": "xml"}, "request.body", "'json', 'form', 'none'"),
    ({"body": "none"}, "request.fields", 'body = "none" sends no fields'),
    ({"fields": {}, "query": {"to": "{recipient}"}}, "request.fields", "needs fields"),
    ({"method": "DELETE"}, "request.method", "POST"),
    ({"method": "GET"}, "request.body", "cannot carry a body"),
    ({"path": "send"}, "request.path", "starting with '/'"),
    ({"path": "/send?x=1"}, "request.path", "put parameters in query"),
    ({"path": "/send/{message_id}"}, "request.path", "literal"),
    ({"fields": {"text": "{message}"}}, "request", "carries the recipient"),
    ({"fields": {"to": "{recipient}"}}, "request", "carries the text"),
    ({"fields": {"to": "{recipient}", "text": "{message}", "n": 5}}, "request.fields",
     "expected a string for 'n'"),
    ({"headers": {"Authorization": "Bearer x"}}, "request.headers.Authorization", "[auth]"),
    ({"headers": {"Content-Length": "3"}}, "request.headers.Content-Length", "may not be set"),
    ({"headers": {"Bad Name": "x"}}, "request.headers.Bad Name", "not a valid header name"),
    ({"headers": {"X-Text": "{message}"}}, "request.headers.X-Text", "cannot carry"),
    ({"headers": {"X-Note": "안녕"}}, "request.headers.X-Note", "ASCII"),
    ({"success_statuses": (200, 302)}, "request.success-statuses", "from 200 to 299"),
    ({"success_statuses": (True,)}, "request.success-statuses", "from 200 to 299"),
    ({"success_json": {"result": ["OK"]}}, "request.success-json", "string, number or boolean"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "key", "words"), BAD_FORMATS)
def test_a_bad_request_format_is_refused_naming_the_key(
    changes: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(FormatError) as caught:
        check_request_format(_format(**changes))
    assert caught.value.key == key
    assert words in str(caught.value)


BAD_HEALTH = [
    ({"method": "TRACE"}, "health.method", "GET"),
    ({"method": "GET"}, "health.body", "cannot carry a body"),
    ({"body": "yaml"}, "health.body", "'json'"),
    ({"path": "health"}, "health.path", "starting with '/'"),
    ({"healthy_statuses": (200, 600)}, "health.healthy-statuses", "from 100 to 599"),
]


@pytest.mark.parametrize(("changes", "key", "words"), BAD_HEALTH)
def test_a_bad_health_format_is_refused_naming_the_key(
    changes: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(FormatError) as caught:
        check_health_format(HealthFormat(**changes))
    assert caught.value.key == key
    assert words in str(caught.value)


BAD_AUTH = [
    (AuthSpec("oauth"), "auth.type", "'basic', 'bearer', 'header'"),
    (AuthSpec("basic", "u", "p", token="t"), "auth.type", 'type = "bearer" or "header"'),
    (AuthSpec("basic", "u", "p", header_name="X-Key"), "auth.header-name", 'type = "header"'),
    (AuthSpec("bearer"), "auth.type", "needs a token"),
    (AuthSpec("bearer", token="a\nb"), "auth", "one line"),
    (AuthSpec("header", token="t"), "auth.header-name", "needs header-name"),
    (AuthSpec("header", token="t", header_name="X Key"), "auth.header-name", "not a usable"),
    (AuthSpec("header", token="t", header_name="Content-Length"), "auth.header-name", "usable"),
]


@pytest.mark.parametrize(("auth", "key", "words"), BAD_AUTH)
def test_incomplete_or_ambiguous_auth_is_refused_naming_the_key(
    auth: AuthSpec, key: str, words: str
) -> None:
    with pytest.raises(FormatError) as caught:
        check_auth(auth)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_the_presets_are_valid_and_the_assignment_differs_from_the_default() -> None:
    for name in ("default", "assignment"):
        for provider in ("kakaotalk", "sms"):
            check_request_format(preset(name, provider))
    assert preset("assignment", "kakaotalk").fields == {
        "phone": "{recipient}",
        "message": "{message}",
    }
    assert preset("default", "sms").fields == {
        "phoneNumber": "{recipient}",
        "content": "{message}",
    }
    with pytest.raises(ValueError, match="unknown format"):
        preset("fancy", "sms")


# --------------------------------------------------------------------------- through the layers


def _sender(kakao: Any, sms: Any) -> Sender:
    return Sender({"kakaotalk": kakao, "sms": sms}, retry=RetryPolicy(), sleep=FakeSleep())


def test_one_message_id_for_every_attempt_and_the_fallback() -> None:
    kakao = FakeProvider("kakaotalk").enqueue(server_error(), server_error(), server_error())
    sms = FakeProvider("sms")
    result = _sender(kakao, sms).send(RECIPIENT, "hi")
    assert result.ok and result.fallback
    ids = kakao.message_ids + sms.message_ids
    assert len(ids) == 4 and len(set(ids)) == 1 and ids[0]


def test_a_given_message_id_is_passed_and_each_message_gets_its_own() -> None:
    kakao = FakeProvider("kakaotalk")
    sender = _sender(kakao, FakeProvider("sms"))
    sender.send(RECIPIENT, "one", message_id="row-1")
    sender.send(RECIPIENT, "two")
    sender.send(RECIPIENT, "three")
    assert kakao.message_ids[0] == "row-1"
    assert len(set(kakao.message_ids)) == 3


def test_a_2xx_failing_success_json_is_refused_not_retried_and_no_fallback() -> None:
    strict = _format(path="/kakaotalk-messages", success_json={"result": "OK"})
    kakao = KakaoTalkProvider("http://kakao.test", "u", "p", request_format=strict)
    sms = SmsProvider("http://sms.test", "u", "p")
    with requests_mock.Mocker() as mock:
        mock.post("http://kakao.test/kakaotalk-messages", json={"result": "FAIL", "reason": "x"})
        sent = mock.post("http://sms.test/sms", json={})
        with pytest.raises(RefusedError) as caught:
            kakao.send(RECIPIENT, "hi")
        assert isinstance(caught.value, InvalidRequestError)
        assert caught.value.status_code == 200 and caught.value.provider == "kakaotalk"
        assert '"reason": "x"' in str(caught.value)  # the body excerpt
        result = _sender(kakao, sms).send(RECIPIENT, "hi")
    assert not result.ok and result.attempts == 1 and not result.fallback
    assert result.error_kind == "refused"
    assert sent.call_count == 0


def test_bulk_gives_each_row_a_message_id_that_a_resume_repeats(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("phone,message\n010-1234-5678,a\n010-1234-5679,b\n010-1234-5670,c\n")
    results = tmp_path / "in.results.csv"
    first = FakeSender(fail={"010-1234-5679"})
    send_bulk(source, first, BulkOptions(results_path=results))
    again = FakeSender()
    send_bulk(source, again, BulkOptions(results_path=results, resume=True))
    ids = dict(zip([c[0] for c in first.calls], first.message_ids, strict=True))
    assert len(set(ids.values())) == 3
    assert again.message_ids == [ids["010-1234-5679"]]  # only the failed row, same id


# --------------------------------------------------------------------------- the configuration

# TOML, the key named, words of the message: every one exits 78 through the CLI
BAD_CONFIGS = [
    ('[sms.request]\nfields = {to = "{recipient}", text = "{mesage}"}\n',
     "sms.request.fields.text", "did you mean {message}"),
    ('[sms.request]\nbody = "xml"\n', "sms.request.body", "one of 'json', 'form', 'none'"),
    ('[sms.request]\nbody = "none"\n', "sms.request.fields", 'body = "none" sends no fields'),
    ("[sms.request]\nfields = 5\n", "sms.request.fields", "a table of strings"),
    ("[sms.request]\nfields = {to = 1}\n", "sms.request.fields", "a table of strings"),
    ('[sms.request]\nquery = ["phone"]\n', "sms.request.query", "a table of strings"),
    ('[sms.request]\nmethod = "DELETE"\n', "sms.request.method", "one of"),
    ('[sms.request]\npath = "sms"\n', "sms.request.path", "starting with '/'"),
    ("[sms.request]\nsuccess-statuses = [302]\n", "sms.request.success-statuses", "200 to 299"),
    ('[sms.request]\nsuccess-statuses = "200"\n', "sms.request.success-statuses", "a list"),
    ("[sms.request]\nsuccess-json = {result = [1]}\n", "sms.request.success-json",
     "strings, numbers or booleans"),
    ('[sms.request]\nheaders = {Authorization = "Bearer x"}\n',
     "sms.request.headers.Authorization", "[auth]"),
    ('[sms.request]\nunknown = 1\n', "sms.request.unknown", "unknown key"),
    ('[sms.health]\nmethod = "GET"\n', "sms.health.body", "cannot carry a body"),
    ("[sms.health]\nhealthy-statuses = [99]\n", "sms.health.healthy-statuses", "100 to 599"),
    ('[sms.auth]\ntype = "oauth"\n', "sms.auth.type", "one of"),
    ('[sms.auth]\ntype = "bearer"\n', "sms.auth.type", '"bearer" needs a token'),
    ('[sms.auth]\ntoken = "t"\n', "sms.auth.type", 'set type = "bearer" or "header"'),
    ('[sms.auth]\ntype = "header"\ntoken = "t"\n', "sms.auth.header-name", "needs header-name"),
]  # fmt: skip


@pytest.mark.parametrize(("toml", "key", "words"), BAD_CONFIGS)
def test_a_bad_format_config_exits_78_naming_file_and_key(
    tmp_path: Path, toml: str, key: str, words: str
) -> None:
    path = tmp_path / "msgsend.toml"
    path.write_text(toml, encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "check", "--config", str(path)])
    assert result.exit_code == 78, result.output
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and key in line and words in line
    assert "Traceback" not in result.output


def test_an_environment_override_of_a_table_is_json(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_QUERY", '{"phone": "{recipient_digits}"}')
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_FIELDS", '{"message": "{message}"}')
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_BODY", "form")
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_SUCCESS_JSON", '{"ok": true}')
    config = load_config(env=dict(os.environ), cwd=tmp_path)
    assert config.sms.request == RequestFormat(
        path="/sms",
        body="form",
        query={"phone": "{recipient_digits}"},
        fields={"message": "{message}"},
        success_json={"ok": True},
    )
    assert config.sources["sms.request.query"] == "MSGSEND_SMS_REQUEST_QUERY"
    monkeypatch.setenv("MSGSEND_SMS_REQUEST_QUERY", '{"phone": "{number}"}')
    with pytest.raises(ConfigError) as caught:
        load_config(env=dict(os.environ), cwd=tmp_path)
    assert "environment MSGSEND_SMS_REQUEST_QUERY" in str(caught.value)
    assert "unknown placeholder {number}" in str(caught.value)


def test_config_show_prints_the_request_format_with_sources_and_hides_tokens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "msgsend.toml"
    path.write_text(
        '[sms.request]\nbody = "form"\nquery = { phone = "{recipient}" }\n'
        'fields = { message = "{message}" }\n'
        '[sms.auth]\ntype = "bearer"\ntoken = "s3cret-token"\n',
        encoding="utf-8",
    )
    path.chmod(0o644)
    result = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    lines = {line.split("#")[0].strip(): line for line in result.stdout.splitlines()}
    assert f"file {path}" in lines['body = "form"']
    assert f"file {path}" in lines['query = { phone = "{recipient}" }']
    assert "default" in lines['path = "/sms"']  # the request's, and the health probe's
    assert "s3cret-token" not in result.output
    assert 'token = "***"' in lines
    assert "auth.token" in result.stderr and "chmod 600" in result.stderr  # readable by others


def test_config_init_writes_either_format_and_it_loads_back(tmp_path: Path) -> None:
    for name in FORMAT_NAMES:
        path = tmp_path / f"{name}.toml"
        result = CliRunner().invoke(app, ["config", "init", "--format", name, str(path)])
        assert result.exit_code == 0, result.output
        config = load_config(path)
        for provider in ("kakaotalk", "sms"):
            assert config.provider(provider).request == preset(name, provider)
    result = CliRunner().invoke(app, ["config", "init", "--format", "xml", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--format" in result.output


# --------------------------------------------------------------------------- ping's probe

# answered status, health format, status reported, words of the detail
PROBE_TABLE = [
    (400, HealthFormat(), "up", "HTTP 400"),
    (200, HealthFormat(), "up", "HTTP 200"),
    (500, HealthFormat(), "down", "healthy: 2xx, 400 or 422"),
    (404, HealthFormat(), "down", "check [sms] base-url"),
    (200, HealthFormat("GET", "/health", "none", (200,)), "up", "HTTP 200"),
    (400, HealthFormat("GET", "/health", "none", (200,)), "down", "(healthy: 200)"),
    (200, HealthFormat("GET", "/health", "none", (204,)), "down", "HTTP 200 (healthy: 204)"),
    (404, HealthFormat("GET", "/health", "none", (200,)), "down",
     "HTTP 404 at http://sms.test/health: check [sms.health] path or [sms] base-url"),
    (401, HealthFormat("GET", "/health", "none", (200,)), "auth-failed", "[sms.auth]"),
    (429, HealthFormat("GET", "/health", "none", (200,)), "throttled", "429"),
]  # fmt: skip


@pytest.mark.parametrize(("answered", "health", "status", "words"), PROBE_TABLE)
def test_ping_probes_as_health_says(
    answered: int, health: HealthFormat, status: str, words: str
) -> None:
    provider = SmsProvider("http://sms.test", "u", "p", health=health)
    with requests_mock.Mocker() as mock:
        probe = mock.register_uri(
            health.method, f"http://sms.test{health.path or '/sms'}", status_code=answered
        )
        result = provider.ping()
    assert (result.status.value, result.status_code) == (status, answered)
    assert words in result.detail
    sent = probe.last_request
    assert sent is not None and sent.method == health.method
    assert sent.body == (b"{}" if health.body == "json" else None)
    assert sent.headers["Authorization"].startswith("Basic ")
