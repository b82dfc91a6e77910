"""What an alert says, read defensively from its CloudEvent, and the one-line rendering of it.

Every place that shows an alert to a person reads it through :func:`view_of`:
the webhook forwarder (whose input may be anything a producer wrote on the
alerts topic), ``disengage alerts tail`` and the demo. :func:`alert_line` is the
one line they print; :func:`alert_summary` the sentence of the JSON payload.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KIND_TITLES: dict[str, str] = {
    "hesitation": "Hesitation",
    "trust_loss": "Trust loss",
    "friction_hotspot": "Friction hotspot",
}

@dataclass(frozen=True)
class AlertView:
    """What a message says about an alert, taken from the CloudEvent."""

    alert_id: str
    kind: str
    severity: str
    page: str | None
    page_type: str | None
    stage: str | None
    reasons: tuple[str, ...]
    action: str
    session_id: str | None
    hotspot_key: str | None
    rate_before: float | None
    rate_now: float | None
    visits: int | None
    time: str | None

    @property
    def title(self) -> str:
        return KIND_TITLES.get(self.kind, self.kind)


def _number(value: Any) -> float | None:
    """``value`` as a finite float; ``None`` for anything else (including
    NaN, Infinity and integers too large for a float, all of which
    ``json.loads`` accepts)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _text(value: Any, limit: int) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def view_of(alert: Mapping[str, Any], page_type: str | None, include_session: bool) -> AlertView:
    """The readable parts of ``alert`` (never its ``user_hash``). Long values
    are clipped: pages to 300 characters, reasons to 300, the action to 500."""
    data = alert.get("data")
    if not isinstance(data, Mapping):
        data = {}
    raw_reasons = data.get("reasons")
    reasons = tuple(
        t
        for r in (raw_reasons[:3] if isinstance(raw_reasons, list) else [])
        if isinstance(r, dict) and (t := _text(r.get("text"), 300))
    )
    kind = str(data.get("kind") or "?")
    hotspot_key = data.get("hotspot_key")
    if kind == "friction_hotspot" and not isinstance(hotspot_key, str):
        subject = str(alert.get("subject") or "")
        hotspot_key = subject[len("hotspot/") :] if subject.startswith("hotspot/") else None
    visits = _number(data.get("visits"))
    return AlertView(
        alert_id=str(alert.get("id")),
        kind=kind,
        severity=str(data.get("severity") or "?"),
        page=_text(data.get("page"), 300),
        page_type=page_type,
        stage=_text(data.get("stage"), 40),
        reasons=reasons,
        action=_text(data.get("suggested_action"), 500) or "review the alert",
        session_id=_text(data.get("session_id"), 128) if include_session else None,
        hotspot_key=_text(hotspot_key, 100),
        rate_before=_number(data.get("rate_before")),
        rate_now=_number(data.get("rate_now")),
        visits=int(visits) if visits is not None else None,
        time=_text(alert.get("time"), 40),
    )


def alert_summary(v: AlertView) -> str:
    """One line for the ``summary`` of the JSON format (not escaped)."""
    where = v.hotspot_key if v.kind == "friction_hotspot" else v.page
    out = f"{v.title} ({v.kind}, {v.severity}) on {where or '-'}"
    if v.page_type:
        out += f" ({v.page_type})"
    if v.stage:
        out += f", stage {v.stage}"
    out += ": " + (v.reasons[0] if v.reasons else "no reason given")
    return out + f". Suggested action: {v.action}."


def alert_line(v: AlertView, width: int | None = None) -> str:
    """One line for a terminal: time, kind, severity, who, where, why -> what to do.

    ``width`` (characters) clips the line with an ellipsis; ``None`` keeps it whole.
    The first two reasons stand for the why (the alert has them all).
    """
    clock = (v.time or "")[11:19] or "--:--:--"
    who = (v.session_id or v.hotspot_key or "-")[:16]
    where = v.page or v.hotspot_key or "-"
    why = "; ".join(v.reasons[:2]) or "-"
    line = (
        f"{clock} {v.kind:<16} {v.severity:<6} {who:<16} {v.stage or '-':<9} {where}"
        f" | {why} -> {v.action}"
    )
    if width is not None and len(line) > width:
        line = line[: max(width - 1, 0)] + "…"
    return line
