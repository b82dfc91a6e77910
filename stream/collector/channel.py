"""The page's intervention channel: a session's alerts, back to its page.

A personalisation service, or the page itself, acts on an alert while the
visitor is still there: a comparison guide, a FAQ, chat. The collector reads
the alerts topic and serves each session its own alerts:

* ``GET <prefix>/s?token=...``: Server-Sent Events (``event: intervention``,
  ``id:`` the alert id). A reconnecting ``EventSource`` sends
  ``Last-Event-ID`` and gets only what came after it, so nothing is shown
  twice. A comment line every :data:`HEARTBEAT_S` keeps proxies from closing
  an idle stream; the stream ends when its token expires (the tracker
  reconnects with the fresh token of its latest events request);
* ``GET <prefix>/p?token=...&last=<id>``: the long-poll fallback, for
  browsers or proxies without streaming: up to :data:`POLL_WAIT_S` for the
  interventions after ``last``, as JSON.

**Access.** The token is issued by the collector in the answer to the
tracker's own events request (``channel.token``): an HMAC-SHA256, under
``DISENGAGE_COLLECTOR_CHANNEL_SECRET``, of the site, the session id and an
expiry ``DISENGAGE_COLLECTOR_CHANNEL_TTL_S`` ahead. It names the one session
it opens, so a page can read only its own session's alerts; a changed,
expired or foreign token is refused (401 or 403).

**What is sent.** Session alerts (hesitation, trust loss) of *treated*
sessions only: a holdout control session's alerts never reach its page. The
page gets the kind, severity, suggested action, stage, page and the reasons'
texts, never the user hash or the model's internals.

The channel's memory is bounded: the last :data:`PER_SESSION` interventions
of at most ``capacity`` sessions (alerted or waited for); an intervention
older than :data:`KEEP_S` seconds is no longer sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors.alerts import SESSION_KINDS
from detectors.uplift import CONTROL

#: Seconds between two heartbeat comments on an idle event stream (proxies
#: commonly close a silent connection after 30-60 s).
HEARTBEAT_S = 15.0
#: Longest wait of one long-poll request (seconds); below the 30 s many
#: proxies and load balancers allow an idle request.
POLL_WAIT_S = 20.0
#: Interventions kept per session (a session gets one alert by default).
PER_SESSION = 8
#: How long an intervention stays readable (seconds): a session's inactivity
#: timeout, after which the visitor is gone.
KEEP_S = 30 * 60.0
#: Sessions whose interventions are kept at most (least recently alerted go first).
CAPACITY = 100_000


_HEX64 = re.compile(r"[0-9a-f]{64}")


class TokenError(Exception):
    """A channel token that does not open the channel: ``status`` 401 (bad
    or expired) or 403 (valid, but not for this site)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ChannelTokens:
    """Tokens that open one session's channel until they expire.

    ``v1.<site>.<session id>.<expiry, epoch s>.<HMAC-SHA256>``, the site and
    session id base64url-encoded.

    >>> tokens = ChannelTokens(b"secret", ttl_s=60, clock=lambda: 1000.0)
    >>> tokens.verify(tokens.issue("shop", "s-1"))
    ('shop', 's-1')
    >>> ChannelTokens(b"other", 60, lambda: 1000.0).verify(tokens.issue("shop", "s-1"))
    Traceback (most recent call last):
    ...
    stream.collector.channel.TokenError: bad channel token
    """

    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        if not secret:
            raise ValueError("the channel secret must not be empty")
        self.secret = secret
        self.ttl_s = ttl_s
        self.clock = clock

    def _sign(self, site: str, sid: str, expires: int) -> str:
        message = f"{site}\x1f{sid}\x1f{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def issue(self, site: str, sid: str) -> str:
        expires = int(self.clock() + self.ttl_s)
        signature = self._sign(site, sid, expires)
        return f"v1.{_b64(site.encode())}.{_b64(sid.encode())}.{expires}.{signature}"

    def verify(self, token: str) -> tuple[str, str]:
        """(site, session id) of a valid token, else :class:`TokenError`."""
        try:
            version, site_b64, sid_b64, expires_text, signature = token.split(".")
            site, sid = _unb64(site_b64).decode(), _unb64(sid_b64).decode()
            expires = int(expires_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenError(401, "bad channel token") from None
        expected = self._sign(site, sid, expires)
        if version != "v1" or not _HEX64.fullmatch(signature):
            raise TokenError(401, "bad channel token")
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise TokenError(401, "bad channel token")
        if expires < self.clock():
            raise TokenError(401, "expired channel token")
        return site, sid

    def expires_at(self, token: str) -> float:
        """The expiry (epoch s) of a token :meth:`verify` accepted."""
        return float(token.split(".")[3])


@dataclass(frozen=True)
class Intervention:
    """One alert as the page gets it: ``id`` (the alert's), ``at`` (when the
    collector read it, epoch s) and ``body`` (the JSON sent)."""

    id: str
    at: float
    body: bytes


def page_view_of(alert: dict[str, Any]) -> tuple[str, Intervention | None]:
    """The session id and the intervention of an alert CloudEvent, or
    (``""``, ``None``) when it is not for a page: a hotspot alert, a control
    session's alert, or not an alert at all."""
    data = alert.get("data")
    alert_id = alert.get("id")
    if not isinstance(data, dict) or not isinstance(alert_id, str):
        return "", None
    sid = data.get("session_id")
    if data.get("kind") not in SESSION_KINDS or not isinstance(sid, str) or not sid:
        return "", None
    if data.get("treatment") == CONTROL:
        return "", None  # the holdout: nothing acts on it, the page included
    reasons = data.get("reasons")
    if not isinstance(reasons, list):
        reasons = []
    body = {
        "id": alert_id,
        "kind": data.get("kind"),
        "severity": data.get("severity"),
        "action": data.get("suggested_action"),
        "stage": data.get("stage"),
        "page": data.get("page"),
        "time": alert.get("time"),
        "reasons": [
            {"signal": r.get("signal"), "text": r.get("text")}
            for r in reasons
            if isinstance(r, dict)
        ],
    }
    return sid, Intervention(alert_id, 0.0, orjson.dumps(body))


@dataclass
class _Session:
    items: list[Intervention] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def after(self, last_id: str | None, oldest: float) -> list[Intervention]:
        """The kept items after the one with ``last_id`` (all of them when
        ``last_id`` is unknown or ``None``) that are not older than ``oldest``."""
        ids = [i.id for i in self.items]
        start = ids.index(last_id) + 1 if last_id in ids else 0
        return [i for i in self.items[start:] if i.at >= oldest]


class SessionChannels:
    """Recent interventions by session id, and the requests waiting for them."""

    def __init__(
        self,
        capacity: int = CAPACITY,
        per_session: int = PER_SESSION,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        self.per_session = per_session
        self.keep_s = keep_s
        self.clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def publish(self, sid: str, intervention: Intervention) -> bool:
        """Keep ``intervention`` for ``sid`` and wake its waiting requests;
        False for an id the session has already (a redelivered alert)."""
        session = self._sessions.get(sid)
        if session is None:
            session = self._sessions[sid] = _Session()
        self._sessions.move_to_end(sid)
        if any(i.id == intervention.id for i in session.items):
            return False
        now = self.clock()
        session.items.append(Intervention(intervention.id, now, intervention.body))
        del session.items[: -self.per_session]
        changed, session.changed = session.changed, asyncio.Event()
        changed.set()
        self._trim()
        return True

    def _trim(self) -> None:
        """Keep at most ``capacity`` sessions: the least recently alerted (or
        waited for) go first, and with them any request still waiting on
        one ends at its timeout with nothing, as it would have anyway."""
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)

    def after(self, sid: str, last_id: str | None) -> list[Intervention]:
        """What ``sid`` has after ``last_id`` (see :meth:`_Session.after`)."""
        session = self._sessions.get(sid)
        if session is None:
            return []
        return session.after(last_id, self.clock() - self.keep_s)

    async def wait(self, sid: str, last_id: str | None, timeout: float) -> list[Intervention]:
        """What ``sid`` has after ``last_id``, waiting up to ``timeout``
        seconds for something when there is nothing yet."""
        found = self.after(sid, last_id)
        if found or timeout <= 0:
            return found
        session = self._sessions.get(sid)
        if session is None:  # nothing published for it yet: wait on a fresh entry
            session = self._sessions[sid] = _Session()
            self._trim()
        try:
            await asyncio.wait_for(session.changed.wait(), timeout)
        except TimeoutError:
            return []
        return self.after(sid, last_id)


def sse_message(intervention: Intervention) -> bytes:
    """One Server-Sent Events message of an intervention."""
    return (
        b"id: "
        + intervention.id.encode()
        + b"\nevent: intervention\ndata: "
        + intervention.body
        + b"\n\n"
    )
