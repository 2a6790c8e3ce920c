"""Value objects shared by every layer: channels, recipients, messages and results."""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import EXIT_OK, InputError, MsgsendError, TryLaterError, exit_code_for

__all__ = [
    "CHANNELS",
    "KAKAOTALK_MAX_CHARS",
    "SMS_MAX_BYTES",
    "SMS_SHORT_MAX_BYTES",
    "Channel",
    "DeliveryResult",
    "HealthStatus",
    "MessageKind",
    "Outgoing",
    "ProviderHealth",
    "Refusal",
    "check_characters",
    "choose_channel",
    "describe_char",
    "mask_recipient",
    "message_kind",
    "normalize_recipient",
    "prepare_message",
    "sms_bytes",
    "validate_message",
]

#: KakaoTalk messages are limited in characters, SMS in EUC-KR bytes (SPEC §7).
KAKAOTALK_MAX_CHARS = 1000
SMS_MAX_BYTES = 2000
#: Above this many EUC-KR bytes a text message goes as LMS (long message), about 3x the price.
SMS_SHORT_MAX_BYTES = 90


class Channel(StrEnum):
    """A delivery channel, which is also the provider's name."""

    KAKAOTALK = "kakaotalk"
    SMS = "sms"


#: The channels' names, in the order a message tries them; each is also its provider's name
#: (its configuration section, limiter and metrics key). The one place they are listed.
CHANNELS: tuple[str, ...] = tuple(channel.value for channel in Channel)


class MessageKind(StrEnum):
    """What a message costs: a KakaoTalk message, a short SMS or a long LMS."""

    KAKAOTALK = "kakaotalk"
    SMS = "sms"
    LMS = "lms"


def _count_as_double(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeEncodeError)
    return "??" * (exc.end - exc.start), exc.end


# A character CP949 cannot encode (an emoji, a lone surrogate) counts as two bytes: such a text
# cannot go by SMS at all (validate_message refuses it), and counting it as a double-byte
# character never calls an LMS an SMS.
codecs.register_error("msgsend.count-double", _count_as_double)


def sms_bytes(text: str) -> int:
    """Return the size of ``text`` in EUC-KR bytes, as Korean carriers count an SMS.

    CP949 (Korean Windows' superset of EUC-KR) is what carriers count: every Hangul syllable
    is two bytes, also the 8,822 outside KS X 1001 that Python's "euc-kr" would spell as
    eight-byte composition sequences. A character without an EUC-KR encoding counts two::

        >>> sms_bytes("안녕 hi")
        7
    """
    if text.isascii():
        return len(text)
    return len(text.encode("cp949", "msgsend.count-double"))


def message_kind(text: str, channel: Channel | str) -> MessageKind:
    """Return how ``text`` goes by ``channel``: ``kakaotalk``, ``sms`` (≤ 90 bytes) or ``lms``.

    ``sms`` and ``lms`` are told apart by the EUC-KR size (``sms_bytes``)::

        >>> message_kind("가" * 45, "sms"), message_kind("가" * 46, "sms")
        (<MessageKind.SMS: 'sms'>, <MessageKind.LMS: 'lms'>)
    """
    if Channel(channel) is Channel.KAKAOTALK:
        return MessageKind.KAKAOTALK
    return MessageKind.SMS if sms_bytes(text) <= SMS_SHORT_MAX_BYTES else MessageKind.LMS


_SEPARATORS = re.compile(r"[\s\-.()]")
_MOBILE = re.compile(r"^01([016789])(\d{3,4})(\d{4})$", re.ASCII)
#: a number already in the form msgsend sends (most rows of a file written by a program)
_CANONICAL = re.compile(r"(?:010-\d{4}|01[16789]-\d{3,4})-\d{4}", re.ASCII)
#: Dash look-alikes (hyphen, non-breaking hyphen, figure/en/em dash, minus, small and
#: full-width hyphen-minus) and invisible characters (zero-width space, joiners, word joiner,
#: BOM, soft hyphen, direction marks) that copying a number from a document or a web page
#: brings along: removed before a number is read.
_NUMBER_NOISE = dict.fromkeys(
    map(
        ord,
        "\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d"
        "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u180e",
    )
)
_SCIENTIFIC = re.compile(r"^\d(?:\.\d+)?e\+?\d+$", re.IGNORECASE | re.ASCII)
_EXCEL_HINT = "format the column as text in Excel and export again"


def _excel_hint(spaced: str, text: str) -> str:
    """Say how Excel mangled a number (``text``: ``spaced`` without separators), or ""."""
    if _SCIENTIFIC.match(spaced):
        return (
            "; it looks like a number Excel turned into scientific notation, which loses "
            f"digits: {_EXCEL_HINT}"
        )
    if text.isdigit() and _MOBILE.match("0" + text):
        return f"; it looks like Excel dropped the leading 0 (0{text}?): {_EXCEL_HINT}"
    if text.isdigit() and text.startswith("82"):
        return f"; it looks like a +82 number whose + Excel dropped: {_EXCEL_HINT}"
    return ""


def normalize_recipient(raw: str) -> str:
    """Return a Korean mobile number as ``010-1234-5678``; raise InputError if it is not one.

    Accepts hyphens (and dash look-alikes), spaces, dots, invisible characters and the
    ``+82`` / ``82`` country prefix::

        >>> normalize_recipient("+82 10 1234 5678")
        '010-1234-5678'
    """
    if _CANONICAL.fullmatch(raw):
        return raw
    # NFKC turns full-width digits, hyphen and plus (as a Korean IME types them) into ASCII,
    # and NBSP and the other wide spaces into spaces.
    spaced = unicodedata.normalize("NFKC", raw.translate(_NUMBER_NOISE)).strip()
    text = _SEPARATORS.sub("", spaced)
    if text.startswith("+82"):
        text = "0" + text[3:].lstrip("0")
    elif text.startswith("0082"):
        text = "0" + text[4:].lstrip("0")
    elif text.startswith("82") and len(text) in (11, 12):
        text = "0" + text[2:].lstrip("0")
    match = _MOBILE.match(text)
    if match is None:
        shown = raw.strip() or "(empty)"
        raise InputError(
            f"invalid recipient {shown!r}: expected a Korean mobile number "
            "(010, 011, 016, 017, 018 or 019 and 7 or 8 more digits; hyphens and +82 allowed)"
            + _excel_hint(spaced, _SEPARATORS.sub("", spaced))
        )
    prefix, middle, last = match.groups()
    if prefix == "0" and len(middle) != 4:
        # 010 numbers always have a four-digit middle part since 2004.
        shown = raw.strip()
        raise InputError(f"invalid recipient {shown!r}: 010 numbers have 11 digits (010-1234-5678)")
    return f"01{prefix}-{middle}-{last}"


def mask_recipient(recipient: str) -> str:
    """Hide the middle digits of a number for logs, alerts and metrics: ``010-****-5678``."""
    digits = re.sub(r"\D", "", recipient)
    if len(digits) < 8:
        return "***"
    if recipient.count("-") == 2:
        head, middle, tail = recipient.split("-")
        return f"{head}-{'*' * len(middle)}-{tail}"
    return f"{digits[:3]}-{'*' * (len(digits) - 7)}-{digits[-4:]}"


# C0 controls but tab and newline, DEL, C1 controls, the bidi embeddings/overrides
# (U+202A-U+202E) and isolates (U+2066-U+2069), and lone surrogates (bytes that were not UTF-8,
# smuggled in by the surrogateescape of argv and stdin): none is text a person meant to send,
# and each can hide or reorder what the recipient (or an operator's terminal) shows.
_FORBIDDEN_CHARS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_CONTROL_NAMES = {
    0x00: "NUL", 0x07: "BEL", 0x08: "BACKSPACE", 0x0B: "VERTICAL TAB", 0x0C: "FORM FEED",
    0x0D: "CARRIAGE RETURN", 0x1B: "ESCAPE", 0x7F: "DELETE",
}  # fmt: skip


def describe_char(char: str) -> str:
    """Return ``U+001B (ESCAPE)``: a character named so that it can be shown safely."""
    code = ord(char)
    name = _CONTROL_NAMES.get(code) or unicodedata.name(char, "")
    if not name:
        name = "not UTF-8" if 0xD800 <= code <= 0xDFFF else "control character"
    return f"U+{code:04X} ({name})"


def check_characters(text: str, what: str = "message") -> None:
    """Raise InputError naming the first control or bidi character of ``text`` and its place.

    Newline and tab are allowed; every other C0 control, DEL, C1 controls, bidi overrides and
    isolates are refused, in ``send`` and ``bulk`` alike::

        >>> check_characters("hi\x1b[31m")
        Traceback (most recent call last):
        msgsend.errors.InputError: message contains U+001B (ESCAPE) at character 3: ...
    """
    match = _FORBIDDEN_CHARS.search(text)
    if match is None:
        return
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:
        raise InputError(
            f"{what} is not UTF-8 text: byte 0x{code & 0xFF:02X} at character {match.start() + 1}"
        )
    raise InputError(
        f"{what} contains {describe_char(match.group())} at character {match.start() + 1}: "
        "control characters (other than newline and tab) and bidi overrides are refused"
    )


def validate_message(text: str, channel: Channel | str) -> None:
    """Raise InputError if ``text`` is empty, holds a control character or is too long (§7)."""
    if not text or not text.strip():
        raise InputError("empty message")
    check_characters(text)
    if Channel(channel) is Channel.KAKAOTALK:
        if len(text) > KAKAOTALK_MAX_CHARS:
            raise InputError(
                f"message too long for KakaoTalk: {len(text)} characters "
                f"(at most {KAKAOTALK_MAX_CHARS})"
            )
        return
    try:
        size = len(text) if text.isascii() else len(text.encode("cp949"))
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise InputError(f"message cannot be sent by SMS: {bad!r} has no EUC-KR encoding") from None
    if size > SMS_MAX_BYTES:
        raise InputError(
            f"message too long for SMS: {size} bytes in EUC-KR (at most {SMS_MAX_BYTES})"
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A non-retryable answer that ended a message: who refused it, how, and what they said.

    ``signature`` is what a bulk run compares to spot a systematic refusal (SPEC §10): the
    provider, the HTTP status (a 2xx when the body said no) and the error's kind.
    """

    provider: str
    status_code: int | None
    kind: str
    #: the start of the provider's answer, numbers and secrets masked
    excerpt: str = ""

    @property
    def signature(self) -> tuple[str, int | None, str]:
        """Return what two refusals share when they are the same refusal."""
        return (self.provider, self.status_code, self.kind)

    def describe(self) -> str:
        """Return e.g. ``kakaotalk with HTTP 400 (invalid-request): {"error": ...}``."""
        status = f"HTTP {self.status_code}" if self.status_code is not None else "no status"
        said = f": {self.excerpt}" if self.excerpt else " (empty answer)"
        return f"{self.provider} with {status} ({self.kind}){said}"


def choose_channel(text: str, channel: Channel | str, *, fallback: bool) -> tuple[Channel, str]:
    """Validate ``text`` for ``channel``; return the channel to send by and a note ("" if none).

    A message too long for KakaoTalk that SMS can carry goes by SMS (as SMS or LMS) when
    ``fallback`` allows it, with a note saying so; anything else invalid raises InputError::

        >>> choose_channel("a" * 1200, "kakaotalk", fallback=True)[0]
        <Channel.SMS: 'sms'>
    """
    wanted = Channel(channel)
    try:
        validate_message(text, wanted)
    except InputError as exc:
        if not (fallback and wanted is Channel.KAKAOTALK and len(text) > KAKAOTALK_MAX_CHARS):
            raise
        try:
            validate_message(text, Channel.SMS)
        except InputError as sms:
            raise InputError(f"{exc}; {sms}") from None
        note = (
            f"too long for KakaoTalk ({len(text)} characters, at most {KAKAOTALK_MAX_CHARS}): "
            f"sent by SMS as {message_kind(text, Channel.SMS).upper()}"
        )
        return Channel.SMS, note
    return wanted, ""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message checked once, at the edge: ``Sender.send_prepared`` sends it without checking.

    Make it with :func:`prepare_message` (or from values checked the same way, as a bulk row's
    are by ``csvinput``): ``recipient`` normalised, ``text`` valid for ``channel``, the channel
    it goes by (a message too long for KakaoTalk: SMS, ``note`` saying so).
    """

    recipient: str
    text: str
    channel: Channel
    note: str = ""


def prepare_message(
    recipient: str, text: str, via: Channel | str = Channel.KAKAOTALK, *, fallback: bool
) -> Outgoing:
    """Check ``recipient`` and ``text`` for ``via`` once; raise InputError for what cannot go.

    ``fallback`` lets a message too long for KakaoTalk go by SMS (``choose_channel``)::

        >>> prepare_message("01012345678", "a" * 1200, fallback=True).channel
        <Channel.SMS: 'sms'>
    """
    number = normalize_recipient(recipient)
    channel, note = choose_channel(text, via, fallback=fallback)
    return Outgoing(number, text, channel, note)


@dataclass(slots=True)
class DeliveryResult:
    """What happened to one message: the library's answer to ``Sender.send``."""

    recipient: str
    status: str  # "sent" | "failed"
    channel: str | None = None  # the channel that delivered it, or the last one tried
    fallback: bool = False
    attempts: int = 0
    error: str | None = None
    error_kind: str | None = None
    #: why the message went another way than asked (a KakaoTalk message too long: by SMS)
    note: str = ""
    latency_ms: float = 0.0
    #: read timeouts seen: the message may have been delivered more than once
    uncertain: int = 0
    retries: int = 0
    limiter_wait_s: float = 0.0
    attempts_by_channel: dict[str, int] = field(default_factory=dict)
    #: not sent because every channel of the message is unavailable for now (circuit open,
    #: provider paused, limiter store down): seconds until one may be, if known. A bulk run
    #: keeps such a row and tries it again instead of recording it failed.
    unavailable: bool = False
    available_in: float | None = None
    #: every channel tried refused our credentials (401/403): nothing can be delivered
    credentials_refused: bool = False
    #: the non-retryable answer that ended the message, if one did
    refusal: Refusal | None = None
    #: sent by SMS because KakaoTalk's budget had no free slot and SMS's had (``fallback``
    #: is set too; results say ``overflow``)
    overflow: bool = False
    #: providers that answered this message with a 5xx: when a waiting row is tried again,
    #: their breakers do not count it a second time (it would weigh twice in a fresh window)
    refused_by: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the message was delivered."""
        return self.status == "sent"

    @property
    def exit_code(self) -> int:
        """Return ``msgsend send``'s exit code (SPEC §8), from the table ``errors.EXIT_CODES``.

        0 sent. Nothing could be tried now (circuits open, providers paused, limiter store
        down): nothing was sent, so try again later (``TryLaterError``, 75). Otherwise the
        message was not delivered (``MsgsendError``, 1).
        """
        if self.ok:
            return EXIT_OK
        return exit_code_for(TryLaterError if self.unavailable else MsgsendError)

    def to_json(self) -> dict[str, Any]:
        """Return the ``send --json`` document (SPEC §6)."""
        return {
            "recipient": self.recipient,
            "status": self.status,
            "channel": self.channel if self.ok else None,
            "fallback": self.fallback,
            "attempts": self.attempts,
            "error": self.error,
        }


class HealthStatus(StrEnum):
    """The health of one provider, as ``ping`` reports it."""

    UP = "up"
    DOWN = "down"
    AUTH_FAILED = "auth-failed"
    THROTTLED = "throttled"


@dataclass(slots=True, frozen=True)
class ProviderHealth:
    """The answer of one provider's health probe."""

    provider: str
    status: HealthStatus
    latency_ms: float | None
    detail: str = ""
    status_code: int | None = None
