"""What an adapter makes of one incoming call: an event of our contract, or why not.

Adapters (:mod:`.contract`, :mod:`.segment`, :mod:`.snowplow`) are pure: they
turn a request's body into :class:`Call` objects and never do I/O. The
collector then resolves sessions that the vendor does not name
(``visitor``), validates each event with the core's parser, and
produces the valid ones; a refused call goes to the dead-letter topic with
its reason and its original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Reasons of the collector's own refusals (besides the core parser's
#: ``INVALID_REASONS``), as ``dlq.reason`` and in the response.
COLLECTOR_REASONS: tuple[str, ...] = ("bad_body", "unmapped", "no_session")


@dataclass(frozen=True, slots=True)
class Call:
    """One call of a request, in request order.

    ``event``: the call as an event of our contract (before validation);
    ``None`` when it could not be mapped or carries no interaction
    (``ignored``, e.g. Segment's ``identify``). A call with a ``reason`` (and
    ``detail``) is refused, whether or not it was mapped (a mapped call
    without a session keeps its ``event``, so tests can read the mapping). ``raw``: the
    call's original bytes, for the dead-letter topic. ``visitor``: set when
    the vendor names no session (Segment without ``context.sessionId``): the
    session is then this visitor's (anonymous id, else user id), cut after
    the inactivity timeout (:mod:`stream.collector.sessions`).
    """

    event: dict[str, Any] | None
    raw: bytes
    reason: str | None = None
    detail: str = ""
    ignored: bool = False
    visitor: str | None = None

    @staticmethod
    def refused(raw: bytes, reason: str, detail: str) -> Call:
        return Call(None, raw, reason, detail[:200])

    @staticmethod
    def skipped(raw: bytes) -> Call:
        return Call(None, raw, ignored=True)


def path_of(url: str) -> str:
    """The path of a URL, without scheme, host, query or fragment (queries
    and fragments can carry personal data: they never leave the collector).

    >>> path_of("https://shop.example/checkout/2?email=a@b.c#top")
    '/checkout/2'
    >>> path_of("/products/12?ref=x"), path_of("")
    ('/products/12', '/')
    """
    rest = url.split("#", 1)[0].split("?", 1)[0]
    if "://" in rest:
        rest = rest.split("://", 1)[1]
        rest = rest[rest.find("/") :] if "/" in rest else "/"
    return rest or "/"
