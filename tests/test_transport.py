"""Tests for msgsend.providers.transport against real misbehaving servers on 127.0.0.1.

Deadlines here are 0.5 s: the assertions allow several seconds more, so that a loaded
machine cannot fail them, while a per-read timeout (what requests alone gives) would take the
trickle's full 20 s or more. A deadline that must *not* pass (an answer is expected) is 100
times what a loopback exchange takes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from misbehaving import CERTIFICATE, MisbehavingProvider
from msgsend.errors import ConnectError, ReadTimeoutError
from msgsend.providers.transport import MAX_BODY, DeadlineAdapter, Timeouts, exchange


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=4)
        session.mount("http://", adapter)
        yield session


def post(session: requests.Session, url: str, body: bytes = b"{}") -> requests.PreparedRequest:
    return session.prepare_request(requests.Request("POST", url + "/sms", data=body))


def send(session: requests.Session, server: MisbehavingProvider, total: float = 1.0) -> object:
    return exchange(
        session,
        post(session, server.url),
        provider="sms",
        timeouts=Timeouts.of(total, total),
    )


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_a_trickling_answer_fails_at_the_whole_exchange_deadline(session, mode):
    # one byte every 0.1 s: each read is quick, the whole would take 20 s
    with MisbehavingProvider(mode, interval=0.1, trickle_bytes=200) as server:
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError, match=r"no complete answer within 0\.5 s") as info:
            send(session, server, total=0.5)
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 5.5
    assert info.value.uncertain  # sent: it may have been delivered


def test_a_silent_provider_fails_at_the_read_timeout(session):
    with MisbehavingProvider("silent") as server:
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            send(session, server, total=0.5)
        assert time.monotonic() - started < 5.0


def test_a_huge_body_is_read_up_to_64_kib_and_not_transferred(session):
    with MisbehavingProvider("huge", huge_bytes=200 * 1024 * 1024) as server:
        answer = send(session, server, total=5.0)
        assert answer.status_code == 200  # type: ignore[attr-defined]
        assert len(answer.content) == MAX_BODY  # type: ignore[attr-defined]
        assert answer.truncated  # type: ignore[attr-defined]
        time.sleep(0.2)  # let the server notice the closed connection
        assert server.bytes_written < 32 * 1024 * 1024  # socket buffers, not 200 MB


def test_a_small_body_is_read_whole(session):
    with MisbehavingProvider("ok") as server:
        answer = send(session, server)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    assert answer.json() == {"status": "ok"}  # type: ignore[attr-defined]
    assert not answer.truncated  # type: ignore[attr-defined]


def test_the_pool_recovers_after_a_deadline(session):
    with MisbehavingProvider("trickle-body", interval=0.1, trickle_bytes=100) as server:
        with pytest.raises(ReadTimeoutError):
            send(session, server, total=0.5)
        server.mode = "ok"
        for _ in range(3):
            assert send(session, server).status_code == 200  # type: ignore[attr-defined]


def test_late_deadlines_never_cut_a_reused_connection(session):
    # Quick exchanges with 0.5 s deadlines, then a slow one (0.8 s) on the same keep-alive
    # connection: the quick ones' deadlines pass while later exchanges run on that socket (the
    # last one's, at least, while the slow one reads its answer).
    with MisbehavingProvider("ok", interval=0.1, trickle_bytes=8) as server:
        for _ in range(20):
            assert send(session, server, total=0.5).status_code == 200  # type: ignore[attr-defined]
        server.mode = "trickle-body"
        slow = send(session, server, total=10.0)
        assert (slow.status_code, slow.content) == (200, b"a" * 8)  # type: ignore[attr-defined]
        server.mode = "ok"
        assert send(session, server, total=0.5).status_code == 200  # type: ignore[attr-defined]
        pools = session.get_adapter(server.url).poolmanager.pools  # type: ignore[attr-defined]
        [key] = pools.keys()
        assert pools[key].num_connections == 1  # one socket carried them all


def test_nothing_listening_is_a_connect_error(session):
    with MisbehavingProvider("ok") as server:
        url = server.url
    with pytest.raises(ConnectError):
        exchange(session, post(session, url), provider="sms", timeouts=Timeouts.of(1, 1))


def test_timeouts_default_the_total_to_the_larger_and_cap_each_part():
    assert Timeouts.of(5.0, 5.0) == Timeouts(5.0, 5.0, 5.0)
    assert Timeouts.of(3.0, 10.0) == Timeouts(3.0, 10.0, 10.0)
    assert Timeouts.of(5.0, 5.0, 2.0) == Timeouts(2.0, 2.0, 2.0)


def test_finished_exchanges_do_not_pile_up_in_the_watchdog():
    from msgsend.providers import transport

    watchdog = transport._Watchdog()
    for _ in range(5 * transport._COMPACT_EVERY):
        exchange = transport._Exchange(deadline=time.monotonic() + 3600)
        watchdog.watch(exchange)
        exchange.finish()
    assert len(watchdog._heap) <= transport._COMPACT_EVERY + 1


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_the_deadline_holds_over_tls(mode):
    # Shutting a TLS socket's descriptor under a blocked read: the read ends, no stray error.
    with (
        requests.Session() as session,
        MisbehavingProvider(mode, tls=True, interval=0.1, trickle_bytes=200) as server,
    ):
        session.trust_env = False
        session.mount("https://", DeadlineAdapter())
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError, match=r"no complete answer within 0\.5 s"):
            exchange(
                session,
                post(session, server.url),
                provider="sms",
                timeouts=Timeouts.of(0.5, 0.5),
                settings={"verify": CERTIFICATE},
            )
        assert time.monotonic() - started < 5.5
        server.mode = "ok"
        answer = exchange(
            session,
            post(session, server.url),
            provider="sms",
            timeouts=Timeouts.of(2.0, 2.0),
            settings={"verify": CERTIFICATE},
        )
        assert answer.status_code == 200
