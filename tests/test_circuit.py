"""Tests for msgsend.circuit: the per-provider breaker's state machine and thread safety."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import astuple

import pytest

from msgsend.circuit import CircuitBreaker, CircuitState
from msgsend.errors import (
    AuthError,
    CircuitOpenError,
    ConnectError,
    InvalidRequestError,
    ProviderDisabledError,
    RateLimitedError,
    ReadTimeoutError,
    ServerError,
)
from msgsend.events import Events


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def state(breaker: CircuitBreaker) -> CircuitState:
    """Read the state through a call, so that mypy does not narrow it between steps."""
    return breaker.state


def outage() -> ServerError:
    return ServerError("kakaotalk answered HTTP 503", provider="kakaotalk", status_code=503)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, CircuitState, CircuitState, str]]:
    return []


@pytest.fixture
def breaker(
    clock: FakeClock, changes: list[tuple[str, CircuitState, CircuitState, str]]
) -> CircuitBreaker:
    return CircuitBreaker(
        "kakaotalk",
        failure_threshold=3,
        reset_timeout=30.0,
        clock=clock,
        emit=lambda event: changes.append(astuple(event)),
    )


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.before_request()
        breaker.record_failure(outage())


def test_opens_after_threshold_consecutive_outage_failures(breaker, changes):
    for expected in (1, 2):
        breaker.before_request()
        breaker.record_failure(outage())
        assert state(breaker) is CircuitState.CLOSED
        assert breaker.consecutive_failures == expected
    breaker.before_request()
    breaker.record_failure(ConnectError("refused", provider="kakaotalk"))
    assert state(breaker) is CircuitState.OPEN
    assert breaker.opened_count == 1
    [(provider, old, new, reason)] = changes
    assert (provider, old, new) == ("kakaotalk", CircuitState.CLOSED, CircuitState.OPEN)
    assert "3 consecutive failures" in reason


@pytest.mark.parametrize(
    "exc",
    [
        ConnectError("refused"),
        ReadTimeoutError("read timeout"),
        ServerError("500", status_code=500),
    ],
)
def test_every_outage_kind_counts(breaker, exc):
    breaker.record_failure(exc)
    assert breaker.consecutive_failures == 1


def test_success_resets_the_count(breaker):
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    breaker.record_success()
    assert breaker.consecutive_failures == 0
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.CLOSED


@pytest.mark.parametrize(
    "exc",
    [
        RateLimitedError("429"),
        InvalidRequestError("400", status_code=400),
        ValueError("a bug, not an outage"),
    ],
)
def test_non_outage_errors_neither_count_nor_reset(breaker, exc):
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    for _ in range(5):
        breaker.record_failure(exc)
    assert breaker.consecutive_failures == 2
    assert state(breaker) is CircuitState.CLOSED
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN


def test_open_fails_fast_until_reset_timeout(breaker, clock):
    trip(breaker)
    clock.advance(29.9)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_request()
    assert info.value.provider == "kakaotalk"
    assert info.value.fallback is True
    assert "next trial in 0.1 s" in str(info.value)
    assert breaker.seconds_until_trial() == pytest.approx(0.1)


def test_half_open_admits_one_trial_then_success_closes(breaker, clock, changes):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()  # the trial
    assert state(breaker) is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError, match="trial"):
        breaker.before_request()  # the same thread again: still one trial in flight
    breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.consecutive_failures == 0
    assert [(old, new) for _, old, new, _ in changes] == [
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]
    breaker.before_request()  # closed again: everybody goes


def test_trial_failure_reopens_and_restarts_the_timer(breaker, clock, changes):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()
    breaker.record_failure(ReadTimeoutError("read timeout", provider="kakaotalk"))
    assert state(breaker) is CircuitState.OPEN
    assert breaker.opened_count == 2
    assert changes[-1][1:3] == (CircuitState.HALF_OPEN, CircuitState.OPEN)
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        breaker.before_request()
    clock.advance(1.0)
    breaker.before_request()
    assert state(breaker) is CircuitState.HALF_OPEN


@pytest.mark.parametrize(
    "exc", [RateLimitedError("429"), InvalidRequestError("400", status_code=400)]
)
def test_any_http_answer_to_the_trial_closes(breaker, clock, exc):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()
    breaker.record_failure(exc)
    assert state(breaker) is CircuitState.CLOSED


def test_trial_that_says_nothing_frees_the_slot(breaker, clock):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()
    breaker.record_failure(KeyboardInterrupt())
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.before_request()  # a new trial straight away


def test_unreported_trial_expires(breaker, clock):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()  # this trial's caller crashes and never reports
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        breaker.before_request()
    clock.advance(1.0)
    breaker.before_request()  # the permit expired: a new trial
    breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED


def test_reports_from_other_threads_do_not_decide_the_trial(breaker, clock):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()  # the main thread holds the trial
    stale = threading.Thread(target=breaker.record_success)
    stale.start()
    stale.join()
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED


def test_reports_while_open_are_ignored(breaker):
    trip(breaker)
    breaker.record_success()
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN
    assert breaker.opened_count == 1


def test_disable_is_permanent(breaker, clock, changes):
    breaker.disable("kakaotalk refused the credentials (HTTP 401)")
    for _ in range(2):
        with pytest.raises(ProviderDisabledError, match="HTTP 401"):
            breaker.before_request()
        clock.advance(3600)
    breaker.record_success()
    breaker.disable("again")  # idempotent: no second transition
    assert state(breaker) is CircuitState.DISABLED
    assert breaker.disabled_reason == "kakaotalk refused the credentials (HTTP 401)"
    assert [(old, new) for _, old, new, _ in changes] == [
        (CircuitState.CLOSED, CircuitState.DISABLED)
    ]


def test_auth_error_disables(breaker):
    breaker.before_request()
    breaker.record_failure(AuthError("401", provider="kakaotalk", status_code=401))
    assert state(breaker) is CircuitState.DISABLED
    with pytest.raises(ProviderDisabledError):
        breaker.before_request()


def test_call_wraps_a_function(breaker):
    assert breaker.call(lambda: 42) == 42

    def fail() -> None:
        raise outage()

    for _ in range(3):
        with pytest.raises(ServerError):
            breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)


def test_a_failing_listener_does_not_break_the_breaker(clock, caplog):
    def explode(event: object) -> None:
        raise RuntimeError("listener bug")

    events = Events(explode)
    breaker = CircuitBreaker("sms", failure_threshold=1, clock=clock, emit=events.emit)
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN
    assert "event listener" in caplog.text and "listener bug" in caplog.text


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        CircuitBreaker("sms", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("sms", reset_timeout=0)


def run_threads(count: int, target: Callable[[], object]) -> None:
    barrier = threading.Barrier(count)

    def worker() -> None:
        barrier.wait()
        target()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_concurrent_failures_are_all_counted(clock):
    breaker = CircuitBreaker("kakaotalk", failure_threshold=1000, clock=clock)

    def fail_many() -> None:
        for _ in range(50):
            breaker.before_request()
            breaker.record_failure(outage())

    run_threads(16, fail_many)
    assert breaker.consecutive_failures == 800
    assert state(breaker) is CircuitState.CLOSED


def test_concurrent_opening_happens_once(clock, changes):
    breaker = CircuitBreaker(
        "kakaotalk",
        failure_threshold=5,
        clock=clock,
        emit=lambda event: changes.append(astuple(event)),
    )
    run_threads(16, lambda: breaker.record_failure(outage()))
    assert state(breaker) is CircuitState.OPEN
    assert breaker.opened_count == 1
    assert len(changes) == 1


def test_concurrent_half_open_admits_exactly_one_trial(breaker, clock, changes):
    trip(breaker)
    clock.advance(30.0)
    admitted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    everyone_tried = threading.Event()

    def attempt() -> None:
        try:
            breaker.before_request()
        except CircuitOpenError:
            ok = False
        else:
            ok = True
        with lock:
            (admitted if ok else refused).append(threading.get_ident())
            if len(admitted) + len(refused) == 16:
                everyone_tried.set()
        if ok:
            # Report only once every other worker has knocked, as a slow trial would.
            everyone_tried.wait(timeout=5)
            breaker.record_success()

    run_threads(16, attempt)
    assert len(admitted) == 1
    assert len(refused) == 15
    assert state(breaker) is CircuitState.CLOSED
    assert [new for _, _, new, _ in changes].count(CircuitState.CLOSED) == 1
