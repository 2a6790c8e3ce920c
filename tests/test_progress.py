"""Tests for msgsend.progress: the bulk display's figures, its narrow line and the summary."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from rich.console import Console

from msgsend.bulk import BulkReport
from msgsend.errors import InputError
from msgsend.events import RowSettled, RunPaused, RunResumed
from msgsend.progress import BulkProgress, Schedule, format_duration, render_bulk_summary
from msgsend.ratelimit import Limit, RateLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settle(progress: BulkProgress, status: str, n: int, *, fallback: bool = False) -> None:
    for row in range(n):
        progress.on_event(RowSettled(row + 2, "010-****-5678", status, fallback=fallback))


def make(total: int, schedule: Schedule | None, clock: Clock) -> BulkProgress:
    return BulkProgress(total, schedule=schedule, clock=clock, stream=io.StringIO())


def windows(count: int, period: float) -> Schedule:
    """A window strategy's schedule: the n-th send goes in window (n - 1) // count."""
    return Schedule(lambda n: ((n - 1) // count) * period if n > 0 else 0.0, count / period, period)


def test_the_schedule_is_the_limiters() -> None:
    limits = {"kakaotalk": Limit(100, 60.0)}
    with RateLimiter(limits, strategy="fixed-window", store="memory") as limiter:
        window = Schedule.of(limiter, "kakaotalk")
        # The first 100 go at once; sends 201-250 wait for the third window.
        assert [window.seconds_for(n) for n in (1, 100, 101, 250)] == [0, 0, 60, 120]
        assert window.per_second == pytest.approx(100 / 60)
    with RateLimiter(limits, strategy="token-bucket", store="memory") as limiter:
        # A burst of 100, then 100 a minute.
        assert Schedule.of(limiter, "kakaotalk").seconds_for(250) == pytest.approx(90.0)


def test_eta_is_the_later_of_the_limit_and_the_pace() -> None:
    clock = Clock()
    progress = make(250, windows(100, 60.0), clock)
    settle(progress, "sent", 100)
    progress.update(100, 250)
    # Rows 201-250 wait for the third window: 120 s after the start.
    assert progress.eta(1000.5, rate=200.0) == pytest.approx(119.5)
    # Latency-bound: the observed pace is slower than the limit allows.
    assert progress.eta(1000.5, rate=0.5) == pytest.approx(300.0)


def test_eta_counts_down_steadily_across_window_edges() -> None:
    """A 100/min sliding window sends in bursts; the ETA must not jump with them."""
    clock = Clock()
    progress = make(500, windows(100, 60.0), clock)
    shown = []
    done = 0
    for second in range(0, 241, 5):
        clock.now = 1000.0 + second
        if second % 60 == 0:  # a burst at each window edge
            settle(progress, "sent", 100)
            done += 100
            progress.update(done, 500)
        eta = progress.eta(clock.now, progress.rate(clock.now))
        assert eta is not None
        shown.append(eta)
    assert all(later <= earlier + 1e-9 for earlier, later in itertools.pairwise(shown))
    assert shown[0] == pytest.approx(240.0)


def test_resume_skips_neither_count_in_the_rate_nor_take_slots() -> None:
    clock = Clock()
    progress = make(2000, windows(100, 60.0), clock)
    progress.update(1900, 2000)  # rows settled by the earlier run, skipped at once
    clock.now += 10
    assert progress.rate(clock.now) == 0.0
    # 100 rows left: one window's worth, all at once.
    assert progress.eta(clock.now, 0.0) == 0.0
    settle(progress, "sent", 10)
    progress.update(1910, 2000)
    clock.now += 10
    assert progress.rate(clock.now) == pytest.approx(0.5)


def test_eta_while_paused_is_the_pause_then_the_schedule_never_zero() -> None:
    from datetime import UTC, datetime

    clock = Clock()
    wall = 1_800_000_000.0
    progress = BulkProgress(
        250, schedule=windows(100, 60.0), clock=clock, stream=io.StringIO(), wall=lambda: wall
    )
    settle(progress, "sent", 10)
    progress.update(10, 250)
    until = datetime.fromtimestamp(wall + 9 * 3600, UTC)
    progress.on_event(RunPaused("quiet-hours", "quiet hours 21:00-08:00 Asia/Seoul", until))
    # 9 h of quiet hours, then 240 rows at 100 a minute: two more windows.
    assert progress.eta(clock.now, progress.rate(clock.now)) == pytest.approx(9 * 3600 + 120)
    assert f"ETA 9h02m  waiting until {until:%H:%M:%S}: quiet hours" in progress.status_text()
    progress.on_event(RunPaused("outage", "sms circuit is open", until))
    assert progress.eta(clock.now, 0.0) is None  # an outage: nobody knows when it ends
    assert f"ETA -  waiting until {until:%H:%M:%S}: sms circuit is open" in progress.status_text()
    progress.on_event(RunResumed("outage", "delivered"))
    assert progress.eta(clock.now, 0.0) == pytest.approx(120.0)


def test_a_narrow_terminal_keeps_done_total_and_eta() -> None:
    clock = Clock()
    progress = make(2000, windows(100, 60.0), clock)
    settle(progress, "sent", 120)
    settle(progress, "failed", 3)
    progress.update(123, 2000)
    clock.now += 30
    for width in (40, 60, 80, 120):
        line = progress.line(width)
        assert len(line) <= width
        assert "123/2000" in line and "ETA " in line
    assert "sent 120" in progress.line(120)


def test_a_terminal_shows_the_line(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=60)
    progress = BulkProgress(10, console=console)
    with progress:
        settle(progress, "sent", 10)
        progress.update(10, 10)
    assert "10/10" in out.getvalue()


def test_plain_lines_without_a_terminal() -> None:
    stream = io.StringIO()
    progress = BulkProgress(5, stream=stream)
    with progress:
        settle(progress, "sent", 4, fallback=True)
        settle(progress, "invalid", 1)
        progress.update(5, 5)
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .startswith("bulk: 5/5 rows  sent 4  fallback 4  failed 0  invalid 1")
    )


def test_a_run_refused_before_its_first_row_leaves_no_progress_line() -> None:
    stream = io.StringIO()
    with pytest.raises(InputError), BulkProgress(5, stream=stream):
        raise InputError("no recipient column")
    assert stream.getvalue() == ""


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_interrupted_summary_counts_the_rows_processed() -> None:
    report = BulkReport(Path("in.csv"), Path("in.results.csv"), total_rows=2000)
    report.sent, report.failed, report.elapsed, report.interrupted = 100, 6, 5.4, True
    out = io.StringIO()
    render_bulk_summary(Console(file=out, width=120), report, None)
    assert "106 of 2000 rows processed in 5.4 s" in out.getvalue()


def test_a_pause_shows_on_the_line_until_the_run_resumes() -> None:
    clock = Clock()
    progress = make(10, None, clock)
    progress.on_event(RunPaused("quiet-hours", "quiet hours"))
    assert "waiting: quiet hours" in progress.line(120)
    progress.on_event(RunResumed("quiet-hours", "quiet hours ended"))
    assert "waiting" not in progress.line(120)
