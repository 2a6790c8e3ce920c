"""A message is checked once, at the edge: ``prepare_message`` -> ``Sender.send_prepared``.

``Sender.send`` is a library edge and checks its input; bulk rows (checked by csvinput) and
``msgsend send`` (checked before the configuration is read) are not checked a second time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import msgsend.models
from fakes import FakeProvider
from msgsend.bulk import BulkOptions, send_bulk
from msgsend.cli import app
from msgsend.client import Sender
from msgsend.errors import InputError
from msgsend.models import Channel, Outgoing, prepare_message


def refuse_a_second_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the library's own check fail loudly from here on (csvinput keeps its reference)."""

    def checked_again(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("checked a second time")

    monkeypatch.setattr(msgsend.models, "normalize_recipient", checked_again)
    monkeypatch.setattr(msgsend.models, "choose_channel", checked_again)


def test_prepare_message_normalises_the_number_and_chooses_the_channel() -> None:
    message = prepare_message("01012345678", "안녕", fallback=True)
    assert message == Outgoing("010-1234-5678", "안녕", Channel.KAKAOTALK, "")
    long = prepare_message("01012345678", "a" * 1001, fallback=True)
    assert long.channel is Channel.SMS
    assert long.note.startswith("too long for KakaoTalk (1001 characters")
    with pytest.raises(InputError, match="too long for KakaoTalk: 1001 characters"):
        prepare_message("01012345678", "a" * 1001, fallback=False)
    with pytest.raises(InputError):
        prepare_message("02-123-4567", "hi", fallback=True)


def test_a_prepared_message_is_sent_without_a_second_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kakao, sms = FakeProvider("kakaotalk"), FakeProvider("sms")
    sender = Sender({"kakaotalk": kakao, "sms": sms})
    message = prepare_message("010-1234-5678", "a" * 1001, fallback=sender.falls_back())
    refuse_a_second_check(monkeypatch)
    result = sender.send_prepared(message)
    assert (result.status, result.channel, result.recipient) == ("sent", "sms", "010-1234-5678")
    assert result.note == message.note
    assert sms.calls == [("010-1234-5678", "a" * 1001)] and kakao.calls == []
    with pytest.raises(AssertionError, match="checked a second time"):
        sender.send("010-1234-5678", "hi")  # the library edge still checks


def test_the_sender_falls_back_only_as_configured_and_with_an_sms_provider() -> None:
    both = {"kakaotalk": FakeProvider("kakaotalk"), "sms": FakeProvider("sms")}
    assert Sender(both).falls_back() is True
    assert Sender(both).falls_back(False) is False
    assert Sender(both, fallback=False).falls_back() is False
    assert Sender(both, fallback=False).falls_back(True) is True
    assert Sender({"kakaotalk": FakeProvider("kakaotalk")}).falls_back(True) is False


def test_bulk_rows_are_checked_once_by_csvinput(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "phone,message\n010-1234-0001,안녕\n010-1234-0002," + "a" * 1001 + "\n", encoding="utf-8"
    )
    kakao, sms = FakeProvider("kakaotalk"), FakeProvider("sms")
    refuse_a_second_check(monkeypatch)
    report = send_bulk(source, Sender({"kakaotalk": kakao, "sms": sms}), BulkOptions())
    assert (report.sent, report.failed, report.invalid) == (2, 0, 0)
    assert kakao.calls == [("010-1234-0001", "안녕")]
    assert sms.calls == [("010-1234-0002", "a" * 1001)]
    assert "sent by SMS as LMS" in (tmp_path / "in.results.csv").read_text(encoding="utf-8-sig")


def test_send_refuses_a_message_too_long_for_kakaotalk_when_fallback_is_off(
    tmp_path: Path,
) -> None:
    # Checked before the configuration is read (fallback allowed), then refused with
    # KakaoTalk's reason once [fallback] enabled = false is known: as Sender.send refuses it.
    config = tmp_path / "msgsend.toml"
    config.write_text("[fallback]\nenabled = false\n", encoding="utf-8")
    config.chmod(0o600)
    result = CliRunner().invoke(app, ["send", "010-1234-5678", "a" * 1001, "--config", str(config)])
    assert result.exit_code == 65, result.output
    assert "message too long for KakaoTalk: 1001 characters" in result.stderr


def test_a_sender_subclass_that_overrides_send_alone_is_called_by_bulk(tmp_path: Path) -> None:
    # A library user's Sender that logs or filters in send(): bulk must not go around it.
    kakao, sms = FakeProvider("kakaotalk"), FakeProvider("sms")
    seen: list[str] = []

    class Logging(Sender):
        def send(self, recipient: str, text: str, **kwargs: Any) -> Any:
            seen.append(recipient)
            return super().send(recipient, text, **kwargs)

    source = tmp_path / "in.csv"
    source.write_text("phone,message\n010-1234-5678,hi\n010-1234-5679,hi\n", encoding="utf-8")
    report = send_bulk(source, Logging({"kakaotalk": kakao, "sms": sms}), BulkOptions())
    assert report.sent == 2
    assert sorted(seen) == ["010-1234-5678", "010-1234-5679"]
