"""A provider on 127.0.0.1 that misbehaves as real ones do: trickles, floods, throttles oddly.

``MisbehavingProvider(mode=...)`` serves one behaviour at a time (change ``mode`` between
requests):

- ``ok``: 200 ``{"status": "ok"}``;
- ``refuse``: 500 for the recipients in ``refused`` (found anywhere in the body), 200 for the
  others (a provider that refuses some numbers: blocked, carrier errors);
- ``trickle-headers`` / ``trickle-body``: the status line at once, then the headers (or the
  body) one byte every ``interval`` seconds, for ``trickle_bytes`` bytes;
- ``silent``: reads the request and never answers (until closed);
- ``huge``: 200 with a ``huge_bytes`` body, written as fast as the client reads it;
- ``throttle``: ``throttle_status`` with ``throttle_headers``.

Every request is counted in ``requests`` (with the recipient found, if any); ``close()`` stops
every trickle at once. ``tls=True`` serves HTTPS with the self-signed certificate of
``tests/data`` (for 127.0.0.1; ``CERTIFICATE`` is the CA bundle that trusts it).
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["CERTIFICATE", "MisbehavingProvider"]

_DATA = Path(__file__).parent / "data"
#: a self-signed certificate for 127.0.0.1 (valid until 2126), and its key
CERTIFICATE = str(_DATA / "localhost.pem")
_KEY = str(_DATA / "localhost-key.pem")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        provider = self.server.provider
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        recipient = next((r for r in provider.refused if r in body), None)
        with provider.lock:
            provider.requests.append(recipient or body[:60])
        mode = provider.mode
        stop = provider.stopping
        try:
            if mode == "refuse" and recipient is not None:
                self._answer(500, b'{"error": "recipient refused"}')
            elif mode in ("ok", "refuse"):
                self._answer(200, b'{"status": "ok"}')
            elif mode == "throttle":
                self._answer(
                    provider.throttle_status, b'{"error": "slow down"}', provider.throttle_headers
                )
            elif mode == "silent":
                stop.wait(60)
            elif mode == "trickle-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                self.wfile.flush()
                for _ in range(provider.trickle_bytes):
                    if stop.wait(provider.interval):
                        return
                    self.wfile.write(b"a")
                    self.wfile.flush()
                self.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
            elif mode == "trickle-body":
                self.wfile.write(
                    f"HTTP/1.1 200 OK\r\nContent-Length: {provider.trickle_bytes}\r\n\r\n".encode()
                )
                self.wfile.flush()
                for _ in range(provider.trickle_bytes):
                    if stop.wait(provider.interval):
                        return
                    self.wfile.write(b"a")
                    self.wfile.flush()
            elif mode == "huge":
                self.wfile.write(
                    f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {provider.huge_bytes}\r\n\r\n".encode()
                )
                chunk = b" " * 65536
                left = provider.huge_bytes
                while left > 0 and not stop.is_set():
                    piece = chunk[: min(len(chunk), left)]
                    self.wfile.write(piece)
                    left -= len(piece)
                    with provider.lock:
                        provider.bytes_written += len(piece)
        except OSError:
            self.close_connection = True  # the client hung up: what a deadline does

    def _answer(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        # One write: a response in pieces meets Nagle and delayed ACKs (40 ms a request).
        lines = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # A backlog of 5 (socketserver's default) drops connections when eight workers connect
    # at once: each dropped SYN is sent again a second later (a 1 s stall for that message).
    request_queue_size = 128

    def __init__(self, provider: MisbehavingProvider, tls: bool) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = provider
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(CERTIFICATE, _KEY)
            self.socket = context.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class MisbehavingProvider:
    """A provider HTTP server on 127.0.0.1 with one behaviour at a time (see the module)."""

    def __init__(self, mode: str = "ok", *, tls: bool = False, **settings: Any) -> None:
        self.mode = mode
        self.refused: set[str] = set()
        self.interval = 1.0
        self.trickle_bytes = 100
        self.huge_bytes = 200 * 1024 * 1024
        self.throttle_status = 429
        self.throttle_headers: dict[str, str] = {}
        for name, value in settings.items():
            setattr(self, name, value)
        self.requests: list[str] = []
        self.bytes_written = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._tls = tls
        self._server = _Server(self, tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self._tls else 'http'}://{host}:{port}"

    def __enter__(self) -> MisbehavingProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def refused_requests(self) -> list[str]:
        with self.lock:
            return [r for r in self.requests if r in self.refused]
