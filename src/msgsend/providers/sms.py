"""The SMS API (SPEC §2)."""

from __future__ import annotations

from ..models import SMS_MAX_BYTES
from .base import Provider

__all__ = ["SmsProvider"]


class SmsProvider(Provider):
    """``POST {base-url}/sms`` with ``{"phoneNumber", "content"}``."""

    name = "sms"
    path = "/sms"
    key_env_var = "MSGSEND_SMS_AUTH_PASSWORD"
    max_body_len = SMS_MAX_BYTES

    def build_body(self, recipient: str, text: str) -> dict[str, str]:
        """Return ``{"phoneNumber": ..., "content": ...}``."""
        return {"phoneNumber": recipient, "content": text}
