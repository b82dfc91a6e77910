"""Alert CloudEvents for the forwarder's tests, built by the core's ``Alert``."""

from __future__ import annotations

import json
from typing import Any

from detectors.alerts import Alert, Reason

T0 = 1_767_261_660_600  # 2026-01-01T10:01:00.600Z
SOURCE = "urn:disengage:detector"
USER_HASH = "9ab370120223fa16"


def session_alert(
    *,
    kind: str = "trust_loss",
    severity: str = "medium",
    sid: str = "sess-42",
    page: str | None = "/checkout/step-2",
    stage: str | None = "decide",
    reasons: int = 2,
    episode: int = 1,
    treatment: str = "treated",
) -> dict[str, Any]:
    """A session alert CloudEvent, built by the core."""
    texts = [
        "3 clicks that did nothing this session (typical: 0)",
        "1 rage-click burst (repeated fast clicks on one spot) this session (typical: 0)",
        "2 form errors this session (typical: 0.1)",
        "a fourth reason that must never be shown",
    ]
    return Alert(
        kind=kind,
        severity=severity,
        score=5.0,
        threshold=4.0,
        subject=sid,
        episode=episode,
        session_id=sid,
        user_hash=USER_HASH,
        stage=stage,
        page=page,
        reasons=tuple(Reason(f"s{i}", 1.0, 0.0, 1.0, texts[i]) for i in range(reasons)),
        suggested_action="open chat with a checkout specialist",
        trigger_event_id=f"{sid}-12",
        event_time=T0,
        model_version="trust-lr.v1+hst.v1+adwin.v1@2",
        rule="friction_pileup",
        extra={"treatment": treatment},
    ).to_cloudevent(SOURCE)


def hotspot_alert(key: str = "checkout/2", severity: str = "high") -> dict[str, Any]:
    """A hotspot alert CloudEvent shaped like ``Detector._hotspot_alert``'s."""
    text = f"46% of visits to {key} now end in friction or abandonment (before: 8%)"
    return Alert(
        kind="friction_hotspot",
        severity=severity,
        score=0.46,
        threshold=0.23,
        subject=f"hotspot/{key}",
        episode=1,
        session_id=None,
        user_hash=None,
        stage="decide",
        page=key,
        reasons=(Reason("problem_rate", 0.46, 0.08, 1.0, text),),
        suggested_action="page owners: check the page for broken elements",
        trigger_event_id="e-1",
        event_time=T0,
        model_version="trust-lr.v1+hst.v1+adwin.v1@2",
        rule="adwin_rate_increase",
        extra={"hotspot_key": key, "rate_before": 0.08, "rate_now": 0.46, "visits": 312},
    ).to_cloudevent(SOURCE)


def raw(obj: Any) -> bytes:
    """``obj`` as the bytes of a Kafka record."""
    return json.dumps(obj).encode()
