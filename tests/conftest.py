"""Shared fixtures: every test runs with a clean MSGSEND_* environment and private dirs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Bytecode caches are written even where PYTHONDONTWRITEBYTECODE is set (as on the machines this
# project is tested on): without them each of the four xdist workers compiles msgsend and
# rewrites every test module again (3-4 s of CPU per worker instead of about 1 s), and every
# msgsend process a test starts compiles msgsend again. The caches go to __pycache__ folders
# beside the modules (in this working tree, ignored by git).
sys.dont_write_bytecode = False


@pytest.fixture(autouse=True)
def _isolated_environment(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Drop MSGSEND_* variables and point XDG config/state dirs at a private folder."""
    for name in list(os.environ):
        if name.startswith("MSGSEND_"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.chdir(home)
    yield


@pytest.fixture
def sandbox() -> Iterator[object]:
    """A running fake KakaoTalk + SMS pair on free ports, without rate limits."""
    from msgsend.sandbox import ProviderOptions, Sandbox, SandboxOptions

    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=None), sms=ProviderOptions(rate_limit=None)
    )
    with Sandbox(options) as running:
        yield running


@pytest.fixture
def sandbox_config(sandbox: Any, tmp_path: Path) -> Path:
    """A config file that points both providers at ``sandbox`` with fast retries."""
    path = tmp_path / "msgsend.toml"
    path.write_text(
        f"""
[kakaotalk]
base-url = "{sandbox.kakaotalk_url}"
timeout = 2.0
[sms]
base-url = "{sandbox.sms_url}"
timeout = 2.0
[retry]
backoff-delay = 10
max-delay = 50
[limiter]
store = "memory"
[circuit-breaker]
reset-timeout = 1
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def quick_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows that wait out an outage look again every 0.1 s instead of every 0.5-1 s.

    For end-to-end runs that wait for a circuit's reset-timeout or a limiter store and test
    what the run does, not how long a row holds (test_outage tests the holds, fake-clocked).
    """
    import msgsend.outage

    monkeypatch.setattr(msgsend.outage, "MIN_HOLD", 0.05)
    monkeypatch.setattr(msgsend.outage, "UNKNOWN_HOLD", 0.1)


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No colour forced from outside; close the log handlers a run installed."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE"):
        monkeypatch.delenv(name, raising=False)
    yield
    from msgsend.logs import reset_logging

    reset_logging()


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Run with umask 000, so that a file's mode is exactly what msgsend asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(autouse=True, scope="session")
def _cli_built_once() -> Iterator[None]:
    """Build each typer app's click command once per test process, as the real CLI does.

    typer's ``CliRunner.invoke`` rebuilds the whole command tree on every call (about 20 ms,
    most of an in-process CLI test's CPU time); a ``msgsend`` process builds it once.
    """
    import typer.testing

    original = typer.testing._get_command
    built: dict[int, tuple[object, Any]] = {}

    def get_command(app: Any) -> Any:
        if id(app) not in built:
            built[id(app)] = (app, original(app))
        return built[id(app)][1]

    typer.testing._get_command = get_command
    yield
    typer.testing._get_command = original
