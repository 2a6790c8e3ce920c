"""What msgsend shows of values it does not own: secrets hidden, control characters escaped.

One set of functions, used by ``config show`` (text and ``--json``), error messages, logs and
alerts, so that a secret is hidden the same way wherever it could surface:

- ``redact_url``: a password in a URL (``redis://user:pw@host`` → ``redis://user:***@host``)
  and credential query parameters (``?password=…``, ``?token=…``);
- ``redact_endpoint``: a webhook or Apprise URL reduced to scheme and host (their paths, and for
  many Apprise services their "host", are tokens);
- ``redact_headers``: the values of request headers that carry credentials;
- ``redact_text``: credentials inside free text (``Authorization: …``, ``password=…``,
  ``Bearer …``, URL passwords);
- ``printable``: text from elsewhere (a provider's error body) with control characters escaped,
  so it can neither move the terminal's cursor nor forge a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "MASK",
    "printable",
    "redact_endpoint",
    "redact_headers",
    "redact_text",
    "redact_url",
]

#: what a hidden secret is shown as
MASK: Final = "***"

#: query parameters and header names whose values are credentials
_SECRET_NAME = re.compile(
    r"(?i)(auth|password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|"
    r"signature|sig|session|cookie|credential)"
)

_SECRET_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # "Authorization: Basic ...", "'Authorization': 'Basic ...'", authorization=...
    # (not a configuration key's path: "sms.request.headers.Authorization: header ...")
    (
        re.compile(r"(?i)((?<!\.)\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}]+"),
        r"\1" + MASK,
    ),
    # a bare "Basic dXNlcjpwYXNz" / "Bearer abc.def" credential anywhere else
    # (needs a digit or a base64 symbol, so that prose such as "basic validation" survives)
    (
        re.compile(
            r"(?i)\b(basic|bearer|digest)\s+(?=[A-Za-z._~\-]*[0-9+/=])[A-Za-z0-9+/=._~\-]{6,}"
        ),
        r"\1 " + MASK,
    ),
    # password=..., "password": "...", MSGSEND_SMS_AUTH_PASSWORD=..., api_key: ...
    (
        re.compile(
            r"(?i)(\b[\w\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key)[\"']?"
            r"\s*[:=]\s*[\"']?)(?!\*\*\*|expected |unknown |is deprecated)[^\"'\s,;}&]+"
        ),
        r"\1" + MASK,
    ),
    # scheme://user:password@host and scheme://:password@host
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^/\s@]+@"), r"\1" + MASK + "@"),
)

# C0 controls, DEL, C1 controls, and the Unicode bidi embeddings/overrides/isolates/marks and
# line/paragraph separators: each can rewrite what a terminal or a log viewer shows.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    r"""Return ``text`` with control and bidi characters escaped (``\x1b``, ``\u202e``, ``\n``).

    >>> printable("bad\x1b[2Jrequest\r\n")
    'bad\\x1b[2Jrequest\\r\\n'
    """
    return _UNPRINTABLE.sub(_escape, text)


def _host_port(parts: object) -> str:
    hostname = getattr(parts, "hostname", None) or ""
    try:
        port = getattr(parts, "port", None)
    except ValueError:
        port = None
    if ":" in hostname:  # an IPv6 literal
        hostname = f"[{hostname}]"
    return f"{hostname}:{port}" if port is not None else hostname


def _redact_query(query: str) -> str:
    pairs = []
    for pair in query.split("&"):
        name, sep, _value = pair.partition("=")
        pairs.append(f"{name}={MASK}" if sep and _SECRET_NAME.search(name) else pair)
    return "&".join(pairs)


def redact_url(url: str) -> str:
    """Return ``url`` with the password of its userinfo and credential parameters hidden.

    >>> redact_url("redis://default:s3cret@cache:6379/0")
    'redis://default:***@cache:6379/0'
    >>> redact_url("https://api.example.com/v1?token=abc&lang=ko")
    'https://api.example.com/v1?token=***&lang=ko'
    """
    if "://" not in url:  # "user:pw@host:9091", as --pushgateway accepts it
        shown = redact_url(f"http://{url}")
        return shown.removeprefix("http://") if shown.startswith("http://") else shown
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    userinfo, at, _host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{_host}"
    query = _redact_query(parts.query) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        rebuilt += f"?{query}"
    if parts.fragment:
        rebuilt += f"#{parts.fragment}"
    return rebuilt


#: schemes whose host part is always a machine's name
_WEB_SCHEMES: Final = frozenset({"http", "https"})


def _looks_like_a_host(scheme: str, hostname: str) -> bool:
    """Return whether an URL's host is a machine's name (not a token, as Apprise URLs use)."""
    return scheme in _WEB_SCHEMES or hostname == "localhost" or "." in hostname or ":" in hostname


def redact_endpoint(url: str) -> str:
    """Return only the scheme and host of a webhook or Apprise URL: the rest may be a token.

    Many Apprise URLs carry the token where the host would be (``tgram://BOTTOKEN/CHAT``):
    a "host" that is not a machine's name (no dot, not ``localhost``) is hidden too.

    >>> redact_endpoint("https://hooks.slack.com/services/T00/B00/secret")
    'https://hooks.slack.com'
    >>> redact_endpoint("tgram://123456789:AAHdqTcvbXorGKB/12315544")
    'tgram://***'
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return MASK
    scheme = parts.scheme or "?"
    host = _host_port(parts)
    if not host or not _looks_like_a_host(scheme.lower(), parts.hostname or ""):
        return f"{scheme}://{MASK}"
    return f"{scheme}://{host}"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with the values of credential headers hidden.

    A header is a credential when its name says so (``Authorization``, ``X-Api-Key``,
    ``X-Auth-Token``, ``Cookie``…) or its value is a ``Basic``/``Bearer`` credential.

    >>> redact_headers({"X-Api-Key": "k3y", "Accept": "application/json"})
    {'X-Api-Key': '***', 'Accept': 'application/json'}
    """
    out = {}
    for name, value in headers.items():
        secret = _SECRET_NAME.search(name) or re.match(r"(?i)\s*(basic|bearer|token)\s", value)
        out[name] = MASK if secret else value
    return out


def redact_text(text: str) -> str:
    """Return free ``text`` with credentials hidden (headers, ``password=…``, URL passwords).

    >>> redact_text("POST http://u:pw@host failed; Authorization: Basic dTpwdw==")
    'POST http://u:***@host failed; Authorization: ***'
    """
    if not text:
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
