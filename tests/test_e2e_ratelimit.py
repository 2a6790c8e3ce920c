"""Real ``msgsend bulk`` processes share one provider budget; no late arrival makes a 429."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgsend.sandbox import ProviderOptions, Sandbox, SandboxOptions
from test_ratelimit import redis_server, redis_url  # noqa: F401 - fixtures

LIMIT = 20  # per second, on both sides: any overshoot shows up as a 429 from the sandbox
ROWS = 50  # per process


@pytest.fixture
def limited_sandbox() -> Iterator[Sandbox]:
    options = SandboxOptions(
        kakaotalk=ProviderOptions(rate_limit=LIMIT, rate_period=1.0),
        sms=ProviderOptions(rate_limit=LIMIT, rate_period=1.0),
    )
    with Sandbox(options) as sandbox:
        yield sandbox


def _write_rows(path: Path, offset: int, rows: int = ROWS) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "message"])
        for i in range(rows):
            writer.writerow([f"010-{offset + i:04d}-{1000 + i:04d}", f"안내 {offset + i}"])


def _config(path: Path, sandbox: Sandbox, state: Path) -> None:
    path.write_text(
        f"""
[kakaotalk]
base-url = "{sandbox.kakaotalk_url}"
[kakaotalk.rate-limit]
requests-per-second = {LIMIT}
[sms]
base-url = "{sandbox.sms_url}"
[sms.rate-limit]
requests-per-second = {LIMIT}
[limiter]
store = "sqlite"
path = "{state}"
""",
        encoding="utf-8",
    )
    path.chmod(0o600)


@pytest.mark.slow
def test_two_bulk_processes_share_the_limit(limited_sandbox: Sandbox, tmp_path: Path) -> None:
    config = tmp_path / "msgsend.toml"
    _config(config, limited_sandbox, tmp_path / "state" / "ratelimit.sqlite")
    files = [tmp_path / "a.csv", tmp_path / "b.csv"]
    _write_rows(files[0], 1000)
    _write_rows(files[1], 2000)

    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "msgsend", "bulk", str(f), "--json", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in files
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    elapsed = time.monotonic() - started

    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["sent"] == ROWS
    assert limited_sandbox.count(status=429) == 0
    assert limited_sandbox.count("kakaotalk", status=200) == 2 * ROWS

    # The budget is shared: together they take the time the limit implies, not half of it.
    ideal = math.ceil(2 * ROWS / LIMIT) - 1
    assert elapsed >= ideal * 0.9
    stamps = sorted(r.monotonic for r in limited_sandbox.delivered("kakaotalk"))
    most_in_any_second = max(
        sum(1 for t in stamps[i:] if t - stamps[i] < 1.0) for i in range(len(stamps))
    )
    assert most_in_any_second <= LIMIT


HOSTILE_PROVIDER = Path(__file__).resolve().parent.parent / "bench" / "limit_provider.py"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_late_arrivals_never_make_the_provider_answer_429(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Three bulk processes against a provider that drops SYNs and delays arrivals 0-100 ms.

    The provider counts a request when it arrives (after its transit) and answers 429 over 20
    per 1 s window: whatever the load on this host, no 429 and never more than 20 arrivals in
    any window. No timing is asserted.
    """
    options = {"sms_limit": LIMIT, "kakaotalk_limit": LIMIT, "period": 1.0}
    options |= {"backlog": 5, "delay_ms": 100}
    with subprocess.Popen(
        [sys.executable, str(HOSTILE_PROVIDER), json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as provider:
        assert provider.stdin is not None and provider.stdout is not None
        ports = json.loads(provider.stdout.readline())
        redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
        config = tmp_path / "msgsend.toml"
        config.write_text(
            f"""
[kakaotalk]
base-url = "http://127.0.0.1:{ports["kakaotalk"]}"
[kakaotalk.rate-limit]
requests-per-second = {LIMIT}
[sms]
base-url = "http://127.0.0.1:{ports["sms"]}"
[sms.rate-limit]
requests-per-second = {LIMIT}
[limiter]
store = "{store}"
path = "{tmp_path / "rl.sqlite"}"
{f'redis-url = "{redis_url}"' if redis_url else ""}
[bulk]
concurrency = 12
""",
            encoding="utf-8",
        )
        config.chmod(0o600)
        files = [tmp_path / f"{name}.csv" for name in "abc"]
        for offset, path in enumerate(files):
            _write_rows(path, 1000 * (offset + 1), rows=20)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "msgsend", "bulk", str(path), "--json", "--config",
                 str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in files
        ]  # fmt: skip
        try:
            outputs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                p.kill()
        provider.stdin.write("stats\n")
        provider.stdin.flush()
        seen = json.loads(provider.stdout.readline())["kakaotalk"]
        provider.stdin.close()
        provider.wait(timeout=10)
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr
        assert json.loads(stdout)["sent"] == 20
    assert seen["status"] == {"200": 60}
    assert seen["most_in_window"] <= LIMIT
