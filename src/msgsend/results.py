"""The bulk results file and the dry-run preview: format, resume reading, locking (SPEC §7, §10).

Results format v2 (``FILE.results.csv`` beside the input unless ``--results`` names one):
UTF-8 with a BOM (so that Excel shows Korean text), one line per row in the order rows finish::

    row,recipient,status,channel,fallback,attempts,error,latency_ms,finished_at,kind

``status`` is ``sent``, ``failed``, ``invalid`` or ``duplicate``; ``error`` holds the reason, or
for a ``sent`` row a note (a read timeout means it may have arrived twice; a message too long
for KakaoTalk went by SMS); ``kind`` is ``kakaotalk``, ``sms`` or ``lms`` for a row sent or
tried (``models.message_kind``), empty otherwise.

Every cell is formula-safe (the OWASP rule): a cell whose text starts with ``=``, ``+``, ``-``,
``@``, TAB or CR is written with a leading ``'`` so that a spreadsheet shows it as text instead
of running it; the message sent to the provider is never altered. ``'`` is added also before a
run of quotes that precedes such a character, so ``unescape_cell`` gives back the exact value.

Each line is handed to the OS with one unbuffered ``write`` as soon as its row is settled, so a
``kill -9`` loses only rows whose send was in flight; the file is fsynced at most once a second
and on close. Values never contain newlines, so each line is one record. A write that fails (a
full device) raises ``ResultsWriteError`` (exit 74) at once.

An existing results file is never overwritten (``ResultsExistError``); ``--resume`` reads it
back (``Previous``): only complete lines count (a torn last line is ignored and a newline is
written before appending; but a torn line whose status ``sent`` was written whole, as a full
disk leaves it, keeps its row from being sent again), ``sent`` is never downgraded. Files
written by earlier versions (format v1: the same columns without ``kind``, no BOM) are read
too and appended to in their own width. The file is locked (``flock``) while a run uses it,
so overlapping runs cannot send the same rows (``ResultsInUseError``). A target that is not a
regular file (``/dev/null``, a pipe) is written to and never read back; a pipe that nobody
reads fails at once (InputFileError) rather than waiting for a reader.

The dry-run preview (``FILE.preview.csv``) has the results columns plus ``bytes`` (the message's
size in EUC-KR, what an SMS counts) and ``message``, status ``ready``, ``invalid`` or
``duplicate``. It overwrites only an earlier preview; resume refuses to read one. Results and
preview files are created readable by their owner only (0600, whatever the umask): they hold
full numbers and message text.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
import sys
import time
import zlib
from array import array
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .errors import InputError, InputFileError, ResultsWriteError, TryLaterError, UsageError

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DUPLICATE",
    "FAILED",
    "INVALID",
    "PREVIEW_COLUMNS",
    "READY",
    "RESULTS_COLUMNS",
    "RESULTS_COLUMNS_V1",
    "SENT",
    "STATUS_CODES",
    "PreviewFile",
    "Previous",
    "ResultsExistError",
    "ResultsFile",
    "ResultsInUseError",
    "ResultsSink",
    "Timestamps",
    "default_preview_path",
    "default_results_path",
    "escape_cell",
    "open_preview",
    "open_results",
    "unescape_cell",
]

#: format v1 (msgsend 1.x): no ``kind`` column, no BOM; still read and appended to by resume
RESULTS_COLUMNS_V1: tuple[str, ...] = (
    "row",
    "recipient",
    "status",
    "channel",
    "fallback",
    "attempts",
    "error",
    "latency_ms",
    "finished_at",
)
RESULTS_COLUMNS: tuple[str, ...] = (*RESULTS_COLUMNS_V1, "kind")
PREVIEW_COLUMNS: tuple[str, ...] = (*RESULTS_COLUMNS, "bytes", "message")
_PREVIEW_COLUMNS_V1: tuple[str, ...] = (*RESULTS_COLUMNS_V1, "message")

SENT = "sent"
FAILED = "failed"
INVALID = "invalid"
DUPLICATE = "duplicate"
READY = "ready"

#: one byte per row in ``Previous.status``; 0 means no line
STATUS_CODES: dict[str, int] = {SENT: 1, FAILED: 2, INVALID: 3, DUPLICATE: 4}
_NAMES = {code: name for name, code in STATUS_CODES.items()}

#: fsync the results file at most this often (seconds); every line is written at once anyway
SYNC_INTERVAL = 1.0

_BOM = b"\xef\xbb\xbf"
_HEADER = ",".join(RESULTS_COLUMNS)
_HEADER_V1 = ",".join(RESULTS_COLUMNS_V1)
_PREVIEW_HEADERS = frozenset({",".join(PREVIEW_COLUMNS), ",".join(_PREVIEW_COLUMNS_V1)})
_WIDTHS = {_HEADER: len(RESULTS_COLUMNS), _HEADER_V1: len(RESULTS_COLUMNS_V1)}

#: a spreadsheet runs a cell starting with one of these as a formula (OWASP CSV injection)
_FORMULA_START = frozenset("=+-@\t\r")
_ESCAPE_START = _FORMULA_START | {"'"}


class ResultsExistError(UsageError):
    """The results file exists: resume that run or choose another results file (exit 2)."""

    kind = "results-exist"


class ResultsInUseError(TryLaterError):
    """Another msgsend process is writing the results file, or paused in quiet hours (exit 75)."""

    kind = "results-in-use"


def escape_cell(value: str) -> str:
    """Return ``value`` safe for a spreadsheet: ``'`` before a leading ``= + - @`` TAB or CR.

    Reversible (``unescape_cell``): a quote is also added when quotes precede such a character.
    """
    if value and value[0] in _ESCAPE_START and value.lstrip("'")[:1] in _FORMULA_START:
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    """Return the value ``escape_cell`` was given."""
    if value[:1] == "'" and value.lstrip("'")[:1] in _FORMULA_START:
        return value[1:]
    return value


def default_results_path(path: str | os.PathLike[str]) -> Path:
    """Return ``FILE.results.csv`` beside the input ``FILE.csv``."""
    return _beside(Path(path), "results")


def default_preview_path(path: str | os.PathLike[str]) -> Path:
    """Return ``FILE.preview.csv`` beside the input ``FILE.csv``."""
    return _beside(Path(path), "preview")


def _beside(path: Path, kind: str) -> Path:
    stem = path.stem if path.suffix.lower() == ".csv" else path.name
    return path.with_name(f"{stem}.{kind}.csv")


class Timestamps:
    """ISO-8601 UTC timestamps with milliseconds, formatting the date part once a second."""

    def __init__(self) -> None:
        self._cache = (-1, "")  # one attribute, replaced whole: safe across threads

    def now(self) -> str:
        """Return the current time for the ``finished_at`` column."""
        stamp = time.time()
        second = int(stamp)
        cached, prefix = self._cache
        if second != cached:
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._cache = (second, prefix)
        return f"{prefix}.{int((stamp - second) * 1000):03d}+00:00"


class ResultsSink(Protocol):
    """Where a run writes its lines: the results file or the preview."""

    path: Path

    def write(self, values: Sequence[str]) -> None:
        """Write one line (the values of ``PREVIEW_COLUMNS`` / ``RESULTS_COLUMNS``)."""

    def close(self) -> None:
        """Flush and close; raise ResultsWriteError if the data cannot be written."""


def _write_error(path: Path, exc: OSError, what: str = "the results file") -> ResultsWriteError:
    return ResultsWriteError(f"{path}: cannot write {what}: {exc.strerror or exc}")


def _private(path: str | bytes, flags: int) -> int:
    """``open`` flags for a file only its owner can read (umask can only narrow the mode)."""
    return os.open(path, flags, 0o600)


def _make_private(fd: int) -> None:
    """Set a file this run writes from scratch to 0600 whatever the umask (regular files only)."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        # An earlier preview someone else owns keeps the mode its owner chose.
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, 0o600)


class ResultsFile:
    """Append one CSV line per call with a single unbuffered write; fsync once a second."""

    def __init__(self, raw: io.FileIO, path: Path, *, width: int, regular: bool) -> None:
        self._raw = raw
        self.path = path
        #: columns written: ``RESULTS_COLUMNS``, or the 9 of a format-v1 file being resumed
        self.width = width
        self._regular = regular
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._synced = time.monotonic()

    def write(self, values: Sequence[str]) -> None:
        """Write one line of ``RESULTS_COLUMNS`` values (cut to the file's width)."""
        self._buffer.seek(0)
        self._buffer.truncate()
        self._csv.writerow([escape_cell(value) for value in values[: self.width]])
        self.write_bytes(self._buffer.getvalue().encode("utf-8", "surrogateescape"))
        now = time.monotonic()
        if self._regular and now - self._synced >= SYNC_INTERVAL:
            try:
                os.fsync(self._raw.fileno())
            except OSError as exc:
                raise _write_error(self.path, exc) from None
            self._synced = now

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` whole; raise ResultsWriteError on the first failure."""
        view = memoryview(data)
        try:
            while view:
                written = self._raw.write(view)
                if not written:
                    raise OSError(0, "the device accepts no more data")
                view = view[written:]
        except OSError as exc:
            raise _write_error(self.path, exc) from None

    def close(self) -> None:
        """Fsync and close (once)."""
        if self._raw.closed:
            return
        try:
            if self._regular:
                os.fsync(self._raw.fileno())
        except OSError as exc:
            raise _write_error(self.path, exc) from None
        finally:
            self._raw.close()


class PreviewFile:
    """A buffered CSV writer for the dry-run preview."""

    def __init__(self, handle: io.TextIOWrapper, path: Path) -> None:
        self._handle = handle
        self.path = path
        self._csv = csv.writer(handle, lineterminator="\n")

    def write(self, values: Sequence[str]) -> None:
        """Write one line of ``PREVIEW_COLUMNS`` values."""
        try:
            self._csv.writerow([escape_cell(value) for value in values])
        except OSError as exc:
            raise _write_error(self.path, exc, "the preview") from None

    def close(self) -> None:
        """Flush and close (once)."""
        if self._handle.closed:
            return
        try:
            self._handle.close()
        except OSError as exc:
            raise _write_error(self.path, exc, "the preview") from None


class Previous:
    """What an earlier run recorded: a status code and a recipient checksum per row."""

    def __init__(self, last_row: int) -> None:
        self.status = bytearray(last_row + 1)
        self.crc = array("I", [0]) * (last_row + 1)
        self.lines = 0

    def record(self, row: int, code: int, recipient: str) -> None:
        """Note one line; a row recorded ``sent`` stays sent whatever follows."""
        if self.status[row] == STATUS_CODES[SENT]:
            return
        self.status[row] = code
        self.crc[row] = recipient_crc(recipient)
        self.lines += 1

    def status_name(self, row: int) -> str:
        """Return the status recorded for ``row`` ("" when none)."""
        return _NAMES.get(self.status[row], "")

    def count(self, *statuses: str) -> int:
        """Return how many rows are recorded with one of ``statuses``."""
        return sum(self.status.count(STATUS_CODES[name]) for name in statuses)

    @property
    def last_recorded(self) -> int:
        """Return the highest row that has a line (0 when none)."""
        return max(len(self.status.rstrip(b"\x00")) - 1, 0)


def recipient_crc(recipient: str) -> int:
    """Return the checksum resume compares a recorded recipient with the input's by."""
    return zlib.crc32(recipient.encode("utf-8", "surrogateescape"))


def _lock(raw: io.FileIO, path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover
        return
    try:
        fcntl.flock(raw.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raw.close()
        raise ResultsInUseError(
            f"{path} is in use by another msgsend run; wait for it to finish "
            "or choose another file with --results"
        ) from None


def _not_results(path: Path, first_line: str) -> InputError:
    if first_line in _PREVIEW_HEADERS:
        return InputError(
            f"{path} is a dry-run preview, not a results file; "
            "choose the results file with --results"
        )
    return InputError(
        f"{path} is not a msgsend results file (its first line is {first_line[:80]!r}); "
        "choose another file with --results"
    )


def _lines(raw: io.FileIO, tail: list[bytes]) -> Iterator[bytes]:
    """Yield the complete lines of ``raw`` from the start; leave a torn last line in ``tail``."""
    raw.seek(0)
    rest = b""
    while True:
        chunk = raw.read(1 << 16)
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    tail.append(rest)


def _fields(line: bytes) -> list[str] | None:
    """Split one results line; None when it is not a whole CSV record (torn by a kill)."""
    if b'"' not in line:  # most lines: nothing quoted, so the commas are the separators
        return line.decode("utf-8", "surrogateescape").rstrip("\r").split(",")
    try:
        return next(csv.reader([line.decode("utf-8", "surrogateescape").rstrip("\r")], strict=True))
    except (csv.Error, StopIteration):
        return None


def _read_previous(
    raw: io.FileIO, path: Path, last_row: int, input_path: Path
) -> tuple[Previous, int, bytes]:
    """Read an earlier run's results: them, the file's width and what to write before appending."""
    previous = Previous(last_row)
    tail: list[bytes] = []
    lines = _lines(raw, tail)
    first = next(lines, None)
    if first is None:
        torn = b"".join(tail).removeprefix(_BOM).decode("utf-8", "replace")
        if not _HEADER.startswith(torn):
            raise _not_results(path, torn)
        # Empty, or a header torn by a kill: no row was recorded; start a v2 file.
        try:
            raw.truncate(0)
        except OSError as exc:
            raise _write_error(path, exc) from None
        return previous, len(RESULTS_COLUMNS), _BOM + (_HEADER + "\n").encode()
    header = first.removeprefix(_BOM).decode("utf-8", "replace").rstrip("\r")
    width = _WIDTHS.get(header)
    if width is None:
        raise _not_results(path, header)
    for line in lines:
        fields = _fields(line)
        if fields is None or len(fields) != width:
            # A line torn in an earlier run (a full disk, a crash): ignored, except that a
            # row whose status "sent" was written whole was delivered and is not sent again.
            _torn_sent(line, previous, last_row)
            continue
        code = STATUS_CODES.get(fields[2])
        if code is None or not fields[0].isdigit():
            continue
        row = int(fields[0])
        if not 1 <= row <= last_row:
            raise InputError(
                f"{path} records row {row} but {input_path} has {last_row} rows: "
                "the results belong to another file; choose another file with --results"
            )
        previous.record(row, code, unescape_cell(fields[1]))
    _torn_sent(tail[0], previous, last_row)
    return previous, width, (b"\n" if tail[0] else b"")


def _torn_sent(line: bytes, previous: Previous, last_row: int) -> None:
    """Record ``sent`` for a torn line whose row, recipient and status were written whole."""
    parts = line.split(b",", 3)
    if len(parts) == 4 and parts[2] == SENT.encode() and parts[0].isdigit():
        row = int(parts[0])
        if 1 <= row <= last_row and b'"' not in parts[1]:
            previous.record(row, STATUS_CODES[SENT], unescape_cell(parts[1].decode("utf-8")))


def open_results(
    path: Path, *, last_row: int, input_path: Path, resume: bool
) -> tuple[ResultsFile, Previous | None]:
    """Create the results file (0600), or open it for appending and read it back on resume.

    Raises ResultsExistError when it exists without ``resume``, InputFileError when it cannot
    be opened, ResultsInUseError when another run holds it and ResultsWriteError when the
    header cannot be written.
    """
    try:
        raw = io.FileIO(path, "x", opener=_private)
        created = True
    except FileExistsError:
        raw = _open_existing(path, resume)
        created = False
    except OSError as exc:
        raise InputFileError(
            f"{path}: cannot open the results file: {exc.strerror or exc}"
        ) from None
    try:
        _lock(raw, path)
        if created:
            _make_private(raw.fileno())
        regular = stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
        previous: Previous | None = None
        width = len(RESULTS_COLUMNS)
        prefix = _BOM + (_HEADER + "\n").encode()
        if resume and regular and not created:
            previous, width, prefix = _read_previous(raw, path, last_row, input_path)
        elif resume:
            previous = Previous(last_row)
        writer = ResultsFile(raw, path, width=width, regular=regular)
        writer.write_bytes(prefix)
    except BaseException:
        raw.close()
        raise
    return writer, previous


def _open_existing(path: Path, resume: bool) -> io.FileIO:
    """Open an existing results target: a file to resume, or a device/pipe to write to."""
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    if not resume and not special:
        raise _exists(path)
    try:
        if special:
            return _open_special(path)
        return io.FileIO(path, "a+")
    except OSError as exc:
        raise InputFileError(
            f"{path}: cannot open the results file: {exc.strerror or exc}"
        ) from None


def _exists(path: Path) -> ResultsExistError:
    return ResultsExistError(
        f"{path} already exists: pass --resume to continue that run (rows recorded "
        "sent, invalid or duplicate are skipped, failed ones are tried again), "
        "or choose another file with --results"
    )


def check_target(path: Path, *, resume: bool, dry_run: bool) -> None:
    """Refuse a target that the run would refuse anyway, before anything starts.

    The same checks as :func:`open_results` and :func:`open_preview` make when they open it
    (which they still do: the file may appear in between); run first, they keep a refused run
    from starting a sandbox or drawing a progress line.
    """
    if not os.path.isfile(path):  # absent, or a device or pipe: written to, never read
        return
    if dry_run:
        _refuse_to_overwrite(path)
    elif not resume:
        raise _exists(path)


def _refuse_to_overwrite(path: Path) -> None:
    """Raise ResultsExistError when ``path`` holds something else than a dry-run preview."""
    try:
        with open(path, "rb") as existing:
            first = existing.readline(4096).removeprefix(_BOM).rstrip(b"\r\n")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if first and first.decode("utf-8", "replace") not in _PREVIEW_HEADERS:
        raise ResultsExistError(
            f"{path} exists and is not a dry-run preview; refusing to overwrite it: "
            "choose another file with --results"
        )


def _open_special(path: Path) -> io.FileIO:
    """Open a device or pipe (``/dev/null``, a FIFO) for writing; it is never read back.

    Non-blocking, so that a pipe nobody reads from fails at once (ENXIO) instead of waiting
    for a reader forever; writes then block as usual.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        return io.FileIO(fd, "a")
    except BaseException:
        os.close(fd)
        raise


def open_preview(path: Path) -> PreviewFile:
    """Open the dry-run preview (0600), overwriting only an earlier preview."""
    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        special = False
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not special:
        _refuse_to_overwrite(path)
    handle: io.TextIOWrapper
    try:
        if special:  # /dev/null, a pipe: written to, never read
            handle = io.TextIOWrapper(
                io.BufferedWriter(_open_special(path)), encoding="utf-8", newline=""
            )
        else:
            handle = open(path, "w", encoding="utf-8", newline="", opener=_private)  # noqa: SIM115
    except OSError as exc:
        raise InputFileError(f"{path}: cannot write the preview: {exc.strerror or exc}") from None
    try:
        _make_private(handle.fileno())
        handle.write("\ufeff")  # a BOM, so that Excel shows Korean text correctly
        writer = PreviewFile(handle, path)
        writer.write(PREVIEW_COLUMNS)
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        raise
    return writer
