"""Provider request formats as data: where each value of a message goes and how it is encoded.

A format says which HTTP method and path a provider takes, whether the body is JSON, an HTML
form or absent, which fields, query parameters and headers carry the message, and what answer
counts as delivered. It is read from ``[PROVIDER.request]`` once per run, checked strictly
(``FormatError`` names the key: unknown placeholders, body kinds or header names never reach
a request), and compiled into a ``RequestBuilder`` whose ``build`` is the only per-message work.

Placeholders (``{name}``; ``{{`` and ``}}`` are literal braces)::

    {recipient}         010-1234-5678
    {recipient_digits}  01012345678
    {recipient_e164}    +821012345678
    {message}           the text, as is
    {kind}              kakaotalk on KakaoTalk; sms or lms on SMS (90 EUC-KR bytes)
    {message_id}        a stable id of the message (idempotency key): the same on every
                        retry, fallback and ``bulk --resume`` of one input row

Values are encoded for their place by the standard encoders, never by hand: JSON strings
(``json.dumps``), form fields (``application/x-www-form-urlencoded``, UTF-8) and query
parameters (percent-encoded, ``+`` and spaces included), so ``&``, ``=``, ``%``, quotes,
newlines and Korean text arrive intact.

This module imports neither requests nor the providers: ``config`` uses it at load time.
"""

from __future__ import annotations

import difflib
import json
import re
import string
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus

from .errors import MsgsendError
from .models import message_kind

__all__ = [
    "AUTH_TYPES",
    "BODY_KINDS",
    "FORMAT_NAMES",
    "PLACEHOLDERS",
    "AuthSpec",
    "BuiltRequest",
    "FormatError",
    "HealthFormat",
    "RequestBuilder",
    "RequestFormat",
    "bulk_message_id",
    "new_message_id",
    "preset",
]

PLACEHOLDERS: tuple[str, ...] = (
    "recipient",
    "recipient_digits",
    "recipient_e164",
    "message",
    "kind",
    "message_id",
)
BODY_KINDS: tuple[str, ...] = ("json", "form", "none")
METHODS: tuple[str, ...] = ("POST", "PUT", "PATCH", "GET")
HEALTH_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH")
AUTH_TYPES: tuple[str, ...] = ("basic", "bearer", "header")
#: the named formats of ``config init --format`` and ``sandbox --format``
FORMAT_NAMES: tuple[str, ...] = ("default", "assignment")

CONTENT_TYPES: dict[str, str] = {
    "json": "application/json; charset=utf-8",
    # With the charset named, servlet containers decode the form as UTF-8, not ISO-8859-1.
    "form": "application/x-www-form-urlencoded; charset=utf-8",
}

#: headers the transport or ``[auth]`` owns: a format may not set them
_RESERVED_HEADERS = frozenset(
    {"authorization", "content-length", "host", "transfer-encoding", "connection"}
)
#: RFC 9110 token characters: a header name is one token
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
#: values that may go into a header: no newline or non-ASCII text can come out of these
_HEADER_SAFE = frozenset({"recipient", "recipient_digits", "recipient_e164", "kind", "message_id"})


class FormatError(MsgsendError):
    """A request format is wrong; ``key`` is its dotted name below the provider's table."""

    kind = "config"

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True, slots=True)
class _Template:
    """A compiled template: literal text and placeholder names, in order."""

    source: str
    parts: tuple[tuple[str, str | None], ...]
    #: the placeholder when the template is exactly one (the common case: no join needed)
    single: str | None
    names: frozenset[str]

    def render(self, values: Mapping[str, str]) -> str:
        if self.single is not None:
            return values[self.single]
        return "".join(text if name is None else values[name] for text, name in self.parts)


def _compile(source: str, key: str) -> _Template:
    """Compile ``source``; raise FormatError for anything but the known placeholders."""
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(source))
    except ValueError as exc:
        raise FormatError(
            f"bad template {source!r} ({exc}); write {{{{ or }}}} for a literal brace", key=key
        ) from None
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append((literal, None))
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        shown += "}"
        if name not in PLACEHOLDERS:
            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1, cutoff=0.6)
            hint = f"; did you mean {{{close[0]}}}?" if close else ""
            raise FormatError(
                f"unknown placeholder {shown} in {source!r}{hint} (known: "
                + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                + ")",
                key=key,
            )
        if spec or conversion:
            raise FormatError(
                f"placeholder {shown} in {source!r}: conversions and format specs are not "
                f"supported; write {{{name}}}",
                key=key,
            )
        parts.append(("", name))
    single = parts[0][1] if len(parts) == 1 and parts[0][1] is not None else None
    if not parts:
        parts.append(("", None))
    names = frozenset(name for _, name in parts if name is not None)
    return _Template(source, tuple(parts), single, names)


# --------------------------------------------------------------------------- the formats


@dataclass(frozen=True)
class RequestFormat:
    """How one provider takes a message (``[PROVIDER.request]``); the defaults are SPEC §2's."""

    path: str
    fields: Mapping[str, str]
    method: str = "POST"
    body: str = "json"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: empty: any 2xx
    success_statuses: tuple[int, ...] = ()
    #: top-level keys the JSON answer must hold with these values (empty: no check)
    success_json: Mapping[str, Any] = field(default_factory=dict)

    def as_config(self) -> dict[str, Any]:
        """Return the format as ``[PROVIDER.request]`` keys and TOML values."""
        return {
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "fields": dict(self.fields),
            "query": dict(self.query),
            "headers": dict(self.headers),
            "success-statuses": list(self.success_statuses),
            "success-json": dict(self.success_json),
        }


@dataclass(frozen=True)
class HealthFormat:
    """How ``ping`` probes one provider (``[PROVIDER.health]``).

    The default is the probe of SPEC §6: an authenticated ``POST {}`` to the message path,
    where 400/422 (the empty body refused after the credentials were accepted) or a 2xx
    means up. ``path`` None means the request format's path; ``healthy_statuses`` empty
    means that default rule.
    """

    method: str = "POST"
    path: str | None = None
    body: str = "json"
    healthy_statuses: tuple[int, ...] = ()

    def is_healthy(self, status: int) -> bool:
        """Return whether ``status`` means the provider is up."""
        if self.healthy_statuses:
            return status in self.healthy_statuses
        return 200 <= status < 300 or status in (400, 422)

    def describe_healthy(self) -> str:
        """Return the healthy statuses in words, for ``ping``'s detail."""
        if self.healthy_statuses:
            return ", ".join(str(s) for s in self.healthy_statuses)
        return "2xx, 400 or 422"

    def as_config(self, request_path: str) -> dict[str, Any]:
        """Return the format as ``[PROVIDER.health]`` keys and TOML values."""
        return {
            "method": self.method,
            "path": self.path or request_path,
            "body": self.body,
            "healthy-statuses": list(self.healthy_statuses),
        }


@dataclass(frozen=True)
class AuthSpec:
    """How a provider authenticates us (``[PROVIDER.auth]``): Basic, Bearer or a named header."""

    type: str = "basic"
    username: str = ""
    password: str = field(default="", repr=False)
    token: str | None = field(default=None, repr=False)
    header_name: str | None = None

    def __repr__(self) -> str:
        secret = "password='****'" if self.type == "basic" else "token='****'"
        who = f"username={self.username!r}" if self.type == "basic" else ""
        header = f"header_name={self.header_name!r}" if self.type == "header" else ""
        inner = ", ".join(p for p in (f"type={self.type!r}", who, header, secret) if p)
        return f"AuthSpec({inner})"

    @property
    def basic(self) -> tuple[str, str] | None:
        """Return the Basic credentials, or None for token auth."""
        return (self.username, self.password) if self.type == "basic" else None

    def headers(self) -> dict[str, str]:
        """Return the header that carries a token (empty for Basic, which requests encodes)."""
        if self.type == "bearer":
            return {"Authorization": f"Bearer {self.token}"}
        if self.type == "header" and self.header_name:
            return {self.header_name: self.token or ""}
        return {}

    def describe(self) -> str:
        """Return which keys hold these credentials, for error messages that name the fix."""
        if self.type == "basic":
            return "username/password"
        if self.type == "bearer":
            return "token"
        return "header-name/token"


_DEFAULT_FORMATS: dict[str, RequestFormat] = {
    "kakaotalk": RequestFormat(
        path="/kakaotalk-messages", fields={"recipient": "{recipient}", "message": "{message}"}
    ),
    "sms": RequestFormat(
        path="/sms", fields={"phoneNumber": "{recipient}", "content": "{message}"}
    ),
}

#: the assignment's wire format: KakaoTalk JSON {"phone","message"}; SMS phone in the query
#: and the text in a form body
_ASSIGNMENT_FORMATS: dict[str, RequestFormat] = {
    "kakaotalk": RequestFormat(
        path="/kakaotalk-messages", fields={"phone": "{recipient}", "message": "{message}"}
    ),
    "sms": RequestFormat(
        path="/sms", body="form", query={"phone": "{recipient}"}, fields={"message": "{message}"}
    ),
}


def preset(name: str, provider: str) -> RequestFormat:
    """Return the named format (``default`` or ``assignment``) of ``provider``."""
    if name == "default":
        return _DEFAULT_FORMATS[provider]
    if name == "assignment":
        return _ASSIGNMENT_FORMATS[provider]
    raise ValueError(f"unknown format {name!r}: expected one of {', '.join(FORMAT_NAMES)}")


# --------------------------------------------------------------------------- validation


def _check_path(path: str, key: str) -> None:
    if not path.startswith("/"):
        raise FormatError(f"expected a path starting with '/', got {path!r}", key=key)
    if "?" in path or "#" in path or any(c.isspace() for c in path):
        raise FormatError(
            f"path {path!r} may not hold '?', '#' or spaces: put parameters in query", key=key
        )
    if "{" in path or "}" in path:
        raise FormatError(
            f"path {path!r} is literal: put per-message values in query, fields or headers",
            key=key,
        )


def _check_statuses(statuses: Sequence[int], key: str, low: int, high: int) -> None:
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not low <= status <= high:
            raise FormatError(
                f"expected HTTP statuses from {low} to {high}, got {status!r}", key=key
            )


def _check_table(table: Mapping[str, Any], key: str) -> None:
    for name, value in table.items():
        if not isinstance(name, str) or not name:
            raise FormatError(f"expected non-empty names, got {name!r}", key=key)
        if not isinstance(value, str):
            raise FormatError(f"expected a string for {name!r}, got {value!r}", key=key)


def check_request_format(fmt: RequestFormat) -> None:
    """Raise FormatError naming the key (``request.KEY``) if ``fmt`` cannot be sent."""
    if fmt.method not in METHODS:
        raise FormatError(
            f"expected one of {', '.join(METHODS)}, got {fmt.method!r}", key="request.method"
        )
    _check_path(fmt.path, "request.path")
    if fmt.body not in BODY_KINDS:
        raise FormatError(
            f"expected one of {', '.join(repr(k) for k in BODY_KINDS)}, got {fmt.body!r}",
            key="request.body",
        )
    for part in ("fields", "query", "headers"):
        _check_table(getattr(fmt, part), f"request.{part}")
    if fmt.body == "none" and fmt.fields:
        raise FormatError(
            'body = "none" sends no fields: move them to query, or set body = "json" or "form"',
            key="request.fields",
        )
    if fmt.body != "none" and not fmt.fields:
        raise FormatError(
            f'body = "{fmt.body}" needs fields (e.g. {{ message = "{{message}}" }}), '
            'or set body = "none"',
            key="request.fields",
        )
    if fmt.method == "GET" and fmt.body != "none":
        raise FormatError(
            'method = "GET" cannot carry a body: set body = "none"', key="request.body"
        )
    used: set[str] = set()
    for part in ("fields", "query", "headers"):
        for name, source in getattr(fmt, part).items():
            used |= _compile(source, f"request.{part}.{name}").names
    for name, source in fmt.headers.items():
        key = f"request.headers.{name}"
        if not _TOKEN.match(name):
            raise FormatError(f"{name!r} is not a valid header name", key=key)
        if name.lower() in _RESERVED_HEADERS:
            hint = (
                'set [auth] type = "bearer" or "header"'
                if name.lower() == "authorization"
                else "the HTTP client sets it"
            )
            raise FormatError(f"header {name!r} may not be set here: {hint}", key=key)
        unsafe = _compile(source, key).names - _HEADER_SAFE
        if unsafe:
            raise FormatError(
                f"{{{min(unsafe)}}} may hold newlines or non-ASCII text, which a header "
                "cannot carry: put it in fields or query",
                key=key,
            )
        if any(c in source for c in "\r\n") or not source.isascii():
            raise FormatError("a header value must be one line of ASCII text", key=key)
    if "recipient" not in used and "recipient_digits" not in used and "recipient_e164" not in used:
        raise FormatError(
            "no field, query parameter or header carries the recipient: use {recipient}, "
            "{recipient_digits} or {recipient_e164}",
            key="request",
        )
    if "message" not in used:
        raise FormatError(
            "no field or query parameter carries the text: use {message}", key="request"
        )
    _check_statuses(fmt.success_statuses, "request.success-statuses", 200, 299)
    for name, value in fmt.success_json.items():
        if isinstance(value, dict | list) or value is None:
            raise FormatError(
                f"expected a string, number or boolean for {name!r}, got {value!r}",
                key="request.success-json",
            )


def check_health_format(health: HealthFormat) -> None:
    """Raise FormatError naming the key (``health.KEY``) if ``health`` cannot be sent."""
    if health.method not in HEALTH_METHODS:
        raise FormatError(
            f"expected one of {', '.join(HEALTH_METHODS)}, got {health.method!r}",
            key="health.method",
        )
    if health.path is not None:
        _check_path(health.path, "health.path")
    if health.body not in BODY_KINDS:
        raise FormatError(
            f"expected one of {', '.join(repr(k) for k in BODY_KINDS)}, got {health.body!r}",
            key="health.body",
        )
    if health.method in ("GET", "HEAD") and health.body != "none":
        raise FormatError(
            f'method = "{health.method}" cannot carry a body: set body = "none"', key="health.body"
        )
    _check_statuses(health.healthy_statuses, "health.healthy-statuses", 100, 599)


def check_auth(auth: AuthSpec) -> None:
    """Raise FormatError naming the key (``auth.KEY``) if ``auth`` is incomplete or ambiguous."""
    if auth.type not in AUTH_TYPES:
        raise FormatError(
            f"expected one of {', '.join(repr(t) for t in AUTH_TYPES)}, got {auth.type!r}",
            key="auth.type",
        )
    # (Problems are named on auth.type or auth: an error text right after "token:" would be
    # masked as a secret by the redaction of every message.)
    if auth.type == "basic":
        if auth.token is not None:
            raise FormatError(
                '"basic" sends username/password, but a token is set: '
                'set type = "bearer" or "header", or remove the token',
                key="auth.type",
            )
        if auth.header_name is not None:
            raise FormatError('header-name needs type = "header"', key="auth.header-name")
        return
    if not auth.token:
        raise FormatError(
            f'"{auth.type}" needs a token (set token, or the environment variable '
            "MSGSEND_<PROVIDER>_AUTH_TOKEN)",
            key="auth.type",
        )
    if any(c in auth.token for c in "\r\n") or not auth.token.isascii():
        raise FormatError("the token must be one line of ASCII text", key="auth")
    if auth.type == "bearer" and auth.header_name is not None:
        raise FormatError(
            'header-name needs type = "header" (bearer uses Authorization)', key="auth.header-name"
        )
    if auth.type == "header":
        if not auth.header_name:
            raise FormatError(
                'type = "header" needs header-name (e.g. "X-API-Key")', key="auth.header-name"
            )
        if not _TOKEN.match(auth.header_name) or auth.header_name.lower() in _RESERVED_HEADERS - {
            "authorization"
        }:
            raise FormatError(
                f"{auth.header_name!r} is not a usable header name", key="auth.header-name"
            )


# --------------------------------------------------------------------------- building


class BuiltRequest(NamedTuple):
    """The per-message parts of a request: the query string, extra headers and the body."""

    # A tuple, not a frozen dataclass: built once per message, and a frozen dataclass's
    # __init__ costs a microsecond more (bench/bench_formats.py).
    query: str
    headers: dict[str, str] | None
    body: bytes | None


def new_message_id() -> str:
    """Return a fresh message id (for ``send``: one per message, kept across retries)."""
    return str(uuid.uuid4())


_BULK_NAMESPACE = uuid.UUID("7d0c5a8e-2f43-4b7e-9a57-6f1d0e2b9c31")


def bulk_message_id(results_path: str, row: int, recipient: str, text: str) -> str:
    """Return the id of one bulk row: the same on every run that writes ``results_path``.

    Resuming a run writes the same results file, so the id repeats and a provider that
    honours idempotency keys never delivers a row twice; another day's file (another
    results file) gets other ids, so the same reminder sent again is not mistaken for a
    repeat.
    """
    return str(uuid.uuid5(_BULK_NAMESPACE, f"{results_path}\x00{row}\x00{recipient}\x00{text}"))


class RequestBuilder:
    """A request format compiled once: ``build`` turns one message into its request parts.

    Example::

        builder = RequestBuilder(preset("assignment", "sms"), "sms")
        builder.build("010-1234-5678", "a&b=c", "id-1").query   # '?phone=010-1234-5678'
    """

    def __init__(self, fmt: RequestFormat, channel: str) -> None:
        check_request_format(fmt)
        self.format = fmt
        self.channel = channel
        fields = [
            (name, _compile(source, f"request.fields.{name}"))
            for name, source in fmt.fields.items()
        ]
        query = [
            (name, _compile(source, f"request.query.{name}")) for name, source in fmt.query.items()
        ]
        # (name or encoded "name=", the placeholder when the template is just one, template)
        self._fields = tuple((name, t.single, t) for name, t in fields)
        self._form = tuple((quote_plus(name, safe="") + "=", t.single, t) for name, t in fields)
        self._query = tuple((quote(name, safe="") + "=", t.single, t) for name, t in query)
        headers = [
            (name, _compile(source, f"request.headers.{name}"))
            for name, source in fmt.headers.items()
        ]
        #: headers without placeholders are set once, on the prepared request
        self.static_headers = {name: t.render({}) for name, t in headers if not t.names}
        if fmt.body in CONTENT_TYPES and not any(
            name.lower() == "content-type" for name in fmt.headers
        ):
            self.static_headers["Content-Type"] = CONTENT_TYPES[fmt.body]
        self._headers = tuple((name, t) for name, t in headers if t.names)
        templates = [t for _, t in fields] + [t for _, t in query] + [t for _, t in self._headers]
        self.uses: frozenset[str] = frozenset().union(*(t.names for t in templates))
        self._computed = bool(self.uses - {"recipient", "message"})
        self._body = fmt.body

    def values(self, recipient: str, text: str, message_id: str | None) -> dict[str, str]:
        """Return the placeholder values this format uses for one message."""
        values = {"recipient": recipient, "message": text}
        if self._computed:
            self._compute(values, recipient, text, message_id)
        return values

    def _compute(
        self, values: dict[str, str], recipient: str, text: str, message_id: str | None
    ) -> None:
        uses = self.uses
        if "recipient_digits" in uses or "recipient_e164" in uses:
            digits = recipient.replace("-", "")
            values["recipient_digits"] = digits
            values["recipient_e164"] = "+82" + digits[1:]
        if "kind" in uses:
            values["kind"] = str(message_kind(text, self.channel))
        if "message_id" in uses:
            values["message_id"] = message_id or new_message_id()

    def build(self, recipient: str, text: str, message_id: str | None = None) -> BuiltRequest:
        """Return the query string, per-message headers and body of one message."""
        # The per-message work of every send: no method call where a lookup will do (a
        # template that is one placeholder is a dict lookup), names encoded once at start.
        values = {"recipient": recipient, "message": text}
        if self._computed:
            self._compute(values, recipient, text, message_id)
        query = ""
        if self._query:
            # quote, not quote_plus: '+' and ' ' come out as %2B and %20, which every
            # server decodes alike (a '+' may or may not mean a space in a query).
            query = "?" + "&".join(
                key + quote(values[one] if one is not None else t.render(values), safe="")
                for key, one, t in self._query
            )
        headers = {name: t.render(values) for name, t in self._headers} if self._headers else None
        body: bytes | None = None
        if self._body == "json":
            document = {
                name: values[one] if one is not None else t.render(values)
                for name, one, t in self._fields
            }
            body = json.dumps(document, ensure_ascii=False).encode("utf-8")
        elif self._body == "form":
            body = "&".join(
                key + quote_plus(values[one] if one is not None else t.render(values), safe="")
                for key, one, t in self._form
            ).encode("ascii")
        return BuiltRequest(query, headers, body)


def health_body(kind: str) -> bytes | None:
    """Return the body of a health probe: ``{}`` for JSON, empty for a form, none for none."""
    if kind == "json":
        return b"{}"
    if kind == "form":
        return b""
    return None


# --------------------------------------------------------------------------- answers


def _same(expected: Any, got: Any) -> bool:
    # JSON true is not 1 and "1" is not 1: equality only within one JSON type.
    if isinstance(expected, bool) or isinstance(got, bool):
        return type(expected) is type(got) and expected == got
    if isinstance(expected, int | float) and isinstance(got, int | float):
        return bool(expected == got)
    return type(expected) is type(got) and bool(expected == got)


def refusal(fmt: RequestFormat, status: int, body: str) -> str | None:
    """Return why a 2xx answer does not meet the format's success checks, or None if it does."""
    if fmt.success_statuses and status not in fmt.success_statuses:
        allowed = ", ".join(str(s) for s in fmt.success_statuses)
        return f"HTTP {status} is not one of success-statuses ({allowed})"
    if not fmt.success_json:
        return None
    try:
        document = json.loads(body) if body.strip() else None
    except ValueError:
        return "the answer is not JSON (success-json is set)"
    if not isinstance(document, dict):
        return "the answer is not a JSON object (success-json is set)"
    for name, expected in fmt.success_json.items():
        if name not in document:
            return f"the answer has no {name!r} (success-json expects {json.dumps(expected)})"
        if not _same(expected, document[name]):
            return (
                f"the answer has {name!r} = {json.dumps(document[name], ensure_ascii=False)}, "
                f"success-json expects {json.dumps(expected, ensure_ascii=False)}"
            )
    return None
