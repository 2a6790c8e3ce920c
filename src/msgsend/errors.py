"""The exceptions msgsend raises, and what each one means for retry and fallback.

Hierarchy::

    MsgsendError
    ├── ConfigError                 bad configuration (exit 78)
    │   ├── CredentialsRefusedError every provider a run can use refused our credentials
    │   └── SystematicRefusalError  every request refused the same way: format or account wrong
    ├── InputError                  bad input data: recipient, message, CSV, template (exit 65)
    │   ├── InputFileError          input file missing or unreadable (exit 66)
    │   └── UsageError              the command asks for what cannot be done as given (exit 2)
    ├── ResultsWriteError           results file unwritable: a full or failing device (exit 74)
    ├── TryLaterError               nothing is wrong, but not now: run again later (exit 75)
    │   ├── OutageError             no provider could deliver for ``[bulk] max-outage``
    │   └── LimiterUnavailableError the limiter's store is down or locked: nothing goes unpaced
    ├── ProviderError               one provider request failed
    │   ├── TransportError          no HTTP response
    │   │   ├── ConnectError        refused / unreachable / connect timeout: not delivered
    │   │   ├── ReadTimeoutError    sent, no answer in time: may have been delivered
    │   │   └── ConnectionLostError the connection broke after sending: may have been delivered
    │   └── HTTPStatusError         the provider answered with a non-2xx status
    │       ├── RateLimitedError    429 (or a ``throttle-statuses`` status), carries ``retry_after``
    │       ├── ServerError         500, 502, 503, 504 (and any other 5xx)
    │       ├── AuthError           401 / 403: the provider is disabled for the process
    │       └── InvalidRequestError any other 4xx: the message itself is refused
    │           └── RefusedError    a 2xx that fails [PROVIDER.request] success checks
    ├── ProviderUnavailableError     nothing was sent: the provider cannot be tried now
    │   ├── CircuitOpenError        its circuit is open; carries ``available_in``
    │   └── ProviderPausedError     it asked for a pause longer than ``max-retry-after``
    ├── ProviderDisabledError       the provider refused our credentials earlier in this process
    ├── LimiterError                the rate limiter's store cannot be used as configured (exit 78)
    ├── LimiterTimeout              no rate-limit slot within the caller's timeout; nothing sent
    └── AllProvidersFailedError     every channel tried failed; carries ``errors``

Decisions are taken from the class attributes ``retryable`` (try the same provider again),
``fallback`` (try the next channel), ``outage`` (counts towards opening the circuit),
``uncertain`` (the provider may have delivered it anyway) and ``unavailable`` (nothing was
sent: the channel cannot be used for now, so a bulk row waits for it), never from message text.

The exit code of every error comes from one table, ``EXIT_CODES``, keyed by class (the most
specific class listed wins); ``most_severe`` applies the precedence of SPEC §10 when several
codes apply to one run: 130 > 78 > 75 > 74 > 70 > 1 > 0.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Mapping, Sequence
from typing import ClassVar

from .redact import printable, redact_text

__all__ = [
    "AllProvidersFailedError",
    "AuthError",
    "CircuitOpenError",
    "ConfigError",
    "ConnectError",
    "ConnectionLostError",
    "CredentialsRefusedError",
    "HTTPStatusError",
    "InputError",
    "InputFileError",
    "InvalidRequestError",
    "LimiterError",
    "LimiterTimeout",
    "LimiterUnavailableError",
    "MsgsendError",
    "OutageError",
    "ProviderDisabledError",
    "ProviderError",
    "ProviderPausedError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ReadTimeoutError",
    "RefusedError",
    "ResultsWriteError",
    "ServerError",
    "SystematicRefusalError",
    "TransportError",
    "TryLaterError",
    "UsageError",
    "error_for_status",
    "exit_code_for",
    "most_severe",
    "throttle_wait",
]

# SPEC §8 (sysexits.h names where there is one).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATAERR = 65
EXIT_NOINPUT = 66
EXIT_SOFTWARE = 70
EXIT_IOERR = 74
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130


class MsgsendError(Exception):
    """Base class of every error msgsend raises on purpose."""

    retryable: ClassVar[bool] = False
    fallback: ClassVar[bool] = False
    outage: ClassVar[bool] = False
    uncertain: ClassVar[bool] = False
    #: nothing was sent: the channel cannot be used for now (circuit open, provider paused,
    #: limiter store unreachable); ``available_in`` says when it may be, if known
    unavailable: ClassVar[bool] = False
    available_in: float | None = None
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


class UsageError(InputError):
    """The command asks for something that cannot be done as given (exit 2)."""

    kind = "usage"


class CredentialsRefusedError(ConfigError):
    """Every provider a run can use refused our credentials: nothing can be delivered."""

    kind = "credentials-refused"


class SystematicRefusalError(ConfigError):
    """Every request was refused the same way: the request format or the account is wrong."""

    kind = "systematic-refusal"


class ResultsWriteError(MsgsendError):
    """A write to the results or preview file failed (a full or failing device): exit 74."""

    kind = "results-write"


class TryLaterError(MsgsendError):
    """Nothing is wrong with the input or the configuration, but it cannot be done now."""

    kind = "try-later"


class OutageError(TryLaterError):
    """No provider could deliver for ``[bulk] max-outage``: the run stopped to be resumed."""

    kind = "outage"


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


class RefusedError(InvalidRequestError):
    """A 2xx answer that fails ``success-statuses`` or ``success-json``: the message was refused.

    Not retried and no fallback (the provider answered, and said no), counted as a refusal.
    """

    kind = "refused"

    @classmethod
    def from_answer(cls, provider: str, status_code: int, reason: str, body: str) -> RefusedError:
        """Return the error for a 2xx ``body`` that fails a success check for ``reason``."""
        excerpt = body.strip().replace("\n", " ")[:200]
        shown = f"; answer: {excerpt}" if excerpt else "; the answer was empty"
        return cls(
            f"{provider} answered HTTP {status_code} but did not accept the message: "
            f"{reason}{shown}",
            provider=provider,
            status_code=status_code,
            body=body,
        )


class ProviderUnavailableError(MsgsendError):
    """The provider cannot be tried now and nothing was sent; ``available_in`` says for how long.

    Not a delivery failure: the message may go by fallback, or (in ``bulk``) wait until a
    channel is available again. ``available_in`` is None when no time is known (a half-open
    trial in flight decides it).
    """

    fallback = True
    unavailable = True
    kind = "unavailable"

    def __init__(
        self, message: str, *, provider: str | None = None, available_in: float | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.available_in = available_in


class CircuitOpenError(ProviderUnavailableError):
    """The provider's circuit breaker is open: the request was not sent."""

    kind = "circuit-open"


class ProviderPausedError(ProviderUnavailableError):
    """The provider asked us (Retry-After) to stay away longer than ``max-retry-after``."""

    kind = "provider-paused"


class ProviderDisabledError(MsgsendError):
    """The provider refused our credentials earlier in this process and is not used again."""

    fallback = True
    kind = "provider-disabled"


class LimiterError(MsgsendError):
    """The limiter's store cannot be used; the message names the ``[limiter]`` setting."""

    kind = "limiter"


class LimiterTimeout(MsgsendError):
    """No rate-limit slot came within the caller's timeout; ``wait`` estimates the next one."""

    kind = "limiter-timeout"

    def __init__(self, message: str, *, provider: str | None = None, wait: float = 0.0) -> None:
        super().__init__(message, provider=provider)
        self.wait = wait


class LimiterUnavailableError(TryLaterError):
    """The limiter's store is down (Redis away) or locked too long: wait, never send unpaced.

    In ``bulk`` this is an outage: the row waits. ``holder`` names the process holding a
    sqlite lock when it is known.
    """

    unavailable = True
    kind = "limiter-unavailable"

    def __init__(
        self, message: str, *, provider: str | None = None, holder: str | None = None
    ) -> None:
        super().__init__(message, provider=provider)
        self.holder = holder


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


#: The exit code of each error class; the most specific class listed wins (SPEC §8).
EXIT_CODES: Mapping[type[BaseException], int] = {
    KeyboardInterrupt: EXIT_INTERRUPTED,
    ConfigError: EXIT_CONFIG,
    TryLaterError: EXIT_TEMPFAIL,
    ResultsWriteError: EXIT_IOERR,
    UsageError: EXIT_USAGE,
    InputFileError: EXIT_NOINPUT,
    InputError: EXIT_DATAERR,
    MsgsendError: EXIT_FAILED,
}

#: When several codes apply to one run, the first of these that applies wins (SPEC §10).
#: SPEC §10's precedence, with a run stopped by a bug (70: rows left unsent for --resume)
#: above rows that failed (1), which would hide it.
_PRECEDENCE = (EXIT_INTERRUPTED, EXIT_CONFIG, EXIT_TEMPFAIL, EXIT_IOERR, EXIT_SOFTWARE, EXIT_FAILED)


def exit_code_for(exc: BaseException | type[BaseException]) -> int:
    """Return the exit code of ``exc`` (or of its class): the nearest class of its MRO's."""
    for cls in (exc if isinstance(exc, type) else type(exc)).__mro__:
        code = EXIT_CODES.get(cls)
        if code is not None:
            return code
    return EXIT_SOFTWARE


def most_severe(*codes: int) -> int:
    """Return the code that wins among ``codes``: 130 > 78 > 75 > 74 > 70 > 1, any other, 0."""
    present = {code for code in codes if code != EXIT_OK}
    for code in _PRECEDENCE:
        if code in present:
            return code
    return min(present) if present else EXIT_OK


#: The answer headers that say how long a throttled client should wait, in the order tried.
THROTTLE_HEADERS = (
    "Retry-After",
    "RateLimit-Reset",
    "X-RateLimit-Reset",
    "X-RateLimit-Reset-After",
)
#: A number above this is an epoch time, not a delay (1e9 s is 2001-09-09; 1e12 means ms).
_EPOCH_SECONDS = 1e9
_EPOCH_MILLISECONDS = 1e12


def _header_wait(value: str, now: float) -> float | None:
    """Return the wait one throttle header asks for (seconds from ``now``), None if garbage.

    A number is a delay in seconds, or above 1e9 an epoch time (above 1e12 in milliseconds);
    anything else is tried as an HTTP date. Negative delays and past times mean "now" (0).
    """
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = None
    if number is not None:
        # "inf" or "nan" would make the retry wait forever (or crash time.sleep).
        if not math.isfinite(number):
            return None
        if number > _EPOCH_MILLISECONDS:
            number = number / 1000.0 - now
        elif number > _EPOCH_SECONDS:
            number -= now
        return max(0.0, number)
    # Here, not at the top: email.utils is 10 ms of the start-up of the commands that send
    # nothing (requests imports it anyway).
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return max(0.0, when.timestamp() - now)


def throttle_wait(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Return the longest wait a throttled answer's headers ask for, in seconds; None if none.

    Honours ``Retry-After`` (delay or HTTP date), ``RateLimit-Reset``, ``X-RateLimit-Reset``
    and ``X-RateLimit-Reset-After``; a value above 1e9 is an epoch time in seconds (above
    1e12 in milliseconds). ``headers`` must look names up case-insensitively (requests'
    ``CaseInsensitiveDict`` does); ``now`` is the wall clock (epoch seconds) to measure from.

        throttle_wait({"Retry-After": "7"})            # 7.0
        throttle_wait({"X-RateLimit-Reset": "1e10"})   # seconds until that epoch time
    """
    at = time.time() if now is None else now
    waits = []
    for name in THROTTLE_HEADERS:
        raw = headers.get(name)
        if raw is not None:
            wait = _header_wait(str(raw), at)
            if wait is not None:
                waits.append(wait)
    return max(waits) if waits else None


def error_for_status(
    provider: str,
    status_code: int,
    body: str = "",
    retry_after: str | None = None,
    location: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    throttle_statuses: Sequence[int] = (429,),
    now: float | None = None,
    auth_keys: str = "username/password",
) -> HTTPStatusError:
    """Return the exception of SPEC §3 for a non-2xx ``status_code``.

    A status in ``throttle_statuses`` (default 429) is rate limiting, whatever its number:
    its wait comes from ``headers`` (see ``throttle_wait``) or, without them, from
    ``retry_after`` (a Retry-After value).
    """
    # A provider's text is shown escaped (it must not move the cursor or forge a log line)
    # and without credentials it may echo back.
    snippet = redact_text(printable(" ".join(body.strip().splitlines()))[:200])
    detail = f": {snippet}" if snippet else ""
    if status_code in throttle_statuses:
        if headers is None:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
        what = (
            "429 Too Many Requests"
            if status_code == 429
            else f"HTTP {status_code} (throttling: in [{provider}] throttle-statuses)"
        )
        return RateLimitedError(
            f"{provider} answered {what}{detail}",
            provider=provider,
            status_code=status_code,
            body=body,
            retry_after=throttle_wait(headers, now=now),
        )
    if status_code in (401, 403):
        return AuthError(
            f"{provider} refused the credentials (HTTP {status_code}); "
            f"check [{provider}.auth] {auth_keys} or "
            f"MSGSEND_{provider.upper()}_AUTH_{'TOKEN' if 'token' in auth_keys else 'PASSWORD'}",
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
