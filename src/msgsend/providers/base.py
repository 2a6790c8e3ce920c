"""The provider interface: one HTTP attempt, classified into the outcomes of SPEC §3.

A provider never retries, sleeps or throttles: those are the layers above it
(``client.Sender`` → retry → circuit breaker → rate limiter → ``Provider.send``).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from .. import __version__
from ..errors import (
    HTTPStatusError,
    ProviderError,
    RateLimitedError,
    error_for_status,
)
from ..models import HealthStatus, ProviderHealth
from .transport import Answer, DeadlineAdapter, Timeouts, exchange, map_requests_errors

__all__ = ["Provider", "ProviderResponse", "map_requests_errors"]


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """A successful (2xx) answer."""

    status_code: int
    elapsed: float
    body: str = ""


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
        throttle_statuses: Sequence[int] = (429,),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: answers with these statuses are rate limiting (RateLimitedError), whatever the number
        self.throttle_statuses = tuple(throttle_statuses)
        self.url = self.base_url + self.path
        self.timeout = (connect_timeout, read_timeout)
        #: ``timeout`` bounds the whole exchange: connect, send, status line, headers, body
        self.timeouts = Timeouts.of(connect_timeout, read_timeout)
        self._owns_session = session is None
        self.session = session or requests.Session()
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
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

    def _post(self, body: dict[str, Any]) -> Answer:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if self._template is not None and not self.session.cookies:
            # (A cookie the provider set would have to be merged in: Session.post does.)
            request = self._template.copy()
            request.prepare_body(data, None)
            settings = self._send_settings
        else:
            request = self.session.prepare_request(
                requests.Request("POST", self.url, data=data, auth=self._auth)
            )
            settings = self.session.merge_environment_settings(self.url, {}, None, None, None)
        return exchange(
            self.session, request, provider=self.name, timeouts=self.timeouts, settings=settings
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
            location=response.headers.get("Location"),
            headers=response.headers,
            throttle_statuses=self.throttle_statuses,
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
            self.name,
            code,
            response.text,
            location=response.headers.get("Location"),
            headers=response.headers,
            throttle_statuses=self.throttle_statuses,
        )
        if code in (401, 403):
            return ProviderHealth(self.name, HealthStatus.AUTH_FAILED, latency, str(error), code)
        if isinstance(error, RateLimitedError):
            return ProviderHealth(self.name, HealthStatus.THROTTLED, latency, str(error), code)
        if code == 404:
            detail = f"HTTP 404 at {self.url}: check [{self.name}] base-url"
            return ProviderHealth(self.name, HealthStatus.DOWN, latency, detail, code)
        return ProviderHealth(self.name, HealthStatus.DOWN, latency, str(error), code)

    def close(self) -> None:
        """Release pooled connections."""
        if self._owns_session:
            self.session.close()
