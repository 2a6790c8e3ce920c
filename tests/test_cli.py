"""The real CLI (typer's CliRunner) against the real sandbox on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from msgsend.cli import app
from redis_server import free_port

runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


# ---------------------------------------------------------------------------- send


def test_send_takes_a_message_too_long_for_kakaotalk_by_sms_as_bulk_does(
    sandbox: Any, sandbox_config: Path
) -> None:
    text = "a" * 1001  # over KakaoTalk's 1,000 characters, an LMS of 1,001 bytes
    result = invoke("send", "010-1234-5678", text, "--config", str(sandbox_config))
    assert result.exit_code == 0, result.output
    assert "sent by SMS as LMS" in result.stderr
    assert [(r.provider, r.message) for r in sandbox.received()] == [("sms", text)]
    refused = invoke(
        "send", "010-1234-5678", text, "--no-fallback", "--config", str(sandbox_config)
    )
    assert refused.exit_code == 65
    assert "message too long for KakaoTalk: 1001 characters" in refused.stderr
    assert len(sandbox.received()) == 1


def test_send_delivers_by_kakaotalk(sandbox: Any, sandbox_config: Path) -> None:
    result = invoke("send", "010-1234-5678", "안녕하세요", "--config", str(sandbox_config))
    assert result.exit_code == 0, result.output
    assert "sent" in result.stderr and "010-****-5678" in result.stderr
    [received] = sandbox.received()
    assert (received.provider, received.recipient, received.message) == (
        "kakaotalk",
        "010-1234-5678",
        "안녕하세요",
    )


def test_send_json_shape(sandbox: Any, sandbox_config: Path) -> None:
    result = invoke("send", "+82 10 1234 5678", "hi", "--json", "--config", str(sandbox_config))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "recipient": "010-1234-5678",
        "status": "sent",
        "channel": "kakaotalk",
        "fallback": False,
        "attempts": 1,
        "error": None,
    }


def test_send_falls_back_to_sms(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.set_down("kakaotalk")
    result = invoke("send", "010-1234-5678", "hi", "--json", "--config", str(sandbox_config))
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["channel"] == "sms" and document["fallback"] is True
    assert document["attempts"] == 4  # three on KakaoTalk, one on SMS
    assert [r.provider for r in sandbox.delivered()] == ["sms"]


def test_send_no_fallback_fails_with_exit_1(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.set_down("kakaotalk")
    result = invoke(
        "send", "010-1234-5678", "hi", "--no-fallback", "--json", "--config", str(sandbox_config)
    )
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["status"] == "failed" and document["channel"] is None
    assert "503" in document["error"]
    assert sandbox.count("sms") == 0


def test_send_failure_line_masks_the_numbers_a_provider_quotes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from rich.console import Console

    from msgsend.cli import _render_send
    from msgsend.models import DeliveryResult

    out = io.StringIO()
    error = "kakaotalk rejected the message (HTTP 400): no such user 010-1234-5678 [b]"
    result = DeliveryResult("010-1234-5678", "failed", attempts=1, error=error)
    _render_send(Console(file=out, width=200), result, None)  # a terminal
    _render_send(None, result, None)  # not a terminal: plain lines, no rich
    for text in (out.getvalue(), capsys.readouterr().err):
        assert "5678" in text and "1234" not in text
        assert "no such user 010-****-5678 [b]" in text  # the answer is not read as markup


def test_send_auth_failure_falls_back_without_retry(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.set_status("kakaotalk", 401)
    result = invoke("send", "010-1234-5678", "hi", "--json", "--config", str(sandbox_config))
    assert result.exit_code == 0
    assert sandbox.count("kakaotalk") == 1
    assert "auth-failed" in result.stderr
    assert "1234" not in result.stderr.replace("010-1234", "")  # no password in the alert


def test_send_message_from_stdin(sandbox: Any, sandbox_config: Path) -> None:
    result = invoke(
        "send", "01012345678", "-", "--config", str(sandbox_config), input="여러 줄\n메시지\n"
    )
    assert result.exit_code == 0
    assert sandbox.received()[0].message == "여러 줄\n메시지"


@pytest.mark.parametrize(
    ("recipient", "message", "fragment"),
    [
        ("02-123-4567", "hi", "invalid recipient"),
        ("010-1234-5678", "   ", "empty message"),
        ("010-1234-5678", "가" * 1001, "too long for KakaoTalk"),
    ],
)
def test_send_bad_input_exits_65(recipient: str, message: str, fragment: str) -> None:
    result = invoke("send", recipient, message)
    assert result.exit_code == 65
    assert fragment in result.stderr
    assert "Traceback" not in result.output


def test_send_usage_error_exits_2() -> None:
    result = invoke("send", "010-1234-5678", "hi", "--via", "fax")
    assert result.exit_code == 2


def test_send_sandbox_flag_runs_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    # KakaoTalk fails for this number in the sandbox: retries without waiting out the default
    # 1 s + 2 s backoff (the wait is not what is tested here).
    monkeypatch.setenv("MSGSEND_RETRY_BACKOFF_DELAY", "0")
    result = invoke("send", "010-2345-0000", "데모", "--sandbox", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["channel"] == "sms" and document["fallback"] is True
    assert document["attempts"] == 4  # three on KakaoTalk, then SMS


# ---------------------------------------------------------------------------- config errors


def test_wrong_key_names_the_key_and_exits_78(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[kakaotalk]\nbase_url = 'http://x'\n", encoding="utf-8")
    result = invoke("send", "010-1234-5678", "hi", "--config", str(path))
    assert result.exit_code == 78
    assert str(path) in result.stderr and "kakaotalk.base_url" in result.stderr
    assert "did you mean 'kakaotalk.base-url'" in result.stderr


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    result = invoke("ping", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 78
    assert "no such configuration file" in result.stderr


def test_bad_value_from_environment_exits_78(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGSEND_RETRY_MAX_ATTEMPTS", "many")
    result = invoke("send", "010-1234-5678", "hi")
    assert result.exit_code == 78
    assert "MSGSEND_RETRY_MAX_ATTEMPTS" in result.stderr and "whole number" in result.stderr


# ---------------------------------------------------------------------------- ping


def test_ping_all_up(sandbox: Any, sandbox_config: Path) -> None:
    result = invoke("ping", "--json", "--config", str(sandbox_config))
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["overall"] == "ok"
    assert {p: v["status"] for p, v in document["providers"].items()} == {
        "kakaotalk": "up",
        "sms": "up",
    }
    assert all(isinstance(v["latency_ms"], float) for v in document["providers"].values())
    assert sandbox.delivered() == []  # nothing was delivered


def test_ping_one_provider_stopped_is_degraded(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.stop("kakaotalk")
    result = invoke("ping", "--config", str(sandbox_config))
    assert result.exit_code == 1
    assert "degraded" in result.stdout and "down" in result.stdout
    assert "Connection refused" in result.stdout.replace("\n", " ") or "cannot" in result.stdout


def test_ping_both_stopped_is_critical(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.stop("kakaotalk")
    sandbox.stop("sms")
    result = invoke("ping", "--json", "--config", str(sandbox_config))
    assert result.exit_code == 2
    assert json.loads(result.stdout)["overall"] == "critical"


def test_ping_reports_auth_failed_and_throttled(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.set_status("kakaotalk", 401)
    sandbox.set_status("sms", 429)
    result = invoke("ping", "--json", "--config", str(sandbox_config))
    document = json.loads(result.stdout)
    assert document["providers"]["kakaotalk"]["status"] == "auth-failed"
    assert document["providers"]["sms"]["status"] == "throttled"
    assert result.exit_code == 1


def test_ping_single_provider(sandbox: Any, sandbox_config: Path) -> None:
    sandbox.stop("kakaotalk")
    result = invoke("ping", "--provider", "sms", "--json", "--config", str(sandbox_config))
    assert result.exit_code == 0
    assert list(json.loads(result.stdout)["providers"]) == ["sms"]


# ---------------------------------------------------------------------------- config commands


def test_config_init_show_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "conf" / "msgsend.toml"
    assert invoke("config", "init", str(path)).exit_code == 0
    assert path.stat().st_mode & 0o777 == 0o600
    assert invoke("config", "init", str(path)).exit_code == 2  # never overwrites silently

    monkeypatch.setenv("MSGSEND_SMS_AUTH_PASSWORD", "s3cret")
    shown = invoke("config", "show", "--config", str(path))
    assert shown.exit_code == 0
    assert "s3cret" not in shown.stdout and "1234" not in shown.stdout
    assert 'password = "***"' in shown.stdout
    assert "MSGSEND_SMS_AUTH_PASSWORD" in shown.stdout
    assert f"file {path}" in shown.stdout

    as_json = json.loads(invoke("config", "show", "--json", "--config", str(path)).stdout)
    assert as_json["values"]["sms.auth.password"] == {
        "value": "***",
        "source": "MSGSEND_SMS_AUTH_PASSWORD",
    }

    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "memory")
    checked = invoke("config", "check", "--config", str(path))
    assert checked.exit_code == 0, checked.output
    assert "configuration OK" in checked.stdout


def test_config_init_leaves_the_mode_of_a_device_or_pipe_alone(tmp_path: Path) -> None:
    # As root, `config init --force /dev/null` made /dev/null mode 600 (unusable by others).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o644)
    fifo.chmod(0o644)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # the writer's open does not block
    try:
        assert invoke("config", "init", "--force", str(fifo)).exit_code == 0
        written = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    assert written.startswith(b"# msgsend configuration")
    assert fifo.stat().st_mode & 0o777 == 0o644
    path = tmp_path / "existing.toml"
    path.write_text("", encoding="utf-8")
    path.chmod(0o644)
    assert invoke("config", "init", "--force", str(path)).exit_code == 0
    assert path.stat().st_mode & 0o777 == 0o600  # a file overwritten is made private


def test_sample_config_in_repository_is_current() -> None:
    from msgsend.config import render_sample_config

    sample = Path(__file__).resolve().parents[1] / "sample-config.toml"
    assert sample.read_text(encoding="utf-8") == render_sample_config()


def test_config_warns_about_readable_password_file(tmp_path: Path) -> None:
    path = tmp_path / "msgsend.toml"
    path.write_text('[sms.auth]\npassword = "x"\n', encoding="utf-8")
    path.chmod(0o644)
    result = invoke("config", "show", "--config", str(path))
    assert result.exit_code == 0
    assert "chmod 600" in result.stderr


# ---------------------------------------------------------------------------- process level


def test_python_dash_m_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "msgsend", "--version"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert done.stdout.startswith("msgsend ")


def test_version_to_a_reader_gone_is_no_traceback() -> None:
    # `msgsend --version | true`: the pipe's reader has left before the version is written.
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "msgsend", "--version"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 0  # a reader that has left is no failure of msgsend's
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["send", "010-1234-5678", "hi", "--sandbox", "--json"], 0),
        (["send", "010-1234-0000", "hi", "--sandbox", "--no-fallback", "--json"], 1),
        (["config", "show"], 0),
        (["config", "check"], 0),
        (["--version"], 0),
    ],
)
def test_a_reader_gone_from_stdout_leaves_the_exit_code_to_what_was_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], code: int
) -> None:
    # `msgsend send ... --json | head -0`: the message went (or did not), and the exit code
    # must say which; an "internal error" (70) made a retrying wrapper send it twice.
    from msgsend import cli

    monkeypatch.setenv("MSGSEND_RETRY_MAX_ATTEMPTS", "1")  # the failing send: no retry waits
    read, write = os.pipe()
    os.close(read)
    stdout = open(write, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(cli, "_stdout_gone", False)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(args)
    finally:
        monkeypatch.undo()
        stdout.close()
    assert exited.value.code == code
    assert "internal error" not in capsys.readouterr().err


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # main() as the console script runs it (the process's exit code is SystemExit's: the real
    # processes below show that path); in-process, since only the code is under test here.
    from msgsend import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["fly"])
    assert exited.value.code == 2
    assert "No such command 'fly'" in capsys.readouterr().err


def test_unreachable_redis_is_an_outage_not_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    port = free_port()  # nothing listens there
    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "redis")
    monkeypatch.setenv("MSGSEND_LIMITER_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    result = invoke("send", "010-1234-5678", "hi")
    assert result.exit_code == 75  # try again later: the configuration is fine
    assert "redis" in result.stderr and str(port) in result.stderr
    assert "nothing is sent until it answers" in result.stderr
    assert time.monotonic() - started < 10  # a clear error, not a hang


def test_ping_with_the_limiter_store_down_answers_degraded_without_probing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Monitoring reads ping's 0/1/2: a store down is degraded health, never 75 or a probe."""
    port = free_port()  # nothing listens there
    monkeypatch.setenv("MSGSEND_LIMITER_STORE", "redis")
    monkeypatch.setenv("MSGSEND_LIMITER_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    metrics = tmp_path / "ping.prom"
    result = invoke("ping", "--json", "--metrics-file", str(metrics))
    assert result.exit_code == 1, result.stderr  # degraded: health unknown, nothing sent
    document = json.loads(result.stdout)
    assert document["overall"] == "degraded"
    for name in ("kakaotalk", "sms"):
        health = document["providers"][name]
        assert health["status"] == "throttled"
        assert health["latency_ms"] is None  # no request went out unpaced
        assert "rate limiter unavailable" in health["detail"]
    assert 'msgsend_provider_up{provider="kakaotalk"}' in metrics.read_text()


def test_console_script_runs_one_command_and_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    send = ["send", "010-1234-5678", "hi", "--sandbox", "--json"]
    sent = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "msgsend", *send],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["status"] == "sent"
    # stderr is not a terminal (cron): the sandbox's line is plain and rich is not imported;
    # delivered at the first attempt: nor is backoff (with asyncio).
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in sent.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "requests" in imported
    assert not {"rich", "backoff", "asyncio"} & imported
    assert "sandbox: KakaoTalk at http://127.0.0.1:" in sent.stderr
    # A command's help and the group's, through main() as the console script calls it: more
    # processes would add only their start-up to what is checked.
    from msgsend import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["ping", "--help"])
    assert exited.value.code == 0 and "msgsend ping" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    grouped = capsys.readouterr().out
    assert all(name in grouped for name in ("send", "bulk", "ping", "sandbox", "config"))


def test_config_show_never_prints_url_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "msgsend.toml"
    path.write_text(
        '[limiter]\nredis-url = "redis://default:r3dis-pw@cache:6379/0"\n'
        '[alerts]\nwebhook-url = "https://hooks.slack.com/services/T0/B0/w3bhook"\n'
        'apprise-urls = ["tgram://123456:t0ken/55"]\n'
        '[sms]\nbase-url = "https://api:b4se-pw@sms.example.com"\n',
        encoding="utf-8",
    )
    path.chmod(0o644)
    monkeypatch.setenv("MSGSEND_KAKAOTALK_AUTH_PASSWORD", "k4kao-pw")
    for args in (("config", "show"), ("config", "show", "--json")):
        shown = invoke(*args, "--config", str(path))
        assert shown.exit_code == 0, shown.output
        for secret in ("r3dis-pw", "w3bhook", "t0ken", "b4se-pw", "k4kao-pw", "5678"):
            assert secret not in shown.output, (args, secret)
        assert "redis://default:***@cache:6379/0" in shown.stdout
        assert "https://hooks.slack.com" in shown.stdout
        assert "https://api:***@sms.example.com" in shown.stdout
        # the file is readable by others and holds secrets: the warning names the keys
        assert f"chmod 600 {path}" in shown.stderr
        assert "limiter.redis-url" in shown.stderr


def test_pushgateway_errors_never_echo_its_password(sandbox_config: Path) -> None:
    result = invoke(
        "send", "010-1234-5678", "hi", "--config", str(sandbox_config),
        "--pushgateway", "http://ops:pushg4te-pw@127.0.0.1:1/",
    )  # fmt: skip
    assert "pushg4te-pw" not in result.output
    assert "--pushgateway http://ops:***@127.0.0.1:1/" in result.stderr


def test_help_names_values_plainly_and_flags_without_a_type() -> None:
    for command in ("send", "ping", "sandbox", "config init", "config show", "config check"):
        other = invoke(*command.split(), "--help").output
        assert not re.search(r"<(bool|int|str|path|float|list)", other), command
    shown = invoke("bulk", "--help")
    assert shown.exit_code == 0
    text = shown.output
    for noise in ("<bool>", "<int", "<str>", "<path>", "<float", "<list"):
        assert noise not in text
    assert re.search(r"--results\s+PATH", text)
    assert re.search(r"--concurrency\s+INTEGER", text)
    assert re.search(r"--dry-run\s+Validate", text)  # a flag: no type column
    assert "[bulk] concurrency" in text  # a config section is not read as markup


def test_shell_completion_is_offered_and_completes_commands_and_options() -> None:
    offered = runner.invoke(app, ["--help"], prog_name="msgsend")
    assert "--install-completion" in offered.stdout and "--show-completion" in offered.stdout
    # The script itself, asked for the way the installed completion asks: without typer's
    # shell detection, which reads the process tree and is not what is under test here.
    shown = runner.invoke(app, [], prog_name="msgsend", env={"_MSGSEND_COMPLETE": "source_bash"})
    assert shown.exit_code == 0 and "_msgsend_completion" in shown.stdout
    for words, cword, expected in (
        ("msgsend bu", "1", "bulk"),
        ("msgsend bulk --dry", "2", "--dry-run"),
    ):
        env = {"_MSGSEND_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        completed = runner.invoke(app, [], prog_name="msgsend", env=env)
        assert expected in completed.stdout.split()


# ---------------------------------------------------------------------------- cron-grade


def test_log_file_gets_a_start_and_an_end_line_without_v(
    sandbox: Any, sandbox_config: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "campaign.csv"
    csv.write_text("phone,message\n010-1234-5678,hi\n02-123-4567,landline\n", encoding="utf-8")
    log = tmp_path / "run.log"
    result = invoke("bulk", str(csv), "--config", str(sandbox_config), "--log-file", str(log))
    assert result.exit_code == 1, result.output
    lines = log.read_text(encoding="utf-8").splitlines()
    started = [line for line in lines if "msgsend bulk" in line and "started" in line]
    finished = [line for line in lines if "msgsend bulk finished" in line]
    assert len(started) == 1 and str(csv) in started[0] and "(2 rows)" in started[0]
    assert len(finished) == 1
    assert "exit 1" in finished[0] and "sent 1" in finished[0] and "invalid 1" in finished[0]
    assert "attempt" not in log.read_text(encoding="utf-8")  # the per-attempt lines need -v
    assert "started" not in result.stderr  # stderr stays quiet without -v


def test_log_file_records_a_run_that_failed_early(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    result = invoke(
        "bulk", str(tmp_path / "missing.csv"), "--log-file", str(log), "--log-format", "json"
    )
    assert result.exit_code == 66
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    ends = [r for r in records if r.get("event") == "run-finished"]
    assert len(ends) == 1 and ends[0]["exit_code"] == 66 and ends[0]["command"] == "bulk"
    assert [r for r in records if r.get("event") == "run-started"]


# ---------------------------------------------------------------------------- --json errors


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("send", "02-123-4567", "hi", "--json"), 65),
        (("bulk", "/nonexistent/file.csv", "--json"), 66),
        (("send", "010-1234-5678", "hi", "--via", "fax", "--json"), 2),
        (("config", "show", "--json", "--config", "/nonexistent/msgsend.toml"), 78),
    ],
)
def test_json_errors_are_one_json_document_on_stdout(args: tuple[str, ...], code: int) -> None:
    result = invoke(*args)
    assert result.exit_code == code
    document = json.loads(result.stdout)
    assert document["error"]["exit_code"] == code
    assert document["error"]["message"]
    assert result.stderr  # and the line for humans


# ---------------------------------------------------------------------------- ping metrics


def test_ping_metrics_file_has_provider_health(
    sandbox: Any, sandbox_config: Path, tmp_path: Path
) -> None:
    sandbox.set_down("sms")
    prom = tmp_path / "ping.prom"
    result = invoke("ping", "--config", str(sandbox_config), "--metrics-file", str(prom))
    assert result.exit_code == 1, result.output
    text = prom.read_text(encoding="utf-8")
    assert 'msgsend_provider_up{provider="kakaotalk"} 1.0' in text
    assert 'msgsend_provider_up{provider="sms"} 0.0' in text
    assert 'msgsend_provider_probe_seconds{provider="kakaotalk"}' in text


def test_a_deprecated_key_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "msgsend.toml"
    path.write_text("[circuit-breaker]\nfailure-threshold = 5\n", encoding="utf-8")
    path.chmod(0o600)
    checked = invoke("config", "check", "--config", str(path))
    assert checked.exit_code == 0, checked.output
    assert "circuit-breaker.failure-threshold is deprecated" in checked.stderr
    assert "failure-rate-threshold" in checked.stderr


def test_bulk_waits_for_a_sqlite_store_locked_at_start(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick_holds: None
) -> None:
    # Another process (here: another descriptor) holds the store's lock when the run starts:
    # the rows wait for it within max-outage, as for a Redis down at start, not exit 75.
    import fcntl
    import os

    import msgsend.client
    import msgsend.ratelimit.sqlite as sqlite_store

    store = tmp_path / "rl.sqlite"
    config = tmp_path / "msgsend.toml"
    config.write_text(
        f'[kakaotalk]\nbase-url = "{sandbox.kakaotalk_url}"\n'
        f'[sms]\nbase-url = "{sandbox.sms_url}"\n'
        f'[limiter]\nstore = "sqlite"\npath = "{store}"\n',
        encoding="utf-8",
    )
    csv = tmp_path / "in.csv"
    csv.write_text("phone,message\n010-1234-0001,hi\n010-1234-0002,hi\n", encoding="utf-8")
    monkeypatch.setattr(sqlite_store, "LOCK_WAIT", 0.05)
    holder = os.open(str(store) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    original, tries = msgsend.client.build_limiter, []

    def build_limiter(*args: Any, **kwargs: Any) -> Any:
        tries.append(1)
        try:
            return original(*args, **kwargs)
        finally:
            if len(tries) == 2:  # the run's first try again failed: let go now
                fcntl.flock(holder, fcntl.LOCK_UN)

    monkeypatch.setattr(msgsend.client, "build_limiter", build_limiter)
    try:
        result = invoke("bulk", str(csv), "--json", "--config", str(config))
    finally:
        os.close(holder)
    assert result.exit_code == 0, result.output
    assert len(tries) == 3  # locked at start, locked at the first try again, then open
    document = json.loads(result.stdout)
    assert (document["sent"], document["failed"]) == (2, 0)
    assert document["outage_wait_s"] > 0
    assert "ALERT limiter-store-down" in result.stderr
    assert "ALERT limiter-store-recovered" in result.stderr
    assert sorted(r.recipient for r in sandbox.received()) == ["010-1234-0001", "010-1234-0002"]


def test_bulk_json_counts_retries_and_fallbacks_one_way(
    sandbox: Any, sandbox_config: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text(
        "phone,message\n" + "".join(f"010-1234-{i:04d},hi\n" for i in range(1, 7)),
        encoding="utf-8",
    )
    sandbox.set_down("kakaotalk")
    result = invoke("bulk", str(csv), "--json", "--config", str(sandbox_config))
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    providers = document["report"]["providers"]
    assert "channels" not in document  # per provider is the one breakdown
    assert document["fallbacks"] == 6 == sum(p["fallbacks_from"] for p in providers.values())
    assert document["retries"] == sum(p["retries"] for p in providers.values())
    assert document["fallbacks"] == document["report"]["fallbacks"]


@pytest.mark.parametrize(
    "args",
    [
        ["bulk", "x.csv", "--json", "--concurrency", "abc"],  # refused by typer's parser
        ["send", "010-1234-5678", "hi", "--json", "--via", "fax"],  # refused by msgsend
    ],
)
def test_usage_errors_with_json_print_exactly_one_document(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from msgsend import cli

    monkeypatch.setattr(cli, "_printed_json", False)
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    out = capsys.readouterr().out
    assert json.loads(out)["error"]["exit_code"] == 2  # one document: json.loads refuses two


@pytest.mark.parametrize(
    ("extra", "message"),
    [([], "already exists: pass --resume"), (["--dry-run"], "not a dry-run preview")],
)
def test_a_results_file_in_the_way_is_refused_before_anything_starts(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    """No sandbox, no progress line, nothing sent: only the one line saying what to do."""
    data = tmp_path / "in.csv"
    data.write_text("phone,message\n010-1234-5678,hi\n", encoding="utf-8")
    results = tmp_path / "earlier.csv"
    results.write_text("row,recipient\n1,010-1234-5678\n", encoding="utf-8")
    result = invoke("bulk", str(data), "--sandbox", "--results", str(results), *extra)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"msgsend: error: {results} ") and message in line
    assert results.read_text(encoding="utf-8") == "row,recipient\n1,010-1234-5678\n"
