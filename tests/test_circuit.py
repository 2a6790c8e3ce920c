"""Tests for msgsend.circuit: the per-provider breaker's state machine and thread safety."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import astuple

import pytest

from msgsend import errors
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
    # A window of three messages that opens when all three failed: three failed messages in
    # a row, the simplest case of the rate rule, for the state-machine tests.
    return CircuitBreaker(
        "kakaotalk",
        window_size=3,
        minimum_calls=3,
        failure_rate_threshold=1.0,
        reset_timeout=30.0,
        clock=clock,
        emit=lambda event: changes.append(astuple(event)),
    )


def in_a_row(count: int, **kwargs: object) -> CircuitBreaker:
    """A breaker that opens after ``count`` failed messages in a row."""
    return CircuitBreaker(
        "kakaotalk",
        window_size=count,
        minimum_calls=count,
        failure_rate_threshold=1.0,
        **kwargs,  # type: ignore[arg-type]
    )


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.minimum_calls):
        breaker.before_request()
        breaker.record_failure(outage())


def test_opens_when_the_window_is_all_failures(breaker, changes):
    for expected in (1, 2):
        breaker.before_request()
        breaker.record_failure(outage())
        assert state(breaker) is CircuitState.CLOSED
        assert breaker.failures == expected
    breaker.before_request()
    breaker.record_failure(ConnectError("refused", provider="kakaotalk"))
    assert state(breaker) is CircuitState.OPEN
    assert breaker.opened_count == 1
    [(provider, old, new, reason)] = changes
    assert (provider, old, new) == ("kakaotalk", CircuitState.CLOSED, CircuitState.OPEN)
    assert "3 of the last 3 messages failed (100%)" in reason
    assert "refused" in reason


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
    assert (breaker.failures, breaker.calls) == (1, 1)


def test_a_success_in_the_window_keeps_it_closed(breaker):
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    breaker.record_success()
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.CLOSED
    assert (breaker.failures, breaker.calls) == (2, 3)  # the oldest slid out
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN


@pytest.mark.parametrize(
    "exc", [RateLimitedError("429"), ValueError("a bug, not an outage"), KeyboardInterrupt()]
)
def test_throttling_and_foreign_errors_are_not_recorded(breaker, exc):
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    for _ in range(5):
        breaker.record_failure(exc)
    assert (breaker.failures, breaker.calls) == (2, 2)
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN


def test_an_invalid_request_answer_counts_as_the_provider_being_up(breaker):
    breaker.record_failure(outage())
    breaker.record_failure(outage())
    breaker.record_failure(InvalidRequestError("400", status_code=400))
    assert (breaker.failures, breaker.calls) == (2, 3)
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.CLOSED


def test_a_message_counts_once_from_its_first_failure(breaker):
    first, second = object(), object()
    for message in (first, second):  # two messages of three failed attempts each
        for _ in range(3):
            breaker.record_failure(outage(), message=message)
            assert breaker.failures == (1 if message is first else 2)
    assert (breaker.failures, breaker.calls) == (2, 2)
    assert state(breaker) is CircuitState.CLOSED


def test_a_message_that_gets_through_on_a_retry_is_a_success(breaker):
    flaky = object()
    breaker.record_failure(outage(), message=flaky)
    breaker.record_failure(outage(), message=flaky)
    breaker.record_success(message=flaky)
    assert (breaker.failures, breaker.calls) == (0, 1)
    for _ in range(2):
        breaker.record_failure(outage(), message=object())
    assert state(breaker) is CircuitState.CLOSED  # the flaky one holds the window open


def test_uncounted_failures_stay_out_of_the_window(breaker):
    for _ in range(5):
        breaker.record_failure(outage(), message=object(), count=False)
    assert (breaker.failures, breaker.calls, state(breaker)) == (0, 0, CircuitState.CLOSED)


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
    assert (breaker.failures, breaker.calls) == (0, 0)  # a fresh window
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


def answered(status: int) -> ServerError:
    return ServerError(f"HTTP {status}", provider="kakaotalk", status_code=status)


@pytest.mark.parametrize(("status", "opens"), [(502, True), (503, True), (500, False)])
def test_a_trial_answered_500_decides_nothing_alone(breaker, clock, status, opens):
    trip(breaker)
    clock.advance(30.0)
    breaker.before_request()
    breaker.record_failure(answered(status))
    expected = CircuitState.OPEN if opens else CircuitState.HALF_OPEN
    assert state(breaker) is expected


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (None, CircuitState.CLOSED),  # a healthy number got through
        (InvalidRequestError("400", status_code=400), CircuitState.CLOSED),
        (answered(500), CircuitState.HALF_OPEN),  # another refused number: a third decides
        (ConnectError("refused", provider="kakaotalk"), CircuitState.OPEN),
    ],
)
def test_after_a_500_trial_a_second_message_decides(breaker, clock, changes, second, expected):
    trip(breaker)
    clock.advance(30.0)
    suspect, other = object(), object()
    breaker.before_request(message=suspect)
    breaker.record_failure(answered(500), message=suspect)
    # The suspect's own retries go through without being the trial, and decide nothing.
    breaker.before_request(message=suspect)
    breaker.record_failure(answered(500), message=suspect)
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.before_request(message=other)
    if second is None:
        breaker.record_success(message=other)
    else:
        breaker.record_failure(second, message=other)
    assert state(breaker) is expected
    # No closed/open flapping while undecided: at most one transition after the half-open.
    states = [change[2] for change in changes]
    settled = [] if expected is CircuitState.HALF_OPEN else [expected]
    assert states[-1 - len(settled) :] == [CircuitState.HALF_OPEN, *settled]


def refuse_trials(breaker: CircuitBreaker, count: int) -> None:
    """``count`` different messages, each a half-open trial answered 500."""
    for _ in range(count):
        message = object()
        breaker.before_request(message=message)
        breaker.record_failure(answered(500), message=message)


def test_minimum_calls_messages_refused_in_a_row_reopen_and_a_healthy_one_closes(breaker, clock):
    # The fixture's minimum_calls is 3: three different messages answered 500 in a row are
    # the evidence that opened it from closed; fewer, then a healthy number, close it.
    trip(breaker)
    clock.advance(30.0)
    refuse_trials(breaker, 2)
    assert state(breaker) is CircuitState.HALF_OPEN
    refuse_trials(breaker, 1)
    assert state(breaker) is CircuitState.OPEN
    clock.advance(30.0)
    refuse_trials(breaker, 2)
    healthy = object()
    breaker.before_request(message=healthy)
    breaker.record_success(message=healthy)
    assert state(breaker) is CircuitState.CLOSED


def test_a_provider_answering_500_to_everything_costs_minimum_calls_messages_per_reset(clock):
    # The outage case: the circuit reopens after minimum_calls different messages answered
    # 500 in a row, the evidence that opened it from closed; never more per reset_timeout.
    breaker = CircuitBreaker("kakaotalk", reset_timeout=30.0, clock=clock)
    sent = 0
    for _ in range(10):  # ten reset periods of messages that all meet a 500
        for _ in range(50):
            message = object()
            try:
                breaker.before_request(message=message)
            except CircuitOpenError:
                continue
            sent += 1
            breaker.record_failure(answered(500), message=message)
        clock.advance(30.0)
    assert breaker.minimum_calls == 10
    assert sent == 10 + 9 * 10  # the first window, then ten trial messages per reset
    assert state(breaker) is CircuitState.OPEN


def test_a_refused_number_as_every_first_trial_does_not_keep_the_circuit_open(breaker, clock):
    # A waiting row the provider refuses comes back as the first trial of each half-open.
    trip(breaker)
    refused = object()
    clock.advance(30.0)
    breaker.before_request(message=refused)
    breaker.record_failure(answered(500), message=refused)
    healthy = object()
    breaker.before_request(message=healthy)
    breaker.record_success(message=healthy)
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
    breaker = in_a_row(1, clock=clock, emit=events.emit)
    breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN
    assert "event listener" in caplog.text and "listener bug" in caplog.text


@pytest.mark.parametrize(
    "settings",
    [
        {"window_size": 0},
        {"minimum_calls": 0},
        {"window_size": 5, "minimum_calls": 6},
        {"failure_rate_threshold": 0.0},
        {"failure_rate_threshold": 1.5},
        {"reset_timeout": 0},
    ],
)
def test_rejects_bad_settings(settings):
    with pytest.raises(ValueError):
        CircuitBreaker("sms", **settings)


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
    breaker = in_a_row(1000, clock=clock)

    def fail_many() -> None:
        for _ in range(50):
            breaker.before_request()
            breaker.record_failure(outage())

    run_threads(16, fail_many)
    assert (breaker.failures, breaker.calls) == (800, 800)
    assert state(breaker) is CircuitState.CLOSED


def test_concurrent_opening_happens_once(clock, changes):
    breaker = in_a_row(5, clock=clock, emit=lambda event: changes.append(astuple(event)))
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


# -- the failure-rate rule with the default settings (issue #13 point 2) -----------------


def defaults(clock: FakeClock) -> CircuitBreaker:
    """The breaker of a default configuration: 20 messages, at least 10, half failed."""
    return CircuitBreaker("kakaotalk", clock=clock)


def test_the_defaults_are_a_window_of_20_messages_half_failed():
    breaker = CircuitBreaker("kakaotalk")
    assert (breaker.window_size, breaker.minimum_calls, breaker.failure_rate_threshold) == (
        20,
        10,
        0.5,
    )
    assert breaker.reset_timeout == 30.0


def test_an_outage_from_the_start_opens_at_the_tenth_message(clock):
    breaker = defaults(clock)
    for sent in range(1, 11):
        assert state(breaker) is CircuitState.CLOSED, sent
        breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN
    assert breaker.failure_rate is None  # the window starts afresh


def test_an_outage_after_a_full_window_of_successes_opens_within_ten_messages(clock):
    breaker = defaults(clock)
    for _ in range(500):
        breaker.record_success()
    failed = 0
    while state(breaker) is CircuitState.CLOSED:
        breaker.record_failure(outage())
        failed += 1
    assert failed == 10


@pytest.mark.parametrize("every", [10, 11, 17])
def test_recipient_failures_mixed_among_successes_never_open(clock, every):
    breaker = defaults(clock)
    for n in range(5000):
        if n % every == 0:
            breaker.record_failure(outage())
        else:
            breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.opened_count == 0


def test_random_recipient_failures_at_ten_percent_never_open(clock):
    import random

    rng = random.Random(13)
    breaker = defaults(clock)
    for _ in range(20_000):
        if rng.random() < 0.10:
            breaker.record_failure(outage())
        else:
            breaker.record_success()
    assert breaker.opened_count == 0


def test_failed_recipients_first_below_the_rate_do_not_open(clock):
    breaker = defaults(clock)
    for _ in range(4):  # the first four messages go to numbers the provider refuses
        breaker.record_failure(outage())
    for _ in range(100):
        breaker.record_success()
    assert breaker.opened_count == 0


def test_a_partial_outage_at_the_threshold_opens(clock):
    breaker = defaults(clock)
    for n in range(20):
        if n % 2:
            breaker.record_failure(outage())
        else:
            breaker.record_success()
    assert state(breaker) is CircuitState.OPEN
    assert breaker.opened_count == 1


def test_the_ambiguous_start_opens_then_the_trial_closes_it(clock):
    # Ten refused recipients first look like an outage; the trial after reset-timeout is a
    # healthy message, and the circuit closes with an empty window.
    breaker = defaults(clock)
    for _ in range(10):
        breaker.record_failure(outage())
    assert state(breaker) is CircuitState.OPEN
    assert breaker.available_in() == pytest.approx(30.0)
    clock.advance(30.0)
    assert breaker.available_in() == 0.0
    breaker.before_request()
    breaker.record_success()
    assert state(breaker) is CircuitState.CLOSED
    assert (breaker.failures, breaker.calls) == (0, 0)


# -- what a waiting caller needs: when the provider can be tried again ---------------------


def test_available_in_follows_the_state(breaker, clock):
    assert breaker.available_in() == 0.0
    trip(breaker)
    clock.advance(10.0)
    assert breaker.available_in() == pytest.approx(20.0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_request()
    assert info.value.available_in == pytest.approx(20.0)
    clock.advance(20.0)
    breaker.before_request()  # the trial, in flight
    with pytest.raises(CircuitOpenError) as info:
        breaker.before_request()
    assert info.value.available_in == pytest.approx(30.0)  # the trial expires by then
    assert breaker.available_in() == pytest.approx(30.0)
    breaker.disable("401")
    assert breaker.available_in() == float("inf")


def test_a_pause_refuses_requests_until_it_ends(breaker, clock, changes):
    breaker.pause(90.0, "it asked to wait 90 s")
    assert changes == [("kakaotalk", 90.0, "it asked to wait 90 s")]  # a ProviderPaused event
    with pytest.raises(errors.ProviderPausedError) as info:
        breaker.before_request()
    assert info.value.available_in == pytest.approx(90.0)
    assert info.value.fallback is True
    assert "90 s" in str(info.value)
    assert breaker.paused_for() == pytest.approx(90.0)
    assert breaker.available_in() == pytest.approx(90.0)
    assert state(breaker) is CircuitState.CLOSED  # a pause is not an outage
    breaker.pause(10.0, "a shorter one does not shorten it")
    clock.advance(89.0)
    with pytest.raises(errors.ProviderPausedError):
        breaker.before_request()
    clock.advance(1.0)
    breaker.before_request()
    assert breaker.paused_for() == 0.0


def test_a_pause_on_an_open_circuit_lasts_the_longer_of_both(breaker, clock):
    trip(breaker)
    breaker.pause(100.0, "Retry-After")
    assert breaker.available_in() == pytest.approx(100.0)
    clock.advance(30.0)
    with pytest.raises(errors.ProviderPausedError):
        breaker.before_request()
