"""The provider interface: one HTTP attempt, classified into the outcomes of SPEC §3.

A provider never retries, sleeps or throttles: those are the layers above it
(``client.Sender`` → retry → circuit breaker → rate limiter → ``Provider.send``).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter

from .. import __version__
from ..errors import (
    ConnectError,
    ConnectionLostError,
    HTTPStatusError,
    ProviderError,
    ReadTimeoutError,
    TransportError,
    error_for_status,
)
from ..models import HealthStatus, ProviderHealth

__all__ = ["Provider", "ProviderResponse", "map_requests_errors"]


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """A successful (2xx) answer."""

    status_code: int
    elapsed: float
    body: str = ""


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


def _is_connect_failure(exc: BaseException) -> bool:
    """Return True when the request certainly never reached the provider."""
    import urllib3.exceptions as u3

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


class Provider(ABC):
    """A message provider's HTTP API: one attempt per call, errors raised as ProviderError."""

    name: ClassVar[str]
    path: ClassVar[str]
    key_env_var: ClassVar[str]
    #: KakaoTalk counts characters, SMS counts EUC-KR bytes (see models.validate_message)
    max_body_len: ClassVar[int]

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        pool_size: int = 16,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + self.path
        self.timeout = (connect_timeout, read_timeout)
        self._owns_session = session is None
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Per request, not on the session: an injected session may serve both providers.
        self._auth = (username, password)
        self.session.headers.update(
            {
                "User-Agent": f"msgsend/{__version__}",
                "Content-Type": "application/json; charset=utf-8",
            }
        )
        # Per message, Session.post re-reads the proxy variables and CA bundle from the
        # environment and re-prepares a request (URL parsing, header and auth merging) that
        # differs only by its body: together half of requests' CPU per message (see
        # docs/benchmarks.md). With a session of its own, the provider does both once here;
        # _post copies the prepared request and sets the body. Same proxies (no_proxy
        # applied), CA bundle, headers and auth as Session.post would use.
        self._template: requests.PreparedRequest | None = None
        self._send_settings: dict[str, Any] = {}
        if self._owns_session:
            settings = self.session.merge_environment_settings(self.url, {}, None, None, None)
            self.session.proxies = settings["proxies"]
            self.session.verify = settings["verify"]
            self.session.trust_env = False
            self._send_settings = self.session.merge_environment_settings(
                self.url, {}, None, None, None
            )
            self._template = self.session.prepare_request(
                requests.Request("POST", self.url, auth=self._auth)
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @abstractmethod
    def build_body(self, recipient: str, text: str) -> dict[str, str]:
        """Return the JSON body of one message (SPEC §2)."""

    def _post(self, body: dict[str, Any]) -> requests.Response:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        with map_requests_errors(self.name, self.timeout):
            # No redirects: requests turns a POST answered 301/302/303 into a GET, and that
            # GET's 200 would count as delivered.
            if self._template is not None and not self.session.cookies:
                # (A cookie the provider set would have to be merged in: Session.post does.)
                request = self._template.copy()
                request.prepare_body(data, None)
                return self.session.send(
                    request, timeout=self.timeout, allow_redirects=False, **self._send_settings
                )
            return self.session.post(
                self.url, data=data, timeout=self.timeout, auth=self._auth, allow_redirects=False
            )

    def send(self, recipient: str, text: str) -> ProviderResponse:
        """Make one attempt to deliver ``text`` to ``recipient``; raise ProviderError on failure."""
        started = time.perf_counter()
        response = self._post(self.build_body(recipient, text))
        elapsed = time.perf_counter() - started
        body = response.text
        if 200 <= response.status_code < 300:
            return ProviderResponse(response.status_code, elapsed, body)
        raise error_for_status(
            self.name,
            response.status_code,
            body,
            response.headers.get("Retry-After"),
            response.headers.get("Location"),
        )

    def ping(self) -> ProviderHealth:
        """Probe health with an authenticated POST of ``{}``: nothing is delivered."""
        started = time.perf_counter()
        try:
            response = self._post({})
        except ProviderError as exc:
            latency = (time.perf_counter() - started) * 1000
            return ProviderHealth(self.name, HealthStatus.DOWN, round(latency, 1), str(exc))
        latency = round((time.perf_counter() - started) * 1000, 1)
        code = response.status_code
        if code in (400, 422) or 200 <= code < 300:
            return ProviderHealth(self.name, HealthStatus.UP, latency, f"HTTP {code}", code)
        error: HTTPStatusError = error_for_status(
            self.name, code, response.text, location=response.headers.get("Location")
        )
        if code in (401, 403):
            return ProviderHealth(self.name, HealthStatus.AUTH_FAILED, latency, str(error), code)
        if code == 429:
            return ProviderHealth(self.name, HealthStatus.THROTTLED, latency, str(error), code)
        if code == 404:
            detail = f"HTTP 404 at {self.url}: check [{self.name}] base-url"
            return ProviderHealth(self.name, HealthStatus.DOWN, latency, detail, code)
        return ProviderHealth(self.name, HealthStatus.DOWN, latency, str(error), code)

    def close(self) -> None:
        """Release pooled connections."""
        if self._owns_session:
            self.session.close()
