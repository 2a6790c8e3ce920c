"""The ``sqlite`` store (the default): every msgsend process of the user on one host shares it.

One file, by default ``$XDG_STATE_HOME/msgsend/ratelimit.sqlite``; every read-check-write runs
under an exclusive ``flock`` on ``<file>.lock``, so two processes cannot take the last slot.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msgsend.errors import LimiterError

from .buckets import BucketStore, log_algorithm, rate
from .core import Limit, ProviderStore, reason, wall_ms

__all__ = ["SQLiteStore", "default_state_path"]


def default_state_path() -> Path:
    """Return the shared SQLite file: ``$XDG_STATE_HOME/msgsend/ratelimit.sqlite``."""
    state_home = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(state_home) if os.path.isabs(state_home) else Path.home() / ".local" / "state"
    return base / "msgsend" / "ratelimit.sqlite"


class SQLiteStore:
    """One SQLite file shared by the processes of a host, under one file lock."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)

    def __init__(
        self,
        path: Path,
        strategy: str,
        guard: float | None,
        now_ms: Callable[[], int] | None,
    ) -> None:
        self.path = path
        self.strategy = strategy
        self.guard = guard
        self.now_ms = now_ms or wall_ms
        self.conn: sqlite3.Connection | None = None
        self.lock: _FileLock | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.lock = _FileLock(str(path) + ".lock")
            # Created 0600 whatever the umask: SQLite gives its -wal/-shm files the same mode.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self.conn = sqlite3.connect(
                path, isolation_level="DEFERRED", check_same_thread=False, timeout=30.0
            )
            with self.lock:
                self.conn.execute("PRAGMA journal_mode=WAL").close()
                # OFF: a commit is not flushed to disk. Safe when a process dies; an OS crash
                # can lose the newest entries or, rarely, the file (the message says to delete
                # it).
                self.conn.execute("PRAGMA synchronous=OFF").close()
                self.conn.commit()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._unusable(exc) from exc

    def _unusable(self, exc: BaseException) -> LimiterError:
        hint = " (delete the file to reset it)" if isinstance(exc, sqlite3.DatabaseError) else ""
        return LimiterError(f"[limiter] path {self.path}: cannot use it ({reason(exc)}){hint}")

    def provider(self, name: str, limit: Limit) -> ProviderStore:
        from pyrate_limiter import SQLiteBucket, SQLiteQueries, StateBucket, TokenBucket, WallClock

        conn, lock = self.conn, self.lock
        assert conn is not None and lock is not None
        ident = name.replace("-", "_")
        rates = [rate(limit, self.strategy, self.guard)]
        try:
            with lock:
                fast_put = None
                if self.strategy == "token-bucket":
                    # Duck-typed StateStore: subclassing would import pyrate-limiter eagerly.
                    store: Any = _SQLiteStateStore(conn, lock, f"tokens_{ident}")
                    bucket: Any = StateBucket(rates, TokenBucket(), store, clock=WallClock())
                else:
                    table = f"log_{ident}"
                    conn.execute(SQLiteQueries.CREATE_BUCKET_TABLE.format(table=table)).close()
                    conn.execute(
                        SQLiteQueries.CREATE_INDEX_ON_TIMESTAMP.format(
                            index_name=f"idx_{table}_ts", table_name=table
                        )
                    ).close()
                    bucket = SQLiteBucket(
                        rates, conn, table, lock=lock, algorithm=log_algorithm(self.strategy)
                    )
                    fast_put = _sqlite_fast_put(conn, table, name, limit.count)
                conn.commit()
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._unusable(exc) from exc
        return BucketStore(name, limit, bucket, self.now_ms, lock, fast_put)

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None
        if self.lock is not None:
            self.lock.close()
            self.lock = None


class _FileLock:
    """A reentrant cross-process lock on ``path``: a thread lock, then a blocking ``flock``.

    Used instead of ``filelock.FileLock``, which polls every 50 ms under contention: a blocked
    ``flock`` is woken by the kernel the moment the holder releases, which keeps shared-budget
    waits exact and lets two providers of one process share the file without polling.
    """

    def __init__(self, path: str) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._fcntl: Any = None
        self._fallback: Any = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            from filelock import FileLock

            self._fallback = FileLock(path, thread_local=False, poll_interval=0.001)
        else:
            self._fcntl = fcntl
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> _FileLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                if self._fd is not None:
                    self._fcntl.flock(self._fd, self._fcntl.LOCK_EX)
                else:  # pragma: no cover - Windows
                    self._fallback.acquire()
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                if self._fd is not None:
                    self._fcntl.flock(self._fd, self._fcntl.LOCK_UN)
                else:  # pragma: no cover - Windows
                    self._fallback.release()
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _SQLiteStateStore:
    """pyrate-limiter ``StateStore`` for TokenBucket/GCRA in a SQLite table (4.5.1 has none).

    One row holds the algorithm's state (GCRA: one theoretical arrival time per rate, integer
    microseconds); ``check`` reads, steps and writes it under the shared file lock, so every
    process on the host spends from the same bucket.
    """

    is_async = False

    def __init__(self, conn: sqlite3.Connection, lock: _FileLock, table: str) -> None:
        self._conn = conn
        self._lock = lock
        self._table = table
        with lock:
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{table}" '
                "(id INTEGER PRIMARY KEY CHECK (id = 0), state TEXT NOT NULL)"
            ).close()
            conn.commit()

    def _load(self, algorithm: Any, rates: list[Any]) -> Any:
        row = self._conn.execute(f'SELECT state FROM "{self._table}" WHERE id = 0').fetchone()
        if row is not None:
            values = str(row[0]).split(",")
            if len(values) == len(rates):
                return algorithm.decode(values)
        return algorithm.initial(rates)

    def check(self, algorithm: Any, rates: list[Any], now: int, weight: int) -> Any:
        with self._lock:
            new_state, decision = algorithm.step(rates, self._load(algorithm, rates), now, weight)
            if decision.allowed:
                self._conn.execute(
                    f'INSERT OR REPLACE INTO "{self._table}" (id, state) VALUES (0, ?)',
                    (",".join(str(value) for value in new_state),),
                ).close()
                self._conn.commit()
            return decision

    def read(self, algorithm: Any, rates: list[Any]) -> Any:
        with self._lock:
            return self._load(algorithm, rates)

    def reset(self) -> None:
        with self._lock:
            self._conn.execute(f'DELETE FROM "{self._table}"').close()
            self._conn.commit()

    def close(self) -> None:
        """The connection belongs to the RateLimiter, which closes it."""


def _sqlite_fast_put(
    conn: sqlite3.Connection, table: str, name: str, count: int
) -> Callable[[int], bool]:
    """Insert without counting the window when the table cannot hold ``count`` rows yet.

    SQLiteBucket.put counts the window on every call, O(rows in it): about 0.5 ms at 30 000
    rows, which a high limit over a minute reaches. Rowids are distinct integers, so
    ``max(rowid) - min(rowid) + 1`` bounds the row count from two index lookups; below the
    limit the put is admitted whatever the window, and the count is skipped. Runs under the
    file lock, like the put it stands in for.
    """
    from pyrate_limiter import SQLiteQueries

    bound_query = f'SELECT (SELECT max(rowid) FROM "{table}") - (SELECT min(rowid) FROM "{table}")'
    insert_query = SQLiteQueries.PUT_ITEM.format(table=table)

    def fast_put(now: int) -> bool:
        (span,) = conn.execute(bound_query).fetchone()
        if span is not None and span + 1 >= count:
            return False
        conn.execute(insert_query, (name, now)).close()
        conn.commit()
        return True

    return fast_put
