"""The detector: one step function over (session state, event).

``Detector.process(state, event)`` applies one parsed event to one session's
state and returns the new state with any alerts. ``Detector.close(state,
outcome, ts)`` ends a session: its labelled snapshots and moments become a
:class:`~detectors.training.Example` for the models to learn, and its last
page goes to the hotspot monitor. The models (hesitation, trust,
hotspots, alert budget) are shared by all sessions a detector sees and live
in :class:`~detectors.models.DetectorModels`.

A step is: de-duplication and lateness, the session's own counters, the
signals (:mod:`detectors.signals`, each observing its moments), the trust
score, the alert rules (:mod:`detectors.rules`) and the alert policy
(:mod:`detectors.policy`); :mod:`detectors.explain` writes what an alert says.
Time is event time only; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import Alert
from detectors.challenger import Arena
from detectors.config import DELIBERATION_STAGES, EVENT_TYPES, DetectorConfig
from detectors.events import Event
from detectors.explain import hotspot_alert
from detectors.hotspots import HotspotMonitor, PageVisit
from detectors.journey import JourneyTracker, step_label

# DetectorModels and its format constants lived here; pickled checkpoints
# name detectors.detector.DetectorModels, so the names stay importable.
from detectors.models import MODEL_FORMAT, MODEL_NAME, RIVER_VERSION, DetectorModels
from detectors.policy import acknowledge, admit
from detectors.rules import (
    HESITATION_CHECK_MS,
    TRUST_RESCORE_MS,
    count_hit,
    fire,
    hesitation_check,
    score_trust,
)
from detectors.session import TYPE_INDEX, SessionState, id_hash48, page_key
from detectors.signal_protocol import CLOSE, EVENT, LEAVE, Signal, SignalHit, Step
from detectors.signals import SIGNAL_TYPES
from detectors.training import Example
from detectors.trust_map import mark_signals, mark_step, marks_of, prefix_of
from detectors.uplift import treatment_of

__all__ = [
    "DEAD_LETTER_STATUSES",
    "MODEL_FORMAT",
    "MODEL_NAME",
    "OUTCOMES",
    "RIVER_VERSION",
    "STATUSES",
    "Detector",
    "DetectorModels",
    "StepResult",
]

#: ``ignored``: an ``intervention`` acknowledgement for a session with no open
#: visit (nothing to quiet; it neither opens nor reopens one).
STATUSES = ("applied", "duplicate", "late", "after_close", "ignored")
#: Step statuses that the worker dead-letters, with the ``dlq.reason`` it uses.
DEAD_LETTER_STATUSES = {"late": "late_event", "after_close": "after_close"}
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



def next_check(config: DetectorConfig, state: SessionState) -> int | None:
    """When (epoch ms of event time) a quiet session is next due for a
    hesitation check between its events (:meth:`Detector.tick`), or ``None``
    when it is not: it is closed, not in evaluate or decide, or would by then
    have been quiet for longer than ``hesitation_quiet_max_ms``. A check
    moves it :data:`~detectors.rules.HESITATION_CHECK_MS` on. The worker's
    store indexes sessions by it, so its sweep reads only the sessions due."""
    if state.outcome is not None or state.stage not in DELIBERATION_STAGES:
        return None
    due = max(state.hes_checked, state.last_ts) + HESITATION_CHECK_MS
    if due - state.last_ts > config.hesitation_quiet_max_ms:
        return None
    return due

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

    def __init__(
        self,
        config: DetectorConfig,
        models: DetectorModels | None = None,
        *,
        learn: bool = True,
        share_hotspots: bool = False,
    ) -> None:
        """``learn``: learn each closed session's :class:`~detectors.training.Example`
        at once (offline); without it the examples wait in :attr:`examples`
        for the caller to send to the trainer, and the learned models never
        change here (the worker). ``share_hotspots``: page visits wait in
        :attr:`visits` for the caller to send to the shared hotspot agent
        (:func:`observe_visit`, which sees every partition's visits of a
        page) instead of this detector's own monitor."""
        self.config = config.validate()
        self.models = models if models is not None else DetectorModels(config)
        self.learn = learn
        self.share_hotspots = share_hotspots
        #: examples of sessions closed since the caller last took them (``learn`` off)
        self.examples: list[Example] = []
        #: page visits since the caller last took them (``share_hotspots`` on)
        self.visits: list[PageVisit] = []
        self.journey = JourneyTracker(config)
        self.signals: tuple[Signal, ...] = tuple(cls(config) for cls in SIGNAL_TYPES)
        # who observes what, in registry order, resolved once
        self._on_event = {
            etype: tuple(s for s in self.signals if etype in s.observes) for etype in EVENT_TYPES
        }
        self._on_leave = tuple(s for s in self.signals if LEAVE in s.observes)
        self._on_close = tuple(s for s in self.signals if CLOSE in s.observes)

    # ------------------------------------------------------------------ step
    def process(self, state: SessionState | None, event: Event) -> StepResult:
        """Apply one event. Never raises for a valid :class:`Event`."""
        cfg = self.config
        ts = event.ts
        if event.type == "intervention" and (state is None or state.outcome is not None):
            return StepResult(state or SessionState(event.session_id), "ignored")
        if state is None:
            self.models.budget.earn(cfg.alert_budget_capacities)
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
        if event.type == "intervention":
            # the page showed help for an alert: not the visitor's doing, so
            # no signal, score or activity figure sees it; it only quiets
            # further nudges of that kind (policy.acknowledge)
            state.type_counts[TYPE_INDEX["intervention"]] += 1
            acknowledge(state, event.prop_str("kind"), ts)
            return StepResult(state, "applied")
        gap = max(0, ts - state.last_ts) if state.n_events else 0
        state.start_ts = min(state.start_ts, ts)
        state.last_ts = max(state.last_ts, ts)
        state.n_events += 1
        if state.user_hash is None and event.user_hash is not None:
            state.user_hash = event.user_hash
        state.page_events += 1
        state.page_max_gap = max(state.page_max_gap, gap)
        state.type_counts[TYPE_INDEX[event.type]] += 1

        result = StepResult(state, "applied")
        hits = result.hits
        etype = event.type
        if etype == "page_view":
            progressed = self._page_view(state, event, gap, result)
        else:
            progressed = self._count(state, event)
        if progressed:
            self.journey.mark_progress(state, ts)
        step = Step(EVENT, ts, event, gap)
        for signal in self._on_event.get(etype, ()):
            hits += signal.observe(state, step)
        for hit in hits:
            count_hit(state, hit, cfg.friction_window_ms)

        if etype == cfg.goal_event:
            mark_step(state, etype == "page_view", (h.name for h in hits), state.trust, False)
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
        before = state.trust
        if scored:
            score_trust(cfg, self.models, state, ts, snapshot)
        mark_step(state, etype == "page_view", (h.name for h in hits), before, scored)
        for alert in fire(cfg, self.models, state, event, hits, scored):
            admitted = admit(cfg, state, self.models.budget, alert, ts)
            if admitted is not None:
                result.alerts.append(admitted)
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

    def _page_view(self, state: SessionState, event: Event, gap: int, result: StepResult) -> bool:
        """Leave the previous page (its leave signals, its hotspot visit),
        then enter the new one; True when that is forward progress."""
        key = page_key(event.page, event.page_type)
        leave = self.journey.leave(state, event, key)
        if leave is not None:
            step = Step(LEAVE, event.ts, event, gap, leave)
            for signal in self._on_leave:
                result.hits += signal.observe(state, step)
            problem = state.page_friction or any(h.weight > 0 for h in result.hits)
            self._observe_hotspot(state, problem, event.event_id, event.ts, result.alerts)
        return self.journey.enter(state, event, key)

    @staticmethod
    def _count(state: SessionState, event: Event) -> bool:
        """The session's own counters (errors, searches, basket, checkout
        steps); True when the event is forward progress."""
        etype = event.type
        if etype == "error":
            state.errors += 1
        elif etype == "search":
            state.searches += 1
        elif etype == "add_to_cart":
            state.carts += 1
            state.last_cart_ts = max(state.last_cart_ts, event.ts)
            return True
        elif etype == "remove_from_cart":
            state.cart_removes += 1
        elif etype == "checkout_step":
            step = event.prop_float("step")
            state.page_step = step_label(event)
            if step is not None and 0 < step < 100:
                if int(step) > state.checkout_steps:
                    state.checkout_steps = int(step)
                    return True
                return False
            state.checkout_steps += 1
            return True
        return False

    def _observe_hotspot(
        self, state: SessionState, problem: bool, event_id: str | None, ts: int, out: list[Alert]
    ) -> None:
        """Give the page the session is on (its type and step) one visit,
        ``problem`` when it had friction or ended the session unconverted."""
        page_type = state.page_type or "unknown"
        key = f"{page_type}/{state.page_step}" if state.page_step else page_type
        visit = PageVisit(key, problem, event_id, ts)
        if self.share_hotspots:
            self.visits.append(visit)
            return
        alert = observe_visit(
            self.config, self.journey, self.models.hotspots, visit, self.models.version
        )
        if alert is not None:
            out.append(alert)

    # ------------------------------------------------------------------- tick
    def tick_due(self, state: SessionState) -> int | None:
        """When (epoch ms of event time) :meth:`tick` should next look at
        ``state``, or ``None`` when it need not: the session is closed, not
        in evaluate or decide, or quiet for longer than
        ``hesitation_quiet_max_ms``."""
        return next_check(self.config, state)

    def tick(self, state: SessionState, now: int) -> list[Alert]:
        """Advance a quiet session to ``now`` (event time, epoch ms, from the
        watermark: the runner's or the worker's partition's) without an
        event: a visitor staring at a pricing page sends nothing, so the
        trust score and the hesitation check are run here when due (see
        :meth:`tick_due`). Returns the admitted alerts; a no-op otherwise.
        Time only moves forward: ``now`` before the last check does nothing.
        A check reached only after the session has been quiet for longer than
        ``hesitation_quiet_max_ms`` (the worker's watermark jumped: a backlog,
        a new owner, an idle partition) is not run, as it would not have been
        scheduled then: the session is marked checked, which ends its checks.
        """
        due = self.tick_due(state)
        if due is None or now < due:
            return []
        cfg = self.config
        if now - state.last_ts > cfg.hesitation_quiet_max_ms:
            state.hes_checked = now
            return []
        score_trust(cfg, self.models, state, now, snapshot=False)
        alert = hesitation_check(cfg, self.models, state, now)
        if alert is None:
            return []
        admitted = admit(cfg, state, self.models.budget, alert, now)
        return [] if admitted is None else [admitted]

    # ------------------------------------------------------------------ close
    def close(self, state: SessionState, outcome: str, ts: int) -> list[Alert]:
        """End a session: make its :class:`~detectors.training.Example` (its
        labelled snapshots and moments and its signal counts), learn it or
        keep it (see ``learn``), and give its last page to the hotspot
        monitor. Closing twice is a no-op."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        if state.outcome is not None:
            return []
        cfg = self.config
        converted = outcome == "converted"
        end = max(ts, state.last_ts)
        step = Step(CLOSE, end, converted=converted)
        for signal in self._on_close:
            for hit in signal.observe(state, step):
                count_hit(state, hit, self.config.friction_window_ms)
                mark_signals(state, (hit.name,))
        self.journey.close_stage_time(state, end)
        state.outcome = outcome
        state.closed_ts = end
        example = Example(
            state.sid,
            state.start_ts,
            end,
            state.last_ts,
            outcome,
            tuple(state.snapshots),
            tuple(state.moments),
            tuple(state.signal_counts),
            treatment_of(state.sid, cfg.holdout_salt, cfg.holdout_share)
            if state.alert_marks
            else None,
            tuple(state.alert_marks),
            marks_of(state),
            prefix_of(state, converted),
        )
        state.snapshots = []
        state.moments = []
        if self.learn:
            self.models.learn(example)
        else:
            self.examples.append(example)
        alerts: list[Alert] = []
        if state.page_enter:
            problem = state.page_friction or not converted
            self._observe_hotspot(state, problem, None, end, alerts)
        return alerts

    # --------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Self-validation figures of the trust model and hotspot state."""
        trust = self.models.trust
        return {
            "trust_auc": trust.auc,
            "trust_auc_unavailable": trust.auc_unavailable,
            "trust_log_loss": trust.log_loss,
            "trust_serving": trust.serving,
            "trust_champion": trust.kind,
            "trust_challenger": _arena_figures(self.models.arena),
            "hazard_auc": self.models.hazard.auc,
            "trust_learner_auc": trust.learner_auc,
            "sessions_closed": trust.closed,
            "sessions_converted": trust.converted,
            "snapshots_learned": trust.learned,
            "base_rate": trust.base_rate,
            "open_hotspots": self.models.hotspots.open_incidents(),
            "suppressed_by_budget": self.models.suppressed_by_budget,
            "model_version": self.models.version,
        }


def observe_visit(
    config: DetectorConfig,
    journey: JourneyTracker,
    monitor: HotspotMonitor,
    visit: PageVisit,
    model_version: str,
) -> Alert | None:
    """One page visit into a hotspot monitor; the ``friction_hotspot`` alert
    when it opens an incident. A detector's own monitor and the shared
    hotspot agent both observe through here."""
    finding = monitor.observe(visit.key, visit.problem, visit.ts)
    if finding is None:
        return None
    stage = journey.stage_of(finding.key.split("/", 1)[0])
    return hotspot_alert(config, model_version, finding, stage, visit.event_id, visit.ts)


def _arena_figures(arena: Arena | None) -> dict[str, Any] | None:
    """The champion/challenger comparison in :meth:`Detector.metrics`."""
    if arena is None:
        return None
    return {
        "challenger": arena.challenger.kind,
        "bar": arena.last_bar,
        "window_auc": (
            None
            if arena.last is None
            else {"champion": arena.last[0], "challenger": arena.last[1]}
        ),
        "promotions": [
            {"closed": p.closed, "promoted": p.promoted, "auc": [p.promoted_auc, p.demoted_auc]}
            for p in arena.promotions
        ],
    }
