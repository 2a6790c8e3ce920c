"""Provider registry: an explicit name → class mapping (no plugin discovery)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import MsgsendError
from .base import Provider, ProviderResponse, map_requests_errors
from .kakaotalk import KakaoTalkProvider
from .sms import SmsProvider

if TYPE_CHECKING:
    from ..config import ProviderConfig

__all__ = [
    "PROVIDERS",
    "KakaoTalkProvider",
    "Provider",
    "ProviderResponse",
    "SmsProvider",
    "UnknownProviderError",
    "build_provider",
    "get_provider",
    "map_requests_errors",
]


class UnknownProviderError(MsgsendError, KeyError):
    """No provider has that name."""

    kind = "unknown-provider"


PROVIDERS: dict[str, type[Provider]] = {
    KakaoTalkProvider.name: KakaoTalkProvider,
    SmsProvider.name: SmsProvider,
}


def get_provider(name: str) -> type[Provider]:
    """Return the provider class called ``name``; raise UnknownProviderError otherwise."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProviderError(
            f"unknown provider {name!r}: expected one of {', '.join(PROVIDERS)}"
        ) from None


def build_provider(config: ProviderConfig, *, pool_size: int = 16) -> Provider:
    """Return a ready provider client for ``config``."""
    cls = get_provider(config.name)
    return cls(
        config.base_url,
        config.username,
        config.password,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        pool_size=pool_size,
        throttle_statuses=config.throttle_statuses,
        request_format=config.request,
        health=config.health,
        auth=config.auth,
    )
