"""A limiter store that is down or locked: never an unpaced request, always a named cause.

Real processes: a sqlite lock held by another msgsend process (running, then stopped with
SIGSTOP as Ctrl-Z would), and a real redis-server stopped and started again mid-run. A lock
freed in time is held by a thread here (an ``flock`` is per open file: a second open of the
lock file waits for it as another process's would).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import msgsend.ratelimit.sqlite as sqlite_store
from e2e import wait_for
from msgsend.alerts import alert_for
from msgsend.errors import exit_code_for
from msgsend.events import Event, LimiterStoreChanged
from msgsend.ratelimit import Limit, LimiterUnavailableError, RateLimiter
from redis_server import start_or_skip, start_redis_server
from test_ratelimit import FakeClock

HOLDER = r"""
import sys, time
from msgsend.ratelimit.sqlite import FileLock
lock = FileLock(sys.argv[1] + ".lock")
with lock:
    print("holding", flush=True)
    time.sleep(60)
"""


def state(pid: int) -> str:
    """Return the state letter of process ``pid`` (``T``: stopped)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="module")
def holder(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """Another process holding the sqlite store's lock (one for the module: the tests only
    try to take the lock, and the one that stops the process lets it run again)."""
    path = tmp_path_factory.mktemp("holder") / "rl.sqlite"
    RateLimiter({"p": Limit(5, 1.0)}, path=path).close()  # the file exists, its lock is free
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "holding"
            yield path, process
        finally:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)


def test_a_lock_held_too_long_names_the_process_and_sends_nothing(
    holder: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, process = holder
    monkeypatch.setattr(sqlite_store, "LOCK_WAIT", 0.1)
    with pytest.raises(LimiterUnavailableError) as caught:
        RateLimiter({"p": Limit(5, 1.0)}, path=path)
    message = str(caught.value)
    assert f"locked by process {process.pid} (" in message
    assert "for more than 0.1 s; nothing is sent until it lets go" in message
    assert caught.value.holder is not None and str(process.pid) in caught.value.holder
    assert exit_code_for(caught.value) == 75


def test_a_stopped_holder_is_named_with_how_to_resume_it(
    holder: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, process = holder
    monkeypatch.setattr(sqlite_store, "LOCK_WAIT", 0.1)
    seen: list[Event] = []
    os.kill(process.pid, signal.SIGSTOP)  # Ctrl-Z while holding the lock
    try:
        assert wait_for(lambda: state(process.pid) in ("T", "t"), 10)  # the kernel stopped it
        with pytest.raises(LimiterUnavailableError, match="which is stopped") as caught:
            RateLimiter({"p": Limit(5, 1.0)}, path=path, emit=seen.append)
    finally:
        os.kill(process.pid, signal.SIGCONT)  # running again, for the other test
        assert wait_for(lambda: state(process.pid) not in ("T", "t"), 10)
    assert f"resume it with `kill -CONT {process.pid}`" in str(caught.value)
    assert seen == [LimiterStoreChanged("sqlite", True, str(caught.value))]


def test_a_lock_freed_in_time_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "LOCK_WAIT", 20.0)  # a loaded host is slow, not stuck
    path = tmp_path / "rl.sqlite"
    holding, polled = threading.Event(), threading.Event()

    def poll(seconds: float) -> None:  # the limiter found the lock busy and waits a little
        polled.set()
        time.sleep(seconds)

    monkeypatch.setattr(sqlite_store, "time", SimpleNamespace(monotonic=time.monotonic, sleep=poll))

    def hold() -> None:  # as another msgsend would: until the limiter has found it busy
        with sqlite_store.FileLock(f"{path}.lock"):
            holding.set()
            polled.wait(20)

    with RateLimiter({"p": Limit(5, 1.0)}, path=path) as limiter:
        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        try:
            assert holding.wait(20)
            limiter.acquire("p").settle()  # waits for the lock, well within the bound
        finally:
            holder.join(20)
    assert polled.is_set()


def test_store_down_is_one_event_and_recovery_another(tmp_path: Path) -> None:
    clock = FakeClock()
    seen: list[Event] = []
    with RateLimiter(
        {"p": Limit(5, 1.0)},
        path=tmp_path / "rl.sqlite",
        clock=clock,
        sleep=clock.sleep,
        emit=seen.append,
    ) as limiter:
        store = limiter._slots["p"].store
        working = store.take

        def broken(hold_ms: int) -> Any:
            raise sqlite3.OperationalError("disk I/O error")

        store.take = broken  # type: ignore[method-assign]
        for _ in range(3):
            with pytest.raises(LimiterUnavailableError, match=r"store sqlite: p: disk I/O error"):
                limiter.acquire("p")
        assert seen == [
            LimiterStoreChanged(
                "sqlite",
                True,
                "[limiter] store sqlite: p: disk I/O error; nothing is sent until it answers",
            )
        ]
        store.take = working  # type: ignore[method-assign]
        limiter.acquire("p").settle()
        assert seen[1:] == [LimiterStoreChanged("sqlite", False, "answers again")]


def test_store_events_become_alerts() -> None:
    assert alert_for(LimiterStoreChanged("redis", True, "[limiter] redis-url x: down")) == (
        "limiter-store-down",
        None,
        "[limiter] redis-url x: down; sends wait for it",
    )
    assert alert_for(LimiterStoreChanged("redis", False, "answers again")) == (
        "limiter-store-recovered",
        None,
        "the rate limiter's redis store answers",
    )


def test_redis_going_away_mid_run_stops_sends_until_it_is_back(tmp_path: Path) -> None:
    server = start_or_skip(tmp_path / "redis")
    seen: list[Event] = []
    try:
        limiter = RateLimiter(
            {"p": Limit(100, 1.0)}, store="redis", redis_url=server.url, emit=seen.append
        )
        lease = limiter.acquire("p")
        server.stop()
        lease.settle()  # the answer came while Redis is away: logged, kept until its deadline
        with pytest.raises(LimiterUnavailableError, match=r"store redis: p: .*nothing is sent"):
            limiter.acquire("p")
        assert [event.down for event in seen if isinstance(event, LimiterStoreChanged)] == [True]
        server = start_redis_server(tmp_path / "redis", port=server.port)
        limiter.acquire("p").settle()  # scripts are loaded again on the new server
        assert [event.down for event in seen if isinstance(event, LimiterStoreChanged)] == [
            True,
            False,
        ]
        limiter.close()
    finally:
        server.stop()
