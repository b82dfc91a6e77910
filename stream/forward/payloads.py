"""The bodies the forwarder posts: one alert as a Slack message or as JSON, and a digest.

``slack`` (default): a Slack incoming-webhook message, ``{"text": ..., "blocks":
[...]}``. ``text`` is the complete message (what notifications and clients
without blocks show); ``blocks`` are mrkdwn ``section`` blocks and a ``context``
block with the same content: kind, severity, page, page type, journey stage, up
to three reasons in words, the suggested action and the alert id; hotspots carry
their ``page_type/step`` key and the problem rate before and now. Values are
escaped for mrkdwn (``&``, ``<``, ``>``): a page path can never mention
``<!channel>`` or forge a link.

``json``: the alert's CloudEvent as it is on the topic (valid against
``ALERT_JSON_SCHEMA``) plus one top-level attribute ``summary``, a one-line
readable message. A digest is a CloudEvent of type ``disengage.forward.digest``
whose data lists the counts and (up to :data:`DIGEST_MAX_IDS`) held-back ids.

Privacy: user ids (``data.user_hash``) are never sent, in either format. The
session id is sent unless ``include_session`` is false (in ``json``:
``data.session_id`` and ``data.trigger_event_id`` null and ``subject``
"redacted" for session alerts). What an alert says is read through
:func:`stream.alert_view.view_of`, the one defensive reader of alerts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from detectors.alerts import rfc3339
from stream.alert_view import AlertView, alert_summary, view_of
from stream.forward.ratelimit import Digest, RateLimit

#: ``--format`` values.
FORMATS: tuple[str, ...] = ("slack", "json")
SEVERITY_EMOJI: dict[str, str] = {
    "low": ":large_yellow_circle:",
    "medium": ":large_orange_circle:",
    "high": ":red_circle:",
}
#: ``source`` of a JSON digest.
DIGEST_SOURCE = "urn:disengage:forwarder"
#: Held-back alert ids listed in a JSON digest.
DIGEST_MAX_IDS = 100
# Slack refuses a section text over 3,000 characters
_SECTION_MAX = 3000


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


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:_SECTION_MAX]}}


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
    """The body of the post of ``alert`` in format ``fmt`` (one of FORMATS)."""
    v = view_of(alert, page_type, include_session)
    if fmt == "slack":
        return slack_payload(v)
    if fmt == "json":
        return json_payload(alert, v, include_session)
    raise ValueError(f"unknown format {fmt!r} (one of {FORMATS})")


def encode(payload: Mapping[str, Any]) -> bytes:
    """Strict JSON (``ValueError`` on NaN or infinite numbers).

    >>> encode({"a": "é"})
    b'{"a":"\\xc3\\xa9"}'
    """
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


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
    ``disengage.forward.digest`` with counts and up to DIGEST_MAX_IDS alert ids."""
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
