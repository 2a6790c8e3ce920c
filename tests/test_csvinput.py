"""Tests for msgsend.csvinput: encodings, headers, templates and row validation."""

from __future__ import annotations

import codecs
import os
import threading
from pathlib import Path

import pytest

from msgsend.csvinput import CsvRow, CsvSource, compile_template, inspect_csv
from msgsend.errors import InputError, InputFileError, UsageError
from msgsend.models import Channel

KOREAN = "안녕하세요 고객님 주문하신 상품이 발송되었습니다."


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def rows_of(source: CsvSource) -> list[CsvRow]:
    with source.rows() as rows:
        return list(rows)


# -- encodings --------------------------------------------------------------------------------


def test_utf8_with_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"phone,message\n010-1234-5678,{KOREAN}\n", "utf-8-sig")
    info = inspect_csv(path)
    assert info.bom is True
    assert info.columns == ("phone", "message")  # no '\ufeffphone'
    assert info.total_rows == 1
    (row,) = rows_of(CsvSource(path))
    assert row.error is None
    assert row.message == KOREAN


def test_utf8_without_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"phone,message\n010-1234-5678,{KOREAN}\n")
    info = inspect_csv(path)
    assert (info.encoding, info.bom) == ("utf-8-sig", False)


def test_cp949_detected(tmp_path: Path) -> None:
    path = write(
        tmp_path / "excel.csv", f"이름,phone,message\n김철수,010-1234-5678,{KOREAN}\n", "cp949"
    )
    info = inspect_csv(path)
    assert info.encoding == "cp949"
    assert info.columns == ("이름", "phone", "message")
    (row,) = rows_of(CsvSource(path, template="{이름}님, {message}"))
    assert row.message == f"김철수님, {KOREAN}"


def test_cp949_detected_late_in_file(tmp_path: Path) -> None:
    # The first non-ASCII byte comes after many ASCII rows: the decoder must not guess early.
    lines = ["phone,message"] + [f"010-1234-{i:04d},hello" for i in range(2000)]
    lines.append(f"010-9999-0000,{KOREAN}")
    path = write(tmp_path / "late.csv", "\n".join(lines) + "\n", "cp949")
    info = inspect_csv(path)
    assert info.encoding == "cp949"
    assert rows_of(CsvSource(path))[-1].message == KOREAN


def test_encoding_argument_honoured(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"phone,message\n010-1234-5678,{KOREAN}\n", "euc-kr")
    info = inspect_csv(path, encoding="euc-kr")
    assert codecs.lookup(info.encoding).name == "euc_kr"
    assert rows_of(CsvSource(path, encoding="euc-kr"))[0].message == KOREAN


def test_wrong_encoding_argument_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", f"phone,message\n010-1234-5678,{KOREAN}\n", "cp949")
    with pytest.raises(InputError, match="cannot be decoded as utf-8"):
        inspect_csv(path, encoding="utf-8")


def test_unknown_encoding_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,message\n")
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        inspect_csv(path, encoding="klingon")


def test_utf16_refused_with_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,message\n010-1234-5678,hi\n", "utf-16")
    with pytest.raises(InputError, match="UTF-16"):
        inspect_csv(path)
    assert inspect_csv(path, encoding="utf-16").total_rows == 1


# -- file-level errors --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        inspect_csv(tmp_path / "nope.csv")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="directory"):
        inspect_csv(tmp_path)


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    # `msgsend bulk <(generate)` or a FIFO: the input is read twice, and opening a pipe
    # nobody writes to would block for ever.
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def inspect() -> None:
        try:
            inspect_csv(fifo)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=inspect, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # the open blocked: release it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], InputFileError), outcome
    assert "not a regular file (a pipe or a device)" in str(outcome[0])


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(InputError, match=r"empty\.csv.*header row is required"):
        inspect_csv(path)


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xff\xfe\xfd")
    with pytest.raises(InputError, match=r"image\.csv"):
        CsvSource(path)


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,message\n")
    assert inspect_csv(path).total_rows == 0
    assert rows_of(CsvSource(path)) == []


def test_no_recipient_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "name,message\nkim,hi\n")
    with pytest.raises(InputError) as info:
        CsvSource(path)
    text = str(info.value)
    assert "a.csv" in text and "no recipient column" in text and "'name'" in text


def test_first_line_is_data(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "010-1234-5678,hi\n010-1234-5679,hi\n")
    with pytest.raises(InputError, match="must be a header row"):
        CsvSource(path)


def test_semicolon_file_hint(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone;message\n010-1234-5678;hi\n")
    with pytest.raises(InputError, match="comma-separated"):
        CsvSource(path)


def test_no_message_column_and_no_template(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,name\n010-1234-5678,kim\n")
    with pytest.raises(InputError, match=r"a\.csv.*no message column.*--template"):
        CsvSource(path)


def test_ambiguous_recipient_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,to,message\n010-1234-5678,010-1234-5679,hi\n")
    with pytest.raises(InputError, match="several recipient columns"):
        CsvSource(path)


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ("phone", "message"),
        ("PHONE", "Message"),
        (" phoneNumber ", "content"),
        ("PhoneNumber", "CONTENT"),
        ("phone_number", " message "),
        ("Recipient", "message"),
        ("TO", "content"),
    ],
)
def test_header_aliases(tmp_path: Path, recipient: str, message: str) -> None:
    path = write(tmp_path / "a.csv", f"id,{recipient},{message}\n7,01012345678,hi\n")
    (row,) = rows_of(CsvSource(path))
    assert (row.recipient, row.message, row.error) == ("010-1234-5678", "hi", None)


# -- templates ----------------------------------------------------------------------------------


COLUMNS = ("phone", "name", "item")


def test_template_renders(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,name,item\n010-1234-5678,김철수,{책}\n")
    source = CsvSource(path, template="{name}님, {{주문}} {item} 발송 ({phone})")
    (row,) = rows_of(source)
    assert row.message == "김철수님, {주문} {책} 발송 (010-1234-5678)"


def test_template_wins_over_message_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,message,name\n010-1234-5678,column,kim\n")
    assert rows_of(CsvSource(path, template="hi {name}"))[0].message == "hi kim"


def test_template_column_names_fall_back_to_any_case() -> None:
    assert compile_template("{NAME}", COLUMNS) == "{1}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{name.upper}", r"\{name\.upper\}: only plain column names"),
        ("{name[0]}", r"\{name\[0\]\}: only plain column names"),
        ("{name:>10}", r"\{name:>10\}: format specs are not allowed"),
        ("{name!r}", r"\{name!r\}: conversions"),
        ("{}", r"\{\} is positional"),
        ("{0}", r"\{0\} is positional"),
        ("{nickname}", r"\{nickname\} names no column"),
        ("{name:{item}}", r"format specs are not allowed"),
        ("hello {name", r"invalid template"),
        ("hello }", r"invalid template"),
        ("  ", r"template is empty"),
    ],
)
def test_template_refused(template: str, expected: str) -> None:
    with pytest.raises(InputError, match=expected) as info:
        compile_template(template, COLUMNS)
    if "{" in template and "invalid" not in expected:
        assert "available: 'phone', 'name', 'item'" in str(info.value)


# -- rows ---------------------------------------------------------------------------------------


def test_row_numbers_count_blank_records_and_quoted_newlines(tmp_path: Path) -> None:
    text = (
        "phone,message\n"
        "010-1234-0001,one\n"
        "\n"
        '010-1234-0003,"three\nlines\nlong"\n'
        ",\n"
        "010-1234-0005,five\n"
    )
    path = write(tmp_path / "a.csv", text)
    info = inspect_csv(path)
    assert (info.total_rows, info.blank_rows, info.last_row) == (3, 2, 5)
    rows = rows_of(CsvSource(path))
    assert [(r.row, r.blank) for r in rows] == [
        (1, False),
        (2, True),
        (3, False),
        (4, True),
        (5, False),
    ]
    assert rows[2].message == "three\nlines\nlong"
    assert rows[4].line == 8


def test_via_column(tmp_path: Path) -> None:
    text = (
        "phone,message,VIA\n"
        "010-1234-0001,a,sms\n"
        "010-1234-0002,b,SMS \n"
        "010-1234-0003,c,\n"
        "010-1234-0004,d,KakaoTalk\n"
        "010-1234-0005,e,fax\n"
    )
    rows = rows_of(CsvSource(write(tmp_path / "a.csv", text), via="sms"))
    assert [r.channel for r in rows[:4]] == [
        Channel.SMS,
        Channel.SMS,
        Channel.SMS,
        Channel.KAKAOTALK,
    ]
    rows = rows_of(CsvSource(write(tmp_path / "a.csv", text)))
    assert [r.channel for r in rows[:4]] == [
        Channel.SMS,
        Channel.SMS,
        Channel.KAKAOTALK,
        Channel.KAKAOTALK,
    ]
    assert rows[4].error == "unknown channel 'fax' in the via column (kakaotalk or sms)"


def test_validation_reasons(tmp_path: Path) -> None:
    long_kakao = "가" * 1001
    long_sms = "가" * 1001  # 2002 bytes in EUC-KR
    text = (
        "phone,message,via\n"
        "02-123-4567,landline,\n"
        "010-1234-0002,,\n"
        "010-1234-0003,   ,\n"
        f"010-1234-0004,{long_kakao},\n"
        f"010-1234-0005,{long_sms},sms\n"
        "010-1234-0006,emoji 😀,sms\n"
        f"010-1234-0007,{'가' * 1000},\n"
        "+82 10-1234-0008,ok,\n"
    )
    rows = rows_of(CsvSource(write(tmp_path / "a.csv", text)))
    reasons = [r.error for r in rows]
    assert reasons[0] is not None and reasons[0].startswith("invalid recipient '02-123-4567'")
    assert rows[0].recipient == "02-123-4567"  # the raw value when invalid
    assert reasons[1] == reasons[2] == "empty message"
    assert reasons[3] is not None and "too long for KakaoTalk: 1001 characters" in reasons[3]
    assert reasons[4] is not None and "too long for SMS: 2002 bytes" in reasons[4]
    assert reasons[5] is not None and "no EUC-KR encoding" in reasons[5]
    assert reasons[6] is None and reasons[7] is None
    assert rows[7].recipient == "010-1234-0008"


def test_malformed_records_are_invalid_and_reading_goes_on(tmp_path: Path) -> None:
    text = (
        "phone,message\n"
        "010-1234-0001,one\n"
        "010-1234-0002,two,extra\n"  # an unquoted comma
        "010-1234-0003\n"  # a missing field
        '010-1234-0004,"four"x\n'  # junk after a closing quote
        "010-1234-0005,fi\x00ve\n"  # a NUL byte
        "010-1234-0006,six\n"
    )
    rows = rows_of(CsvSource(write(tmp_path / "a.csv", text)))
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.error is None for r in rows] == [True, False, False, False, False, True]
    assert rows[1].error == (
        "malformed CSV record (line 3): expected 2 fields, found 3; "
        "quote fields that contain commas"
    )
    assert rows[1].recipient == "010-1234-0002"
    assert rows[2].error == "malformed CSV record (line 4): expected 2 fields, found 1"
    assert rows[3].error is not None and "malformed CSV record (line 5)" in rows[3].error
    assert rows[4].error == "NUL byte in the record (line 6)"


def test_unbalanced_quote_swallowing_rows_is_reported(tmp_path: Path) -> None:
    text = (
        "phone,message\n"
        '010-1234-0001,"one\n'  # the quote is never closed before row 2's quote
        '010-1234-0002,"two"\n'
        "010-1234-0003,three\n"
    )
    rows = rows_of(CsvSource(write(tmp_path / "a.csv", text)))
    assert rows[0].error is not None
    assert "lines 2-3" in rows[0].error and "unbalanced quote" in rows[0].error
    assert rows[-1].error is None and rows[-1].message == "three"


def test_unbalanced_quote_at_the_end(tmp_path: Path) -> None:
    text = 'phone,message\n010-1234-0001,one\n010-1234-0002,"two\n010-1234-0003,three\n'
    path = write(tmp_path / "a.csv", text)
    assert inspect_csv(path).total_rows == 2
    rows = rows_of(CsvSource(path))
    assert rows[0].error is None
    assert rows[1].error is not None and "unexpected end of data" in rows[1].error


def test_fields_up_to_one_mebibyte_are_read(tmp_path: Path) -> None:
    big = "가" * 200_000  # over the csv module's default 128 Ki limit
    text = f'phone,message\n010-1234-0001,"{big}"\n010-1234-0002,two\n'
    path = write(tmp_path / "a.csv", text)
    assert inspect_csv(path).total_rows == 2
    rows = rows_of(CsvSource(path))
    assert rows[0].error is not None and "too long for KakaoTalk" in rows[0].error
    assert rows[1].error is None and rows[1].message == "two"


@pytest.mark.parametrize("quoted", [False, True])
def test_a_field_over_one_mebibyte_makes_its_row_invalid_not_the_file(
    tmp_path: Path, quoted: bool
) -> None:
    huge = "x" * (1024 * 1024 + 1)
    cell = f'"{huge}"' if quoted else huge
    text = f"phone,message\n010-1234-0001,one\n010-1234-0002,{cell}\n010-1234-0003,three\n"
    path = write(tmp_path / "a.csv", text)
    assert inspect_csv(path).total_rows == 3
    rows = rows_of(CsvSource(path))
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].error is None and rows[2].error is None and rows[2].message == "three"
    assert rows[1].error == (
        "a field is longer than 1,048,576 characters (line 3); no message is that long"
    )


def test_runaway_quote_past_one_mebibyte_is_one_invalid_row(tmp_path: Path) -> None:
    text = 'phone,message\n010-1234-0001,"' + ("x" * 1000 + "\n") * 1100 + "010-1234-0002,two\n"
    rows = rows_of(CsvSource(write(tmp_path / "a.csv", text)))
    assert rows[0].error is not None
    assert "longer than 1,048,576 characters" in rows[0].error
    assert "unbalanced quote" in rows[0].error


# -- Korean headers and naming the columns ---------------------------------------------------------


@pytest.mark.parametrize(
    "recipient",
    [
        "전화번호",
        "휴대폰",
        "휴대폰번호",
        "휴대전화",
        "핸드폰",
        "핸드폰번호",
        "연락처",
        "수신번호",
        "수신자번호",
    ],
)
@pytest.mark.parametrize("message", ["메시지", "메세지", "내용", "문자내용", "발송내용"])
def test_korean_header_aliases_in_a_cp949_file(
    tmp_path: Path, recipient: str, message: str
) -> None:
    path = write(
        tmp_path / "excel.csv",
        f"이름, {recipient} ,{message}\n김철수,010-1234-5678,{KOREAN}\n",
        "cp949",
    )
    source = CsvSource(path)
    assert source.info.encoding == "cp949"
    (row,) = rows_of(source)
    assert (row.recipient, row.message, row.error) == ("010-1234-5678", KOREAN, None)


def test_korean_headers_with_a_template_in_cp949(tmp_path: Path) -> None:
    path = write(
        tmp_path / "excel.csv", "이름,전화번호,메시지\n김철수,010-1234-5678,무시됨\n", "cp949"
    )
    (row,) = rows_of(CsvSource(path, template="{이름}님, 주문이 발송되었습니다"))
    assert row.message == "김철수님, 주문이 발송되었습니다"


def test_korean_header_in_decomposed_hangul(tmp_path: Path) -> None:
    import unicodedata

    header = unicodedata.normalize("NFD", "휴대폰") + ",message"
    path = write(tmp_path / "mac.csv", f"{header}\n010-1234-5678,hi\n")
    (row,) = rows_of(CsvSource(path))
    assert row.recipient == "010-1234-5678"


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("전화번호,휴대폰,message", 1),
        ("연락처,핸드폰번호,message", 1),
        ("phone,휴대전화,message", 1),
        ("휴대폰번호,수신번호,message", 0),
    ],
)
def test_the_mobile_specific_column_wins(tmp_path: Path, header: str, chosen: int) -> None:
    numbers = ["02-123-4567", "010-1234-5678"]
    if chosen == 0:
        numbers.reverse()
    path = write(tmp_path / "a.csv", f"{header}\n{numbers[0]},{numbers[1]},hi\n")
    source = CsvSource(path)
    assert source.recipient_index == chosen
    assert rows_of(source)[0].recipient == "010-1234-5678"


@pytest.mark.parametrize("header", ["전화번호,연락처,message", "휴대폰,핸드폰,message"])
def test_several_candidates_are_listed_with_the_option(tmp_path: Path, header: str) -> None:
    path = write(tmp_path / "a.csv", f"{header}\n010-1234-5678,010-1234-5679,hi\n")
    first, second, _ = header.split(",")
    with pytest.raises(InputError) as info:
        CsvSource(path)
    text = str(info.value)
    assert f"several recipient columns ('{first}', '{second}')" in text
    assert "--recipient-column NAME" in text


def test_several_message_columns_suggest_the_option(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,메시지,내용\n010-1234-5678,a,b\n")
    with pytest.raises(
        InputError, match=r"several message columns \('메시지', '내용'\).*--message-column"
    ):
        CsvSource(path)


def test_missing_columns_list_what_was_found_and_suggest_the_options(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "고객명,번호,문자\n김,010-1234-5678,hi\n", "cp949")
    with pytest.raises(InputError) as info:
        CsvSource(path)
    text = str(info.value)
    assert "no recipient column (columns found: '고객명', '번호', '문자')" in text
    assert "--recipient-column NAME" in text and "휴대폰" in text
    with pytest.raises(InputError) as info:
        CsvSource(path, recipient_column="번호")
    text = str(info.value)
    assert "no message column (columns found: '고객명', '번호', '문자')" in text
    assert "--message-column NAME" in text and "--template" in text


def test_columns_named_by_option(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.csv", "고객명,번호,문자,phone\n김,010-1234-5678,안녕,02-123-4567\n", "cp949"
    )
    source = CsvSource(path, recipient_column=" 번호 ", message_column="문자")
    (row,) = rows_of(source)
    assert (row.recipient, row.message) == ("010-1234-5678", "안녕")
    # any case when no column has the exact name
    other = write(tmp_path / "b.csv", "Mobile,Text\n010-1234-5678,hi\n")
    (row,) = rows_of(CsvSource(other, recipient_column="mobile", message_column="TEXT"))
    assert (row.recipient, row.message) == ("010-1234-5678", "hi")


def test_a_column_option_naming_no_column_lists_the_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,message\n010-1234-5678,hi\n")
    with pytest.raises(
        InputError,
        match=r"--recipient-column 'mobile' names no column \(columns found: 'phone', 'message'\)",
    ):
        CsvSource(path, recipient_column="mobile")
    with pytest.raises(InputError, match="--message-column 'text' names no column"):
        CsvSource(path, message_column="text")


def test_message_column_and_template_exclude_each_other(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,message\n010-1234-5678,hi\n")
    with pytest.raises(UsageError, match="--message-column and --template"):
        CsvSource(path, template="{message}", message_column="message")


# -- empty template fields -------------------------------------------------------------------------


def test_a_template_field_left_empty_makes_the_row_invalid(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.csv",
        "phone,이름,상품\n"
        "010-1234-0001,김철수,신발\n010-1234-0002,,가방\n010-1234-0003,이영희,  \n",
    )
    rows = rows_of(CsvSource(path, template="{이름}님, {상품} 발송"))
    assert [r.error for r in rows] == [
        None,
        "empty field {이름} (fill it in, or pass --allow-empty-fields to send anyway)",
        "empty field {상품} (fill it in, or pass --allow-empty-fields to send anyway)",
    ]
    assert rows[1].recipient == "010-1234-0002"  # normalised: the number was fine
    allowed = rows_of(CsvSource(path, template="{이름}님, {상품} 발송", allow_empty_fields=True))
    assert [r.error for r in allowed] == [None, None, None]
    assert allowed[1].message == "님, 가방 발송"


def test_empty_cells_outside_the_template_do_not_matter(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "phone,이름,memo\n010-1234-0001,김철수,\n")
    (row,) = rows_of(CsvSource(path, template="{이름}님 안녕하세요"))
    assert row.error is None


# -- too long for KakaoTalk ------------------------------------------------------------------------


def test_a_message_too_long_for_kakaotalk_goes_by_sms_with_a_note(tmp_path: Path) -> None:
    text = "가" * 1001  # 2,002 bytes: too long for SMS too
    fits = "가" * 600 + "a" * 500  # 1,100 characters, 1,700 bytes
    path = write(tmp_path / "a.csv", f"phone,message\n010-1234-0001,{fits}\n010-1234-0002,{text}\n")
    first, second = rows_of(CsvSource(path))
    assert (first.channel, first.error) == (Channel.SMS, None)
    assert first.note == (
        "too long for KakaoTalk (1100 characters, at most 1000): sent by SMS as LMS"
    )
    assert second.error is not None and "too long for SMS: 2002 bytes" in second.error
    # without fallback the row is invalid, as before
    (refused, _) = rows_of(CsvSource(path, fallback=False))
    assert refused.error is not None and "too long for KakaoTalk: 1100 characters" in refused.error
