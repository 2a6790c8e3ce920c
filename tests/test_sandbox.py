"""Tests for the fake KakaoTalk and SMS providers, over real loopback HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from msgsend.sandbox import (
    ProviderOptions,
    ReceivedRequest,
    Sandbox,
    SandboxOptions,
    SandboxPortError,
    format_request,
)

KAKAO_AUTH = ("autoever", "1234")
SMS_AUTH = ("autoever", "5678")
KAKAO_BODY = {"recipient": "010-1234-5678", "message": "hello"}
SMS_BODY = {"phoneNumber": "010-1234-5678", "content": "hello"}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxOptions(seed=7)) as box:
        yield box


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Sandbox, requests.Session]]:
    """One sandbox (without rate limits) and session for the many cases of a request that
    only reads the sandbox's answer: none of them changes its settings."""
    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=None), sms=ProviderOptions(rate_limit=None), seed=7
    )
    with Sandbox(options) as box, requests.Session() as s:
        yield box, s


def kakao(
    box: Sandbox, s: requests.Session, body: object = None, **kw: object
) -> requests.Response:
    kw.setdefault("auth", KAKAO_AUTH)
    payload = KAKAO_BODY if body is None else body
    return s.post(box.kakaotalk_url + "/kakaotalk-messages", json=payload, timeout=5, **kw)  # type: ignore[arg-type]


def sms(box: Sandbox, s: requests.Session, body: object = None, **kw: object) -> requests.Response:
    kw.setdefault("auth", SMS_AUTH)
    payload = SMS_BODY if body is None else body
    return s.post(box.sms_url + "/sms", json=payload, timeout=5, **kw)  # type: ignore[arg-type]


def test_both_providers_accept_their_own_fields(
    sandbox: Sandbox, session: requests.Session
) -> None:
    r1 = kakao(sandbox, session)
    r2 = sms(sandbox, session)
    assert r1.status_code == 200 and r2.status_code == 200
    assert r1.json()["status"] == "ok" and r1.json()["id"]
    assert r1.json()["id"] != r2.json()["id"]
    [k] = sandbox.delivered("kakaotalk")
    [s] = sandbox.delivered("sms")
    assert (k.recipient, k.message, k.authorized) == ("010-1234-5678", "hello", True)
    assert (s.recipient, s.message) == ("010-1234-5678", "hello")
    assert sandbox.count() == 2


def test_fields_of_the_other_provider_are_refused(
    sandbox: Sandbox, session: requests.Session
) -> None:
    assert kakao(sandbox, session, SMS_BODY).status_code == 400
    assert sms(sandbox, session, KAKAO_BODY).status_code == 400


@pytest.mark.parametrize(
    ("auth", "status"),
    [
        (None, 401),
        (("autoever", "wrong"), 401),
        (("other", "1234"), 401),
        (SMS_AUTH, 401),
        (KAKAO_AUTH, 200),
    ],
)
def test_basic_auth(
    shared: tuple[Sandbox, requests.Session], auth: tuple[str, str] | None, status: int
) -> None:
    sandbox, session = shared
    r = kakao(sandbox, session, auth=auth)
    assert r.status_code == status
    if status == 401:
        assert "Basic" in r.headers["WWW-Authenticate"]
        assert sandbox.received()[-1].authorized is False


def test_garbage_authorization_header_is_401(sandbox: Sandbox, session: requests.Session) -> None:
    r = session.post(
        sandbox.sms_url + "/sms", json=SMS_BODY, headers={"Authorization": "Basic !!!"}, timeout=5
    )
    assert r.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        "text",
        {"recipient": "010-1234-5678"},
        {"message": "hi"},
        {"recipient": "01012345678", "message": "hi"},
        {"recipient": "010-12-5678", "message": "hi"},
        {"recipient": "012-1234-5678", "message": "hi"},
        {"recipient": "010-1234-5678", "message": ""},
        {"recipient": "010-1234-5678", "message": "   "},
        {"recipient": 1012345678, "message": "hi"},
        {"recipient": "010-1234-5678", "message": 5},
    ],
)
def test_bad_bodies_are_400(shared: tuple[Sandbox, requests.Session], body: object) -> None:
    sandbox, session = shared
    r = kakao(sandbox, session, body)
    assert sandbox.received()[-1].status == 400
    assert r.status_code == 400
    assert r.json()["error"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"null"])
def test_unparsable_bodies_are_400(shared: tuple[Sandbox, requests.Session], raw: bytes) -> None:
    sandbox, session = shared
    r = session.post(sandbox.sms_url + "/sms", data=raw, auth=SMS_AUTH, timeout=5)
    assert r.status_code == 400


def test_ping_body_is_400_when_authenticated(sandbox: Sandbox, session: requests.Session) -> None:
    assert sms(sandbox, session, {}).status_code == 400
    assert sms(sandbox, session, {}, auth=None).status_code == 401


def test_unknown_path_is_404_and_get_is_405(sandbox: Sandbox, session: requests.Session) -> None:
    r = session.post(sandbox.kakaotalk_url + "/sms", json=SMS_BODY, auth=KAKAO_AUTH, timeout=5)
    assert r.status_code == 404
    r = session.get(sandbox.kakaotalk_url + "/kakaotalk-messages", timeout=5)
    assert r.status_code == 405
    assert [x.status for x in sandbox.received("kakaotalk")] == [404, 405]


def test_down_answers_503_and_recovers(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.set_down("kakaotalk", True)
    assert kakao(sandbox, session).status_code == 503
    assert kakao(sandbox, session, auth=None).status_code == 401
    assert sms(sandbox, session).status_code == 200
    sandbox.set_down("kakaotalk", False)
    assert kakao(sandbox, session).status_code == 200


def test_forced_status(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.set_status("sms", 401)
    r = sms(sandbox, session)
    assert r.status_code == 401
    assert "WWW-Authenticate" in r.headers
    sandbox.set_status("sms", 500)
    assert sms(sandbox, session).status_code == 500
    sandbox.set_status("sms", None)
    assert sms(sandbox, session).status_code == 200


def test_failure_rate_one_always_fails(session: requests.Session) -> None:
    options = SandboxOptions(kakaotalk=ProviderOptions(failure_rate=1.0))
    with Sandbox(options) as box:
        assert [kakao(box, session).status_code for _ in range(3)] == [503, 503, 503]
        assert kakao(box, session, {}).status_code == 400
        box.set_failure_rate("kakaotalk", 1.0, status=502)
        assert kakao(box, session).status_code == 502
        box.set_failure_rate("kakaotalk", 0.0)
        assert kakao(box, session).status_code == 200


def test_failure_rate_is_reproducible_with_a_seed(session: requests.Session) -> None:
    def run() -> list[int]:
        options = SandboxOptions(sms=ProviderOptions(failure_rate=0.5), seed=42)
        with Sandbox(options) as box:
            return [sms(box, session).status_code for _ in range(10)]

    first = run()
    assert first == run()
    assert set(first) == {200, 503}


def test_fail_suffix_and_recipients_affect_only_kakaotalk(session: requests.Session) -> None:
    options = SandboxOptions(
        kakaotalk_fail_suffixes=("0000",),
        kakaotalk_fail_recipients=frozenset({"010-2222-3333"}),
    )
    with Sandbox(options) as box:
        for number in ("010-1234-0000", "010-2222-3333"):
            assert kakao(box, session, {"recipient": number, "message": "m"}).status_code == 503
            assert sms(box, session, {"phoneNumber": number, "content": "m"}).status_code == 200
        assert (
            kakao(box, session, {"recipient": "010-1234-0001", "message": "m"}).status_code == 200
        )
        box.set_kakaotalk_failures(suffixes=("0001",), status=500)
        assert (
            kakao(box, session, {"recipient": "010-1234-0001", "message": "m"}).status_code == 500
        )
        assert (
            kakao(box, session, {"recipient": "010-1234-0000", "message": "m"}).status_code == 200
        )


def test_rate_limit_429_with_retry_after_then_recovers(session: requests.Session) -> None:
    # A period of 1 s: the seven requests below fit in it even on a loaded machine.
    options = SandboxOptions(sms=ProviderOptions(rate_limit=5, rate_period=1.0))
    with Sandbox(options) as box:
        assert [sms(box, session).status_code for _ in range(5)] == [200] * 5
        r = sms(box, session)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]
        assert sms(box, session, {}).status_code == 429
        assert box.count("sms", status=429) == 2
        # the first request leaves the window one period after it arrived (sandbox's clock)
        time.sleep(max(0.0, box.received("sms")[0].monotonic + 1.0 - time.monotonic()) + 0.02)
        assert sms(box, session).status_code == 200


def test_rate_limit_counts_pings_and_retry_after_rounds_up(session: requests.Session) -> None:
    options = SandboxOptions(kakaotalk=ProviderOptions(rate_limit=2, rate_period=2.5))
    with Sandbox(options) as box:
        assert kakao(box, session, {}).status_code == 400
        assert kakao(box, session).status_code == 200
        r = kakao(box, session)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "3"
        box.set_rate_limit("kakaotalk", None)
        assert kakao(box, session).status_code == 200


def test_default_rate_limits_follow_the_spec(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.set_rate_limit("kakaotalk", 1, period=60)
    assert kakao(sandbox, session).status_code == 200
    assert kakao(sandbox, session).status_code == 429
    sandbox.reset()
    assert kakao(sandbox, session).status_code == 200
    assert ProviderOptions().rate_limit == "default"
    with Sandbox() as box:
        assert box._providers["kakaotalk"].rate_limit == 100
        assert box._providers["sms"].rate_limit == 500


def test_latency_is_applied(sandbox: Sandbox, session: requests.Session) -> None:
    sandbox.set_latency("sms", 100)
    start = time.monotonic()
    assert sms(sandbox, session).status_code == 200
    assert time.monotonic() - start >= 0.09


def test_latency_does_not_serialise_requests(session: requests.Session) -> None:
    options = SandboxOptions(kakaotalk=ProviderOptions(latency_ms=200, rate_limit=None))
    with Sandbox(options) as box, ThreadPoolExecutor(8) as pool:
        start = time.monotonic()
        futures = [
            pool.submit(
                requests.post,
                box.kakaotalk_url + "/kakaotalk-messages",
                json=KAKAO_BODY,
                auth=KAKAO_AUTH,
                timeout=5,
            )
            for _ in range(8)
        ]
        assert all(f.result().status_code == 200 for f in futures)
        assert time.monotonic() - start < 1.2


def test_stop_refuses_connections_and_start_provider_restores(
    sandbox: Sandbox, session: requests.Session
) -> None:
    assert kakao(sandbox, session).status_code == 200  # leaves a keep-alive connection open
    port = sandbox.ports["kakaotalk"]
    sandbox.stop("kakaotalk")
    assert not sandbox.running("kakaotalk")
    assert sandbox.ports["kakaotalk"] == port
    with pytest.raises(requests.ConnectionError):
        kakao(sandbox, session)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    assert sms(sandbox, session).status_code == 200
    sandbox.start_provider("kakaotalk")
    assert sandbox.ports["kakaotalk"] == port
    assert kakao(sandbox, session).status_code == 200


def test_port_in_use_is_a_clear_error() -> None:
    with Sandbox() as first:
        taken = first.ports["sms"]
        box = Sandbox(sms_port=taken)
        with pytest.raises(SandboxPortError, match=f"sms sandbox on 127.0.0.1:{taken}") as info:
            box.start()
        assert isinstance(info.value, OSError)
        assert not box.running("kakaotalk")  # the half-started sandbox was rolled back
        box.close()


def test_close_is_idempotent_and_drops_idle_connections(session: requests.Session) -> None:
    box = Sandbox().start()
    assert kakao(box, session).status_code == 200
    box.close()
    box.close()
    assert not box.running("kakaotalk") and not box.running("sms")


def test_close_interrupts_latency(session: requests.Session) -> None:
    options = SandboxOptions(sms=ProviderOptions(latency_ms=5000))
    box = Sandbox(options).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            sms(box, session)
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.1)
    start = time.monotonic()
    box.close()
    thread.join(5)
    assert time.monotonic() - start < 1.5
    assert len(errors) == 1


def test_concurrent_requests_recorded_exactly_once() -> None:
    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=None), sms=ProviderOptions(rate_limit=None)
    )

    def worker(box: Sandbox, index: int) -> list[int]:
        with requests.Session() as s:
            return [
                kakao(box, s, {"recipient": f"010-{index:04d}-{n:04d}", "message": "m"}).status_code
                for n in range(10)
            ]

    with Sandbox(options) as box, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: worker(box, i), range(8)))
        assert all(code == 200 for codes in results for code in codes)
        recipients = [r.recipient for r in box.delivered("kakaotalk")]
        assert len(recipients) == 80 == len(set(recipients))
        assert box.count("sms") == 0


def test_keep_alive_reuses_one_connection(sandbox: Sandbox, session: requests.Session) -> None:
    ports: set[int] = set()
    for _ in range(10):
        r = session.post(
            sandbox.sms_url + "/sms", json=SMS_BODY, auth=SMS_AUTH, timeout=5, stream=True
        )
        ports.add(r.raw.connection.sock.getsockname()[1])
        assert r.status_code == 200
        assert r.json()["status"] == "ok"  # reads the body, so the connection goes back to the pool
    assert len(ports) == 1
    assert sandbox.count("sms", status=200) == 10


def test_on_request_callback_and_format(session: requests.Session) -> None:
    seen: list[ReceivedRequest] = []
    with Sandbox(on_request=seen.append) as box:
        kakao(box, session, {"recipient": "010-1234-5678", "message": "안녕"})
        kakao(box, session, auth=None)
    assert [r.status for r in seen] == [200, 401]
    line = format_request(seen[0])
    assert "\n" not in line
    assert "kakaotalk" in line and "200" in line and "010-1234-5678" in line and "안녕" in line
    assert "unauthorized" in format_request(seen[1])


def test_on_request_callback_errors_do_not_break_answers(
    session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(r: ReceivedRequest) -> None:
        raise RuntimeError("boom")

    with Sandbox(on_request=boom) as box:
        assert sms(box, session).status_code == 200
    assert "callback failed" in caplog.text


def test_received_filters_and_reset(sandbox: Sandbox, session: requests.Session) -> None:
    kakao(sandbox, session)
    kakao(sandbox, session, {})
    sms(sandbox, session)
    assert sandbox.count() == 3
    assert sandbox.count("kakaotalk") == 2
    assert sandbox.count(status=400) == 1
    assert len(sandbox.delivered()) == 2
    first, second = sandbox.received()[:2]
    assert first.monotonic <= second.monotonic and first.at > 0
    sandbox.reset()
    assert sandbox.received() == []
    with pytest.raises(ValueError, match="unknown provider"):
        sandbox.received("email")


def test_invalid_options_are_refused() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        ProviderOptions(failure_rate=1.5)
    with pytest.raises(ValueError, match="rate_limit"):
        ProviderOptions(rate_limit=0)
    with pytest.raises(ValueError, match="status"):
        ProviderOptions(status=42)
    # without a digit a suffix matched every number: KakaoTalk failed them all
    for suffix in ("abc", "", "00a0"):
        with pytest.raises(ValueError, match="fail suffix is a number's last digits"):
            SandboxOptions(kakaotalk_fail_suffixes=(suffix,))
    assert SandboxOptions(kakaotalk_fail_suffixes=("0000", "12-34")).kakaotalk_fail_suffixes


def test_what_the_sandbox_prints_has_control_characters_escaped() -> None:
    """Anyone can post to the sandbox: its terminal line never carries raw control characters."""
    from msgsend.sandbox import ReceivedRequest, format_request

    seen = ReceivedRequest(
        provider="sms",
        at=0.0,
        monotonic=0.0,
        status=400,
        recipient="010\x1b[2J",
        message="hi\u202eexe",
        authorized=True,
    )
    line = format_request(seen)
    assert all(ch.isprintable() for ch in line)
    assert "010\\x1b[2J" in line and "\\u202e" in line
