"""Redaction of secrets in what jinmei logs or prints: URLs, DSNs and HTTP headers.

jinmei never takes a secret from a file or a URL (passwords and tokens come from the
environment), but a URL typed by an operator may still carry one — ``influxdb://h?token=…``,
``ftp://user:pass@h/`` — and a header dict may hold a signature. Everything that jinmei logs or
prints about a connection goes through :func:`redact_url` or :func:`redact_headers` first, so
a secret never reaches a terminal, a journal or a bug report. It lives in ``config/``, the
lowest layer, so that every package can use the same one.

    >>> redact_url("mqtt://gw:s3cret@broker:8883")
    'mqtt://gw:***@broker:8883'
    >>> redact_url("influxdb://db:8086?org=o&bucket=b&token=abc")
    'influxdb://db:8086?org=o&bucket=b&token=***'
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["MASK", "is_secret_name", "redact_headers", "redact_url"]

MASK = "***"
# A query parameter or header whose name contains one of these holds a secret.
_SECRET_WORDS = ("pass", "secret", "token", "key", "signature", "sig", "auth", "credential",
                 "cookie")


def is_secret_name(name: str) -> bool:
    """True for names such as ``password``, ``token``, ``X-Jinmei-Signature``, ``api_key``."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` with the password of its user part and every secret-named query value masked;
    anything that does not parse as a URL is returned masked whole if it has a user part."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            name, colon, _password = user.partition(":")
            netloc = f"{name}{':' + MASK if colon else ''}@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, MASK if is_secret_name(k) else v) for k, v in pairs],
                              safe="*")
        shown = f"{parts.scheme}:" if parts.scheme else ""
        if url[len(shown):].startswith("//"):  # kept even when empty: sqlite:///path
            shown += "//" + netloc
        return (shown + parts.path + (f"?{query}" if query else "")
                + (f"#{parts.fragment}" if parts.fragment else ""))
    except ValueError:
        return MASK if "@" in url else url


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with every secret-named value (Authorization, signatures,
    tokens, cookies) masked."""
    return {k: MASK if is_secret_name(k) else v for k, v in headers.items()}
