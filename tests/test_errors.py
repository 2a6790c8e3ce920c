"""Tests for msgsend.errors: the hierarchy, the decision attributes and error_for_status."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

import pytest

from msgsend import errors
from msgsend.errors import (
    AllProvidersFailedError,
    AuthError,
    CircuitOpenError,
    ConfigError,
    ConnectError,
    ConnectionLostError,
    CredentialsRefusedError,
    HTTPStatusError,
    InputError,
    InputFileError,
    InvalidRequestError,
    MsgsendError,
    OutageError,
    ProviderDisabledError,
    ProviderError,
    RateLimitedError,
    ReadTimeoutError,
    ResultsWriteError,
    ServerError,
    SystematicRefusalError,
    TransportError,
    TryLaterError,
    error_for_status,
    exit_code_for,
    most_severe,
)
from msgsend.results import ResultsExistError, ResultsInUseError


def test_all_is_sorted_and_complete():
    assert errors.__all__ == sorted(errors.__all__)
    for name in errors.__all__:
        assert hasattr(errors, name)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (ConfigError, MsgsendError),
        (InputError, MsgsendError),
        (InputFileError, InputError),
        (ProviderError, MsgsendError),
        (TransportError, ProviderError),
        (ConnectError, TransportError),
        (ReadTimeoutError, TransportError),
        (ConnectionLostError, TransportError),
        (HTTPStatusError, ProviderError),
        (RateLimitedError, HTTPStatusError),
        (ServerError, HTTPStatusError),
        (AuthError, HTTPStatusError),
        (InvalidRequestError, HTTPStatusError),
        (CircuitOpenError, MsgsendError),
        (ProviderDisabledError, MsgsendError),
        (AllProvidersFailedError, MsgsendError),
    ],
)
def test_hierarchy(cls, parent):
    assert issubclass(cls, parent)


# (class, retryable, fallback, outage, uncertain): SPEC §3, one row per outcome.
DECISIONS = [
    (ConnectError, True, True, True, False),
    (ReadTimeoutError, True, True, True, True),
    (ConnectionLostError, True, True, True, True),
    (RateLimitedError, True, True, False, False),
    (ServerError, True, True, True, False),
    (AuthError, False, True, False, False),
    (InvalidRequestError, False, False, False, False),
    (CircuitOpenError, False, True, False, False),
    (ProviderDisabledError, False, True, False, False),
    (ConfigError, False, False, False, False),
    (InputError, False, False, False, False),
    (AllProvidersFailedError, False, False, False, False),
]


@pytest.mark.parametrize(("cls", "retryable", "fallback", "outage", "uncertain"), DECISIONS)
def test_decision_attributes(cls, retryable, fallback, outage, uncertain):
    assert (cls.retryable, cls.fallback, cls.outage, cls.uncertain) == (
        retryable,
        fallback,
        outage,
        uncertain,
    )


def test_kinds_are_distinct():
    classes = [row[0] for row in DECISIONS] + [InputFileError, TransportError, HTTPStatusError]
    kinds = [cls.kind for cls in classes]
    assert len(kinds) == len(set(kinds))


def test_error_carries_provider_and_status():
    exc = ServerError("boom", provider="sms", status_code=502)
    assert (str(exc), exc.provider, exc.status_code) == ("boom", "sms", 502)


def test_config_error_names_source_and_key():
    exc = ConfigError("expected a number", source="/etc/msgsend.toml", key="sms.timeout")
    assert str(exc) == "/etc/msgsend.toml: sms.timeout: expected a number"
    assert (exc.source, exc.key) == ("/etc/msgsend.toml", "sms.timeout")
    assert str(ConfigError("plain")) == "plain"


def test_all_providers_failed_lists_each_error():
    exc = AllProvidersFailedError(
        [
            ServerError("HTTP 503", provider="kakaotalk", status_code=503),
            ConnectError("refused", provider="sms"),
        ]
    )
    assert str(exc) == "every provider failed (kakaotalk: HTTP 503; sms: refused)"
    assert exc.provider == "sms"
    assert len(exc.errors) == 2
    assert str(AllProvidersFailedError([])) == "no provider was available"


# (status, class, status_code kept)
STATUS_TABLE = [
    (400, InvalidRequestError),
    (404, InvalidRequestError),
    (409, InvalidRequestError),
    (422, InvalidRequestError),
    (401, AuthError),
    (403, AuthError),
    (429, RateLimitedError),
    (500, ServerError),
    (502, ServerError),
    (503, ServerError),
    (504, ServerError),
    (507, ServerError),
]


@pytest.mark.parametrize(("status", "cls"), STATUS_TABLE)
def test_error_for_status(status, cls):
    exc = error_for_status("kakaotalk", status, '{"error": "x"}')
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.provider == "kakaotalk"
    assert exc.body == '{"error": "x"}'


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_an_invalid_request_naming_base_url(status):
    exc = error_for_status("kakaotalk", status, "", location="https://new.example.com/")
    assert type(exc) is InvalidRequestError
    assert "https://new.example.com/" in str(exc)
    assert "[kakaotalk] base-url" in str(exc)


def test_auth_error_names_the_fix():
    exc = error_for_status("sms", 401)
    assert "[sms.auth]" in str(exc)
    assert "MSGSEND_SMS_AUTH_PASSWORD" in str(exc)


def test_error_message_includes_a_short_body_snippet():
    exc = error_for_status("sms", 400, "bad\nphone" + "x" * 500)
    assert "bad phone" in str(exc)
    assert len(str(exc)) < 300


def test_provider_text_is_shown_with_control_characters_escaped():
    exc = error_for_status("sms", 400, "bad\x1b[2J\x1b]0;pwned\x07 request\r\nINFO forged\u202e")
    text = str(exc)
    assert all(ch.isprintable() for ch in text)
    assert "bad\\x1b[2J\\x1b]0;pwned\\x07 request INFO forged\\u202e" in text


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("soon", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_retry_after_seconds(header, expected):
    exc = error_for_status("kakaotalk", 429, "", header)
    assert isinstance(exc, RateLimitedError)
    assert exc.retry_after == expected


def test_retry_after_http_date():
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    exc = error_for_status("kakaotalk", 429, "", format_datetime(when, usegmt=True))
    assert isinstance(exc, RateLimitedError)
    assert exc.retry_after is not None
    assert 100 <= exc.retry_after <= 121


def test_retry_after_http_date_in_the_past_is_zero():
    exc = error_for_status("kakaotalk", 429, "", "Wed, 21 Oct 2015 07:28:00 GMT")
    assert isinstance(exc, RateLimitedError)
    assert exc.retry_after == 0.0


# -- exit codes: one table keyed by class, one precedence ---------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ConfigError("x"), 78),
        (SystematicRefusalError("x"), 78),
        (CredentialsRefusedError("x"), 78),
        (OutageError("x"), 75),
        (TryLaterError("x"), 75),
        (ResultsInUseError("x"), 75),
        (ResultsExistError("x"), 2),
        (ResultsWriteError("x"), 74),
        (InputFileError("x"), 66),
        (InputError("x"), 65),
        (ServerError("x"), 1),
        (KeyboardInterrupt(), 130),
        (RuntimeError("bug"), 70),
    ],
)
def test_exit_code_comes_from_the_nearest_class_in_the_table(exc, code):
    assert exit_code_for(exc) == code
    assert exit_code_for(type(exc)) == code


@pytest.mark.parametrize(
    ("status", "unavailable", "code"),
    [("sent", False, 0), ("failed", False, 1), ("failed", True, 75)],
)
def test_a_send_result_takes_its_exit_code_from_the_table(status, unavailable, code, monkeypatch):
    from msgsend.models import DeliveryResult

    result = DeliveryResult("01012345678", status, unavailable=unavailable)
    assert result.exit_code == code
    # The table decides: change it and the result's code follows.
    monkeypatch.setitem(errors.EXIT_CODES, errors.TryLaterError, 99)
    assert result.exit_code == (99 if unavailable else code)


@pytest.mark.parametrize(
    ("codes", "winner"),
    [
        ((), 0),
        ((0, 0), 0),
        ((1, 75), 75),
        ((75, 78), 78),
        ((78, 130, 75), 130),
        ((74, 1), 74),
        ((74, 75), 75),
        ((1, 0), 1),
        ((65, 0), 65),
        ((65, 1), 1),
        ((70, 1), 70),  # stopped by a bug with rows left: not just "a row failed"
        ((70, 75), 75),
    ],
)
def test_most_severe_applies_the_spec_precedence(codes, winner):
    assert most_severe(*codes) == winner


# -- throttling: throttle-statuses and the reset headers (issue #13 point 7) -------------

NOW = 1_800_000_000.0  # an epoch second the tests measure from


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"RateLimit-Reset": "12"}, 12.0),
        ({"X-RateLimit-Reset-After": "2.5"}, 2.5),
        ({"X-RateLimit-Reset": "30"}, 30.0),
        # above 1e9: an epoch time in seconds, above 1e12 in milliseconds
        ({"X-RateLimit-Reset": str(int(NOW + 40))}, 40.0),
        ({"X-RateLimit-Reset": str(int((NOW + 40) * 1000))}, 40.0),
        ({"RateLimit-Reset": str(int(NOW - 100))}, 0.0),  # a reset in the past: now
        # several present: the longest wait
        ({"Retry-After": "3", "X-RateLimit-Reset-After": "9", "RateLimit-Reset": "5"}, 9.0),
        ({"Retry-After": "garbage", "RateLimit-Reset": "4"}, 4.0),
        # absurd or broken values: negative means now, garbage and infinities are ignored
        ({"Retry-After": "-30"}, 0.0),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "1e400"}, None),
        ({"Retry-After": "nan", "X-RateLimit-Reset": "soon"}, None),
        ({"Retry-After": "999999999"}, 999999999.0),
        ({"Retry-After": ""}, None),
    ],
)
def test_throttle_wait_reads_every_reset_header(headers, expected):
    assert errors.throttle_wait(headers, now=NOW) == pytest.approx(expected)


def test_throttle_wait_reads_an_http_date_and_header_names_case_insensitively():
    from requests.structures import CaseInsensitiveDict

    when = dt.datetime.fromtimestamp(NOW + 90, dt.UTC)
    headers = CaseInsensitiveDict({"retry-after": format_datetime(when, usegmt=True)})
    assert errors.throttle_wait(headers, now=NOW) == pytest.approx(90.0)
    far = CaseInsensitiveDict({"Retry-After": "Thu, 01 Jan 2099 00:00:00 GMT"})
    assert errors.throttle_wait(far, now=NOW) > 60 * 365 * 24 * 3600


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_throttle_status_is_rate_limiting_whatever_its_number(status):
    exc = error_for_status(
        "sms",
        status,
        "slow down",
        headers={"X-RateLimit-Reset-After": "3"},
        throttle_statuses=(429, 500, 503),
        now=NOW,
    )
    assert type(exc) is RateLimitedError
    assert (exc.status_code, exc.retry_after, exc.outage) == (status, 3.0, False)
    assert exc.kind == "rate-limited"
    assert f"{status}" in str(exc)


def test_a_status_outside_throttle_statuses_keeps_its_meaning():
    assert type(error_for_status("sms", 503, throttle_statuses=(429,))) is ServerError
    # 429 itself is an invalid request once the operator takes it out of the list
    assert type(error_for_status("sms", 429, throttle_statuses=(503,))) is InvalidRequestError


def test_unavailable_errors_carry_when_to_come_back():
    open_ = CircuitOpenError("open", provider="kakaotalk", available_in=12.0)
    paused = errors.ProviderPausedError("paused", provider="sms", available_in=3.0)
    for exc in (open_, paused):
        assert isinstance(exc, errors.ProviderUnavailableError)
        assert (exc.fallback, exc.retryable, exc.outage) == (True, False, False)
        assert exc.unavailable
    assert (open_.available_in, paused.available_in) == (12.0, 3.0)
    assert CircuitOpenError("trial in flight").available_in is None
