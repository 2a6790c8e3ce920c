"""The KakaoTalk message API (SPEC §2; the wire format is ``[kakaotalk.request]``)."""

from __future__ import annotations

from ..models import KAKAOTALK_MAX_CHARS
from .base import Provider

__all__ = ["KakaoTalkProvider"]


class KakaoTalkProvider(Provider):
    """``POST {base-url}/kakaotalk-messages`` with ``{"recipient", "message"}`` by default."""

    name = "kakaotalk"
    key_env_var = "MSGSEND_KAKAOTALK_AUTH_PASSWORD"
    max_body_len = KAKAOTALK_MAX_CHARS
