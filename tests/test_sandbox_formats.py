"""The sandbox serves a request format strictly: anything out of format is a 400 naming why.

A lenient provider that answers 200 to a misshapen request (recording the recipient as
``undefined``) is how a wrong format goes unnoticed; the sandbox must never be one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from msgsend.formats import RequestFormat, preset
from msgsend.sandbox import ProviderOptions, Sandbox, SandboxOptions, format_request

AUTH = ("autoever", "5678")
FORM = "application/x-www-form-urlencoded"
KEYED = RequestFormat(
    path="/kakaotalk-messages",
    fields={"to": "{recipient_e164}", "text": "{message}", "type": "{kind}"},
    headers={"Idempotency-Key": "{message_id}"},
)


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=None, request_format=KEYED, password="5678"),
        sms=ProviderOptions(rate_limit=None, request_format=preset("assignment", "sms")),
    )
    with Sandbox(options) as sandbox:
        yield sandbox


def _sms(box: Sandbox, query: str, body: bytes | None, content_type: str | None) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(
        f"{box.sms_url}/sms{query}", data=body, headers=headers, auth=AUTH, timeout=5
    )


# query, body, content type, status, words of the reason (the assignment's SMS format)
ASSIGNMENT_SMS = [
    ("?phone=010-1234-5678", b"message=hi", FORM, 200, ""),
    ("?phone=010-1234-5678", b"message=a%26b%3Dc+%EC%95%88%EB%85%95", FORM, 200, ""),
    ("", b"message=hi", FORM, 400, "missing query parameter 'phone'"),
    ("?phone=010-1234-5678&phone=010-1234-5679", b"message=hi", FORM, 400, "appears twice"),
    ("?phone=010-1234-5678&to=x", b"message=hi", FORM, 400, "unexpected query parameter 'to'"),
    ("?phone=01012345678", b"message=hi", FORM, 400, "query parameter 'phone' does not match"),
    ("?phone=undefined", b"message=hi", FORM, 400, "does not match"),
    ("?phone=010-1234-5678", b'{"message": "hi"}', "application/json", 400,
     "Content-Type must be application/x-www-form-urlencoded"),
    ("?phone=010-1234-5678", b"message=hi", None, 400, "Content-Type must be"),
    ("?phone=010-1234-5678", b"", FORM, 400, "missing field 'message'"),
    ("?phone=010-1234-5678", b"message=", FORM, 400, "does not match"),
    ("?phone=010-1234-5678", b"message=%20%20", FORM, 400, "must not be empty"),
    ("?phone=010-1234-5678", b"message=hi&extra=1", FORM, 400, "unexpected field 'extra'"),
    ("?phone=010-1234-5678", b"message=%FF", FORM, 400, "not valid URL encoding"),
    ("?phone=010-1234-5678", b"\xff", FORM, 400, "not valid UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(("query", "body", "content_type", "status", "words"), ASSIGNMENT_SMS)
def test_assignment_sms_format_is_served_strictly(
    box: Sandbox, query: str, body: bytes, content_type: str | None, status: int, words: str
) -> None:
    box.reset()
    response = _sms(box, query, body, content_type)
    assert response.status_code == status, response.text
    [seen] = box.received("sms")
    if status == 200:
        assert seen.recipient == "010-1234-5678" and seen.message
    else:
        assert words in response.json()["error"] and words in (seen.error or "")
        assert words in format_request(seen)


def _keyed(box: Sandbox, document: dict[str, Any], headers: dict[str, str]) -> Any:
    return requests.post(
        f"{box.kakaotalk_url}/kakaotalk-messages",
        json=document,
        headers=headers,
        auth=AUTH,
        timeout=5,
    )


GOOD = {"to": "+821012345678", "text": "hi", "type": "kakaotalk"}
# JSON body, headers, status, words (a format with {recipient_e164}, {kind}, {message_id})
KEYED_TABLE = [
    (GOOD, {"Idempotency-Key": "abc-1"}, 200, ""),
    (GOOD, {}, 400, "missing header 'Idempotency-Key'"),
    (GOOD, {"Idempotency-Key": "has space"}, 400, "header 'Idempotency-Key' does not match"),
    ({**GOOD, "type": "sms"}, {"Idempotency-Key": "a"}, 400, "{kind} is 'sms'"),
    ({**GOOD, "to": "010-1234-5678"}, {"Idempotency-Key": "a"}, 400, "field 'to' does not"),
    ({**GOOD, "text": 5}, {"Idempotency-Key": "a"}, 400, "field 'text' must be a string"),
    ({"to": "+821012345678", "type": "kakaotalk"}, {"Idempotency-Key": "a"}, 400,
     "missing field 'text'"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "headers", "status", "words"), KEYED_TABLE)
def test_computed_placeholders_and_headers_are_checked(
    box: Sandbox, document: dict[str, Any], headers: dict[str, str], status: int, words: str
) -> None:
    box.reset()
    response = _keyed(box, document, headers)
    assert response.status_code == status, response.text
    [seen] = box.received("kakaotalk")
    if status == 200:
        assert (seen.recipient, seen.message, seen.message_id) == ("010-1234-5678", "hi", "abc-1")
    else:
        assert words in response.json()["error"]


def test_a_format_method_other_than_post_is_served_and_others_are_405() -> None:
    get_format = RequestFormat(
        path="/send", method="GET", body="none", fields={},
        query={"to": "{recipient_digits}", "text": "{message}"},
    )  # fmt: skip
    options = SandboxOptions(sms=ProviderOptions(rate_limit=None, request_format=get_format))
    with Sandbox(options) as sandbox:
        url = f"{sandbox.sms_url}/send"
        ok = requests.get(url, params={"to": "01012345678", "text": "a&b"}, auth=AUTH, timeout=5)
        assert ok.status_code == 200, ok.text
        assert sandbox.delivered("sms")[0].message == "a&b"
        wrong = requests.post(url, params={"to": "01012345678", "text": "x"}, auth=AUTH, timeout=5)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"
