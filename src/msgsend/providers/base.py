"""The provider interface: one HTTP attempt, classified into the outcomes of SPEC §3.

A provider never retries, sleeps or throttles: those are the layers above it
(``client.Sender`` → retry → circuit breaker → rate limiter → ``Provider.send``).
"""

from __future__ import annotations

import time
from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from .. import __version__
from ..errors import (
    HTTPStatusError,
    ProviderError,
    RateLimitedError,
    RefusedError,
    error_for_status,
)
from ..formats import (
    CONTENT_TYPES,
    AuthSpec,
    BuiltRequest,
    HealthFormat,
    RequestBuilder,
    RequestFormat,
    health_body,
    preset,
    refusal,
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
    """A message provider's HTTP API: one attempt per call, errors raised as ProviderError.

    What a request looks like is data (``formats.RequestFormat``, compiled once into a
    ``RequestBuilder``); this class prepares what the builder built, hands it to the transport
    (``transport.exchange``) and classifies the answer.
    """

    name: ClassVar[str]
    key_env_var: ClassVar[str]
    #: KakaoTalk counts characters, SMS counts EUC-KR bytes (see models.validate_message)
    max_body_len: ClassVar[int]

    def __init__(
        self,
        base_url: str,
        username: str = "",
        password: str = "",
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        pool_size: int = 16,
        session: requests.Session | None = None,
        throttle_statuses: Sequence[int] = (429,),
        request_format: RequestFormat | None = None,
        health: HealthFormat | None = None,
        auth: AuthSpec | None = None,
    ) -> None:
        self.format = request_format or preset("default", self.name)
        self.builder = RequestBuilder(self.format, self.name)
        #: whether the format sends ``{message_id}`` (the sender makes ids only then)
        self.uses_message_id = "message_id" in self.builder.uses
        self.health = health or HealthFormat()
        self.auth = auth or AuthSpec("basic", username, password)
        self.base_url = base_url.rstrip("/")
        #: answers with these statuses are rate limiting (RateLimitedError), whatever the number
        self.throttle_statuses = tuple(throttle_statuses)
        self.url = self.base_url + self.format.path
        self.health_url = self.base_url + (self.health.path or self.format.path)
        self.timeout = (connect_timeout, read_timeout)
        #: ``timeout`` bounds the whole exchange: connect, send, status line, headers, body
        self.timeouts = Timeouts.of(connect_timeout, read_timeout)
        self._owns_session = session is None
        self.session = session or requests.Session()
        adapter = DeadlineAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # Per request, not on the session: an injected session may serve both providers.
        self._auth = self.auth.basic
        self._headers = {**self.builder.static_headers, **self.auth.headers()}
        self._health_headers = dict(self.auth.headers())
        if self.health.body in CONTENT_TYPES:
            self._health_headers["Content-Type"] = CONTENT_TYPES[self.health.body]
        self.session.headers["User-Agent"] = f"msgsend/{__version__}"
        # Per message, Session.post re-reads the proxy variables and CA bundle from the
        # environment and re-prepares a request (URL parsing, header and auth merging) that
        # differs only by its query, headers and body: together half of requests' CPU per
        # message (see docs/benchmarks.md). With a session of its own, the provider does both
        # once here; _prepare copies the prepared request and sets what the builder built.
        # Same proxies (no_proxy applied), CA bundle, headers and auth as Session.post uses.
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
                requests.Request(self.format.method, self.url, self._headers, auth=self._auth)
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # ------------------------------------------------------------------ building

    def build(self, recipient: str, text: str, message_id: str | None = None) -> BuiltRequest:
        """Return the request parts of one message in this provider's format."""
        return self.builder.build(recipient, text, message_id)

    def _prepare(self, built: BuiltRequest) -> tuple[requests.PreparedRequest, dict[str, Any]]:
        """Return the prepared request of one message and its send settings."""
        if self._template is not None and not self.session.cookies:
            # (A cookie the provider set would have to be merged in: Session.post does.)
            request = self._template.copy()
            if built.query:
                request.url = f"{request.url}{built.query}"
            if built.headers:
                request.headers.update(built.headers)
            request.prepare_body(built.body, None)
            return request, self._send_settings
        headers = {**self._headers, **(built.headers or {})}
        url = self.url + built.query
        request = self.session.prepare_request(
            requests.Request(
                self.format.method, url, headers, data=built.body or None, auth=self._auth
            )
        )
        return request, self.session.merge_environment_settings(url, {}, None, None, None)

    def _prepare_probe(self) -> tuple[requests.PreparedRequest, dict[str, Any]]:
        """Return the prepared health probe of ``[PROVIDER.health]`` and its send settings."""
        body = health_body(self.health.body)
        request = self.session.prepare_request(
            requests.Request(
                self.health.method,
                self.health_url,
                self._health_headers,
                data=body or None,
                auth=self._auth,
            )
        )
        settings = self.session.merge_environment_settings(self.health_url, {}, None, None, None)
        return request, settings

    # ------------------------------------------------------------------ sending

    def _exchange(self, prepared: tuple[requests.PreparedRequest, dict[str, Any]]) -> Answer:
        request, settings = prepared
        return exchange(
            self.session, request, provider=self.name, timeouts=self.timeouts, settings=settings
        )

    def send(self, recipient: str, text: str, *, message_id: str | None = None) -> ProviderResponse:
        """Make one attempt to deliver ``text`` to ``recipient``; raise ProviderError on failure.

        ``message_id`` fills ``{message_id}``: pass the same one on every attempt of a message.
        """
        prepared = self._prepare(self.builder.build(recipient, text, message_id))
        started = time.perf_counter()
        response = self._exchange(prepared)
        elapsed = time.perf_counter() - started
        body = response.text
        if 200 <= response.status_code < 300:
            self._check_success(response.status_code, body)
            return ProviderResponse(response.status_code, elapsed, body)
        raise error_for_status(
            self.name,
            response.status_code,
            body,
            location=response.headers.get("Location"),
            headers=response.headers,
            throttle_statuses=self.throttle_statuses,
            auth_keys=self.auth.describe(),
        )

    def _check_success(self, status: int, body: str) -> None:
        """Raise RefusedError when a 2xx fails ``success-statuses`` or ``success-json``."""
        if not self.format.success_statuses and not self.format.success_json:
            return
        reason = refusal(self.format, status, body)
        if reason is not None:
            raise RefusedError.from_answer(self.name, status, reason, body)

    def ping(self) -> ProviderHealth:
        """Probe health as ``[PROVIDER.health]`` says (default: POST ``{}``, nothing delivered)."""
        started = time.perf_counter()
        try:
            response = self._exchange(self._prepare_probe())
        except ProviderError as exc:
            latency = (time.perf_counter() - started) * 1000
            return ProviderHealth(self.name, HealthStatus.DOWN, round(latency, 1), str(exc))
        latency = round((time.perf_counter() - started) * 1000, 1)
        code = response.status_code
        if self.health.is_healthy(code):
            return ProviderHealth(self.name, HealthStatus.UP, latency, f"HTTP {code}", code)
        error: HTTPStatusError = error_for_status(
            self.name,
            code,
            response.text,
            location=response.headers.get("Location"),
            headers=response.headers,
            throttle_statuses=self.throttle_statuses,
            auth_keys=self.auth.describe(),
        )
        if code in (401, 403):
            return ProviderHealth(self.name, HealthStatus.AUTH_FAILED, latency, str(error), code)
        if isinstance(error, RateLimitedError):
            return ProviderHealth(self.name, HealthStatus.THROTTLED, latency, str(error), code)
        if code == 404:
            where = f"[{self.name}] base-url"
            if self.health.path is not None:
                where = f"[{self.name}.health] path or {where}"
            detail = f"HTTP 404 at {self.health_url}: check {where}"
            return ProviderHealth(self.name, HealthStatus.DOWN, latency, detail, code)
        healthy = self.health.describe_healthy()
        # A 2xx that is not a healthy answer is no refusal of a message: say only what came.
        detail = (
            f"HTTP {code} (healthy: {healthy})" if code < 300 else f"{error} (healthy: {healthy})"
        )
        return ProviderHealth(self.name, HealthStatus.DOWN, latency, detail, code)

    def close(self) -> None:
        """Release pooled connections."""
        if self._owns_session:
            self.session.close()
