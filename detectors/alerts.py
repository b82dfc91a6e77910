"""Alerts as CloudEvents 1.0 JSON, with deterministic ids.

An alert's id is derived from (subject, kind, episode), so replaying the same
events never creates a new id, and a consumer can de-duplicate on it. The
CloudEvents ``time`` is the event time of the trigger, which keeps replays
byte-identical; the worker adds the wall-clock produce time as the extension
attribute ``producedat`` and, for session alerts, the Kafka timestamp of the
triggering input record as ``recordtime``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ALERT_KINDS: tuple[str, ...] = ("hesitation", "trust_loss", "friction_hotspot")
SESSION_KINDS: tuple[str, ...] = ("hesitation", "trust_loss")
SEVERITIES: tuple[str, ...] = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason of an alert: the signal, its value now, the baseline it is
    compared to, its weight in the decision, and a sentence in plain words."""

    signal: str
    value: float
    baseline: float
    weight: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "value": round(self.value, 3),
            "baseline": round(self.baseline, 3),
            "weight": round(self.weight, 3),
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """A detector alert. ``score`` and ``threshold`` are in the units of the
    rule that fired (see ``data.rule``): friction points, anomaly score or
    trust probability."""

    kind: str
    severity: str
    score: float
    threshold: float
    subject: str
    episode: int
    session_id: str | None
    user_hash: str | None
    stage: str | None
    page: str | None
    reasons: tuple[Reason, ...]
    suggested_action: str
    trigger_event_id: str | None
    event_time: int
    model_version: str
    rule: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Deterministic id from (subject, kind, episode)."""
        return alert_id(self.subject, self.kind, self.episode)

    def to_cloudevent(self, source: str) -> dict[str, Any]:
        """The CloudEvents 1.0 JSON object (structured mode)."""
        data: dict[str, Any] = {
            "kind": self.kind,
            "severity": self.severity,
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "rule": self.rule,
            "session_id": self.session_id,
            "user_hash": self.user_hash,
            "stage": self.stage,
            "page": self.page,
            "reasons": [r.to_dict() for r in self.reasons],
            "suggested_action": self.suggested_action,
            "trigger_event_id": self.trigger_event_id,
            "event_time": rfc3339(self.event_time),
            "model_version": self.model_version,
            "episode": self.episode,
        }
        data.update(self.extra)
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": source,
            "type": f"disengage.alert.{self.kind}",
            "subject": self.subject,
            "time": rfc3339(self.event_time),
            "datacontenttype": "application/json",
            "data": data,
        }


def alert_id(subject: str, kind: str, episode: int) -> str:
    """Stable 32-hex-char id.

    >>> alert_id("s1", "hesitation", 1) == alert_id("s1", "hesitation", 1)
    True
    >>> alert_id("s1", "hesitation", 1) != alert_id("s1", "hesitation", 2)
    True
    """
    return hashlib.sha256(f"{subject}\x1f{kind}\x1f{episode}".encode()).hexdigest()[:32]


def rfc3339(ts_ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds.

    >>> rfc3339(1700000000123)
    '2023-11-14T22:13:20.123Z'
    """
    moment = datetime.fromtimestamp(ts_ms / 1000.0, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def severity_for(margin: float) -> str:
    """Severity from how far the score passed its threshold (score/threshold
    for "higher is worse" rules): >= 1.5 high, >= 1.2 medium, else low."""
    if margin >= 1.5:
        return "high"
    if margin >= 1.2:
        return "medium"
    return "low"


def suggested_action(
    playbook: Mapping[str, str], kind: str, cause: str | None, stage: str | None
) -> str:
    """The playbook's action for an alert: the first of ``kind/cause/stage``,
    ``kind/cause/*``, ``kind/*/stage`` and ``kind/*`` it has (a ``None``
    cause or stage skips the keys that name it), else a generic action.

    >>> book = {"trust_loss/broken_element/*": "fix it", "trust_loss/*/decide": "chat",
    ...         "trust_loss/*": "help"}
    >>> suggested_action(book, "trust_loss", "broken_element", "decide")
    'fix it'
    >>> suggested_action(book, "trust_loss", "falling_trust", "decide")
    'chat'
    >>> suggested_action(book, "trust_loss", None, "consider")
    'help'
    """
    keys = []
    if cause is not None:
        if stage is not None:
            keys.append(f"{kind}/{cause}/{stage}")
        keys.append(f"{kind}/{cause}/*")
    if stage is not None:
        keys.append(f"{kind}/*/{stage}")
    keys.append(f"{kind}/*")
    for key in keys:
        action = playbook.get(key)
        if action:
            return action
    return "review the session"


ALERT_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "disengage alert (CloudEvents 1.0, structured JSON)",
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "source": {"type": "string", "minLength": 1},
        "type": {"enum": [f"disengage.alert.{k}" for k in ALERT_KINDS]},
        "subject": {"type": "string"},
        "time": {"type": "string"},
        "datacontenttype": {"const": "application/json"},
        "producedat": {"type": "string"},
        "recordtime": {"type": "string"},
        "data": {
            "type": "object",
            "required": [
                "kind",
                "severity",
                "score",
                "threshold",
                "session_id",
                "user_hash",
                "stage",
                "page",
                "reasons",
                "suggested_action",
                "trigger_event_id",
                "event_time",
                "model_version",
            ],
            "properties": {
                "kind": {"enum": list(ALERT_KINDS)},
                "severity": {"enum": list(SEVERITIES)},
                "score": {"type": "number"},
                "threshold": {"type": "number"},
                "session_id": {"type": ["string", "null"]},
                "user_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{16}$"},
                "stage": {"type": ["string", "null"]},
                "page": {"type": ["string", "null"]},
                "reasons": {
                    "type": "array",
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "required": ["signal", "value", "baseline", "weight", "text"],
                    },
                },
                "suggested_action": {"type": "string"},
                "trigger_event_id": {"type": ["string", "null"]},
                "event_time": {"type": "string"},
                "model_version": {"type": "string"},
                "treatment": {
                    "enum": ["treated", "control"],
                    "description": "the session's holdout group (session alerts only); "
                    "nothing acts on a control session's alert",
                },
            },
        },
    },
}
