"""What the marketing console shows, measured from closed sessions.

:class:`ConsoleStats` is fed either in process (the embedded demo:
:meth:`step` after every event, :meth:`closed` after every session,
:meth:`alert` for every alert) or from a deployment's topics
(:meth:`alert_event` for every alert read, :meth:`closed_example` for every
closed session the workers sent to the trainer). Both feeds carry the same
per-session figures (:mod:`detectors.trust_map`, gathered in the session
state as it runs), so both consoles compute the same panels the same way.
:meth:`snapshot` answers one JSON-ready dict with the panels:

* **live**: the latest alerts, each with its reasons in words and its
  action, and the sessions at risk now (alerted, still open);
* **trust map**, "where trust is won or lost": for each journey stage, page
  type and friction signal, how often it occurs (page views, or firings),
  how much it moves the trust score (the average change of P(convert) at
  the scored steps on that page or where the signal fired), and the
  conversion of the sessions that hit it against those that did not;
* **validation**, "can the score be believed": the prefix ROC-AUC of the
  trust score at each session's prefix (the last power-of-two event count
  at or before its middle, :func:`detectors.trust_map.prefix_of`) against
  the best of two activity metrics (events and seconds so far) on the same
  prefixes, over the last :data:`WINDOW` closed sessions, recorded every
  :data:`AUC_EVERY` closes; and a calibration curve (predicted against
  observed conversion in ten bins of the score). Below the sample minimum
  (:mod:`detectors.sample_size`, :data:`MIN_BIN`) a figure is ``None``
  ("n/a"), and every figure says how many sessions and outcomes are behind it;
* **uplift**, "do interventions help": the uplift tracker's rows;
* **hotspots**: the incidents with their page and step and when they began.

Everything is bounded: a fixed number of alerts, sessions at risk, points,
window sessions and remembered visit ids.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from detectors.alerts import SESSION_KINDS, Alert, rfc3339
from detectors.config import DetectorConfig
from detectors.detector import StepResult
from detectors.events import Event, PageClassifier
from detectors.sample_size import roc_auc, too_few_outcomes
from detectors.session import SessionState
from detectors.signals import SIGNALS
from detectors.training import Example, visit_id
from detectors.trust_map import Mark, Prefix, marks_of, prefix_of
from detectors.uplift import UpliftTracker, slices_of

#: Alerts kept for the live panel (newest first).
LIVE_ALERTS = 200
#: Sessions at risk listed at most (the most recently alerted).
AT_RISK = 100
#: Closed sessions behind the validation figures (the most recent ones).
WINDOW = 1000
#: Closed sessions between two points of the AUC-over-time chart.
AUC_EVERY = 100
#: Points of the AUC-over-time chart kept.
AUC_POINTS = 200
#: Sessions a calibration bin needs before its observed rate is shown.
MIN_BIN = 20
#: Bins of the calibration curve (equal width in predicted P(convert)).
BINS = 10
#: Closed-session example ids remembered against copies (a worker's outbox
#: recovery can send one twice, minutes apart).
SEEN_EXAMPLES = 200_000


@dataclass
class _Cell:
    """One row of the trust map."""

    occurrences: int = 0
    delta_sum: float = 0.0
    deltas: int = 0
    sessions: int = 0  # closed sessions that hit it
    converted: int = 0  # of which converted


class ConsoleStats:
    """The console's figures, fed by a detector run with ``config`` (its
    goal event and page-type patterns)."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        config = config or DetectorConfig()
        self.classify = PageClassifier(config.page_patterns).classify
        self.live: deque[dict[str, Any]] = deque(maxlen=LIVE_ALERTS)
        self.alert_seq = 0  # alerts seen in all: the live feed's position
        self.at_risk: dict[str, dict[str, Any]] = {}
        self.hotspots: dict[str, dict[str, Any]] = {}
        self._cells: dict[tuple[str, str], _Cell] = {}
        self.sessions = 0
        self.converted = 0
        self._window: deque[tuple[float, float, float, bool]] = deque(maxlen=WINDOW)
        self.auc_points: deque[dict[str, Any]] = deque(maxlen=AUC_POINTS)
        self.clock_ts = 0
        #: the uplift of the closed examples (a deployment's console; the
        #: demo passes its models' tracker to :meth:`snapshot` instead)
        self.uplift = UpliftTracker()
        self._closed_ids: deque[str] = deque(maxlen=AT_RISK * 10)
        self._examples_seen: set[str] = set()
        self._example_order: deque[str] = deque()

    # ------------------------------------------------------------- feeding
    def step(self, event: Event, result: StepResult) -> None:
        """After the detector applied (or refused) ``event`` (in process)."""
        if result.status != "applied":
            return
        self.clock_ts = max(self.clock_ts, event.ts)
        if result.closed:
            self.closed(result.state)

    def closed(self, state: SessionState) -> None:
        """A session closed (goal, exit or timeout), in process; closing
        twice counts once."""
        if state.outcome is None:
            return
        converted = state.outcome == "converted"
        self._closed(
            visit_id(state.sid, state.start_ts),
            state.sid,
            converted,
            marks_of(state),
            prefix_of(state, converted),
        )

    def alert(self, alert: Alert) -> None:
        """An alert went out (in process)."""
        self.alert_event(alert.to_cloudevent("urn:disengage:console"))

    def alert_event(self, ce: Mapping[str, Any]) -> None:
        """An alert, as its CloudEvent (read from the alerts topic); an
        object that is not one is ignored."""
        data = ce.get("data")
        if not isinstance(data, Mapping) or not isinstance(ce.get("id"), str):
            return
        kind, page = data.get("kind"), data.get("page")
        hotspot_key = data.get("hotspot_key")
        self.alert_seq += 1
        reasons = data.get("reasons") if isinstance(data.get("reasons"), list) else []
        item = {
            "seq": self.alert_seq,
            "id": ce["id"],
            "kind": kind,
            "severity": data.get("severity"),
            "time": ce.get("time"),
            "page": page,
            "page_type": str(hotspot_key).split("/", 1)[0]
            if hotspot_key
            else (self.classify(page) if isinstance(page, str) and page else None),
            "stage": data.get("stage"),
            "action": data.get("suggested_action"),
            "reasons": [r.get("text") for r in reasons or () if isinstance(r, Mapping)],
            "treatment": data.get("treatment"),
            # the page never needs the session id itself: with it, anyone who
            # can read the console could ask the collector for its channel
            "session": _ref(data.get("session_id")),
        }
        self.live.appendleft(item)
        sid = data.get("session_id")
        if kind in SESSION_KINDS and isinstance(sid, str) and sid not in self._closed_ids:
            self.at_risk[sid] = item
            while len(self.at_risk) > AT_RISK:
                self.at_risk.pop(next(iter(self.at_risk)))
        elif kind == "friction_hotspot":
            key = str(hotspot_key or page)
            known = self.hotspots.get(key)
            self.hotspots[key] = {
                "key": key,
                "page": key.split("/", 1)[0],
                "step": key.split("/", 1)[1] if "/" in key else None,
                "began": known["began"] if known else ce.get("time"),
                "last": ce.get("time"),
                "rate_now": data.get("rate_now"),
                "rate_before": data.get("rate_before"),
                "severity": data.get("severity"),
            }

    def closed_example(self, example: Example) -> None:
        """A closed session, as a worker sent it to the trainer (a
        deployment's console): its outcome, trust marks and prefix feed the
        figures, and its holdout group the uplift. An example of a worker
        older than the trust marks gives the signals' counts only."""
        self.clock_ts = max(self.clock_ts, example.closed_ts)
        marks = example.trust_marks or tuple(
            (f"signal:{name}", count, 0.0, 0)
            for name, count in zip(SIGNALS, example.signal_counts, strict=False)
            if count > 0
        )
        if not self._closed(example.id, example.sid, example.converted, marks, example.prefix):
            return
        if example.treatment is not None:
            self.uplift.closed(example.treatment, example.converted, slices_of(example.alert_marks))

    def _closed(
        self,
        visit: str,
        sid: str,
        converted: bool,
        marks: Iterable[Mark],
        prefix: Prefix | None,
    ) -> bool:
        """Count one closed visit (``visit``: its example id); False for a
        copy (the training topic is at least once, and a closed state can be
        reported twice)."""
        if visit in self._examples_seen:
            return False
        self._examples_seen.add(visit)
        self._example_order.append(visit)
        if len(self._example_order) > SEEN_EXAMPLES:
            self._examples_seen.discard(self._example_order.popleft())
        self.sessions += 1
        self.converted += converted
        self.at_risk.pop(sid, None)
        self._closed_ids.append(sid)
        for key, occurrences, delta_sum, deltas in marks:
            dimension, _, name = key.partition(":")
            cell = self._cell((dimension, name))
            cell.occurrences += occurrences
            cell.delta_sum += delta_sum
            cell.deltas += deltas
            cell.sessions += 1
            cell.converted += converted
        if prefix is not None:
            score, events, seconds = prefix
            self._window.append((score, float(events), seconds, converted))
        if self.sessions % AUC_EVERY == 0:
            self.auc_points.append(self._auc_point())
        return True

    def _cell(self, key: tuple[str, str]) -> _Cell:
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell()
        return cell

    # ------------------------------------------------------------- figures
    def _auc_point(self) -> dict[str, Any]:
        trust, activity, n, outcomes = self.validation_auc()
        return {
            "time": rfc3339(self.clock_ts) if self.clock_ts else None,
            "sessions": n,
            "trust_auc": trust,
            "activity_auc": activity,
            "outcomes": outcomes,
        }

    def validation_auc(self) -> tuple[float | None, float | None, int, dict[str, int]]:
        """(trust AUC, best activity AUC, sessions, outcomes) over the window."""
        rows = list(self._window)
        labels = [r[3] for r in rows]
        converted = sum(labels)
        outcomes = {"converted": converted, "not_converted": len(rows) - converted}
        if too_few_outcomes(converted, len(rows) - converted) is not None:
            return None, None, len(rows), outcomes
        trust = roc_auc([r[0] for r in rows], labels)
        activity = [roc_auc([r[i] for r in rows], labels) for i in (1, 2)]
        best = max((a for a in activity if a is not None), default=None)
        return _round(trust), _round(best), len(rows), outcomes

    def calibration(self) -> list[dict[str, Any]]:
        """Predicted (mean score) against observed conversion, in :data:`BINS` bins."""
        bins: list[list[tuple[float, bool]]] = [[] for _ in range(BINS)]
        for score, _, _, converted in self._window:
            bins[min(BINS - 1, int(score * BINS))].append((score, converted))
        out = []
        for i, rows in enumerate(bins):
            enough = len(rows) >= MIN_BIN
            out.append(
                {
                    "bin": [i / BINS, (i + 1) / BINS],
                    "sessions": len(rows),
                    "predicted": _round(sum(s for s, _ in rows) / len(rows)) if enough else None,
                    "observed": _round(sum(c for _, c in rows) / len(rows)) if enough else None,
                }
            )
        return out

    def trust_map(self) -> list[dict[str, Any]]:
        """The rows of the trust map (see the module doc), most frequent first."""
        rows: list[dict[str, Any]] = []
        for (dimension, name), cell in sorted(
            self._cells.items(), key=lambda kv: (kv[0][0], -kv[1].occurrences)
        ):
            others = self.sessions - cell.sessions
            rows.append(
                {
                    "dimension": dimension,
                    "name": name,
                    "occurrences": cell.occurrences,
                    "trust_change": _round(cell.delta_sum / cell.deltas) if cell.deltas else None,
                    "scored_steps": cell.deltas,
                    "sessions_hit": cell.sessions,
                    "conversion_hit": _rate(cell.converted, cell.sessions),
                    "conversion_not_hit": _rate(self.converted - cell.converted, others),
                }
            )
        return rows

    def snapshot(
        self, uplift: UpliftTracker | None = None, open_hotspots: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Every panel's data, JSON-ready. ``open_hotspots``: the detector's
        open incidents (keys; ``None``: not known, as for a deployment's
        console: the alerts topic carries an incident's start, not its end,
        so each is listed with its last alert and ``open`` is ``None``)."""
        trust, activity, n, outcomes = self.validation_auc()
        still_open = None if open_hotspots is None else set(open_hotspots)
        tracker = uplift if uplift is not None else self.uplift
        return {
            "sim_time": rfc3339(self.clock_ts) if self.clock_ts else None,
            "sessions_closed": self.sessions,
            "sessions_converted": self.converted,
            "live": list(self.live)[:50],
            "alert_seq": self.alert_seq,
            "at_risk": sorted(self.at_risk.values(), key=lambda a: -a["seq"]),
            "trust_map": self.trust_map(),
            "validation": {
                "window_sessions": n,
                "outcomes": outcomes,
                "trust_auc": trust,
                "activity_auc": activity,
                "over_time": list(self.auc_points),
                "calibration": self.calibration(),
                "min_bin": MIN_BIN,
            },
            "uplift": tracker.rows(),
            "hotspots": [
                {**h, "open": None if still_open is None else h["key"] in still_open}
                for h in self.hotspots.values()
            ],
        }


def _ref(sid: object) -> str | None:
    """A short stable reference of a session id (not the id)."""
    if not isinstance(sid, str):
        return None
    return hashlib.sha256(sid.encode()).hexdigest()[:12]


def _rate(x: int, n: int) -> float | None:
    return round(x / n, 4) if n >= MIN_BIN else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
