"""Helpers shared by the end-to-end tests: numbers, config files, CSV and results files."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def phone(i: int) -> str:
    """A distinct valid number per ``i`` that never ends in 0000."""
    return f"010-{5000 + i // 1000:04d}-{1000 + i % 1000:04d}"


def failing_phone(i: int) -> str:
    """A distinct valid number ending in 0000 (made to fail on KakaoTalk)."""
    return f"010-{7000 + i:04d}-0000"


def write_config(
    path: Path,
    sandbox: Any,
    *,
    fast_retries: bool = True,
    failures_to_open: int | None = None,
    reset_timeout: float = 30,
    timeout: float = 5.0,
    kakaotalk_timeout: float | None = None,
    webhook: str | None = None,
    max_attempts: int = 3,
    kakaotalk_extra: str = "",
) -> Path:
    """A config pointing at ``sandbox``: memory limiter, limits far above what tests send.

    ``failures_to_open=N``: the circuit opens after N failed messages in a row (a window of
    N, all failed); by default the breaker has its default window. ``kakaotalk_timeout``
    (default: ``timeout``) is KakaoTalk's alone. ``kakaotalk_extra`` is added to the
    ``[kakaotalk]`` table.
    """
    breaker = (
        f"window-size = {failures_to_open}\nminimum-calls = {failures_to_open}\n"
        "failure-rate-threshold = 1.0\n"
        if failures_to_open
        else ""
    )
    retry = f"[retry]\nmax-attempts = {max_attempts}\n"
    if fast_retries:
        retry += "backoff-delay = 10\nmax-delay = 50\n"
    alerts = f'[alerts]\nwebhook-url = "{webhook}"\n' if webhook else ""
    path.write_text(
        f"""
[kakaotalk]
base-url = "{sandbox.kakaotalk_url}"
timeout = {timeout if kakaotalk_timeout is None else kakaotalk_timeout}
{kakaotalk_extra}
[kakaotalk.rate-limit]
requests-per-second = 5000
[sms]
base-url = "{sandbox.sms_url}"
timeout = {timeout}
[sms.rate-limit]
requests-per-second = 5000
{retry}
[limiter]
store = "memory"
[circuit-breaker]
{breaker}reset-timeout = {reset_timeout}
{alerts}
""",
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


def write_csv(
    path: Path,
    rows: Iterable[Sequence[str]],
    header: Sequence[str] = ("phone", "message"),
    encoding: str = "utf-8",
) -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    """Every complete line of a results (or preview) file."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return [
            dict(zip(header, fields, strict=True))
            for fields in reader
            if len(fields) == len(header)
        ]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
