"""Logging setup for msgsend: levels, text/JSON formats, and masking of numbers and secrets.

The library only logs, under the ``msgsend`` namespace (alerts under ``msgsend.alerts``);
``setup_logging`` is what the CLI calls to decide where the records go::

    setup_logging(verbosity=1, log_file=Path("run.log"), log_format="json")

Levels: 0 → WARNING (alerts are WARNING/ERROR, so they stay visible), 1 → INFO (every attempt,
retry, fallback and final result), 2 → DEBUG (message text included). Every handler installed
here carries a ``MaskingFilter``: Korean mobile numbers become ``010-****-5678`` and passwords,
``Authorization`` headers and URL credentials become ``***`` in the message, its arguments, the
``extra`` fields and any traceback.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

from .events import (
    AttemptFinished,
    CircuitChanged,
    Event,
    FellBack,
    LimiterStoreChanged,
    MessageFinished,
    Overflowed,
    ProviderPaused,
    RetryScheduled,
    RunPaused,
    RunResumed,
    RunStopped,
)
from .redact import redact_text

__all__ = [
    "LOGGER_NAME",
    "RUN_LOGGER",
    "JsonFormatter",
    "MaskingFilter",
    "TextFormatter",
    "level_for_verbosity",
    "log_event",
    "mask_text",
    "reset_logging",
    "setup_logging",
]

LOGGER_NAME: Final = "msgsend"
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# 010/011/016/017/018/019 numbers, with or without separators, or with the +82 / 0082 / 82 prefix.
# The look-arounds stop it from biting into longer digit runs (ids, timestamps).
_MOBILE_IN_TEXT = re.compile(
    r"(?<![\d*])(?:(?:\+|00)?82[\s.\-]?0?|0)(1[016789])[\s.\-]?(\d{3,4})[\s.\-]?(\d{4})(?!\d)"
)
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", None, None).__dict__, "message", "asctime", "taskName"]
)
_HANDLER_MARK: Final = "_msgsend_handler"


def _mask_mobile(match: re.Match[str]) -> str:
    """Return the masked form of one matched mobile number."""
    prefix, middle, last = match.groups()
    return f"0{prefix}-{'*' * len(middle)}-{last}"


def mask_text(text: str) -> str:
    """Mask mobile numbers and credentials in free text.

    >>> mask_text("to 01012345678, password=1234")
    'to 010-****-5678, password=***'
    """
    if not text:
        return text
    return redact_text(_MOBILE_IN_TEXT.sub(_mask_mobile, text))


def _mask_value(value: Any) -> Any:
    """Mask strings, and strings inside lists, tuples and dicts; leave other values alone."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, list | tuple):
        return type(value)(_mask_value(item) for item in value)
    if isinstance(value, Mapping):
        return {key: _mask_value(item) for key, item in value.items()}
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the fields a record got through ``extra=``."""
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRS}


class MaskingFilter(logging.Filter):
    """Mask phone numbers and secrets in a record's message, arguments, extras and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        try:
            rendered = record.getMessage()
        except Exception:  # a bad format string is logging's problem to report, not ours
            rendered = None
        if rendered is not None:
            record.msg = mask_text(rendered)
            record.args = None
        for key, value in extra_fields(record).items():
            setattr(record, key, _mask_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


class _PrivateFileHandler(logging.FileHandler):
    """A log file appended to, created 0600 whatever the umask (it names hosts, runs, files)."""

    _failed = False

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:
        """Say once, in one line, that the log file cannot be written (a full disk).

        logging's default prints a traceback per record on stderr; the run goes on.
        """
        self._report(sys.exc_info()[1])

    def close(self) -> None:
        try:
            super().close()
        except OSError as exc:  # the last buffered lines could not be written either
            self._report(exc)

    def _report(self, exc: BaseException | None) -> None:
        if self._failed:
            return
        self._failed = True
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        with contextlib.suppress(Exception):
            sys.stderr.write(
                f"msgsend: warning: --log-file {self.baseFilename}: cannot write ({reason}); "
                "its log lines are lost from now on\n"
            )


def _alert_prefix(record: logging.LogRecord) -> str:
    """Return ``"ALERT "`` for alert records, so they stand out in human output."""
    return "ALERT " if getattr(record, "alert_type", None) else ""


class TextFormatter(logging.Formatter):
    """Format ``time level logger: message`` lines, alerts prefixed with ``ALERT``."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Prefix alert messages before the standard formatting."""
        prefix = _alert_prefix(record)
        if not prefix:
            return super().formatMessage(record)
        original = record.message
        record.message = prefix + original
        try:
            return super().formatMessage(record)
        finally:
            record.message = original


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object: time, level, logger, message, and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a single JSON line."""
        document: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            document.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc_info"] = record.exc_text
        if record.stack_info:
            document["stack_info"] = record.stack_info
        return json.dumps(document, ensure_ascii=False, default=str)


def level_for_verbosity(verbosity: int) -> int:
    """Map the count of ``-v`` flags to a logging level."""
    if verbosity <= 0:
        return logging.WARNING
    if verbosity == 1:
        return logging.INFO
    return logging.DEBUG


def _formatter(log_format: str) -> logging.Formatter:
    """Return the formatter for ``text`` or ``json``."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


def _rich_handler(stream: IO[str], console: Any = None) -> logging.Handler:
    """Build a rich handler on ``stream``; rich is imported only when a terminal needs it."""
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(
        # Sharing the CLI's console lets a live progress bar keep log lines above it.
        console=console if console is not None else Console(file=stream),
        show_path=False,
        markup=False,
        rich_tracebacks=False,  # tracebacks go through the (masked) exc_text instead
    )

    class _RichAlertFormatter(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:
            return _alert_prefix(record) + super().formatMessage(record)

    handler.setFormatter(_RichAlertFormatter("%(message)s"))
    return handler


def reset_logging() -> None:
    """Remove and close the handlers ``setup_logging`` installed, and reset the level."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(logging.NOTSET)


def setup_logging(
    verbosity: int = 0,
    *,
    log_file: Path | None = None,
    log_format: str = "text",
    stream: IO[str] | None = None,
    rich_tty: bool | None = None,
    rich_console: Any = None,
) -> None:
    """Send msgsend's log records to stderr (or ``stream``) and optionally a file.

    A terminal gets human output (rich when available); every other destination, the log
    file included, gets ``log_format``. ``rich_tty`` forces or forbids the terminal handler
    (default: whether ``stream`` is a TTY); ``rich_console`` is the rich Console to log through.
    Calling it again replaces the previous setup.
    Raises ``ValueError`` for an unknown format and ``OSError`` if the log file cannot be opened.

        setup_logging(2, log_file=Path("msgsend.log"), log_format="json")
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: expected 'text' or 'json'")
    level = level_for_verbosity(verbosity)
    target: IO[str] = stream if stream is not None else sys.stderr
    if rich_tty is None:
        try:
            rich_tty = target.isatty()
        except (AttributeError, ValueError):
            rich_tty = False

    handlers: list[logging.Handler] = []
    if log_file is not None:
        file_handler = _PrivateFileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(_formatter(log_format))
        handlers.append(file_handler)
    console: logging.Handler
    if rich_tty:
        console = _rich_handler(target, rich_console)
    else:
        console = logging.StreamHandler(target)
        console.setFormatter(_formatter(log_format))
    handlers.insert(0, console)

    reset_logging()
    logger = logging.getLogger(LOGGER_NAME)
    masking = MaskingFilter()
    for handler in handlers:
        handler.setLevel(level)
        handler.addFilter(masking)
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    if log_file is not None and level > logging.INFO:
        # Cron-grade: the run's start and end lines reach the log file without -v.
        file_handler.setLevel(logging.INFO)
        file_handler.addFilter(_RunLinesOrLevel(level))
        level = logging.INFO
    logger.setLevel(level)


#: the logger of a command's start and end lines (``msgsend.cli``)
RUN_LOGGER: Final = f"{LOGGER_NAME}.run"


class _RunLinesOrLevel(logging.Filter):
    """Pass records at ``level`` and above, and the run's start/end lines at any level."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or record.name == RUN_LOGGER


_client_log = logging.getLogger("msgsend.client")
_circuit_log = logging.getLogger("msgsend.circuit")
_bulk_log = logging.getLogger("msgsend.bulk")
_limiter_log = logging.getLogger("msgsend.ratelimit")


def log_event(event: Event) -> None:
    """Log what ``event`` says, on the logger of the layer it comes from (an events listener).

    INFO: failed attempts, retries, fallbacks, delivered messages and circuit transitions;
    WARNING: a message that was not delivered. Alerts are logged by ``alerts.Alerter``.
    """
    match event:
        case AttemptFinished(ok=False, seconds=float()):
            _client_log.info(
                "%s attempt %d on %s failed: %s",
                event.recipient,
                event.attempt,
                event.provider,
                event.error,
                extra={
                    "event": "attempt-failed",
                    "recipient": event.recipient,
                    "provider": event.provider,
                    "status_code": event.status_code,
                    "error": event.result,
                },
            )
        case RetryScheduled():
            _client_log.info(
                "%s retry %d on %s in %.1f s after: %s",
                event.recipient,
                event.retry,
                event.provider,
                event.delay,
                event.error,
                extra={"event": "retry", "recipient": event.recipient, "provider": event.provider},
            )
        case FellBack():
            _client_log.info(
                "%s falling back from %s to %s: %s",
                event.recipient,
                event.from_provider,
                event.to_provider,
                event.reason,
                extra={
                    "event": "fallback",
                    "recipient": event.recipient,
                    "provider": event.from_provider,
                },
            )
        case MessageFinished():
            _client_log.log(
                logging.INFO if event.ok else logging.WARNING,
                "%s %s via %s%s after %d attempt(s)%s",
                event.recipient,
                "sent" if event.ok else "FAILED",
                event.channel,
                " (fallback)" if event.fallback else "",
                event.attempts,
                f": {event.error}" if event.error else "",
                extra={
                    "event": "result",
                    "recipient": event.recipient,
                    "status": event.status,
                    "channel": event.channel,
                    "fallback": event.fallback,
                    "attempts": event.attempts,
                },
            )
        case Overflowed():
            _client_log.info(
                "%s overflows from %s to %s: %s has no free slot now",
                event.recipient,
                event.from_provider,
                event.to_provider,
                event.from_provider,
                extra={
                    "event": "overflow",
                    "recipient": event.recipient,
                    "provider": event.from_provider,
                },
            )
        case RunPaused():
            _bulk_log.log(
                logging.INFO if event.kind == "quiet-hours" else logging.WARNING,
                "bulk: %s",
                event.describe(),
                extra={"event": f"paused-{event.kind}"},
            )
        case RunResumed():
            _bulk_log.info("bulk: sending again after %s", event.reason, extra={"event": "resumed"})
        case RunStopped():
            # INFO: the run-stopped alert is the operator-visible signal (and the CLI's error).
            _bulk_log.info(
                "bulk: stopped (exit %d, %d rows left for --resume): %s",
                event.exit_code,
                event.left,
                event.reason,
                extra={"event": "stopped", "exit_code": event.exit_code, "left": event.left},
            )
        case LimiterStoreChanged(down=True):
            _limiter_log.warning("%s", event.reason, extra={"event": "limiter-store-down"})
        case LimiterStoreChanged(down=False):
            _limiter_log.warning(
                "the rate limiter's %s store answers again",
                event.store,
                extra={"event": "limiter-store-recovered"},
            )
        case CircuitChanged():
            # INFO, not WARNING: the alert rules turn transitions into the operator-visible
            # signal; logging both at WARNING would say everything twice.
            _circuit_log.info(
                "%s circuit %s -> %s: %s",
                event.provider,
                event.old,
                event.new,
                event.reason,
                extra={"provider": event.provider, "circuit": event.new},
            )
        case ProviderPaused():
            _circuit_log.warning(
                "%s paused for %.0f s: %s",
                event.provider,
                event.seconds,
                event.reason,
                extra={"provider": event.provider, "paused_for": event.seconds},
            )
