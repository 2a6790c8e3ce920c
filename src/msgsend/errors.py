"""The exceptions msgsend raises, and what each one means for retry and fallback.

Hierarchy::

    MsgsendError
    ├── ConfigError                 bad configuration (exit 78)
    ├── InputError                  bad input data: recipient, message, CSV, template (exit 65)
    │   └── InputFileError          input file missing or unreadable (exit 66)
    ├── ProviderError               one provider request failed
    │   ├── TransportError          no HTTP response
    │   │   ├── ConnectError        refused / unreachable / connect timeout: not delivered
    │   │   ├── ReadTimeoutError    sent, no answer in time: may have been delivered
    │   │   └── ConnectionLostError the connection broke after sending: may have been delivered
    │   └── HTTPStatusError         the provider answered with a non-2xx status
    │       ├── RateLimitedError    429, carries ``retry_after``
    │       ├── ServerError         500, 502, 503, 504 (and any other 5xx)
    │       ├── AuthError           401 / 403: the provider is disabled for the process
    │       └── InvalidRequestError any other 4xx: the message itself is refused
    ├── CircuitOpenError            the provider's circuit is open: failed fast, nothing sent
    ├── ProviderDisabledError       the provider refused our credentials earlier in this process
    └── AllProvidersFailedError     every channel tried failed; carries ``errors``

Decisions are taken from the class attributes ``retryable`` (try the same provider again),
``fallback`` (try the next channel), ``outage`` (counts towards opening the circuit) and
``uncertain`` (the provider may have delivered it anyway), never from message text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

__all__ = [
    "AllProvidersFailedError",
    "AuthError",
    "CircuitOpenError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "HTTPStatusError",
    "InputError",
    "InputFileError",
    "InvalidRequestError",
    "MsgsendError",
    "ProviderDisabledError",
    "ProviderError",
    "RateLimitedError",
    "ReadTimeoutError",
    "ServerError",
    "TransportError",
    "error_for_status",
]


class MsgsendError(Exception):
    """Base class of every error msgsend raises on purpose."""

    retryable: ClassVar[bool] = False
    fallback: ClassVar[bool] = False
    outage: ClassVar[bool] = False
    uncertain: ClassVar[bool] = False
    #: short machine-readable kind, used in results files, JSON and metrics labels
    kind: ClassVar[str] = "error"

    def __init__(
        self, message: str, *, provider: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class ConfigError(MsgsendError):
    """The configuration is wrong; the message names the file, the key and the expectation."""

    kind = "config"

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.key = key


class InputError(MsgsendError):
    """Input data is unusable: a recipient, a message, a CSV file or a template."""

    kind = "invalid"


class InputFileError(InputError):
    """An input file does not exist or cannot be read."""

    kind = "unreadable"


class ProviderError(MsgsendError):
    """One request to a provider failed."""

    kind = "provider"


class TransportError(ProviderError):
    """No HTTP response was received."""

    retryable = True
    fallback = True
    outage = True
    kind = "transport"


class ConnectError(TransportError):
    """The connection could not be made (refused, unreachable, connect timeout)."""

    kind = "connect"


class ReadTimeoutError(TransportError):
    """The request was sent but no answer came in time: it may have been delivered."""

    kind = "read-timeout"
    uncertain = True


class ConnectionLostError(TransportError):
    """The connection broke after the request was sent: it may have been delivered."""

    kind = "connection-lost"
    uncertain = True


class HTTPStatusError(ProviderError):
    """The provider answered with a non-2xx status."""

    kind = "http"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        body: str = "",
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.body = body


class RateLimitedError(HTTPStatusError):
    """429: the provider throttled us; ``retry_after`` is its Retry-After in seconds."""

    retryable = True
    fallback = True
    kind = "rate-limited"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = 429,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code, body=body)
        self.retry_after = retry_after


class ServerError(HTTPStatusError):
    """5xx: the provider is failing."""

    retryable = True
    fallback = True
    outage = True
    kind = "server-error"


class AuthError(HTTPStatusError):
    """401/403: our credentials were refused; fix the provider's auth settings."""

    fallback = True
    kind = "auth-failed"


class InvalidRequestError(HTTPStatusError):
    """Another 4xx: the provider refused this message; retrying cannot help."""

    kind = "invalid-request"


class CircuitOpenError(MsgsendError):
    """The provider's circuit breaker is open: the request was not sent."""

    fallback = True
    kind = "circuit-open"


class ProviderDisabledError(MsgsendError):
    """The provider refused our credentials earlier in this process and is not used again."""

    fallback = True
    kind = "provider-disabled"


class AllProvidersFailedError(MsgsendError):
    """Every channel tried failed; ``errors`` holds the last error of each, in order."""

    kind = "all-failed"

    def __init__(self, errors: Sequence[MsgsendError]) -> None:
        self.errors = list(errors)
        text = "; ".join(
            str(e) if e.provider and str(e).startswith(e.provider) else f"{e.provider or '?'}: {e}"
            for e in self.errors
        )
        last = self.errors[-1] if self.errors else None
        super().__init__(
            f"every provider failed ({text})" if text else "no provider was available",
            provider=last.provider if last else None,
            status_code=last.status_code if last else None,
        )


def _parse_retry_after(value: str | None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date; None if absent or garbage."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "inf" or "nan" would make the retry wait forever (or crash time.sleep).
        return max(0.0, seconds) if math.isfinite(seconds) else None
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as _dt

    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, (when - _dt.datetime.now(_dt.UTC)).total_seconds())


def error_for_status(
    provider: str,
    status_code: int,
    body: str = "",
    retry_after: str | None = None,
    location: str | None = None,
) -> HTTPStatusError:
    """Return the exception of SPEC §3 for a non-2xx ``status_code``."""
    snippet = body.strip().replace("\n", " ")[:200]
    detail = f": {snippet}" if snippet else ""
    if status_code == 429:
        return RateLimitedError(
            f"{provider} answered 429 Too Many Requests{detail}",
            provider=provider,
            body=body,
            retry_after=_parse_retry_after(retry_after),
        )
    if status_code in (401, 403):
        return AuthError(
            f"{provider} refused the credentials (HTTP {status_code}); "
            f"check [{provider}.auth] username/password or "
            f"MSGSEND_{provider.upper()}_AUTH_PASSWORD",
            provider=provider,
            status_code=status_code,
            body=body,
        )
    if 300 <= status_code < 400:
        return InvalidRequestError(
            f"{provider} answered a redirect (HTTP {status_code}) to "
            f"{location or 'nowhere'}: check [{provider}] base-url",
            provider=provider,
            status_code=status_code,
            body=body,
        )
    if status_code >= 500:
        return ServerError(
            f"{provider} answered HTTP {status_code}{detail}",
            provider=provider,
            status_code=status_code,
            body=body,
        )
    return InvalidRequestError(
        f"{provider} rejected the message (HTTP {status_code}){detail}",
        provider=provider,
        status_code=status_code,
        body=body,
    )
