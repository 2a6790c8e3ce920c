"""Configuration: TOML discovery, defaults, ``MSGSEND_*`` overrides and strict validation.

Resolution order for every key: command-line flag > ``MSGSEND_*`` environment variable >
TOML file > built-in default (the seed's values). The file is the first that exists of
``--config PATH``, ``$MSGSEND_CONFIG``, ``./msgsend.toml`` and
``$XDG_CONFIG_HOME/msgsend/config.toml`` (``~/.config/msgsend/config.toml``).

A ``[provider.rate-limit]`` table is taken whole from the highest-priority layer that sets any
of its keys, so an environment ``..._REQUESTS_PER_SECOND`` replaces the file's
``requests-per-minute`` instead of clashing with it.
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = [
    "DEFAULTS",
    "AlertsConfig",
    "BulkConfig",
    "CircuitBreakerConfig",
    "Config",
    "LimiterConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "RetryConfig",
    "discover_config_path",
    "env_var_name",
    "load_config",
    "render_sample_config",
]


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class _Key:
    """One configuration key: its type, its check and the comment ``config init`` writes."""

    kind: str  # "str" | "url" | "int" | "float" | "bool" | "choice"
    doc: str
    check: Callable[[Any], str | None] | None = None
    choices: tuple[str, ...] = ()
    schemes: tuple[str, ...] = ("http", "https")


def _positive(value: Any) -> str | None:
    return None if value > 0 else "a number greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "a number of 0 or more"


def _at_least_one(value: Any) -> str | None:
    return None if value >= 1 else "a number of 1 or more"


def _concurrency(value: Any) -> str | None:
    return None if 1 <= value <= 256 else "a whole number from 1 to 256"


def _provider_schema(name: str) -> dict[str, _Key]:
    return {
        "base-url": _Key("url", f"where the {name} API listens"),
        "timeout": _Key("float", "seconds to wait for a connection and for the answer", _positive),
        "connect-timeout": _Key("float", "seconds to connect (default: timeout)", _positive),
        "read-timeout": _Key(
            "float", "seconds to wait for the answer (default: timeout)", _positive
        ),
        "auth.username": _Key("str", "HTTP Basic user"),
        "auth.password": _Key(
            "str", f"HTTP Basic password (or MSGSEND_{name.upper()}_AUTH_PASSWORD)"
        ),
        "rate-limit.requests-per-minute": _Key(
            "int", "client-side limit (or requests-per-second)", _positive
        ),
        "rate-limit.requests-per-second": _Key("float", "client-side limit per second", _positive),
    }


SCHEMA: dict[str, _Key] = {
    **{f"kakaotalk.{k}": v for k, v in _provider_schema("kakaotalk").items()},
    **{f"sms.{k}": v for k, v in _provider_schema("sms").items()},
    "retry.max-attempts": _Key(
        "int", "attempts on one provider, the first included", _at_least_one
    ),
    "retry.backoff-delay": _Key("float", "milliseconds before the second attempt", _non_negative),
    "retry.multiplier": _Key("float", "each further wait is this many times longer", _at_least_one),
    "retry.max-delay": _Key("float", "milliseconds: no single wait is longer", _non_negative),
    "fallback.enabled": _Key("bool", "send by SMS when KakaoTalk cannot deliver"),
    "circuit-breaker.failure-threshold": _Key(
        "int", "consecutive outage failures that open the circuit", _at_least_one
    ),
    "circuit-breaker.reset-timeout": _Key(
        "float", "seconds before one trial request is let through", _positive
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
    "limiter.path": _Key("str", "sqlite file (default: $XDG_STATE_HOME/msgsend/ratelimit.sqlite)"),
    "limiter.redis-url": _Key(
        "url", "Redis server shared by every host", schemes=("redis", "rediss", "unix")
    ),
    "bulk.concurrency": _Key("int", "parallel sends in a bulk run", _concurrency),
    "alerts.webhook-url": _Key("url", "JSON POST per alert (Slack-compatible)"),
}

DEFAULTS: dict[str, Any] = {
    "kakaotalk.base-url": "http://localhost:8081",
    "kakaotalk.timeout": 5.0,
    "kakaotalk.auth.username": "autoever",
    "kakaotalk.auth.password": "1234",
    "kakaotalk.rate-limit.requests-per-minute": 100,
    "sms.base-url": "http://localhost:8082",
    "sms.timeout": 5.0,
    "sms.auth.username": "autoever",
    "sms.auth.password": "5678",
    "sms.rate-limit.requests-per-minute": 500,
    "retry.max-attempts": 3,
    "retry.backoff-delay": 1000,
    "retry.multiplier": 2.0,
    "retry.max-delay": 30000,
    "fallback.enabled": True,
    "circuit-breaker.failure-threshold": 5,
    "circuit-breaker.reset-timeout": 30,
    "limiter.strategy": "sliding-window",
    "limiter.store": "sqlite",
    "bulk.concurrency": 8,
}

_TYPE_NAMES = {
    "str": "a string",
    "url": "a URL",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "choice": "one of",
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

    def __repr__(self) -> str:
        return (
            f"ProviderConfig(name={self.name!r}, base_url={self.base_url!r}, "
            f"username={self.username!r}, password='****', rate_limit={self.rate_limit!r})"
        )


@dataclass(frozen=True)
class RetryConfig:
    """Retry on one provider (SPEC §3); delays in seconds."""

    max_attempts: int = 3
    backoff_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 30.0


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """When a provider's circuit opens and when it is tried again."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0


@dataclass(frozen=True)
class LimiterConfig:
    """How the client-side rate limits are kept (SPEC §4)."""

    strategy: str = "sliding-window"
    store: str = "sqlite"
    path: Path | None = None
    redis_url: str | None = None


@dataclass(frozen=True)
class BulkConfig:
    """Defaults of ``msgsend bulk``."""

    concurrency: int = 8


@dataclass(frozen=True)
class AlertsConfig:
    """Where alerts go besides the log."""

    webhook_url: str | None = None


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
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError("no such configuration file", source=str(path))
        return path
    if env.get("MSGSEND_CONFIG"):
        path = Path(env["MSGSEND_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(
                "no such configuration file (named by MSGSEND_CONFIG)", source=str(path)
            )
        return path
    local = (cwd or Path.cwd()) / "msgsend.toml"
    if local.is_file():
        return local
    xdg = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    user = Path(xdg) / "msgsend" / "config.toml"
    return user if user.is_file() else None


def _flatten(table: Mapping[str, Any], prefix: str, source: str, out: dict[str, Any]) -> None:
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            if key in SCHEMA:
                raise ConfigError(
                    f"expected {_expectation(SCHEMA[key])}, got a table", source=source, key=key
                )
            if not any(k.startswith(key + ".") for k in SCHEMA):
                raise ConfigError(_unknown_key_message(key), source=source, key=key)
            _flatten(value, key + ".", source, out)
        else:
            if key not in SCHEMA:
                if any(k.startswith(key + ".") for k in SCHEMA):
                    raise ConfigError(
                        f"expected a table ([{key}]), got {value!r}", source=source, key=key
                    )
                raise ConfigError(_unknown_key_message(key), source=source, key=key)
            out[key] = value


def _unknown_key_message(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(SCHEMA), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (see `msgsend config init` for every key)"


def _expectation(spec: _Key) -> str:
    if spec.kind == "choice":
        return "one of " + ", ".join(repr(c) for c in spec.choices)
    if spec.kind == "url":
        return "a URL starting with " + " or ".join(f"{s}://" for s in spec.schemes)
    return _TYPE_NAMES[spec.kind]


def _coerce(key: str, raw: Any, source: str, from_env: bool) -> Any:
    """Return ``raw`` as the type ``key`` needs, or raise ConfigError naming the expectation."""
    spec = SCHEMA[key]
    value: Any = raw
    wrong = ConfigError(f"expected {_expectation(spec)}, got {raw!r}", source=source, key=key)
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
    elif spec.kind == "int":
        if from_env:
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise wrong from None
        elif isinstance(raw, bool) or not isinstance(raw, int):
            raise wrong
    elif spec.kind == "float":
        if from_env:
            try:
                value = float(str(raw).strip())
            except ValueError:
                raise wrong from None
        elif isinstance(raw, bool) or not isinstance(raw, int | float):
            raise wrong
        if not math.isfinite(value):
            raise wrong
        value = float(value)
    else:
        if not isinstance(raw, str):
            raise wrong
        # A password or user name is taken as written: spaces may be part of it.
        value = raw if spec.kind == "str" else raw.strip()
        if spec.kind == "choice" and value not in spec.choices:
            raise wrong
        if spec.kind == "url":
            parts = urlsplit(value)
            if parts.scheme not in spec.schemes or (parts.scheme != "unix" and not parts.netloc):
                raise wrong
            try:
                _ = parts.port
            except ValueError:
                raise ConfigError(f"bad port in URL {raw!r}", source=source, key=key) from None
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"expected {problem}, got {raw!r}", source=source, key=key)
    return value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the file ({exc.strerror})", source=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", source=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None


def _permission_warning(path: Path, flat: Mapping[str, Any]) -> str | None:
    if not any(k.endswith("auth.password") for k in flat):
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path}: holds a password but is readable by others "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    return None


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
        warning = _permission_warning(file_path, flat)
        if warning:
            warnings.append(warning)
    env_layer: dict[str, Any] = {}
    for key in SCHEMA:
        name = env_var_name(key)
        if name in env:
            env_layer[key] = _coerce(key, env[name], f"environment {name}", True)
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
    return f"environment {source}" if source.startswith("MSGSEND_") else source


def _rate_limit(
    name: str, values: Mapping[str, Any], sources: Mapping[str, str]
) -> RateLimitConfig:
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
        # A fractional per-second rate is kept exact as a count over a longer period.
        if float(per_second).is_integer():
            return RateLimitConfig(count=int(per_second), period=1.0)
        return RateLimitConfig(count=max(1, round(per_second * 60)), period=60.0)
    raise ConfigError(
        "set requests-per-minute or requests-per-second", source="configuration", key=key
    )


def _provider(name: str, values: Mapping[str, Any], sources: Mapping[str, str]) -> ProviderConfig:
    timeout = values[f"{name}.timeout"]
    return ProviderConfig(
        name=name,
        base_url=str(values[f"{name}.base-url"]).rstrip("/"),
        connect_timeout=values.get(f"{name}.connect-timeout", timeout),
        read_timeout=values.get(f"{name}.read-timeout", timeout),
        username=values[f"{name}.auth.username"],
        password=values[f"{name}.auth.password"],
        rate_limit=_rate_limit(name, values, sources),
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
    )
    limiter_path = values.get("limiter.path")
    return Config(
        kakaotalk=_provider("kakaotalk", values, sources),
        sms=_provider("sms", values, sources),
        retry=retry,
        fallback=values["fallback.enabled"],
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=values["circuit-breaker.failure-threshold"],
            reset_timeout=float(values["circuit-breaker.reset-timeout"]),
        ),
        limiter=LimiterConfig(
            strategy=strategy,
            store=store,
            path=Path(limiter_path).expanduser() if limiter_path else None,
            redis_url=values.get("limiter.redis-url"),
        ),
        bulk=BulkConfig(concurrency=values["bulk.concurrency"]),
        alerts=AlertsConfig(webhook_url=values.get("alerts.webhook-url")),
        path=path,
        values=values,
        sources=sources,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- writing


def _table_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def render_sample_config() -> str:
    """Return the commented sample file that ``msgsend config init`` writes."""
    import tomli_w

    lines = [
        "# msgsend configuration. Every key can be overridden by an environment variable:",
        "# MSGSEND_ + the key's path upper-cased, '.' and '-' as '_'",
        "# (e.g. MSGSEND_KAKAOTALK_AUTH_PASSWORD). Keep this file private: chmod 600.",
    ]
    current = None
    for key, spec in SCHEMA.items():
        table, name = _table_of(key), key.rsplit(".", 1)[1]
        if table != current:
            lines += ["", f"[{table}]"]
            current = table
        if key in DEFAULTS:
            text = tomli_w.dumps({name: DEFAULTS[key]}).strip()
        else:
            example = {
                f"{table}.connect-timeout": 5.0,
                f"{table}.read-timeout": 5.0,
                f"{table}.requests-per-second": 2,
                "limiter.path": "~/.local/state/msgsend/ratelimit.sqlite",
                "limiter.redis-url": "redis://localhost:6379/0",
                "alerts.webhook-url": "https://hooks.example.com/services/...",
            }.get(key)
            if example is None:
                continue
            text = "# " + tomli_w.dumps({name: example}).strip()
        lines.append(f"{text:<46} # {spec.doc}")
    return "\n".join(lines) + "\n"


def effective_items(config: Config) -> list[tuple[str, Any, str]]:
    """Return ``(key, value, source)`` for every set key, passwords masked."""
    items = []
    for key in SCHEMA:
        if key not in config.values:
            continue
        value = config.values[key]
        if key.endswith("password"):
            value = "****"
        items.append((key, value, config.sources.get(key, "default")))
    return items
