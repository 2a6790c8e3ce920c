"""msgsend: deliver text messages to Korean mobile numbers, KakaoTalk first, SMS as fallback.

The library API, also used by the ``msgsend`` command::

    from msgsend import Sender, load_config

    with Sender.from_config(load_config()) as sender:
        result = sender.send("010-1234-5678", "안녕하세요")

Names are imported on first use (PEP 562) so that ``import msgsend`` stays cheap.
"""

from __future__ import annotations

import importlib

# Not typing's: importing typing is most of what `import msgsend` and `msgsend --version`
# would cost (~5 ms of ~20; docs/benchmarks.md, 3b). Type checkers read this name as True.
TYPE_CHECKING = False

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailedError",
    "AuthError",
    "BulkReport",
    "Channel",
    "CircuitBreaker",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "ConnectError",
    "DeliveryResult",
    "Events",
    "HealthReport",
    "InputError",
    "Lease",
    "LimiterTimeout",
    "LimiterUnavailableError",
    "MsgsendError",
    "Outgoing",
    "Provider",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "RateLimiter",
    "ReadTimeoutError",
    "RetryPolicy",
    "Sender",
    "ServerError",
    "__version__",
    "check_health",
    "load_config",
    "normalize_recipient",
    "prepare_message",
    "send_bulk",
]

_LOCATIONS = {
    "AllProvidersFailedError": "errors",
    "AuthError": "errors",
    "BulkReport": "bulk",
    "Channel": "models",
    "CircuitBreaker": "circuit",
    "CircuitOpenError": "errors",
    "Config": "config",
    "ConfigError": "errors",
    "ConnectError": "errors",
    "DeliveryResult": "models",
    "Events": "events",
    "HealthReport": "health",
    "InputError": "errors",
    "Lease": "ratelimit",
    "LimiterTimeout": "errors",
    "LimiterUnavailableError": "errors",
    "MsgsendError": "errors",
    "Outgoing": "models",
    "Provider": "providers",
    "ProviderError": "errors",
    "ProviderUnavailableError": "errors",
    "RateLimitedError": "errors",
    "RateLimiter": "ratelimit",
    "ReadTimeoutError": "errors",
    "RetryPolicy": "retry",
    "Sender": "client",
    "ServerError": "errors",
    "check_health": "health",
    "load_config": "config",
    "normalize_recipient": "models",
    "prepare_message": "models",
    "send_bulk": "bulk",
}

if TYPE_CHECKING:
    from typing import Any

    from .bulk import BulkReport, send_bulk
    from .circuit import CircuitBreaker
    from .client import Sender
    from .config import Config, load_config
    from .errors import (
        AllProvidersFailedError,
        AuthError,
        CircuitOpenError,
        ConfigError,
        ConnectError,
        InputError,
        LimiterTimeout,
        LimiterUnavailableError,
        MsgsendError,
        ProviderError,
        ProviderUnavailableError,
        RateLimitedError,
        ReadTimeoutError,
        ServerError,
    )
    from .events import Events
    from .health import HealthReport, check_health
    from .models import Channel, DeliveryResult, Outgoing, normalize_recipient, prepare_message
    from .providers import Provider
    from .ratelimit import Lease, RateLimiter
    from .retry import RetryPolicy


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module 'msgsend' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
