"""End to end: outages pause a bulk run instead of failing rows; stops say how to resume.

The real CLI against the real sandbox on loopback. Both providers go down; the circuits open
after one failed message (threshold 1, one attempt each) so that the following rows find no
channel and wait. Waits are short: reset-timeout 0.1 s, max-outage 0.3 s where the run is to
stop, rows looking again every 0.1 s (``quick_holds``). What happens at a moment of the run
(a provider coming back, Redis going away) happens on the run's own events (``Watch``), not
after a sleep.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from e2e import phone, read_results, write_csv
from msgsend.cli import app
from msgsend.events import Event, Events, MessageFinished, RunPaused
from redis_server import RedisServer, free_port, start_or_skip

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("quick_holds")


class Watch:
    """The events a run emits, seen as its listeners see them (``Events.emit`` wrapped).

    ``wait_for(test, count)`` blocks (at most ``timeout``) until ``count`` events passed
    ``test``; ``on(test, action)`` runs ``action`` in the emitting thread, before the run goes
    on, at the first event that passes ``test`` (its exception is kept in ``errors``).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[Event] = []
        self.errors: list[BaseException] = []
        self._changed = threading.Condition()
        self._actions: list[tuple[Callable[[Event], bool], Callable[[], object]]] = []
        emit = Events.emit

        def watched(events: Events, event: Event) -> None:
            emit(events, event)
            with self._changed:
                self.seen.append(event)
                due = [pair for pair in self._actions if pair[0](event)]
                self._actions = [pair for pair in self._actions if pair not in due]
                self._changed.notify_all()
            for _, action in due:
                try:
                    action()
                except Exception as exc:
                    self.errors.append(exc)

        monkeypatch.setattr(Events, "emit", watched)

    def on(self, test: Callable[[Event], bool], action: Callable[[], object]) -> None:
        with self._changed:
            self._actions.append((test, action))

    def wait_for(self, test: Callable[[Event], bool], count: int = 1, timeout: float = 30) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(1 for event in self.seen if test(event)) >= count, timeout
            )


def paused(kind: str) -> Callable[[Event], bool]:
    return lambda event: isinstance(event, RunPaused) and event.kind == kind


def config_file(path: Path, sandbox: Any, *, max_outage: float) -> Path:
    path.write_text(
        f"""
[kakaotalk]
base-url = "{sandbox.kakaotalk_url}"
timeout = 2.0
[sms]
base-url = "{sandbox.sms_url}"
timeout = 2.0
[retry]
max-attempts = 1
[limiter]
store = "memory"
[circuit-breaker]
window-size = 1
minimum-calls = 1
failure-rate-threshold = 1.0
reset-timeout = 0.1
[bulk]
max-outage = {max_outage}
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def rows(path: Path, n: int) -> Path:
    return write_csv(path, ((phone(i), f"안내 {i}") for i in range(1, n + 1)))


def by_row(results: Path) -> dict[int, dict[str, str]]:
    return {int(line["row"]): line for line in read_results(results)}


def test_rows_wait_for_providers_that_come_back(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = rows(tmp_path / "in.csv", 6)
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=60)
    sandbox.set_down("kakaotalk")
    sandbox.set_down("sms")
    watch = Watch(monkeypatch)

    def recover() -> None:
        # Row 1 is tried on both providers (503, 503): both circuits open and the row waits
        # for them; the providers come back while it does.
        watch.wait_for(paused("outage"))
        sandbox.set_down("kakaotalk", False)
        sandbox.set_down("sms", False)

    helper = threading.Thread(target=recover, daemon=True)
    helper.start()
    result = runner.invoke(
        app, ["bulk", str(source), "--concurrency", "1", "--config", str(config)]
    )
    helper.join(20)
    assert result.exit_code == 0, result.output
    recorded = by_row(tmp_path / "in.results.csv")
    assert [recorded[i]["status"] for i in range(1, 7)] == ["sent"] * 6
    # Row 1's own requests opened both circuits: it waited too, its failed tries counted.
    assert int(recorded[1]["attempts"]) >= 3
    assert "waiting until " in result.stderr and "circuit" in result.stderr
    assert "not sent yet" not in result.stderr


def test_a_lasting_outage_stops_with_75_and_prints_the_resume_command(
    sandbox: Any, tmp_path: Path
) -> None:
    source = rows(tmp_path / "in.csv", 6)
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=0.3)
    sandbox.set_down("kakaotalk")
    sandbox.set_down("sms")
    started = time.monotonic()
    result = runner.invoke(
        app,
        [
            "bulk",
            str(source),
            "--concurrency",
            "2",
            "--template",
            "{message}!",
            "--config",
            str(config),
        ],
    )
    elapsed = time.monotonic() - started
    assert result.exit_code == 75, result.output
    assert elapsed < 15  # bounded by max-outage, not by the file
    assert "no provider could deliver for" in result.stderr
    assert "[bulk] max-outage is 0.3 s" in result.stderr
    assert "bulk stopped: " in result.stderr  # the summary says it stopped
    recorded = by_row(tmp_path / "in.results.csv")
    assert all(line["attempts"] != "0" for line in recorded.values())
    left = 6 - len(recorded)
    assert left >= 4
    match = re.search(
        r"(\d+) row\(s\) not sent yet.*to send them: (msgsend bulk .*)", result.stderr
    )
    assert match is not None, result.stderr
    assert int(match[1]) == left
    command = shlex.split(match[2])
    assert command[:4] == ["msgsend", "bulk", str(source), "--resume"]
    assert command[command.index("--template") + 1] == "{message}!"
    assert command[command.index("--config") + 1] == str(config)

    sandbox.set_down("kakaotalk", False)
    sandbox.set_down("sms", False)
    again = runner.invoke(app, command[1:])
    assert again.exit_code == 0, again.output
    final = by_row(tmp_path / "in.results.csv")
    assert {line["status"] for line in final.values()} == {"sent"} and len(final) == 6


def test_the_json_document_says_the_run_stopped(sandbox: Any, tmp_path: Path) -> None:
    source = rows(tmp_path / "in.csv", 3)
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=0.3)
    sandbox.set_down("kakaotalk")
    sandbox.set_down("sms")
    result = runner.invoke(
        app, ["bulk", str(source), "--json", "--concurrency", "1", "--config", str(config)]
    )
    assert result.exit_code == 75, result.output
    document = json.loads(result.stdout)
    assert document["exit_code"] == 75 and document["left"] == 3
    assert "no provider could deliver" in document["stopped"]
    assert document["resume_command"].startswith(f"msgsend bulk {source} --resume")


def test_credentials_refused_by_both_stop_at_once_with_78(sandbox: Any, tmp_path: Path) -> None:
    source = rows(tmp_path / "in.csv", 30)
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=60)
    sandbox.set_status("kakaotalk", 401)
    sandbox.set_status("sms", 403)
    result = runner.invoke(
        app, ["bulk", str(source), "--concurrency", "1", "--config", str(config)]
    )
    assert result.exit_code == 78, result.output
    assert "refused our credentials" in result.stderr
    assert sandbox.count() == 2  # one request each, then nothing
    recorded = by_row(tmp_path / "in.results.csv")
    assert list(recorded) == [1]
    assert "29 row(s) not sent yet" in result.stderr


def test_a_systematic_refusal_stops_with_78_after_twenty_rows(sandbox: Any, tmp_path: Path) -> None:
    source = rows(tmp_path / "in.csv", 60)
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=60)
    sandbox.set_status("kakaotalk", 400)
    result = runner.invoke(
        app, ["bulk", str(source), "--concurrency", "1", "--config", str(config)]
    )
    assert result.exit_code == 78, result.output
    assert "20 rows in a row were refused by kakaotalk with HTTP 400" in result.stderr
    assert "forced status 400" in result.stderr  # the body excerpt
    assert "request format" in result.stderr
    assert len(by_row(tmp_path / "in.results.csv")) == 20
    assert sandbox.count() == 20
    assert "40 row(s) not sent yet" in result.stderr


def test_quiet_hours_pause_a_run_and_a_second_run_exits_75(sandbox: Any, tmp_path: Path) -> None:
    """A window around the current time: the run waits, holds its file; others exit 75."""
    source = rows(tmp_path / "in.csv", 5)
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=60)
    now = dt.datetime.now(dt.UTC)
    window = f"{now - dt.timedelta(hours=1):%H:%M}-{now + dt.timedelta(hours=1):%H:%M}"
    with config.open("a", encoding="utf-8") as handle:
        handle.write(f'quiet-hours = "{window}"\ntimezone = "UTC"\n')
    first = subprocess.Popen(
        [sys.executable, "-m", "msgsend", "bulk", str(source), "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert first.stderr is not None
        line = ""
        deadline = time.monotonic() + 30
        while ": quiet hours" not in line and time.monotonic() < deadline:
            line = first.stderr.readline()
            assert line or first.poll() is None, "the first run ended early"
        assert re.search(rf"waiting until \d\d:\d\d:\d\d: quiet hours {window} UTC", line)
        second = runner.invoke(app, ["bulk", str(source), "--resume", "--config", str(config)])
        assert second.exit_code == 75, second.output
        assert "in use by another msgsend run" in second.stderr
        assert sandbox.count() == 0
    finally:
        first.send_signal(signal.SIGTERM)
        _, rest = first.communicate(timeout=30)
    assert first.returncode == 130, rest
    assert sandbox.count() == 0 and by_row(tmp_path / "in.results.csv") == {}

    third = runner.invoke(
        app,
        ["bulk", str(source), "--resume", "--ignore-quiet-hours", "--config", str(config)],
    )
    assert third.exit_code == 0, third.output
    assert sandbox.count() == 5


def limited_config(path: Path, sandbox: Any, *, kakaotalk: int, sms: int) -> Path:
    path.write_text(
        f"""
[kakaotalk]
base-url = "{sandbox.kakaotalk_url}"
[kakaotalk.rate-limit]
requests-per-second = {kakaotalk}
[sms]
base-url = "{sandbox.sms_url}"
[sms.rate-limit]
requests-per-second = {sms}
[limiter]
store = "memory"
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def test_overflow_spills_to_sms_while_kakaotalk_is_full(sandbox: Any, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [(phone(i), f"안내 {i}", "kakaotalk" if i == 1 else "") for i in range(1, 7)],
        header=("phone", "message", "via"),
    )
    config = limited_config(tmp_path / "msgsend.toml", sandbox, kakaotalk=2, sms=4)
    # What both limits let through at once: two rows by KakaoTalk, the rest spill over to
    # SMS. (Two workers: row 1, which only KakaoTalk may carry, seldom waits for its slot.)
    command = ["bulk", str(source), "--overflow", "--json", "--concurrency", "2"]
    result = runner.invoke(app, [*command, "--config", str(config)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    recorded = by_row(tmp_path / "in.results.csv")
    overflowed = [row for row, line in recorded.items() if line["error"] == "overflow"]
    assert overflowed and document["overflows"] == len(overflowed)
    assert all(recorded[row]["channel"] == "sms" for row in overflowed)
    assert all(recorded[row]["fallback"] == "true" for row in overflowed)
    assert recorded[1]["channel"] == "kakaotalk"  # its via cell names the channel
    assert sandbox.count("kakaotalk") >= 2 and sandbox.count("sms") == len(overflowed)
    assert sandbox.count(status=429) == 0
    assert "fallback kakaotalk" not in result.stderr  # an overflow is not a fallback alert


def test_send_overflow_goes_by_kakaotalk_while_it_has_room(sandbox: Any, tmp_path: Path) -> None:
    config = limited_config(tmp_path / "msgsend.toml", sandbox, kakaotalk=2, sms=4)
    result = runner.invoke(
        app, ["send", phone(1), "안내", "--overflow", "--json", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["channel"] == "kakaotalk"


def restart_redis(server: RedisServer, directory: Path) -> RedisServer:
    """Start redis-server again on the port ``server`` used (empty, as after a reboot)."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    command = [binary, "--port", str(server.port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(directory)]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    again = RedisServer(server.port, process, server.log_path)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", server.port), timeout=0.5) as sock,
        ):
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return again
        time.sleep(0.02)
    again.stop()
    raise AssertionError("redis-server did not come back")


def redis_config(tmp_path: Path, sandbox: Any, url: str, max_outage: float) -> Path:
    config = config_file(tmp_path / "msgsend.toml", sandbox, max_outage=max_outage)
    text = config.read_text(encoding="utf-8").replace(
        'store = "memory"', f'store = "redis"\nredis-url = "{url}"'
    )
    config.write_text(text, encoding="utf-8")
    return config


def test_rows_wait_while_the_redis_store_is_away(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away mid-run: no request goes out while it is away, no row fails."""
    directory = tmp_path / "redis"
    servers = [start_or_skip(directory)]
    watch = Watch(monkeypatch)
    try:
        source = rows(tmp_path / "in.csv", 4)
        config = redis_config(tmp_path, sandbox, servers[0].url, max_outage=60)
        sent_before: list[int] = []
        during: list[int] = []

        def go_away() -> None:
            sent_before.append(sandbox.count())
            servers[0].stop()

        # Redis stops as row 1's message finishes, before row 2 asks the limiter for a slot.
        watch.on(lambda event: isinstance(event, MessageFinished), go_away)

        def come_back() -> None:
            # Row 2 finds the store away and waits: three looks at it, nothing goes out.
            if watch.wait_for(paused("outage"), count=3):
                during.append(sandbox.count() - sent_before[0])
            servers.append(restart_redis(servers[0], directory))

        helper = threading.Thread(target=come_back, daemon=True)
        helper.start()
        try:
            result = runner.invoke(
                app, ["bulk", str(source), "--concurrency", "1", "--config", str(config)]
            )
        finally:
            helper.join(30)
        assert result.exit_code == 0, result.output
        assert not watch.errors
        recorded = by_row(tmp_path / "in.results.csv")
        assert [recorded[i]["status"] for i in range(1, 5)] == ["sent"] * 4
        assert sent_before == [1] and during == [0]
        assert "waiting until " in result.stderr and "limiter" in result.stderr
        assert "answers until" not in result.stderr  # the time leads: the reason says "until"
    finally:
        for server in servers:
            server.stop()


def test_rows_wait_for_a_redis_store_that_is_down_when_the_run_starts(
    sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down at start is the same outage as down mid-run: rows wait, then all go, paced."""
    directory = tmp_path / "redis"
    servers = [start_or_skip(directory)]
    servers[0].stop()  # its port, with nothing listening on it yet
    watch = Watch(monkeypatch)
    try:
        source = rows(tmp_path / "in.csv", 4)
        config = redis_config(tmp_path, sandbox, servers[0].url, max_outage=60)

        def back() -> None:
            watch.wait_for(paused("outage"))  # the rows wait for the store
            servers.append(restart_redis(servers[0], directory))

        helper = threading.Thread(target=back, daemon=True)
        helper.start()
        try:
            result = runner.invoke(app, ["bulk", str(source), "--config", str(config)])
        finally:
            helper.join(30)
        assert result.exit_code == 0, result.output
        recorded = by_row(tmp_path / "in.results.csv")
        assert [recorded[i]["status"] for i in range(1, 5)] == ["sent"] * 4
        assert "waiting until " in result.stderr and "limiter" in result.stderr
    finally:
        for server in servers:
            server.stop()


def test_a_redis_store_down_from_start_to_max_outage_stops_with_75_and_nothing_sent(
    sandbox: Any, tmp_path: Path
) -> None:
    source = rows(tmp_path / "in.csv", 3)
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = redis_config(tmp_path, sandbox, url, max_outage=0.3)
    result = runner.invoke(app, ["bulk", str(source), "--config", str(config)])
    assert result.exit_code == 75, result.output
    assert sandbox.count() == 0  # nothing went out unpaced
    assert not by_row(tmp_path / "in.results.csv")  # every row left for --resume
    assert "--resume" in result.stderr


def test_a_sandbox_run_stopped_says_to_resume_with_sandbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume command of a --sandbox run keeps --sandbox (else it sends elsewhere)."""
    source = rows(tmp_path / "in.csv", 2)
    now = dt.datetime.now(dt.UTC)
    window = f"{now - dt.timedelta(hours=1):%H:%M}-{now + dt.timedelta(hours=1):%H:%M}"
    monkeypatch.setenv("MSGSEND_BULK_QUIET_HOURS", window)
    monkeypatch.setenv("MSGSEND_BULK_TIMEZONE", "UTC")
    watch = Watch(monkeypatch)
    main = threading.get_ident()

    def interrupt() -> None:
        # Ctrl-C once the run waits for quiet hours to end (sent even if it never does: the
        # run must not wait out the window).
        watch.wait_for(paused("quiet-hours"))
        signal.pthread_kill(main, signal.SIGINT)

    # The run's handler takes the signal; this one only if the run had ended before it.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    helper = threading.Thread(target=interrupt, daemon=True)
    helper.start()
    try:
        result = runner.invoke(app, ["bulk", str(source), "--sandbox"])
    finally:
        helper.join(30)
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130, result.output
    assert any(paused("quiet-hours")(event) for event in watch.seen)
    hint = next(text for text in result.stderr.splitlines() if "to send them:" in text)
    command = shlex.split(hint.split("to send them: ", 1)[1])
    assert command[:4] == ["msgsend", "bulk", str(source), "--resume"]
    assert "--sandbox" in command
