"""Tests for msgsend.models: recipients, message limits and result documents."""

from __future__ import annotations

import pytest

from msgsend import models
from msgsend.errors import InputError
from msgsend.models import (
    KAKAOTALK_MAX_CHARS,
    SMS_MAX_BYTES,
    SMS_SHORT_MAX_BYTES,
    Channel,
    DeliveryResult,
    MessageKind,
    choose_channel,
    mask_recipient,
    message_kind,
    normalize_recipient,
    sms_bytes,
    validate_message,
)


def _full_width(text: str) -> str:
    """Return ``text`` with full-width digits and hyphen (U+FF10..., U+FF0D)."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def _isort_key(name: str) -> tuple[int, str]:
    # ruff RUF022 order: CONSTANTS, then Classes, then functions
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete():
    assert models.__all__ == sorted(models.__all__, key=_isort_key)
    for name in models.__all__:
        assert hasattr(models, name)


def test_limits_match_the_spec():
    assert (KAKAOTALK_MAX_CHARS, SMS_MAX_BYTES) == (1000, 2000)
    assert models.CHANNELS == ("kakaotalk", "sms")
    assert all(type(name) is str for name in models.CHANNELS)  # keys and labels as written


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("010-1234-5678", "010-1234-5678"),
        ("01012345678", "010-1234-5678"),
        ("010 1234 5678", "010-1234-5678"),
        ("010.1234.5678", "010-1234-5678"),
        ("(010) 1234-5678", "010-1234-5678"),
        ("  010-1234-5678\n", "010-1234-5678"),
        ("+82 10-1234-5678", "010-1234-5678"),
        ("+821012345678", "010-1234-5678"),
        ("+82 010-1234-5678", "010-1234-5678"),
        ("+82 (0)10 1234 5678", "010-1234-5678"),
        ("82-10-1234-5678", "010-1234-5678"),
        ("821012345678", "010-1234-5678"),
        ("0082-10-1234-5678", "010-1234-5678"),
        ("011-123-4567", "011-123-4567"),
        ("011-1234-5678", "011-1234-5678"),
        ("0161234567", "016-123-4567"),
        ("016-1234-5678", "016-1234-5678"),
        ("017-123-4567", "017-123-4567"),
        ("018-1234-5678", "018-1234-5678"),
        ("019-123-4567", "019-123-4567"),
        ("+82 19-123-4567", "019-123-4567"),
        ("82-11-123-4567", "011-123-4567"),
        # full-width digits and hyphen, as a Korean IME may type them
        (_full_width("010-1234-5678"), "010-1234-5678"),
    ],
)
def test_normalize_recipient_accepts(raw, expected):
    assert normalize_recipient(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "02-123-4567",  # Seoul landline
        "02-1234-5678",
        "031-123-4567",  # Gyeonggi landline
        "012-1234-5678",  # not a mobile prefix
        "015-1234-5678",
        "010-123-4567",  # 010 needs a four-digit middle
        "010-1234-567",  # too short
        "010-1234-56789",  # too long
        "0101234567890",
        "010-abcd-5678",
        "010-1234-567a",
        "phone",
        "+82",
        "+1 010-1234-5678",
        "10-1234-5678",
        "٠١٠١٢٣٤٥٦٧٨",  # Arabic-Indic digits are digits to \\d, not to a provider
    ],
)
def test_normalize_recipient_refuses(raw):
    with pytest.raises(InputError) as info:
        normalize_recipient(raw)
    assert "recipient" in str(info.value)


def test_refusal_shows_the_input_and_what_is_expected():
    # No example number in the text: logs mask numbers, and a masked example reads oddly.
    with pytest.raises(InputError, match=r"'02-123-4567'.*010, 011, 016, 017, 018 or 019"):
        normalize_recipient("02-123-4567")
    with pytest.raises(InputError, match=r"\(empty\)"):
        normalize_recipient("")


def test_normalized_number_is_ascii():
    assert normalize_recipient(_full_width("01012345678")).isascii()


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("010-1234-5678", "010-****-5678"),
        ("011-123-4567", "011-***-4567"),
        ("01012345678", "010-****-5678"),
        ("0111234567", "011-***-4567"),
        ("123", "***"),
        ("", "***"),
    ],
)
def test_mask_recipient(number, masked):
    assert mask_recipient(number) == masked


def test_mask_never_shows_the_middle_digits():
    assert "1234" not in mask_recipient(normalize_recipient("+82 10 1234 5678"))


# ---------------------------------------------------------------------- messages


@pytest.mark.parametrize("channel", ["kakaotalk", "sms", Channel.KAKAOTALK, Channel.SMS])
@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_empty_message_refused(channel, text):
    with pytest.raises(InputError, match="empty message"):
        validate_message(text, channel)


@pytest.mark.parametrize(
    ("text", "channel", "ok"),
    [
        ("a" * 1000, Channel.KAKAOTALK, True),
        ("가" * 1000, Channel.KAKAOTALK, True),  # characters, not bytes
        ("😀" * 1000, Channel.KAKAOTALK, True),
        ("a" * 1001, Channel.KAKAOTALK, False),
        ("가" * 1001, Channel.KAKAOTALK, False),
        ("a" * 2000, Channel.SMS, True),
        ("가" * 1000, Channel.SMS, True),  # Korean is two bytes each
        ("똠" * 1000, Channel.SMS, True),  # also outside the 2,350 KS X 1001 syllables
        ("뷁" * 999 + "ab", Channel.SMS, True),
        ("a" * 2001, Channel.SMS, False),
        ("가" * 1000 + "a", Channel.SMS, False),
        ("가" * 1001, Channel.SMS, False),
        ("안녕하세요, 홍길동님. 주문 #1234 배송 완료!", Channel.SMS, True),
    ],
    ids=lambda v: f"{len(v)}x{v[:1]!a}" if isinstance(v, str) and len(v) > 20 else None,
)
def test_message_length_limits(text, channel, ok):
    if ok:
        validate_message(text, channel)
    else:
        with pytest.raises(InputError, match="too long"):
            validate_message(text, channel)


def test_too_long_message_says_the_size_and_the_limit():
    with pytest.raises(InputError, match=r"1001 characters \(at most 1000\)"):
        validate_message("가" * 1001, "kakaotalk")
    with pytest.raises(InputError, match=r"2002 bytes in EUC-KR \(at most 2000\)"):
        validate_message("가" * 1001, "sms")


@pytest.mark.parametrize("text", ["안녕 😀", "\U0001f44d", "naïve ✓"])
def test_sms_refuses_characters_without_euc_kr_encoding(text):
    validate_message(text, "kakaotalk")
    with pytest.raises(InputError, match="no EUC-KR encoding"):
        validate_message(text, "sms")


def test_unknown_channel_is_refused():
    with pytest.raises(ValueError):
        validate_message("hi", "email")


# ---------------------------------------------------------------------- number hygiene


@pytest.mark.parametrize(
    "raw",
    [
        "010\u20131234\u20135678",  # en dash
        "010\u20141234\u20145678",  # em dash
        "010\u20111234\u20115678",  # non-breaking hyphen
        "010\u20101234\u20105678",  # hyphen
        "010\u20121234\u20125678",  # figure dash
        "010\u22121234\u22125678",  # minus sign
        "010\ufe631234\ufe635678",  # small hyphen-minus
        "010\xa01234\xa05678",  # no-break space
        "010\u202f1234\u202f5678",  # narrow no-break space
        "\u200b010-1234-5678\u200b",  # zero-width space
        "010\u200c1234\u200d5678",  # zero-width (non-)joiner
        "\ufeff01012345678",  # BOM
        "010\u20601234\u20605678",  # word joiner
        "010\xad1234\xad5678",  # soft hyphen
        "\u200e010-1234-5678\u200f",  # direction marks
        "+82\xa010\u20131234\u20135678",
    ],
)
def test_dash_look_alikes_and_invisible_characters_are_cleaned(raw):
    assert normalize_recipient(raw) == "010-1234-5678"


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ("1012345678", "Excel dropped the leading 0 (01012345678?)"),
        ("10-1234-5678", "Excel dropped the leading 0 (01012345678?)"),
        ("1112345678", "Excel dropped the leading 0 (01112345678?)"),
        ("8.21012E+11", "scientific notation"),
        ("1.01235E+10", "scientific notation"),
        ("8.21012e+11", "scientific notation"),
        ("8210123456", "a +82 number whose + Excel dropped"),
    ],
)
def test_excel_mangled_numbers_get_a_hint(raw, hint):
    with pytest.raises(InputError) as info:
        normalize_recipient(raw)
    text = str(info.value)
    assert text.startswith(f"invalid recipient {raw!r}")
    assert hint in text and "format the column as text" in text


@pytest.mark.parametrize("raw", ["02-123-4567", "12345", "hello", "0101234567"])
def test_other_bad_numbers_get_no_excel_hint(raw):
    with pytest.raises(InputError) as info:
        normalize_recipient(raw)
    assert "Excel" not in str(info.value)


def test_a_number_without_its_plus_is_still_read():
    assert normalize_recipient("821012345678") == "010-1234-5678"


# ---------------------------------------------------------------------- choosing the channel


def test_choose_channel_keeps_a_valid_channel():
    assert choose_channel("hi", "kakaotalk", fallback=True) == (Channel.KAKAOTALK, "")
    assert choose_channel("hi", "sms", fallback=False) == (Channel.SMS, "")


def test_choose_channel_sends_a_message_too_long_for_kakaotalk_by_sms():
    channel, note = choose_channel("a" * 1001, "kakaotalk", fallback=True)
    assert channel is Channel.SMS
    assert note == "too long for KakaoTalk (1001 characters, at most 1000): sent by SMS as LMS"


def test_choose_channel_refuses_a_message_too_long_for_both():
    with pytest.raises(InputError, match=r"too long for KakaoTalk.*too long for SMS: 2002 bytes"):
        choose_channel("가" * 1001, "kakaotalk", fallback=True)


def test_choose_channel_without_fallback_refuses_a_long_kakaotalk_message():
    with pytest.raises(InputError, match="too long for KakaoTalk: 1001 characters"):
        choose_channel("a" * 1001, "kakaotalk", fallback=False)


def test_choose_channel_never_reroutes_other_refusals():
    with pytest.raises(InputError, match="empty message"):
        choose_channel(" ", "kakaotalk", fallback=True)
    with pytest.raises(InputError, match="too long for SMS"):
        choose_channel("a" * 2001, "sms", fallback=True)


# ---------------------------------------------------------------------- message kind


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 0),
        ("hello", 5),
        ("가", 2),
        ("똠", 2),  # outside KS X 1001: CP949 still counts two, not an 8-byte sequence
        ("안녕 hi", 7),
        ("①※", 4),  # KS X 1001 symbols
        ("😀", 2),  # no EUC-KR encoding: counted as a double-byte character
        ("a\ud800b", 4),  # a lone surrogate never raises
        ("줄\n바꿈", 7),
    ],
)
def test_sms_bytes_counts_euc_kr_bytes(text, size):
    assert sms_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("a" * 90, "sms"),
        ("a" * 91, "lms"),
        ("가" * 45, "sms"),  # 90 bytes
        ("가" * 45 + "a", "lms"),  # 91 bytes
        ("가" * 44 + "ab", "sms"),  # 90 bytes, mixed
        ("가" * 44 + "abc", "lms"),
        ("똠" * 45, "sms"),
        ("똠" * 46, "lms"),
        ("a" * 89 + "😀", "lms"),  # 91 counted bytes
        ("a" * 88 + "😀", "sms"),
        ("가" * 1000, "lms"),
    ],
    ids=lambda v: f"{len(v)}x{v[:1]!a}" if isinstance(v, str) and len(v) > 20 else None,
)
def test_message_kind_at_the_90_byte_edge(text, kind):
    assert SMS_SHORT_MAX_BYTES == 90
    assert message_kind(text, "sms") == kind
    assert message_kind(text, Channel.SMS) is MessageKind(kind)


@pytest.mark.parametrize("text", ["a", "가" * 46, "a" * 2001, "😀"])
def test_message_kind_on_kakaotalk_is_kakaotalk_whatever_the_size(text):
    assert message_kind(text, "kakaotalk") == "kakaotalk"
    assert message_kind(text, Channel.KAKAOTALK) is MessageKind.KAKAOTALK


def test_message_kind_is_a_plain_string():
    assert f"{message_kind('hi', 'sms')}" == "sms"
    assert [k.value for k in MessageKind] == ["kakaotalk", "sms", "lms"]


def test_message_kind_refuses_an_unknown_channel():
    with pytest.raises(ValueError):
        message_kind("hi", "email")


# ---------------------------------------------------------------------- results


def test_delivery_result_json_shape():
    result = DeliveryResult(
        "010-1234-5678", "sent", channel="sms", fallback=True, attempts=4, uncertain=1
    )
    assert result.ok
    assert result.to_json() == {
        "recipient": "010-1234-5678",
        "status": "sent",
        "channel": "sms",
        "fallback": True,
        "attempts": 4,
        "error": None,
    }


def test_failed_result_has_no_channel_in_json():
    result = DeliveryResult("010-1234-5678", "failed", channel="kakaotalk", attempts=1, error="x")
    assert not result.ok
    assert result.to_json()["channel"] is None
    assert result.to_json()["error"] == "x"


# text, the character named, its 1-based position
FORBIDDEN_CHARACTERS = [
    ("a\x00b", "U+0000 (NUL)", 2),
    ("\x07ring", "U+0007 (BEL)", 1),
    ("hi\x1b[31mred", "U+001B (ESCAPE)", 3),
    ("line one\r\nline two", "U+000D (CARRIAGE RETURN)", 9),
    ("del\x7f", "U+007F (DELETE)", 4),
    ("csi\x9b2J", "U+009B (control character)", 4),
    ("invoice\u202etxt.exe", "U+202E (RIGHT-TO-LEFT OVERRIDE)", 8),
    ("x\u202ay", "U+202A (LEFT-TO-RIGHT EMBEDDING)", 2),
    ("\u2066isolated\u2069", "U+2066 (LEFT-TO-RIGHT ISOLATE)", 1),
    ("ok\u2069", "U+2069 (POP DIRECTIONAL ISOLATE)", 3),
]


@pytest.mark.parametrize("channel", ["kakaotalk", "sms"])
@pytest.mark.parametrize(("text", "named", "position"), FORBIDDEN_CHARACTERS)
def test_control_and_bidi_characters_are_refused_naming_character_and_place(
    text, named, position, channel
):
    with pytest.raises(InputError) as info:
        validate_message(text, channel)
    message = str(info.value)
    assert message.startswith(f"message contains {named} at character {position}: ")
    assert all(ch.isprintable() for ch in message)


@pytest.mark.parametrize("text", ["two\nlines", "tab\tseparated", "안녕하세요 😀", "a\u200bb"])
def test_newline_tab_and_ordinary_unicode_pass(text):
    validate_message(text, "kakaotalk")


def test_bytes_that_were_not_utf8_are_refused_as_such():
    with pytest.raises(InputError, match=r"^message is not UTF-8 text: byte 0xFF at character 3$"):
        validate_message("hi\udcff", "kakaotalk")
