"""When a bulk run waits instead of failing rows: quiet hours, outages, systematic refusals.

A bulk run never records a row ``failed`` because no channel could be tried (SPEC §10):

- **Outage.** When a message ends with every channel of its row unavailable for now (circuit
  open, provider paused by a long Retry-After, limiter store unreachable: the error's
  ``unavailable`` attribute), the worker keeps the row and tries it again when the channel may
  be back. After ``max_outage`` seconds without a delivery (counted from the last delivery or
  the start of the run, quiet hours excluded) the run stops with ``OutageError`` (exit 75);
  rows still waiting are left unrecorded so that ``--resume`` sends them.
- **Quiet hours.** Inside the window (``QuietHours``, e.g. ``21:00-08:00`` in Asia/Seoul)
  no message is started; the run resumes when the window ends.
- **Systematic refusal.** ``RefusalStreak`` stops the run (``SystematicRefusalError``, exit 78)
  when ``SYSTEMATIC_REFUSALS`` rows in a row end in the same non-retryable refusal.

``SendGate`` is shared by the run's workers; its clocks and its wait are injected, so tests
move time by hand. Every wait is bounded: by the hint, by the max-outage deadline, by
``MAX_HOLD`` (to re-check a channel whose recovery time is unknown) and by the run stopping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from datetime import time as dt_time

from .config import parse_quiet_hours
from .errors import OutageError, SystematicRefusalError
from .events import Emit, RunPaused, RunResumed
from .models import Refusal

__all__ = [
    "MAX_HOLD",
    "MIN_HOLD",
    "SYSTEMATIC_REFUSALS",
    "QuietHours",
    "RefusalStreak",
    "SendGate",
]

#: a waiting row is tried again at least this often, and never sooner than ``MIN_HOLD``
MAX_HOLD = 30.0
MIN_HOLD = 0.5
#: how long a row waits when nothing says when its channel may be back (a trial in flight,
#: a limiter store that does not answer)
UNKNOWN_HOLD = 1.0
#: quiet hours are re-checked at least this often (the wall clock may jump: NTP, suspend)
QUIET_RECHECK = 60.0
#: rows in a row refused the same way that stop a run (SPEC §10)
SYSTEMATIC_REFUSALS = 20


@dataclass(frozen=True)
class QuietHours:
    """A daily window ``[start, end)`` in a time zone during which a bulk run sends nothing.

    A window whose end is before its start spans midnight::

        >>> quiet = QuietHours.parse("21:00-08:00", "Asia/Seoul")
        >>> quiet.resume_at(datetime(2026, 11, 30, 23, 0, tzinfo=quiet.zone)).hour
        8
    """

    start: dt_time
    end: dt_time
    zone: tzinfo
    timezone: str

    @classmethod
    def parse(cls, spec: str, timezone: str = "Asia/Seoul") -> QuietHours:
        """Return the window of ``"HH:MM-HH:MM"`` in ``timezone``; ValueError says what is wrong."""
        # Here: only a run with quiet hours pays for zoneinfo (4 ms of every bulk start-up).
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        start, end = parse_quiet_hours(spec)
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {timezone!r} (an IANA name such as Asia/Seoul)"
            ) from None
        return cls(start, end, zone, timezone)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.timezone}"

    def resume_at(self, when: datetime) -> datetime | None:
        """Return when the window that contains ``when`` ends, or None if ``when`` is outside."""
        local = when.astimezone(self.zone)
        now = local.time().replace(tzinfo=None)
        day = local.date()
        if self.start < self.end:
            inside = self.start <= now < self.end
        else:
            inside = now >= self.start or now < self.end
            if now >= self.start:
                day += timedelta(days=1)
        if not inside:
            return None
        return datetime.combine(day, self.end, tzinfo=self.zone)


class RefusalStreak:
    """Count rows in a row that end in the same refusal; say when the run must stop.

    A delivery or any other outcome ends the streak. Rows already failed in an earlier run
    (retried by ``--resume``) neither count nor end it: they are the rows most likely to be
    refused again, for reasons of their own.
    """

    def __init__(self, limit: int = SYSTEMATIC_REFUSALS) -> None:
        self.limit = limit
        self._signature: tuple[str, int | None, str] | None = None
        self._count = 0
        self._lock = threading.Lock()

    def observe(
        self, refusal: Refusal | None, *, retried: bool = False
    ) -> SystematicRefusalError | None:
        """Count one settled row; return the error that stops the run when the streak is full."""
        with self._lock:
            if retried and refusal is not None:
                return None
            if refusal is None:
                self._signature, self._count = None, 0
                return None
            if refusal.signature != self._signature:
                self._signature, self._count = refusal.signature, 0
            self._count += 1
            if self._count < self.limit:
                return None
            self._signature, self._count = None, 0
        return SystematicRefusalError(
            f"stopped: {self.limit} rows in a row were refused by {refusal.describe()}; "
            f"check the request format ([{refusal.provider}] request settings) and the "
            "account and credentials before sending the rest"
        )


class SendGate:
    """Decide, for the workers of one bulk run, when a message may be started.

    ``before_send()`` blocks through quiet hours; ``hold(...)`` keeps a row whose channels are
    all unavailable until they may be back; ``delivered()`` resets the outage clock. Both
    return False when the run is stopping: the worker then drops its row unrecorded. When
    ``max_outage`` passes without a delivery, ``on_stop(OutageError)`` is called once.
    ``wait(seconds)`` blocks at most that long (it should return early when the run stops).
    ``emit`` receives ``RunPaused`` / ``RunResumed`` for the progress line and the log.
    """

    def __init__(
        self,
        *,
        max_outage: float = 300.0,
        quiet_hours: QuietHours | None = None,
        stopping: Callable[[], bool] = lambda: False,
        on_stop: Callable[[BaseException], None] | None = None,
        emit: Emit | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        wait: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_outage <= 0:
            raise ValueError(f"max_outage must be positive, not {max_outage!r}")
        self.max_outage = float(max_outage)
        self.quiet_hours = quiet_hours
        self._stopping = stopping
        self._on_stop = on_stop
        self._emit = emit
        self._clock = clock
        self._wall = wall
        self._wait = wait
        self._lock = threading.Lock()
        #: the outage clock starts here: the start, the last delivery, shifted by quiet hours
        self._mark = clock()
        self._quiet_since: float | None = None
        self._pause: RunPaused | None = None
        self._shown: RunPaused | None = None
        self._expired = False
        #: seconds paused by quiet hours, and seconds of outages that ended (wall time during
        #: which rows waited for a channel, however many rows waited)
        self.quiet_s = 0.0
        self._outages_s = 0.0
        self._outage_since: float | None = None

    @property
    def outage_s(self) -> float:
        """Return the seconds rows have waited for a channel (the current outage included)."""
        with self._lock:
            since = self._outage_since
            return self._outages_s + (self._clock() - since if since is not None else 0.0)

    def before_send(self) -> bool:
        """Wait while quiet hours last; return False if the run is stopping."""
        while True:
            if self._stopping() or self._expired:
                return False
            if self.quiet_hours is None:
                return True
            wall = self._wall()
            now = datetime.fromtimestamp(wall, self.quiet_hours.zone)
            until = self.quiet_hours.resume_at(now)
            with self._lock:
                if until is None:
                    if self._quiet_since is not None:
                        # The pause does not count towards max-outage.
                        paused = self._clock() - self._quiet_since
                        self._mark += paused
                        self.quiet_s += paused
                        self._quiet_since = None
                        self._show(None)
                    return True
                if self._quiet_since is None:
                    self._quiet_since = self._clock()
                    self._show(RunPaused("quiet-hours", f"quiet hours {self.quiet_hours}", until))
            self._wait(max(MIN_HOLD, min(QUIET_RECHECK, until.timestamp() - wall)))

    def hold(self, reason: str, available_in: float | None) -> bool:
        """Keep a row whose channels are all unavailable; return True to try it again.

        Returns False when the run is stopping or ``max_outage`` has passed without a
        delivery (the first caller to notice reports ``OutageError``).
        """
        delay = UNKNOWN_HOLD if available_in is None else available_in
        delay = min(MAX_HOLD, max(MIN_HOLD, delay))
        with self._lock:
            now = self._clock()
            left = self._mark + self.max_outage - now
            if left <= 0:
                self._expire(reason)
                return False
            delay = min(delay, left)
            if self._outage_since is None:
                self._outage_since = now
            until = datetime.fromtimestamp(self._wall() + delay).astimezone()
            self._show(RunPaused("outage", reason, until))
        if self._stopping() or self._expired:
            return False
        self._wait(delay)
        return not (self._stopping() or self._expired)

    def delivered(self) -> None:
        """Record a delivery: the outage clock starts again and a shown outage pause ends."""
        with self._lock:
            now = self._clock()
            self._mark = max(self._mark, now)
            if self._outage_since is not None:
                self._outages_s += now - self._outage_since
                self._outage_since = None
            if self._pause is not None and self._pause.kind == "outage":
                self._show(None)

    def _expire(self, reason: str) -> None:
        if self._expired:
            return
        self._expired = True
        waited = self._clock() - self._mark
        error = OutageError(
            f"no provider could deliver for {_seconds(waited)} ([bulk] max-outage is "
            f"{_seconds(self.max_outage)}); last reason: {reason}"
        )
        if self._on_stop is not None:
            self._on_stop(error)

    def _show(self, pause: RunPaused | None) -> None:
        """Keep why the run waits; tell listeners when that starts, changes kind, is overdue."""
        self._pause = pause
        shown = self._shown
        if pause is None:
            self._shown = None
            if shown is not None and self._emit is not None:
                self._emit(RunResumed(shown.kind, shown.reason))
            return
        overdue = (
            shown is not None
            and shown.until is not None
            and shown.until.timestamp() <= self._wall()
        )
        if shown is None or shown.kind != pause.kind or overdue:
            self._shown = pause
            if self._emit is not None:
                self._emit(pause)


def _seconds(value: float) -> str:
    value = max(0.0, value)
    if value >= 120:
        return f"{value / 60:.0f} min"
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
