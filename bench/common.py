"""Shared pieces of the benchmarks: processes, the sandbox, configs, CSV files, the table.

Every benchmark runs msgsend as the installed ``msgsend`` console script in a child process,
against the fake providers running in another child process (``bench/sandbox_server.py``),
on 127.0.0.1 only. Files (configs, CSVs, results, the SQLite limiter store) live in one
temporary directory; the children get ``XDG_STATE_HOME``/``XDG_CONFIG_HOME`` inside it and an
explicit ``--config``, so a benchmark never touches the user's state or configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable
#: the console script beside this interpreter (not a version-manager shim, whose own start-up
#: would be measured too); ``msgsend`` on PATH otherwise
MSGSEND = str(Path(PYTHON).with_name("msgsend"))
if not os.access(MSGSEND, os.X_OK):  # pragma: no cover - unusual installs
    MSGSEND = shutil.which("msgsend") or "msgsend"


# ----------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A finished child process: wall time, CPU time, peak RSS, exit code and output."""

    wall: float
    user: float
    sys: float
    maxrss_kb: int
    rc: int
    out: str
    err: str

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def json(self) -> Any:
        return json.loads(self.out)


def run(
    cmd: Sequence[str],
    env: dict[str, str],
    *,
    cwd: Path | None = None,
    timeout: float = 300.0,
    check: bool = True,
) -> Proc:
    """Run ``cmd`` to completion; measure its wall time and, from wait4, its own rusage."""
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as err,
    ):
        started = time.perf_counter()
        child = subprocess.Popen(
            list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                pid, status, usage = os.wait4(child.pid, 0)
                child.returncode = os.waitstatus_to_exitcode(status)
                raise TimeoutError(f"{' '.join(cmd)}: still running after {timeout:g} s")
            time.sleep(0.002)
        wall = time.perf_counter() - started
        child.returncode = rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        proc = Proc(
            wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss, rc, out.read(), err.read()
        )
    if check and rc not in (0,):
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}:\n{proc.err[-2000:]}")
    return proc


def run_many(
    cmds: Sequence[Sequence[str]], env: dict[str, str], *, timeout: float = 300.0
) -> tuple[float, list[Proc]]:
    """Start ``cmds`` together; return the wall time until the last exits, and each result."""
    files = []
    children = []
    started = time.perf_counter()
    for cmd in cmds:
        out = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        err = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        files.append((out, err))
        children.append(
            subprocess.Popen(list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        )
    results: list[Proc] = []
    try:
        for child, (out, err) in zip(children, files, strict=True):
            remaining = max(0.1, started + timeout - time.perf_counter())
            child.wait(remaining)
            wall = time.perf_counter() - started
            out.seek(0)
            err.seek(0)
            results.append(Proc(wall, 0.0, 0.0, 0, child.returncode, out.read(), err.read()))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        for out, err in files:
            out.close()
            err.close()
    return max(p.wall for p in results), results


# ----------------------------------------------------------------------------- workspace


def precompile() -> None:
    """Compile msgsend's modules to bytecode, as ``pip install`` does for a regular install.

    An editable install run with ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile every
    module from source on every start (tens of milliseconds that no user pays).
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("msgsend")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            compileall.compile_dir(location, quiet=1)


class Workspace:
    """A temporary directory with the children's environment pointing into it."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="msgsend-bench-"))
        self._serial = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSGSEND_")}
        env["XDG_STATE_HOME"] = str(self.dir / "state")
        env["XDG_CONFIG_HOME"] = str(self.dir / "config")
        env["MSGSEND_CONFIG"] = str(self.dir / "no-such-config.toml")
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        # Measure msgsend as a pip install leaves it, with its bytecode cached (see precompile).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env = env

    def path(self, name: str) -> Path:
        """Return a fresh path in the workspace (a serial number keeps names unique)."""
        self._serial += 1
        return self.dir / f"{self._serial:03d}-{name}"

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SandboxProcess:
    """``bench/sandbox_server.py`` (or ``script``, e.g. ``limit_provider.py``) in a child process,
    controlled over its stdin."""

    def __init__(
        self, env: dict[str, str], *, script: str = "sandbox_server.py", **options: Any
    ) -> None:
        self._child = subprocess.Popen(
            [PYTHON, str(BENCH_DIR / script), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self._child.stdout is not None
        line = self._child.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox did not start")
        self.ports: dict[str, int] = json.loads(line)

    def url(self, provider: str) -> str:
        return f"http://127.0.0.1:{self.ports[provider]}"

    def _ask(self, command: str) -> str:
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(command + "\n")
        self._child.stdin.flush()
        return self._child.stdout.readline()

    def stats(self) -> dict[str, Any]:
        """Requests per provider and status, first/last arrival, since the last reset."""
        return json.loads(self._ask("stats"))  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._ask("reset")

    def close(self) -> None:
        if self._child.poll() is None:
            with contextlib.suppress(OSError):
                assert self._child.stdin is not None
                self._child.stdin.close()
            try:
                self._child.wait(5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_config(
    path: Path,
    sandbox: SandboxProcess | None,
    *,
    kakaotalk_rps: int = 100_000,
    sms_rps: int = 100_000,
    store: str = "memory",
    sqlite_path: Path | None = None,
    concurrency: int = 16,
) -> Path:
    """Write a msgsend TOML config pointing at ``sandbox`` with the given limits and store."""
    kakaotalk_url = sandbox.url("kakaotalk") if sandbox else "http://127.0.0.1:9"
    sms_url = sandbox.url("sms") if sandbox else "http://127.0.0.1:9"
    lines = [
        "[kakaotalk]",
        f'base-url = "{kakaotalk_url}"',
        "[kakaotalk.rate-limit]",
        f"requests-per-second = {kakaotalk_rps}",
        "[sms]",
        f'base-url = "{sms_url}"',
        "[sms.rate-limit]",
        f"requests-per-second = {sms_rps}",
        "[limiter]",
        f'store = "{store}"',
    ]
    if sqlite_path is not None:
        lines.append(f'path = "{sqlite_path}"')
    lines += ["[bulk]", f"concurrency = {concurrency}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


# ----------------------------------------------------------------------------- data

_NAMES = ("김민준", "이서연", "박지호", "최하은", "정도윤", "강서윤", "조예준", "윤지우")


def phone(i: int) -> str:
    """The i-th distinct, normalised mobile number."""
    return f"010-{1000 + (i // 10000) % 9000:04d}-{i % 10000:04d}"


def make_simple_csv(path: Path, n: int) -> Path:
    """``phone,message``: n valid, distinct rows with a Korean message (what a bulk run sends)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("phone,message\n")
        for i in range(n):
            name = _NAMES[i % len(_NAMES)]
            handle.write(f"{phone(i)},{name}님 주문 {100000 + i}번 상품이 발송되었습니다.\n")
    return path


def make_mixed_csv(path: Path, n: int, seed: int = 6) -> Path:
    """A realistic file for validation: number formats, a via column, 1% invalid, 1% repeats.

    ``phone,name,order_no,via``, rendered with ``--template``.
    """
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("phone,name,order_no,via\n")
        for i in range(n):
            roll = rng.random()
            number = phone(i)
            digits = number.replace("-", "")
            if roll < 0.01:
                number = f"02-{i % 9000 + 1000}-{i % 10000:04d}"  # a landline: invalid
            elif roll < 0.02 and i:
                number = phone(i - 1)  # the row before, same message below: a duplicate
            elif roll < 0.35:
                number = digits
            elif roll < 0.45:
                number = "+82 " + digits[1:3] + "-" + digits[3:7] + "-" + digits[7:]
            order = 100000 + (i - 1 if 0.01 <= roll < 0.02 and i else i)
            via = "sms" if rng.random() < 0.3 else ""
            name = _NAMES[(i - 1 if 0.01 <= roll < 0.02 and i else i) % len(_NAMES)]
            handle.write(f"{number},{name},{order},{via}\n")
    return path


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the results table."""

    name: str
    baseline: str
    msgsend: str
    ratio: float | None
    budget: str
    met: bool | None
    note: str = ""


@dataclass
class Section:
    """What one benchmark reports: table rows, detail lines for the doc, raw numbers."""

    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """``median (min-max, n=N)``."""
    return (
        f"{fmt.format(median(values))} ({fmt.format(min(values))}-"
        f"{fmt.format(max(values))}, n={len(values)})"
    )


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    versions = []
    from importlib import metadata

    for dist in ("msgsend", "requests", "urllib3", "typer", "rich", "pyrate-limiter"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist} {metadata.version(dist)}")
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if dirty:
            commit += " + uncommitted changes in src/"
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(versions),
        "commit": commit,
        "load": load,
    }


def run_standalone(bench: Any, doc: str | None, repetitions: int, flag: str = "--reps") -> None:
    """Run one benchmark module on its own: parse ``flag``, print its rows and details."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument(flag, type=int, default=repetitions, dest="repetitions")
    args = parser.parse_args()
    with Workspace() as workspace:
        result = bench(workspace, args.repetitions)
    for row in result.rows:
        print(row)
    print("\n".join(result.details))
