"""The stand-ins for a limiter whose store could not be opened at start (ratelimit/standins.py)."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import msgsend.ratelimit.sqlite as sqlite_store
from msgsend.client import build_limiter
from msgsend.config import load_config
from msgsend.errors import ConfigError, LimiterUnavailableError
from msgsend.events import LimiterStoreChanged
from msgsend.ratelimit import Limit, RateLimiter
from msgsend.ratelimit.standins import StoreAwaitedLimiter, UnavailableLimiter

LOCKED = LimiterUnavailableError("[limiter] store sqlite: locked by pid 1")


def memory_limiter(emit: Any) -> RateLimiter:
    return RateLimiter({"kakaotalk": Limit(5, 1.0)}, store="memory", emit=emit)


def test_the_store_is_opened_at_a_later_acquire_and_its_opening_is_the_recovery() -> None:
    events: list[Any] = []
    builds: list[Exception | None] = [LimiterUnavailableError("still locked"), None]

    def build(emit: Any) -> RateLimiter:
        failure = builds.pop(0)
        if failure is not None:
            raise failure
        return memory_limiter(emit)

    limiter = StoreAwaitedLimiter(build, LOCKED, events.append)
    limiter.note_throttled("kakaotalk", 1.0)  # nothing to note in yet: not an error
    with pytest.raises(LimiterUnavailableError, match="still locked"):
        limiter.acquire("kakaotalk")
    assert events == []  # the store-down event came from the start, not from each try
    lease = limiter.acquire("kakaotalk", timeout=1.0)
    assert lease.provider == "kakaotalk"
    lease.settle()
    assert events == [LimiterStoreChanged("memory", False, "answers again")]
    limiter.acquire("kakaotalk", timeout=1.0).settle()
    assert builds == []  # opened once
    limiter.close()


def test_any_other_error_of_the_opening_is_unavailability_so_rows_wait() -> None:
    def build(emit: Any) -> RateLimiter:
        raise ConfigError("[limiter] path: permission denied")

    limiter = StoreAwaitedLimiter(build, LOCKED)
    with pytest.raises(LimiterUnavailableError, match="permission denied"):
        limiter.acquire("kakaotalk")
    limiter.close()  # never opened: nothing to close


def test_while_one_thread_opens_the_store_the_others_get_the_last_error_at_once() -> None:
    opening, release = threading.Event(), threading.Event()

    def build(emit: Any) -> RateLimiter:
        opening.set()
        assert release.wait(10)
        raise LimiterUnavailableError("locked again")

    limiter = StoreAwaitedLimiter(build, LOCKED)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            limiter.acquire("kakaotalk")
        except LimiterUnavailableError as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert opening.wait(10)
    with pytest.raises(LimiterUnavailableError) as caught:
        limiter.acquire("kakaotalk")
    assert caught.value is LOCKED
    release.set()
    thread.join(10)
    assert [str(e) for e in errors] == ["locked again"]


def test_an_unavailable_limiter_refuses_every_acquire_with_the_error_of_the_start() -> None:
    limiter = UnavailableLimiter(LOCKED)
    for _ in range(2):
        with pytest.raises(LimiterUnavailableError) as caught:
            limiter.acquire(["kakaotalk", "sms"], timeout=1.0)
        assert caught.value is LOCKED
    assert limiter.note_throttled("sms", None) is None


def test_build_limiter_waits_for_a_locked_sqlite_store_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "rl.sqlite"
    path = tmp_path / "msgsend.toml"
    path.write_text(f'[limiter]\nstore = "sqlite"\npath = "{store}"\n', encoding="utf-8")
    config = load_config(path)
    monkeypatch.setattr(sqlite_store, "LOCK_WAIT", 0.05)
    events: list[Any] = []
    holder = os.open(str(store) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(LimiterUnavailableError):
            build_limiter(config, emit=events.append)
        limiter = build_limiter(config, emit=events.append, wait_for_store=True)
        assert isinstance(limiter, StoreAwaitedLimiter)
        with pytest.raises(LimiterUnavailableError):
            limiter.acquire("sms")
        fcntl.flock(holder, fcntl.LOCK_UN)
        limiter.acquire("sms", timeout=5.0).settle()
        limiter.close()
    finally:
        os.close(holder)
    assert [event.down for event in events if isinstance(event, LimiterStoreChanged)][-1] is False
