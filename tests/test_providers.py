"""Tests for msgsend.providers: one HTTP attempt each, classified as SPEC §3 says.

Status and exception cases are tables run over both providers (apprise-style), against
requests-mock; a few cases also run against real sockets on 127.0.0.1 to check that the
classification holds for the exceptions requests really raises.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import requests_mock
import urllib3.exceptions

from msgsend.config import load_config
from msgsend.errors import (
    AuthError,
    ConnectError,
    ConnectionLostError,
    InvalidRequestError,
    ProviderError,
    RateLimitedError,
    ReadTimeoutError,
    ServerError,
    TransportError,
)
from msgsend.models import HealthStatus
from msgsend.providers import (
    PROVIDERS,
    KakaoTalkProvider,
    Provider,
    SmsProvider,
    UnknownProviderError,
    build_provider,
    get_provider,
)
from msgsend.providers.base import ProviderResponse

RECIPIENT = "010-1234-5678"
TEXT = "안녕하세요, 홍길동님! 주문하신 상품이 발송되었습니다."

# name, class, default base url, path, body field names, user, password
PROVIDER_TABLE = [
    ("kakaotalk", KakaoTalkProvider, "http://localhost:8081", "/kakaotalk-messages",
     ("recipient", "message"), "autoever", "1234"),
    ("sms", SmsProvider, "http://localhost:8082", "/sms",
     ("phoneNumber", "content"), "autoever", "5678"),
]  # fmt: skip


@pytest.fixture(params=PROVIDER_TABLE, ids=lambda row: row[0])
def spec(request: pytest.FixtureRequest) -> tuple[Any, ...]:
    return request.param


@pytest.fixture
def provider(spec) -> Iterator[Provider]:
    _name, cls, base_url, *_ = spec
    client = cls(base_url, spec[5], spec[6], connect_timeout=3.0, read_timeout=7.0)
    yield client
    client.close()


@pytest.fixture
def url(spec) -> str:
    return spec[2] + spec[3]


@pytest.fixture
def mock() -> Iterator[requests_mock.Mocker]:
    with requests_mock.Mocker() as m:
        yield m


def refused() -> requests.exceptions.ConnectionError:
    """What requests raises when nothing listens on the port."""
    reason = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.MaxRetryError(None, "/sms", reason)  # type: ignore[arg-type]
    )


def reset_after_sending() -> requests.exceptions.ConnectionError:
    """What requests raises when the provider resets the connection after the request."""
    return requests.exceptions.ConnectionError(
        urllib3.exceptions.ProtocolError(
            "Connection aborted.", ConnectionResetError(104, "Connection reset by peer")
        )
    )


# ---------------------------------------------------------------------- registry


def test_registry():
    assert {"kakaotalk": KakaoTalkProvider, "sms": SmsProvider} == PROVIDERS
    assert get_provider("kakaotalk") is KakaoTalkProvider
    assert get_provider("sms") is SmsProvider


@pytest.mark.parametrize("name", ["email", "", "KakaoTalk", "SMS"])
def test_unknown_provider(name):
    with pytest.raises(UnknownProviderError, match="expected one of kakaotalk, sms"):
        get_provider(name)


def test_unknown_provider_is_a_key_error():
    with pytest.raises(KeyError):
        get_provider("fax")


def test_class_metadata(spec):
    name, cls, *_ = spec
    assert cls.name == name
    assert cls.key_env_var == f"MSGSEND_{name.upper()}_AUTH_PASSWORD"
    assert cls.max_body_len == {"kakaotalk": 1000, "sms": 2000}[name]


def test_repr_hides_credentials(provider, spec):
    assert spec[6] not in repr(provider)
    assert spec[2] in repr(provider)


# ---------------------------------------------------------------------- the request


def test_request(provider, spec, url, mock):
    mock.post(url, status_code=200, json={"result": "ok"})
    response = provider.send(RECIPIENT, TEXT)
    assert isinstance(response, ProviderResponse)
    assert response.status_code == 200
    assert mock.call_count == 1
    request = mock.last_request
    assert request.method == "POST"
    assert request.url == url
    recipient_field, text_field = spec[4]
    body = json.loads(request.body.decode("utf-8"))
    assert body == {recipient_field: RECIPIENT, text_field: TEXT}
    # UTF-8 on the wire, not \\uXXXX escapes
    assert TEXT.encode("utf-8") in request.body
    assert request.headers["Content-Type"].startswith("application/json")
    credentials = base64.b64encode(f"{spec[5]}:{spec[6]}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {credentials}"
    assert request.timeout == (3.0, 7.0)
    assert request.headers["User-Agent"].startswith("msgsend/")


def test_base_url_trailing_slash(spec, mock):
    _name, cls, base_url, path, *_ = spec
    client = cls(base_url + "/", "u", "p")
    try:
        mock.post(base_url + path, status_code=200)
        client.send(RECIPIENT, "hi")
        assert mock.last_request.url == base_url + path
    finally:
        client.close()


def test_base_url_with_a_path_prefix(spec, mock):
    _name, cls, _base, path, *_ = spec
    client = cls("https://api.example.com/v1", "u", "p")
    try:
        mock.post("https://api.example.com/v1" + path, status_code=200)
        client.send(RECIPIENT, "hi")
        assert mock.call_count == 1
    finally:
        client.close()


def test_build_provider_from_config(spec, mock, monkeypatch):
    name, cls, base_url, path, *_ = spec
    monkeypatch.setenv(f"MSGSEND_{name.upper()}_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv(f"MSGSEND_{name.upper()}_READ_TIMEOUT", "9.5")
    monkeypatch.setenv(f"MSGSEND_{name.upper()}_AUTH_PASSWORD", "s3cret")
    client = build_provider(load_config().provider(name), pool_size=8)
    try:
        assert type(client) is cls
        mock.post(base_url + path, status_code=202)
        client.send(RECIPIENT, TEXT)
        request = mock.last_request
        assert request.timeout == (2.0, 9.5)
        expected = base64.b64encode(b"autoever:s3cret").decode()
        assert request.headers["Authorization"] == f"Basic {expected}"
    finally:
        client.close()


def test_single_timeout_is_used_for_connect_and_read(spec, mock):
    name, _cls, base_url, path, *_ = spec
    client = build_provider(load_config().provider(name))
    try:
        mock.post(base_url + path, status_code=200)
        client.send(RECIPIENT, "hi")
        assert mock.last_request.timeout == (5.0, 5.0)
    finally:
        client.close()


@pytest.mark.parametrize("size", [1, 4, 16, 64])
def test_pool_size(spec, size):
    _name, cls, base_url, *_ = spec
    client = cls(base_url, "u", "p", pool_size=size)
    try:
        for scheme in ("http://", "https://"):
            adapter = client.session.get_adapter(scheme + "localhost")
            assert adapter._pool_maxsize >= size
    finally:
        client.close()


def test_one_session_shared_by_both_providers_keeps_each_password(mock):
    with requests.Session() as session:
        kakao = KakaoTalkProvider("http://k", "autoever", "1234", session=session)
        sms = SmsProvider("http://s", "autoever", "5678", session=session)
        mock.post("http://k/kakaotalk-messages", status_code=200)
        mock.post("http://s/sms", status_code=200)
        kakao.send(RECIPIENT, TEXT)
        sms.send(RECIPIENT, TEXT)
        kakao_request, sms_request = mock.request_history
        assert (
            kakao_request.headers["Authorization"]
            == "Basic " + base64.b64encode(b"autoever:1234").decode()
        )
        assert (
            sms_request.headers["Authorization"]
            == "Basic " + base64.b64encode(b"autoever:5678").decode()
        )


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_nor_counted_as_delivered(provider, url, mock, status):
    mock.post(url, status_code=status, headers={"Location": "http://login.example.com/"})
    mock.register_uri(requests_mock.ANY, "http://login.example.com/", text="login page")
    with pytest.raises(InvalidRequestError) as info:
        provider.send(RECIPIENT, TEXT)
    assert mock.call_count == 1
    assert info.value.status_code == status
    assert "http://login.example.com/" in str(info.value)
    assert f"[{provider.name}] base-url" in str(info.value)


def test_redirect_means_down_for_ping(provider, url, mock):
    mock.post(url, status_code=301, headers={"Location": "https://elsewhere/"})
    result = provider.ping()
    assert result.status is HealthStatus.DOWN
    assert "base-url" in result.detail
    assert mock.call_count == 1


def test_borrowed_session_is_not_closed(spec, mock):
    _name, cls, base_url, path, *_ = spec
    with requests.Session() as session:
        client = cls(base_url, "u", "p", session=session)
        assert client.session is session
        client.close()
        mock.post(base_url + path, status_code=200)
        assert session.post(base_url + path).status_code == 200


# ---------------------------------------------------------------------- SPEC §3 table

# status, headers, body, expected exception (None: success)
STATUS_TABLE = [
    (200, {}, '{"result": "ok"}', None),
    (201, {}, "{}", None),
    (202, {}, "", None),
    (204, {}, "", None),
    (200, {}, "not json at all", None),
    (400, {}, '{"error": "bad phoneNumber"}', InvalidRequestError),
    (404, {}, "", InvalidRequestError),
    (409, {}, "", InvalidRequestError),
    (422, {}, '{"error": "message required"}', InvalidRequestError),
    (401, {}, "", AuthError),
    (403, {}, "", AuthError),
    (429, {}, "", RateLimitedError),
    (429, {"Retry-After": "7"}, "", RateLimitedError),
    (500, {}, "", ServerError),
    (502, {}, "<html>Bad Gateway</html>", ServerError),
    (503, {"Retry-After": "30"}, "", ServerError),
    (504, {}, "", ServerError),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    STATUS_TABLE,
    ids=[f"{row[0]}-{i}" for i, row in enumerate(STATUS_TABLE)],
)
def test_send_status(provider, url, mock, status, headers, body, expected):
    mock.post(url, status_code=status, headers=headers, text=body)
    if expected is None:
        response = provider.send(RECIPIENT, TEXT)
        assert response.status_code == status
        assert response.body == body
    else:
        with pytest.raises(expected) as info:
            provider.send(RECIPIENT, TEXT)
        error = info.value
        assert error.status_code == status
        assert error.provider == provider.name
        assert error.body == body
    assert mock.call_count == 1  # never retried by the provider itself


# exception class: retryable, fallback, outage, uncertain (SPEC §3)
CLASSIFICATION = [
    (RateLimitedError, True, True, False, False),
    (ServerError, True, True, True, False),
    (AuthError, False, True, False, False),
    (InvalidRequestError, False, False, False, False),
    (ConnectError, True, True, True, False),
    (ReadTimeoutError, True, True, True, True),
    (ConnectionLostError, True, True, True, True),
]


@pytest.mark.parametrize(("cls", "retryable", "fallback", "outage", "uncertain"), CLASSIFICATION)
def test_outcome_classification(cls, retryable, fallback, outage, uncertain):
    assert (cls.retryable, cls.fallback, cls.outage, cls.uncertain) == (
        retryable,
        fallback,
        outage,
        uncertain,
    )


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0", 0.0), ("1.5", 1.5)])
def test_retry_after_seconds(provider, url, mock, header, expected):
    mock.post(url, status_code=429, headers={"Retry-After": header})
    with pytest.raises(RateLimitedError) as info:
        provider.send(RECIPIENT, TEXT)
    assert info.value.retry_after == expected


def test_retry_after_http_date(provider, url, mock):
    import datetime as dt

    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
    mock.post(url, status_code=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    with pytest.raises(RateLimitedError) as info:
        provider.send(RECIPIENT, TEXT)
    assert info.value.retry_after is not None
    assert 80 <= info.value.retry_after <= 91


def test_retry_after_missing(provider, url, mock):
    mock.post(url, status_code=429)
    with pytest.raises(RateLimitedError) as info:
        provider.send(RECIPIENT, TEXT)
    assert info.value.retry_after is None


def test_throttle_statuses_make_any_status_rate_limiting(spec, url, mock):
    _name, cls, base_url, *_ = spec
    client = cls(base_url, spec[5], spec[6], throttle_statuses=(429, 503))
    mock.post(url, status_code=503, headers={"X-RateLimit-Reset-After": "4"})
    with pytest.raises(RateLimitedError) as info:
        client.send(RECIPIENT, TEXT)
    assert (info.value.status_code, info.value.retry_after) == (503, 4.0)
    assert not info.value.outage
    mock.post(url, status_code=503)
    assert client.ping().status is HealthStatus.THROTTLED
    client.close()


def test_the_longest_of_several_reset_headers_wins(provider, url, mock):
    mock.post(
        url,
        status_code=429,
        headers={"Retry-After": "2", "RateLimit-Reset": "30", "X-RateLimit-Reset-After": "5"},
    )
    with pytest.raises(RateLimitedError) as info:
        provider.send(RECIPIENT, TEXT)
    assert info.value.retry_after == 30.0


def test_an_error_body_is_read_up_to_64_kib(provider, url, mock):
    mock.post(url, status_code=500, content=b"x" * (1024 * 1024))
    with pytest.raises(ServerError) as info:
        provider.send(RECIPIENT, TEXT)
    assert len(info.value.body) == 64 * 1024


# requests exception, our exception, words the message must contain
EXCEPTION_TABLE = [
    (requests.exceptions.ConnectTimeout, ConnectError, "no connection within 3 s"),
    (refused, ConnectError, "Connection refused"),
    (requests.exceptions.ReadTimeout, ReadTimeoutError, "no answer within 7 s"),
    (reset_after_sending, ConnectionLostError, "may have been delivered"),
    (requests.exceptions.SSLError, ConnectError, "cannot connect"),
    (requests.exceptions.ProxyError, ConnectError, "cannot connect"),
    (requests.exceptions.ChunkedEncodingError, TransportError, "request failed"),
]


@pytest.mark.parametrize(
    ("raised", "expected", "words"),
    EXCEPTION_TABLE,
    ids=[row[1].__name__ + "-" + str(i) for i, row in enumerate(EXCEPTION_TABLE)],
)
def test_send_transport_errors(provider, url, mock, raised, expected, words):
    mock.post(url, exc=raised())
    with pytest.raises(expected) as info:
        provider.send(RECIPIENT, TEXT)
    error = info.value
    assert type(error) is expected
    assert error.provider == provider.name
    assert error.status_code is None
    assert words in str(error)
    assert isinstance(error.__cause__, requests.exceptions.RequestException)  # raise ... from
    assert mock.call_count == 1


# ---------------------------------------------------------------------- ping

PING_STATUS_TABLE = [
    (400, HealthStatus.UP),
    (422, HealthStatus.UP),
    (200, HealthStatus.UP),
    (401, HealthStatus.AUTH_FAILED),
    (403, HealthStatus.AUTH_FAILED),
    (429, HealthStatus.THROTTLED),
    (500, HealthStatus.DOWN),
    (502, HealthStatus.DOWN),
    (503, HealthStatus.DOWN),
    (504, HealthStatus.DOWN),
    (404, HealthStatus.DOWN),
]


@pytest.mark.parametrize(("status", "health"), PING_STATUS_TABLE)
def test_ping_status(provider, url, mock, status, health):
    mock.post(url, status_code=status)
    result = provider.ping()
    assert result.provider == provider.name
    assert result.status is health
    assert result.status_code == status
    assert result.latency_ms is not None and result.latency_ms >= 0
    request = mock.last_request
    assert request.json() == {}  # nothing is delivered
    assert request.headers["Authorization"].startswith("Basic ")


def test_ping_404_hints_at_the_base_url(provider, url, mock):
    mock.post(url, status_code=404)
    result = provider.ping()
    assert result.status is HealthStatus.DOWN
    assert url in result.detail
    assert f"[{provider.name}] base-url" in result.detail


def test_ping_auth_failed_names_the_fix(provider, url, mock):
    mock.post(url, status_code=401)
    assert f"MSGSEND_{provider.name.upper()}_AUTH_PASSWORD" in provider.ping().detail


@pytest.mark.parametrize(
    "raised",
    [requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout, "refused"],
)
def test_ping_transport_errors_mean_down(provider, url, mock, raised):
    mock.post(url, exc=refused() if raised == "refused" else raised)
    result = provider.ping()
    assert result.status is HealthStatus.DOWN
    assert result.status_code is None
    assert result.detail


# ---------------------------------------------------------------------- real sockets


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OneShotServer:
    """Accept connections on 127.0.0.1 and run ``behaviour(conn)`` on each."""

    def __init__(self, behaviour) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                self.behaviour(conn, self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def _read_request(conn: socket.socket) -> None:
    conn.settimeout(1)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


def _reset(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def _silent(conn: socket.socket, stop: threading.Event) -> None:
    _read_request(conn)
    stop.wait(1)


@pytest.fixture
def real(spec) -> Iterator[Any]:
    def make(port: int, read_timeout: float = 2.0) -> Provider:
        client = spec[1](f"http://127.0.0.1:{port}", "u", "p",
                         connect_timeout=1.0, read_timeout=read_timeout)  # fmt: skip
        made.append(client)
        return client

    made: list[Provider] = []
    yield make
    for client in made:
        client.close()


def test_real_connection_refused(real):
    with pytest.raises(ConnectError, match="Connection refused"):
        real(_free_port()).send(RECIPIENT, TEXT)


def test_real_connection_refused_ping(real):
    assert real(_free_port()).ping().status is HealthStatus.DOWN


def test_real_read_timeout(real):
    server = OneShotServer(_silent)
    try:
        with pytest.raises(ReadTimeoutError):
            real(server.port, read_timeout=0.2).send(RECIPIENT, TEXT)
    finally:
        server.close()


def test_real_reset_after_sending(real):
    server = OneShotServer(_reset)
    try:
        with pytest.raises(ConnectionLostError) as info:
            real(server.port).send(RECIPIENT, TEXT)
        assert info.value.uncertain
    finally:
        server.close()


def test_provider_error_is_the_only_escape(provider, url, mock):
    """Whatever requests raises comes out as a ProviderError."""
    mock.post(url, exc=requests.exceptions.InvalidURL)
    with pytest.raises(ProviderError):
        provider.send(RECIPIENT, TEXT)
