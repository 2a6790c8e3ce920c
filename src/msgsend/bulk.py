"""Send every row of a CSV file through a bounded worker pool and record each outcome (SPEC §7).

Row numbers: row 1 is the first data record after the header row; blank records use up a
number but are neither sent nor recorded (see ``msgsend.csvinput``).

Options travel as one ``BulkOptions``. Each settled row becomes one line of the results file
(``msgsend.results``: the format, resume reading and locking); a dry run sends nothing and
writes a preview instead. With ``resume`` the rows an earlier run settled (``sent``, ``invalid``,
``duplicate``) are skipped and ``failed`` rows and rows without a line are processed again. The
duplicate index is rebuilt from the whole input, so a repeat of a row sent in an earlier run is
still a duplicate. The input is read once: a settled row is not validated again (its recorded
recipient is compared with its cell, and a sent row's digest goes into the duplicate index
unless no row is left to process). Before anything is sent or recorded, the recorded recipients
are compared with the input's rows: a mismatch means the results belong to another file
(InputError). That check runs in the same pass, holding back what would be recorded or sent
until the last recorded row has been compared; with more than ``HOLD_LIMIT`` rows to hold (many
failed rows), it is a pass of its own first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from array import array
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from .csvinput import CsvInfo, CsvRecord, CsvRow, CsvSource, _clean, inspect_csv
from .errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CredentialsRefusedError,
    InputError,
    ResultsWriteError,
    UsageError,
    exit_code_for,
    most_severe,
)
from .events import Emit, RowSettled, RunStopped
from .formats import bulk_message_id
from .models import (
    Channel,
    DeliveryResult,
    Outgoing,
    mask_recipient,
    message_kind,
    normalize_recipient,
    sms_bytes,
)
from .outage import QuietHours, RefusalStreak, SendGate
from .report import RowCounts
from .results import (
    DUPLICATE,
    FAILED,
    INVALID,
    READY,
    SENT,
    STATUS_CODES,
    Previous,
    ResultsSink,
    Timestamps,
    default_preview_path,
    default_results_path,
    open_preview,
    open_results,
    recipient_crc,
)

__all__ = [
    "BulkOptions",
    "BulkReport",
    "CsvInfo",
    "SupportsSend",
    "inspect_csv",
    "send_bulk",
]

log = logging.getLogger(__name__)

_SETTLED = frozenset({STATUS_CODES[SENT], STATUS_CODES[INVALID], STATUS_CODES[DUPLICATE]})


class SupportsSend(Protocol):
    """The message service bulk sends through (``Sender``); must be thread-safe.

    ``overflow``, ``refused_by`` and ``before_attempt`` (``_SendExtras``) are passed only when
    in use: a sender for a run without overflow or quiet hours needs none of them. A sender
    that also has ``send_prepared(message: Outgoing, **same keywords)`` (``Sender``) gets each
    row as the ``Outgoing`` csvinput checked, instead of ``send``, and does not check it again.
    """

    def send(
        self,
        recipient: str,
        text: str,
        *,
        via: Channel = Channel.KAKAOTALK,
        fallback: bool | None = None,
        overflow: bool = False,
        message_id: str | None = None,
        refused_by: Collection[str] = (),
        before_attempt: Callable[[], bool] | None = None,
    ) -> DeliveryResult:
        """Send one message; never raise for provider failures."""
        ...


def _prepared_sending(sender: SupportsSend | None) -> Callable[..., DeliveryResult]:
    """Return how a row that csvinput checked is sent: as an ``Outgoing``, checked once.

    ``Sender.send_prepared`` does not check it again; a sender with only ``send`` gets its
    fields (a dry run, with no sender, never sends), and so does a subclass that overrides
    ``send`` alone: bulk must not go around what it added.
    """
    prepared: Callable[..., DeliveryResult] | None = getattr(sender, "send_prepared", None)
    if prepared is not None and not _overrides_send_alone(sender):
        return prepared

    def send(message: Outgoing, **keywords: Any) -> DeliveryResult:
        assert sender is not None
        return sender.send(message.recipient, message.text, via=message.channel, **keywords)

    return send


def _overrides_send_alone(sender: object) -> bool:
    """Return whether ``sender``'s class overrides ``send`` below the class that defines
    ``send_prepared`` (a ``Sender`` subclass that logs or filters in ``send``)."""
    cls = type(sender)
    owner = next((klass for klass in cls.__mro__ if "send_prepared" in vars(klass)), None)
    return owner is not None and getattr(cls, "send", None) is not getattr(owner, "send", None)


class _SendExtras(TypedDict, total=False):
    """The keyword arguments of ``SupportsSend.send`` a row passes only when they are in use."""

    #: the run sends KakaoTalk rows by SMS when KakaoTalk's budget is full
    overflow: bool
    #: providers that answered an earlier try of this waiting row with a 5xx
    refused_by: Collection[str]
    #: quiet hours: asked before every retry and fallback
    before_attempt: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class BulkOptions:
    """How ``send_bulk`` reads, sends and records a file (the ``bulk`` command's options)."""

    #: message text with ``{column}`` placeholders; None reads a message column
    template: str | None = None
    #: the channel of rows without a ``via`` value
    via: Channel = Channel.KAKAOTALK
    #: KakaoTalk -> SMS fallback (also: a message too long for KakaoTalk goes by SMS);
    #: None leaves the fallback to the sender's configuration and lets long messages go by SMS
    fallback: bool | None = None
    #: parallel sends
    concurrency: int = 8
    #: results (or preview) file; default beside the input
    results_path: Path | None = None
    resume: bool = False
    dry_run: bool = False
    #: input encoding; None detects UTF-8 or CP949
    encoding: str | None = None
    allow_duplicates: bool = False
    #: seconds without a delivery while rows wait for a channel before the run stops (75)
    max_outage: float = 300.0
    #: no message is started inside this window; None sends at any hour
    quiet_hours: QuietHours | None = None
    #: a template field left empty is sent as is instead of making the row invalid
    allow_empty_fields: bool = False
    #: the recipient / message column by name, instead of the names msgsend knows
    recipient_column: str | None = None
    message_column: str | None = None
    #: send a KakaoTalk row by SMS when KakaoTalk's budget is full and SMS's is not (rows whose
    #: ``via`` cell names a channel excepted); needs fallback
    overflow: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {self.concurrency}")
        object.__setattr__(self, "via", Channel(str(self.via).strip().lower()))
        if self.results_path is not None:
            object.__setattr__(self, "results_path", Path(self.results_path))


@dataclass(slots=True)
class BulkReport(RowCounts):
    """The outcome of ``send_bulk``: counts per status and channel, and the exit code.

    The row counts (``RowCounts``: sent, failed, kinds, fallbacks, retries...) come from
    listening to the run's ``RowSettled`` events, one per recorded row; the rest is the
    run's own (rows skipped by resume, blank records, time, why it stopped).
    """

    path: Path
    results_path: Path
    dry_run: bool = False
    encoding: str = ""
    #: rows of the file (blank records excluded)
    total_rows: int = 0
    #: rows settled by an earlier run and skipped by resume; ``previously`` splits them by status
    skipped: int = 0
    previously: dict[str, int] = field(default_factory=dict)
    blank: int = 0
    #: seconds
    elapsed: float = 0.0
    interrupted: bool = False
    #: why the run stopped before the end of the file (outage, systematic refusal, refused
    #: credentials), and that stop's exit code; rows not settled are left for ``--resume``
    stopped: str | None = None
    stop_code: int = EXIT_OK
    #: seconds rows waited for a channel to come back (wall time), and paused by quiet hours
    outage_wait_s: float = 0.0
    quiet_s: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, ``skipped`` (settled by an earlier run) included."""
        return {
            SENT: self.sent,
            FAILED: self.failed,
            INVALID: self.invalid,
            DUPLICATE: self.duplicate,
            READY: self.ready,
            "skipped": self.skipped,
        }

    @property
    def done(self) -> int:
        """Rows settled so far, skipped ones included."""
        return self.processed + self.skipped

    @property
    def left(self) -> int:
        """Rows neither settled now nor by an earlier run: what ``--resume`` would send."""
        return max(0, self.total_rows - self.done)

    @property
    def exit_code(self) -> int:
        """SPEC §8: 130 interrupted, the stop's code (78, 75), 1 if a row failed or is invalid.

        When several apply the SPEC's precedence decides (130 > 78 > 75 > 74 > 70 > 1).
        """
        problem = self.failed or self.invalid or self.previously.get(INVALID, 0)
        return most_severe(
            EXIT_INTERRUPTED if self.interrupted else EXIT_OK,
            self.stop_code,
            EXIT_FAILED if problem else EXIT_OK,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the ``bulk --json`` document."""
        return {
            "file": str(self.path),
            "results": str(self.results_path),
            "dry_run": self.dry_run,
            "encoding": self.encoding,
            "total_rows": self.total_rows,
            "sent": self.sent,
            "failed": self.failed,
            "invalid": self.invalid,
            "duplicate": self.duplicate,
            "ready": self.ready,
            "skipped": self.skipped,
            "previously": dict(self.previously),
            "blank": self.blank,
            "sent_by_channel": dict(self.sent_by_channel),
            "kinds": dict(self.kinds),
            "fallbacks": self.fallbacks,
            "overflows": self.overflows,
            "uncertain": self.uncertain,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "stopped": self.stopped,
            "left": self.left,
            "outage_wait_s": round(self.outage_wait_s, 3),
            "quiet_s": round(self.quiet_s, 3),
            "exit_code": self.exit_code,
            "invalid_rows": [{"row": r, "reason": why} for r, why in self.invalid_rows],
            "failed_rows": [{"row": r, "error": why} for r, why in self.failed_rows],
        }


class _DigestIndex:
    """Map 64-bit message digests to the first row that had them, in two flat arrays.

    Open addressing with linear probing: 12 bytes a slot at most 4/5 full (15-30 bytes a
    distinct row, about a twentieth of what a dict of ints costs; the digests are uniform, so
    probes stay short). Growing holds the old and new arrays at once: the peak is 1.5 times
    the table. Digest 0 marks an empty slot.
    """

    def __init__(self) -> None:
        self._keys = array("Q", [0]) * 1024
        self._rows = array("I", [0]) * 1024
        self._mask = 1023
        self._size = 0

    def first(self, digest: int, row: int) -> int:
        """Return the row recorded for ``digest``, recording ``row`` if there is none."""
        keys = self._keys
        mask = self._mask
        i = digest & mask
        while True:
            key = keys[i]
            if key == 0:
                keys[i] = digest
                self._rows[i] = row
                self._size += 1
                if self._size * 5 > mask * 4:
                    self._grow()
                return row
            if key == digest:
                return self._rows[i]
            i = (i + 1) & mask

    def _grow(self) -> None:
        old_keys, old_rows = self._keys, self._rows
        size = (self._mask + 1) * 2
        self._keys = keys = array("Q", [0]) * size
        self._rows = rows = array("I", [0]) * size
        self._mask = mask = size - 1
        for key, row in zip(old_keys, old_rows, strict=True):
            if key:
                i = key & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = key
                rows[i] = row


def _digest(recipient: str, message: str) -> int:
    data = f"{recipient}\x00{message}".encode("utf-8", "surrogatepass")
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return value or 1


class _ResultsMismatchError(InputError):
    """The results file records other recipients than the input has: another file's results."""


def _recorded_here(source: CsvSource, record: CsvRecord, crc: int) -> bool:
    """Tell whether ``record`` holds the recipient recorded with checksum ``crc``.

    A results line records the normalised number, or for a row refused for its number the
    cell itself; comparing the cell first spares normalising numbers already in shape.
    """
    fields = record.fields
    if fields is None:
        return recipient_crc("") == crc  # a malformed record is recorded without a recipient
    cell = source.recipient_cell(fields)
    if recipient_crc(cell) == crc:
        return bool(cell) or bool("".join(fields).strip())  # a blank record is never recorded
    if source.recipient_index >= len(fields):
        return False
    try:
        return recipient_crc(normalize_recipient(fields[source.recipient_index])) == crc
    except InputError:
        return False


def _mismatch(source: CsvSource, previous: Previous, path: Path, record: CsvRecord) -> InputError:
    fields = record.fields or []
    cell = source.recipient_cell(fields) if "".join(fields).strip() else ""
    shown = mask_recipient(cell) if cell else "(nothing)"
    return _ResultsMismatchError(
        f"{path} does not match {source.path}: row {record.row} was recorded "
        f"{previous.status_name(record.row)} for another recipient (the file has {shown} "
        "there); the input changed since that run or the results belong to another file: "
        "choose another file with --results"
    )


def _verify_previous(source: CsvSource, previous: Previous, path: Path) -> None:
    """Refuse to resume when the recorded recipients are not the input's (a pass of its own)."""
    status, crc = previous.status, previous.crc
    last = previous.last_recorded
    with source.records() as records:
        for record in records:
            if status[record.row] and not _recorded_here(source, record, crc[record.row]):
                raise _mismatch(source, previous, path, record)
            if record.row >= last:
                return


_STOP_ITEM: CsvRow | None = None
#: rows settled by an earlier run are counted (and the progress told) this many at a time
_SKIP_BATCH = 4096
#: at most this many rows are held back while resume checks the recorded recipients in the
#: same pass; with more (many failed rows), the check is a pass of its own first
HOLD_LIMIT = 4096


class _Run:
    """One bulk run: a producer (the caller's thread), workers and a single locked writer."""

    def __init__(
        self,
        *,
        source: CsvSource,
        sender: SupportsSend | None,
        sink: ResultsSink,
        report: BulkReport,
        previous: Previous | None,
        fallback: bool | None,
        concurrency: int,
        allow_duplicates: bool,
        stop: threading.Event | None,
        on_progress: Callable[[int, int], None] | None,
        emit: Emit | None,
        max_outage: float,
        quiet_hours: QuietHours | None = None,
        overflow: bool = False,
        clocks: RunClocks | None = None,
    ) -> None:
        self.source = source
        self.sender = sender
        # A message id (a uuid5 per row) is made only when some provider's format sends one.
        self.make_ids = bool(getattr(sender, "makes_message_ids", True))
        self.send_prepared = _prepared_sending(sender)
        self.sink = sink
        self.report = report
        self.previous = previous
        self.fallback = fallback
        self.overflow = overflow
        self.concurrency = concurrency
        self.index = None if allow_duplicates else _DigestIndex()
        self.stop = stop
        self.on_progress = on_progress
        self.emit = emit
        self.total = source.info.total_rows
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.error: BaseException | None = None
        self.closed = False
        self.queue: queue.Queue[CsvRow | None] = queue.Queue(maxsize=2 * concurrency)
        self.workers: list[threading.Thread] = []
        self.clock = Timestamps()
        #: the first reason the run stopped early, as an error (its class gives the exit code)
        self.stopped: BaseException | None = None
        clocks = clocks or RunClocks()
        self.gate = SendGate(
            max_outage=max_outage,
            quiet_hours=quiet_hours,
            stopping=self.stopping,
            on_stop=self.stop_run,
            emit=emit,
            clock=clocks.monotonic,
            wall=clocks.wall,
            wait=clocks.wait or self.wait,
        )
        self.streak = RefusalStreak()

    def stopping(self) -> bool:
        return self.halt.is_set() or (self.stop is not None and self.stop.is_set())

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.halt.set()

    def stop_run(self, exc: BaseException) -> None:
        """Stop taking rows because of ``exc``; in-flight rows finish, the rest stay unrecorded."""
        with self.lock:
            kept = self.stopped
            if kept is None:
                self.stopped = exc
            else:
                # Several reasons: keep the one whose code wins (78 over 75).
                new, old = exit_code_for(exc), exit_code_for(kept)
                if new != old and most_severe(new, old) == new:
                    self.stopped = exc
            changed = self.stopped is not kept
        if changed:  # once per reason: every worker meeting the same refusal says it again
            log.warning("bulk: %s", exc)
        self.halt.set()

    def wait(self, seconds: float) -> None:
        """Wait up to ``seconds``, returning soon after the run starts stopping."""
        deadline = time.monotonic() + seconds
        while not self.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.halt.wait(min(left, 0.25))

    # -- producer ---------------------------------------------------------------------------

    def produce(
        self, records: Iterator[CsvRecord], dry_run: bool, *, verify_until: int = 0
    ) -> None:
        """Settle or queue every row until the file ends or a stop is requested.

        Rows an earlier run settled are skipped without validating them: their recorded
        recipient is compared with the cell, and a sent row's message digest still goes into
        the duplicate index (unless no row is left to process). Up to row ``verify_until``
        the recorded recipients are being checked: what would be recorded or sent is held
        back until then, so results of another file are refused before anything happens.
        """
        source = self.source
        previous = self.previous
        status = previous.status if previous is not None else bytearray()
        crc = previous.crc if previous is not None else None
        path = self.report.results_path
        sent = STATUS_CODES[SENT]
        held: list[Callable[[], None]] | None = [] if verify_until else None
        skipped = 0
        for record in records:
            if self.stopping():
                break  # rows held back or not reached stay unrecorded: resume sends them
            row = record.row
            code = status[row] if row < len(status) else 0
            if held is not None:
                assert previous is not None and crc is not None
                if code and not _recorded_here(source, record, crc[row]):
                    raise _mismatch(source, previous, path, record)
            if code in _SETTLED:
                if code == sent and self.index is not None:
                    self.index_settled(record)
                skipped += 1
                if skipped >= _SKIP_BATCH:
                    self.skip(skipped)
                    skipped = 0
            else:
                if skipped:
                    self.skip(skipped)
                    skipped = 0
                action = self.decide(source.validate(record), dry_run)
                if held is None:
                    action()
                else:
                    held.append(action)
            if held is not None and row >= verify_until:
                for action in held:
                    action()
                held = None
        if skipped:
            self.skip(skipped)
        if not self.stopping():
            for action in held or ():
                action()

    def index_settled(self, record: CsvRecord) -> None:
        """Put the digest of a row an earlier run sent into the duplicate index."""
        assert self.index is not None and record.fields is not None
        fields = record.fields
        recipient = normalize_recipient(fields[self.source.recipient_index])
        digest = _digest(recipient, self.source.render(fields))
        self.index.first(digest, record.row)

    def decide(self, item: CsvRow, dry_run: bool) -> Callable[[], None]:
        """Return what to do with a row to process: record it, or queue it for sending."""
        if item.blank:
            return self.count_blank
        first = item.row
        if item.error is None and self.index is not None:
            assert item.message is not None
            first = self.index.first(_digest(item.recipient, item.message), item.row)
        if item.error is not None:
            return functools.partial(self.record, item, INVALID, error=item.error)
        if first != item.row:
            return functools.partial(
                self.record, item, DUPLICATE, error=f"duplicate of row {first}"
            )
        if dry_run:
            return functools.partial(
                self.record, item, READY, channel=item.channel, error=item.note or None
            )
        return functools.partial(self.enqueue, item)

    def count_blank(self) -> None:
        self.report.blank += 1

    def enqueue(self, item: CsvRow) -> None:
        while True:
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                if self.stopping():
                    return

    def skip(self, count: int) -> None:
        """Count ``count`` rows an earlier run settled (they are skipped in batches)."""
        with self.lock:
            self.report.skipped += count
            self.progress()

    # -- workers ----------------------------------------------------------------------------

    def start(self) -> None:
        for number in range(self.concurrency):
            thread = threading.Thread(target=self.work, name=f"msgsend-bulk-{number}", daemon=True)
            thread.start()
            self.workers.append(thread)

    def work(self) -> None:
        assert self.sender is not None
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.stopping():
                continue  # taken after the stop: not sent, no line, resume picks it up
            self.send_row(item)

    def extras(self, item: CsvRow, earlier: DeliveryResult | None) -> _SendExtras:
        """Return the optional ``send`` arguments this row needs (``_SendExtras``)."""
        extras: _SendExtras = {}
        if self.overflow and not item.via_cell:  # a row's own ``via`` cell is kept
            extras["overflow"] = True
        if earlier is not None and earlier.refused_by:
            # A waiting row's earlier 5xx answers are not counted again by the breakers.
            extras["refused_by"] = earlier.refused_by
        if self.gate.quiet_hours is not None:
            # Quiet hours are checked before each attempt, retries and fallback too.
            extras["before_attempt"] = self.gate.before_send
        return extras

    def send_row(self, item: CsvRow) -> None:
        """Send one row; keep it while no channel can take it; record what settles it.

        A row is never recorded failed for want of a channel: it waits (``SendGate.hold``)
        and, if the run stops meanwhile, stays unrecorded so that ``--resume`` sends it.
        """
        assert self.sender is not None
        assert item.message is not None and item.channel is not None
        earlier: DeliveryResult | None = None
        while True:
            if not self.gate.before_send():
                return  # stopping (or max-outage passed): unrecorded, resume sends it
            try:
                message_id = (
                    bulk_message_id(
                        str(self.report.results_path), item.row, item.recipient, item.message
                    )
                    if self.make_ids
                    else None
                )
                result = self.send_prepared(
                    Outgoing(item.recipient, item.message, item.channel, item.note),
                    fallback=self.fallback,
                    message_id=message_id,
                    **self.extras(item, earlier),
                )
            except InputError as exc:
                self.record(item, INVALID, error=str(exc))
                return
            except Exception as exc:
                # A bug, not an answer: the row stays unrecorded (never failed without an
                # attempt; --resume sends it) and the run stops instead of failing every row.
                log.exception("bulk: the sender raised for row %d", item.row)
                self.stop_run(
                    RuntimeError(
                        f"stopped: internal error on row {item.row}: {type(exc).__name__}: "
                        f"{exc}; the row is not recorded"
                    )
                )
                return
            if earlier is not None:
                _add_earlier_tries(result, earlier)
            if result.ok:
                self.gate.delivered()
            elif result.credentials_refused:
                self.stop_run(
                    CredentialsRefusedError(
                        f"stopped: every provider row {item.row} could use refused our "
                        f"credentials ({result.error}); nothing more can be delivered"
                    )
                )
                if not result.attempts:
                    return  # refused before any request: unrecorded, resume sends it
            elif result.unavailable:
                earlier = result
                if self.gate.hold(result.error or "no channel available", result.available_in):
                    continue
                return
            self.record_result(item, result)
            return

    def finish_workers(self, wait: bool) -> None:
        """Send every worker its end marker; join them when ``wait``."""
        if not wait:
            # Interrupted: drop queued rows (not sent, no line) so the markers fit.
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            for _ in self.workers:
                try:
                    self.queue.put_nowait(_STOP_ITEM)
                except queue.Full:
                    break
            return
        # Never an untimed block on the main thread: a signal the kernel hands to another
        # thread runs its Python handler only when the main thread next runs bytecode, so an
        # untimed join of workers paused in quiet hours would leave Ctrl-C unheard for hours.
        for _ in self.workers:
            while True:
                try:
                    self.queue.put(_STOP_ITEM, timeout=_MAIN_THREAD_TICK)
                    break
                except queue.Full:
                    continue
        for thread in self.workers:
            while thread.is_alive():
                thread.join(_MAIN_THREAD_TICK)

    # -- recording --------------------------------------------------------------------------

    def record_result(self, item: CsvRow, result: DeliveryResult) -> None:
        ok = result.status == SENT
        retried = (
            self.previous is not None and self.previous.status[item.row] == STATUS_CODES[FAILED]
        )
        systematic = self.streak.observe(None if ok else result.refusal, retried=retried)
        if systematic is not None:
            self.stop_run(systematic)
        notes = [item.note or result.note] if item.note or result.note else []
        if ok and result.overflow:
            notes.append("overflow")
        if ok and result.uncertain:
            notes.append(
                f"{result.uncertain} read timeout(s): may have been delivered more than once"
            )
        if not ok:
            notes.append(result.error or "failed")
        error = "; ".join(notes)
        self.record(
            item,
            SENT if ok else FAILED,
            channel=result.channel,
            fallback=result.fallback,
            attempts=result.attempts,
            error=error or None,
            latency_ms=result.latency_ms,
            overflow=ok and result.overflow,
            retries=result.retries,
            uncertain=result.uncertain,
        )

    def record(
        self,
        item: CsvRow,
        status: str,
        *,
        channel: str | None = None,
        fallback: bool = False,
        attempts: int = 0,
        error: str | None = None,
        latency_ms: float | None = None,
        overflow: bool = False,
        retries: int = 0,
        uncertain: int = 0,
    ) -> None:
        """Write the row's line; then the report and the caller's listeners get ``RowSettled``."""
        error = _clean(error) if error else None
        kind = ""
        if channel and item.message and status in (SENT, FAILED, READY):
            kind = message_kind(item.message, channel).value
        values = [
            str(item.row),
            item.recipient,
            status,
            channel or "",
            "true" if fallback else "false",
            str(attempts),
            error or "",
            f"{latency_ms:.1f}" if latency_ms is not None else "",
            self.clock.now(),
            kind,
        ]
        if self.sender is None:  # the preview's bytes and message columns
            values.append(str(sms_bytes(item.message)) if item.message else "")
            values.append(item.message or "")
        with self.lock:
            if self.closed:
                return  # interrupted: the row is in flight for resume's purposes
            try:
                self.sink.write(values)
            except ResultsWriteError as exc:
                # Stop at once: rows still in flight end unrecorded and resume sends them.
                self.closed = True
                self.fail(
                    ResultsWriteError(f"{exc}; row {item.row} ended {status} but is not recorded")
                )
                return
            event = RowSettled(
                row=item.row,
                recipient_masked=mask_recipient(item.recipient),
                status=status,
                channel=channel,
                fallback=fallback,
                attempts=attempts,
                error=error,
                latency_ms=latency_ms,
                kind=kind or None,
                overflow=overflow,
                retries=retries,
                uncertain=uncertain,
            )
            # The report counts the row as any listener would; then the caller's listeners.
            self.report.on_event(event)
            if self.emit is not None:
                try:
                    self.emit(event)
                except Exception as exc:
                    self.fail(exc)
            self.progress()

    def progress(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(self.report.done, self.total)
        except Exception as exc:
            self.fail(exc)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.sink.close()


def _add_earlier_tries(result: DeliveryResult, earlier: DeliveryResult) -> None:
    """Count into ``result`` the attempts of the tries a waiting row made before it."""
    result.attempts += earlier.attempts
    result.retries += earlier.retries
    result.uncertain += earlier.uncertain
    result.limiter_wait_s += earlier.limiter_wait_s
    for channel, count in earlier.attempts_by_channel.items():
        result.attempts_by_channel[channel] = result.attempts_by_channel.get(channel, 0) + count


#: the longest the main thread blocks at once, so a pending signal handler runs (Ctrl-C)
_MAIN_THREAD_TICK = 0.2


@dataclass(frozen=True)
class RunClocks:
    """The clocks and the wait a bulk run uses for outages and quiet hours (tests inject them).

    ``wait=None`` waits on the run itself, returning early when it stops.
    """

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    wait: Callable[[float], None] | None = None


def results_target(path: Path, results: Path | None, *, dry_run: bool) -> Path:
    """Return where a run over ``path`` writes: ``results``, or the file beside the input."""
    if results is not None:
        return Path(results)
    return default_preview_path(path) if dry_run else default_results_path(path)


def send_bulk(
    path: str | os.PathLike[str],
    sender: SupportsSend | None,
    options: BulkOptions | None = None,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    emit: Emit | None = None,
    info: CsvInfo | None = None,
    clocks: RunClocks | None = None,
) -> BulkReport:
    """Send every row of a CSV file, recording each outcome in a results file.

    Every problem with the file as a whole (missing, not text, no header, bad template,
    results file in the way) raises before anything is sent. Setting ``stop`` stops taking
    rows; in-flight sends finish and are recorded, and the report says ``interrupted``.
    ``on_progress(done, total)`` and ``emit`` (a ``RowSettled`` event per row) are called from
    worker threads, one at a time.
    ``sender`` may be None for a dry run. ``info``, from ``inspect_csv`` of the same file,
    saves reading the file twice.

    A row whose channels are all unavailable for now waits for them; after
    ``options.max_outage`` seconds without a delivery the run stops (``report.stopped``, exit
    75). Inside ``options.quiet_hours`` nothing is sent. ``emit`` receives ``RunPaused`` /
    ``RunResumed`` when the run starts and stops waiting, and ``RunStopped`` when it stops
    early. Rows refused the same way ``SYSTEMATIC_REFUSALS`` times in a row, or providers all
    refusing the credentials, stop it with exit 78. A stopped run leaves the rows it did not
    settle unrecorded: ``--resume`` sends them. ``clocks`` replaces the clocks and the wait
    (tests).

    Example::

        options = BulkOptions(template="{name}님, 주문이 출발했어요")
        report = send_bulk("customers.csv", sender, options)
        raise SystemExit(report.exit_code)
    """
    options = options if options is not None else BulkOptions()
    dry_run = options.dry_run
    if sender is None and not dry_run:
        raise ValueError("a sender is required unless dry_run is set")
    if dry_run and options.resume:
        raise UsageError("--dry-run and --resume exclude each other: a dry run sends nothing")
    started = time.monotonic()
    source = CsvSource(
        path,
        template=options.template,
        via=options.via,
        encoding=options.encoding,
        info=info,
        recipient_column=options.recipient_column,
        message_column=options.message_column,
        allow_empty_fields=options.allow_empty_fields,
        fallback=options.fallback is not False,
    )
    info = source.info
    target = results_target(info.path, options.results_path, dry_run=dry_run)
    report = BulkReport(
        path=info.path,
        results_path=target,
        dry_run=dry_run,
        encoding=info.encoding,
        total_rows=info.total_rows,
    )
    previous: Previous | None = None
    sink: ResultsSink
    if dry_run:
        sink = open_preview(target)
    else:
        sink, previous = open_results(
            target, last_row=info.last_row, input_path=info.path, resume=options.resume
        )
    run = _Run(
        source=source,
        sender=None if dry_run else sender,
        sink=sink,
        report=report,
        previous=previous,
        fallback=options.fallback,
        concurrency=options.concurrency,
        allow_duplicates=options.allow_duplicates,
        stop=stop,
        on_progress=on_progress,
        emit=emit,
        max_outage=options.max_outage,
        quiet_hours=options.quiet_hours,
        overflow=options.overflow,
        clocks=clocks,
    )
    log.info(
        "bulk: %s, %d rows (%s), results in %s%s",
        info.path,
        info.total_rows,
        info.encoding,
        target,
        " (dry run)" if dry_run else "",
    )
    verify_until = settled = 0
    if previous is not None and previous.lines:
        settled = previous.count(SENT, INVALID, DUPLICATE)
        for name in (SENT, INVALID, DUPLICATE):
            if previous.count(name):
                report.previously[name] = previous.count(name)
        if settled == info.total_rows:
            run.index = None  # every row is settled: no duplicate is left to find
        verify_until = previous.last_recorded
    try:
        if previous is not None and verify_until - settled > HOLD_LIMIT:
            _verify_previous(source, previous, target)  # too many rows to hold back
            verify_until = 0
        if not dry_run:
            run.start()
        try:
            with source.records() as records:
                run.produce(records, dry_run, verify_until=verify_until)
        except _ResultsMismatchError:
            raise
        except InputError as exc:
            # The file became unreadable mid-way: let in-flight rows finish and be recorded.
            run.fail(
                InputError(
                    f"{exc}; rows settled so far are recorded in {target}: "
                    "fix the file and run again with --resume"
                )
            )
        if not dry_run:
            run.finish_workers(wait=True)
    except BaseException:
        # KeyboardInterrupt or a bug: every recorded line is already written; close cleanly
        # and leave rows in flight unrecorded (resume sends them again).
        run.halt.set()
        run.finish_workers(wait=False)
        with contextlib.suppress(ResultsWriteError):  # the error under way says more
            run.close()
        raise
    try:
        run.close()
    except ResultsWriteError as exc:
        run.fail(exc)
    if run.error is not None:
        raise run.error
    report.elapsed = time.monotonic() - started
    report.interrupted = report.done < report.total_rows and stop is not None and stop.is_set()
    if run.stopped is not None:
        report.stopped = str(run.stopped)
        report.stop_code = exit_code_for(run.stopped)
        if emit is not None:
            emit(RunStopped(report.stopped, report.stop_code, report.left))
    report.outage_wait_s = run.gate.outage_s
    report.quiet_s = run.gate.quiet_s
    log.info(
        "bulk: %d sent, %d failed, %d invalid, %d duplicate, %d skipped in %.1f s%s%s",
        report.sent,
        report.failed,
        report.invalid,
        report.duplicate,
        report.skipped,
        report.elapsed,
        " (interrupted)" if report.interrupted else "",
        f" (stopped, {report.left} rows left: {report.stopped})" if report.stopped else "",
    )
    return report
