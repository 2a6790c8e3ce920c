"""The KakaoTalk message API (SPEC §2)."""

from __future__ import annotations

from ..models import KAKAOTALK_MAX_CHARS
from .base import Provider

__all__ = ["KakaoTalkProvider"]


class KakaoTalkProvider(Provider):
    """``POST {base-url}/kakaotalk-messages`` with ``{"recipient", "message"}``."""

    name = "kakaotalk"
    path = "/kakaotalk-messages"
    key_env_var = "MSGSEND_KAKAOTALK_AUTH_PASSWORD"
    max_body_len = KAKAOTALK_MAX_CHARS

    def build_body(self, recipient: str, text: str) -> dict[str, str]:
        """Return ``{"recipient": ..., "message": ...}``."""
        return {"recipient": recipient, "message": text}
