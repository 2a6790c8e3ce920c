"""The limiter's lease API on a fake clock: one wait loop, several providers, timeouts."""

from __future__ import annotations

from typing import Any

import pytest

from msgsend.ratelimit import Limit, LimiterTimeout, RateLimiter
from test_ratelimit import FakeClock


def make(clock: FakeClock, **options: Any) -> RateLimiter:
    limits = {"kakaotalk": Limit(2, 10.0), "sms": Limit(1, 10.0)}
    options.setdefault("store", "memory")
    return RateLimiter(limits, clock=clock, sleep=clock.sleep, guard=0, **options)


def test_several_providers_take_the_first_listed_that_is_free() -> None:
    clock = FakeClock()
    with make(clock) as limiter:
        leases = [limiter.acquire(["kakaotalk", "sms"]) for _ in range(3)]
        assert [lease.provider for lease in leases] == ["kakaotalk", "kakaotalk", "sms"]
        assert [lease.waited for lease in leases] == [0, 0, 0]
        assert clock.sleeps == []


def test_several_providers_wait_for_whichever_frees_first() -> None:
    clock = FakeClock()
    with make(clock) as limiter:
        limiter.acquire("kakaotalk").settle()
        clock.sleep(4)
        limiter.acquire("kakaotalk").settle()
        limiter.acquire("sms").settle()
        # kakaotalk frees at 10.001 s, sms at 14.001 s: the wait ends with kakaotalk.
        lease = limiter.acquire(["sms", "kakaotalk"])
        assert lease.provider == "kakaotalk"
        assert clock.sleeps[-1] == pytest.approx(6.001)
        assert lease.waited == pytest.approx(6.001)


def test_a_timeout_that_cannot_be_met_raises_at_once_and_names_the_wait() -> None:
    clock = FakeClock()
    with make(clock) as limiter:
        limiter.acquire("sms").settle()
        with pytest.raises(LimiterTimeout) as caught:
            limiter.acquire("sms", timeout=5)
        assert caught.value.wait == pytest.approx(10.001)
        assert "sms: no rate-limit slot within 5 s (next in about 10.0 s)" in str(caught.value)
        assert clock.sleeps == []  # no point sleeping towards a deadline it cannot meet
        lease = limiter.acquire("sms", timeout=11)
        assert lease.waited == pytest.approx(10.001)


def test_a_lease_is_a_context_manager_that_settles_once() -> None:
    clock = FakeClock()
    with make(clock) as limiter:
        with limiter.acquire("sms") as lease:
            assert not lease.settled
        assert lease.settled
        lease.settle()
        lease.cancel()  # no-op after settle
        assert "settled" in repr(lease)


def test_schedule_estimates_from_the_limit() -> None:
    clock = FakeClock()
    with make(clock) as limiter:
        assert limiter.schedule("kakaotalk", 0) == 0
        assert limiter.schedule("kakaotalk", 2) == 0
        assert limiter.schedule("kakaotalk", 5) == pytest.approx(20.0)
    with make(clock, strategy="token-bucket") as limiter:
        assert limiter.schedule("kakaotalk", 5) == pytest.approx(15.0)
