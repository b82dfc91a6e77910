"""Alert delivery to a webhook: ``disengage alerts forward --webhook URL``.

Reads the alerts topic (CloudEvents JSON, see ``detectors.alerts``) with a
consumer group of its own and POSTs each alert to a webhook, for marketing ops.

Payloads (``--format``)
-----------------------
``slack`` (default): a Slack incoming-webhook message, ``{"text": ..., "blocks":
[...]}``. ``text`` is the complete message (what notifications and clients
without blocks show); ``blocks`` are mrkdwn ``section`` blocks and a ``context``
block with the same content. A message carries the kind, severity, page, page
type, journey stage, up to three reasons in words (``data.reasons[].text``),
the suggested action and the alert id; hotspots carry their ``page_type/step``
key and the problem rate before and now. Values are escaped for mrkdwn (``&``,
``<``, ``>``): a page path can never mention ``<!channel>`` or forge a link.

``json``: the alert's CloudEvent as it is on the topic (valid against
``ALERT_JSON_SCHEMA``) plus one top-level attribute ``summary``, a one-line
readable message. ``data.user_hash`` is always null.

Privacy: user ids (``data.user_hash``) are never sent, in either format. The
session id is sent by default: it is pseudonymous and it is what ops need to
find the session in their replay or CRM tools. ``--no-session-id`` leaves it
out (in ``json``: ``data.session_id`` and ``data.trigger_event_id`` null and
``subject`` "redacted" for session alerts). Logs show the webhook's scheme and
host only: a Slack webhook URL is a secret.

Filters
-------
``--kind``, ``--severity`` (repeatable), ``--min-severity`` (low < medium <
high) and ``--page-type`` (repeatable); all given filters must pass. The page
type of an alert is ``data.page_type`` when present, else the first part of the
hotspot key (``checkout/2`` -> ``checkout``), else inferred from ``data.page``
by the core's :class:`detectors.events.PageClassifier`; ``unknown`` matches
alerts without one. Filtered alerts are committed and counted, not sent.

Rate limit
----------
``--rate-limit N/min`` (also ``N/s``, ``N/h``; ``0`` = unlimited; default
30/min) is a token bucket of N tokens refilled continuously at N per window.
An alert that finds the bucket empty is held back: not posted on its own, but
counted into a digest. The first held-back alert opens a window of the rate's
length; when it has passed, one digest post says how many alerts were held
back, by kind ("12 more alerts held back by the rate limit (30/min) between
10:01:05 and 10:02:05 UTC: 8 trust_loss, 4 hesitation."). So a storm costs at
most N alert posts plus one digest per window. Digests spend no token. In
``json`` the digest is a CloudEvent of type ``disengage.forward.digest`` whose
data lists the counts and (up to 100) held-back alert ids.

Held-back messages are kept in memory (their bytes are what a refused digest
dead-letters) but at most ``HELD_MAX`` (10,000, some 20 MB): when that many
are held, the forwarder stops reading, waits for the window to end and sends
the digest, then goes on. Their offsets stay uncommitted meanwhile anyway.
The ids of an accepted digest are recorded for de-duplication like posted
alerts, so a restart before the commit does not post them one by one.

Delivery
--------
* Each post has the alert id in its payload and as the ``Idempotency-Key``
  header (digests: ``digest-<hash of the ids>``), so receivers can de-duplicate.
* Timeouts (``--timeout``, 10 s), connection errors, 408, 429 and 5xx are
  retried forever with exponential backoff and full jitter (``--backoff-base``
  0.5 s, ``--backoff-cap`` 30 s); a ``Retry-After`` (seconds or HTTP date) is
  honoured instead, up to 10 minutes. Any other status (3xx, 4xx) is permanent:
  the alert goes to the forward dead-letter topic (``--dlq-topic``, default
  ``<alerts topic>.forward.dlq``) with headers ``dlq.reason`` = ``http_<status>``,
  ``dlq.detail`` (the start of the answer), ``dlq.alert.id`` and the source
  headers of the worker's DLQ. Input that is not JSON or not a disengage alert
  goes there too (``not_json``, ``not_cloudevent``, ``not_an_alert``), and so
  does an alert whose payload cannot be built (``not_an_alert``, the detail
  names the error): one odd message never stops the forwarder. Dead-letter
  writes are retried while Kafka fails, except when Kafka refuses the record
  itself (e.g. too large): that is logged as an error with its position and
  skipped.
* Offsets are committed per partition up to the last message fully handled:
  accepted by the webhook (2xx), dead-lettered, filtered, a duplicate, or held
  back *and* summarised in a digest the webhook accepted. Posts go one at a
  time, in partition order, so a failing webhook holds everything: nothing is
  committed until it answers. Commits happen at most every
  ``--commit-interval`` seconds, on partition revocation and on exit (the
  last commit waits at most 10 s, so a stop during a Kafka outage exits).
* Rebalances: a revocation commits what was handled and drops the held-back
  alerts of the revoked partitions. The rest of a batch fetched before a
  rebalance is abandoned, not handled: aiokafka resumes a (re)assigned
  partition from its committed offset, so those messages, and the dropped
  held-back ones, are read again and never committed past unseen.
* De-duplication on the alert id: ids already delivered are skipped, using a
  bounded in-memory LRU and a Redis record ``dg:fwd:{<group>}:<id>`` (TTL 7
  days) written after the webhook accepted. A restart after "posted but not yet
  committed" therefore does not post again. ``--no-redis`` uses the LRU only.
  When Redis fails, forwarding goes on (a warning and
  ``disengage_forward_redis_errors_total``): delivery matters more than dedupe.
  A crash between the webhook's answer and the Redis write can repeat one post;
  the ``Idempotency-Key`` covers it.
* A new consumer group starts at the earliest alert (``--offset-reset``): the
  forwarder is a delivery service, and alerts produced before its first start
  (or while its committed offsets had expired) must not be lost; the rate limit
  and the digest keep such a backlog from flooding the channel.
* SIGTERM/SIGINT: the post in flight finishes (no retry starts), a pending
  digest gets one attempt, what was handled is committed, exit 0.

The pure parts (parsing, page type, filters, payloads, token bucket, digest
window, backoff, offset tracking) are plain functions and classes with
injectable clocks; :class:`Forwarder` is the consumer loop around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import signal
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from detectors.alerts import ALERT_KINDS, SEVERITIES, rfc3339
from detectors.config import PAGE_TYPES, DetectorConfig
from detectors.events import PageClassifier
from stream.alert_view import AlertView, alert_summary, view_of
from stream.metrics import ForwarderMetrics

log = logging.getLogger("disengage.forward")

FORMATS: tuple[str, ...] = ("slack", "json")
#: ``--page-type`` values: the core's page types, and ``unknown`` for alerts
#: whose page type cannot be told.
PAGE_TYPE_CHOICES: tuple[str, ...] = (*PAGE_TYPES, "unknown")
#: ``dlq.reason`` of input that is not an alert.
INVALID_REASONS: tuple[str, ...] = ("not_json", "not_cloudevent", "not_an_alert")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
SEVERITY_EMOJI: dict[str, str] = {
    "low": ":large_yellow_circle:",
    "medium": ":large_orange_circle:",
    "high": ":red_circle:",
}
DEFAULT_GROUP = "disengage-forwarder"
DIGEST_SOURCE = "urn:disengage:forwarder"
#: Ids of delivered alerts kept in memory (about 100 bytes each).
LRU_CAPACITY = 100_000
#: Lifetime of the Redis record of a delivered alert (seconds): 7 days, the
#: default retention of a Kafka topic.
DEDUPE_TTL_S = 7 * 24 * 3600
#: Longest ``Retry-After`` honoured (seconds).
RETRY_AFTER_MAX_S = 600.0
#: Held-back alert ids listed in a JSON digest.
DIGEST_MAX_IDS = 100
#: Held-back messages kept in memory at most; when reached, the forwarder
#: reads nothing more until the window's digest went out.
HELD_MAX = 10_000
#: Longest wait for the last commit on exit (seconds).
FINAL_COMMIT_TIMEOUT_S = 10.0
#: aiokafka errors of a dead-letter write that no retry can fix (the record
#: itself is refused): logged and skipped. Every other error is retried.
PERMANENT_DLQ_ERRORS: tuple[str, ...] = (
    "MessageSizeTooLargeError",
    "RecordTooLargeError",
    "RecordListTooLargeError",
    "CorruptRecordException",
)

_ALERT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(s|sec|second|m|min|minute|h|hr|hour))?\s*$", re.I)
_WINDOWS = {"s": 1.0, "m": 60.0, "h": 3600.0}


# ====================================================================== input
class InvalidAlert(ValueError):
    """A message that is not an alert; ``reason`` is one of INVALID_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse_alert(raw: bytes | None) -> dict[str, Any]:
    """The alert CloudEvent in ``raw``, checked as far as forwarding needs
    (attributes, id usable as a header, known kind and severity).

    >>> parse_alert(b'{"x": 1')
    Traceback (most recent call last):
    ...
    stream.forward.InvalidAlert: not_json: Expecting ',' delimiter: line 1 column 8 (char 7)
    """
    if raw is None:
        raise InvalidAlert("not_json", "empty message (tombstone)")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidAlert("not_json", str(exc)) from None
    if not isinstance(obj, dict):
        raise InvalidAlert("not_cloudevent", f"a JSON {type(obj).__name__}, not an object")
    for attr in ("specversion", "id", "source", "type"):
        if not isinstance(obj.get(attr), str) or not obj[attr]:
            raise InvalidAlert("not_cloudevent", f"no string attribute {attr!r}")
    if obj["specversion"] != "1.0":
        raise InvalidAlert("not_cloudevent", f"specversion {obj['specversion']!r}, not 1.0")
    if not _ALERT_ID.match(obj["id"]):
        raise InvalidAlert("not_cloudevent", "id is not 1-128 characters of [A-Za-z0-9._:-]")
    data = obj.get("data")
    if not isinstance(data, dict):
        raise InvalidAlert("not_an_alert", "data is not an object")
    kind = data.get("kind")
    if kind not in ALERT_KINDS or obj["type"] != f"disengage.alert.{kind}":
        raise InvalidAlert("not_an_alert", f"type {obj['type']!r} / kind {kind!r}")
    if data.get("severity") not in SEVERITIES:
        raise InvalidAlert("not_an_alert", f"severity {data.get('severity')!r}")
    return obj


def default_classifier(config: DetectorConfig | None = None) -> Callable[[str], str | None]:
    """The core's page-type inference (``config.page_patterns``)."""
    return PageClassifier((config or DetectorConfig()).page_patterns).classify


def page_type_of(alert: Mapping[str, Any], classify: Callable[[str], str | None]) -> str | None:
    """Page type of an alert: ``data.page_type``, else the first part of the
    hotspot key (``data.hotspot_key``, or the subject ``hotspot/<key>``), else
    ``classify(data.page)``; ``None`` when none of them tells."""
    data = alert.get("data") or {}
    explicit = data.get("page_type")
    if isinstance(explicit, str) and explicit:
        return explicit
    key = data.get("hotspot_key")
    subject = alert.get("subject")
    if not isinstance(key, str) and isinstance(subject, str) and subject.startswith("hotspot/"):
        key = subject[len("hotspot/") :]
    if isinstance(key, str) and key:
        return key.split("/", 1)[0]
    page = data.get("page")
    if isinstance(page, str) and page:
        return classify(page)
    return None


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to send; empty sets and ``None`` mean "any"."""

    kinds: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    min_severity: str | None = None
    page_types: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.kinds, ALERT_KINDS, "kind"),
            (self.severities, SEVERITIES, "severity"),
            (self.page_types, PAGE_TYPE_CHOICES, "page type"),
        ):
            unknown = sorted(set(value) - set(allowed))
            if unknown:
                raise ValueError(f"unknown {what} {', '.join(unknown)} (one of {allowed})")
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.min_severity} (one of {SEVERITIES})")

    def rejects(self, alert: Mapping[str, Any], page_type: str | None) -> str | None:
        """The first criterion ``alert`` fails (``kind``, ``severity`` or
        ``page_type``), or ``None`` when it is to be sent."""
        data = alert.get("data") or {}
        if self.kinds and data.get("kind") not in self.kinds:
            return "kind"
        severity = data.get("severity")
        if self.severities and severity not in self.severities:
            return "severity"
        if self.min_severity is not None and SEVERITY_RANK.get(
            str(severity), -1
        ) < SEVERITY_RANK.get(self.min_severity, 0):
            return "severity"
        if self.page_types and (page_type or "unknown") not in self.page_types:
            return "page_type"
        return None


# =================================================================== payloads
def mrkdwn_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives a meaning to.

    >>> mrkdwn_escape("<!channel> & co")
    '&lt;!channel&gt; &amp; co'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _where(v: AlertView, esc: Callable[[str], str]) -> str:
    if v.kind == "friction_hotspot":
        where = f"Hotspot: {esc(v.hotspot_key or v.page or '-')}"
    else:
        where = f"Page: {esc(v.page or '-')}"
    if v.page_type:
        where += f" (page type {esc(v.page_type)})"
    if v.stage:
        where += f", stage {esc(v.stage)}"
    return where


def _rates(v: AlertView) -> str | None:
    if v.rate_before is None and v.rate_now is None:
        return None
    before = f"{v.rate_before:.0%}" if v.rate_before is not None else "?"
    now = f"{v.rate_now:.0%}" if v.rate_now is not None else "?"
    visits = f" over {v.visits} visits" if v.visits is not None else ""
    return f"Problem rate: {before} before, {now} now{visits}"


def alert_text(v: AlertView, escape: bool = True) -> str:
    """The complete readable message, one fact per line (Slack ``text``;
    mrkdwn-escaped unless ``escape`` is false)."""
    esc = mrkdwn_escape if escape else (lambda s: s)
    lines = [f"{v.title} alert ({v.kind}), severity {v.severity}", _where(v, esc)]
    rates = _rates(v)
    if rates:
        lines.append(rates)
    if v.reasons:
        lines.append("Why: " + "; ".join(esc(r) for r in v.reasons))
    lines.append(f"Suggested action: {esc(v.action)}")
    ident = f"Alert id: {v.alert_id}"
    if v.session_id:
        ident = f"Session: {esc(v.session_id)}. {ident}"
    lines.append(ident)
    return "\n".join(lines)


def slack_payload(v: AlertView) -> dict[str, Any]:
    """Slack incoming-webhook message: ``text`` plus mrkdwn blocks."""
    esc = mrkdwn_escape
    emoji = SEVERITY_EMOJI.get(v.severity, ":warning:")
    fields = []
    if v.kind == "friction_hotspot":
        fields.append(f"*Hotspot*\n{esc(v.hotspot_key or v.page or '-')}")
    else:
        fields.append(f"*Page*\n{esc(v.page or '-')}")
    fields += [
        f"*Page type*\n{esc(v.page_type or 'unknown')}",
        f"*Stage*\n{esc(v.stage or '-')}",
        f"*Severity*\n{esc(v.severity)}",
    ]
    rates = _rates(v)
    if rates:
        fields.append("*Problem rate*\n" + rates.split(": ", 1)[1])
    blocks: list[dict[str, Any]] = [
        _section(f"{emoji} *{esc(v.title)}* alert (`{v.kind}`), severity *{esc(v.severity)}*"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if v.reasons:
        blocks.append(_section("*Why*\n" + "\n".join(f"• {esc(r)}" for r in v.reasons)))
    blocks.append(_section(f"*Suggested action*\n{esc(v.action)}"))
    context = f"Alert id `{v.alert_id}`"
    if v.session_id:
        context += f" · session {esc(v.session_id)}"
    if v.time:
        context += f" · event time {esc(v.time)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": alert_text(v), "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def json_payload(alert: Mapping[str, Any], v: AlertView, include_session: bool) -> dict[str, Any]:
    """The CloudEvent with ``user_hash`` null (and the session left out
    unless ``include_session``), plus a one-line ``summary``."""
    # a deep copy, NaN and infinite numbers (not JSON, but json.loads takes
    # them on the topic) made null
    out: dict[str, Any] = json.loads(json.dumps(alert), parse_constant=lambda _: None)
    data = out["data"]
    data["user_hash"] = None
    if not include_session and data.get("session_id") is not None:
        data["session_id"] = None
        data["trigger_event_id"] = None
        out["subject"] = "redacted"
    out["summary"] = alert_summary(v)
    return out


def build_payload(
    alert: Mapping[str, Any], page_type: str | None, fmt: str, include_session: bool
) -> dict[str, Any]:
    """The body of the post of ``alert`` in format ``fmt`` (slack or json)."""
    v = view_of(alert, page_type, include_session)
    if fmt == "slack":
        return slack_payload(v)
    if fmt == "json":
        return json_payload(alert, v, include_session)
    raise ValueError(f"unknown format {fmt!r} (one of {FORMATS})")


def encode(payload: Mapping[str, Any]) -> bytes:
    """Strict JSON (``ValueError`` on NaN or infinite numbers)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# ================================================================ rate limit
@dataclass(frozen=True)
class RateLimit:
    """``count`` alerts per ``window_s`` seconds; ``count`` 0 = unlimited."""

    count: int
    window_s: float

    def __str__(self) -> str:
        if self.count == 0:
            return "unlimited"
        unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(self.window_s, f"{self.window_s:g}s")
        return f"{self.count}/{unit}"


def parse_rate_limit(text: str) -> RateLimit:
    """``N/min``, ``N/s``, ``N/h`` or ``N`` (per minute); ``0`` = unlimited.

    >>> parse_rate_limit("30/min"), parse_rate_limit("5/s"), str(parse_rate_limit("0"))
    (RateLimit(count=30, window_s=60.0), RateLimit(count=5, window_s=1.0), 'unlimited')
    """
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate limit {text!r} is not N/min, N/s, N/h or 0")
    unit = (match.group(2) or "m")[0].lower()
    return RateLimit(int(match.group(1)), _WINDOWS[unit])


class TokenBucket:
    """Token bucket: ``capacity`` tokens, refilled continuously at
    ``capacity / window_s`` tokens per second. ``clock`` returns seconds
    (monotonic). A capacity of 0 means unlimited."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(limit.count)
        self.per_s = limit.count / limit.window_s if limit.window_s > 0 else 0.0
        self.clock = clock
        self.tokens = self.capacity
        self.at = clock()

    def try_take(self) -> bool:
        """Take one token if there is one."""
        if self.capacity <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.at) * self.per_s)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


T = TypeVar("T")


@dataclass(frozen=True)
class Digest:
    """Alerts held back in one window; times are Unix seconds."""

    count: int
    by_kind: dict[str, int]
    by_severity: dict[str, int]
    started: float
    ended: float
    ids: tuple[str, ...]

    @property
    def key(self) -> str:
        """Its idempotency key, from the held-back ids."""
        digest = hashlib.sha256("\n".join(sorted(self.ids)).encode()).hexdigest()[:32]
        return f"digest-{digest}"


class HoldBack(Generic[T]):
    """The alerts held back by the rate limit since the current window
    opened (at the first of them). ``clock`` returns Unix seconds."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self.started: float | None = None
        self._items: list[tuple[str, str, str, T]] = []
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, alert_id: str, kind: str, severity: str, token: T) -> None:
        if self.started is None:
            self.started = self.clock()
        self._items.append((alert_id, kind, severity, token))
        self._ids.add(alert_id)

    def holds(self, alert_id: str) -> bool:
        return alert_id in self._ids

    def due(self) -> bool:
        """True once the window of the first held-back alert has passed."""
        return self.started is not None and self.clock() - self.started >= self.window_s

    def remaining(self) -> float:
        """Seconds until :meth:`due` (0 when due or when nothing is held)."""
        if self.started is None:
            return 0.0
        return max(0.0, self.window_s - (self.clock() - self.started))

    def take(self) -> tuple[Digest, list[T]]:
        """The digest of the window and its tokens; opens a new window."""
        kinds = Counter(kind for _, kind, _, _ in self._items)
        severities = Counter(sev for _, _, sev, _ in self._items)
        digest = Digest(
            count=len(self._items),
            by_kind=dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
            by_severity={s: severities[s] for s in reversed(SEVERITIES) if severities[s]},
            started=self.started if self.started is not None else self.clock(),
            ended=self.clock(),
            ids=tuple(alert_id for alert_id, _, _, _ in self._items),
        )
        tokens = [token for _, _, _, token in self._items]
        self._items, self._ids, self.started = [], set(), None
        return digest, tokens

    def drop(self, gone: Callable[[T], bool]) -> int:
        """Forget held-back alerts whose token is ``gone``; returns how many."""
        keep = [item for item in self._items if not gone(item[3])]
        dropped = len(self._items) - len(keep)
        self._items = keep
        self._ids = {item[0] for item in keep}
        if not keep:
            self.started = None
        return dropped


def digest_text(digest: Digest, limit: RateLimit) -> str:
    """The digest in words, e.g. "12 more alerts held back by the rate limit
    (30/min) between 10:01:05 and 10:02:05 UTC: 8 trust_loss, 4 hesitation."

    >>> d = Digest(3, {"trust_loss": 2, "hesitation": 1}, {"medium": 3}, 0.0, 60.0, ("a", "b", "c"))
    >>> digest_text(d, RateLimit(30, 60.0))
    '3 more alerts held back by the rate limit (30/min) between 00:00:00 and 00:01:00 UTC: 2 trust_loss, 1 hesitation.'
    """  # noqa: E501
    noun = "alert" if digest.count == 1 else "alerts"
    kinds = ", ".join(f"{n} {kind}" for kind, n in digest.by_kind.items())
    return (
        f"{digest.count} more {noun} held back by the rate limit ({limit}) between "
        f"{_hms(digest.started)} and {_hms(digest.ended)} UTC: {kinds}."
    )


def _hms(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")


def digest_payload(digest: Digest, limit: RateLimit, fmt: str) -> dict[str, Any]:
    """The digest post: a Slack message, or a CloudEvent
    ``disengage.forward.digest`` with counts and up to 100 alert ids."""
    text = digest_text(digest, limit)
    if fmt == "slack":
        return {"text": text, "blocks": [_section(":hourglass: " + mrkdwn_escape(text))]}
    return {
        "specversion": "1.0",
        "id": digest.key,
        "source": DIGEST_SOURCE,
        "type": "disengage.forward.digest",
        "time": rfc3339(int(digest.ended * 1000)),
        "datacontenttype": "application/json",
        "summary": text,
        "data": {
            "held_back": digest.count,
            "by_kind": digest.by_kind,
            "by_severity": digest.by_severity,
            "rate_limit": str(limit),
            "window_start": rfc3339(int(digest.started * 1000)),
            "window_end": rfc3339(int(digest.ended * 1000)),
            "alert_ids": list(digest.ids[:DIGEST_MAX_IDS]),
        },
    }


# ================================================================== delivery
Verdict = Literal["accepted", "retry", "permanent"]


def classify_status(status: int) -> Verdict:
    """2xx accepted; 408, 429 and 5xx retried; anything else permanent.

    >>> [classify_status(s) for s in (200, 204, 408, 429, 503, 400, 404, 301)]
    ['accepted', 'accepted', 'retry', 'retry', 'retry', 'permanent', 'permanent', 'permanent']
    """
    if 200 <= status < 300:
        return "accepted"
    if status in (408, 429) or 500 <= status < 600:
        return "retry"
    return "permanent"


def retry_cause(status: int | None, timed_out: bool = False) -> str:
    """The ``cause`` label of a retry (see ``FORWARD_RETRY_CAUSES``)."""
    if status is None:
        return "timeout" if timed_out else "connection"
    if status in (408, 429):
        return f"http_{status}"
    return "http_5xx"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter (seconds): attempt ``n`` (0 for
    the first retry) waits uniformly in ``[0, min(cap_s, base_s * 2**n)]``."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff needs 0 < base <= cap")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the wait before retry ``attempt`` (seconds)."""
        if attempt >= 64:
            return self.cap_s
        return min(self.cap_s, self.base_s * 2.0**attempt)

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an
    HTTP date (``now`` is Unix seconds); ``None`` when absent or unreadable.

    >>> parse_retry_after("7", 0.0), parse_retry_after("soon", 0.0)
    (7.0, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", 10.0)
    20.0
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return max(0.0, moment.timestamp() - now)
    return max(0.0, seconds) if seconds == seconds else None  # NaN


def retry_delay(
    attempt: int,
    retry_after: str | None,
    backoff: Backoff,
    rng: random.Random,
    now: float,
    retry_after_max_s: float = RETRY_AFTER_MAX_S,
) -> float:
    """Seconds before retry ``attempt`` (0-based): the ``Retry-After`` when the
    answer had a readable one (at most ``retry_after_max_s``), else the
    backoff with full jitter."""
    asked = parse_retry_after(retry_after, now)
    if asked is not None:
        return min(asked, retry_after_max_s)
    return backoff.delay(attempt, rng)


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: the path and query of a Slack webhook
    are its secret, and user info is a credential.

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
    """``text`` with the secret parts of ``url`` replaced by ``***``."""
    parts = urlsplit(url)
    for secret in (url, parts.path + ("?" + parts.query if parts.query else ""), parts.query):
        if secret and secret not in ("/", "?"):
            text = text.replace(secret, "/***")
    return text


@dataclass(frozen=True)
class PostResult:
    """One attempt: the HTTP status (``None`` when nothing was answered),
    ``Retry-After``, and a short detail (the start of the body, or the error)."""

    status: int | None
    retry_after: str | None = None
    detail: str = ""
    timed_out: bool = False


class Poster(Protocol):
    async def post(self, body: bytes, idempotency_key: str) -> PostResult: ...


@dataclass(frozen=True)
class Delivery:
    """How a delivery ended: ``accepted`` (2xx), ``rejected`` (permanent
    status), or ``abandoned`` (stopping before an answer worth keeping)."""

    outcome: Literal["accepted", "rejected", "abandoned"]
    status: int | None
    detail: str
    attempts: int


async def deliver(
    poster: Poster,
    body: bytes,
    key: str,
    stop: asyncio.Event,
    backoff: Backoff,
    rng: random.Random,
    on_retry: Callable[[str, float, PostResult, int], None] | None = None,
    wall: Callable[[], float] = time.time,
    retry_after_max_s: float = RETRY_AFTER_MAX_S,
) -> Delivery:
    """Post until the webhook accepts or refuses for good; retry forever on
    connection errors, timeouts, 408, 429 and 5xx. Once ``stop`` is set the
    attempt in flight still completes but no retry starts."""
    attempt = 0
    while True:
        result = await poster.post(body, key)
        attempt += 1
        if result.status is not None:
            verdict = classify_status(result.status)
            if verdict == "accepted":
                return Delivery("accepted", result.status, result.detail, attempt)
            if verdict == "permanent":
                return Delivery("rejected", result.status, result.detail, attempt)
        if stop.is_set():
            return Delivery("abandoned", result.status, result.detail, attempt)
        delay = retry_delay(
            attempt - 1, result.retry_after, backoff, rng, wall(), retry_after_max_s
        )
        if on_retry is not None:
            on_retry(retry_cause(result.status, result.timed_out), delay, result, attempt)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return Delivery("abandoned", result.status, result.detail, attempt)


# ================================================================ bookkeeping
K = TypeVar("K", bound=Hashable)


class OffsetTracker(Generic[K]):
    """Per partition, the offset up to which every message is handled: the
    lowest offset still in progress, else one past the newest started.
    Partitions where nothing was handled yet have nothing to commit."""

    def __init__(self) -> None:
        self._pending: dict[K, set[int]] = {}
        self._next: dict[K, int] = {}
        self._first: dict[K, int] = {}

    def start(self, part: K, offset: int) -> None:
        self._pending.setdefault(part, set()).add(offset)
        self._first.setdefault(part, offset)
        self._next[part] = max(self._next.get(part, 0), offset + 1)

    def done(self, part: K, offset: int) -> None:
        """Mark handled; ignored for a partition forgotten meanwhile."""
        if part in self._pending:
            self._pending[part].discard(offset)

    def committable(self) -> dict[K, int]:
        """Partition -> the offset to commit (the next one to read), for the
        partitions where it moved past the first message seen."""
        out = {}
        for part, pending in self._pending.items():
            offset = min(pending) if pending else self._next[part]
            if offset > self._first[part]:
                out[part] = offset
        return out

    def forget(self, part: K) -> None:
        self._pending.pop(part, None)
        self._next.pop(part, None)
        self._first.pop(part, None)


class LruSet:
    """The ``capacity`` most recently added strings."""

    def __init__(self, capacity: int = LRU_CAPACITY) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


def dedupe_key(group: str, alert_id: str) -> str:
    """Redis key of a delivered alert (the group is the cluster hash tag)."""
    return f"dg:fwd:{{{group}}}:{alert_id}"


# ==================================================================== options
@dataclass(frozen=True)
class ForwardOptions:
    """Everything ``disengage alerts forward`` takes from its flags."""

    webhook_url: str
    fmt: str = "slack"
    filters: AlertFilter = field(default_factory=AlertFilter)
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit(30, 60.0))
    timeout_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    group: str = DEFAULT_GROUP
    offset_reset: str = "earliest"
    dlq_topic: str | None = None  # default: <alerts topic>.forward.dlq
    use_redis: bool = True
    include_session: bool = True
    commit_interval_s: float = 1.0
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        check_webhook_url(self.webhook_url)
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown format {self.fmt!r} (one of {FORMATS})")
        if self.offset_reset not in ("earliest", "latest"):
            raise ValueError("offset reset must be earliest or latest")
        if self.timeout_s <= 0:
            raise ValueError("timeout must be positive")
        if self.commit_interval_s < 0:
            raise ValueError("commit interval must not be negative")
        if not self.group:
            raise ValueError("consumer group must not be empty")


def dlq_topic_for(alerts_topic: str, options: ForwardOptions) -> str:
    return options.dlq_topic or f"{alerts_topic}.forward.dlq"


# ============================================================== I/O: webhook
class WebhookPoster:
    """POSTs JSON with aiohttp; one attempt per call, never raises."""

    def __init__(
        self, url: str, timeout_s: float, observe: Callable[[float], None] | None = None
    ) -> None:
        import aiohttp

        self.url = url
        self.observe = observe
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"User-Agent": "disengage-forwarder/1"},
        )

    async def post(self, body: bytes, idempotency_key: str) -> PostResult:
        import aiohttp

        started = time.perf_counter()
        try:
            async with self.session.post(
                self.url,
                data=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
                allow_redirects=False,
            ) as resp:
                text = (await resp.content.read(512)).decode("utf-8", "replace")
                return PostResult(resp.status, resp.headers.get("Retry-After"), text.strip())
        except TimeoutError:
            return PostResult(None, None, "timed out", timed_out=True)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", self.url)
            return PostResult(None, None, detail)
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)

    async def close(self) -> None:
        await self.session.close()


# ================================================================ I/O: dedupe
class SeenIds:
    """Delivered alert ids: an in-memory LRU in front of Redis (optional).
    Redis failures are reported to ``on_error`` and then Redis is skipped for
    ``pause_s`` seconds, so a Redis outage costs no time per alert."""

    def __init__(
        self,
        group: str,
        redis: Any | None = None,
        lru: LruSet | None = None,
        ttl_s: int = DEDUPE_TTL_S,
        on_error: Callable[[str, Exception], None] | None = None,
        pause_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.redis = redis
        self.lru = lru if lru is not None else LruSet()
        self.ttl_s = ttl_s
        self.on_error = on_error
        self.pause_s = pause_s
        self.clock = clock
        self._paused_until = 0.0
        self.failing = False

    def _usable(self) -> bool:
        return self.redis is not None and self.clock() >= self._paused_until

    def _failed(self, op: str, exc: Exception) -> None:
        self._paused_until = self.clock() + self.pause_s
        if self.on_error is not None:
            self.on_error(op, exc)
        self.failing = True

    def _ok(self) -> None:
        if self.failing:
            log.info("Redis is reachable again; de-duplication across restarts resumed")
        self.failing = False

    async def seen(self, alert_id: str) -> bool:
        if alert_id in self.lru:
            return True
        if not self._usable():
            return False
        try:
            found = bool(await self.redis.exists(dedupe_key(self.group, alert_id)))  # type: ignore[union-attr]
        except Exception as exc:  # any Redis failure: forward anyway
            self._failed("check", exc)
            return False
        self._ok()
        if found:
            self.lru.add(alert_id)
        return found

    async def remember(self, *alert_ids: str) -> None:
        """Record delivered ids: the LRU, and Redis in one pipelined round trip."""
        for alert_id in alert_ids:
            self.lru.add(alert_id)
        if not alert_ids or not self._usable():
            return
        stamp = str(int(time.time()))
        try:
            pipe = self.redis.pipeline(transaction=False)  # type: ignore[union-attr]
            for alert_id in alert_ids:
                pipe.set(dedupe_key(self.group, alert_id), stamp, ex=self.ttl_s)
            await pipe.execute()
        except Exception as exc:
            self._failed("record", exc)
            return
        self._ok()


def redis_client(url: str, password: str = "", tls: bool = False) -> Any | None:
    """A redis.asyncio client with short timeouts, or ``None`` for memory://."""
    if url.startswith("memory://"):
        return None
    from stream.redis_store import redis_from_url

    return redis_from_url(url, password, tls, socket_timeout=2.0, socket_connect_timeout=2.0)


# ============================================================ the forwarder
@dataclass
class _Held:
    """A held-back message: where it is, and its bytes for a dead letter."""

    part: Any
    message: Any


class Forwarder:
    """The consumer loop: alerts topic -> filters -> dedupe -> rate limit ->
    webhook, committing per partition what was handled."""

    def __init__(
        self,
        settings: Any,
        options: ForwardOptions,
        metrics: ForwarderMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.metrics = metrics or ForwarderMetrics()
        self.rng = rng or random.Random()
        self.classify = default_classifier(settings.detector)
        self.dlq_topic = dlq_topic_for(settings.topic_alerts, options)
        self.webhook = redact_url(options.webhook_url)
        self.bucket = TokenBucket(options.rate_limit)
        self.held: HoldBack[_Held] = HoldBack(
            options.rate_limit.window_s if options.rate_limit.count else 60.0
        )
        self.max_held = HELD_MAX
        self.pause_step_s = 1.0
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.committed: dict[Any, int] = {}
        #: incremented by every revocation and assignment: a batch fetched in
        #: an older generation is stale
        self.generation = 0
        self.last_commit = 0.0
        self.commit_lock = asyncio.Lock()
        self.consumer: Any = None
        self.producer: Any = None
        self.poster: Poster | None = None
        self.seen: SeenIds = SeenIds(options.group)

    # ------------------------------------------------------------ lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set; then commit what was handled."""
        from aiokafka import AIOKafkaConsumer

        from stream.kafka_io import client_options, create_missing_topics, make_producer

        await create_missing_topics(self.settings, [self.settings.topic_alerts, self.dlq_topic])
        self.producer = make_producer(self.settings)
        self.consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.options.group,
            enable_auto_commit=False,
            auto_offset_reset=self.options.offset_reset,
            # a webhook that fails holds the loop in its retries: that must not
            # cost the partitions (aiokafka rejoins in the background anyway)
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        redis = None
        if self.options.use_redis:
            redis = redis_client(
                self.settings.redis_url, self.settings.redis_password, self.settings.redis_tls
            )
        self.seen = SeenIds(self.options.group, redis, on_error=self._redis_failed)
        poster = WebhookPoster(
            self.options.webhook_url, self.options.timeout_s, self.metrics.post_seconds.observe
        )
        self.poster = poster
        try:
            await self.producer.start()
            self.consumer.subscribe(
                [self.settings.topic_alerts], listener=_rebalance_listener(self)
            )
            await self.consumer.start()
            self.last_commit = time.monotonic()  # the first commit after one interval
            log.info(
                "forwarding %s (group %s, from %s when new) to %s as %s; rate limit %s; "
                "dead letters to %s; de-duplication %s",
                self.settings.topic_alerts,
                self.options.group,
                self.options.offset_reset,
                self.webhook,
                self.options.fmt,
                self.options.rate_limit,
                self.dlq_topic,
                "in memory + Redis" if redis is not None else "in memory only",
            )
            await self._loop(stop)
        finally:
            try:
                await asyncio.wait_for(self._commit(force=True), FINAL_COMMIT_TIMEOUT_S)
            except Exception as exc:  # a Kafka outage must not keep us from exiting
                log.warning("last commit failed (%s: %s)", type(exc).__name__, exc)
            for closer in (
                self.consumer.stop,
                self.producer.stop,
                poster.close,
                *([redis.aclose] if redis is not None else []),
            ):
                try:
                    await closer()
                except Exception as exc:  # closing must not hide the real error
                    log.debug("closing: %s", exc)
            log.info("forwarder stopped")

    async def _loop(self, stop: asyncio.Event) -> None:
        consumer = self.consumer
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=100)
            generation = self.generation
            for part, messages in batch.items():
                for message in messages:
                    if stop.is_set() or self.generation != generation:
                        break
                    if part not in consumer.assignment():
                        break
                    await self._handle(part, message, stop, generation)
                    await self._maybe_digest(stop)
                    await self._wait_for_room(stop)
                    await self._commit()
                if stop.is_set() or self.generation != generation:
                    if self.generation != generation:
                        log.info("rebalanced: the rest of the batch is read again")
                    break
            await self._maybe_digest(stop)
            await self._commit()
        if len(self.held):
            await self._send_digest(stop)  # stop is set: one attempt

    async def _wait_for_room(self, stop: asyncio.Event) -> None:
        """With ``max_held`` alerts held back, read nothing more until the
        digest of the window went out (or a revocation dropped them)."""
        if len(self.held) < self.max_held:
            return
        log.warning(
            "%d alerts held back by the rate limit: pausing until the digest in %.0fs",
            len(self.held),
            self.held.remaining(),
        )
        while len(self.held) >= self.max_held and not stop.is_set() and not self.held.due():
            delay = max(0.0, min(self.pause_step_s, self.held.remaining()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        await self._maybe_digest(stop)

    # --------------------------------------------------------------- handling
    async def _handle(
        self, part: Any, message: Any, stop: asyncio.Event, generation: int | None = None
    ) -> None:
        if generation is None:
            generation = self.generation
        self.tracker.start(part, message.offset)
        try:
            alert = parse_alert(message.value)
        except InvalidAlert as exc:
            if await self._dead_letter([message], exc.reason, exc.detail, None, stop):
                self._count("invalid")
                log.warning("invalid alert at %s: %s", _where_in(message), exc)
                self.tracker.done(part, message.offset)
            return
        alert_id = alert["id"]
        try:
            page_type = page_type_of(alert, self.classify)
            why = self.options.filters.rejects(alert, page_type)
        except Exception as exc:  # odd but parseable: dead-letter, never crash
            await self._unusable(part, message, alert_id, exc, stop)
            return
        if why is not None:
            self._count("filtered")
            log.debug("alert %s filtered out by %s", alert_id, why)
            self.tracker.done(part, message.offset)
            return
        if self.held.holds(alert_id) or await self.seen.seen(alert_id):
            self._count("duplicate")
            log.debug("alert %s already delivered", alert_id)
            self.tracker.done(part, message.offset)
            return
        if self.generation != generation:
            return  # rebalanced meanwhile: read again from the committed offset
        data = alert["data"]
        if not self.bucket.try_take():
            self.held.hold(alert_id, data["kind"], data["severity"], _Held(part, message))
            self._count("rate_limited")
            log.debug("alert %s held back by the rate limit", alert_id)
            return  # handled once a digest is accepted
        try:
            body = encode(
                build_payload(alert, page_type, self.options.fmt, self.options.include_session)
            )
        except Exception as exc:  # odd but parseable: dead-letter, never crash
            await self._unusable(part, message, alert_id, exc, stop)
            return
        result = await self._deliver(body, alert_id, stop)
        if result.outcome == "accepted":
            await self.seen.remember(alert_id)
            self._accepted()
            self._count("sent")
            log.info("sent alert %s (%s, %s)", alert_id, data["kind"], data["severity"])
            self.tracker.done(part, message.offset)
        elif result.outcome == "rejected":
            reason, detail = f"http_{result.status}", _answer(result)
            if await self._dead_letter([message], reason, detail, alert_id, stop):
                self._count("dead_lettered")
                log.error(
                    "%s refused alert %s for good (%s): dead-lettered to %s",
                    self.webhook,
                    alert_id,
                    detail,
                    self.dlq_topic,
                )
                self.tracker.done(part, message.offset)
        else:
            log.info("stopping: alert %s left for the next run", alert_id)

    async def _unusable(
        self, part: Any, message: Any, alert_id: str, exc: Exception, stop: asyncio.Event
    ) -> None:
        """An alert no payload could be made of: to the forward DLQ."""
        detail = f"cannot build the payload: {type(exc).__name__}: {str(exc)[:200]}"
        if await self._dead_letter([message], "not_an_alert", detail, alert_id, stop):
            self._count("invalid")
            log.warning("unusable alert %s at %s: %s", alert_id, _where_in(message), detail)
            self.tracker.done(part, message.offset)

    async def _maybe_digest(self, stop: asyncio.Event) -> None:
        if self.held.due():
            await self._send_digest(stop)

    async def _send_digest(self, stop: asyncio.Event) -> None:
        digest, held = self.held.take()
        if not held:
            return
        text = digest_text(digest, self.options.rate_limit)
        payload = digest_payload(digest, self.options.rate_limit, self.options.fmt)
        result = await self._deliver(encode(payload), digest.key, stop)
        if result.outcome == "accepted":
            self._accepted()
            self.metrics.digests.inc()
            log.info("sent digest: %s", text)
            await self.seen.remember(*digest.ids)  # never posted one by one after a restart
            for item in held:
                self.tracker.done(item.part, item.message.offset)
        elif result.outcome == "rejected":
            reason, detail = (
                f"http_{result.status}",
                "rate-limit digest refused: " + _answer(result),
            )
            messages = [item.message for item in held]
            if await self._dead_letter(messages, reason, detail, None, stop):
                log.error(
                    "%s refused a digest (%s): its alerts dead-lettered", self.webhook, detail
                )
                for item in held:
                    self.tracker.done(item.part, item.message.offset)
        else:
            log.info("stopping: digest of %d alerts not sent; they stay uncommitted", len(held))

    async def _deliver(self, body: bytes, key: str, stop: asyncio.Event) -> Delivery:
        assert self.poster is not None

        def on_retry(cause: str, delay: float, result: PostResult, attempt: int) -> None:
            self.metrics.retries.labels(cause).inc()
            answer = f"answered {result.status}" if result.status is not None else result.detail
            # attempts 1, 2, 4, 8, ... at WARNING: an outage is visible, not a flood
            level = logging.WARNING if attempt & (attempt - 1) == 0 else logging.DEBUG
            log.log(
                level,
                "%s %s for %s (attempt %d); retrying in %.2fs",
                self.webhook,
                answer or cause,
                key,
                attempt,
                delay,
            )

        return await deliver(self.poster, body, key, stop, self.options.backoff, self.rng, on_retry)

    async def _dead_letter(
        self,
        messages: list[Any],
        reason: str,
        detail: str,
        alert_id: str | None,
        stop: asyncio.Event,
    ) -> bool:
        """Write ``messages`` to the forward DLQ, retrying while Kafka fails;
        False when stopping first (the messages stay unhandled). A record
        Kafka refuses for good (``PERMANENT_DLQ_ERRORS``) is logged and
        counts as handled."""
        from aiokafka import errors as kafka_errors

        from stream.records import Message, Record, dead_letter

        permanent = tuple(
            getattr(kafka_errors, name)
            for name in PERMANENT_DLQ_ERRORS
            if hasattr(kafka_errors, name)
        )

        now = time.time()
        records = []
        for m in messages:
            record = dead_letter(
                Message(m.value or b"", m.key, m.topic, m.partition, m.offset, m.timestamp),
                reason,
                detail,
                now,
            )
            aid = alert_id or _id_of(m.value)
            headers = [*record.headers, *([("dlq.alert.id", aid.encode())] if aid else [])]
            records.append(Record(record.key, record.value, headers))
        attempt = 0
        while True:
            try:
                futures = [
                    await self.producer.send(self.dlq_topic, r.value, key=r.key, headers=r.headers)
                    for r in records
                ]
                await asyncio.gather(*futures)
                return True
            except permanent as exc:
                log.error(
                    "dead-letter write to %s refused for good (%s: %s); skipped: %s",
                    self.dlq_topic,
                    type(exc).__name__,
                    exc,
                    ", ".join(_where_in(m) for m in messages[:20])
                    + (f" and {len(messages) - 20} more" if len(messages) > 20 else ""),
                )
                return True
            except Exception as exc:  # broker trouble: retry, never drop
                if stop.is_set():
                    return False
                delay = self.options.backoff.delay(attempt, self.rng)
                attempt += 1
                log.warning("dead-letter write to %s failed (%s); retrying", self.dlq_topic, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False

    # ---------------------------------------------------------------- commits
    async def _commit(self, force: bool = False, parts: Iterable[Any] | None = None) -> None:
        """Commit handled offsets, at most every ``commit_interval_s``."""
        from aiokafka.errors import KafkaError

        if self.consumer is None:
            return
        now = time.monotonic()
        if not force and now - self.last_commit < self.options.commit_interval_s:
            return
        async with self.commit_lock:
            assigned = self.consumer.assignment()
            wanted = set(parts) if parts is not None else None
            offsets = {
                part: offset
                for part, offset in self.tracker.committable().items()
                if part in assigned
                and (wanted is None or part in wanted)
                and offset > self.committed.get(part, -1)
            }
            self.last_commit = now
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:
                log.warning("commit failed (%s); will retry", exc)
                return
            self.committed.update(offsets)

    async def revoked(self, parts: Iterable[Any]) -> None:
        """Commit and forget partitions taken away by a rebalance."""
        gone = set(parts)
        if not gone:
            return
        await self._commit(force=True, parts=gone)
        dropped = self.held.drop(lambda item: item.part in gone)
        if dropped:
            log.info("%d held-back alerts left to the new owner of their partitions", dropped)
        for part in gone:
            self.tracker.forget(part)
            self.committed.pop(part, None)
        self.generation += 1

    async def assigned(self, parts: Iterable[Any]) -> None:
        """Start afresh on (re)assigned partitions: aiokafka reads them again
        from their committed offsets."""
        for part in parts:
            self.tracker.forget(part)
            self.committed.pop(part, None)
        self.generation += 1

    # ---------------------------------------------------------------- metrics
    def _count(self, result: str) -> None:
        self.metrics.alerts.labels(result).inc()

    def _accepted(self) -> None:
        self.metrics.last_success.set(time.time())

    def _redis_failed(self, op: str, exc: Exception) -> None:
        self.metrics.redis_errors.inc()
        if not self.seen.failing:
            log.warning(
                "Redis %s failed (%s: %s); forwarding on with in-memory de-duplication only",
                op,
                type(exc).__name__,
                exc,
            )


def _answer(result: Delivery) -> str:
    return f"answered {result.status}" + (f": {result.detail[:150]}" if result.detail else "")


def _where_in(message: Any) -> str:
    return f"{message.topic}/{message.partition}@{message.offset}"


def _id_of(raw: bytes | None) -> str | None:
    """The ``id`` of a CloudEvent-ish message, when readable and sane."""
    try:
        value = json.loads(raw or b"").get("id")
    except (ValueError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, str) and _ALERT_ID.match(value) else None


def _rebalance_listener(forwarder: Forwarder) -> Any:
    """An aiokafka rebalance listener that commits before partitions move."""
    from aiokafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
            await forwarder.revoked(revoked)

        async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
            await forwarder.assigned(assigned)
            names = ", ".join(f"{p.topic}/{p.partition}" for p in sorted(assigned))
            log.info("assigned %s", names or "no partitions")

    return Listener()


# ==================================================================== running
def run_forwarder(
    settings: Any,
    options: ForwardOptions,
    serve_metrics: Callable[[ForwarderMetrics], Callable[[], None] | None] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0)."""
    metrics = ForwarderMetrics()
    shutdown = serve_metrics(metrics) if serve_metrics is not None else None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Forwarder(settings, options, metrics).run(stop)

    try:
        asyncio.run(main())
    finally:
        if shutdown is not None:
            shutdown()
    return 0


def metrics_server(port: int, addr: str) -> Callable[[ForwarderMetrics], Callable[[], None]]:
    """``serve_metrics`` for :func:`run_forwarder`: Prometheus text on
    ``addr:port`` from the forwarder's own registry."""

    def serve(metrics: ForwarderMetrics) -> Callable[[], None]:
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", addr, port)
        return server.shutdown

    return serve
