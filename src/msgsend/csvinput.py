"""Read and validate bulk CSV files (SPEC §7), streamed so memory stays flat.

Row numbers: row 1 is the first record after the header row. Every record counts, blank ones
included, so without multi-line messages row N is line N + 1 of the file (its row in a
spreadsheet). Blank records (no field has any text) are skipped: they are neither sent nor
recorded, and are not part of ``CsvInfo.total_rows``.

A file is read twice: ``inspect_csv`` decodes and parses it once up front (encoding detection,
record count for the progress bar, fatal problems found before anything is sent), then
``CsvSource.rows()`` streams validated ``CsvRow`` objects.
"""

from __future__ import annotations

import codecs
import csv
import os
import stat
import string
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import InputError, InputFileError, UsageError
from .models import Channel, check_characters, choose_channel, normalize_recipient

__all__ = [
    "MESSAGE_COLUMNS",
    "MOBILE_COLUMNS",
    "RECIPIENT_COLUMNS",
    "VIA_COLUMN",
    "CsvInfo",
    "CsvRecord",
    "CsvRow",
    "CsvSource",
    "compile_template",
    "inspect_csv",
]

#: Header names (any case, surrounding whitespace ignored) of the recipient column.
RECIPIENT_COLUMNS: tuple[str, ...] = (
    "phone",
    "recipient",
    "phoneNumber",
    "phone_number",
    "to",
    "전화번호",
    "휴대폰",
    "휴대폰번호",
    "휴대전화",
    "핸드폰",
    "핸드폰번호",
    "연락처",
    "수신번호",
    "수신자번호",
)
#: Recipient names that say "mobile": one of them wins over the other candidates of a file.
MOBILE_COLUMNS: tuple[str, ...] = ("휴대폰", "휴대폰번호", "휴대전화", "핸드폰", "핸드폰번호")
#: Header names of the message column, used when no template is given.
MESSAGE_COLUMNS: tuple[str, ...] = (
    "message",
    "content",
    "메시지",
    "메세지",
    "내용",
    "문자내용",
    "발송내용",
)
#: Header name of the optional per-row channel column.
VIA_COLUMN = "via"

#: Encoding tried when a file is not valid UTF-8: Korean Excel's export (superset of EUC-KR).
FALLBACK_ENCODING = "cp949"

#: The longest CSV field read (characters; the csv module's default is 128 Ki). A longer field
#: makes its row invalid, not the file: no message is that long, and the rows after it are read.
MAX_FIELD_CHARS = 1024 * 1024
csv.field_size_limit(MAX_FIELD_CHARS)
_FIELD_TOO_LARGE = "field larger than field limit"


@dataclass(frozen=True, slots=True)
class CsvInfo:
    """What the up-front pass learnt about a CSV file."""

    path: Path
    encoding: str
    #: data records that are not blank: the rows that will be sent or reported
    total_rows: int
    columns: tuple[str, ...]
    #: blank records between data rows (they still use up a row number)
    blank_rows: int = 0
    #: the highest row number in the file
    last_row: int = 0
    bom: bool = False


@dataclass(slots=True)
class CsvRow:
    """One record of the input, validated: ``error`` is None when it can be sent."""

    row: int
    line: int
    #: normalised number when valid, else the raw value (control characters replaced)
    recipient: str
    channel: Channel | None
    message: str | None
    error: str | None = None
    blank: bool = False
    #: why the row goes by another channel than asked (too long for KakaoTalk: by SMS)
    note: str = ""
    #: the row's ``via`` cell named its channel (so it never overflows to another)
    via_cell: bool = False


def _invalid(
    row: int,
    record: CsvRecord,
    recipient: str,
    reason: str,
    channel: Channel | None = None,
    message: str | None = None,
) -> CsvRow:
    return CsvRow(row, record.first_line, recipient, channel, message, reason)


def _open_text(path: Path, encoding: str) -> TextIO:
    """Open ``path`` for the csv module, mapping OS errors to InputFileError."""
    try:
        return open(path, encoding=encoding, errors="strict", newline="")
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


@dataclass(slots=True)
class CsvRecord:
    """One parsed record of the input, not yet validated (``CsvSource.records``)."""

    first_line: int
    last_line: int
    #: None when the record is not valid CSV (``error`` says why)
    fields: list[str] | None
    error: str | None
    #: the row number (1 = the first record after the header)
    row: int = 0


def _records(path: Path, handle: TextIO) -> Iterator[CsvRecord]:
    """Yield every csv record with its line span; a recoverable csv error becomes a record."""
    reader = csv.reader(handle, strict=True)
    last = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            text = str(exc)
            if reader.line_num == last:
                raise InputError(
                    f"{path}: line {last + 1}: unreadable CSV ({text}); an unbalanced quote? "
                    "fix the file (quote fields that contain commas, quotes or newlines)"
                ) from None
            yield CsvRecord(last + 1, reader.line_num, None, text)
            last = reader.line_num
            continue
        yield CsvRecord(last + 1, reader.line_num, fields, None)
        last = reader.line_num


def _is_blank(fields: Sequence[str]) -> bool:
    return not "".join(fields).strip()


def _normal_encoding(path: Path, encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise InputError(
            f"{path}: unknown encoding {encoding!r}; try utf-8, cp949 or euc-kr"
        ) from None
    # A UTF-8 file from Excel starts with a BOM: decode it away either way.
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def _scan(path: Path, encoding: str) -> tuple[tuple[str, ...], int, int, int]:
    """Decode and parse the whole file: (columns, total rows, blank rows, last row)."""
    with _open_text(path, encoding) as handle:
        records = _records(path, handle)
        header: list[str] | None = None
        for record in records:
            if record.error is not None:
                raise InputError(
                    f"{path}: line {record.first_line}: the header row is not valid CSV "
                    f"({record.error})"
                )
            assert record.fields is not None
            if not _is_blank(record.fields):
                header = record.fields
                break
        if header is None:
            raise InputError(
                f"{path}: the file is empty: a header row is required (e.g. phone,message)"
            )
        if any("\x00" in name for name in header):
            raise InputError(
                f"{path}: does not look like a text CSV file (NUL bytes in the first line); "
                "save it as CSV (UTF-8 or CP949)"
            )
        total = blank = last = 0
        for record in records:
            last += 1
            if record.fields is not None and _is_blank(record.fields):
                blank += 1
            else:
                total += 1
    return tuple(name.strip() for name in header), total, blank, last


def _decode_failure(path: Path, encoding: str) -> str:
    """Describe the first undecodable byte of ``path`` and its line."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    line = 1
    with open(path, "rb") as raw:
        while chunk := raw.read(1 << 16):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = exc.object
                line += bytes(data[: exc.start]).count(b"\n")
                return f"line {line}: undecodable byte {bytes(data[exc.start : exc.start + 1])!r}"
            line += chunk.count(b"\n")
    return "undecodable bytes"


def inspect_csv(path: str | os.PathLike[str], encoding: str | None = None) -> CsvInfo:
    """Detect the encoding, read the header and count the rows of a bulk CSV file.

    UTF-8 (with or without BOM) is tried first, then CP949 (EUC-KR), unless ``encoding``
    names one. Raises InputFileError if the file cannot be read, InputError if it is not a
    usable CSV file. Example::

        info = inspect_csv("customers.csv")
        print(info.total_rows, info.encoding)
    """
    file = Path(path)
    try:
        mode = os.stat(file).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            # Before opening: a named pipe without a writer would block the open for ever.
            raise InputFileError(
                f"{file}: not a regular file (a pipe or a device): the input is read twice, "
                "to count its rows and to send them; save it to a file first"
            )
        with open(file, "rb") as raw:
            head = raw.read(4)
    except FileNotFoundError:
        raise InputFileError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{file}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputFileError(f"{file}: cannot read: {exc.strerror or exc}") from None
    bom = head.startswith(codecs.BOM_UTF8)
    if encoding is None and head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise InputError(
            f"{file}: looks like UTF-16 text (Excel 'Unicode Text'); save it as "
            "'CSV UTF-8', or pass --encoding utf-16"
        )
    candidates = (
        [_normal_encoding(file, encoding)] if encoding else ["utf-8-sig", FALLBACK_ENCODING]
    )
    failures: list[str] = []
    for candidate in candidates:
        try:
            columns, total, blank, last = _scan(file, candidate)
        except UnicodeDecodeError:
            failures.append(f"{candidate}: {_decode_failure(file, candidate)}")
            continue
        return CsvInfo(
            path=file,
            encoding=candidate,
            total_rows=total,
            columns=columns,
            blank_rows=blank,
            last_row=last,
            bom=bom and candidate == "utf-8-sig",
        )
    if encoding:
        raise InputError(
            f"{file}: cannot be decoded as {encoding} ({failures[0]}); pass the right --encoding"
        )
    raise InputError(
        f"{file}: not UTF-8 or CP949/EUC-KR text ({'; '.join(failures)}); "
        "save it as CSV UTF-8 or pass --encoding NAME"
    )


def _fold(name: str) -> str:
    """The form header names are compared in: any case, surrounding spaces, NFC Hangul."""
    return unicodedata.normalize("NFC", name).strip().casefold()


def _find_column(
    path: Path,
    columns: Sequence[str],
    names: Sequence[str],
    what: str,
    *,
    option: str | None = None,
    preferred: Sequence[str] = (),
) -> int | None:
    """Return the index of the one column named like ``names``; None when there is none.

    Among several candidates, the only one whose name is in ``preferred`` wins; otherwise
    the candidates are listed and ``option`` is suggested.
    """
    wanted = {_fold(name) for name in names}
    found = [i for i, name in enumerate(columns) if _fold(name) in wanted]
    if len(found) > 1:
        best = {_fold(name) for name in preferred}
        winners = [i for i in found if _fold(columns[i]) in best]
        if len(winners) == 1:
            return winners[0]
        shown = ", ".join(repr(columns[i]) for i in found)
        fix = f"choose one with {option} NAME" if option else "keep only one"
        raise InputError(f"{path}: several {what} columns ({shown}): {fix}")
    return found[0] if found else None


def _named_column(path: Path, columns: Sequence[str], name: str, option: str) -> int:
    """Return the index of the column ``option NAME`` names (exact, else any case)."""
    exact = [i for i, column in enumerate(columns) if column == name.strip()]
    found = exact or [i for i, column in enumerate(columns) if _fold(column) == _fold(name)]
    if len(found) == 1:
        return found[0]
    if found:
        raise InputError(
            f"{path}: {option} {name!r} matches several columns "
            f"({', '.join(repr(columns[i]) for i in found)}); rename one of them"
        )
    raise InputError(
        f"{path}: {option} {name!r} names no column (columns found: {_columns_text(columns)})"
    )


def _columns_text(columns: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in columns) or "(none)"


def compile_template(template: str, columns: Sequence[str]) -> str:
    """Check a ``{column}`` template against ``columns``; return a positional format string.

    Only plain column names are allowed: attribute access, indexing, conversions, format
    specs and positional ``{}`` are refused with InputError, as are unknown columns.
    ``{{`` and ``}}`` stand for literal braces.
    """
    available = _columns_text(columns)
    if not template.strip():
        raise InputError("the template is empty: give the message text, e.g. '{name}님 안녕하세요'")
    check_characters(template, "the template")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InputError(
            f"invalid template: {exc}; write literal braces as {{{{ and }}}}"
        ) from None
    exact = {name: i for i, name in enumerate(columns)}
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(columns):
        folded.setdefault(name.lower(), []).append(i)
    out: list[str] = []
    for literal, field, spec, conversion in parsed:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        conv = f"!{conversion}" if conversion else ""
        fmt = f":{spec}" if spec else ""
        shown = f"{{{field}{conv}{fmt}}}"
        if field == "" or field.isdigit():
            raise InputError(
                f"template placeholder {shown} is positional: name a column instead "
                f"(available: {available})"
            )
        if "." in field or "[" in field:
            raise InputError(
                f"template placeholder {shown}: only plain column names are allowed, "
                f"no attributes or indexes (available: {available})"
            )
        if conversion:
            raise InputError(
                f"template placeholder {shown}: conversions (!r, !s, !a) are not allowed "
                f"(available: {available})"
            )
        if spec:
            raise InputError(
                f"template placeholder {shown}: format specs are not allowed "
                f"(available: {available})"
            )
        index = exact.get(field.strip())
        if index is None:
            matches = folded.get(field.strip().lower(), [])
            if len(matches) != 1:
                raise InputError(
                    f"template placeholder {shown} names no column of the file "
                    f"(available: {available})"
                )
            index = matches[0]
        out.append("{" + str(index) + "}")
    return "".join(out)


def _clean(value: str) -> str:
    """Replace control characters so that a value fits on one line of a results file."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else " " for ch in value)


class CsvSource:
    """A bulk CSV file with its columns resolved; ``rows()`` streams validated rows.

    Construction reads the file once (``inspect_csv``) and checks the header and template,
    so every InputError about the file as a whole is raised before anything is sent.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        template: str | None = None,
        via: Channel | str = Channel.KAKAOTALK,
        encoding: str | None = None,
        info: CsvInfo | None = None,
        recipient_column: str | None = None,
        message_column: str | None = None,
        allow_empty_fields: bool = False,
        fallback: bool = True,
    ) -> None:
        if template is not None and message_column is not None:
            raise UsageError("--message-column and --template exclude each other: pass one")
        self.info = info if info is not None else inspect_csv(path, encoding)
        self.path = self.info.path
        self.via = Channel(str(via).strip().lower())
        #: whether a message too long for KakaoTalk may go by SMS instead
        self.fallback = fallback
        columns = self.info.columns
        found = f"columns found: {_columns_text(columns)}"
        if recipient_column is not None:
            recipient: int | None = _named_column(
                self.path, columns, recipient_column, "--recipient-column"
            )
        else:
            recipient = _find_column(
                self.path,
                columns,
                RECIPIENT_COLUMNS,
                "recipient",
                option="--recipient-column",
                preferred=MOBILE_COLUMNS,
            )
        if recipient is None:
            hint = ""
            if len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
                hint = "; msgsend reads comma-separated files"
            else:
                try:
                    normalize_recipient(columns[0])
                    hint = "; the first line must be a header row"
                except InputError:
                    pass
            raise InputError(
                f"{self.path}: no recipient column ({found}{hint}): name it one of "
                f"{', '.join(RECIPIENT_COLUMNS)}, or pass --recipient-column NAME"
            )
        self.recipient_index = recipient
        self.via_index = _find_column(self.path, columns, (VIA_COLUMN,), "via")
        self.message_index: int | None = None
        self.format: str | None = None
        #: the columns the template uses, checked for empty cells unless ``allow_empty_fields``
        self.template_fields: tuple[int, ...] = ()
        if template is not None:
            self.format = compile_template(template, columns)
            if not allow_empty_fields:
                self.template_fields = tuple(
                    sorted(
                        {
                            int(name)
                            for _, name, _, _ in string.Formatter().parse(self.format)
                            if name
                        }
                    )
                )
        elif message_column is not None:
            self.message_index = _named_column(
                self.path, columns, message_column, "--message-column"
            )
        else:
            self.message_index = _find_column(
                self.path, columns, MESSAGE_COLUMNS, "message", option="--message-column"
            )
            if self.message_index is None:
                raise InputError(
                    f"{self.path}: no message column ({found}): name it one of "
                    f"{', '.join(MESSAGE_COLUMNS)}, pass --message-column NAME, "
                    "or pass --template with {column} placeholders"
                )

    @contextmanager
    def rows(self) -> Iterator[Iterator[CsvRow]]:
        """Open the file and yield an iterator of its validated data rows, blank ones included."""
        with self.records() as records:
            yield (self.validate(record) for record in records)

    @contextmanager
    def records(self) -> Iterator[Iterator[CsvRecord]]:
        """Open the file and yield an iterator of its parsed data records, not yet validated.

        ``validate`` turns one into a ``CsvRow``; a run that skips rows settled earlier reads
        only what it needs of them (``recipient_cell``, ``render``).
        """
        with _open_text(self.path, self.info.encoding) as handle:
            yield self._iterate(handle)

    def _iterate(self, handle: TextIO) -> Iterator[CsvRecord]:
        records = _records(self.path, handle)
        for record in records:
            if record.fields is None or not _is_blank(record.fields):
                break  # the header row
        row = 0
        try:
            for record in records:
                row += 1
                record.row = row
                yield record
        except UnicodeDecodeError:
            raise InputError(
                f"{self.path}: after row {row}: cannot decode as {self.info.encoding}; "
                "did the file change while being read?"
            ) from None

    def validate(self, record: CsvRecord) -> CsvRow:
        """Return the validated row of ``record``: ``error`` says why it cannot be sent."""
        return self._validate(record.row, len(self.info.columns), record)

    def recipient_cell(self, fields: Sequence[str]) -> str:
        """Return the recipient cell as a results file records an invalid one (cleaned)."""
        index = self.recipient_index
        return _clean(fields[index]) if index < len(fields) else ""

    def render(self, fields: Sequence[str]) -> str:
        """Return the message of a well-formed record: the template filled in, or its cell."""
        if self.format is not None:
            return self.format.format(*fields)
        assert self.message_index is not None
        return fields[self.message_index]

    def _validate(self, row: int, width: int, record: CsvRecord) -> CsvRow:
        span = (
            f"line {record.first_line}"
            if record.last_line <= record.first_line
            else f"lines {record.first_line}-{record.last_line}"
        )
        fields = record.fields
        if fields is None and _FIELD_TOO_LARGE in (record.error or ""):
            reason = (
                f"a field is longer than {MAX_FIELD_CHARS:,} characters ({span}); "
                "no message is that long"
            )
            if record.last_line > record.first_line:
                reason += ": an unbalanced quote?"
            return _invalid(row, record, "", reason)
        if fields is None:
            reason = f"malformed CSV record ({span}): {record.error}; an unbalanced quote?"
            return _invalid(row, record, "", reason)
        raw = self.recipient_cell(fields)
        joined = "".join(fields)
        if not joined.strip():
            return CsvRow(row, record.first_line, raw, None, None, None, blank=True)
        if len(fields) != width:
            reason = f"malformed CSV record ({span}): expected {width} fields, found {len(fields)}"
            if record.last_line > record.first_line:
                reason += "; an unbalanced quote?"
            elif len(fields) > width:
                reason += "; quote fields that contain commas"
            return _invalid(row, record, raw, reason)
        if "\x00" in joined:
            return _invalid(row, record, raw, f"NUL byte in the record ({span})")
        message = self.render(fields)
        try:
            recipient = normalize_recipient(fields[self.recipient_index])
        except InputError as exc:
            return _invalid(row, record, raw, _clean(str(exc)), None, message)
        channel = self.via
        via_cell = False
        if self.via_index is not None:
            value = fields[self.via_index].strip().lower()
            via_cell = bool(value)
            if value:
                try:
                    channel = Channel(value)
                except ValueError:
                    shown = _clean(fields[self.via_index])
                    reason = f"unknown channel {shown!r} in the via column (kakaotalk or sms)"
                    return _invalid(row, record, recipient, reason, None, message)
        for index in self.template_fields:
            if not fields[index].strip():
                reason = (
                    f"empty field {{{self.info.columns[index]}}} "
                    "(fill it in, or pass --allow-empty-fields to send anyway)"
                )
                return _invalid(row, record, recipient, reason, channel, message)
        try:
            channel, note = choose_channel(message, channel, fallback=self.fallback)
        except InputError as exc:
            return _invalid(row, record, recipient, _clean(str(exc)), channel, message)
        return CsvRow(
            row, record.first_line, recipient, channel, message, note=note, via_cell=via_cell
        )
