"""The limiter's lease API on a fake clock: one wait loop, several providers, timeouts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from msgsend.ratelimit import (
    STORES,
    Limit,
    LimiterError,
    LimiterTimeout,
    LimiterUnavailableError,
    RateLimiter,
)
from msgsend.ratelimit.sqlite import FileLock
from test_ratelimit import (  # noqa: F401 - fixtures
    FakeClock,
    _state_home,
    redis_server,
    redis_url,
    store_options,
)


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


# --- hold until the answer, in every store -----------------------------------------------------


def lease_limiter(
    store: str, strategy: str, limit: Limit, clock: FakeClock, tmp_path: Path, request: Any
) -> RateLimiter:
    return RateLimiter(
        {"p": limit},
        strategy=strategy,
        store=store,
        clock=clock,
        sleep=clock.sleep,
        guard=0,
        hold=10.0,
        **store_options(store, tmp_path, request),
    )


def wait_now(limiter: RateLimiter) -> float:
    """0 when a slot is free now (taken and cancelled again), else the seconds to wait."""
    try:
        lease = limiter.acquire("p", timeout=0)
    except LimiterTimeout as exc:
        return round(exc.wait, 6)
    lease.cancel()
    return 0


@pytest.mark.parametrize("store", STORES)
def test_a_held_slot_counts_until_the_answer_and_one_window_after(
    store: str, tmp_path: Path, request: Any
) -> None:
    clock = FakeClock()
    with lease_limiter(store, "sliding-window", Limit(1, 1.0), clock, tmp_path, request) as lim:
        clock.at(0)
        lease = lim.acquire("p")
        clock.at(5000)  # the provider has not answered in 5 s: the slot is still taken
        assert wait_now(lim) == 1.001  # at best it is settled now and counts one window more
        lease.settle()  # re-stamped: counted from 5000, not from 0
        clock.at(6000)
        assert wait_now(lim) == 0.001
        clock.at(6001)
        assert wait_now(lim) == 0


@pytest.mark.parametrize("store", STORES)
def test_a_lease_never_settled_is_released_at_its_deadline(
    store: str, tmp_path: Path, request: Any
) -> None:
    clock = FakeClock()
    with lease_limiter(store, "sliding-window", Limit(1, 1.0), clock, tmp_path, request) as lim:
        clock.at(0)
        lim.acquire("p")  # its process "dies": never settled
        clock.at(10_999)
        assert wait_now(lim) == 0.002  # counted from its deadline (10 s): conservative
        clock.at(11_001)
        assert wait_now(lim) == 0  # and never leaked


@pytest.mark.parametrize("store", STORES)
def test_a_settle_after_the_deadline_counts_again_from_the_settle(
    store: str, tmp_path: Path, request: Any
) -> None:
    clock = FakeClock()
    with lease_limiter(store, "sliding-window", Limit(1, 1.0), clock, tmp_path, request) as lim:
        clock.at(0)
        lease = lim.acquire("p")
        clock.at(20_000)
        assert wait_now(lim) == 0
        lease.settle()  # its request may have reached the provider just now
        clock.at(20_500)
        assert wait_now(lim) == 0.501


@pytest.mark.parametrize("store", STORES)
def test_a_cancelled_lease_gives_its_slot_back(store: str, tmp_path: Path, request: Any) -> None:
    clock = FakeClock()
    with lease_limiter(store, "sliding-window", Limit(1, 1.0), clock, tmp_path, request) as lim:
        lim.acquire("p").cancel()
        assert wait_now(lim) == 0


@pytest.mark.parametrize("store", STORES)
def test_fixed_window_counts_a_held_slot_in_every_window_it_spans(
    store: str, tmp_path: Path, request: Any
) -> None:
    clock = FakeClock()
    with lease_limiter(store, "fixed-window", Limit(1, 1.0), clock, tmp_path, request) as lim:
        clock.at(900)
        lease = lim.acquire("p")
        clock.at(950)
        assert wait_now(lim) == 0.05  # the soonest it could end: this window's edge
        clock.at(1100)
        lease.settle()  # answered in the next window: it counts there too
        clock.at(1200)
        assert wait_now(lim) == 0.8
        clock.at(2000)
        assert wait_now(lim) == 0


@pytest.mark.parametrize("store", STORES)
def test_token_bucket_refills_from_the_answers(store: str, tmp_path: Path, request: Any) -> None:
    clock = FakeClock()
    with lease_limiter(store, "token-bucket", Limit(2, 1.0), clock, tmp_path, request) as lim:
        clock.at(0)
        first, second = lim.acquire("p"), lim.acquire("p")
        clock.at(3000)
        assert wait_now(lim) == 0.5  # both held: one must settle, then one refill interval
        first.settle()
        assert wait_now(lim) == 0.5
        clock.at(3500)
        assert wait_now(lim) == 0
        second.cancel()
        assert wait_now(lim) == 0


@pytest.mark.parametrize("store", STORES)
def test_overflow_waits_for_whichever_store_slot_frees_first(
    store: str, tmp_path: Path, request: Any
) -> None:
    clock = FakeClock()
    limits = {"kakaotalk": Limit(1, 1.0), "sms": Limit(1, 1.0)}
    options = store_options(store, tmp_path, request)
    with RateLimiter(
        limits, store=store, clock=clock, sleep=clock.sleep, guard=0, hold=10.0, **options
    ) as limiter:
        clock.at(0)
        kakao = limiter.acquire("kakaotalk")
        limiter.acquire("sms").settle()
        # kakaotalk is held (its answer not in): sms frees first, at 1001.
        lease = limiter.acquire(["kakaotalk", "sms"])
        assert (lease.provider, round(lease.waited, 6)) == ("sms", 1.001)
        kakao.settle()


def test_a_store_error_is_unavailable_never_unpaced(tmp_path: Path) -> None:
    import sqlite3

    clock = FakeClock()
    with RateLimiter(
        {"p": Limit(5, 1.0)}, path=tmp_path / "rl.sqlite", clock=clock, sleep=clock.sleep
    ) as limiter:
        slots = limiter._slots["p"].store

        def broken(hold_ms: int) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        slots.take = broken  # type: ignore[method-assign]
        with pytest.raises(LimiterUnavailableError, match=r"store sqlite: p: disk I/O error"):
            limiter.acquire("p")


def _sqlite_pair(clock: FakeClock, path: Path, limit: Limit) -> tuple[RateLimiter, RateLimiter]:
    """Two limiters on one sqlite file, as two processes would have."""
    return tuple(  # type: ignore[return-value]
        RateLimiter({"p": limit}, path=path, clock=clock, sleep=clock.sleep, guard=0, hold=10.0)
        for _ in range(2)
    )


def test_sqlite_a_settle_far_from_the_limit_is_written_by_the_next_take_and_never_admits_sooner(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    first, second = _sqlite_pair(clock, tmp_path / "rl.sqlite", Limit(4, 1.0))
    with first, second:
        clock.at(0)
        answered, in_flight = first.acquire("p"), first.acquire("p")  # half full
        clock.at(100)
        answered.settle()  # another lease is in flight: written with the next take
        clock.at(500)
        taken = [second.acquire("p"), second.acquire("p")]  # the window is full now
        # Still held in the file: the other process counts it as if it could settle now
        # (1.001 s), never as free sooner than the settle at 100 ms makes it (0.601 s).
        assert wait_now(second) == 1.001
        with pytest.raises(LimiterTimeout):
            first.acquire("p", timeout=0)  # this take writes the settle, admits nothing
        assert wait_now(second) == 0.601  # counted from the answer, as if written at once
        for lease in [in_flight, *taken]:
            lease.settle()


def test_sqlite_a_settle_near_the_limit_is_written_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = _sqlite_pair(clock, tmp_path / "rl.sqlite", Limit(4, 1.0))
    with first, second:
        clock.at(0)
        leases = [first.acquire("p") for _ in range(3)]  # more than half full
        clock.at(100)
        leases[0].settle()  # others still in flight, but the window is nearly full
        clock.at(200)
        leases.append(second.acquire("p"))
        assert wait_now(second) == 0.901  # counted from the answer at 100 ms, not held
        for lease in leases[1:]:
            lease.settle()


def test_sqlite_close_writes_the_settles_not_yet_written(tmp_path: Path) -> None:
    clock = FakeClock()
    first, second = _sqlite_pair(clock, tmp_path / "rl.sqlite", Limit(4, 1.0))
    with second:
        with first:
            clock.at(0)
            answered = first.acquire("p")
            first.acquire("p")  # in flight when the process ends: held until its deadline
            clock.at(100)
            answered.settle()  # waits for a take that never comes
        clock.at(200)
        [second.acquire("p") for _ in range(2)]
        assert wait_now(second) == 0.901  # written at close: counted from the answer


def test_sqlite_a_take_far_from_the_limit_takes_slots_for_the_next_acquires(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    first, second = _sqlite_pair(clock, tmp_path / "rl.sqlite", Limit(20, 1.0))
    with second:
        with first:
            clock.at(0)
            first._slots["p"].spare_demand = 3  # three acquires came since the last take
            lease = first.acquire("p")  # takes four slots: one now, three for what follows
            [second.acquire("p") for _ in range(16)]
            assert wait_now(second) == 1.001  # 4 + 16: the three spares count already
            clock.at(10)
            spare = first.acquire("p")  # handed out, no new slot taken
            assert spare.deadline == pytest.approx(clock() - 0.010 + 10.0)  # from the take
            assert wait_now(second) == 1.001
            clock.at(61)  # the two left were not asked for within 50 ms: they go back
            later = first.acquire("p")
            assert wait_now(second) == 0  # 4 - 2 + 1 + 16 = 19 of 20 (21 had they stayed)
            for held in (lease, spare, later):
                held.cancel()
            first._slots["p"].spare_demand = 3
            first.acquire("p").cancel()  # three more taken for acquires that never come...
        assert wait_now(second) == 0  # ...and given back at close: 16 of 20


def test_sqlite_a_deferred_settle_is_written_when_the_last_lease_in_flight_is_cancelled(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    first, second = _sqlite_pair(clock, tmp_path / "rl.sqlite", Limit(4, 1.0))
    with first, second:
        clock.at(0)
        answered, unused = first.acquire("p"), first.acquire("p")  # half full
        clock.at(100)
        answered.settle()  # another lease is in flight: waits for the next take
        unused.cancel()  # the last lease in flight: no take follows, so it is written now
        clock.at(200)
        taken = [second.acquire("p") for _ in range(3)]  # the window is full now
        assert wait_now(second) == 0.901  # counted from the answer at 100 ms, not held
        for lease in taken:
            lease.settle()


def test_sqlite_a_settle_whose_lock_is_busy_is_written_by_the_next_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    first, second = _sqlite_pair(clock, tmp_path / "rl.sqlite", Limit(4, 1.0))
    with first, second:
        clock.at(0)
        lease = first.acquire("p")
        busy = first._backend.lock
        real_enter = FileLock.__enter__

        def enter(lock: FileLock) -> FileLock:
            if lock is busy:
                raise LimiterUnavailableError("[limiter] locked by another process")
            return real_enter(lock)

        monkeypatch.setattr(FileLock, "__enter__", enter)
        clock.at(100)
        lease.settle()  # logged: the lock stayed busy
        monkeypatch.setattr(FileLock, "__enter__", real_enter)
        first.acquire("p", timeout=0).cancel()  # this transaction writes the settle
        clock.at(200)
        taken = [second.acquire("p") for _ in range(3)]
        assert wait_now(second) == 0.901  # counted from the answer at 100 ms, not held
        for held in taken:
            held.settle()


def test_sqlite_close_waits_for_a_thread_inside_the_store_and_its_next_call_reads_closed(
    tmp_path: Path,
) -> None:
    # An interrupted bulk run closes the limiter without joining its workers: closing the
    # connection under a statement crashed the interpreter, and a worker's next take read
    # as a store outage (or an AttributeError from the closed lock).
    events: list[Any] = []
    clock = FakeClock()
    limiter = RateLimiter(
        {"p": Limit(10, 1.0)}, path=tmp_path / "rl.sqlite", clock=clock, emit=events.append
    )
    slot = limiter._slots["p"]
    store = slot.store
    inside, leave = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def worker() -> None:
        with store.lock:
            inside.set()
            leave.wait(10)
            try:
                store.conn.execute("SELECT count(*) FROM slots_p").fetchone()
            except BaseException as exc:
                failures.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    closer = threading.Thread(target=limiter.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()  # waits for the statement in progress
    leave.set()
    thread.join(10)
    closer.join(10)
    assert not closer.is_alive() and failures == []
    with pytest.raises(LimiterError, match="the rate limiter is closed"):
        limiter._take(slot)  # a worker that was waiting for its turn
    assert events == []  # not a store outage


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_a_process_with_a_shorter_hold_counts_the_slots_another_one_holds_longer(
    store: str, tmp_path: Path, request: Any
) -> None:
    # Two configurations with different provider timeouts share the store: the held slots
    # of the one with the longer hold lay beyond the other's bound for a clock gone back,
    # which reset the window and admitted a second full window's worth.
    clock = FakeClock()
    options = store_options(store, tmp_path, request)
    limiters = [
        RateLimiter(
            {"p": Limit(4, 1.0)},
            store=store,
            clock=clock,
            sleep=clock.sleep,
            guard=0,
            hold=hold,
            **options,
        )
        for hold in (22.0, 12.0)
    ]
    longer, shorter = limiters
    try:
        clock.at(0)
        in_flight = [longer.acquire("p") for _ in range(4)]
        clock.at(100)
        with pytest.raises(LimiterTimeout):
            shorter.acquire("p", timeout=0)
        for lease in in_flight:
            lease.settle()
    finally:
        for limiter in limiters:
            limiter.close()
