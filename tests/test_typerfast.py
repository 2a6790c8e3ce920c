"""msgsend's plain-option fast path keeps typer's behaviour (that it keeps pydantic out of start-up:
test_api)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from msgsend import _typerfast
from msgsend.cli import app

runner = CliRunner()


def test_installed_with_this_typer() -> None:
    assert _typerfast.install() is True  # idempotent: already installed by msgsend.cli


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--concurrency", "abc"], "abc"),
        (["--concurrency", "0"], "0"),
        (["--concurrency", "1e3"], "1e3"),
        (["--concurrency", "300"], "300"),
    ],
)
def test_bad_option_values_are_still_typers_usage_errors(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("phone,message\n010-1234-5678,hi\n", encoding="utf-8")
    result = runner.invoke(app, ["bulk", str(csv), "--dry-run", *args])
    assert result.exit_code == 2
    flat = "".join(ch for ch in result.output if ch not in "│╭╮╰╯─\n ")
    assert "Invalidvaluefor'--concurrency'" in flat, fragment


def test_sandbox_float_and_list_options_parse(tmp_path: Path) -> None:
    # --latency-ms is a float with min=0; a negative value is typer's error, not ours.
    result = runner.invoke(app, ["sandbox", "--latency-ms", "-5"])
    assert result.exit_code == 2
    assert "--latency-ms" in "".join(ch for ch in result.output if ch not in "│\n ")
