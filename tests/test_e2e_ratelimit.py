"""Two real ``msgsend bulk`` processes share one provider budget through the sqlite store."""

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


def _write_rows(path: Path, offset: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "message"])
        for i in range(ROWS):
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
