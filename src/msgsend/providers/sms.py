"""The SMS API (SPEC §2; the wire format is ``[sms.request]``)."""

from __future__ import annotations

from ..models import SMS_MAX_BYTES
from .base import Provider

__all__ = ["SmsProvider"]


class SmsProvider(Provider):
    """``POST {base-url}/sms`` with ``{"phoneNumber", "content"}`` by default."""

    name = "sms"
    key_env_var = "MSGSEND_SMS_AUTH_PASSWORD"
    max_body_len = SMS_MAX_BYTES
