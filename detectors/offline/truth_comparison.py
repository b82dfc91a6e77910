"""The detector's alerts against the simulator's ground truth.

* Episode recall: the share of injected friction (or hesitation) episodes,
  in sessions that are in the evaluated events, followed by a session alert
  at or after the episode's start; the delay is to the first such alert.
* Hotspot incidents: detected when a hotspot alert names the incident's key
  while it lasts, *late* when it comes within :func:`late_window_ms` after
  the incident ended, missed otherwise.
* False hotspots: hotspot alerts that match no incident (nor its late
  window), told apart by whether they came during steady traffic or after
  new arrivals stopped.

Why late detection exists: a visit to a broken page counts as a problem when
the visitor leaves the page or, for an abandoned session, when the session
times out. Evidence of an incident therefore keeps arriving up to one
session timeout after it ended, and the detector cannot tell sooner; a
hotspot on the key then is late, not false and not a miss.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.alerts import Alert
from detectors.simulation.ground_truth import GroundTruth, Incident

#: Why the truth figures are missing when no session matches.
NO_MATCH = "the ground truth matches no session of the events"


def late_window_ms(session_timeout_ms: int) -> int:
    """How long after an incident's end a hotspot on its key is a late
    detection: one session timeout (see the module docstring)."""
    return session_timeout_ms


@dataclass(frozen=True, slots=True)
class IncidentResult:
    """How one incident was detected. ``delay_s`` is from the incident's
    start to the first hotspot alert on its key; ``late_by_s`` is from its
    end to that alert when the alert came after the end (else ``None``)."""

    key: str
    detected: bool
    delay_s: float | None
    late_by_s: float | None

    @property
    def late(self) -> bool:
        return self.late_by_s is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "detected": self.detected,
            "late": self.late,
            "delay_s": self.delay_s,
            "late_by_s": self.late_by_s,
        }


def matches_incident(alert: Alert, incident: Incident, late_ms: int) -> bool:
    """Whether a hotspot alert names the incident's key within its span or
    the late window after it."""
    return (
        alert.subject == f"hotspot/{incident.key}"
        and incident.start_ts <= alert.event_time <= incident.end_ts + late_ms
    )


def incident_result(incident: Incident, hotspots: Sequence[Alert], late_ms: int) -> IncidentResult:
    """Detected, late (and by how much) or missed.

    >>> from detectors.simulation.ground_truth import Incident
    >>> incident = Incident("checkout/2", 0, 150_000, "broken")
    >>> incident_result(incident, [], 1_800_000).detected
    False
    """
    hits = [a.event_time for a in hotspots if matches_incident(a, incident, late_ms)]
    if not hits:
        return IncidentResult(incident.key, False, None, None)
    first = min(hits)
    late_by = round((first - incident.end_ts) / 1000, 1) if first > incident.end_ts else None
    return IncidentResult(incident.key, True, round((first - incident.start_ts) / 1000, 1), late_by)


def episode_recall(
    truth: GroundTruth, alert_times: Mapping[str, Sequence[int]], kind: str
) -> dict[str, Any]:
    """``<kind>_episodes``, ``<kind>_recall`` (``None`` without episodes)
    and ``<kind>_delay_s_median`` over the sessions in ``alert_times`` (the
    evaluated sessions, with their session alerts' event times)."""
    found = total = 0
    delays: list[float] = []
    for sid, session in truth.sessions.items():
        times = alert_times.get(sid)
        if times is None:
            continue  # not in the evaluated events
        for episode in session.episodes:
            if episode.kind != kind:
                continue
            total += 1
            after = [t for t in times if t >= episode.start_ts]
            if after:
                found += 1
                delays.append((min(after) - episode.start_ts) / 1000.0)
    return {
        f"{kind}_episodes": total,
        f"{kind}_recall": round(found / total, 4) if total else None,
        f"{kind}_delay_s_median": median(delays),
    }


def false_hotspots(truth: GroundTruth, hotspots: Sequence[Alert], late_ms: int) -> list[Alert]:
    """Hotspot alerts that match no incident (nor its late window)."""
    return [
        a
        for a in hotspots
        if not any(matches_incident(a, incident, late_ms) for incident in truth.incidents)
    ]


def compare_with_truth(
    truth: GroundTruth,
    alert_times: Mapping[str, Sequence[int]],
    hotspots: Sequence[Alert],
    late_ms: int,
) -> dict[str, Any]:
    """The ``truth`` part of the evaluation summary (JSON-ready). When no
    session of the truth is among the evaluated ones it holds only the
    counts and ``not_available``."""
    matched = sum(1 for sid in truth.sessions if sid in alert_times)
    result: dict[str, Any] = {"sessions": len(truth.sessions), "sessions_matched": matched}
    if not matched:  # another simulation's truth: its figures would be noise
        result["not_available"] = NO_MATCH
        return result
    for kind in ("friction", "hesitation"):
        result.update(episode_recall(truth, alert_times, kind))
    result["incidents"] = [
        incident_result(incident, hotspots, late_ms).to_json() for incident in truth.incidents
    ]
    result["late_window_s"] = late_ms / 1000
    outside = false_hotspots(truth, hotspots, late_ms)
    # after new arrivals stop, only the timeouts of earlier sessions remain
    arrivals_end = truth.arrivals_end_ts
    result["hotspot_alerts_outside_incidents"] = len(outside)
    result["hotspot_alerts_outside_incidents_steady_traffic"] = sum(
        1 for a in outside if a.event_time <= arrivals_end
    )
    result["false_hotspots"] = [
        {
            "key": a.subject.removeprefix("hotspot/"),
            "severity": a.severity,
            "event_time": a.event_time,
            "after_arrivals_end_s": (
                round((a.event_time - arrivals_end) / 1000, 1)
                if a.event_time > arrivals_end
                else None
            ),
        }
        for a in outside
    ]
    return result


def median(values: Sequence[float]) -> float | None:
    """Median rounded to 2 decimals, ``None`` for no values."""
    return round(statistics.median(values), 2) if values else None
