"""The ``sqlite`` store (the default): every msgsend process of the user on one host shares it.

One file, by default ``$XDG_STATE_HOME/msgsend/ratelimit.sqlite`` (created 0600), with a table
of slots per provider. Every read-check-write runs under an exclusive ``flock`` on
``<file>.lock``, so two processes cannot take the last slot. The holder writes its PID into the
lock file, so a process that waits for the lock longer than :data:`LOCK_WAIT` names it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from msgsend.errors import LimiterError, LimiterUnavailableError

from .core import Limit, Policy, ProviderStore, clock_went_back, reason, wall_ms

__all__ = ["LOCK_WAIT", "SQLiteStore", "default_state_path"]

#: seconds a process waits for another one's lock before it names the holder and gives up
LOCK_WAIT = 2.0
#: the first and the longest pause between two tries of a busy lock
_POLL_FIRST, _POLL_MAX = 0.0002, 0.005
#: milliseconds a settle may wait to be written with the next take (windows far from full)
SETTLE_DEFER_MS = 50


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
        lock_wait: float | None = None,
    ) -> None:
        self.path = path
        self.strategy = strategy
        self.guard = guard
        self.now_ms = now_ms or wall_ms
        self.conn: sqlite3.Connection | None = None
        self.lock: FileLock | None = None
        self.slots: list[_SQLiteSlots] = []
        lock_wait = LOCK_WAIT if lock_wait is None else lock_wait
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Created 0600 whatever the umask, before sqlite opens it (its -wal/-shm files get
            # the same mode): it tells who sends how much, and when.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self.lock = FileLock(str(path) + ".lock", lock_wait)
            self.conn = sqlite3.connect(
                path, isolation_level="DEFERRED", check_same_thread=False, timeout=lock_wait
            )
            with self.lock:
                # 1 KiB pages (a new file only): a take and the settles it writes change a
                # handful of pages, and each goes to the journal whole.
                self.conn.execute("PRAGMA page_size=1024").close()
                self.conn.execute("PRAGMA journal_mode=WAL").close()
                # OFF: a commit is not flushed to disk. Safe when a process dies; an OS crash
                # can lose the newest entries or, rarely, the file (the message says to delete
                # it).
                self.conn.execute("PRAGMA synchronous=OFF").close()
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS gcra (provider TEXT PRIMARY KEY, tat INTEGER)"
                ).close()
                self.conn.commit()
        except LimiterUnavailableError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._unusable(exc) from exc

    def _unusable(self, exc: BaseException) -> LimiterError:
        hint = " (delete the file to reset it)" if isinstance(exc, sqlite3.DatabaseError) else ""
        return LimiterError(f"[limiter] path {self.path}: cannot use it ({reason(exc)}){hint}")

    def provider(self, name: str, limit: Limit) -> ProviderStore:
        conn, lock = self.conn, self.lock
        assert conn is not None and lock is not None
        table = "slots_" + name.replace("-", "_")
        try:
            with lock:
                # held = 1: taken, the answer not in yet; ``until`` is when the slot stops
                # counting (windows) or the deadline of a held slot (token bucket).
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{table}" '
                    "(id INTEGER PRIMARY KEY AUTOINCREMENT, until INTEGER NOT NULL,"
                    " held INTEGER NOT NULL)"
                ).close()
                conn.execute(
                    f'CREATE INDEX IF NOT EXISTS "{table}_until" ON "{table}" (until)'
                ).close()
                # The first version's second index: every write paid for it, and only a
                # nearly full window reads the held slots (by scanning, as it counts them).
                conn.execute(f'DROP INDEX IF EXISTS "{table}_held_until"').close()
                conn.commit()
        except LimiterUnavailableError:
            self.close()
            raise
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise self._unusable(exc) from exc
        policy = Policy(self.strategy, limit, self.guard)
        slots = _SQLiteSlots(name, policy, conn, lock, table, self.now_ms)
        self.slots.append(slots)
        return slots

    def close(self) -> None:
        # Settles still waiting for a take are written now; if the store fails, their slots
        # stay held until their deadlines (as a process that dies leaves them).
        for slots in self.slots:
            with contextlib.suppress(sqlite3.Error, OSError, LimiterUnavailableError):
                slots.flush()
        self.slots = []
        conn, lock = self.conn, self.lock
        self.conn = self.lock = None
        # Under the lock's thread lock: a thread of this process still inside a statement
        # (a worker the caller did not wait for) finishes it first; closing a connection in
        # use crashes the interpreter. Its next call finds the lock closed (an OSError).
        with lock.closing() if lock is not None else contextlib.nullcontext():
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


class _SQLiteSlots:
    """One provider's table: the same rules as the memory store, under the file lock.

    A window strategy's take is one transaction of three statements (drop what expired; read
    the span of ids and the newest expiry; insert the held slot). Settles are stamped when they
    happen and, while the window is far from full, written in the next take's transaction
    (:meth:`settle`): until then the slot is still held in the file, which counts it at least
    as long, so no other process can be admitted sooner than if the settle had been written.
    """

    def __init__(
        self,
        name: str,
        policy: Policy,
        conn: sqlite3.Connection,
        lock: FileLock,
        table: str,
        now_ms: Callable[[], int],
    ) -> None:
        self.name = name
        self.policy = policy
        self.conn = conn
        self.lock = lock
        self.table = table
        self.now_ms = now_ms
        self.windows = policy.strategy != "token-bucket"
        # Settles not yet written: (token, when it stops counting), in the order they happened.
        self._pending: list[tuple[int, int]] = []
        self._pending_since = 0
        self._pending_lock = threading.Lock()
        # Leases taken here and not yet settled or cancelled, and whether the last take here
        # found the window at most half full: only then may a settle wait for the next take.
        self._in_flight = 0
        self._roomy = False
        table_q = f'"{table}"'
        self._sql_expire = f"DELETE FROM {table_q} WHERE until <= ?"
        # Three subqueries: SQLite answers a lone min() or max() from an index, not several.
        self._sql_span = (
            f"SELECT (SELECT min(id) FROM {table_q}), (SELECT max(id) FROM {table_q}),"
            f" (SELECT max(until) FROM {table_q})"
        )
        self._sql_insert = f"INSERT INTO {table_q} (until, held) VALUES (?, 1)"
        # Re-stamped: counted from the settle. Gone already (expired): counted again.
        self._sql_settle = f"INSERT OR REPLACE INTO {table_q} (id, until, held) VALUES (?, ?, 0)"
        self._sql_delete = f"DELETE FROM {table_q} WHERE id = ?"

    def take(self, hold_ms: int) -> tuple[int | None, int]:
        tokens, wait = self.take_many(hold_ms, 1)
        return (tokens[0] if tokens else None), wait

    def take_many(self, hold_ms: int, want: int) -> tuple[list[int] | None, int]:
        """Take ``want`` slots in one transaction when the window stays at most half full
        with them; one otherwise; none (and the wait) when the window is full."""
        policy, conn = self.policy, self.conn
        with self.lock:
            now = self.now_ms()
            pending = self._take_pending()
            low: int | None = None
            high: int | None = None
            try:
                if self.windows:
                    if pending:
                        conn.executemany(self._sql_settle, pending).close()
                    conn.execute(self._sql_expire, (now,)).close()
                    low, high, newest = conn.execute(self._sql_span).fetchone()
                    if newest is not None and newest > policy.future_bound(now, hold_ms):
                        clock_went_back(self.name)
                        conn.execute(f'DELETE FROM "{self.table}"').close()
                        low = None
                    wait = self._window_wait(now, low, high)
                    until = policy.expiry(now + hold_ms)
                else:
                    tat = self._token_state(now, hold_ms)
                    (held,) = conn.execute(f'SELECT count(*) FROM "{self.table}"').fetchone()
                    wait = policy.token_wait(now, tat, held)
                    until = now + hold_ms
                if wait:
                    conn.commit()
                    self._roomy = False
                    return None, wait
                if want > 1 and not (
                    self.windows
                    and (0 if low is None or high is None else high - low + 1) + want
                    <= policy.count // 2
                ):
                    want = 1
                if want == 1:
                    cursor = conn.execute(self._sql_insert, (until,))
                    tokens = [int(cursor.lastrowid or 0)]
                    cursor.close()
                else:
                    values = ", ".join(["(?, 1)"] * want)
                    conn.execute(
                        f'INSERT INTO "{self.table}" (until, held) VALUES {values}', [until] * want
                    ).close()
                    # The file lock keeps every other writer out: the rows above the highest
                    # id before the insert are these.
                    tokens = [
                        row_id
                        for (row_id,) in conn.execute(
                            f'SELECT id FROM "{self.table}" WHERE id > ? ORDER BY id',
                            (high or 0,),
                        )
                    ]
                conn.commit()
            except BaseException:
                conn.rollback()
                self._restore_pending(pending)
                raise
            token = tokens[-1]
            assert token and len(tokens) == want
            # The span of ids bounds the rows in the window, these new ones included.
            self._roomy = self.windows and token - (low or tokens[0]) + 1 <= policy.count // 2
        with self._pending_lock:
            self._in_flight += want
        return [int(t) for t in tokens], 0

    def _window_wait(self, now: int, low: int | None, high: int | None) -> int:
        policy, conn, table = self.policy, self.conn, self.table
        # Row ids are distinct integers: when their span is below the limit, so is the
        # count, and the count (proportional to the window) is skipped.
        if low is None or high is None or high - low + 1 < policy.count:
            return 0
        (occupied,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        if occupied < policy.count:
            return 0
        need = occupied - policy.count + 1
        settled = [
            until
            for (until,) in conn.execute(
                f'SELECT until FROM "{table}" WHERE held = 0 ORDER BY until LIMIT ?', (need,)
            )
        ]
        held = [until for (until,) in conn.execute(f'SELECT until FROM "{table}" WHERE held = 1')]
        return policy.window_wait(now, occupied, settled, held)

    def settle(self, token: int) -> None:
        if not self.windows:
            self._settle_token(token)
            return
        now = self.now_ms()
        entry = (token, self.policy.expiry(now))
        with self._pending_lock:
            self._in_flight -= 1
            # Deferred only while the window is far from full, another lease of this process
            # is in flight (so a take follows soon) and nothing has waited longer than
            # SETTLE_DEFER_MS: other processes then see the slot held a little longer, which
            # never admits anything sooner, and near a full window every settle is written
            # at once, so their wait estimates stay exact.
            defer = (
                self._roomy
                and self._in_flight > 0
                and (not self._pending or now - self._pending_since < SETTLE_DEFER_MS)
            )
            # Pending before it is written: a lock that stays busy, as a failed transaction,
            # leaves it for the next transaction of this process.
            if not self._pending:
                self._pending_since = now
            self._pending.append(entry)
        if not defer:
            self.flush()

    def flush(self) -> None:
        """Write the settles not yet written in one transaction."""
        conn = self.conn
        with self.lock:
            pending = self._take_pending()
            if not pending:
                return
            try:
                conn.executemany(self._sql_settle, pending).close()
                conn.commit()
            except BaseException:
                conn.rollback()
                self._restore_pending(pending)
                raise

    def _take_pending(self) -> list[tuple[int, int]]:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        return pending

    def _restore_pending(self, pending: list[tuple[int, int]]) -> None:
        """Keep settles a failed transaction did not write for the next one (the slot stays
        held meanwhile, and expires at its deadline if the store never comes back)."""
        if pending:
            with self._pending_lock:
                if not self._pending:
                    self._pending_since = self.now_ms()
                self._pending[:0] = pending

    def _settle_token(self, token: int) -> None:
        policy, conn = self.policy, self.conn
        with self._pending_lock:
            self._in_flight -= 1
        with self.lock:
            now = self.now_ms()
            try:
                conn.execute(self._sql_delete, (token,)).close()
                # One that expired was counted at its deadline; counting it again is the
                # safe side (its request may have arrived after that deadline).
                self._store_tat(policy.token_settle(self._tat(), now))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def cancel(self, token: int) -> None:
        conn = self.conn
        with self._pending_lock:
            self._in_flight -= 1
        with self.lock:
            # Settles waiting for a take go in this transaction: when this lease was the last
            # one in flight, or a slot taken for a queued acquire goes back, no take may follow.
            pending = self._take_pending()
            try:
                if pending:
                    conn.executemany(self._sql_settle, pending).close()
                conn.execute(self._sql_delete, (token,)).close()
                conn.commit()
            except BaseException:
                conn.rollback()
                self._restore_pending(pending)
                raise

    def _tat(self) -> int:
        row = self.conn.execute("SELECT tat FROM gcra WHERE provider = ?", (self.name,)).fetchone()
        return int(row[0]) if row is not None else 0

    def _store_tat(self, tat: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO gcra (provider, tat) VALUES (?, ?)", (self.name, tat)
        ).close()

    def _token_state(self, now: int, hold_ms: int) -> int:
        """GCRA's TAT, after forgetting a future (the clock went back) and counting each held
        slot whose deadline passed (its process died) at that deadline."""
        conn, table = self.conn, self.table
        tat = start = self._tat()
        (newest,) = conn.execute(f'SELECT max(until) FROM "{table}"').fetchone()
        if max(newest or 0, tat // 1000) > self.policy.future_bound(now, hold_ms):
            clock_went_back(self.name)
            conn.execute(f'DELETE FROM "{table}"').close()
            conn.execute("DELETE FROM gcra WHERE provider = ?", (self.name,)).close()
            return 0
        expired = conn.execute(
            f'SELECT id, until FROM "{table}" WHERE until <= ? ORDER BY until', (now,)
        ).fetchall()
        for _, deadline in expired:
            tat = self.policy.token_settle(tat, deadline)
        if expired:
            conn.execute(f'DELETE FROM "{table}" WHERE until <= ?', (now,)).close()
        if tat != start:
            self._store_tat(tat)
        return tat


class FileLock:
    """A reentrant cross-process lock on ``path``: a thread lock, then an ``flock``.

    A wait is bounded by ``wait`` seconds: then LimiterUnavailableError names the process
    that holds the lock (each holder writes its PID into the lock file), and says whether it
    is stopped (Ctrl-Z), so one paused msgsend does not block every other one in silence.
    A busy lock is tried again after 0.2 ms, doubling up to 5 ms: holds last ~0.1 ms.
    """

    def __init__(self, path: str, wait: float = LOCK_WAIT) -> None:
        self.path = path
        self.wait = wait
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._closed = False
        self._fd: int | None = None
        self._fcntl: Any = None
        self._fallback: Any = None
        self._pid = b"%d\n" % os.getpid()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            from filelock import FileLock as _Fallback

            self._fallback = _Fallback(path, thread_local=False, timeout=wait)
        else:
            self._fcntl = fcntl
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> FileLock:
        if not self._thread_lock.acquire(timeout=self.wait):
            raise self._busy("another thread of this process")
        try:
            if self._closed:
                raise OSError(errno.EBADF, "the store is closed")
            if self._depth == 0:
                self._lock_file()
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        return self

    def _lock_file(self) -> None:
        if self._fd is None:  # pragma: no cover - Windows
            from filelock import Timeout

            try:
                self._fallback.acquire()
            except Timeout as exc:
                raise self._busy("another process") from exc
            return
        fcntl = self._fcntl
        deadline = None
        pause = _POLL_FIRST
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.wait
                elif now >= deadline:
                    raise self._busy(holder_of(self._fd)) from None
                time.sleep(pause)
                pause = min(pause * 2, _POLL_MAX)
        with contextlib.suppress(OSError):
            os.pwrite(self._fd, self._pid.ljust(16), 0)

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

    def _busy(self, holder: str) -> LimiterUnavailableError:
        return LimiterUnavailableError(
            f"[limiter] path {self.path}: locked by {holder} for more than {self.wait:g} s; "
            "nothing is sent until it lets go",
            holder=holder,
        )

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Wait for the threads inside the lock, run the body, then close the lock for good."""
        with self._thread_lock:
            try:
                yield
            finally:
                self.close()

    def close(self) -> None:
        with self._thread_lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def holder_of(fd: int) -> str:
    """Name the process whose PID the lock file holds, and say if it is stopped (Ctrl-Z)."""
    try:
        pid = int(os.pread(fd, 16, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return "another process"
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError):
        return f"process {pid}"
    what = f"process {pid} ({command[:60]})" if command else f"process {pid}"
    if fields and fields[0] in ("T", "t"):
        return f"{what}, which is stopped (resume it with `kill -CONT {pid}`)"
    return what
