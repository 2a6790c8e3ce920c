"""Fake KakaoTalk and SMS providers on 127.0.0.1, for demos, tests and benchmarks.

Each provider is a stdlib ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) in its own daemon
thread and behaves as SPEC.md §2, in the request format it is given (``ProviderOptions.
request_format``: SPEC §2's by default, or the assignment's, or any ``[PROVIDER.request]``).
A request is checked in this order:

1. unknown path → 404; another method than the format's → 405
2. missing or wrong credentials (Basic, Bearer or a named header) → 401
3. provider down (``set_down``) → 503
4. forced status (``set_status``, e.g. 401 for revoked credentials) → that status
5. sliding-window rate limit exceeded → 429 with ``Retry-After``
6. a request not exactly in the format → 400: wrong content type, a body that does not parse,
   a missing or unexpected field or query parameter, a value that does not fit its
   placeholder (a recipient not like 010-1234-5678, an empty message, a wrong ``{kind}``).
   Strict on purpose: a lenient provider that answers 200 and records ``undefined`` is how
   misshapen requests go unnoticed.
7. KakaoTalk recipient in ``kakaotalk_fail_recipients`` / ending in a fail suffix → ``fail_status``
8. random failure (``failure_rate``) → ``failure_status``
9. latency (``latency_ms``) is slept, then 200 ``{"status": "ok", "id": ...}``

A ``[PROVIDER.health]`` endpoint other than the message endpoint (e.g. ``GET /health``) is
served too: after steps 1-5 it answers 200 ``{"status": "up"}``.

Every authenticated request that reaches step 5 counts against the rate limit (pings and
invalid bodies included, as a real provider would count them); a request answered 429 does not.
Injected failures (steps 7, 8) answer at once, without the latency.

Example::

    with Sandbox(on_request=lambda r: print(format_request(r))) as sandbox:
        sandbox.set_down("kakaotalk", True)
        ...  # point clients at sandbox.kakaotalk_url and sandbox.sms_url
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import errno
import hmac
import json
import logging
import math
import random
import re
import selectors
import socket
import socketserver
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from .config import DEFAULTS, Config, LimiterConfig
from .formats import PLACEHOLDERS, HealthFormat, RequestFormat, preset
from .models import CHANNELS
from .redact import printable

__all__ = [
    "DEFAULT_PASSWORDS",
    "DEFAULT_RATE_LIMITS",
    "DEFAULT_TOKENS",
    "DEFAULT_USERNAMES",
    "ProviderOptions",
    "ReceivedRequest",
    "Sandbox",
    "SandboxOptions",
    "SandboxPortError",
    "format_request",
    "start_for_config",
]

logger = logging.getLogger(__name__)

# SPEC §2's credentials and limits are msgsend's configuration defaults: one place, config.py.
DEFAULT_USERNAMES: dict[str, str] = {n: DEFAULTS[f"{n}.auth.username"] for n in CHANNELS}
DEFAULT_PASSWORDS: dict[str, str] = {n: DEFAULTS[f"{n}.auth.password"] for n in CHANNELS}
DEFAULT_RATE_LIMITS: dict[str, int] = {
    n: DEFAULTS[f"{n}.rate-limit.requests-per-minute"] for n in CHANNELS
}
#: the credentials of ``[PROVIDER.auth] type = "bearer"`` / ``"header"`` against the sandbox
DEFAULT_TOKENS: dict[str, str] = {
    "kakaotalk": "sandbox-kakaotalk-token",
    "sms": "sandbox-sms-token",
}
#: what the value of each placeholder must look like on arrival
_VALUE_PATTERNS: dict[str, str] = {
    "recipient": r"01[016789]-\d{3,4}-\d{4}",
    "recipient_digits": r"01[016789]\d{7,8}",
    "recipient_e164": r"\+821[016789]\d{7,8}",
    "message": r".+",
    "kind": r"kakaotalk|sms|lms",
    "message_id": r"[A-Za-z0-9._:\-]{1,200}",
}
_RECIPIENT_KEYS = ("recipient", "recipient_digits", "recipient_e164")
_CHALLENGES = {
    "basic": 'Basic realm="msgsend-sandbox"',
    "bearer": 'Bearer realm="msgsend-sandbox"',
    "header": 'ApiKey realm="msgsend-sandbox"',
}
_MAX_BODY = 1 << 20
_JOIN_TIMEOUT = 2.0


class SandboxPortError(OSError):
    """A sandbox port could not be bound (usually: it is already in use)."""


@dataclass(frozen=True)
class ProviderOptions:
    """Set the behaviour and fault injection of one fake provider."""

    latency_ms: float = 0.0
    failure_rate: float = 0.0
    failure_status: int = 503
    down: bool = False
    status: int | None = None
    #: requests per ``rate_period``; "default" is SPEC §2 (100 KakaoTalk, 500 SMS), None disables
    rate_limit: int | Literal["default"] | None = "default"
    rate_period: float = 60.0
    #: None means the SPEC §2 credentials (``DEFAULT_USERNAMES``, ``DEFAULT_PASSWORDS``)
    username: str | None = None
    password: str | None = None
    #: the wire format served; None means SPEC §2's (``formats.preset("default", ...)``)
    request_format: RequestFormat | None = None
    #: a health endpoint to serve besides the message endpoint (None: none)
    health: HealthFormat | None = None
    #: "basic" (username/password), "bearer" or "header" (``token`` in ``header_name``)
    auth_type: str = "basic"
    #: None means ``DEFAULT_TOKENS``
    token: str | None = None
    header_name: str = "X-API-Key"

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be between 0 and 1, got {self.failure_rate}")
        _check_status("failure_status", self.failure_status)
        if self.status is not None:
            _check_status("status", self.status)
        if isinstance(self.rate_limit, int) and self.rate_limit < 1:
            raise ValueError(f"rate_limit must be >= 1 or None, got {self.rate_limit}")
        if self.rate_period <= 0:
            raise ValueError(f"rate_period must be > 0, got {self.rate_period}")
        if self.auth_type not in ("basic", "bearer", "header"):
            raise ValueError(f"auth_type must be basic, bearer or header, got {self.auth_type!r}")


@dataclass(frozen=True)
class SandboxOptions:
    """Set the options of both fake providers and the per-recipient KakaoTalk failures."""

    kakaotalk: ProviderOptions = field(default_factory=ProviderOptions)
    sms: ProviderOptions = field(default_factory=ProviderOptions)
    kakaotalk_fail_suffixes: tuple[str, ...] = ()
    kakaotalk_fail_recipients: frozenset[str] = frozenset()
    fail_status: int = 503
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_status("fail_status", self.fail_status)
        for suffix in self.kakaotalk_fail_suffixes:
            # Without a digit a suffix would match every number: KakaoTalk failing them all.
            if not _digits(suffix) or suffix.strip("0123456789-"):
                raise ValueError(
                    f"a KakaoTalk fail suffix is a number's last digits (e.g. 0000), got {suffix!r}"
                )


@dataclass(frozen=True)
class ReceivedRequest:
    """Record one request a fake provider received and the status it answered."""

    provider: str
    at: float
    monotonic: float
    recipient: str | None
    message: str | None
    status: int
    authorized: bool
    #: the ``{message_id}`` the request carried, if its format has one
    message_id: str | None = None
    #: why the request was refused (None when answered 200)
    error: str | None = None


def format_request(r: ReceivedRequest) -> str:
    """Format a received request as one unmasked line for the operator's terminal.

    Anyone can post to the sandbox: what it received is shown with control characters escaped.
    """
    clock = datetime.fromtimestamp(r.at).strftime("%H:%M:%S.%f")[:-3]
    auth = "" if r.authorized else " (unauthorized)"
    # Why a request was refused (a 400 names the field or parameter out of format).
    why = f" ({r.error})" if r.error and r.authorized and r.status != 200 else ""
    message = "-" if r.message is None else json.dumps(r.message, ensure_ascii=False)
    return printable(
        f"{clock} {r.provider:<9} {r.status} {r.recipient or '-'} {message}{auth}{why}"
    )


def _check_status(name: str, status: int) -> None:
    if not 100 <= status <= 599:
        raise ValueError(f"{name} must be an HTTP status between 100 and 599, got {status}")


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


class _Provider:
    """Hold one fake provider's live options, rate-limit log and server."""

    def __init__(self, name: str, options: ProviderOptions, sandbox: Sandbox) -> None:
        self.name = name
        self.sandbox = sandbox
        self.lock = threading.Lock()
        self.options = options
        self.credentials = b""
        self.auth_header = "Authorization"
        self.rate_limit: int | None = None
        self.window: deque[float] = deque()
        self.apply(options)
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    def apply(self, options: ProviderOptions) -> None:
        password = DEFAULT_PASSWORDS[self.name] if options.password is None else options.password
        username = DEFAULT_USERNAMES[self.name] if options.username is None else options.username
        token = DEFAULT_TOKENS[self.name] if options.token is None else options.token
        limit = options.rate_limit
        fmt = options.request_format or preset("default", self.name)
        shape = _Shape(fmt, self.name)
        with self.lock:
            if options.auth_type == "basic":
                self.credentials = f"{username}:{password}".encode()
            else:
                self.credentials = token.encode()
            self.auth_header = (
                options.header_name if options.auth_type == "header" else ("Authorization")
            )
            self.rate_limit = DEFAULT_RATE_LIMITS[self.name] if limit == "default" else limit
            self.path = fmt.path
            self.method = fmt.method
            self.shape = shape
            health = options.health
            self.health: tuple[str, str] | None = None
            if health is not None:
                route = (health.method, health.path or fmt.path)
                if route != (fmt.method, fmt.path):
                    self.health = route
            self.options = options

    def admit(self, now: float) -> int:
        """Log one request in the sliding window; return 0, or the Retry-After seconds."""
        period = self.options.rate_period
        with self.lock:
            limit = self.rate_limit
            if limit is None:
                return 0
            window = self.window
            while window and window[0] <= now - period:
                window.popleft()
            if len(window) >= limit:
                return max(1, math.ceil(window[0] + period - now))
            window.append(now)
            return 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], provider: _Provider) -> None:
        self.provider = provider
        self.closing = threading.Event()
        self.conn_lock = threading.Lock()
        self.connections: dict[socket.socket, threading.Thread] = {}
        # Created first: TCPServer.__init__ calls server_close() when the bind fails.
        self._wake_r, self._wake_w = socket.socketpair()
        super().__init__(address, _Handler)

    def serve(self) -> None:
        """Accept connections until ``wake`` is called (no polling, so stopping is instant)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self.closing.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self.closing.is_set():
                        self._accept()

    def _accept(self) -> None:
        try:
            request, client_address = self.get_request()
        except OSError:
            return
        try:
            self.process_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)

    def wake(self) -> None:
        """Make ``serve`` return and interrupt handlers sleeping for latency."""
        self.closing.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up and sockets shut by stop() are routine; never print tracebacks.
        logger.debug("sandbox connection error from %s", client_address, exc_info=True)

    def drop_connections(self) -> None:
        with self.conn_lock:
            items = list(self.connections.items())
        for conn, _ in items:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for _, thread in items:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "msgsend-sandbox"
    sys_version = ""
    disable_nagle_algorithm = True
    # Buffer the response so headers and body leave in one segment (flushed after each request).
    wbufsize = 64 * 1024
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            if self.server.closing.is_set():
                # Accepted just before stop(): refuse to serve on a stopped provider.
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
            else:
                self.server.connections[self.connection] = threading.current_thread()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.connections.pop(self.connection, None)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    def _serve(self) -> None:
        provider = self.server.provider
        body = self._read_body()
        if body is None:
            return
        at, mono = time.time(), time.monotonic()
        with provider.lock:
            options, shape, health = provider.options, provider.shape, provider.health
            path, method = provider.path, provider.method
        authorized = self._authorized(provider)
        recipient: str | None = None
        message: str | None = None
        values: dict[str, str] = {}
        headers: dict[str, str] = {}
        error: str | None = None
        latency = 0.0
        target = self.path.split("?", 1)[0]
        is_health = health is not None and (self.command, target) == health
        if is_health:
            path, method = target, self.command

        if target != path and not (health is not None and target == health[1]):
            status, error = 404, f"not found: {self.path}"
        elif self.command != method:
            allowed = [method] + ([health[0]] if health is not None and target == health[1] else [])
            status, error = 405, f"method not allowed: use {' or '.join(sorted(set(allowed)))}"
            headers["Allow"] = ", ".join(sorted(set(allowed)))
        else:
            if not is_health:
                values, error = shape.parse(self.path, self.headers, body)
                recipient, message = _recipient(values), values.get("message")
            if not authorized:
                status, error = (
                    401,
                    f"unauthorized: wrong or missing {options.auth_type} credentials",
                )
                headers["WWW-Authenticate"] = _CHALLENGES[options.auth_type]
            elif options.down:
                status, error = 503, "provider is down"
            elif options.status is not None:
                status, error = options.status, f"forced status {options.status}"
                if status == 401:
                    headers["WWW-Authenticate"] = _CHALLENGES[options.auth_type]
            elif retry_after := provider.admit(mono):
                status, error = 429, "rate limit exceeded"
                headers["Retry-After"] = str(retry_after)
            elif error is not None:
                status = 400
            elif is_health:
                status = 200
            elif provider.name == "kakaotalk" and provider.sandbox._fails(recipient or ""):
                status, error = provider.sandbox._options.fail_status, "recipient failure"
            elif options.failure_rate and provider.sandbox._random() < options.failure_rate:
                status, error = options.failure_status, "injected failure"
            else:
                status, latency = 200, options.latency_ms / 1000.0

        if latency > 0 and self.server.closing.wait(latency):
            self.close_connection = True
            return
        payload: dict[str, Any]
        if is_health and status == 200:
            payload = {"status": "up"}
        elif status == 200:
            payload = {"status": "ok", "id": uuid.uuid4().hex}
        else:
            payload = {"error": error or f"status {status}"}
            if "Retry-After" in headers:
                payload["retry_after"] = int(headers["Retry-After"])
        record = ReceivedRequest(
            provider=provider.name,
            at=at,
            monotonic=mono,
            recipient=recipient,
            message=message,
            status=status,
            authorized=authorized,
            message_id=values.get("message_id"),
            error=error if status != 200 else None,
        )
        provider.sandbox._record(record)
        self._respond(status, payload, headers)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_BODY:
            self.close_connection = True
            self._respond(400 if length < 0 else 413, {"error": "bad Content-Length"}, {})
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            total += max(size, 0)
            if size < 0 or total > _MAX_BODY:
                self.close_connection = True
                self._respond(400, {"error": "bad chunked body"}, {})
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _authorized(self, provider: _Provider) -> bool:
        with provider.lock:
            auth_type, name, credentials = (
                provider.options.auth_type,
                provider.auth_header,
                provider.credentials,
            )
        header = self.headers.get(name, "")
        if auth_type == "header":
            return hmac.compare_digest(header.encode("latin-1", "replace"), credentials)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != auth_type:
            return False
        if auth_type == "bearer":
            return hmac.compare_digest(token.strip().encode("latin-1", "replace"), credentials)
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, credentials)

    def _respond(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


#: request headers: ``http.server``'s (case-insensitive) or a plain mapping in tests
_Headers = Mapping[str, str] | Message


class _Shape:
    """What a request in one format must look like, and how to read a message out of it."""

    def __init__(self, fmt: RequestFormat, channel: str) -> None:
        self.format = fmt
        self.channel = channel
        self.fields = {name: self._pattern(source) for name, source in fmt.fields.items()}
        self.query = {name: self._pattern(source) for name, source in fmt.query.items()}
        self.headers = {
            name: self._pattern(source)
            for name, source in fmt.headers.items()
            if "{" in source.replace("{{", "")
        }

    @staticmethod
    def _pattern(source: str) -> re.Pattern[str]:
        """Return a regex matching a rendered template, one named group per placeholder."""
        import string

        parts: list[str] = []
        seen: set[str] = set()
        for literal, name, _, _ in string.Formatter().parse(source):
            parts.append(re.escape(literal))
            if name is None:
                continue
            assert name in PLACEHOLDERS, name
            if name in seen:
                parts.append(f"(?P={name})")
            else:
                parts.append(f"(?P<{name}>{_VALUE_PATTERNS[name]})")
                seen.add(name)
        return re.compile("".join(parts), re.DOTALL)

    def parse(
        self, target: str, headers: _Headers, body: bytes
    ) -> tuple[dict[str, str], str | None]:
        """Return the placeholder values found, and why the request is refused (or None)."""
        values: dict[str, str] = {}
        query, problem = _pairs(urlsplit(target).query, "query")
        if problem is None:
            problem = self._match(query, self.query, "query parameter", values)
        if problem is None:
            problem = self._body(headers, body, values)
        if problem is None:
            for name, pattern in self.headers.items():
                value = headers.get(name)
                if value is None:
                    problem = f"missing header {name!r}"
                    break
                problem = self._value(pattern, value, f"header {name!r}", values)
                if problem:
                    break
        if problem is None:
            problem = self._consistent(values)
        return values, problem

    def _body(self, headers: _Headers, body: bytes, values: dict[str, str]) -> str | None:
        kind = self.format.body
        content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind == "none":
            return "the request must have no body" if body else None
        expected = "application/json" if kind == "json" else "application/x-www-form-urlencoded"
        if content_type != expected:
            return f"Content-Type must be {expected}, got {content_type or 'none'!r}"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return "body is not valid UTF-8"
        if kind == "json":
            try:
                data = json.loads(text) if text else None
            except ValueError:
                return "body is not valid JSON"
            if not isinstance(data, dict):
                return "body must be a JSON object"
            for name, value in data.items():
                if name in self.fields and not isinstance(value, str):
                    return f"field {name!r} must be a string"
            fields = {str(k): v for k, v in data.items()}
        else:
            pairs, problem = _pairs(text, "form body")
            if problem is not None:
                return problem
            fields = pairs
        return self._match(fields, self.fields, "field", values)

    def _match(
        self,
        got: Mapping[str, Any],
        expected: Mapping[str, re.Pattern[str]],
        what: str,
        values: dict[str, str],
    ) -> str | None:
        for name in got:
            if name not in expected:
                return f"unexpected {what} {name!r}"
        for name, pattern in expected.items():
            if name not in got:
                return f"missing {what} {name!r}"
            problem = self._value(pattern, got[name], f"{what} {name!r}", values)
            if problem:
                return problem
        return None

    @staticmethod
    def _value(
        pattern: re.Pattern[str], value: str, where: str, values: dict[str, str]
    ) -> str | None:
        match = pattern.fullmatch(value)
        if match is None:
            return f"{where} does not match {pattern.pattern!r}: got {value[:80]!r}"
        for name, found in match.groupdict().items():
            if name in values and values[name] != found:
                return f"{where}: {{{name}}} differs from elsewhere in the request"
            values[name] = found
        return None

    def _consistent(self, values: dict[str, str]) -> str | None:
        numbers = {_digits(values[k]).removeprefix("82") for k in _RECIPIENT_KEYS if k in values}
        numbers = {n if n.startswith("0") else "0" + n for n in numbers}
        if len(numbers) > 1:
            return "the recipient differs between fields"
        message = values.get("message")
        if message is not None and not message.strip():
            return "the message must not be empty"
        kind = values.get("kind")
        if kind is not None and message is not None:
            from .models import message_kind

            right = str(message_kind(message, self.channel))
            if kind != right:
                return f"{{kind}} is {kind!r} but this message is {right!r}"
        return None


def _pairs(text: str, what: str) -> tuple[dict[str, str], str | None]:
    """Parse ``a=1&b=2`` strictly: a repeated or malformed name is refused."""
    if not text:
        return {}, None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, f"{what} is not valid URL encoding ({exc})"
    result: dict[str, str] = {}
    for name, value in pairs:
        if name in result:
            return {}, f"{what}: {name!r} appears twice"
        result[name] = value
    return result, None


def _recipient(values: Mapping[str, str]) -> str | None:
    """Return the recipient as 010-1234-5678, from whichever placeholder carried it."""
    if "recipient" in values:
        return values["recipient"]
    digits = values.get("recipient_digits") or (
        "0" + values["recipient_e164"][3:] if "recipient_e164" in values else None
    )
    if digits is None:
        return None
    return f"{digits[:3]}-{digits[3:-4]}-{digits[-4:]}"


class Sandbox:
    """Run fake KakaoTalk and SMS providers on loopback, with fault injection and recording.

    Example::

        with Sandbox(SandboxOptions(seed=1)) as sandbox:
            requests.post(sandbox.url("sms") + "/sms", json=..., auth=("autoever", "5678"))
            assert sandbox.count("sms", status=200) == 1
    """

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        host: str = "127.0.0.1",
        kakaotalk_port: int = 0,
        sms_port: int = 0,
        on_request: Callable[[ReceivedRequest], None] | None = None,
        max_records: int | None = 100_000,
    ) -> None:
        self._options = options or SandboxOptions()
        self.host = host
        self.on_request = on_request
        self._rng = random.Random(self._options.seed)
        self._rng_lock = threading.Lock()
        self._records: deque[ReceivedRequest] = deque(maxlen=max_records)
        self._records_lock = threading.Lock()
        self._lifecycle = threading.Lock()
        self._config_lock = threading.Lock()
        self._providers = {
            "kakaotalk": _Provider("kakaotalk", self._options.kakaotalk, self),
            "sms": _Provider("sms", self._options.sms, self),
        }
        self._providers["kakaotalk"].port = kakaotalk_port
        self._providers["sms"].port = sms_port
        self._set_fail_matchers(self._options)

    # lifecycle ---------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind both ports (0 picks a free one) and start serving; return self."""
        with self._lifecycle:
            started: list[_Provider] = []
            try:
                for provider in self._providers.values():
                    if provider.server is None:
                        self._start(provider)
                        started.append(provider)
            except BaseException:
                for provider in started:
                    self._stop(provider)
                raise
        return self

    def close(self) -> None:
        """Stop both providers, drop open connections and join the threads; idempotent."""
        with self._lifecycle:
            for provider in self._providers.values():
                self._stop(provider)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stop(self, provider: str) -> None:
        """Stop one provider so connections to its port are refused; the port is kept."""
        with self._lifecycle:
            self._stop(self._get(provider))

    def start_provider(self, provider: str) -> None:
        """Start a provider stopped by ``stop`` again, on the same port."""
        with self._lifecycle:
            state = self._get(provider)
            if state.server is None:
                self._start(state)

    def running(self, provider: str) -> bool:
        """Return whether the provider is accepting connections."""
        return self._get(provider).server is not None

    def _start(self, provider: _Provider) -> None:
        try:
            server = _Server((self.host, provider.port), provider)
        except OSError as exc:
            hint = (
                "; stop whatever uses it or pick another port"
                if exc.errno == errno.EADDRINUSE
                else ""
            )
            raise SandboxPortError(
                exc.errno,
                f"cannot start the {provider.name} sandbox on {self.host}:{provider.port}: "
                f"{exc.strerror or exc}{hint}",
            ) from exc
        provider.port = server.server_port
        provider.window.clear()
        thread = threading.Thread(
            target=server.serve,
            name=f"msgsend-sandbox-{provider.name}",
            daemon=True,
        )
        provider.server, provider.thread = server, thread
        thread.start()

    def _stop(self, provider: _Provider) -> None:
        server, thread = provider.server, provider.thread
        if server is None:
            return
        provider.server = provider.thread = None
        server.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
        server.server_close()
        server.drop_connections()

    # addresses ---------------------------------------------------------------------------

    def url(self, provider: str) -> str:
        """Return the provider's base URL, e.g. ``http://127.0.0.1:8081``."""
        return f"http://{self.host}:{self._get(provider).port}"

    @property
    def kakaotalk_url(self) -> str:
        """Return the KakaoTalk base URL."""
        return self.url("kakaotalk")

    @property
    def sms_url(self) -> str:
        """Return the SMS base URL."""
        return self.url("sms")

    @property
    def ports(self) -> dict[str, int]:
        """Return the port of each provider (kept while a provider is stopped)."""
        return {name: p.port for name, p in self._providers.items()}

    # fault injection ---------------------------------------------------------------------

    def options(self, provider: str) -> ProviderOptions:
        """Return the provider's current options."""
        return self._get(provider).options

    def configure(self, provider: str, **changes: Any) -> ProviderOptions:
        """Change some of a provider's options at runtime; return the new options."""
        state = self._get(provider)
        with self._config_lock:
            new = dataclasses.replace(state.options, **changes)
            state.apply(new)
        return new

    def set_down(self, provider: str, down: bool = True) -> None:
        """Make the provider answer 503 to every authenticated request (or stop doing so)."""
        self.configure(provider, down=down)

    def set_status(self, provider: str, status: int | None) -> None:
        """Force the status of every authenticated request (None stops forcing)."""
        self.configure(provider, status=status)

    def set_latency(self, provider: str, latency_ms: float) -> None:
        """Delay successful answers by ``latency_ms`` milliseconds."""
        self.configure(provider, latency_ms=latency_ms)

    def set_failure_rate(self, provider: str, rate: float, status: int | None = None) -> None:
        """Fail this fraction of valid requests at random, answering ``status`` (default 503)."""
        changes: dict[str, Any] = {"failure_rate": rate}
        if status is not None:
            changes["failure_status"] = status
        self.configure(provider, **changes)

    def set_rate_limit(self, provider: str, limit: int | None, period: float | None = None) -> None:
        """Change the provider's rate limit (None disables it) and clear its window."""
        changes: dict[str, Any] = {"rate_limit": limit}
        if period is not None:
            changes["rate_period"] = period
        self.configure(provider, **changes)
        state = self._get(provider)
        with state.lock:
            state.window.clear()

    def set_kakaotalk_failures(
        self,
        recipients: Iterable[str] = (),
        suffixes: Iterable[str] = (),
        status: int | None = None,
    ) -> None:
        """Replace the KakaoTalk recipients and number suffixes that fail."""
        changes: dict[str, Any] = {
            "kakaotalk_fail_recipients": frozenset(recipients),
            "kakaotalk_fail_suffixes": tuple(suffixes),
        }
        if status is not None:
            changes["fail_status"] = status
        with self._config_lock:
            options = dataclasses.replace(self._options, **changes)
            self._set_fail_matchers(options)
            self._options = options

    def _set_fail_matchers(self, options: SandboxOptions) -> None:
        self._fail_digits = frozenset(_digits(r) for r in options.kakaotalk_fail_recipients)
        self._fail_suffixes = tuple(_digits(s) for s in options.kakaotalk_fail_suffixes if s)

    def _fails(self, recipient: str) -> bool:
        digits = _digits(recipient)
        return digits in self._fail_digits or digits.endswith(self._fail_suffixes)

    def _random(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    # recording ---------------------------------------------------------------------------

    def _record(self, record: ReceivedRequest) -> None:
        with self._records_lock:
            self._records.append(record)
        callback = self.on_request
        if callback is not None:
            try:
                callback(record)
            except Exception:
                logger.exception("sandbox on_request callback failed")

    def received(
        self, provider: str | None = None, status: int | None = None
    ) -> list[ReceivedRequest]:
        """Return the recorded requests, oldest first, optionally filtered."""
        if provider is not None:
            self._get(provider)
        with self._records_lock:
            records = list(self._records)
        return [
            r
            for r in records
            if (provider is None or r.provider == provider)
            and (status is None or r.status == status)
        ]

    def delivered(self, provider: str | None = None) -> list[ReceivedRequest]:
        """Return the recorded requests answered 200."""
        return self.received(provider, status=200)

    def count(self, provider: str | None = None, status: int | None = None) -> int:
        """Return how many requests were recorded, optionally filtered."""
        return len(self.received(provider, status))

    def reset(self) -> None:
        """Forget the recorded requests and empty the rate-limit windows."""
        with self._records_lock:
            self._records.clear()
        for state in self._providers.values():
            with state.lock:
                state.window.clear()

    def _get(self, provider: str) -> _Provider:
        try:
            return self._providers[provider]
        except KeyError:
            raise ValueError(
                f"unknown provider {provider!r}; use one of {', '.join(CHANNELS)}"
            ) from None

    def __repr__(self) -> str:
        ports = ", ".join(f"{n}={p}" for n, p in self.ports.items())
        return f"<Sandbox {self.host} {ports}>"


def start_for_config(
    config: Config, *, kakaotalk_fail_suffixes: Iterable[str] = ()
) -> tuple[Sandbox, Config]:
    """Start fake providers on free ports as ``config`` describes them; return the sandbox
    and a copy of ``config`` pointed at it (``--sandbox``).

    Each fake provider enforces the rate limit msgsend is configured for, as a real one
    would, and serves the configured request format, health probe and kind of credentials.
    The copy uses the ``memory`` limiter store: the embedded providers belong to this
    process alone, so no shared budget is spent on them. The caller closes the sandbox.
    """

    def options(name: str) -> ProviderOptions:
        provider = config.provider(name)
        rate = provider.rate_limit
        return ProviderOptions(
            rate_limit=rate.count,
            rate_period=rate.period,
            request_format=provider.request,
            health=provider.health,
            auth_type=provider.auth_type,
            header_name=provider.header_name or "X-API-Key",
        )

    def credentials(name: str) -> dict[str, Any]:
        return {
            "username": DEFAULT_USERNAMES[name],
            "password": DEFAULT_PASSWORDS[name],
            "token": DEFAULT_TOKENS[name] if config.provider(name).auth_type != "basic" else None,
        }

    sandbox = Sandbox(
        SandboxOptions(
            kakaotalk=options("kakaotalk"),
            sms=options("sms"),
            kakaotalk_fail_suffixes=tuple(kakaotalk_fail_suffixes),
        )
    ).start()
    pointed = dataclasses.replace(
        config,
        kakaotalk=dataclasses.replace(
            config.kakaotalk, base_url=sandbox.kakaotalk_url, **credentials("kakaotalk")
        ),
        sms=dataclasses.replace(config.sms, base_url=sandbox.sms_url, **credentials("sms")),
        limiter=LimiterConfig(strategy=config.limiter.strategy, store="memory"),
    )
    return sandbox, pointed
