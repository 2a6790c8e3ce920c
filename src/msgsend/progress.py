"""The bulk run's display: a live line on a terminal, plain lines for cron, and the summary.

``BulkProgress`` listens to the run's events (its row counts are a ``report.RowCounts``, the
bulk report's own listener of ``RowSettled``) and to ``on_progress(done, total)``; a ticker
thread refreshes it while nothing settles (every send waiting for the rate limiter), so the
rate and ETA never freeze. The ETA comes from ``Schedule``: when the rate limit allows the
last row to go, the later of that and the pace observed in this run.

Only the CLI uses this module; rich is imported when a terminal needs it.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from .events import Event, RowSettled, RunPaused, RunResumed
from .report import RowCounts

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .ratelimit import Limit

__all__ = ["BulkProgress", "Schedule", "format_duration", "provider_table", "render_bulk_summary"]

_BAR: Final = "━"
#: the observed pace rules the ETA only below this share of the limit's sustained rate
SLOWER: Final = 0.8


def format_duration(seconds: float) -> str:
    """Return ``1h02m``, ``3m05s`` or ``42s``.

    >>> format_duration(185)
    '3m05s'
    """
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class SupportsSchedule(Protocol):
    """What the ETA needs of a rate limiter (``ratelimit.RateLimiter``)."""

    def schedule(self, provider: str, remaining: int) -> float: ...

    def limit(self, provider: str) -> Limit: ...


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a provider's rate limit allows, as the ETA needs it.

    ``seconds_for(n)`` is how long after the first send the n-th may go: the limiter's own
    schedule (``RateLimiter.schedule``), which knows its strategy, guard and the time a
    slot is held. ``per_second`` is the sustained rate, ``period`` the limit's window.
    """

    seconds_for: Callable[[int], float]
    per_second: float
    period: float

    @classmethod
    def of(cls, limiter: SupportsSchedule, provider: str) -> Schedule:
        """Return the schedule of ``provider`` on ``limiter``."""
        limit = limiter.limit(provider)
        return cls(
            lambda sends: limiter.schedule(provider, sends),
            limit.count / limit.period,
            limit.period,
        )


class BulkProgress:
    """A live line on a terminal, a plain line every ``interval`` seconds otherwise.

    The line always keeps ``done/total`` and the ETA; the bar and the counts give way first
    on a narrow terminal. Counts and the rate are this run's: rows skipped by ``--resume``
    advance ``done`` but not the rate.
    """

    WINDOW: Final = 30.0  # seconds of history behind the rate (at least one limit period)

    def __init__(
        self,
        total: int,
        *,
        console: Console | None = None,
        schedule: Schedule | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        stream: IO[str] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.console = console
        self.tty = bool(console is not None and console.is_terminal)
        self.total = total
        self.schedule = schedule
        self.interval = interval
        #: this run's rows, counted as the bulk report counts them
        self.rows = RowCounts()
        self.done = 0
        self._clock = clock
        self._wall = wall
        self._stream = stream
        self.started = clock()
        self._window = max(self.WINDOW, schedule.period if schedule else 0.0)
        self._history: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._last_line = self.started
        self._last_refresh = 0.0
        self._live: Any = None
        #: why the run is not sending now (quiet hours, an outage), shown on the line
        self.paused: RunPaused | None = None

    # -- feeding --------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Count a settled row; show why the run pauses (an events listener)."""
        if isinstance(event, RunPaused | RunResumed):
            self.paused = event if isinstance(event, RunPaused) else None
            self._refresh(force=True)
            return
        if isinstance(event, RowSettled):
            with self._lock:
                self.rows.on_event(event)

    @property
    def sends(self) -> int:
        """Rows this run sent or failed: the ones that went through the sender (the rate)."""
        return self.rows.sent + self.rows.failed

    def update(self, done: int, total: int) -> None:
        """Take the run's ``on_progress(done, total)``."""
        with self._lock:
            self.done, self.total = done, max(total, done)
        now = self._clock()
        if self._live is not None and now - self._last_refresh >= 0.25:
            self._last_refresh = now
            self._refresh()

    # -- the figures ----------------------------------------------------------------------

    def rate(self, now: float) -> float:
        """Return this run's sends per second over the last window (0.0 before 0.5 s)."""
        with self._lock:
            self._history.append((now, self.sends))
            while len(self._history) > 2 and now - self._history[1][0] >= self._window:
                self._history.popleft()
            (t0, s0), (t1, s1) = self._history[0], self._history[-1]
        return (s1 - s0) / (t1 - t0) if t1 - t0 >= 0.5 else 0.0

    def eta(self, now: float, rate: float) -> float | None:
        """Return the seconds left: the later of what the rate limit allows and the pace.

        The limit's part is anchored at the start of the run for this run's sends only
        (rows already settled, skipped or invalid take no slot), so it counts down steadily
        across the limit's window edges instead of jumping with each burst. The pace counts
        only when it is clearly slower than the limit (slow answers, retries, an outage):
        a window strategy sends in bursts, and a burst's pace says nothing about the end.
        While quiet hours pause the run, the rest goes after the window ends; while an
        outage pauses it, nobody knows when (None).
        """
        with self._lock:
            remaining = self.total - self.done
            sends = self.sends
        if remaining <= 0:
            return 0.0
        paused = self.paused
        if paused is not None:
            if paused.kind != "quiet-hours" or paused.until is None:
                return None
            after = self.schedule.seconds_for(remaining) if self.schedule else 0.0
            return max(0.0, paused.until.timestamp() - self._wall()) + after
        estimates = []
        limit_rate = self.schedule.per_second if self.schedule else math.inf
        if 0 < rate < SLOWER * limit_rate:
            estimates.append(remaining / rate)
        if self.schedule is not None:
            finish = self.started + self.schedule.seconds_for(sends + remaining)
            estimates.append(max(0.0, finish - now))
        return max(estimates) if estimates else None

    def status_text(self, width: int | None = None) -> str:
        """Return ``sent .. fallback .. failed .. invalid .. rate ETA``, shortened to ``width``."""
        now = self._clock()
        rate = self.rate(now)
        eta = self.eta(now, rate)
        c = self.rows
        when = f"ETA {'-' if eta is None else format_duration(eta)}"
        paused = self.paused
        if paused is not None:
            when = f"{when}  {paused.describe()}"
        full = (
            f"sent {c.sent}  fallback {c.fallbacks}  failed {c.failed}  "
            f"invalid {c.invalid}  {rate:.1f}/s  {when}"
        )
        if width is None or len(full) <= width:
            return full
        short = f"ok {c.sent} fb {c.fallbacks} fail {c.failed} {rate:.1f}/s {when}"
        return short if len(short) <= width else when

    def line(self, width: int) -> str:
        """Return the terminal line for ``width`` columns: done/total and ETA always stay."""
        with self._lock:
            done, total = self.done, self.total
        head = f"bulk {done}/{total}"
        status = self.status_text(max(0, width - len(head) - 1))
        room = width - len(head) - len(status) - 2
        if room >= 10:
            filled = 0 if total <= 0 else math.floor(room * min(done, total) / total)
            bar = _BAR * filled + " " * (room - filled)
            return f"{head} {bar} {status}"
        return f"{head} {status}"

    # -- display --------------------------------------------------------------------------

    def __enter__(self) -> BulkProgress:
        if self.tty:
            from rich.live import Live

            assert self.console is not None
            self._live = Live(
                self._renderable(), console=self.console, refresh_per_second=4, transient=False
            )
            self._live.start()
        self._ticker = threading.Thread(target=self._tick, name="msgsend-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        # A run refused before its first row (no recipient column, results file in the way)
        # leaves its error alone, not a "0/N rows" line above it.
        untouched = exc_type is not None and self.done == 0
        if self._live is not None:
            if untouched:
                self._live.transient = True
            else:
                self._refresh()
            self._live.stop()
        elif not untouched:
            self._plain_line()

    def _tick(self) -> None:
        while not self._stop.wait(1.0 if self.tty else self.interval):
            self._refresh(force=True)

    def _renderable(self) -> Any:
        from rich.text import Text

        assert self.console is not None
        return Text(self.line(self.console.width), no_wrap=True, overflow="crop")

    def _refresh(self, force: bool = False) -> None:
        if self._live is not None:
            self._live.update(self._renderable(), refresh=True)
            return
        now = self._clock()
        if force or now - self._last_line >= self.interval:
            self._last_line = now
            self._plain_line()

    def _plain_line(self) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(f"bulk: {self.done}/{self.total} rows  {self.status_text()}\n")
        stream.flush()


# ------------------------------------------------------------------------------- summaries


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def provider_table(report: dict[str, Any]) -> Table:
    """Return the per-provider table of a run report (``RunStats.to_json``).

    Latencies are those of the HTTP requests; the time spent waiting for the rate limiter
    is its own column, so a paced run does not look slow.
    """
    from rich.table import Table

    table = Table(title="per provider", title_justify="left")
    for column in (
        "provider",
        "sent",
        "failed",
        "req",
        "retries",
        "fallback",
        "p50 ms",
        "p95 ms",
        "max ms",
        "wait s",
    ):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for name, stats in report["providers"].items():
        latency = stats["latency_ms"]
        table.add_row(
            name,
            str(stats["delivered"]),
            str(stats["failed"]),
            str(stats["requests"]),
            str(stats["retries"]),
            str(stats["fallbacks_from"]),
            _num(latency["p50"]),
            _num(latency["p95"]),
            _num(latency["max"]),
            f"{stats['limiter']['wait_seconds']:.1f}",
        )
    return table


def render_bulk_summary(
    console: Console,
    report: Any,
    stats: dict[str, Any] | None,
) -> None:
    """Print the summary of a bulk run (``bulk.BulkReport``) and its per-provider table.

    An interrupted or stopped run says how many rows it processed (the CLI adds how to resume).
    """
    from rich.markup import escape
    from rich.table import Table

    from .logs import mask_text

    counts = report.counts
    processed = report.done - report.skipped
    if report.dry_run:
        title = f"bulk dry run: {report.total_rows} rows in {report.elapsed:.1f} s"
    elif report.interrupted or report.stopped:
        title = (
            f"bulk {'interrupted' if report.interrupted else 'stopped'}: {processed} of "
            f"{report.total_rows} rows processed in {report.elapsed:.1f} s"
        )
    else:
        title = f"bulk summary: {report.total_rows} rows in {report.elapsed:.1f} s"
    table = Table(title=title, title_justify="left")
    for column in ("sent", "failed", "invalid", "duplicate", "skipped", "fallbacks", "uncertain"):
        table.add_column(column, justify="right")
    table.add_row(
        str(counts.get("sent", counts.get("ready", 0))),
        str(counts.get("failed", 0)),
        str(counts.get("invalid", 0)),
        str(counts.get("duplicate", 0)),
        str(report.skipped),
        str(report.fallbacks),
        str(report.uncertain),
    )
    console.print(table)
    if report.kinds:
        shown = ", ".join(
            f"{name} {report.kinds[name]}"
            for name in ("kakaotalk", "sms", "lms")
            if name in report.kinds
        )
        verb = "to send" if report.dry_run else "sent"
        console.print(f"messages {verb} by kind: {shown}")
    if stats is not None and stats["providers"]:
        console.print(provider_table(stats))
    for row, reason in report.invalid_rows[:20]:
        # The reason quotes the CSV cell: mask numbers (stderr is often mailed by cron) and
        # never let the cell's text be read as rich markup.
        console.print(f"[yellow]row {row}[/yellow]: {escape(mask_text(reason))}")
    if len(report.invalid_rows) > 20:
        console.print(
            f"... and {len(report.invalid_rows) - 20} more invalid rows in the results file"
        )
    if report.uncertain:
        console.print(
            f"[yellow]note:[/yellow] {report.uncertain} request(s) timed out after sending: "
            "some recipients may receive a message twice"
        )
    console.print(f"results: {escape(str(report.results_path))}")
