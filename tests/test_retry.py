"""Tests for msgsend.retry: the backoff sequence, Retry-After and the attempt loop."""

from __future__ import annotations

import dataclasses

import pytest

from fakes import (
    FakeSleep,
    auth_error,
    connect_error,
    connection_lost,
    invalid_request,
    rate_limited,
    read_timeout,
    server_error,
)
from msgsend.errors import CircuitOpenError, MsgsendError, ProviderDisabledError
from msgsend.retry import RetryPolicy, call_with_retry


def test_defaults_are_the_seed_values():
    policy = RetryPolicy()
    assert (policy.total, policy.backoff_factor, policy.multiplier, policy.backoff_max) == (
        3,
        1.0,
        2.0,
        30.0,
    )
    assert policy.backoff_jitter == 0.0
    assert policy.respect_retry_after


def test_policy_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().total = 5  # type: ignore[misc]


def test_from_config():
    policy = RetryPolicy.from_config(5, 0.5, 3.0, 10.0)
    assert policy == RetryPolicy(total=5, backoff_factor=0.5, multiplier=3.0, backoff_max=10.0)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(), [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]),
        (RetryPolicy(backoff_max=3.0), [1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]),
        (RetryPolicy(backoff_factor=0.5, multiplier=3.0), [0.5, 1.5, 4.5, 13.5, 30.0, 30.0, 30.0]),
        (RetryPolicy(multiplier=1.0), [1.0] * 7),
        (RetryPolicy(backoff_factor=0.0), [0.0] * 7),
    ],
)
def test_wait_sequence(policy, expected):
    assert [policy.wait_for(n, server_error()) for n in range(1, 8)] == expected


def test_jitter_adds_at_most_the_jitter():
    policy = RetryPolicy(backoff_jitter=0.5)
    for _ in range(50):
        assert 1.0 <= policy.backoff_for(1) <= 1.5


@pytest.mark.parametrize(
    ("retry_after", "retry_number", "expected"),
    [
        (None, 1, 1.0),
        (5.0, 1, 5.0),  # longer wins
        (0.5, 1, 1.0),  # shorter does not
        (0.0, 2, 2.0),
        (2.0, 2, 2.0),
        (3.0, 2, 3.0),
        (120.0, 3, 120.0),  # may exceed backoff_max: the provider said so
    ],
)
def test_retry_after(retry_after, retry_number, expected):
    error = rate_limited(retry_after=retry_after)
    assert RetryPolicy().wait_for(retry_number, error) == expected


def test_retry_after_ignored_when_not_respected():
    policy = RetryPolicy(respect_retry_after=False)
    assert policy.wait_for(1, rate_limited(retry_after=60.0)) == 1.0


def test_retry_after_only_from_rate_limited_errors():
    error = server_error()
    error.retry_after = 60.0  # type: ignore[attr-defined]
    assert RetryPolicy().wait_for(1, error) == 1.0


# ---------------------------------------------------------------------- call_with_retry


class Attempts:
    """An attempt function that raises the queued outcomes, then returns "ok"."""

    def __init__(self, *outcomes: BaseException) -> None:
        self.outcomes = list(outcomes)
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        if self.outcomes:
            raise self.outcomes.pop(0)
        return "ok"


def test_success_first_time_does_not_wait():
    sleep = FakeSleep()
    attempt = Attempts()
    assert call_with_retry(attempt, RetryPolicy(), wait=sleep) == "ok"
    assert attempt.count == 1
    assert sleep.waits == []


@pytest.mark.parametrize(
    "make_error", [connect_error, read_timeout, connection_lost, rate_limited, server_error]
)
def test_retryable_errors_use_every_attempt(make_error):
    sleep = FakeSleep()
    errors = [make_error() for _ in range(3)]
    attempt = Attempts(*errors)
    with pytest.raises(type(errors[0])) as info:
        call_with_retry(attempt, RetryPolicy(), wait=sleep)
    assert info.value is errors[-1]  # the last error, unchanged
    assert attempt.count == 3
    assert sleep.waits == [1.0, 2.0]


@pytest.mark.parametrize("total", [1, 2, 3, 5])
def test_total_counts_every_attempt(total):
    sleep = FakeSleep()
    attempt = Attempts(*[server_error() for _ in range(10)])
    with pytest.raises(MsgsendError):
        call_with_retry(attempt, RetryPolicy(total=total), wait=sleep)
    assert attempt.count == total
    assert sleep.waits == [1.0, 2.0, 4.0, 8.0][: total - 1]


def test_total_zero_still_makes_one_attempt():
    attempt = Attempts(server_error())
    with pytest.raises(MsgsendError):
        call_with_retry(attempt, RetryPolicy(total=0), wait=FakeSleep())
    assert attempt.count == 1


def test_recovers_after_transient_errors():
    sleep = FakeSleep()
    attempt = Attempts(connect_error(), server_error(status_code=502))
    assert call_with_retry(attempt, RetryPolicy(), wait=sleep) == "ok"
    assert attempt.count == 3
    assert sleep.waits == [1.0, 2.0]


@pytest.mark.parametrize(
    "error",
    [
        auth_error(status_code=401),
        auth_error(status_code=403),
        invalid_request(status_code=400),
        invalid_request(status_code=422),
        CircuitOpenError("open", provider="kakaotalk"),
        ProviderDisabledError("disabled", provider="kakaotalk"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_non_retryable_errors_raise_at_once(error):
    sleep = FakeSleep()
    attempt = Attempts(error)
    with pytest.raises(type(error)) as info:
        call_with_retry(attempt, RetryPolicy(), wait=sleep)
    assert info.value is error
    assert attempt.count == 1
    assert sleep.waits == []


def test_foreign_exceptions_are_not_retried():
    attempt = Attempts(ValueError("bug"))
    with pytest.raises(ValueError):
        call_with_retry(attempt, RetryPolicy(), wait=FakeSleep())
    assert attempt.count == 1


def test_retry_after_in_the_loop():
    sleep = FakeSleep()
    attempt = Attempts(rate_limited(retry_after=5.0), rate_limited(retry_after=0.5))
    assert call_with_retry(attempt, RetryPolicy(), wait=sleep) == "ok"
    assert sleep.waits == [5.0, 2.0]


def test_on_retry_sees_number_delay_and_error():
    seen = []
    errors = [server_error(), rate_limited(retry_after=7.0)]
    attempt = Attempts(*errors)
    call_with_retry(
        attempt,
        RetryPolicy(),
        wait=FakeSleep(),
        on_retry=lambda n, delay, exc: seen.append((n, delay, exc)),
    )
    assert seen == [(1, 1.0, errors[0]), (2, 7.0, errors[1])]


def test_zero_waits_are_not_slept():
    sleep = FakeSleep()
    attempt = Attempts(server_error(), server_error())
    call_with_retry(attempt, RetryPolicy(backoff_factor=0.0), wait=sleep)
    assert attempt.count == 3
    assert sleep.waits == []


def test_policy_is_reusable_across_calls():
    policy = RetryPolicy()
    for _ in range(2):
        sleep = FakeSleep()
        attempt = Attempts(server_error(), server_error())
        call_with_retry(attempt, policy, wait=sleep)
        assert sleep.waits == [1.0, 2.0]


# -- max-retry-after: a Retry-After longer than the cap is not slept (issue #13 point 4) --


def test_a_retry_after_longer_than_the_cap_is_not_retried():
    sleep = FakeSleep()
    error = rate_limited(retry_after=999999999.0)
    attempt = Attempts(error)
    with pytest.raises(type(error)) as info:
        call_with_retry(attempt, RetryPolicy(max_retry_after=60.0), wait=sleep)
    assert info.value is error
    assert attempt.count == 1
    assert sleep.waits == []


def test_a_retry_after_up_to_the_cap_is_waited_for():
    sleep = FakeSleep()
    attempt = Attempts(rate_limited(retry_after=60.0))
    assert call_with_retry(attempt, RetryPolicy(max_retry_after=60.0), wait=sleep) == "ok"
    assert sleep.waits == [60.0]


@pytest.mark.parametrize(
    ("error", "attempts", "expected"),
    [
        (server_error(), 1, True),
        (server_error(), 3, False),  # the last of total = 3
        (rate_limited(retry_after=5.0), 1, True),
        (rate_limited(retry_after=61.0), 1, False),
        (rate_limited(retry_after=None), 1, True),
        (invalid_request(status_code=400), 1, False),
    ],
)
def test_should_retry(error, attempts, expected):
    assert RetryPolicy(max_retry_after=60.0).should_retry(error, attempts) is expected


def test_the_cap_does_not_apply_when_retry_after_is_not_respected():
    policy = RetryPolicy(respect_retry_after=False, max_retry_after=1.0)
    assert not policy.too_long(rate_limited(retry_after=3600.0))
    assert policy.should_retry(rate_limited(retry_after=3600.0), 1)
