"""Run a throwaway ``redis-server`` on a free loopback port for tests.

``start_redis_server(directory)`` starts ``redis-server --port <free> --save '' --appendonly no``
bound to 127.0.0.1 with ``directory`` as its working directory and returns a ``RedisServer``;
``RedisServer.stop()`` terminates it. ``start_or_skip`` applies the test policy: when Redis
cannot start, the test fails if the ``CI`` environment variable is set and is skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["RedisServer", "RedisUnavailableError", "start_or_skip", "start_redis_server"]

FALLBACK_BINARY = "/usr/bin/redis-server"


class RedisUnavailableError(Exception):
    """redis-server is missing or did not answer PING in time."""


@dataclass
class RedisServer:
    """A running redis-server child process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        """Return the ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server and reap the process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(lines[-3:]) or "empty log"


def start_redis_server(
    directory: Path, *, timeout: float = 10.0, attempts: int = 3, port: int | None = None
) -> RedisServer:
    """Start redis-server in ``directory`` on ``port`` (default: a free 127.0.0.1 port)."""
    binary = shutil.which("redis-server") or FALLBACK_BINARY
    if not os.access(binary, os.X_OK):
        raise RedisUnavailableError(f"{binary} not found")
    directory.mkdir(parents=True, exist_ok=True)
    problem = "not started"
    chosen = port
    for attempt in range(attempts):
        port = chosen or free_port()
        log_path = directory / f"redis-{port}.log"
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(log_path),
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = RedisServer(port, process, log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping(port):
                return server
            time.sleep(0.02)
        server.stop()
        problem = f"attempt {attempt + 1} on port {port}: {_log_tail(log_path)}"
        # Another process may have taken the port between free_port() and the bind: try anew.
    raise RedisUnavailableError(f"redis-server did not answer PING ({problem})")


def start_or_skip(directory: Path) -> RedisServer:
    """Start redis-server; when it cannot run, fail the test under CI and skip it otherwise."""
    try:
        return start_redis_server(directory)
    except RedisUnavailableError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"redis-server is required when CI is set: {exc}")
        pytest.skip(f"redis-server unavailable: {exc}")
