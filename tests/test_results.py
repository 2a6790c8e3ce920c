"""Tests for msgsend.results: format v2 (BOM, kind, formula-safe cells), v1 files, modes, errors."""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from e2e import phone, write_config, write_csv
from fakes import FakeSender
from msgsend.bulk import BulkOptions, send_bulk
from msgsend.cli import app
from msgsend.errors import InputError, ResultsWriteError
from msgsend.results import (
    PREVIEW_COLUMNS,
    RESULTS_COLUMNS,
    RESULTS_COLUMNS_V1,
    ResultsFile,
    escape_cell,
    unescape_cell,
)

runner = CliRunner()
BOM = b"\xef\xbb\xbf"
V1_HEADER = ",".join(RESULTS_COLUMNS_V1)


def rows_of(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def by_row(path: Path) -> dict[int, dict[str, str]]:
    header, *lines = rows_of(path)
    return {int(line[0]): dict(zip(header, line, strict=True)) for line in lines}


@pytest.fixture
def umask() -> Iterator[Any]:
    """Set the process umask for one test and restore it."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


# ---------------------------------------------------------------------- formula-safe cells


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("'=already quoted", "''=already quoted"),
        ("''+two", "'''+two"),
        ("'plain", "'plain"),
        ("010-1234-5678", "010-1234-5678"),
        ("a=b", "a=b"),
        ("", ""),
        ("안녕 =)", "안녕 =)"),
    ],
)
def test_escape_cell_follows_the_owasp_rule_and_round_trips(raw: str, written: str) -> None:
    assert escape_cell(raw) == written
    assert unescape_cell(written) == raw


def test_unescape_is_the_inverse_of_escape_for_every_short_string() -> None:
    alphabet = ["'", "=", "+", "-", "@", "\t", "\r", "a", "가"]
    values = [""]
    for _ in range(4):
        values = [v + c for v in values for c in alphabet] + values
    for value in set(values):
        assert unescape_cell(escape_cell(value)) == value


def test_results_cells_are_formula_safe_and_resume_reads_them_back(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [('=HYPERLINK("http://evil")', "hi"), ("+82 10 5000 1001", "@SUM(1+1)"), ("-1", "x")],
    )
    sender = FakeSender()
    report = send_bulk(source, sender)
    assert [call[1] for call in sender.calls] == ["@SUM(1+1)"]  # the message is never altered
    lines = by_row(tmp_path / "in.results.csv")
    assert lines[1]["recipient"] == '\'=HYPERLINK("http://evil")'
    assert lines[1]["status"] == "invalid"
    assert lines[3]["recipient"] == "'-1"
    for line in lines.values():
        for value in line.values():
            assert value[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert report.invalid == 2

    # Resume compares the raw values: the escaped recipients match the input's rows.
    again = FakeSender()
    resumed = send_bulk(source, again, BulkOptions(resume=True))
    assert again.calls == [] and resumed.skipped == 3


def test_provider_error_text_is_formula_safe(tmp_path: Path) -> None:
    class Refusing(FakeSender):
        def send(self, recipient: str, text: str, **kwargs: Any) -> Any:
            raise InputError("=cmd|' /C calc'!A0")

    source = write_csv(tmp_path / "in.csv", [(phone(1), "hi")])
    send_bulk(source, Refusing())
    assert by_row(tmp_path / "in.results.csv")[1]["error"] == "'=cmd|' /C calc'!A0"


def test_preview_cells_are_formula_safe(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "=1+1"), (phone(2), "-가")])
    send_bulk(source, None, BulkOptions(dry_run=True))
    lines = by_row(tmp_path / "in.preview.csv")
    assert (lines[1]["message"], lines[2]["message"]) == ("'=1+1", "'-가")


# ---------------------------------------------------------------------- format v2


def test_results_v2_has_a_bom_and_a_trailing_kind_column(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [
            (phone(1), "짧은 문자", "sms"),
            (phone(2), "가" * 45, "sms"),  # 90 bytes: still SMS
            (phone(3), "가" * 45 + "!", "sms"),  # 91 bytes: LMS
            (phone(4), "가" * 46, "kakaotalk"),
            ("bad", "x", "sms"),
        ],
        header=("phone", "message", "via"),
    )
    send_bulk(source, FakeSender())
    path = tmp_path / "in.results.csv"
    assert path.read_bytes().startswith(BOM + ",".join(RESULTS_COLUMNS).encode() + b"\n")
    assert RESULTS_COLUMNS[-1] == "kind" and RESULTS_COLUMNS[:-1] == RESULTS_COLUMNS_V1
    lines = by_row(path)
    assert {row: line["kind"] for row, line in lines.items()} == {
        1: "sms",
        2: "sms",
        3: "lms",
        4: "kakaotalk",
        5: "",
    }


def test_kind_follows_the_channel_that_delivered(tmp_path: Path) -> None:
    # FakeSender delivers numbers ending in 9 by SMS fallback.
    source = write_csv(tmp_path / "in.csv", [("010-1234-0009", "가" * 60)])
    send_bulk(source, FakeSender())
    line = by_row(tmp_path / "in.results.csv")[1]
    assert (line["channel"], line["fallback"], line["kind"]) == ("sms", "true", "lms")


def test_preview_shows_kind_and_bytes(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [
            (phone(1), "가" * 45, "sms"),
            (phone(2), "가나a", "kakaotalk"),
            (phone(3), "x" * 91, "sms"),
        ],
        header=("phone", "message", "via"),
    )
    send_bulk(source, None, BulkOptions(dry_run=True))
    path = tmp_path / "in.preview.csv"
    assert path.read_bytes().startswith(BOM + ",".join(PREVIEW_COLUMNS).encode() + b"\n")
    lines = by_row(path)
    assert [(line["kind"], line["bytes"]) for line in lines.values()] == [
        ("sms", "90"),
        ("kakaotalk", "5"),
        ("lms", "91"),
    ]


# ---------------------------------------------------------------------- files of earlier versions


def test_resume_reads_a_v1_file_and_appends_in_its_own_width(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(i), f"m{i}") for i in range(1, 5)])
    path = tmp_path / "in.results.csv"
    v1 = (
        V1_HEADER + "\n"
        f"1,{phone(1)},sent,kakaotalk,false,1,,5.0,2024-01-01T00:00:00.000+00:00\n"
        f"2,{phone(2)},failed,sms,true,6,HTTP 503,5.0,2024-01-01T00:00:00.000+00:00\n"
    )
    path.write_bytes(v1.encode())
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(resume=True))
    assert sorted(sender.recipients) == [phone(2), phone(3), phone(4)]
    assert report.skipped == 1
    data = path.read_bytes()
    assert data.startswith(v1.encode())  # no BOM added, nothing rewritten
    lines = rows_of(path)
    assert all(len(line) == len(RESULTS_COLUMNS_V1) for line in lines)
    # and a second resume reads what the first appended
    again = FakeSender()
    assert send_bulk(source, again, BulkOptions(resume=True)).skipped == 4
    assert again.calls == []


def test_resume_reads_a_v1_file_with_a_bom(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a"), (phone(2), "b")])
    path = tmp_path / "in.results.csv"
    path.write_bytes(
        BOM
        + f"{V1_HEADER}\n1,{phone(1)},sent,sms,false,1,,1.0,2024-01-01T00:00:00+00:00\n".encode()
    )
    sender = FakeSender()
    send_bulk(source, sender, BulkOptions(resume=True))
    assert sender.recipients == [phone(2)]


@pytest.mark.parametrize(
    "header", [",".join(PREVIEW_COLUMNS), V1_HEADER + ",message"], ids=["v2", "v1"]
)
def test_resume_refuses_a_preview_of_either_version(tmp_path: Path, header: str) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    preview = tmp_path / "in.preview.csv"
    preview.write_bytes(BOM + header.encode() + b"\n")
    with pytest.raises(InputError, match="is a dry-run preview"):
        send_bulk(source, FakeSender(), BulkOptions(resume=True, results_path=preview))


def test_a_dry_run_overwrites_a_v1_preview(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    preview = tmp_path / "in.preview.csv"
    preview.write_bytes(BOM + (V1_HEADER + ",message\n").encode())
    send_bulk(source, None, BulkOptions(dry_run=True))
    assert rows_of(preview)[0] == list(PREVIEW_COLUMNS)


# ---------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_results_and_preview_are_created_0600_whatever_the_umask(
    tmp_path: Path, umask: Any, mask: int
) -> None:
    umask(mask)
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    send_bulk(source, FakeSender())
    send_bulk(source, None, BulkOptions(dry_run=True))
    for name in ("in.results.csv", "in.preview.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_a_rewritten_preview_becomes_0600(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    preview = tmp_path / "in.preview.csv"
    send_bulk(source, None, BulkOptions(dry_run=True))
    preview.chmod(0o644)
    send_bulk(source, None, BulkOptions(dry_run=True))
    assert stat.S_IMODE(preview.stat().st_mode) == 0o600


# ---------------------------------------------------------------------- targets that fail


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("resume", [False, True])
def test_a_full_device_fails_with_results_write_error_before_sending(
    tmp_path: Path, resume: bool
) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(i), "a") for i in range(50)])
    sender = FakeSender()
    options = BulkOptions(results_path=Path("/dev/full"), resume=resume)
    with pytest.raises(ResultsWriteError, match="/dev/full: cannot write the results file"):
        send_bulk(source, sender, options)
    assert sender.calls == []


def test_a_write_failure_mid_run_stops_the_run_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    original = ResultsFile.write

    def failing(self: ResultsFile, values: Any) -> None:
        writes.append(1)
        if len(writes) > 5:
            raise ResultsWriteError(f"{self.path}: cannot write the results file: disk full")
        original(self, values)

    monkeypatch.setattr(ResultsFile, "write", failing)
    source = write_csv(tmp_path / "in.csv", [(phone(i), "a") for i in range(2000)])
    sender = FakeSender()
    with pytest.raises(ResultsWriteError, match=r"disk full; row \d+ ended sent but is not"):
        send_bulk(source, sender, BulkOptions(concurrency=4))
    assert len(writes) == 6  # the first failure stops every writer: no retry, no spinning
    assert len(sender.calls) < 100  # the producer stopped taking rows
    assert len(rows_of(tmp_path / "in.results.csv")) == 1 + 5


def test_dev_null_takes_results_with_or_without_resume(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a"), (phone(2), "b")])
    for resume in (False, True):
        sender = FakeSender()
        options = BulkOptions(results_path=Path("/dev/null"), resume=resume)
        report = send_bulk(source, sender, options)
        assert report.sent == 2 and len(sender.calls) == 2


# ---------------------------------------------------------------------- through the CLI


def _bulk(*args: str) -> Any:
    return runner.invoke(app, ["bulk", *args])


def test_cli_results_in_a_missing_folder_exits_66(tmp_path: Path, sandbox: Any) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    config = write_config(tmp_path / "c.toml", sandbox)
    target = tmp_path / "no" / "such" / "results.csv"
    result = _bulk(str(source), "--results", str(target), "--config", str(config))
    assert result.exit_code == 66, result.output
    assert f"{target}: cannot open the results file" in result.stderr
    assert sandbox.count() == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("extra", [[], ["--resume"], ["--dry-run"]])
def test_cli_dev_full_exits_74_once(tmp_path: Path, sandbox: Any, extra: list[str]) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(i), "a") for i in range(20)])
    config = write_config(tmp_path / "c.toml", sandbox)
    result = _bulk(str(source), "--results", "/dev/full", "--config", str(config), *extra)
    assert result.exit_code == 74, result.output
    assert result.stderr.count("msgsend: error:") == 1
    assert "/dev/full: cannot write the" in result.stderr
    assert "Traceback" not in result.output
    assert sandbox.count() == 0


def test_cli_dev_null_with_resume_sends_everything(tmp_path: Path, sandbox: Any) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(i), "a") for i in range(3)])
    config = write_config(tmp_path / "c.toml", sandbox)
    result = _bulk(str(source), "--results", "/dev/null", "--resume", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert len(sandbox.delivered()) == 3


def test_a_message_too_long_for_kakaotalk_is_recorded_sms_with_the_reason(tmp_path: Path) -> None:
    long = "a" * 1100
    source = write_csv(tmp_path / "in.csv", [(phone(1), long), (phone(2), "short")])
    sender = FakeSender()
    send_bulk(source, sender)
    assert sorted((call[0], str(call[2])) for call in sender.calls) == [
        (phone(1), "sms"),
        (phone(2), "kakaotalk"),
    ]
    line = by_row(tmp_path / "in.results.csv")[1]
    assert (line["status"], line["channel"], line["kind"]) == ("sent", "sms", "lms")
    assert line["error"] == (
        "too long for KakaoTalk (1100 characters, at most 1000): sent by SMS as LMS"
    )
    send_bulk(source, None, BulkOptions(dry_run=True))
    preview = by_row(tmp_path / "in.preview.csv")[1]
    assert (preview["status"], preview["channel"], preview["kind"]) == ("ready", "sms", "lms")
    assert preview["error"].startswith("too long for KakaoTalk")
    assert preview["bytes"] == "1100"


def test_without_fallback_a_message_too_long_for_kakaotalk_is_invalid(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a" * 1100)])
    sender = FakeSender()
    report = send_bulk(source, sender, BulkOptions(fallback=False))
    assert sender.calls == [] and report.invalid == 1
    assert "too long for KakaoTalk: 1100 characters" in by_row(report.results_path)[1]["error"]


def test_cli_korean_excel_file_with_named_columns(tmp_path: Path, sandbox: Any) -> None:
    source = tmp_path / "고객.csv"
    source.write_bytes(
        "이름,번호,문자내용,휴대폰\n"
        f"김철수,02-123-4567,안녕하세요,{phone(1)}\n"
        f"이영희,{phone(2)},반갑습니다,02-765-4321\n".encode("cp949")
    )
    config = write_config(tmp_path / "c.toml", sandbox)
    # 휴대폰 wins over the other candidates; 문자내용 is a message alias
    result = _bulk(str(source), "--config", str(config), "--results", str(tmp_path / "a.csv"))
    assert result.exit_code == 1, result.output  # row 2's 휴대폰 is a landline
    assert [r.recipient for r in sandbox.delivered()] == [phone(1)]
    # --recipient-column picks the other one; the template may use Korean names
    sandbox.reset()
    result = _bulk(
        str(source), "--config", str(config), "--results", str(tmp_path / "b.csv"),
        "--recipient-column", "번호", "--template", "{이름}님, {문자내용}",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert [(r.recipient, r.message) for r in sandbox.delivered()] == [
        (phone(2), "이영희님, 반갑습니다")
    ]


def test_cli_empty_template_field_is_invalid_unless_allowed(tmp_path: Path, sandbox: Any) -> None:
    source = write_csv(
        tmp_path / "in.csv", [(phone(1), ""), (phone(2), "김")], header=("phone", "name")
    )
    config = write_config(tmp_path / "c.toml", sandbox)
    args = [str(source), "--config", str(config), "--template", "{name}님, 안녕하세요"]
    result = _bulk(*args, "--results", str(tmp_path / "a.csv"))
    assert result.exit_code == 1
    assert by_row(tmp_path / "a.csv")[1]["error"].startswith("empty field {name}")
    assert [r.message for r in sandbox.delivered()] == ["김님, 안녕하세요"]
    sandbox.reset()
    result = _bulk(*args, "--results", str(tmp_path / "b.csv"), "--allow-empty-fields")
    assert result.exit_code == 0, result.output
    assert sorted(r.message for r in sandbox.delivered()) == ["김님, 안녕하세요", "님, 안녕하세요"]


def test_cli_missing_column_error_suggests_the_option(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [("x", "y")], header=("고객", "번호"))
    result = _bulk(str(source), "--dry-run")
    assert result.exit_code == 65
    assert "no recipient column (columns found: '고객', '번호')" in result.stderr
    assert "--recipient-column NAME" in result.stderr


def test_the_report_counts_messages_per_kind(tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [
            (phone(1), "짧게", "sms"),
            (phone(2), "가" * 46, "sms"),
            (phone(3), "가" * 46, "sms"),
            (phone(4), "hi", "kakaotalk"),
            ("bad", "hi", "sms"),
        ],
        header=("phone", "message", "via"),
    )
    preview = send_bulk(source, None, BulkOptions(dry_run=True))
    assert preview.kinds == {"sms": 1, "lms": 2, "kakaotalk": 1}
    report = send_bulk(source, FakeSender(fail={phone(3)}))
    assert report.kinds == {"sms": 1, "lms": 1, "kakaotalk": 1}  # sent only
    assert report.to_json()["kinds"] == report.kinds


def test_cli_json_and_summary_count_messages_per_kind(tmp_path: Path, sandbox: Any) -> None:
    import json

    rows = [(phone(1), "짧게", "sms"), (phone(2), "가" * 46, "sms"), (phone(3), "hi", "")]
    source = write_csv(tmp_path / "in.csv", rows, header=("phone", "message", "via"))
    config = write_config(tmp_path / "c.toml", sandbox)
    result = _bulk(str(source), "--config", str(config), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kinds"] == {"sms": 1, "lms": 1, "kakaotalk": 1}
    result = _bulk(str(source), "--config", str(config), "--results", str(tmp_path / "b.csv"))
    assert "messages sent by kind: kakaotalk 1, sms 1, lms 1" in result.stderr
    dry = _bulk(str(source), "--dry-run")
    assert "messages to send by kind: kakaotalk 1, sms 1, lms 1" in dry.stderr


def test_a_pipe_nobody_reads_fails_at_once_with_66(tmp_path: Path) -> None:
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    sender = FakeSender()
    with pytest.raises(InputError, match="cannot open the results file"):
        send_bulk(source, sender, BulkOptions(results_path=fifo, resume=True))
    assert sender.calls == []


def test_a_dry_run_into_a_pipe_nobody_reads_fails_at_once_with_66(tmp_path: Path) -> None:
    fifo = tmp_path / "preview.fifo"
    os.mkfifo(fifo)
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    with pytest.raises(InputError, match="cannot write the preview"):
        send_bulk(source, None, BulkOptions(results_path=fifo, dry_run=True))


def test_a_dry_run_into_dev_null(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", [(phone(1), "a")])
    report = send_bulk(source, None, BulkOptions(results_path=Path("/dev/null"), dry_run=True))
    assert report.ready == 1
