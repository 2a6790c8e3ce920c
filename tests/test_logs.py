"""Tests for msgsend.logs: levels, text/JSON output, masking, and idempotent setup."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgsend.logs import (
    JsonFormatter,
    MaskingFilter,
    level_for_verbosity,
    mask_text,
    reset_logging,
    setup_logging,
)

log = logging.getLogger("msgsend.client")
alerts_log = logging.getLogger("msgsend.alerts")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("010-1234-5678", "010-****-5678"),
        ("01012345678", "010-****-5678"),
        ("010 1234 5678", "010-****-5678"),
        ("+82 10-1234-5678", "010-****-5678"),
        ("+821012345678", "010-****-5678"),
        ("011-123-4567", "011-***-4567"),
        ("to 010.9876.5432!", "to 010-****-5432!"),
        ("010-****-5678", "010-****-5678"),
        ("order 2024010123456789 at 2024-01-10 12:34:56", None),
        ("password=1234", "password=***"),
        ('{"password": "5678"}', '{"password": "***"}'),
        ("MSGSEND_SMS_AUTH_PASSWORD=5678", "MSGSEND_SMS_AUTH_PASSWORD=***"),
        ("Authorization: Basic YXV0b2V2ZXI6MTIzNA==", "Authorization: ***"),
        ("{'Authorization': 'Basic YXV0b2V2ZXI6MTIzNA=='}", "{'Authorization': '***'}"),
        ("header Basic YXV0b2V2ZXI6MTIzNA== sent", "header Basic *** sent"),
        ("http://autoever:1234@localhost:8081/sms", "http://autoever:***@localhost:8081/sms"),
        ("basic validation failed", None),
    ],
)
def test_mask_text(raw, masked):
    assert mask_text(raw) == (raw if masked is None else masked)
    assert mask_text(mask_text(raw)) == mask_text(raw)  # idempotent


def test_levels():
    assert level_for_verbosity(0) == logging.WARNING
    assert level_for_verbosity(1) == logging.INFO
    assert level_for_verbosity(2) == logging.DEBUG
    assert level_for_verbosity(5) == logging.DEBUG


ALL_LEVELS = ("debug", "info", "warning", "error")


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [(0, ALL_LEVELS[2:]), (1, ALL_LEVELS[1:]), (2, ALL_LEVELS)],
)
def test_verbosity_filters_records(stream, verbosity, shown):
    setup_logging(verbosity, stream=stream, rich_tty=False)
    for level in ALL_LEVELS:
        getattr(log, level)(f"{level} line")
    out = stream.getvalue()
    assert [level for level in ALL_LEVELS if f"{level} line" in out] == list(shown)


def test_text_format_and_alert_prefix(stream):
    setup_logging(0, stream=stream, rich_tty=False)
    alerts_log.error(
        "provider-down kakaotalk: circuit open",
        extra={"alert_type": "provider-down", "provider": "kakaotalk"},
    )
    log.warning("plain warning")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("ERROR msgsend.alerts: ALERT provider-down kakaotalk: circuit open")
    assert second.endswith("WARNING msgsend.client: plain warning")
    assert first[:4].isdigit()  # starts with the time


def test_json_lines_carry_extra_fields(stream):
    setup_logging(1, stream=stream, log_format="json", rich_tty=False)
    log.info(
        "attempt %d to %s failed",
        2,
        "010-****-5678",
        extra={
            "provider": "kakaotalk",
            "recipient": "010-****-5678",
            "attempt": 2,
            "status": 503,
            "error": "server-error",
        },
    )
    [record] = json_lines(stream.getvalue())
    assert record["level"] == "INFO"
    assert record["logger"] == "msgsend.client"
    assert record["message"] == "attempt 2 to 010-****-5678 failed"
    assert record["provider"] == "kakaotalk"
    assert record["attempt"] == 2
    assert record["status"] == 503
    assert record["error"] == "server-error"
    assert str(record["time"]).endswith("+00:00")
    assert "T" in str(record["time"])


def test_masking_in_text_and_json(tmp_path, stream):
    log_file = tmp_path / "run.jsonl"
    setup_logging(2, stream=stream, log_file=log_file, log_format="json", rich_tty=False)
    log.debug(
        "sending %r to %s",
        "call me on 010-2222-3333",
        "01012345678",
        extra={"recipient": "010-1234-5678", "fields": ["01099998888"]},
    )
    try:
        raise ValueError("invalid recipient '010-4444-5555'")
    except ValueError:
        log.exception("send failed")
    for text in (stream.getvalue(), log_file.read_text(encoding="utf-8")):
        for secret in ("2222-3333", "01012345678", "1234-5678", "99998888", "4444-5555"):
            assert secret not in text
        first, second = json_lines(text)
        assert first["recipient"] == "010-****-5678"
        assert first["fields"] == ["010-****-8888"]
        assert "010-****-3333" in str(first["message"])
        assert "010-****-5555" in str(second["exc_info"])

    reset_logging()
    text_stream = io.StringIO()
    setup_logging(2, stream=text_stream, rich_tty=False)
    log.info("to %s", "010-1234-5678")
    assert "010-****-5678" in text_stream.getvalue()
    assert "1234-5678" not in text_stream.getvalue()


def test_passwords_and_authorization_never_shown(stream):
    setup_logging(2, stream=stream, rich_tty=False)
    log.debug("request headers %s", {"Authorization": "Basic YXV0b2V2ZXI6MTIzNA=="})
    log.debug("config password=1234 and auth %s", "http://autoever:5678@localhost:8082")
    log.debug("env", extra={"env": "MSGSEND_KAKAOTALK_AUTH_PASSWORD=1234"})
    out = stream.getvalue()
    for secret in ("YXV0b2V2ZXI6MTIzNA", "1234", "5678"):
        assert secret not in out


def test_setup_is_idempotent_and_closes_old_handlers(tmp_path, stream):
    logger = logging.getLogger("msgsend")
    before = list(logger.handlers)
    first_file = tmp_path / "first.log"
    setup_logging(1, stream=stream, log_file=first_file, rich_tty=False)
    old_file_handler = next(h for h in logger.handlers if isinstance(h, logging.FileHandler))
    for _ in range(3):
        setup_logging(1, stream=stream, log_file=tmp_path / "second.log", rich_tty=False)
    ours = [h for h in logger.handlers if h not in before]
    assert len(ours) == 2
    assert old_file_handler.stream is None  # closed
    log.warning("once")
    assert stream.getvalue().count("once") == 1
    assert "once" not in first_file.read_text()
    assert "once" in (tmp_path / "second.log").read_text()
    reset_logging()
    assert logger.handlers == before
    assert logger.level == logging.NOTSET


def test_log_file_gets_the_chosen_format_while_a_tty_stays_human(tmp_path, stream):
    log_file = tmp_path / "run.log"
    setup_logging(1, stream=stream, log_file=log_file, log_format="json", rich_tty=True)
    alerts_log.warning(
        "fallback kakaotalk: sent by SMS to 010-1234-5678",
        extra={"alert_type": "fallback", "provider": "kakaotalk"},
    )
    [record] = json_lines(log_file.read_text(encoding="utf-8"))
    assert record["alert_type"] == "fallback"
    assert record["message"] == "fallback kakaotalk: sent by SMS to 010-****-5678"
    shown = stream.getvalue()
    assert "ALERT fallback kakaotalk" in shown
    assert "010-****-5678" in shown
    assert "1234-5678" not in shown
    assert not shown.lstrip().startswith("{")


def test_unknown_format_is_refused(stream):
    with pytest.raises(ValueError, match="json"):
        setup_logging(0, stream=stream, log_format="xml")


def test_json_formatter_handles_odd_values():
    record = logging.LogRecord("msgsend", logging.INFO, __file__, 1, "x", None, None)
    record.path = __import__("pathlib").Path("/tmp/a")
    assert json.loads(JsonFormatter().format(record))["path"] == "/tmp/a"


def test_masking_filter_survives_bad_format_args():
    record = logging.LogRecord("msgsend", logging.INFO, __file__, 1, "%d", ("x",), None)
    assert MaskingFilter().filter(record) is True


@pytest.mark.usefixtures("permissive_umask")
def test_log_file_is_created_private_whatever_the_umask(tmp_path, stream):
    log_file = tmp_path / "msgsend.log"
    setup_logging(1, stream=stream, log_file=log_file, rich_tty=False)
    log.info("hello")
    reset_logging()
    assert log_file.stat().st_mode & 0o777 == 0o600
    assert "hello" in log_file.read_text(encoding="utf-8")


def test_an_existing_log_file_is_appended_to_and_keeps_its_mode(tmp_path, stream):
    log_file = tmp_path / "msgsend.log"
    log_file.write_text("earlier line\n", encoding="utf-8")
    log_file.chmod(0o640)
    setup_logging(1, stream=stream, log_file=log_file, rich_tty=False)
    log.info("later line")
    reset_logging()
    assert log_file.stat().st_mode & 0o777 == 0o640
    text = log_file.read_text(encoding="utf-8")
    assert text.startswith("earlier line\n") and "later line" in text


def test_a_log_file_that_cannot_be_written_says_so_once_without_a_traceback(stream, capsys):
    # /dev/full opens and then refuses every write (ENOSPC), as a full disk does.
    setup_logging(1, stream=stream, log_file=Path("/dev/full"), rich_tty=False)
    try:
        for number in range(3):
            log.warning("line %d", number)
    finally:
        reset_logging()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert err.count("msgsend: warning: --log-file /dev/full: cannot write") == 1
    assert "No space left on device" in err
    assert stream.getvalue().count("line ") == 3  # the terminal still gets every line
