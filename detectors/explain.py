"""What an alert says: its reasons in plain words, severity and action.

The rules decide *that* a session or a page is in trouble; this module turns
the decision into an :class:`~detectors.alerts.Alert` a marketer can read:
up to three reasons (the signal, its value now, the baseline it is compared
to, its weight, and a sentence), a severity from how far the score passed
its threshold, and the playbook's action for the alert's cause and stage.

Counts read as whole numbers with the right singular or plural ("1 click
that did nothing"), durations in s, min or h, shares in percent. A reason
whose value, as shown, does not differ from its baseline in the direction
that hurts ("0 (typical: 0)") explains nothing and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from detectors.alerts import Alert, Reason, severity_for, suggested_action
from detectors.config import ANSWER_PAGES, STAGE_ORDER, DetectorConfig
from detectors.events import Event
from detectors.features import hesitation_raw, trust_features
from detectors.hesitation import HESITATION_WORDS
from detectors.hotspots import HotspotFinding
from detectors.models import DetectorModels
from detectors.session import SessionState
from detectors.signals import SIGNAL_BY_NAME, SIGNAL_REGISTRY
from detectors.trust import TRUST_WORDS

#: Reasons an alert carries at most (the alert schema's ``maxItems``).
MAX_REASONS = 3

#: Trust features that are durations in minutes (log1p-compressed), with the
#: words they are shown with: ``TRUST_WORDS`` counts them in minutes, but
#: shown as durations ("4 min", "43 s") they read as a time.
_DURATION_WORDS: dict[str, str] = {
    "minutes": "time in the session",
    "evaluate_minutes": "time spent evaluating",
    "decide_minutes": "time spent in basket and checkout",
    "minutes_since_progress": "time since the last step forward",
}
#: Hesitation features that are durations in seconds.
_SECONDS = frozenset({"dwell", "max_gap", "since_progress"})

#: A shown value: its text, and the number it shows (in the text's
#: precision and a common unit) for comparing with the baseline.
Shown = tuple[str, float]


def whole(x: float) -> int:
    """``x`` rounded half up to a whole number (2.5 -> 3, unlike ``round``)."""
    return math.floor(x + 0.5)


def count_shown(x: float) -> Shown:
    """A count as a whole number.

    >>> count_shown(0.4), count_shown(2.5)
    (('0', 0), ('3', 3))
    """
    n = whole(x)
    return str(n), n


def duration_shown(seconds: float) -> Shown:
    """A duration in s under a minute, min under an hour, else h and min;
    the number shown is in seconds.

    >>> [duration_shown(s)[0] for s in (4.4, 59.6, 754, 3600, 5580)]
    ['4 s', '1 min', '13 min', '1 h', '1 h 33 min']
    """
    if seconds < 59.5:
        n = whole(seconds)
        return f"{n} s", n
    minutes = whole(seconds / 60.0)
    if minutes < 60:
        return f"{minutes} min", minutes * 60
    hours, rest = divmod(minutes, 60)
    return (f"{hours} h {rest} min" if rest else f"{hours} h"), minutes * 60


def share_shown(share: float) -> Shown:
    """A share in [0, 1] as a whole percentage.

    >>> share_shown(0.355)
    ('36%', 36)
    """
    n = whole(share * 100.0)
    return f"{n}%", n


def friction_reasons(state: SessionState, models: DetectorModels) -> tuple[list[Reason], str]:
    """The friction signals the session counted more often than a typical
    closed session, largest weighted count first, and the cause of the
    leading one (``SignalSpec.cause``; of the leading counted signal when
    none is above typical)."""
    counted = []
    for spec in SIGNAL_REGISTRY:
        count = state.signal_counts[spec.index]
        if spec.weight > 0 and count > 0:
            baseline = models.signal_means[spec.index].get()
            typical = count_shown(baseline)
            text = f"{count} {spec.words(count)} this session (typical: {typical[0]})"
            reason = Reason(spec.name, float(count), baseline, spec.weight, text)
            counted.append((reason, count > typical[1]))
    counted.sort(key=lambda item: item[0].value * item[0].weight, reverse=True)
    reasons = [reason for reason, above in counted if above]
    leading = reasons[0] if reasons else counted[0][0]
    return reasons, SIGNAL_BY_NAME[leading.signal].cause


def _trust_shown(name: str, value: float, mean: float) -> tuple[float, float, Shown, Shown]:
    """A trust feature's value and mean (model scale) in natural units:
    (value, baseline, shown value, shown baseline)."""
    if name == "furthest_stage":  # scaled 0-1 over the forward stages
        last = len(STAGE_ORDER) - 1
        value, baseline = value * last, mean * last
        return value, baseline, _stage_shown(value), _stage_shown(baseline)
    if name == "in_decide":  # a flag; its mean is the share of moments in decide
        shown = ("yes" if value >= 0.5 else "no", 100.0 if value >= 0.5 else 0.0)
        typical = share_shown(mean)
        return value, mean, shown, (f"{typical[0]} of the time", typical[1])
    value, baseline = math.expm1(value), math.expm1(mean)  # log1p-compressed
    if name in _DURATION_WORDS:
        return value, baseline, duration_shown(value * 60.0), duration_shown(baseline * 60.0)
    return value, baseline, count_shown(value), count_shown(baseline)


def _stage_shown(index: float) -> Shown:
    n = min(max(whole(index), 0), len(STAGE_ORDER) - 1)
    return STAGE_ORDER[n], n


def trust_reasons(state: SessionState, models: DetectorModels, ts: int) -> list[Reason]:
    """The features that push the trust score down most, in natural units;
    a feature shown at its typical value is left out."""
    reasons: list[Reason] = []
    for c in models.trust.contributions(trust_features(state, ts)):
        if c.effect >= 0 or len(reasons) == MAX_REASONS:
            break
        value, baseline, shown, typical = _trust_shown(c.name, c.value, c.mean)
        if shown[1] == typical[1]:
            continue
        words = _DURATION_WORDS.get(c.name) or TRUST_WORDS[c.name]
        text = f"{words}: {shown[0]} (typical: {typical[0]}) lowers the chance to buy"
        reasons.append(Reason(c.name, value, baseline, c.effect, text))
    return reasons


def _hesitation_shown(name: str) -> Callable[[float], Shown]:
    if name in _SECONDS:
        return duration_shown
    if name == "scroll_depth":
        return lambda pct: share_shown(pct / 100.0)
    return count_shown


def hesitation_reasons(
    state: SessionState, models: DetectorModels, x: dict[str, float]
) -> list[Reason]:
    """The moment-features furthest above the stage's mean (z > 0), each
    shown only when it is above the typical value as shown."""
    reasons: list[Reason] = []
    for name, value, mean, z in models.hesitation.explain(state.stage, x):
        if z <= 0 or len(reasons) == MAX_REASONS:
            break
        raw, _ = hesitation_raw(name, value)
        base, _ = hesitation_raw(name, mean)
        show = _hesitation_shown(name)
        shown, typical = show(raw), show(base)
        if shown[1] <= typical[1]:
            continue
        text = (
            f"{HESITATION_WORDS[name]}: {shown[0]} "
            f"(typical at the {state.stage} stage: {typical[0]})"
        )
        reasons.append(Reason(name, raw, base, z, text))
    return reasons


def hesitation_cause(state: SessionState) -> str:
    """``unanswered_question`` on an answer page, else ``long_deliberation``."""
    return "unanswered_question" if state.page_type in ANSWER_PAGES else "long_deliberation"


def session_alert(
    config: DetectorConfig,
    models: DetectorModels,
    kind: str,
    state: SessionState,
    event: Event | int,
    rule: str,
    cause: str | None,
    scored: tuple[float, float, float],
    reasons: list[Reason],
) -> Alert:
    """A session alert (episode 0 until the policy admits it). ``event`` is
    the triggering event, or the event time (epoch ms) of a check between
    events (:meth:`detectors.detector.Detector.tick`), which has no trigger
    event. ``scored`` is (score, threshold, margin) in the rule's units; the
    margin, how far the score passed its threshold, sets the severity;
    ``cause`` and the stage pick the playbook's action."""
    score, threshold, margin = scored
    trigger, ts = (None, event) if isinstance(event, int) else (event.event_id, event.ts)
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
        suggested_action=suggested_action(config.playbook, kind, cause, state.stage),
        trigger_event_id=trigger,
        event_time=ts,
        model_version=models.version,
        rule=rule,
    )


def hotspot_alert(
    config: DetectorConfig,
    model_version: str,
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
    action = suggested_action(config.playbook, "friction_hotspot", "problem_rate", stage)
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
        suggested_action=action,
        trigger_event_id=event_id,
        event_time=ts,
        model_version=model_version,
        rule="adwin_rate_increase",
        extra={
            "hotspot_key": finding.key,
            "rate_before": round(finding.rate_before, 4),
            "rate_now": round(finding.rate_now, 4),
            "visits": finding.visits,
        },
    )
