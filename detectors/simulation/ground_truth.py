"""Ground truth of a simulation: what really happened, typed.

The simulator records, next to the events, what it injected: each session's
persona and outcome with its friction and hesitation episodes, the hotspot
incidents and the simulated span. ``evaluate`` compares the detector's
alerts with it. On disk it is JSON Lines (``<events>.truth.jsonl``), one
record a line, told apart by ``"record"``: ``simulation`` first, then the
``incident`` records, then one ``session`` record per session.

This module is the only place that reads or writes those records by key:
everything else uses the dataclasses. :meth:`GroundTruth.from_jsonl` says
which line is wrong, and when the file is something else (an events file, a
CSV) it says that instead of failing later with a ``KeyError``.

>>> truth = GroundTruth.from_jsonl([
...     '{"record":"simulation","seed":7,"sessions":1,"start_ts":0,"arrivals_end_ts":500}',
...     '{"record":"incident","key":"checkout/2","start_ts":10,"end_ts":20,"reason":"broken"}',
...     '{"record":"session","session_id":"a","persona":"bouncer","converted":false,'
...     '"user":null,"start_ts":0,"end_ts":9,"episodes":[]}',
... ])
>>> truth.incidents[0].key, truth.sessions["a"].persona, truth.arrivals_end_ts
('checkout/2', 'bouncer', 500)
>>> [r["record"] for r in truth.records()]
['simulation', 'incident', 'session']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

#: The JSON object of one record, as ``json.loads`` gives it.
JsonObject = Mapping[str, Any]


class TruthError(ValueError):
    """A ground-truth file that cannot be read; the message names the line."""


@dataclass(frozen=True, slots=True)
class FrictionEpisode:
    """Friction the simulator injected: a broken step from ``start_ts`` (ms)
    on ``page`` (``step`` for checkout steps, else ``None``); ``incident``
    when it was part of a hotspot incident (broken for everyone)."""

    start_ts: int
    page: str
    page_type: str
    step: int | None
    reason: str
    incident: bool

    kind = "friction"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_ts": self.start_ts,
            "page": self.page,
            "page_type": self.page_type,
            "step": self.step,
            "reason": self.reason,
            "incident": self.incident,
        }


@dataclass(frozen=True, slots=True)
class HesitationEpisode:
    """A lingering stretch the simulator played from ``start_ts`` (ms);
    ``page_type`` is the journey stage (``evaluate``)."""

    start_ts: int
    page_type: str
    reason: str

    kind = "hesitation"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_ts": self.start_ts,
            "page_type": self.page_type,
            "reason": self.reason,
        }


Episode = FrictionEpisode | HesitationEpisode


def episode_from_json(obj: JsonObject) -> Episode:
    """Inverse of the episodes' ``to_json``; ``KeyError`` or ``TypeError``
    on a malformed object (:meth:`GroundTruth.from_jsonl` adds the line)."""
    kind = obj["kind"]
    if kind == FrictionEpisode.kind:
        step = obj["step"]
        return FrictionEpisode(
            start_ts=int(obj["start_ts"]),
            page=str(obj["page"]),
            page_type=str(obj["page_type"]),
            step=None if step is None else int(step),
            reason=str(obj["reason"]),
            incident=bool(obj["incident"]),
        )
    if kind == HesitationEpisode.kind:
        return HesitationEpisode(
            start_ts=int(obj["start_ts"]),
            page_type=str(obj["page_type"]),
            reason=str(obj["reason"]),
        )
    raise TypeError(f"unknown episode kind {kind!r}")


@dataclass(slots=True)
class SessionTruth:
    """Ground truth of one simulated session (times in epoch ms). Mutable:
    the simulator fills in the outcome, the end and the episodes as it
    plays the session."""

    session_id: str
    persona: str
    converted: bool
    user: str | None
    start_ts: int
    end_ts: int = 0
    episodes: list[Episode] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "session",
            "session_id": self.session_id,
            "persona": self.persona,
            "converted": self.converted,
            "user": self.user,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "episodes": [episode.to_json() for episode in self.episodes],
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> SessionTruth:
        user = obj.get("user")
        return cls(
            session_id=str(obj["session_id"]),
            persona=str(obj.get("persona", "")),
            converted=bool(obj.get("converted", False)),
            user=None if user is None else str(user),
            start_ts=int(obj.get("start_ts", 0)),
            end_ts=int(obj.get("end_ts", 0)),
            episodes=[episode_from_json(e) for e in obj.get("episodes", [])],
        )


@dataclass(frozen=True, slots=True)
class Incident:
    """A hotspot incident: ``key`` (``page_type/step``) broken for everyone
    from ``start_ts`` to ``end_ts`` (epoch ms)."""

    key: str
    start_ts: int
    end_ts: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "incident",
            "key": self.key,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> Incident:
        return cls(
            key=str(obj["key"]),
            start_ts=int(obj["start_ts"]),
            end_ts=int(obj["end_ts"]),
            reason=str(obj.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class SimulationSpan:
    """The simulated span: ``sessions`` arrivals from ``start_ts``; new
    arrivals stop at ``arrivals_end_ts`` (returning visits may come later)."""

    seed: int
    sessions: int
    start_ts: int
    arrivals_end_ts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "record": "simulation",
            "seed": self.seed,
            "sessions": self.sessions,
            "start_ts": self.start_ts,
            "arrivals_end_ts": self.arrivals_end_ts,
        }

    @classmethod
    def from_json(cls, obj: JsonObject) -> SimulationSpan:
        return cls(
            seed=int(obj["seed"]),
            sessions=int(obj["sessions"]),
            start_ts=int(obj["start_ts"]),
            arrivals_end_ts=int(obj["arrivals_end_ts"]),
        )


@dataclass(slots=True)
class GroundTruth:
    """All ground truth of one simulation; ``sessions`` by session id."""

    sessions: dict[str, SessionTruth] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)
    simulation: SimulationSpan | None = None

    @property
    def arrivals_end_ts(self) -> int:
        """When new arrivals stopped: from the span record, else the start
        of the last session (0 without sessions)."""
        if self.simulation is not None:
            return self.simulation.arrivals_end_ts
        return max((s.start_ts for s in self.sessions.values()), default=0)

    def records(self) -> Iterator[dict[str, Any]]:
        """The file's records in file order: span, incidents, sessions."""
        if self.simulation is not None:
            yield self.simulation.to_json()
        for incident in self.incidents:
            yield incident.to_json()
        for session in self.sessions.values():
            yield session.to_json()

    @classmethod
    def from_jsonl(cls, lines: Iterable[str | bytes]) -> GroundTruth:
        """Parse a ``*.truth.jsonl`` file; blank lines are skipped.

        Raises :class:`TruthError` naming the first bad line, and saying so
        when the content is an events file or not JSON at all (a CSV).
        """
        truth = cls()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise TruthError(f"line {number} is not JSON{_looks_like(line)}") from None
            if not isinstance(obj, dict):
                raise TruthError(f"line {number} is not a JSON object")
            record = obj.get("record")
            if record is None and "type" in obj and "session_id" in obj:
                raise TruthError(
                    f"line {number} is an event, not a ground-truth record: this is an "
                    "events file (ground truth is the <events>.truth.jsonl that "
                    "'disengage simulate' writes)"
                )
            try:
                if record == "incident":
                    truth.incidents.append(Incident.from_json(obj))
                elif record == "simulation":
                    truth.simulation = SimulationSpan.from_json(obj)
                elif record == "session":
                    session = SessionTruth.from_json(obj)
                    truth.sessions[session.session_id] = session
                else:
                    raise TruthError(f"line {number}: unknown record {record!r}")
            except (KeyError, TypeError, ValueError) as exc:
                if isinstance(exc, TruthError):
                    raise
                raise TruthError(f"line {number}: malformed {record} record ({exc!r})") from None
        return truth


def _looks_like(line: str | bytes) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if "," in text and not text.lstrip().startswith(("{", "[")):
        return " (a CSV?)"
    return ""
