"""Prequential evaluation: does the score predict real outcomes?

Each session is scored while it runs, by the model as it was at that moment,
and learned only when it closes. From the recorded scores this module
computes:

* trust-score ROC-AUC on session *prefixes*: the score after the first 25%,
  50% and 75% of the events before the goal event (all events for
  non-converters), over sessions with at least 3 such events;
* alerts per 1000 sessions (session kinds: hesitation and trust_loss);
* alert precision: the share of alerted sessions that did not convert;
* lead time: from the first alert to the end of a non-converting session,
  in seconds and in events (median);
* with simulator ground truth: friction-episode recall and detection delay,
  hesitation-episode recall, and hotspot-incident detection.

Outcomes come from the goal event in the stream, or from ``labels`` (for
example a CRM export) when given.
"""

from __future__ import annotations

import math
import statistics
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import SESSION_KINDS, Alert
from detectors.config import DetectorConfig
from detectors.detector import Detector, StepResult
from detectors.events import Event
from detectors.runner import OfflineRunner, RunStats
from detectors.session import SessionState

PREFIXES: tuple[float, ...] = (0.25, 0.5, 0.75)
MIN_PREFIX_EVENTS = 3


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Exact ROC-AUC (Mann-Whitney U with mid-ranks for ties).

    Returns ``None`` when one class is absent.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    >>> roc_auc([0.5, 0.5], [False, True])
    0.5
    """
    pos = sum(labels)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid = (i + j) / 2.0 + 1.0
        rank_sum += mid * sum(1 for k in range(i, j + 1) if labels[order[k]])
        i = j + 1
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def _in_incident(alert: Alert, incident: dict[str, Any]) -> bool:
    """Whether a hotspot alert names the incident's key within its span."""
    return (
        alert.subject == f"hotspot/{incident['key']}"
        and incident["start_ts"] <= alert.event_time <= incident["end_ts"]
    )


@dataclass
class _Track:
    scores: array[float] = field(default_factory=lambda: array("f"))
    goal_index: int = -1
    first_alert_ts: int = 0
    first_alert_index: int = 0
    alerts: int = 0
    alert_times: list[int] = field(default_factory=list)
    end_ts: int = 0


@dataclass
class Evaluation:
    """Everything measured in one run; :meth:`summary` is the JSON report."""

    stats: RunStats
    tracks: dict[str, _Track]
    labels: dict[str, bool]
    hotspots: list[Alert]
    model_metrics: dict[str, Any]
    seconds: float
    truth: dict[str, Any] | None = None
    prefix_points: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    lead_times_s: list[float] = field(default_factory=list)
    lead_times_events: list[int] = field(default_factory=list)

    def converted(self, sid: str) -> bool:
        if sid in self.labels:
            return self.labels[sid]
        return self.tracks[sid].goal_index >= 0

    def summary(self) -> dict[str, Any]:
        sessions = len(self.tracks)
        converters = sum(1 for sid in self.tracks if self.converted(sid))
        # prefix AUC
        self.prefix_points = {f"{p}": [] for p in PREFIXES}
        for sid, track in self.tracks.items():
            label = self.converted(sid)
            n = track.goal_index if track.goal_index >= 0 else len(track.scores)
            if n < MIN_PREFIX_EVENTS:
                continue
            for p in PREFIXES:
                k = max(1, math.ceil(p * n))
                score = float(track.scores[k - 1])
                self.prefix_points[f"{p}"].append((score if score >= 0 else 0.5, label))
        prefix_auc: dict[str, float | None] = {}
        for key, points in self.prefix_points.items():
            auc = roc_auc([s for s, _ in points], [lab for _, lab in points])
            prefix_auc[key] = None if auc is None else round(auc, 4)
        # alerts
        session_alerts = sum(self.stats.alerts[k] for k in SESSION_KINDS)
        alerted = [sid for sid, t in self.tracks.items() if t.alerts]
        non_conv_alerted = [sid for sid in alerted if not self.converted(sid)]
        self.lead_times_s = []
        self.lead_times_events = []
        for sid in non_conv_alerted:
            track = self.tracks[sid]
            self.lead_times_s.append((track.end_ts - track.first_alert_ts) / 1000.0)
            self.lead_times_events.append(len(track.scores) - track.first_alert_index)
        out: dict[str, Any] = {
            "sessions": sessions,
            "converters": converters,
            "events": self.stats.events,
            "events_applied": self.stats.applied,
            "invalid_events": dict(self.stats.invalid),
            "prefix_auc": prefix_auc,
            "prefix_sessions": len(self.prefix_points["0.5"]),
            "alerts_per_1000_sessions": round(1000.0 * session_alerts / max(sessions, 1), 2),
            "alerted_sessions": len(alerted),
            "alert_precision": (
                round(len(non_conv_alerted) / len(alerted), 4) if alerted else None
            ),
            "lead_time_s_median": _median(self.lead_times_s),
            "lead_time_events_median": _median([float(x) for x in self.lead_times_events]),
            "by_kind": {
                k: self.stats.alerts.get(k, 0) for k in (*SESSION_KINDS, "friction_hotspot")
            },
            "closed_by_outcome": dict(self.stats.closed),
            "trust_model": {
                "rolling_auc": round(self.model_metrics["trust_auc"], 4),
                "rolling_log_loss": round(self.model_metrics["trust_log_loss"], 4),
                "sessions_learned": self.model_metrics["sessions_closed"],
            },
            "seconds": round(self.seconds, 2),
            "events_per_s": round(self.stats.events / max(self.seconds, 1e-9)),
        }
        if self.truth is not None:
            out["truth"] = self._truth_summary()
        return out

    def _truth_summary(self) -> dict[str, Any]:
        assert self.truth is not None
        result: dict[str, Any] = {}
        for kind in ("friction", "hesitation"):
            found = 0
            total = 0
            delays = []
            for sid, record in self.truth["sessions"].items():
                for episode in record.get("episodes", []):
                    if episode["kind"] != kind:
                        continue
                    total += 1
                    track = self.tracks.get(sid)
                    if track is None:
                        continue
                    after = [t for t in track.alert_times if t >= episode["start_ts"]]
                    if after:
                        found += 1
                        delays.append((min(after) - episode["start_ts"]) / 1000.0)
            result[f"{kind}_episodes"] = total
            result[f"{kind}_recall"] = round(found / total, 4) if total else None
            result[f"{kind}_delay_s_median"] = _median(delays)
        incidents = []
        for incident in self.truth["incidents"]:
            hits = [a for a in self.hotspots if _in_incident(a, incident)]
            incidents.append(
                {
                    "key": incident["key"],
                    "detected": bool(hits),
                    "delay_s": (
                        round((min(a.event_time for a in hits) - incident["start_ts"]) / 1000, 1)
                        if hits
                        else None
                    ),
                }
            )
        result["incidents"] = incidents
        outside = [
            a
            for a in self.hotspots
            if not any(_in_incident(a, i) for i in self.truth["incidents"])
        ]
        # When arrivals stop at the end of a simulated span, only closes remain
        # and every page's abandonment rate rises: count those separately.
        span = self.truth.get("simulation") or {}
        last_arrival = span.get("arrivals_end_ts") or max(
            (r["start_ts"] for r in self.truth["sessions"].values()), default=0
        )
        result["hotspot_alerts_outside_incidents"] = len(outside)
        result["hotspot_alerts_outside_incidents_steady_traffic"] = sum(
            1 for a in outside if a.event_time <= last_arrival
        )
        return result


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def evaluate(
    events: Iterable[Event],
    config: DetectorConfig,
    labels: dict[str, bool] | None = None,
    truth: dict[str, Any] | None = None,
    stats: RunStats | None = None,
) -> Evaluation:
    """Run the detector prequentially over ``events`` (in event order).

    ``truth`` is ``{"sessions": {sid: record}, "incidents": [...]}`` as read
    by :func:`read_truth`. ``stats`` may carry counts of invalid input from
    the parsing step.
    """
    tracks: dict[str, _Track] = {}
    hotspots: list[Alert] = []

    def on_step(event: Event, result: StepResult) -> None:
        if result.status != "applied":
            return
        track = tracks.get(event.session_id)
        if track is None:
            track = tracks[event.session_id] = _Track()
        if event.type == config.goal_event and track.goal_index < 0:
            track.goal_index = len(track.scores)
        track.scores.append(result.state.trust)

    def on_close(state: SessionState) -> None:
        track = tracks.get(state.sid)
        if track is not None:
            track.end_ts = state.last_ts

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
    )


def read_truth(lines: Iterable[str]) -> dict[str, Any]:
    """Parse a simulator ``*.truth.jsonl`` file."""
    import json

    sessions: dict[str, Any] = {}
    incidents: list[dict[str, Any]] = []
    simulation: dict[str, Any] = {}
    for line in lines:
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("record") == "incident":
            incidents.append(record)
        elif record.get("record") == "simulation":
            simulation = record
        else:
            sessions[record["session_id"]] = record
    return {"sessions": sessions, "incidents": incidents, "simulation": simulation}


def read_labels(lines: Iterable[str]) -> dict[str, bool]:
    """Parse a ``session_id,converted`` CSV (header optional; converted is
    1/0, true/false or yes/no). Raises ``ValueError`` naming the bad line."""
    out: dict[str, bool] = {}
    truthy = {"1", "true", "yes", "y", "t"}
    falsy = {"0", "false", "no", "n", "f"}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2:
            raise ValueError(f"labels line {number}: expected session_id,converted")
        sid, value = parts[0], parts[1].lower()
        if number == 1 and value not in truthy | falsy:
            continue  # header
        if value in truthy:
            out[sid] = True
        elif value in falsy:
            out[sid] = False
        else:
            raise ValueError(f"labels line {number}: converted must be 1/0 or true/false")
    return out
