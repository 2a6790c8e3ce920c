"""One bounded HTTP exchange: a deadline over the whole of it, and a cap on the body read.

``requests`` bounds each socket operation (``timeout=(connect, read)``), not the exchange: a
provider that trickles one byte a second never lets a read wait ``read`` seconds, and keeps a
send busy for as long as it likes (even ``stream=True`` bounds only the body). Here a single
watchdog thread holds the deadline of every exchange in flight; when one passes, it shuts the
exchange's socket down, which wakes the blocked read at once (whatever phase it is in: status
line, headers or body), and the exchange fails as a read timeout. The per-operation timeouts
stay as well, each no longer than the whole. DNS resolution happens inside ``connect`` and is
bounded only by the resolver's own timeout: a socket that does not exist yet cannot be shut.

Connections are taken from ``DeadlineAdapter``'s pools, whose connection classes tell the
exchange which socket to shut. A connection is detached from its exchange before it goes back
to the pool, under the exchange's lock, so a deadline that passes late can never shut a
socket that another request took meanwhile.

The body is read up to ``MAX_BODY`` (64 KiB) and the rest left unread: the connection is
closed instead of drained, so a 200 MB answer costs 64 KiB.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..errors import ConnectError, ConnectionLostError, ReadTimeoutError, TransportError

__all__ = [
    "MAX_BODY",
    "Answer",
    "DeadlineAdapter",
    "Timeouts",
    "exchange",
    "map_requests_errors",
]

#: The most of a response body that is read; the rest is never transferred.
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``total`` bounds the whole exchange; ``connect`` and ``read`` each socket wait in it."""

    connect: float
    read: float
    total: float

    @classmethod
    def of(cls, connect: float, read: float, total: float | None = None) -> Timeouts:
        """Return the timeouts of a provider: ``total`` defaults to the larger of the two."""
        whole = max(connect, read) if total is None else total
        return cls(min(connect, whole), min(read, whole), whole)

    @property
    def per_operation(self) -> tuple[float, float]:
        """Return the ``(connect, read)`` pair that requests takes."""
        return (self.connect, self.read)


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's answer: status, headers and at most ``MAX_BODY`` bytes of its body."""

    status_code: int
    headers: CaseInsensitiveDict[str]
    content: bytes
    elapsed: float
    #: the body was longer than ``MAX_BODY`` and was cut there
    truncated: bool = False

    @property
    def text(self) -> str:
        """Return the body decoded with its declared charset (UTF-8 if none)."""
        encoding = get_encoding_from_headers(self.headers) or "utf-8"
        if encoding.lower() == "iso-8859-1" and "charset" not in self.headers.get(
            "Content-Type", ""
        ):
            encoding = "utf-8"  # requests' default for text/*; providers answer JSON in UTF-8
        try:
            return self.content.decode(encoding, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Return the body parsed as JSON; raise ValueError if it is not."""
        return json.loads(self.text)


# --------------------------------------------------------------------------- the deadline


def _shut(conn: HTTPConnection) -> None:
    """Shut the connection's socket down so that a read blocked on it returns at once."""
    sock = conn.sock
    if sock is None:
        return
    # socket.socket's, not SSLSocket's: that one also drops the TLS object under the
    # reading thread's feet; shutting the descriptor makes the TLS read see EOF instead.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Exchange:
    """The deadline of one exchange and the connection it runs on (if any yet)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self.connected = False
        self._done = False
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()

    def attach(self, conn: HTTPConnection) -> None:
        """Watch ``conn``: it carries this exchange from now on."""
        with self._lock:
            if self._done:
                return
            self._conn = conn
            conn._msgsend_exchange = self  # type: ignore[attr-defined]
            if conn.sock is not None:
                self.connected = True
            if self.expired:
                _shut(conn)

    def connection_made(self, conn: HTTPConnection) -> None:
        """Note that ``conn`` just connected; shut it at once if the deadline passed meanwhile."""
        with self._lock:
            if self._conn is conn:
                self.connected = True
                if self.expired:
                    _shut(conn)

    def detach(self, conn: HTTPConnection) -> None:
        """Stop watching ``conn`` (it goes back to the pool)."""
        with self._lock:
            if self._conn is conn:
                self._conn = None
            conn._msgsend_exchange = None  # type: ignore[attr-defined]

    def expire(self) -> None:
        """The deadline passed: shut the connection, unless the exchange is over."""
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._conn is not None:
                _shut(self._conn)

    @property
    def done(self) -> bool:
        """Return whether the exchange is over."""
        return self._done

    def finish(self) -> bool:
        """End the exchange (a later deadline does nothing); return whether it expired."""
        with self._lock:
            self._done = True
            if self._conn is not None:
                self._conn._msgsend_exchange = None  # type: ignore[attr-defined]
                self._conn = None
            return self.expired


#: how many exchanges between two sweeps of finished ones out of the watchdog's heap
_COMPACT_EVERY = 1024


class _Watchdog:
    """One thread that expires exchanges at their deadlines (a heap, checked lazily)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def watch(self, exchange: _Exchange) -> None:
        with self._cond:
            order = next(self._order)
            if order % _COMPACT_EVERY == 0 and self._heap:
                # Finished exchanges wait in the heap until their deadline; with long
                # timeouts and many requests that adds up, so drop them now and then.
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (exchange.deadline, order, exchange))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="msgsend-deadlines", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is exchange:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                deadline, _, exchange = self._heap[0]
                wait = deadline - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            exchange.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()


class _DeadlineConnectionMixin:
    """Tell the current exchange when the socket exists."""

    sock: Any

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        exchange: _Exchange | None = getattr(self, "_msgsend_exchange", None)
        if exchange is not None:
            exchange.connection_made(self)  # type: ignore[arg-type]


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, HTTPSConnection):
    pass


class _DeadlinePoolMixin:
    """Attach each connection to the calling thread's exchange; detach it before reuse."""

    def _validate_conn(self, conn: Any) -> None:
        exchange: _Exchange | None = getattr(_current, "exchange", None)
        if exchange is not None:
            exchange.attach(conn)
        super()._validate_conn(conn)  # type: ignore[misc]

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            exchange: _Exchange | None = getattr(conn, "_msgsend_exchange", None)
            if exchange is not None:
                exchange.detach(conn)
        super()._put_conn(conn)  # type: ignore[misc]


class _DeadlineHTTPPool(_DeadlinePoolMixin, HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(_DeadlinePoolMixin, HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections a deadline can interrupt (see ``exchange``).

    (A SOCKS proxy has pools of its own: through one, only the per-operation timeouts hold.)
    """

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


# --------------------------------------------------------------------------- errors


@contextmanager
def map_requests_errors(provider: str, timeout: tuple[float, float]) -> Iterator[None]:
    """Turn ``requests`` transport exceptions into msgsend's, keeping the cause."""
    connect_timeout, read_timeout = timeout
    try:
        yield
    except requests.exceptions.ConnectTimeout as exc:
        raise ConnectError(
            f"{provider}: no connection within {connect_timeout:g} s", provider=provider
        ) from exc
    except requests.exceptions.ReadTimeout as exc:
        raise ReadTimeoutError(
            f"{provider}: no answer within {read_timeout:g} s (the message may have been "
            "delivered)",
            provider=provider,
        ) from exc
    except (requests.exceptions.SSLError, requests.exceptions.ProxyError) as exc:
        # Both fail before the request reaches the provider: nothing was delivered.
        raise ConnectError(f"{provider}: cannot connect ({exc})", provider=provider) from exc
    except requests.exceptions.ConnectionError as exc:
        if _is_connect_failure(exc):
            raise ConnectError(
                f"{provider}: cannot connect ({_reason(exc)})", provider=provider
            ) from exc
        raise ConnectionLostError(
            f"{provider}: connection lost after sending ({_reason(exc)}; the message may "
            "have been delivered)",
            provider=provider,
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise TransportError(f"{provider}: request failed ({exc})", provider=provider) from exc
    except u3.ReadTimeoutError as exc:  # reading the body (stream=True) raises urllib3's own
        raise ReadTimeoutError(
            f"{provider}: no answer within {read_timeout:g} s (the message may have been "
            "delivered)",
            provider=provider,
        ) from exc
    except (u3.HTTPError, OSError) as exc:
        raise ConnectionLostError(
            f"{provider}: connection lost while reading the answer ({_reason(exc)}; the "
            "message may have been delivered)",
            provider=provider,
        ) from exc


def _is_connect_failure(exc: BaseException) -> bool:
    """Return True when the request certainly never reached the provider."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current, u3.NewConnectionError | u3.ConnectTimeoutError | ConnectionRefusedError
        ):
            return True
        if isinstance(current, u3.MaxRetryError) and current.reason is not None:
            current = current.reason
            continue
        nxt = (
            current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        )
        current = nxt or current.__cause__ or current.__context__
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Connection reset",
        "Connection aborted",
        "Remote end closed",
        "No route to host",
    ):
        if marker in text:
            return marker
    return text.split(" (Caused by ")[-1].rstrip(")")[:160] or type(exc).__name__


# --------------------------------------------------------------------------- the exchange


def _read_body(raw: Any, limit: int) -> tuple[bytes, bool]:
    """Read at most ``limit`` bytes of a streamed body; say whether there was more."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = raw.read(min(16 * 1024, limit + 1 - size), decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    return data[:limit], size > limit


def exchange(
    session: requests.Session,
    request: requests.PreparedRequest,
    *,
    provider: str,
    timeouts: Timeouts,
    settings: Mapping[str, Any] | None = None,
    max_body: int = MAX_BODY,
) -> Answer:
    """Send ``request`` and read its answer within ``timeouts.total``; raise TransportError.

    Never follows redirects (requests turns a POST answered 301/302/303 into a GET, and that
    GET's 200 would count as delivered). ``settings`` are ``Session.send``'s proxies, verify
    and cert.

        answer = exchange(session, prepared, provider="sms", timeouts=Timeouts.of(5, 5))
    """
    # (merge_environment_settings also returns "stream": ours is always True.)
    extra = {k: v for k, v in (settings or {}).items() if k in ("proxies", "verify", "cert")}
    started = time.monotonic()
    watch = _Exchange(started + timeouts.total)
    previous = getattr(_current, "exchange", None)
    _current.exchange = watch
    _WATCHDOG.watch(watch)
    try:
        try:
            with map_requests_errors(provider, timeouts.per_operation):
                response = session.send(
                    request,
                    timeout=timeouts.per_operation,
                    allow_redirects=False,
                    stream=True,
                    **extra,
                )
                try:
                    body, truncated = _read_body(response.raw, max_body)
                finally:
                    response.close()
        except Exception as exc:
            if watch.finish():
                raise _deadline_error(provider, timeouts.total, watch.connected) from exc
            raise
        if watch.finish():
            # Cut mid-answer: a shut socket can end the headers or the body early and look
            # like a complete answer. (An answer that was complete just as the deadline
            # passed is taken as a timeout too: it used the whole budget.)
            raise _deadline_error(provider, timeouts.total, watch.connected)
        return Answer(
            response.status_code,
            response.headers,
            body,
            time.monotonic() - started,
            truncated,
        )
    finally:
        watch.finish()
        _current.exchange = previous


def _deadline_error(provider: str, total: float, connected: bool) -> TransportError:
    if not connected:
        return ConnectError(f"{provider}: no connection within {total:g} s", provider=provider)
    return ReadTimeoutError(
        f"{provider}: no complete answer within {total:g} s (the message may have been delivered)",
        provider=provider,
    )
