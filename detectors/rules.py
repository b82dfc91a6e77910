"""The session alert rules: when a session looks in trouble.

Three rules, each with its own hysteresis, so one cannot mask another:

* ``friction_pileup`` (trust loss, transparent, always on): the friction
  points of the signals that fired within ``friction_window_ms`` reach
  ``friction_alert_score``; the episode ends when they fall below half.
* ``trust_drop`` / ``trust_floor`` (trust loss, model): only while the trust
  model has seen ``trust_min_closed`` sessions and predicts outcomes with a
  rolling ROC-AUC of at least ``trust_min_auc``. In the evaluate or decide
  stage, the score fell sharply from the session's peak, or sank to a
  fraction of the base conversion rate after the basket, for
  ``trust_strikes`` scoring points in a row; it ends when the score climbs
  back to ``trust_recover`` of the peak.
* ``leave_hazard`` (hesitation): in evaluate or decide, the leave hazard
  (validated on outcomes) says the visitor is more likely than not to leave
  without the goal soon, and the moment deviates in the hesitant direction
  for its stage. Checked on page views, every ``HESITATION_CHECK_MS`` of
  event time between them, and on :meth:`~detectors.detector.Detector.tick`
  while a session is quiet.

The rules raise candidate alerts; :mod:`detectors.policy` decides which go
out, and :mod:`detectors.explain` says why.
"""

from __future__ import annotations

from detectors.alerts import Alert
from detectors.config import DELIBERATION_STAGES, STAGE_INDEX, DetectorConfig
from detectors.events import Event
from detectors.explain import (
    friction_reasons,
    hesitation_cause,
    hesitation_reasons,
    session_alert,
    trust_reasons,
)
from detectors.features import (
    hesitation_features,
    moment_vector,
    snapshot_vector,
    trust_vector,
)
from detectors.hesitation import HESITATION_STAGES
from detectors.models import DetectorModels
from detectors.session import MOMENTS_CAP, SessionState
from detectors.signal_protocol import SignalHit
from detectors.signals import SIGNAL_INDEX

#: A live session in evaluate/decide is re-scored for hesitation at most
#: this often (ms of event time) between page views: a quarter of the stall
#: time, so a stall is seen within 30 s.
HESITATION_CHECK_MS = 30_000

#: The trust score is recomputed on page views, cart and checkout events and
#: signal hits, and otherwise at most this often (ms of event time), so time
#: on the current page counts without scoring every scroll.
TRUST_RESCORE_MS = 10_000

#: Hits kept in the friction window of the pile-up rule.
FRICTION_RECENT_CAP = 16

_DECIDE = STAGE_INDEX["decide"]  # furthest >= this: the visitor reached the basket


def count_hit(state: SessionState, hit: SignalHit, window_ms: int) -> None:
    """Add a hit to the state's signal counts and, when it is friction
    (weight > 0), to the window of recent friction (``window_ms`` of event
    time, at most :data:`FRICTION_RECENT_CAP` hits)."""
    state.signal_counts[SIGNAL_INDEX[hit.name]] += 1
    weight = hit.weight
    if weight > 0:
        state.page_friction = True
        recent = [(t, w) for t, w in state.friction_recent if hit.ts - t <= window_ms]
        recent.append((hit.ts, weight))
        state.friction_recent = recent[-FRICTION_RECENT_CAP:]


def friction_score(state: SessionState, ts: int, window_ms: int) -> float:
    """Sum of friction weights (friction points) within ``window_ms`` before
    ``ts`` (epoch ms); 0 when nothing fired."""
    if not state.friction_recent:
        return 0.0
    return sum(w for t, w in state.friction_recent if 0 <= ts - t <= window_ms)


def score_trust(
    config: DetectorConfig, models: DetectorModels, state: SessionState, ts: int, snapshot: bool
) -> None:
    """Score P(goal | session so far) at ``ts`` into the state; with
    ``snapshot``, also keep the features for learning at close."""
    x = trust_vector(state, ts)
    p = models.trust.predict_vector(x)
    state.trust = p
    state.trust_ts = ts
    state.trust_peak = max(state.trust_peak, p)
    if snapshot:
        state.snapshots.append((ts, snapshot_vector(x)))
        if len(state.snapshots) > config.snapshot_capacity:
            state.snapshots = state.snapshots[::2]
            state.snap_stride *= 2


def fire(
    config: DetectorConfig,
    models: DetectorModels,
    state: SessionState,
    event: Event,
    hits: list[SignalHit],
    scored: bool,
) -> list[Alert]:
    """Run the rules after ``event`` was applied (``hits``: its signal hits;
    ``scored``: the trust score was just recomputed). Returns the candidate
    alerts, friction first, then trust, then hesitation."""
    candidates: list[Alert] = []
    friction = _friction_rule(config, models, state, event, hits)
    if friction is not None:
        candidates.append(friction)
    trust = _trust_rule(config, models, state, event, scored)
    if trust is not None:
        candidates.append(trust)
    if state.stage in HESITATION_STAGES and (
        event.type == "page_view" or event.ts - state.hes_checked >= HESITATION_CHECK_MS
    ):
        hesitation = hesitation_check(config, models, state, event)
        if hesitation is not None:
            candidates.append(hesitation)
    return candidates


def _friction_rule(
    config: DetectorConfig,
    models: DetectorModels,
    state: SessionState,
    event: Event,
    hits: list[SignalHit],
) -> Alert | None:
    # The score only rises when a signal fires, so it is computed then, and
    # while the rule waits to re-arm.
    friction = 0.0
    if hits or state.friction_high:
        friction = friction_score(state, event.ts, config.friction_window_ms)
    threshold = config.friction_alert_score
    if state.friction_high:
        state.friction_high = friction >= threshold / 2
        return None
    if friction < threshold:
        return None
    state.friction_high = True
    scored = (friction, threshold, friction / threshold)
    reasons, cause = friction_reasons(state, models)
    return session_alert(
        config, models, "trust_loss", state, event, "friction_pileup", cause, scored, reasons
    )


def _trust_rule(
    config: DetectorConfig, models: DetectorModels, state: SessionState, event: Event, scored: bool
) -> Alert | None:
    trust = models.trust
    drop_rule = floor_rule = False
    # the model's AUC is read only where it decides (a scored event in a
    # deliberation stage); None until enough outcomes of both kinds: not validated
    judged = (
        scored and state.stage in DELIBERATION_STAGES and trust.closed >= config.trust_min_closed
    )
    auc = trust.auc if judged else None
    if auc is not None and auc >= config.trust_min_auc:
        base = trust.base_rate
        fall = state.trust_peak - state.trust
        fall_threshold = trust.drop_threshold()
        drop = (
            fall_threshold is not None
            and fall > fall_threshold
            and state.trust_peak >= config.trust_min_peak_lift * base
            and state.trust <= state.trust_peak * (1.0 - config.trust_drop)
            and state.trust < base
        )
        floor = state.furthest >= _DECIDE and state.trust <= config.trust_floor_ratio * base
        state.trust_strikes = state.trust_strikes + 1 if drop or floor else 0
        if state.trust_strikes >= config.trust_strikes:
            drop_rule, floor_rule = drop, floor and not drop
    if state.trust_low:
        state.trust_low = state.trust < state.trust_peak * config.trust_recover
        return None
    if not (drop_rule or floor_rule):
        return None
    state.trust_low = True
    if floor_rule:
        threshold = config.trust_floor_ratio * trust.base_rate
        rule = "trust_floor"
    else:
        threshold = state.trust_peak * (1.0 - config.trust_drop)
        rule = "trust_drop"
    scored_at = (state.trust, threshold, threshold / max(state.trust, 1e-6))
    reasons = trust_reasons(state, models, event.ts)
    alert = session_alert(
        config, models, "trust_loss", state, event, rule, "falling_trust", scored_at, reasons
    )
    alert.extra["trust_peak"] = round(state.trust_peak, 4)
    return alert


def hesitation_check(
    config: DetectorConfig, models: DetectorModels, state: SessionState, trigger: Event | int
) -> Alert | None:
    """Check a session in evaluate or decide for hesitation at ``trigger``
    (the event just applied, or the event time of a check between events):
    score the moment for anomaly, keep it for the leave hazard to learn at
    close, and raise ``leave_hazard`` when the validated hazard is at least
    ``hesitation_hazard`` and the moment deviates in the hesitant direction
    (longer than usual dwell or time without progress, more reversals or
    revisits). One alert per episode: the rule re-arms when the hazard falls
    back below the threshold."""
    ts = trigger if isinstance(trigger, int) else trigger.ts
    state.hes_checked = ts
    x = hesitation_features(state, ts)
    hes = models.hesitation.score(state.stage, x)
    vector = moment_vector(state, ts, x, hes.score)
    state.moments.append((ts, snapshot_vector(vector)))
    if len(state.moments) > MOMENTS_CAP:
        del state.moments[0]
    hazard = models.hazard
    auc = hazard.auc if hazard.closed >= config.trust_min_closed else None
    if auc is None or auc < config.hesitation_min_auc:
        return None
    p = hazard.predict(vector)
    threshold = max(config.hesitation_hazard, hazard.level(state.stage))
    above = p >= threshold
    if state.hes_high:
        state.hes_high = above
        return None
    if not (above and hes.hesitant):
        return None
    state.hes_high = True
    scored = (p, threshold, p / threshold)
    reasons = hesitation_reasons(state, models, x)
    cause = hesitation_cause(state)
    return session_alert(
        config, models, "hesitation", state, trigger, "leave_hazard", cause, scored, reasons
    )
