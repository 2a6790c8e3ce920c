"""Tests for msgsend.health: the overall verdict, exit codes and the ``ping --json`` document."""

from __future__ import annotations

import json

import pytest

from fakes import FakeLimiter, FakeProvider
from msgsend.client import Sender
from msgsend.health import HealthReport, check_health
from msgsend.models import HealthStatus, ProviderHealth

UP, DOWN = HealthStatus.UP, HealthStatus.DOWN
AUTH, THROTTLED = HealthStatus.AUTH_FAILED, HealthStatus.THROTTLED


def health(name: str, status: HealthStatus, latency: float | None = 12.5) -> ProviderHealth:
    return ProviderHealth(name, status, latency, f"{name} is {status.value}")


# (kakaotalk status or None if not checked, sms status or None), overall, exit code
VERDICTS = [
    ((UP, UP), "ok", 0),
    ((UP, DOWN), "degraded", 1),
    ((DOWN, UP), "degraded", 1),
    ((AUTH, UP), "degraded", 1),
    ((UP, AUTH), "degraded", 1),
    ((UP, THROTTLED), "degraded", 1),
    ((THROTTLED, UP), "degraded", 1),
    ((THROTTLED, THROTTLED), "degraded", 1),
    ((THROTTLED, DOWN), "degraded", 1),
    ((DOWN, DOWN), "critical", 2),
    ((AUTH, AUTH), "critical", 2),
    ((DOWN, AUTH), "critical", 2),
    # one provider checked (ping --provider NAME)
    ((UP, None), "ok", 0),
    ((None, UP), "ok", 0),
    ((THROTTLED, None), "degraded", 1),
    ((None, THROTTLED), "degraded", 1),
    ((DOWN, None), "critical", 2),
    ((None, AUTH), "critical", 2),
]


@pytest.mark.parametrize(
    ("statuses", "overall", "exit_code"),
    VERDICTS,
    ids=["-".join(s.value if s else "unchecked" for s in row[0]) for row in VERDICTS],
)
def test_overall_and_exit_code(statuses, overall, exit_code):
    providers = [
        health(name, status)
        for name, status in zip(("kakaotalk", "sms"), statuses, strict=True)
        if status is not None
    ]
    report = HealthReport(providers)
    assert report.overall == overall
    assert report.exit_code == exit_code
    assert report.to_json()["overall"] == overall


def test_to_json_shape():
    report = HealthReport([health("kakaotalk", UP, 3.2), health("sms", DOWN, None)])
    document = report.to_json()
    assert json.loads(json.dumps(document)) == document  # JSON-able as is
    assert set(document) == {"providers", "overall"}
    assert list(document["providers"]) == ["kakaotalk", "sms"]
    kakao, sms = document["providers"]["kakaotalk"], document["providers"]["sms"]
    assert kakao["status"] == "up"
    assert kakao["latency_ms"] == 3.2
    assert sms["status"] == "down"
    assert sms["latency_ms"] is None
    for entry in (kakao, sms):
        assert {"status", "latency_ms"} <= set(entry)
        assert entry["status"] in {"up", "down", "auth-failed", "throttled"}
    assert document["overall"] == "degraded"


@pytest.mark.parametrize("status", list(HealthStatus))
def test_status_values_are_the_spec_words(status):
    assert status.value in {"up", "down", "auth-failed", "throttled"}


def make_sender(kakao: HealthStatus, sms: HealthStatus, limiter=None) -> tuple[Sender, dict]:
    providers = {
        "kakaotalk": FakeProvider("kakaotalk", health=health("kakaotalk", kakao)),
        "sms": FakeProvider("sms", health=health("sms", sms)),
    }
    return Sender(providers, limiter=limiter), providers  # type: ignore[arg-type]


def test_check_health_probes_every_provider():
    sender, providers = make_sender(UP, AUTH)
    report = check_health(sender)
    assert [p.provider for p in report.providers] == ["kakaotalk", "sms"]
    assert [p.status for p in report.providers] == [UP, AUTH]
    assert report.overall == "degraded"
    assert (providers["kakaotalk"].pings, providers["sms"].pings) == (1, 1)
    # a probe delivers nothing
    assert providers["kakaotalk"].calls == providers["sms"].calls == []


@pytest.mark.parametrize("name", ["kakaotalk", "sms"])
def test_check_health_of_one_provider(name):
    sender, providers = make_sender(DOWN, DOWN)
    report = check_health(sender, [name])
    assert [p.provider for p in report.providers] == [name]
    other = "sms" if name == "kakaotalk" else "kakaotalk"
    assert providers[other].pings == 0
    assert report.exit_code == 2


def test_check_health_goes_through_the_rate_limiter():
    limiter = FakeLimiter()
    sender, _ = make_sender(UP, UP, limiter=limiter)
    report = check_health(sender)
    assert sorted(limiter.acquired) == ["kakaotalk", "sms"]
    assert report.exit_code == 0


def test_probe_waits_a_short_while_for_a_slot_then_reports_throttled_without_a_request():
    from msgsend.ratelimit import Limit, RateLimiter

    kakao = FakeProvider("kakaotalk", health=health("kakaotalk", UP))
    with RateLimiter({"kakaotalk": Limit(1, 60.0)}, store="memory") as limiter:
        sender = Sender({"kakaotalk": kakao}, limiter=limiter)
        first = check_health(sender, ["kakaotalk"], slot_wait=0.2)
        second = check_health(sender, ["kakaotalk"], slot_wait=0.2)
    assert first.providers[0].status is UP
    [throttled] = second.providers
    assert throttled.status is THROTTLED and throttled.latency_ms is None
    assert "not probed" in throttled.detail and second.exit_code == 1
    assert kakao.pings == 1
