"""Prequential evaluation: does the score predict real outcomes?

Each session is scored while it runs, by the model as it was at that moment,
and learned only when it closes. From the recorded scores this module
computes:

* trust-score ROC-AUC on session *prefixes*: the score after the first 25%,
  50% and 75% of the events before the goal event (all events for
  non-converters), over sessions with at least 3 such events;
* on the same prefixes, the AUC of each activity metric (events, page views,
  clicks and seconds so far; more activity read as more likely to convert)
  and the plain prefix features an offline reference model is trained on
  (:mod:`detectors.offline.prefix_features`);
* alerts per 1000 sessions (session kinds: hesitation and trust_loss);
* alert precision: the share of alerted sessions that did not convert;
* lead time: from the first alert to the end of a non-converting session,
  in seconds and in events (median); precision and lead time per alert kind;
* with simulator ground truth (:mod:`detectors.offline.truth_comparison`):
  friction-episode recall and detection delay, hesitation-episode recall,
  hotspot-incident detection (on time, late or missed) and false hotspots.

Outcomes come from the goal event in the stream, or from ``labels`` (for
example a CRM export) when given; they feed :data:`OUTCOME_FIGURES`. The
trust model's own rolling figures are learned from the goal event in the
stream, whatever the labels say. A figure that a small sample cannot
support is ``None``, with the reason under ``not_available`` in the summary
(see :mod:`detectors.sample_size`).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import SESSION_KINDS, Alert
from detectors.config import DetectorConfig
from detectors.detector import Detector, StepResult
from detectors.events import Event
from detectors.offline.prefix_features import (
    ACTIVITY_METRICS,
    SessionTrace,
    Snapshot,
    TraceRecorder,
    best_activity,
    prefix_lengths,
    snapshots,
)
from detectors.offline.prefix_features import MIN_PREFIX_EVENTS as MIN_PREFIX_EVENTS
from detectors.offline.prefix_features import PREFIXES as PREFIXES
from detectors.offline.runner import OfflineRunner, RunStats
from detectors.offline.truth_comparison import compare_with_truth, late_window_ms, median
from detectors.sample_size import roc_auc, too_few_outcomes
from detectors.session import SessionState
from detectors.simulation.ground_truth import GroundTruth
from detectors.uplift import UPLIFT_MIN_SESSIONS, UpliftTracker, slices_of, treatment_of

#: The figures computed from outcomes (the goal event, or ``labels``).
OUTCOME_FIGURES: tuple[str, ...] = (
    "converters",
    "prefix_auc",
    "alert_precision",
    "lead_time",
)
#: The k-th event at which :meth:`Evaluation.fixed_count_auc` compares
#: trust and activity: early, middle and late in a typical visit.
FIXED_COUNTS: tuple[int, ...] = (5, 10, 20)
#: Below this share of given labels naming an evaluated session, the labels
#: probably come from another export or use other ids: worth a warning.
LOW_MATCH_SHARE = 0.5


@dataclass
class _Track:
    scores: array[float] = field(default_factory=lambda: array("f"))
    goal_index: int = -1
    first_alert_ts: int = 0
    first_alert_index: int = 0
    alerts: int = 0
    alert_times: list[int] = field(default_factory=list)
    alert_kinds: list[str] = field(default_factory=list)
    end_ts: int = 0
    #: the events before the goal, for activity metrics and prefix features
    trace: SessionTrace = field(default_factory=SessionTrace)


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """Outcome labels given (``--labels``) and how many of them name a
    session of the evaluated events.

    >>> LabelMatch(given=40, matched=3).low, LabelMatch(given=40, matched=38).low
    (True, False)
    """

    given: int
    matched: int

    @property
    def low(self) -> bool:
        """Fewer than :data:`LOW_MATCH_SHARE` of the labels matched."""
        return self.matched < LOW_MATCH_SHARE * self.given


@dataclass(frozen=True)
class Evaluation:
    """Everything measured in one run. Nothing changes after
    :func:`evaluate`: the derived figures (:meth:`prefix_points`,
    :meth:`prefix_auc`, :meth:`lead_times`, :meth:`summary`) are computed
    on each call, so they can be asked for in any order."""

    stats: RunStats
    tracks: dict[str, _Track]
    labels: dict[str, bool]
    hotspots: list[Alert]
    model_metrics: dict[str, Any]
    seconds: float
    truth: GroundTruth | None = None
    goal_event: str = "purchase"
    #: alerted sessions' holdout group and alert marks (kind/action), by session id
    groups: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    #: ``intervention`` events applied: pages that showed help for an alert
    acknowledged: int = 0
    holdout_share: float = 0.1
    #: hotspot alerts this long after an incident ended are late detections
    late_ms: int = late_window_ms(30 * 60 * 1000)

    def converted(self, sid: str) -> bool:
        if sid in self.labels:
            return self.labels[sid]
        return self.tracks[sid].goal_index >= 0

    def label_match(self) -> LabelMatch:
        """How many of the given labels name an evaluated session."""
        return LabelMatch(len(self.labels), sum(1 for sid in self.labels if sid in self.tracks))

    def prefix_points(self) -> dict[str, list[tuple[float, bool]]]:
        """``(score, converted)`` per prefix (``"0.25"``, ``"0.5"``,
        ``"0.75"``) over sessions with at least :data:`MIN_PREFIX_EVENTS`
        events before the goal; a score not computed yet counts as 0.5."""
        points: dict[str, list[tuple[float, bool]]] = {f"{p}": [] for p in PREFIXES}
        for sid, track in self.tracks.items():
            label = self.converted(sid)
            n = track.goal_index if track.goal_index >= 0 else len(track.scores)
            if n < MIN_PREFIX_EVENTS:
                continue
            for p, k in zip(PREFIXES, prefix_lengths(n), strict=True):
                score = float(track.scores[k - 1])
                points[f"{p}"].append((score if score >= 0 else 0.5, label))
        return points

    def prefix_snapshots(self) -> Iterator[tuple[list[Snapshot], bool]]:
        """Per session of :meth:`prefix_points` (same sessions, same order):
        its snapshot at each prefix, and whether it converted."""
        for sid, track in self.tracks.items():
            n = len(track.trace)
            if n >= MIN_PREFIX_EVENTS:
                yield snapshots(track.trace, prefix_lengths(n)), self.converted(sid)

    def activity_auc(self) -> dict[str, dict[str, float | None]]:
        """ROC-AUC of each activity metric per prefix (4 decimals), a higher
        count scored as more likely to convert. Only the AUCs: the summary
        withholds them for the same reason as :meth:`prefix_auc`."""
        values: dict[str, dict[str, list[float]]] = {
            m: {f"{p}": [] for p in PREFIXES} for m in ACTIVITY_METRICS
        }
        labels: list[bool] = []
        for snaps, label in self.prefix_snapshots():
            labels.append(label)
            for p, snap in zip(PREFIXES, snaps, strict=True):
                for metric, value in zip(ACTIVITY_METRICS, snap.activity(), strict=True):
                    values[metric][f"{p}"].append(value)
        out: dict[str, dict[str, float | None]] = {}
        for metric, per_prefix in values.items():
            out[metric] = {}
            for key, scores in per_prefix.items():
                auc = roc_auc(scores, labels)
                out[metric][key] = None if auc is None else round(auc, 4)
        return out

    def fixed_count_auc(self) -> dict[str, dict[str, Any]]:
        """ROC-AUC of the trust score and of each activity metric at the
        k-th event (k in :data:`FIXED_COUNTS`), over the sessions with more
        than k events before the goal (4 decimals; ``None`` while either
        outcome has fewer than :data:`~detectors.sample_size.MIN_PER_OUTCOME`
        sessions).

        Unlike a fraction of the session, the k-th event is a moment a live
        detector can be at: "events so far" is k for everyone there, so it
        ranks at chance, while at 25% of the events it is ``ceil(n / 4)``, a
        function of the session's final length ``n``, which nobody knows
        while the session runs.
        """
        out: dict[str, dict[str, Any]] = {}
        for k in FIXED_COUNTS:
            labels: list[bool] = []
            trust: list[float] = []
            activity: list[tuple[float, float, float, float]] = []
            for sid, track in self.tracks.items():
                if len(track.trace) <= k:
                    continue
                score = float(track.scores[k - 1])
                labels.append(self.converted(sid))
                trust.append(score if score >= 0 else 0.5)
                activity.append(snapshots(track.trace, (k,))[0].activity())
            enough = too_few_outcomes(sum(labels), len(labels) - sum(labels), self.goal_event)
            figures: dict[str, Any] = {"sessions": len(labels)}
            columns = [("trust", trust)] + [
                (metric, [a[i] for a in activity]) for i, metric in enumerate(ACTIVITY_METRICS)
            ]
            for name, scores in columns:
                auc = None if enough else roc_auc(scores, labels)
                figures[name] = None if auc is None else round(auc, 4)
            out[str(k)] = figures
        return out

    def prefix_features(self) -> dict[str, tuple[list[list[float]], list[bool]]]:
        """Plain feature rows (:func:`~detectors.offline.prefix_features.feature_names`)
        and outcomes per prefix, for an offline reference model."""
        out: dict[str, tuple[list[list[float]], list[bool]]] = {f"{p}": ([], []) for p in PREFIXES}
        for snaps, label in self.prefix_snapshots():
            for p, snap in zip(PREFIXES, snaps, strict=True):
                rows, labels = out[f"{p}"]
                rows.append(snap.row(self.goal_event))
                labels.append(label)
        return out

    def prefix_auc(self) -> tuple[dict[str, float | None], str | None]:
        """ROC-AUC per prefix (4 decimals); all ``None``, with the reason,
        while either outcome has fewer than
        :data:`~detectors.sample_size.MIN_PER_OUTCOME` sessions."""
        points = self.prefix_points()
        labels = [label for _, label in points["0.5"]]
        reason = too_few_outcomes(sum(labels), len(labels) - sum(labels), self.goal_event)
        if not labels:
            reason = f"no session with at least {MIN_PREFIX_EVENTS} events before the goal"
        out: dict[str, float | None] = {}
        for key, pts in points.items():
            auc = None if reason else roc_auc([s for s, _ in pts], [lab for _, lab in pts])
            out[key] = None if auc is None else round(auc, 4)
        return out, reason

    def lead_times(self) -> tuple[list[float], list[int]]:
        """From the first alert to the end of each alerted session that did
        not convert: in seconds, and in events."""
        seconds: list[float] = []
        events: list[int] = []
        for sid, track in self.tracks.items():
            if track.alerts and not self.converted(sid):
                seconds.append((track.end_ts - track.first_alert_ts) / 1000.0)
                events.append(len(track.scores) - track.first_alert_index)
        return seconds, events

    def kind_quality(self) -> dict[str, dict[str, Any]]:
        """Per session alert kind: alerted sessions, precision (the share
        that did not convert) and the median lead time in seconds from the
        kind's first alert to the end of a non-converting session."""
        out: dict[str, dict[str, Any]] = {}
        for kind in SESSION_KINDS:
            alerted = converted = 0
            lead_s: list[float] = []
            for sid, track in self.tracks.items():
                if kind not in track.alert_kinds:
                    continue
                alerted += 1
                if self.converted(sid):
                    converted += 1
                    continue
                first = track.alert_times[track.alert_kinds.index(kind)]
                lead_s.append((track.end_ts - first) / 1000.0)
            out[kind] = {
                "alerted_sessions": alerted,
                "precision": round((alerted - converted) / alerted, 4) if alerted else None,
                "lead_time_s_median": median(lead_s),
            }
        return out

    def uplift(self, min_sessions: int = UPLIFT_MIN_SESSIONS) -> dict[str, Any]:
        """Conversion of alerted treated against alerted control sessions,
        overall and by alert kind and suggested action, with Newcombe's 95%
        interval of the difference (``None`` below ``min_sessions`` in
        either group). Outcomes are the evaluation's (labels first). When
        no intervention was acknowledged in the events, nothing acted on the
        treated sessions either, so the figure is an A/A check: it should
        contain 0."""
        tracker = UpliftTracker(min_sessions=min_sessions)
        for sid, (treatment, marks) in self.groups.items():
            tracker.closed(treatment, self.converted(sid), slices_of(marks))
        return {
            "holdout_share": self.holdout_share,
            "min_sessions": min_sessions,
            "interventions_acknowledged": self.acknowledged,
            "a_a_check": self.acknowledged == 0,
            "slices": tracker.rows(),
        }

    def summary(self) -> dict[str, Any]:
        """The JSON report. ``not_available`` gives the reason for each
        figure that is ``None``; ``outcomes`` says where the outcomes came
        from and which figures they feed."""
        sessions = len(self.tracks)
        prefix_auc, auc_reason = self.prefix_auc()
        session_alerts = sum(self.stats.alerts[k] for k in SESSION_KINDS)
        alerted = [sid for sid, t in self.tracks.items() if t.alerts]
        non_conv_alerted = [sid for sid in alerted if not self.converted(sid)]
        lead_s, lead_events = self.lead_times()
        activity = self.activity_auc()
        if auc_reason:
            activity = {m: dict.fromkeys(v) for m, v in activity.items()}
        out: dict[str, Any] = {
            "sessions": sessions,
            "converters": sum(1 for sid in self.tracks if self.converted(sid)),
            "events": self.stats.events,
            "events_applied": self.stats.applied,
            "invalid_events": dict(self.stats.invalid),
            "prefix_auc": prefix_auc,
            "prefix_sessions": len(self.prefix_points()["0.5"]),
            "fixed_count_auc": self.fixed_count_auc(),
            "activity_auc": activity,
            "best_activity_auc": best_activity(activity),
            "alerts_per_1000_sessions": round(1000.0 * session_alerts / max(sessions, 1), 2),
            "alerted_sessions": len(alerted),
            "alert_precision": (
                round(len(non_conv_alerted) / len(alerted), 4) if alerted else None
            ),
            "lead_time_s_median": median(lead_s),
            "lead_time_events_median": median([float(x) for x in lead_events]),
            "by_kind": {
                k: self.stats.alerts.get(k, 0) for k in (*SESSION_KINDS, "friction_hotspot")
            },
            "by_kind_quality": self.kind_quality(),
            "closed_by_outcome": dict(self.stats.closed),
            "trust_model": self._trust_model(),
            "uplift": self.uplift(),
            "outcomes": self._outcomes(),
            "not_available": self._not_available(auc_reason, bool(alerted), bool(lead_s)),
            "seconds": round(self.seconds, 2),
            "events_per_s": round(self.stats.events / max(self.seconds, 1e-9)),
        }
        if self.truth is not None:
            alert_times = {sid: track.alert_times for sid, track in self.tracks.items()}
            out["truth"] = compare_with_truth(self.truth, alert_times, self.hotspots, self.late_ms)
        return out

    def _trust_model(self) -> dict[str, Any]:
        # the log-loss of a handful of sessions is as noisy as their AUC
        metrics = self.model_metrics
        auc = metrics.get("trust_auc")
        enough = metrics.get("trust_auc_unavailable") is None and auc is not None
        return {
            "rolling_auc": round(auc, 4) if enough and auc is not None else None,
            "rolling_log_loss": round(metrics["trust_log_loss"], 4) if enough else None,
            "sessions_learned": metrics["sessions_closed"],
        }

    def _outcomes(self) -> dict[str, Any]:
        match = self.label_match()
        return {
            "goal_event": self.goal_event,
            "labels_given": match.given,
            "labels_matched": match.matched,
            "feed": list(OUTCOME_FIGURES),
        }

    def _not_available(
        self, auc_reason: str | None, alerted: bool, lead_times: bool
    ) -> dict[str, str]:
        reasons: dict[str, str] = {}
        if auc_reason:
            reasons["prefix_auc"] = reasons["activity_auc"] = auc_reason
        model_reason = self.model_metrics.get("trust_auc_unavailable")
        if model_reason or self.model_metrics.get("trust_auc") is None:
            learned = self.model_metrics["sessions_closed"]
            reasons["trust_model"] = f"learned {learned} sessions, {model_reason or 'no AUC yet'}"
        if not alerted:
            reasons["alert_precision"] = "no alerted session"
        if not lead_times:
            reasons["lead_time"] = f"no alerted session ended without a {self.goal_event}"
        return reasons


def evaluate(
    events: Iterable[Event],
    config: DetectorConfig,
    labels: dict[str, bool] | None = None,
    truth: GroundTruth | None = None,
    stats: RunStats | None = None,
) -> Evaluation:
    """Run the detector prequentially over ``events`` (in event order).

    ``labels`` override the goal event's outcome per session id; ``truth``
    is the simulator's ground truth. ``stats`` may carry counts of invalid
    input from the parsing step.
    """
    tracks: dict[str, _Track] = {}
    hotspots: list[Alert] = []
    groups: dict[str, tuple[str, tuple[str, ...]]] = {}
    acknowledged = 0
    record = TraceRecorder().record
    goal_event = config.goal_event

    def on_step(event: Event, result: StepResult) -> None:
        nonlocal acknowledged
        if result.status != "applied":
            return
        if event.type == "intervention":
            acknowledged += 1
            return  # the page's acknowledgement, not the visitor's behaviour
        track = tracks.get(event.session_id)
        if track is None:
            track = tracks[event.session_id] = _Track()
        if track.goal_index < 0:
            if event.type == goal_event:
                track.goal_index = len(track.scores)
            else:
                record(track.trace, event)
        track.scores.append(result.state.trust)

    def on_close(state: SessionState) -> None:
        track = tracks.get(state.sid)
        if track is not None:
            track.end_ts = state.last_ts
        if state.alert_marks and state.sid not in groups:  # a session's first visit
            treatment = treatment_of(state.sid, config.holdout_salt, config.holdout_share)
            groups[state.sid] = (treatment, tuple(state.alert_marks))

    detector = Detector(config)
    runner = OfflineRunner(detector, on_step=on_step, on_close=on_close)
    if stats is not None:
        runner.stats = stats
    started = time.perf_counter()

    def collect(alerts: list[Alert]) -> None:
        for alert in alerts:
            if alert.kind == "friction_hotspot":
                hotspots.append(alert)
                continue
            track = tracks[alert.subject]
            if not track.alerts:
                track.first_alert_ts = alert.event_time
                track.first_alert_index = len(track.scores)
            track.alerts += 1
            track.alert_times.append(alert.event_time)
            track.alert_kinds.append(alert.kind)

    for event in events:
        collect(runner.feed(event))
    collect(runner.finish())
    seconds = time.perf_counter() - started
    return Evaluation(
        stats=runner.stats,
        tracks=tracks,
        labels=labels or {},
        hotspots=hotspots,
        model_metrics=detector.metrics(),
        seconds=seconds,
        truth=truth,
        goal_event=config.goal_event,
        late_ms=late_window_ms(config.session_timeout_ms),
        groups=groups,
        acknowledged=acknowledged,
        holdout_share=config.holdout_share,
    )
