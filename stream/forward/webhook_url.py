"""The webhook URL, a secret: checked once, and never shown beyond its scheme and host.

The path and query of a Slack incoming webhook are its credential, and user info
in a URL is one too. Logs, error messages and dead-letter details therefore
carry :func:`redact_url` of it, and error texts that may quote it go through
:func:`scrub`.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only.

    >>> redact_url("https://hooks.slack.com/services/T000/B000/XXXX")
    'https://hooks.slack.com'
    >>> redact_url("http://user:pw@127.0.0.1:8080/hook?token=1")
    'http://127.0.0.1:8080'
    """
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme or '?'}://{host}" + (f":{port}" if port else "")


def check_webhook_url(url: str) -> str:
    """``url`` when it is an absolute http(s) URL, else ``ValueError``
    (whose message shows the redacted URL only)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"webhook URL {redact_url(url)} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL {redact_url(url)} is not an absolute http(s) URL")
    return url


def scrub(text: str, url: str) -> str:
    """``text`` with the secret parts of ``url`` replaced by ``/***``.

    >>> scrub("cannot connect to http://h/hook?t=1", "http://h/hook?t=1")
    'cannot connect to /***'
    """
    parts = urlsplit(url)
    for secret in (url, parts.path + ("?" + parts.query if parts.query else ""), parts.query):
        if secret and secret not in ("/", "?"):
            text = text.replace(secret, "/***")
    return text
