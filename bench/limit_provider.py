"""A provider for the pacing benchmark: it counts a request when it arrives, as a real one does.

Like the sandbox, it enforces a sliding window (N per P, answering 429 with ``Retry-After``).
Unlike it, it can be made hostile the way networks are:

- ``backlog``: the listen queue (Python's ``ThreadingHTTPServer`` default is 5). A burst of
  new connections overflows it; the kernel drops the SYNs and the client's retransmit delivers
  them about a second late.
- ``delay_ms``: each request "arrives" (is stamped and counted) a random 0..delay_ms after the
  server read it, as if it had spent that long in transit. The answer follows at once.

It prints one JSON line with its ports, then answers ``stats`` / ``reset`` on stdin; EOF stops
it. Stats: requests and statuses per provider, first and last arrival (monotonic), the most
arrivals in any window (the provider's own view), and the mean transit it added.

    python bench/limit_provider.py '{"limit": 20, "period": 1.0, "backlog": 5}'
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATHS = {"/kakaotalk-messages": "kakaotalk", "/sms": "sms"}


class Provider:
    """One provider's window and records (shared by the handler threads)."""

    def __init__(self, limit: int | None, period: float, delay_ms: float, seed: int) -> None:
        self.limit = limit
        self.period = period
        self.delay_ms = delay_ms
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.window: deque[float] = deque()
        self.arrivals: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.delays: list[float] = []

    def transit(self) -> float:
        with self.lock:
            return self.random.uniform(0, self.delay_ms / 1000) if self.delay_ms else 0.0

    def admit(self, now: float) -> int:
        """Count a request arriving at ``now``: 200, or 429 when the window is full."""
        with self.lock:
            status = 200
            if self.limit is not None:
                while self.window and self.window[0] <= now - self.period:
                    self.window.popleft()
                if len(self.window) >= self.limit:
                    status = 429
                else:
                    self.window.append(now)
            if status == 200:
                self.arrivals.append(now)
            self.statuses[status] += 1
            return status

    def stats(self) -> dict[str, Any]:
        with self.lock:
            arrivals = sorted(self.arrivals)
            return {
                "total": sum(self.statuses.values()),
                "status": {str(k): v for k, v in self.statuses.items()},
                "first": arrivals[0] if arrivals else None,
                "last": arrivals[-1] if arrivals else None,
                "most_in_window": most_in_window(arrivals, self.period),
                "mean_transit": sum(self.delays) / len(self.delays) if self.delays else 0.0,
            }

    def reset(self) -> None:
        with self.lock:
            self.window.clear()
            self.arrivals.clear()
            self.statuses.clear()
            self.delays.clear()


def most_in_window(times: list[float], width: float) -> int:
    """The most timestamps in any window of ``width`` seconds."""
    most = first = 0
    for last, at in enumerate(times):
        while times[first] <= at - width:
            first += 1
        most = max(most, last - first + 1)
    return most


def handler(providers: dict[str, Provider]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            provider = providers.get(self.path.split("?", 1)[0])
            if provider is None:
                self._answer(404, b'{"error": "not found"}')
                return
            transit = provider.transit()
            if transit:
                time.sleep(transit)
            status = provider.admit(time.monotonic())
            with provider.lock:
                provider.delays.append(transit)
            body = b"{}" if status == 200 else b'{"error": "rate limit exceeded"}'
            self._answer(status, body, {"Retry-After": "1"} if status == 429 else {})

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    period = float(options.get("period", 1.0))
    backlog = int(options.get("backlog", 128))
    delay_ms = float(options.get("delay_ms", 0.0))
    servers = {}
    providers = {}
    for seed, (path, name) in enumerate(PATHS.items()):
        provider = Provider(options.get(f"{name}_limit"), period, delay_ms, seed)
        providers[name] = provider

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = backlog

            def server_bind(self) -> None:  # no reverse DNS lookup
                import socketserver

                socketserver.TCPServer.server_bind(self)

        server = Server(("127.0.0.1", 0), handler({path: provider}))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    print(json.dumps({name: s.server_address[1] for name, s in servers.items()}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            print(json.dumps({n: p.stats() for n, p in providers.items()}), flush=True)
        elif command == "reset":
            for provider in providers.values():
                provider.reset()
            print("ok", flush=True)
    for server in servers.values():
        server.shutdown()


if __name__ == "__main__":
    main()
