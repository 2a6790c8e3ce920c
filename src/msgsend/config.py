"""Configuration: TOML discovery, defaults, ``MSGSEND_*`` overrides and strict validation.

Resolution order for every key: command-line flag > ``MSGSEND_*`` environment variable >
TOML file > built-in default (the seed's values). The file is the first that exists of
``--config PATH``, ``$MSGSEND_CONFIG``, ``./msgsend.toml`` and
``$XDG_CONFIG_HOME/msgsend/config.toml`` (``~/.config/msgsend/config.toml``).

The schema is data: each key of ``SCHEMA`` names its type (scalars, a table of strings or a list
of whole numbers / strings), its bounds, its example and whether it holds a secret. A value
outside its bounds is refused at load time naming the file, the key and the bound; an
environment override of a list or a table is JSON; a deprecated key still loads, with a
warning; a ``MSGSEND_*`` variable that maps to no key is refused with a did-you-mean.

A ``[provider.rate-limit]`` table is taken whole from the highest-priority layer that sets any
of its keys, so an environment ``..._REQUESTS_PER_SECOND`` replaces the file's
``requests-per-minute`` instead of clashing with it.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import redact
from .errors import ConfigError
from .formats import (
    AUTH_TYPES,
    BODY_KINDS,
    HEALTH_METHODS,
    METHODS,
    PLACEHOLDERS,
    AuthSpec,
    FormatError,
    HealthFormat,
    RequestFormat,
    check_auth,
    check_health_format,
    check_request_format,
    preset,
)
from .models import CHANNELS

__all__ = [
    "DEFAULTS",
    "RESERVED_ENV_VARS",
    "SCHEMA",
    "AlertsConfig",
    "BulkConfig",
    "CircuitBreakerConfig",
    "Config",
    "LimiterConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "RetryConfig",
    "discover_config_path",
    "effective_items",
    "env_var_name",
    "load_config",
    "parse_quiet_hours",
    "render_effective_config",
    "render_sample_config",
]

#: ``MSGSEND_*`` variables that are not configuration keys and stay valid.
RESERVED_ENV_VARS = ("MSGSEND_CONFIG", "MSGSEND_RAISE_ERRORS")

#: The kinds of value a key can hold. Scalars: str, url, int, float, bool, choice.
#: ``table``: a table of strings (``fields = {phone = "{recipient}"}``);
#: ``ints`` / ``strs``: a list of whole numbers / of strings (``throttle-statuses = [429]``).
#: ``scalars``: a table of strings, numbers or booleans (``success-json = {result = "OK"}``).
KINDS = ("str", "url", "int", "float", "bool", "choice", "table", "scalars", "ints", "strs")
_TABLE_KINDS = ("table", "scalars")

# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class _Key:
    """One configuration key: its type, bounds, example and the comment ``config init`` writes.

    ``minimum``/``maximum`` bound a number (or each item of an ``ints`` list); ``above`` makes
    the minimum exclusive. ``redact`` says how ``config show`` hides the value: ``password``
    (entirely), ``url`` (a password in the URL), ``endpoint`` (all but scheme and host: webhook
    and Apprise URLs carry tokens in their paths) or ``headers`` (credential header values).
    ``deprecated`` is the advice given when a retired key is still set.
    """

    kind: str
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    unit: str = ""
    choices: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ("http", "https")
    check: Callable[[Any], str | None] | None = None
    example: Any = None
    redact: str = ""
    deprecated: str = ""
    min_items: int = 0
    hint: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}")


#: Upper bounds shared by several keys (documented in the README's configuration section).
MAX_TIMEOUT = 300.0  # seconds: one exchange with a provider
MAX_DELAY_MS = 3_600_000  # milliseconds: one retry wait (1 h)
MAX_WAIT = 3600.0  # seconds: a reset timeout, an honoured Retry-After
MAX_OUTAGE = 86_400.0  # seconds: how long a bulk run waits for a provider (1 day)
MAX_RATE_PER_SECOND = 1_000_000
MAX_CONCURRENCY = 256


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bounds_text(spec: _Key) -> str:
    """Return what a number of ``spec`` must be: ``a number from 1 to 10``."""
    what = "a whole number" if spec.kind in ("int", "ints") else "a number"
    low, high = spec.minimum, spec.maximum
    if low is not None and high is not None:
        if spec.above:
            text = f"{what} greater than {_number(low)} and at most {_number(high)}"
        else:
            text = f"{what} from {_number(low)} to {_number(high)}"
    elif low is not None:
        text = (
            f"{what} greater than {_number(low)}"
            if spec.above
            else f"{what} of {_number(low)} or more"
        )
    elif high is not None:
        text = f"{what} of at most {_number(high)}"
    else:
        text = what
    return f"{text} ({spec.unit})" if spec.unit else text


def _in_bounds(spec: _Key, value: float) -> bool:
    if spec.minimum is not None and (value <= spec.minimum if spec.above else value < spec.minimum):
        return False
    return spec.maximum is None or value <= spec.maximum


_QUIET_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


def parse_quiet_hours(text: str) -> tuple[time, time]:
    """Return the start and end of ``"21:00-08:00"``; ValueError when it is not that shape.

    The window may cross midnight (start later than end); start and end must differ.
    """
    match = _QUIET_HOURS.match(text.strip())
    if not match:
        raise ValueError('expected "HH:MM-HH:MM" (24-hour clock), e.g. "21:00-08:00"')
    hour1, minute1, hour2, minute2 = (int(part) for part in match.groups())
    start, end = time(hour1, minute1), time(hour2, minute2)
    if start == end:
        raise ValueError("start and end of quiet hours must differ")
    return start, end


def _check_quiet_hours(value: Any) -> str | None:
    try:
        parse_quiet_hours(value)
    except ValueError as exc:
        return str(exc).removeprefix("expected ")
    return None


def _check_timezone(value: Any) -> str | None:
    import zoneinfo  # only a configured time zone pays for it (4 ms of every start-up)

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return "an IANA time zone name such as 'Asia/Seoul' or 'UTC'"
    return None


def _check_apprise_url(value: Any) -> str | None:
    scheme, sep, rest = value.partition("://")
    if not sep or not rest or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return (
            "an Apprise URL such as 'tgram://bottoken/ChatID' or 'json://hooks.example.com/alerts'"
        )
    return None


def _timeout(doc: str, example: float | None = None) -> _Key:
    return _Key(
        "float", doc, minimum=0, above=True, maximum=MAX_TIMEOUT, unit="seconds", example=example
    )


def _request_schema() -> dict[str, _Key]:
    """Return the keys of ``[PROVIDER.request]`` and ``[PROVIDER.health]`` (see formats.py)."""
    kinds = "json | form | none"
    return {
        "request.method": _Key("choice", "HTTP method of a message", choices=METHODS),
        "request.path": _Key("str", "path of a message, after base-url"),
        "request.body": _Key("choice", kinds, choices=BODY_KINDS),
        "request.fields": _Key("table", "body fields; placeholders: " + _PLACEHOLDER_DOC),
        "request.query": _Key("table", "query parameters (placeholders as in fields)"),
        "request.headers": _Key(
            "table", "extra headers ({message_id} e.g.); auth stays [auth]'s", redact="headers"
        ),
        "request.success-statuses": _Key(
            "ints", "statuses that mean delivered (empty: any 2xx)", minimum=200, maximum=299
        ),
        "request.success-json": _Key(
            "scalars", "top-level keys the JSON answer must hold (empty: none)"
        ),
        "health.method": _Key("choice", "HTTP method of ping's probe", choices=HEALTH_METHODS),
        "health.path": _Key(
            "str", "path of ping's probe (default: request.path)", example="/health"
        ),
        "health.body": _Key("choice", f"{kinds} ({{}} / empty form / nothing)", choices=BODY_KINDS),
        "health.healthy-statuses": _Key(
            "ints",
            "statuses that mean up (empty: 2xx, 400 or 422)",
            minimum=100,
            maximum=599,
            unit="HTTP status",
        ),
    }


_PLACEHOLDER_DOC = ", ".join("{" + p + "}" for p in PLACEHOLDERS)


def _provider_schema(name: str) -> dict[str, _Key]:
    return {
        "base-url": _Key("url", f"where the {name} API listens", redact="url"),
        "timeout": _timeout("seconds: the whole exchange (connect to full answer)"),
        "connect-timeout": _timeout("seconds to connect (default: timeout)", 5.0),
        "read-timeout": _timeout("seconds to wait for the answer (default: timeout)", 5.0),
        "throttle-statuses": _Key(
            "ints",
            "statuses meaning 'slow down' (Retry-After honoured)",
            minimum=400,
            maximum=599,
            unit="HTTP status",
            min_items=1,
        ),
        "auth.type": _Key(
            "choice",
            "basic (username/password) | bearer (token) | header (header-name, token)",
            choices=AUTH_TYPES,
        ),
        "auth.username": _Key("str", "HTTP Basic user"),
        "auth.password": _Key(
            "str",
            f"HTTP Basic password (or MSGSEND_{name.upper()}_AUTH_PASSWORD)",
            redact="password",
        ),
        "auth.token": _Key(
            "str",
            f"API token of bearer/header auth (or MSGSEND_{name.upper()}_AUTH_TOKEN)",
            redact="password",
            example="...",
        ),
        "auth.header-name": _Key(
            "str", "the header that carries the token (type = header)", example="X-API-Key"
        ),
        **_request_schema(),
        "rate-limit.requests-per-minute": _Key(
            "int",
            "client-side limit (or requests-per-second)",
            minimum=1,
            maximum=MAX_RATE_PER_SECOND * 60,
        ),
        "rate-limit.requests-per-second": _Key(
            "int",
            "client-side limit per second",
            minimum=1,
            maximum=MAX_RATE_PER_SECOND,
            example=2,
            hint="write a fractional rate as requests-per-minute (2.5 per second = 150)",
        ),
    }


SCHEMA: dict[str, _Key] = {
    **{f"kakaotalk.{k}": v for k, v in _provider_schema("kakaotalk").items()},
    **{f"sms.{k}": v for k, v in _provider_schema("sms").items()},
    "retry.max-attempts": _Key(
        "int", "attempts on one provider, the first included", minimum=1, maximum=100
    ),
    "retry.backoff-delay": _Key(
        "float",
        "milliseconds before the second attempt",
        minimum=0,
        maximum=MAX_DELAY_MS,
        unit="milliseconds",
    ),
    "retry.multiplier": _Key(
        "float", "each further wait is this many times longer", minimum=1, maximum=10
    ),
    "retry.max-delay": _Key(
        "float",
        "milliseconds: no single wait is longer",
        minimum=0,
        maximum=MAX_DELAY_MS,
        unit="milliseconds",
    ),
    "retry.max-retry-after": _Key(
        "float",
        "seconds: a longer Retry-After pauses the provider, not the send",
        minimum=0,
        maximum=MAX_WAIT,
        unit="seconds",
    ),
    "fallback.enabled": _Key("bool", "send by SMS when KakaoTalk cannot deliver"),
    "fallback.overflow": _Key("bool", "bulk: send by SMS while KakaoTalk's rate limit is full"),
    "circuit-breaker.window-size": _Key(
        "int", "recent messages the failure rate is taken over", minimum=1, maximum=10_000
    ),
    "circuit-breaker.minimum-calls": _Key(
        "int",
        "messages seen before the rate can open it",
        minimum=1,
        maximum=10_000,
    ),
    "circuit-breaker.failure-rate-threshold": _Key(
        "float",
        "share of outage failures that opens it",
        minimum=0,
        above=True,
        maximum=1,
    ),
    "circuit-breaker.reset-timeout": _Key(
        "float",
        "seconds before one trial request is let through",
        minimum=0,
        above=True,
        maximum=MAX_WAIT,
        unit="seconds",
    ),
    "circuit-breaker.failure-threshold": _Key(
        "int",
        "consecutive outage failures that open the circuit",
        minimum=1,
        maximum=10_000,
        deprecated=(
            "the circuit now opens on failure-rate-threshold over window-size; "
            "remove failure-threshold"
        ),
    ),
    "limiter.strategy": _Key(
        "choice",
        "sliding-window | fixed-window | token-bucket",
        choices=("sliding-window", "fixed-window", "token-bucket"),
    ),
    "limiter.store": _Key(
        "choice",
        "memory (one process) | sqlite (one host) | redis (several hosts)",
        choices=("memory", "sqlite", "redis"),
    ),
    "limiter.path": _Key(
        "str",
        "sqlite file (default: $XDG_STATE_HOME/msgsend/ratelimit.sqlite)",
        example="~/.local/state/msgsend/ratelimit.sqlite",
    ),
    "limiter.redis-url": _Key(
        "url",
        "Redis server shared by every host",
        schemes=("redis", "rediss", "unix"),
        example="redis://localhost:6379/0",
        redact="url",
    ),
    "bulk.concurrency": _Key(
        "int", "parallel sends in a bulk run", minimum=1, maximum=MAX_CONCURRENCY
    ),
    "bulk.max-outage": _Key(
        "float",
        "seconds without any provider able to deliver: bulk stops, exit 75",
        minimum=0,
        above=True,
        maximum=MAX_OUTAGE,
        unit="seconds",
    ),
    "bulk.quiet-hours": _Key(
        "str",
        "HH:MM-HH:MM: a bulk run pauses in this window (in bulk.timezone)",
        check=_check_quiet_hours,
        example="21:00-08:00",
    ),
    "bulk.timezone": _Key("str", "time zone of quiet-hours", check=_check_timezone),
    "alerts.webhook-url": _Key(
        "url",
        "JSON POST per alert (Slack-compatible)",
        example="https://hooks.example.com/services/...",
        redact="endpoint",
    ),
    "alerts.apprise-urls": _Key(
        "strs",
        "Apprise URLs each alert also goes to",
        check=_check_apprise_url,
        example=["tgram://bottoken/ChatID"],
        redact="endpoint",
    ),
}


def _format_defaults(provider: str, wire_format: str) -> dict[str, Any]:
    """Return the ``request.*``, ``health.*`` and ``auth.type`` keys of a named format."""
    request = preset(wire_format, provider).as_config()
    health = HealthFormat().as_config(request["path"])
    del health["path"]  # default: the request's path, whatever it is set to
    return {
        "auth.type": "basic",
        **{f"request.{k}": v for k, v in request.items()},
        **{f"health.{k}": v for k, v in health.items()},
    }


DEFAULTS: dict[str, Any] = {
    "kakaotalk.base-url": "http://localhost:8081",
    "kakaotalk.timeout": 5.0,
    "kakaotalk.throttle-statuses": [429],
    "kakaotalk.auth.username": "autoever",
    "kakaotalk.auth.password": "1234",
    "kakaotalk.rate-limit.requests-per-minute": 100,
    "sms.base-url": "http://localhost:8082",
    "sms.timeout": 5.0,
    "sms.throttle-statuses": [429],
    "sms.auth.username": "autoever",
    "sms.auth.password": "5678",
    "sms.rate-limit.requests-per-minute": 500,
    **{
        f"{name}.{key}": value
        for name in CHANNELS
        for key, value in _format_defaults(name, "default").items()
    },
    "retry.max-attempts": 3,
    "retry.backoff-delay": 1000,
    "retry.multiplier": 2.0,
    "retry.max-delay": 30000,
    "retry.max-retry-after": 60,
    "fallback.enabled": True,
    "fallback.overflow": False,
    "circuit-breaker.window-size": 20,
    "circuit-breaker.minimum-calls": 10,
    "circuit-breaker.failure-rate-threshold": 0.5,
    "circuit-breaker.reset-timeout": 30,
    "limiter.strategy": "sliding-window",
    "limiter.store": "sqlite",
    "bulk.concurrency": 8,
    "bulk.max-outage": 300,
    "bulk.timezone": "Asia/Seoul",
    "alerts.apprise-urls": [],
}

_TYPE_NAMES = {
    "str": "a string",
    "url": "a URL",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "choice": "one of",
    "table": 'a table of strings, e.g. {name = "value"}',
    "scalars": 'a table of strings, numbers or booleans, e.g. {result = "OK"}',
    "ints": "a list of whole numbers, e.g. [429, 503]",
    "strs": 'a list of strings, e.g. ["a", "b"]',
}


def env_var_name(key: str) -> str:
    """Return the environment variable that overrides ``key``: ``MSGSEND_SMS_AUTH_PASSWORD``."""
    return "MSGSEND_" + key.upper().replace(".", "_").replace("-", "_")


# --------------------------------------------------------------------------- the result


@dataclass(frozen=True)
class RateLimitConfig:
    """A provider's client-side limit: ``count`` requests per ``period`` seconds."""

    count: int
    period: float

    @property
    def per_second(self) -> float:
        """Return the sustained rate in requests per second."""
        return self.count / self.period


@dataclass(frozen=True)
class ProviderConfig:
    """Where and how to reach one provider."""

    name: str
    base_url: str
    connect_timeout: float
    read_timeout: float
    username: str
    password: str = field(repr=False)
    rate_limit: RateLimitConfig
    throttle_statuses: tuple[int, ...] = (429,)
    #: the wire format of a message (``[PROVIDER.request]``); None: SPEC §2's
    request: RequestFormat | None = None
    #: ``ping``'s probe (``[PROVIDER.health]``)
    health: HealthFormat = field(default_factory=HealthFormat)
    auth_type: str = "basic"
    token: str | None = field(default=None, repr=False)
    header_name: str | None = None

    def __repr__(self) -> str:
        secret = "password" if self.auth_type == "basic" else "token"
        return (
            f"ProviderConfig(name={self.name!r}, base_url={redact.redact_url(self.base_url)!r}, "
            f"auth_type={self.auth_type!r}, username={self.username!r}, "
            f"{secret}={redact.MASK!r}, rate_limit={self.rate_limit!r})"
        )

    @property
    def auth(self) -> AuthSpec:
        """Return the credentials as ``[PROVIDER.auth]`` sets them."""
        return AuthSpec(self.auth_type, self.username, self.password, self.token, self.header_name)


@dataclass(frozen=True)
class RetryConfig:
    """Retry on one provider (SPEC §3); delays in seconds."""

    max_attempts: int = 3
    backoff_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0
    #: a Retry-After longer than this pauses the provider instead of the send
    max_retry_after: float = 60.0


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """When a provider's circuit opens and when it is tried again.

    The circuit opens when at least ``minimum_calls`` of the last ``window_size`` messages were
    seen and the share of outage failures among them reaches ``failure_rate_threshold``.
    ``failure_threshold`` (consecutive failures) is deprecated: it still loads, with a warning.
    """

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5


@dataclass(frozen=True)
class LimiterConfig:
    """How the client-side rate limits are kept (SPEC §4)."""

    strategy: str = "sliding-window"
    store: str = "sqlite"
    path: Path | None = None
    redis_url: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BulkConfig:
    """Defaults of ``msgsend bulk``."""

    concurrency: int = 8
    #: seconds with no provider able to deliver before the run stops with exit 75
    max_outage: float = 300.0
    #: "HH:MM-HH:MM" (see ``parse_quiet_hours``), or None for no quiet hours
    quiet_hours: str | None = None
    timezone: str = "Asia/Seoul"


@dataclass(frozen=True)
class AlertsConfig:
    """Where alerts go besides the log."""

    webhook_url: str | None = field(default=None, repr=False)
    apprise_urls: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Config:
    """The effective configuration, and where each value came from."""

    kakaotalk: ProviderConfig
    sms: ProviderConfig
    retry: RetryConfig
    fallback: bool
    circuit_breaker: CircuitBreakerConfig
    limiter: LimiterConfig
    bulk: BulkConfig
    alerts: AlertsConfig
    overflow: bool = False
    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict, repr=False)
    sources: Mapping[str, str] = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()

    def provider(self, name: str) -> ProviderConfig:
        """Return the settings of provider ``name`` (``kakaotalk`` or ``sms``)."""
        if name == "kakaotalk":
            return self.kakaotalk
        if name == "sms":
            return self.sms
        raise ConfigError(f"unknown provider {name!r}: expected kakaotalk or sms")


# --------------------------------------------------------------------------- loading


def discover_config_path(
    explicit: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path | None:
    """Return the configuration file to read, or None to use the defaults alone."""
    env = os.environ if env is None else env
    if explicit is not None:
        return _named_config(Path(explicit).expanduser(), "")
    if env.get("MSGSEND_CONFIG"):
        return _named_config(Path(env["MSGSEND_CONFIG"]).expanduser(), " (named by MSGSEND_CONFIG)")
    local = (cwd or Path.cwd()) / "msgsend.toml"
    if local.is_file():
        return local
    xdg = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    user = Path(xdg) / "msgsend" / "config.toml"
    return user if user.is_file() else None


def _named_config(path: Path, named_by: str) -> Path:
    """Return a configuration file named by the operator: a file, ``/dev/null`` (the defaults
    alone) or a pipe (``--config <(vault read ...)``, read once); not a directory."""
    if path.is_dir():
        raise ConfigError(f"is a directory, not a configuration file{named_by}", source=str(path))
    if not path.exists():
        raise ConfigError(f"no such configuration file{named_by}", source=str(path))
    return path


def _is_table_prefix(key: str) -> bool:
    return any(k.startswith(key + ".") for k in SCHEMA)


def _flatten(table: Mapping[str, Any], prefix: str, source: str, out: dict[str, Any]) -> None:
    for name, value in table.items():
        key = f"{prefix}{name}"
        spec = SCHEMA.get(key)
        if isinstance(value, dict) and (spec is None or spec.kind not in _TABLE_KINDS):
            if spec is not None:
                raise ConfigError(
                    f"expected {_expectation(spec)}, got a table", source=source, key=key
                )
            if not _is_table_prefix(key):
                raise ConfigError(_unknown_key_message(key), source=source, key=key)
            _flatten(value, key + ".", source, out)
        elif spec is None:
            if _is_table_prefix(key):
                # `auth = "hunter2"` for [kakaotalk.auth]: a table of secrets is never shown.
                secret = any(k.startswith(key + ".") and _redaction(k) for k in SCHEMA)
                got = f"{_KIND_OF_VALUE.get(type(value), 'a value')} (hidden)" if secret else None
                raise ConfigError(
                    f"expected a table ([{key}]), got {got or _literal(value)}",
                    source=source,
                    key=key,
                )
            raise ConfigError(_unknown_key_message(key), source=source, key=key)
        else:
            out[key] = value


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, list(SCHEMA), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (see `msgsend config init` for every key)"


def _expectation(spec: _Key) -> str:
    if spec.kind == "choice":
        return "one of " + ", ".join(repr(c) for c in spec.choices)
    if spec.kind == "url":
        return "a URL starting with " + " or ".join(f"{s}://" for s in spec.schemes)
    if spec.kind in ("int", "float") and (spec.minimum is not None or spec.maximum is not None):
        return _bounds_text(spec)
    return _TYPE_NAMES[spec.kind]


_KIND_OF_VALUE: dict[type, str] = {
    bool: "true or false", int: "a number", float: "a number", str: "a string",
    list: "a list", dict: "a table",
}  # fmt: skip


def _literal(value: Any) -> str:
    """Return ``value`` as the TOML that wrote it: ``true``, ``{to = 5}``; strings quoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return repr(value)


def _shown(key: str, raw: Any) -> str:
    """Return ``raw`` as an error message may show it: a secret never appears in an error."""
    how = _redaction(key)
    if not how:
        return _literal(raw)
    texts = list(raw.values()) if isinstance(raw, dict) else raw if isinstance(raw, list) else [raw]
    readable = {"url": str, "endpoint": str | list, "headers": dict}.get(how)
    if (
        readable is None
        or not isinstance(raw, readable)
        or not all(isinstance(t, str) for t in texts)
    ):
        return f"{_KIND_OF_VALUE.get(type(raw), 'a value')} (hidden)"
    return _literal(_redacted(key, raw))


#: how a list or table key is written in the environment
_JSON_EXAMPLES = {"table": '{"name": "value"}', "ints": "[429, 503]", "strs": '["a", "b"]'}


def _from_json(key: str, raw: Any, source: str) -> Any:
    """Return an environment value of a table or list key, which is written as JSON."""
    try:
        return json.loads(str(raw))
    except ValueError:
        kind = SCHEMA[key].kind
        example = _JSON_EXAMPLES["table" if kind in _TABLE_KINDS else kind]
        raise ConfigError(
            f"expected JSON ({_TYPE_NAMES[SCHEMA[key].kind]}; in the environment: "
            f"'{example}'), got {_shown(key, raw)}",
            source=source,
            key=key,
        ) from None


def _coerce_number(spec: _Key, raw: Any, from_env: bool) -> float | int | None:
    """Return ``raw`` as an int/float of ``spec``'s kind, or None when it is not one.

    A whole-number key takes a float that is whole (TOML ``1e3``, ``1000.0``) as that int, so
    that its bounds, not its type, answer ``1e7``; ``2.5`` stays refused.
    """
    whole = spec.kind in ("int", "ints")
    value: float | int
    if from_env and isinstance(raw, str):
        text = raw.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    elif isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    else:
        value = raw
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not whole:
        return float(value)
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value


def _coerce(key: str, raw: Any, source: str, from_env: bool) -> Any:
    """Return ``raw`` as the type ``key`` needs, or raise ConfigError naming the expectation."""
    spec = SCHEMA[key]
    value: Any = raw
    wrong = ConfigError(
        f"expected {_expectation(spec)}, got {_shown(key, raw)}", source=source, key=key
    )
    if spec.kind == "bool":
        if from_env:
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                value = True
            elif lowered in ("0", "false", "no", "off"):
                value = False
            else:
                raise wrong
        elif not isinstance(raw, bool):
            raise wrong
    elif spec.kind in ("int", "float"):
        number = _coerce_number(spec, raw, from_env)
        if number is None:
            hint = f"; {spec.hint}" if spec.hint else ""
            raise ConfigError(
                f"expected {_TYPE_NAMES[spec.kind]}, got {_shown(key, raw)}{hint}",
                source=source,
                key=key,
            )
        if not _in_bounds(spec, number):
            raise wrong
        value = number
    elif spec.kind in _TABLE_KINDS:
        value = _from_json(key, raw, source) if from_env else raw
        allowed = str if spec.kind == "table" else (str, int, float, bool)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, allowed) for k, v in value.items()
        ):
            raise wrong
        value = dict(value)
    elif spec.kind in ("ints", "strs"):
        value = _coerce_list(key, spec, raw, source, from_env)
    else:
        value = _coerce_text(key, spec, raw, source)
    if spec.check is not None:
        for item in value if spec.kind in ("ints", "strs") else [value]:
            problem = spec.check(item)
            if problem:
                raise ConfigError(
                    f"expected {problem}, got {_shown(key, item)}", source=source, key=key
                )
    return value


def _coerce_list(key: str, spec: _Key, raw: Any, source: str, from_env: bool) -> list[Any]:
    items = _from_json(key, raw, source) if from_env else raw
    wrong = ConfigError(
        f"expected {_TYPE_NAMES[spec.kind]}, got {_shown(key, raw)}", source=source, key=key
    )
    if not isinstance(items, list):
        raise wrong
    if len(items) < spec.min_items:
        raise ConfigError(
            f"expected at least {spec.min_items} item(s), got {_shown(key, raw)}",
            source=source,
            key=key,
        )
    out: list[Any] = []
    for item in items:
        if spec.kind == "strs":
            if not isinstance(item, str):
                raise wrong
            out.append(item.strip())
            continue
        number = _coerce_number(spec, item, False)
        if number is None:
            raise wrong
        if not _in_bounds(spec, number):
            raise ConfigError(
                f"expected each item to be {_bounds_text(spec)}, got {_shown(key, item)}",
                source=source,
                key=key,
            )
        out.append(number)
    return out


def _coerce_text(key: str, spec: _Key, raw: Any, source: str) -> str:
    wrong = ConfigError(
        f"expected {_expectation(spec)}, got {_shown(key, raw)}", source=source, key=key
    )
    if not isinstance(raw, str):
        raise wrong
    # A password or user name is taken as written: spaces may be part of it.
    value = raw if spec.kind == "str" and spec.check is None else raw.strip()
    if spec.kind == "choice" and value not in spec.choices:
        raise wrong
    if spec.kind == "url":
        try:
            parts = urlsplit(value)
        except ValueError:  # an unbalanced "[" of an IPv6 host
            raise wrong from None
        if parts.scheme not in spec.schemes or (parts.scheme != "unix" and not parts.netloc):
            raise wrong
        try:
            _ = parts.port
        except ValueError:
            raise ConfigError(
                f"bad port in URL {_shown(key, raw)}", source=source, key=key
            ) from None
    return value


#: a configuration file longer than this is not one (``--config /dev/zero`` ends here)
MAX_CONFIG_BYTES = 1024 * 1024


def _read_file(path: Path) -> dict[str, Any]:
    try:
        # Bounded: a pipe or a device may be named (--config <(...)) and may never end.
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror})", source=str(path)) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"larger than {MAX_CONFIG_BYTES >> 20} MiB: not a configuration file",
            source=str(path),
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", source=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None


#: a key named like this holds a secret even when its schema entry forgets to say so
_SECRET_KEY_NAME = re.compile(r"password|passwd|token|secret|api-?key|credential")


def _redaction(key: str) -> str:
    """Return how ``key``'s value is hidden: its ``redact``, else what its name and kind imply."""
    spec = SCHEMA.get(key)
    if spec is None:
        return ""
    if spec.redact:
        return spec.redact
    name = key.rsplit(".", 1)[1]
    if spec.kind == "table" and name == "headers":
        return "headers"
    if spec.kind in ("str", "strs") and _SECRET_KEY_NAME.search(name):
        return "password"
    return "url" if spec.kind == "url" else ""


def _redacted(key: str, value: Any) -> Any:
    """Return ``value`` of ``key`` as ``config show`` may print it (see ``_Key.redact``)."""
    how = _redaction(key)
    if not how or value is None:
        return value
    if how == "password":
        if isinstance(value, list):
            return [redact.MASK for _item in value]
        return redact.MASK if value else value
    if how == "headers":
        return redact.redact_headers(value)
    one = redact.redact_url if how == "url" else redact.redact_endpoint
    return [one(item) for item in value] if isinstance(value, list) else one(value)


def _secret_keys(flat: Mapping[str, Any]) -> list[str]:
    """Return the keys of ``flat`` whose value holds a secret (redaction would change it)."""
    return [key for key, value in flat.items() if _redacted(key, value) != value]


def _permission_warning(path: Path, flat: Mapping[str, Any]) -> str | None:
    secrets = _secret_keys(flat)
    if not secrets:
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path}: holds secrets ({', '.join(secrets)}) but is readable by others "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    return None


def _env_names() -> dict[str, str]:
    return {env_var_name(key): key for key in SCHEMA}


def _check_unknown_env(env: Mapping[str, str], known: Mapping[str, str]) -> None:
    """Refuse a ``MSGSEND_*`` variable that maps to no key: a typo must not pass silently."""
    for name in sorted(env):
        if not name.startswith("MSGSEND_") or name in known or name in RESERVED_ENV_VARS:
            continue
        # Upper-cased first: environment names are case-sensitive, and a lower-case key
        # path (MSGSEND_kakaotalk_timeout) is the likeliest typo of all.
        close = difflib.get_close_matches(
            name.upper(), [*known, *RESERVED_ENV_VARS], n=1, cutoff=0.8
        )
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"unknown variable{hint} "
            "(each key's variable is MSGSEND_ + its path: see `msgsend config init`)",
            source=f"environment {name}",
        )


def _deprecation(key: str, source: str) -> str:
    return f"{source}: {key} is deprecated: {SCHEMA[key].deprecated}"


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Find, read and validate the configuration; raise ConfigError naming file and key.

    Example::

        config = load_config()            # discovery order of SPEC §5
        config.kakaotalk.rate_limit       # RateLimitConfig(count=100, period=60.0)
    """
    env = os.environ if env is None else env
    known = _env_names()
    _check_unknown_env(env, known)
    file_path = discover_config_path(path, env, cwd)
    layers: list[tuple[str, dict[str, Any]]] = [("default", dict(DEFAULTS))]
    warnings: list[str] = []
    if file_path is not None:
        flat: dict[str, Any] = {}
        _flatten(_read_file(file_path), "", str(file_path), flat)
        layers.append(
            (
                f"file {file_path}",
                {k: _coerce(k, v, str(file_path), False) for k, v in flat.items()},
            )
        )
        warnings += [_deprecation(k, str(file_path)) for k in flat if SCHEMA[k].deprecated]
        warning = _permission_warning(file_path, flat)
        if warning:
            warnings.append(warning)
    env_layer: dict[str, Any] = {}
    for name, key in known.items():
        if name in env:
            env_layer[key] = _coerce(key, env[name], f"environment {name}", True)
            if SCHEMA[key].deprecated:
                warnings.append(_deprecation(key, f"environment {name}"))
    layers.append(("environment", env_layer))
    if overrides:
        layers.append(
            (
                "command line",
                {k: _coerce(k, v, "command line", False) for k, v in overrides.items()},
            )
        )

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for label, layer in layers:
        for prefix in ("kakaotalk.rate-limit.", "sms.rate-limit."):
            if any(k.startswith(prefix) for k in layer):
                for k in [k for k in values if k.startswith(prefix)]:
                    del values[k]
                    del sources[k]
        for key, value in layer.items():
            values[key] = value
            sources[key] = env_var_name(key) if label == "environment" else label
    return _build(values, sources, file_path, tuple(warnings))


def _where(sources: Mapping[str, str], key: str) -> str:
    source = sources.get(key, "default")
    if source.startswith("MSGSEND_"):
        return f"environment {source}"
    # an error names the file as every other configuration error does: "PATH: key: ..."
    return source.removeprefix("file ")


def _rate_limit(
    name: str, values: Mapping[str, Any], sources: Mapping[str, str]
) -> RateLimitConfig:
    """The one rate parser: exactly one of requests-per-minute / requests-per-second."""
    per_minute = values.get(f"{name}.rate-limit.requests-per-minute")
    per_second = values.get(f"{name}.rate-limit.requests-per-second")
    key = f"{name}.rate-limit"
    if per_minute is not None and per_second is not None:
        raise ConfigError(
            "set requests-per-minute or requests-per-second, not both",
            source=_where(sources, key + ".requests-per-second"),
            key=key,
        )
    if per_minute is not None:
        return RateLimitConfig(count=int(per_minute), period=60.0)
    if per_second is not None:
        return RateLimitConfig(count=int(per_second), period=1.0)
    raise ConfigError(
        "set requests-per-minute or requests-per-second", source="configuration", key=key
    )


def _format_error(name: str, exc: FormatError, sources: Mapping[str, str]) -> ConfigError:
    """Return ``exc`` as a ConfigError naming the key and the layer that set it."""
    key = f"{name}.{exc.key}"
    known = key
    while known not in sources and "." in known:
        known = known.rsplit(".", 1)[0]
    if sources.get(known, "default") == "default":
        # A combination of keys is wrong (body = "none" with the default fields): name the
        # layer that set one of them, the file or the environment, not the defaults.
        table = f"{name}.{exc.key.split('.', 1)[0]}."
        known = next(
            (k for k, source in sources.items() if k.startswith(table) and source != "default"),
            known,
        )
    return ConfigError(str(exc), source=_where(sources, known), key=key)


def _formats(
    name: str, values: dict[str, Any], sources: dict[str, str]
) -> tuple[RequestFormat, HealthFormat, AuthSpec]:
    """Build and check the request format, health probe and credentials of provider ``name``."""
    get = values.get
    request = RequestFormat(
        method=values[f"{name}.request.method"],
        path=values[f"{name}.request.path"],
        body=values[f"{name}.request.body"],
        fields=dict(values[f"{name}.request.fields"]),
        query=dict(values[f"{name}.request.query"]),
        headers=dict(values[f"{name}.request.headers"]),
        success_statuses=tuple(values[f"{name}.request.success-statuses"]),
        success_json=dict(values[f"{name}.request.success-json"]),
    )
    health = HealthFormat(
        method=values[f"{name}.health.method"],
        path=get(f"{name}.health.path"),
        body=values[f"{name}.health.body"],
        healthy_statuses=tuple(values[f"{name}.health.healthy-statuses"]),
    )
    auth = AuthSpec(
        values[f"{name}.auth.type"],
        values[f"{name}.auth.username"],
        values[f"{name}.auth.password"],
        get(f"{name}.auth.token"),
        get(f"{name}.auth.header-name"),
    )
    try:
        check_request_format(request)
        check_health_format(health)
        check_auth(auth)
    except FormatError as exc:
        raise _format_error(name, exc, sources) from None
    if health.path is None:
        # Shown by `config show`: the probe goes where messages go unless told otherwise.
        values[f"{name}.health.path"] = request.path
        sources[f"{name}.health.path"] = "default"
    return request, health, auth


def _provider(name: str, values: dict[str, Any], sources: dict[str, str]) -> ProviderConfig:
    timeout = values[f"{name}.timeout"]
    request, health, auth = _formats(name, values, sources)
    return ProviderConfig(
        name=name,
        base_url=str(values[f"{name}.base-url"]).rstrip("/"),
        connect_timeout=values.get(f"{name}.connect-timeout", timeout),
        read_timeout=values.get(f"{name}.read-timeout", timeout),
        username=values[f"{name}.auth.username"],
        password=values[f"{name}.auth.password"],
        rate_limit=_rate_limit(name, values, sources),
        throttle_statuses=tuple(values[f"{name}.throttle-statuses"]),
        request=request,
        health=health,
        auth_type=auth.type,
        token=auth.token,
        header_name=auth.header_name,
    )


def _circuit_breaker(values: Mapping[str, Any], sources: Mapping[str, str]) -> CircuitBreakerConfig:
    window, minimum = values["circuit-breaker.window-size"], values["circuit-breaker.minimum-calls"]
    if minimum > window:
        raise ConfigError(
            f"expected at most window-size ({window}), got {minimum}",
            source=_where(sources, "circuit-breaker.minimum-calls"),
            key="circuit-breaker.minimum-calls",
        )
    return CircuitBreakerConfig(
        failure_threshold=values.get("circuit-breaker.failure-threshold", 5),
        reset_timeout=float(values["circuit-breaker.reset-timeout"]),
        window_size=window,
        minimum_calls=minimum,
        failure_rate_threshold=values["circuit-breaker.failure-rate-threshold"],
    )


def _build(
    values: dict[str, Any], sources: dict[str, str], path: Path | None, warnings: tuple[str, ...]
) -> Config:
    from .ratelimit import check_limiter_settings

    strategy = values["limiter.strategy"]
    store = values["limiter.store"]
    problem = check_limiter_settings(strategy, store)
    if problem:
        raise ConfigError(problem, source=_where(sources, "limiter.store"), key="limiter")
    if store == "redis" and not values.get("limiter.redis-url"):
        raise ConfigError(
            'store = "redis" needs redis-url (e.g. "redis://localhost:6379/0")',
            source=_where(sources, "limiter.store"),
            key="limiter.redis-url",
        )
    retry = RetryConfig(
        max_attempts=values["retry.max-attempts"],
        backoff_delay=values["retry.backoff-delay"] / 1000.0,
        multiplier=values["retry.multiplier"],
        max_delay=values["retry.max-delay"] / 1000.0,
        max_retry_after=float(values["retry.max-retry-after"]),
    )
    limiter_path = values.get("limiter.path")
    return Config(
        kakaotalk=_provider("kakaotalk", values, sources),
        sms=_provider("sms", values, sources),
        retry=retry,
        fallback=values["fallback.enabled"],
        overflow=values["fallback.overflow"],
        circuit_breaker=_circuit_breaker(values, sources),
        limiter=LimiterConfig(
            strategy=strategy,
            store=store,
            path=Path(limiter_path).expanduser() if limiter_path else None,
            redis_url=values.get("limiter.redis-url"),
        ),
        bulk=BulkConfig(
            concurrency=values["bulk.concurrency"],
            max_outage=float(values["bulk.max-outage"]),
            quiet_hours=values.get("bulk.quiet-hours"),
            timezone=values["bulk.timezone"],
        ),
        alerts=AlertsConfig(
            webhook_url=values.get("alerts.webhook-url"),
            apprise_urls=tuple(values["alerts.apprise-urls"]),
        ),
        path=path,
        values=values,
        sources=sources,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    """Return ``value`` as one line of TOML (tables inline)."""
    import tomli_w

    if isinstance(value, dict):
        inner = ", ".join(tomli_w.dumps({k: v}).strip() for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return tomli_w.dumps({"x": value}).strip()[len("x = ") :]


def _toml_line(name: str, value: Any) -> str:
    import tomli_w

    key = tomli_w.dumps({name: 0}).strip()[: -len(" = 0")]
    return f"{key} = {_toml_value(value)}"


def _grouped(keys: list[str]) -> list[tuple[str, list[str]]]:
    """Return ``keys`` grouped by table, tables in first-seen order (a TOML table is one block)."""
    tables: dict[str, list[str]] = {}
    for key in keys:
        tables.setdefault(key.rsplit(".", 1)[0], []).append(key)
    return list(tables.items())


def _range_note(spec: _Key) -> str:
    """Return `` (1-10)`` or `` (>0, <=300)`` for a bounded number, as the sample documents it."""
    if spec.kind not in ("int", "float") or spec.maximum is None:
        return ""
    low = _number(spec.minimum) if spec.minimum is not None else "0"
    high = _number(spec.maximum)
    return f" (>{low}, <={high})" if spec.above else f" ({low}-{high})"


def render_sample_config(wire_format: str = "default") -> str:
    """Return the commented sample file that ``msgsend config init`` writes.

    ``wire_format`` names the request format of ``[PROVIDER.request]`` (``formats.preset``):
    ``default`` (SPEC §2) or ``assignment``.
    """
    values = dict(DEFAULTS)
    for name in CHANNELS:
        values.update({f"{name}.{k}": v for k, v in _format_defaults(name, wire_format).items()})
    lines = [
        "# msgsend configuration. Every key can be overridden by an environment variable:",
        "# MSGSEND_ + the key's path upper-cased, '.' and '-' as '_'",
        "# (e.g. MSGSEND_KAKAOTALK_AUTH_PASSWORD; lists and tables as JSON:",
        "# MSGSEND_SMS_THROTTLE_STATUSES='[429, 503]'). Keep this file private: chmod 600.",
        f"# Request format: {wire_format} (msgsend config init --format default|assignment).",
    ]
    keys = [k for k, spec in SCHEMA.items() if not spec.deprecated]
    for table, members in _grouped(keys):
        lines += ["", f"[{table}]"]
        for key in members:
            spec, name = SCHEMA[key], key.rsplit(".", 1)[1]
            if key in values:
                text = _toml_line(name, values[key])
            elif spec.example is not None:
                text = "# " + _toml_line(name, spec.example)
            else:
                continue
            lines.append(f"{text:<46} # {spec.doc}{_range_note(spec)}")
    return "\n".join(lines) + "\n"


def render_effective_config(config: Config) -> str:
    """Return the effective configuration as TOML, secrets redacted, each line's source."""
    items = {key: (value, source) for key, value, source in effective_items(config)}
    out = [f"# file: {config.path or '(none: built-in defaults)'}"]
    for table, members in _grouped(list(items)):
        out.append(f"\n[{table}]")
        for key in members:
            value, source = items[key]
            out.append(f"{_toml_line(key.rsplit('.', 1)[1], value):<46} # {source}")
    return "\n".join(out) + "\n"


def effective_items(config: Config) -> list[tuple[str, Any, str]]:
    """Return ``(key, value, source)`` for every set key, secrets redacted."""
    return [
        (key, _redacted(key, config.values[key]), config.sources.get(key, "default"))
        for key in SCHEMA
        if key in config.values
    ]
