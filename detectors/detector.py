"""The detector: one step function over (session state, event).

``Detector.process(state, event)`` applies one parsed event to one session's
state and returns the new state with any alerts. ``Detector.close(state,
outcome, ts)`` ends a session, feeds its labelled snapshots to the trust model
and its last page to the hotspot monitor. The models (hesitation, trust,
hotspots) are shared by all sessions a detector sees and live in
:class:`DetectorModels`, which pickles with a version header.

Time is event time only; nothing here reads a clock.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from typing import Any

from river import stats

from detectors.alerts import Alert, Reason, severity_for, suggested_action
from detectors.config import DELIBERATION_STAGES, STAGE_INDEX, DetectorConfig
from detectors.events import Event
from detectors.features import (
    hesitation_features,
    hesitation_raw,
    snapshot_vector,
    trust_features,
    trust_vector,
    vector_to_features,
)
from detectors.hesitation import HESITATION_STAGES, HESITATION_WORDS, HesitationModel
from detectors.hotspots import HotspotFinding, HotspotMonitor
from detectors.journey import JourneyTracker, step_label
from detectors.session import SIGNAL_INDEX, SIGNALS, SessionState, id_hash48, page_key
from detectors.signals import (
    SIGNAL_WEIGHTS,
    SIGNAL_WORDS,
    DeadOrErrorClick,
    FormFriction,
    PageLoop,
    RageClick,
    ScrollThrash,
    SignalHit,
    SlowPage,
    Stall,
    TrustTouchpoint,
    UTurn,
    count_hit,
    friction_score,
)
from detectors.trust import TRUST_WORDS, TrustModel

_DECIDE = STAGE_INDEX["decide"]  # furthest >= this: the visitor reached the basket

MODEL_FORMAT = 1
RIVER_VERSION = version("river")
MODEL_NAME = "trust-lr.v1+hst.v1+adwin.v1"

#: A live session in evaluate/decide is re-scored for hesitation at most
#: this often (ms of event time) between page views: a quarter of the stall
#: time, so a stall is seen within 30 s.
HESITATION_CHECK_MS = 30_000

#: The trust score is recomputed on page views, cart and checkout events and
#: signal hits, and otherwise at most this often (ms of event time), so time
#: on the current page counts without scoring every scroll.
TRUST_RESCORE_MS = 10_000

STATUSES = ("applied", "duplicate", "late", "after_close")
OUTCOMES = ("converted", "exit", "timeout")

_SCORE_TRIGGERS = frozenset({"page_view", "add_to_cart", "remove_from_cart", "checkout_step"})


@dataclass(slots=True)
class StepResult:
    """Outcome of one step. ``status`` is one of :data:`STATUSES`; only
    ``applied`` changed the state. ``closed`` is set when the event closed
    the session (goal or exit); ``hits`` lists the signals that fired."""

    state: SessionState
    status: str
    alerts: list[Alert] = field(default_factory=list)
    hits: list[SignalHit] = field(default_factory=list)
    closed: bool = False


class DetectorModels:
    """The shared online models, bounded in memory and picklable.

    >>> m = DetectorModels(DetectorConfig())
    >>> DetectorModels.loads(m.dumps()).trust.closed
    0
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.hesitation = HesitationModel(config)
        self.trust = TrustModel(config.trust_drop_quantile)
        self.hotspots = HotspotMonitor(config)
        self.signal_means = [stats.Mean() for _ in SIGNALS]
        self.budget_tokens = config.alert_budget_per_1000 / 10.0
        self.suppressed_by_budget = 0

    @property
    def version(self) -> str:
        """Model family plus the number of sessions learned: names the exact
        model state that made a decision."""
        return f"{MODEL_NAME}@{self.trust.closed}"

    def dumps(self) -> bytes:
        """Pickle with a header recording the format and River version."""
        header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
        return pickle.dumps((header, self), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> DetectorModels:
        """Inverse of :meth:`dumps`; ``ValueError`` when format or River
        version differ (a River upgrade invalidates checkpoints)."""
        header, models = pickle.loads(blob)
        if header.get("format") != MODEL_FORMAT or header.get("name") != MODEL_NAME:
            raise ValueError(f"incompatible model checkpoint {header!r}")
        if header.get("river") != RIVER_VERSION:
            raise ValueError(
                f"checkpoint made with River {header.get('river')}, running {RIVER_VERSION}"
            )
        if not isinstance(models, DetectorModels):
            raise ValueError("checkpoint does not hold DetectorModels")
        return models


class Detector:
    """Signals, models and alert policy over a stream of sessions.

    >>> from detectors.events import EventParser
    >>> cfg = DetectorConfig()
    >>> det, parse = Detector(cfg), EventParser(cfg).parse
    >>> t0 = 1_700_000_000_000
    >>> r = det.process(None, parse({"session_id": "s", "ts": t0, "type": "page_view",
    ...                              "page": "/products/1"}))
    >>> r.status, r.state.stage
    ('applied', 'consider')
    >>> det.process(r.state, parse({"session_id": "s", "ts": t0, "type": "page_view",
    ...                             "page": "/products/1"})).status
    'duplicate'
    """

    def __init__(self, config: DetectorConfig, models: DetectorModels | None = None) -> None:
        self.config = config.validate()
        self.models = models if models is not None else DetectorModels(config)
        self.journey = JourneyTracker(config)
        self.rage = RageClick(config)
        self.dead = DeadOrErrorClick(config)
        self.uturn = UTurn(config)
        self.loop = PageLoop(config)
        self.thrash = ScrollThrash(config)
        self.form = FormFriction(config)
        self.stall = Stall(config)
        self.slow = SlowPage(config)
        self.touch = TrustTouchpoint()

    # ------------------------------------------------------------------ step
    def process(self, state: SessionState | None, event: Event) -> StepResult:
        """Apply one event. Never raises for a valid :class:`Event`."""
        cfg = self.config
        ts = event.ts
        if state is None:
            self._earn_budget()
            state = SessionState(
                event.session_id,
                user_hash=event.user_hash,
                start_ts=ts,
                last_ts=ts,
                last_progress=ts,
            )
        id_hash = id_hash48(event.event_id)
        if state.seen(id_hash):
            return StepResult(state, "duplicate")
        if state.outcome is not None:
            if state.outcome == "converted" or ts <= state.closed_ts:
                return StepResult(state, "after_close")
            state = self._reopen(state, event)
        if state.n_events and (
            ts <= state.dedup_floor or ts < state.last_ts - cfg.allowed_lateness_ms
        ):
            return StepResult(state, "late")
        state.remember(id_hash, ts, cfg.dedup_capacity)
        gap = max(0, ts - state.last_ts) if state.n_events else 0
        state.start_ts = min(state.start_ts, ts)
        state.last_ts = max(state.last_ts, ts)
        state.n_events += 1
        if state.user_hash is None and event.user_hash is not None:
            state.user_hash = event.user_hash
        state.page_events += 1
        state.page_max_gap = max(state.page_max_gap, gap)

        result = StepResult(state, "applied")
        hits = result.hits
        progressed = False
        etype = event.type
        if etype == "page_view":
            progressed = self._page_view(state, event, hits, result)
        elif etype == "click":
            hits += self.dead.on_click(state, event)
            hits += self.rage.update(state, event)
        elif etype == "scroll":
            hits += self.thrash.update(state, event)
        elif etype in ("form_focus", "form_input", "form_error", "form_submit"):
            hits += self.form.update(state, event)
        elif etype == "error":
            state.errors += 1
            hits += self.dead.on_error(state, event)
        elif etype == "search":
            state.searches += 1
        elif etype == "add_to_cart":
            state.carts += 1
            progressed = True
        elif etype == "remove_from_cart":
            state.cart_removes += 1
        elif etype == "checkout_step":
            progressed = self._checkout_step(state, event)
        if progressed:
            self.journey.mark_progress(state, ts)
        hits += self.stall.update(state, ts, gap)
        for hit in hits:
            count_hit(state, hit, cfg.friction_window_ms)

        if etype == cfg.goal_event:
            result.alerts += self.close(state, "converted", ts)
            result.closed = True
            return result
        # Snapshots for delayed-label learning are taken every stride-th event
        # (systematic sampling: when the buffer is full, keep every other one
        # and double the stride), so they cover the session evenly in events,
        # the unit in which the score is used and evaluated.
        snapshot = (state.n_events - 1) % state.snap_stride == 0
        scored = (
            snapshot
            or etype in _SCORE_TRIGGERS
            or bool(hits)
            or ts - state.trust_ts >= TRUST_RESCORE_MS
        )
        if scored:
            self._score_trust(state, ts, snapshot)
        self._evaluate(state, event, result, scored)
        if etype == "exit":
            result.alerts += self.close(state, "exit", ts)
            result.closed = True
        return result

    @staticmethod
    def _reopen(closed: SessionState, event: Event) -> SessionState:
        """A session id seen again after a timeout or exit: a new visit. It
        starts a fresh journey but keeps the de-duplication window and the
        alert episode counters, so alert ids stay unique per session id."""
        fresh = SessionState(
            closed.sid,
            user_hash=closed.user_hash or event.user_hash,
            start_ts=event.ts,
            last_ts=event.ts,
            last_progress=event.ts,
        )
        fresh.dedup = closed.dedup
        fresh.dedup_floor = closed.dedup_floor
        fresh.episodes = list(closed.episodes)
        fresh.outbox = closed.outbox
        return fresh

    def _page_view(
        self, state: SessionState, event: Event, hits: list[SignalHit], result: StepResult
    ) -> bool:
        key = page_key(event.page, event.page_type)
        leave = self.journey.leave(state, event, key)
        if leave is not None:
            hits += self.uturn.on_leave(leave, event.ts)
            hits += self.form.on_leave(leave.had_form, event.ts)
            problem = state.page_friction or any(h.weight > 0 for h in hits)
            finding = self.models.hotspots.observe(self._hotspot_key(state), problem, event.ts)
            if finding is not None:
                result.alerts.append(self._hotspot_alert(finding, state, event.event_id, event.ts))
        progressed = self.journey.enter(state, event, key)
        hits += self.loop.on_enter(state, event.ts)
        hits += self.touch.on_enter(state, event.page_type, event.ts)
        hits += self.slow.update(event)
        return progressed

    @staticmethod
    def _checkout_step(state: SessionState, event: Event) -> bool:
        step = event.prop_float("step")
        state.page_step = step_label(event)
        if step is not None and 0 < step < 100:
            if int(step) > state.checkout_steps:
                state.checkout_steps = int(step)
                return True
            return False
        state.checkout_steps += 1
        return True

    # ---------------------------------------------------------------- scores
    def _score_trust(self, state: SessionState, ts: int, snapshot: bool) -> None:
        x = trust_vector(state, ts)
        p = self.models.trust.predict_vector(x)
        state.trust = p
        state.trust_ts = ts
        state.trust_peak = max(state.trust_peak, p)
        if snapshot:
            state.snapshots.append((ts, snapshot_vector(x)))
            if len(state.snapshots) > self.config.snapshot_capacity:
                state.snapshots = state.snapshots[::2]
                state.snap_stride *= 2

    def _evaluate(
        self, state: SessionState, event: Event, result: StepResult, scored: bool
    ) -> None:
        cfg = self.config
        ts = event.ts
        candidates: list[Alert] = []
        # trust loss: friction piling up (transparent rule, always on). The
        # score only rises when a signal fires, so it is computed then, and
        # while the rule waits to re-arm.
        friction = 0.0
        if result.hits or state.friction_high:
            friction = friction_score(state, ts, cfg.friction_window_ms)
        trust = self.models.trust
        model_ready = trust.closed >= cfg.trust_min_closed and trust.auc >= cfg.trust_min_auc
        drop_rule = False
        floor_rule = False
        if model_ready and scored and state.stage in DELIBERATION_STAGES:
            base = trust.base_rate
            fall = state.trust_peak - state.trust
            fall_threshold = trust.observe_drop(fall)
            drop = (
                fall_threshold is not None
                and fall > fall_threshold
                and state.trust_peak >= cfg.trust_min_peak_lift * base
                and state.trust <= state.trust_peak * (1.0 - cfg.trust_drop)
                and state.trust < base
            )
            floor = state.furthest >= _DECIDE and state.trust <= cfg.trust_floor_ratio * base
            state.trust_strikes = state.trust_strikes + 1 if drop or floor else 0
            if state.trust_strikes >= cfg.trust_strikes:
                drop_rule, floor_rule = drop, floor and not drop
        # each rule has its own hysteresis, so a model alert cannot mask friction
        if state.friction_high:
            state.friction_high = friction >= cfg.friction_alert_score / 2
        elif friction >= cfg.friction_alert_score:
            state.friction_high = True
            candidates.append(self._friction_alert(state, event, friction))
        if state.trust_low:
            state.trust_low = state.trust < state.trust_peak * cfg.trust_recover
        elif drop_rule or floor_rule:
            state.trust_low = True
            candidates.append(self._trust_alert(state, event, floor_rule))
        # hesitation: a stall that is also an anomaly for its stage
        if state.stage in HESITATION_STAGES and (
            event.type == "page_view" or ts - state.hes_checked >= HESITATION_CHECK_MS
        ):
            state.hes_checked = ts
            x = hesitation_features(state, ts)
            hes = self.models.hesitation.score_one(state.stage, x)
            above = hes.threshold is not None and hes.score > hes.threshold
            if state.hes_high and not above:
                state.hes_high = False
            elif above and hes.hesitant and state.stall_fired and not state.hes_high:
                state.hes_high = True
                assert hes.threshold is not None
                candidates.append(self._hesitation_alert(state, event, x, hes.score, hes.threshold))
        for alert in candidates:
            admitted = self._admit(state, alert.kind, ts, always=alert.rule == "friction_pileup")
            if admitted:
                result.alerts.append(admitted_alert(alert, admitted))

    def _earn_budget(self) -> None:
        budget = self.config.alert_budget_per_1000
        if budget > 0:
            models = self.models
            models.budget_tokens = min(models.budget_tokens + budget / 1000.0, budget)

    def _admit(self, state: SessionState, kind: str, ts: int, always: bool) -> int:
        """Alert policy: no alerts after close, a per-session cap, a cooldown
        per kind and the alert budget (which ``always`` rules bypass).
        Returns the new episode number, or 0 to suppress."""
        if state.outcome is not None or state.n_alerts >= self.config.max_alerts_per_session:
            return 0
        k = 0 if kind == "hesitation" else 1
        last = state.last_alert[k]
        if last and ts - last < self.config.cooldown_ms:
            return 0
        models = self.models
        if self.config.alert_budget_per_1000 > 0:
            if models.budget_tokens < 1.0 and not always:
                models.suppressed_by_budget += 1
                return 0
            models.budget_tokens -= 1.0
        state.episodes[k] += 1
        state.last_alert[k] = ts
        state.n_alerts += 1
        return state.episodes[k]

    # ------------------------------------------------------------------ close
    def close(self, state: SessionState, outcome: str, ts: int) -> list[Alert]:
        """End a session: learn its labelled snapshots, count its signals for
        the baselines and give its last page to the hotspot monitor. Closing
        twice is a no-op."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        if state.outcome is not None:
            return []
        converted = outcome == "converted"
        end = max(ts, state.last_ts)
        if state.form_open and not converted:
            count_hit(state, SignalHit("form_abandon", 1.0, end), self.config.friction_window_ms)
        self.journey.close_stage_time(state, end)
        state.outcome = outcome
        state.closed_ts = end
        models = self.models
        models.trust.learn_session([vector_to_features(v) for _, v in state.snapshots], converted)
        for mean, count in zip(models.signal_means, state.signal_counts, strict=True):
            mean.update(count)
        state.snapshots = []
        alerts = []
        if state.page_enter:
            problem = state.page_friction or not converted
            finding = models.hotspots.observe(self._hotspot_key(state), problem, end)
            if finding is not None:
                alerts.append(self._hotspot_alert(finding, state, None, end))
        return alerts

    # ------------------------------------------------------------- alert text
    @staticmethod
    def _hotspot_key(state: SessionState) -> str:
        page_type = state.page_type or "unknown"
        return f"{page_type}/{state.page_step}" if state.page_step else page_type

    def _base(
        self,
        kind: str,
        state: SessionState,
        event: Event | None,
        score: float,
        threshold: float,
        margin: float,
        reasons: list[Reason],
        rule: str,
    ) -> Alert:
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
            reasons=tuple(reasons[:3]),
            suggested_action=suggested_action(self.config.playbook, kind, state.stage),
            trigger_event_id=event.event_id if event else None,
            event_time=event.ts if event else state.last_ts,
            model_version=self.models.version,
            rule=rule,
        )

    def _friction_alert(self, state: SessionState, event: Event, friction: float) -> Alert:
        reasons = []
        for name in SIGNALS:
            weight = SIGNAL_WEIGHTS[name]
            count = state.signal_counts[SIGNAL_INDEX[name]]
            if weight > 0 and count > 0:
                baseline = self.models.signal_means[SIGNAL_INDEX[name]].get()
                text = f"{count} {SIGNAL_WORDS[name]} this session (typical: {baseline:.1f})"
                reasons.append(Reason(name, float(count), baseline, weight, text))
        reasons.sort(key=lambda r: r.value * r.weight, reverse=True)
        threshold = self.config.friction_alert_score
        return self._base(
            "trust_loss",
            state,
            event,
            friction,
            threshold,
            friction / threshold,
            reasons,
            "friction_pileup",
        )

    def _trust_alert(self, state: SessionState, event: Event, floor: bool) -> Alert:
        trust = self.models.trust
        x = trust_features(state, event.ts)
        reasons = []
        for c in trust.contributions(x)[:3]:
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
        if floor:
            threshold = self.config.trust_floor_ratio * trust.base_rate
            margin = threshold / max(state.trust, 1e-6)
            rule = "trust_floor"
        else:
            threshold = state.trust_peak * (1.0 - self.config.trust_drop)
            margin = threshold / max(state.trust, 1e-6)
            rule = "trust_drop"
        alert = self._base(
            "trust_loss", state, event, state.trust, threshold, margin, reasons, rule
        )
        alert.extra["trust_peak"] = round(state.trust_peak, 4)
        return alert

    def _hesitation_alert(
        self, state: SessionState, event: Event, x: dict[str, float], score: float, threshold: float
    ) -> Alert:
        reasons = []
        for name, value, mean, z in self.models.hesitation.explain(state.stage, x)[:3]:
            if z <= 0:
                break
            raw, unit = hesitation_raw(name, value)
            base, _ = hesitation_raw(name, mean)
            text = (
                f"{HESITATION_WORDS[name]}: {raw:.0f} {unit} "
                f"(typical at the {state.stage} stage: {base:.0f} {unit})"
            )
            reasons.append(Reason(name, raw, base, z, text))
        margin = 1.0 + (score - threshold) / max(1.0 - threshold, 1e-6)
        return self._base(
            "hesitation", state, event, score, threshold, margin, reasons, "hst_quantile"
        )

    def _hotspot_alert(
        self, finding: HotspotFinding, state: SessionState, event_id: str | None, ts: int
    ) -> Alert:
        increase = finding.rate_now - finding.rate_before
        text = (
            f"{finding.rate_now:.0%} of visits to {finding.key} now end in friction or "
            f"abandonment (before: {finding.rate_before:.0%})"
        )
        reason = Reason("problem_rate", finding.rate_now, finding.rate_before, 1.0, text)
        threshold = finding.rate_before + self.config.hotspot_min_rate_increase
        return Alert(
            kind="friction_hotspot",
            severity=severity_for(increase / self.config.hotspot_min_rate_increase),
            score=finding.rate_now,
            threshold=threshold,
            subject=f"hotspot/{finding.key}",
            episode=finding.episode,
            session_id=None,
            user_hash=None,
            stage=self.journey.stage_of(finding.key.split("/", 1)[0]),
            page=finding.key,
            reasons=(reason,),
            suggested_action=suggested_action(self.config.playbook, "friction_hotspot", None),
            trigger_event_id=event_id,
            event_time=ts,
            model_version=self.models.version,
            rule="adwin_rate_increase",
            extra={
                "hotspot_key": finding.key,
                "rate_before": round(finding.rate_before, 4),
                "rate_now": round(finding.rate_now, 4),
                "visits": finding.visits,
            },
        )

    # --------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Self-validation figures of the trust model and hotspot state."""
        trust = self.models.trust
        return {
            "trust_auc": trust.auc,
            "trust_log_loss": trust.log_loss,
            "sessions_closed": trust.closed,
            "sessions_converted": trust.converted,
            "snapshots_learned": trust.learned,
            "base_rate": trust.base_rate,
            "open_hotspots": self.models.hotspots.open_incidents(),
            "suppressed_by_budget": self.models.suppressed_by_budget,
            "model_version": self.models.version,
        }


def admitted_alert(alert: Alert, episode: int) -> Alert:
    """Copy of ``alert`` with its episode set (alerts are immutable)."""
    return replace(alert, episode=episode)
