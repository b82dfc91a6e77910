"""What an alert says: its reasons in plain words, severity and action.

The rules decide *that* a session or a page is in trouble; this module turns
the decision into an :class:`~detectors.alerts.Alert` a marketer can read:
up to three reasons (the signal, its value now, the baseline it is compared
to, its weight, and a sentence), a severity from how far the score passed
its threshold, and the playbook's suggested action.
"""

from __future__ import annotations

import math

from detectors.alerts import Alert, Reason, severity_for, suggested_action
from detectors.config import DetectorConfig
from detectors.events import Event
from detectors.features import hesitation_raw, trust_features
from detectors.hesitation import HESITATION_WORDS
from detectors.hotspots import HotspotFinding
from detectors.models import DetectorModels
from detectors.session import SessionState
from detectors.signals import SIGNAL_REGISTRY
from detectors.trust import TRUST_WORDS

#: Reasons an alert carries at most (the alert schema's ``maxItems``).
MAX_REASONS = 3


def friction_reasons(state: SessionState, models: DetectorModels) -> list[Reason]:
    """The friction signals the session counted, largest weighted count
    first, each against its mean count per closed session."""
    reasons = []
    for spec in SIGNAL_REGISTRY:
        count = state.signal_counts[spec.index]
        if spec.weight > 0 and count > 0:
            baseline = models.signal_means[spec.index].get()
            text = f"{count} {spec.plural} this session (typical: {baseline:.1f})"
            reasons.append(Reason(spec.name, float(count), baseline, spec.weight, text))
    reasons.sort(key=lambda r: r.value * r.weight, reverse=True)
    return reasons


def trust_reasons(state: SessionState, models: DetectorModels, ts: int) -> list[Reason]:
    """The features that push the trust score down most, in natural units."""
    reasons = []
    for c in models.trust.contributions(trust_features(state, ts))[:MAX_REASONS]:
        if c.effect >= 0:
            break
        value, baseline = math.expm1(c.value), math.expm1(c.mean)
        if c.name == "furthest_stage":
            value, baseline = c.value * 4, c.mean * 4
        text = (
            f"{TRUST_WORDS[c.name]}: {value:.1f} (typical: {baseline:.1f}) "
            "lowers the chance to buy"
        )
        reasons.append(Reason(c.name, value, baseline, c.effect, text))
    return reasons


def hesitation_reasons(
    state: SessionState, models: DetectorModels, x: dict[str, float]
) -> list[Reason]:
    """The moment-features furthest above the stage's mean (z > 0)."""
    reasons = []
    for name, value, mean, z in models.hesitation.explain(state.stage, x)[:MAX_REASONS]:
        if z <= 0:
            break
        raw, unit = hesitation_raw(name, value)
        base, _ = hesitation_raw(name, mean)
        text = (
            f"{HESITATION_WORDS[name]}: {raw:.0f} {unit} "
            f"(typical at the {state.stage} stage: {base:.0f} {unit})"
        )
        reasons.append(Reason(name, raw, base, z, text))
    return reasons


def session_alert(
    config: DetectorConfig,
    models: DetectorModels,
    kind: str,
    state: SessionState,
    event: Event,
    rule: str,
    scored: tuple[float, float, float],
    reasons: list[Reason],
) -> Alert:
    """A session alert (episode 0 until the policy admits it). ``scored`` is
    (score, threshold, margin) in the rule's units; the margin, how far the
    score passed its threshold, sets the severity."""
    score, threshold, margin = scored
    return Alert(
        kind=kind,
        severity=severity_for(margin),
        score=score,
        threshold=threshold,
        subject=state.sid,
        episode=0,
        session_id=state.sid,
        user_hash=state.user_hash,
        stage=state.stage,
        page=state.page,
        reasons=tuple(reasons[:MAX_REASONS]),
        suggested_action=suggested_action(config.playbook, kind, state.stage),
        trigger_event_id=event.event_id,
        event_time=event.ts,
        model_version=models.version,
        rule=rule,
    )


def hotspot_alert(
    config: DetectorConfig,
    models: DetectorModels,
    finding: HotspotFinding,
    stage: str,
    event_id: str | None,
    ts: int,
) -> Alert:
    """An aggregate alert for a page type (and step) whose share of visits
    ending in friction or abandonment rose; ``stage`` is the page type's."""
    increase = finding.rate_now - finding.rate_before
    text = (
        f"{finding.rate_now:.0%} of visits to {finding.key} now end in friction or "
        f"abandonment (before: {finding.rate_before:.0%})"
    )
    reason = Reason("problem_rate", finding.rate_now, finding.rate_before, 1.0, text)
    threshold = finding.rate_before + config.hotspot_min_rate_increase
    return Alert(
        kind="friction_hotspot",
        severity=severity_for(increase / config.hotspot_min_rate_increase),
        score=finding.rate_now,
        threshold=threshold,
        subject=f"hotspot/{finding.key}",
        episode=finding.episode,
        session_id=None,
        user_hash=None,
        stage=stage,
        page=finding.key,
        reasons=(reason,),
        suggested_action=suggested_action(config.playbook, "friction_hotspot", None),
        trigger_event_id=event_id,
        event_time=ts,
        model_version=models.version,
        rule="adwin_rate_increase",
        extra={
            "hotspot_key": finding.key,
            "rate_before": round(finding.rate_before, 4),
            "rate_now": round(finding.rate_now, 4),
            "visits": finding.visits,
        },
    )
