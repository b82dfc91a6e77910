"""Shared builders for the core unit tests: no I/O, explicit event times."""

from __future__ import annotations

from typing import Any

from detectors.config import DetectorConfig
from detectors.detector import Detector, StepResult
from detectors.events import Event, EventParser
from detectors.session import SessionState
from detectors.signals import SIGNAL_INDEX

T0 = 1_700_000_000_000


def event(
    etype: str,
    t: int = 0,
    *,
    sid: str = "s",
    page: str | None = None,
    page_type: str | None = None,
    event_id: str | None = None,
    parser: EventParser | None = None,
    **props: Any,
) -> Event:
    """Parse one event at ``T0 + t`` (ms) through the real parser."""
    obj: dict[str, Any] = {"session_id": sid, "ts": T0 + t, "type": etype}
    if page is not None:
        obj["page"] = page
    if page_type is not None:
        obj["page_type"] = page_type
    if event_id is not None:
        obj["event_id"] = event_id
    if props:
        obj["props"] = props
    return (parser or EventParser(DetectorConfig())).parse(obj)


class Driver:
    """One session driven through a real :class:`Detector`."""

    def __init__(self, config: DetectorConfig | None = None, sid: str = "s") -> None:
        self.config = config or DetectorConfig()
        self.parser = EventParser(self.config)
        self.detector = Detector(self.config)
        self.sid = sid
        self.state: SessionState | None = None
        self.results: list[tuple[int, StepResult]] = []

    def send(self, etype: str, t: int, page: str | None = None, **props: Any) -> StepResult:
        ev = event(etype, t, sid=self.sid, page=page, parser=self.parser, **props)
        result = self.detector.process(self.state, ev)
        self.state = result.state
        self.results.append((t, result))
        return result

    def hit_times(self, name: str) -> list[int]:
        """Offsets (ms from T0) of the steps where signal ``name`` fired."""
        return [t for t, r in self.results for h in r.hits if h.name == name]

    def all_hits(self) -> list[str]:
        return [h.name for _, r in self.results for h in r.hits]

    def count(self, name: str) -> int:
        assert self.state is not None
        return self.state.signal_counts[SIGNAL_INDEX[name]]

    def alerts(self, kind: str | None = None) -> list[Any]:
        return [a for _, r in self.results for a in r.alerts if kind is None or a.kind == kind]
