"""Shared fixtures: every test runs with a clean MSGSEND_* environment and private dirs."""

from __future__ import annotations

import gc
import itertools
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msgsend.logs import reset_logging

# Bytecode caches are written even where PYTHONDONTWRITEBYTECODE is set (as on the machines this
# project is tested on): without them each of the four xdist workers compiles msgsend and
# rewrites every test module again (3-4 s of CPU per worker instead of about 1 s), and every
# msgsend process a test starts compiles msgsend again. The caches go to __pycache__ folders
# beside the modules (in this working tree, ignored by git).
sys.dont_write_bytecode = False


_numbers = itertools.count()


@pytest.fixture(scope="session")
def _test_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test process's folder for the per-test folders below (pytest's basetemp)."""
    return tmp_path_factory.getbasetemp()


def _new_dir(parent: Path, name: str) -> Path:
    # pytest's own numbering (TempPathFactory.mktemp) lists the whole folder to find the next
    # number, for every test: with ~1,000 folders per test process that was a millisecond a test.
    path = parent / f"{_UNSAFE.sub('_', name)[:30]}-{next(_numbers)}"
    path.mkdir()
    return path


_UNSAFE = re.compile(r"\W")


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, _test_dirs: Path) -> Path:
    """A new empty folder for this test (pytest's ``tmp_path``, numbered without a listing)."""
    return _new_dir(_test_dirs, request.node.name)


@pytest.fixture(autouse=True)
def _isolated_environment(_test_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Drop MSGSEND_* variables, point XDG config/state dirs at a private folder and run there.

    No colour is forced from outside; the log handlers a run installed are closed afterwards.
    """
    for name in list(os.environ):
        if name.startswith("MSGSEND_") or name in _COLOUR_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    home = _new_dir(_test_dirs, "home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.chdir(home)
    yield
    reset_logging()


_COLOUR_VARIABLES = frozenset(
    ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE")
)


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what collection built (~1,800 test items and their fixtures) out of the collector's
    sight: they live until the end anyway, and each full collection would walk them again."""
    gc.collect()
    gc.freeze()
