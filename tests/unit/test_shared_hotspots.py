"""Page visits sent to a shared hotspot monitor (``Detector(share_hotspots=True)``)."""

from __future__ import annotations

import zlib

import pytest

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.detector import Detector, observe_visit
from detectors.events import Event, EventParser
from detectors.hotspots import HotspotMonitor, PageVisit
from detectors.journey import JourneyTracker
from detectors.offline.runner import OfflineRunner
from detectors.simulation.simulator import SimConfig, Simulator

CFG = DetectorConfig()


@pytest.fixture(scope="module")
def events() -> list[Event]:
    parser = EventParser(CFG)
    return [parser.parse(e) for e in Simulator(SimConfig(sessions=3000, seed=11)).events()]


#: run() results by (partitions, shared): the module's events never change
_RUNS: dict[tuple[int, bool], list[Alert]] = {}


def run(events: list[Event], partitions: int, shared: bool) -> list[Alert]:
    """Hotspot alerts of the events split by session id over ``partitions``
    detectors, each with its own monitor or all feeding one shared monitor."""
    if (partitions, shared) not in _RUNS:
        _RUNS[partitions, shared] = _run(events, partitions, shared)
    return _RUNS[partitions, shared]


def _run(events: list[Event], partitions: int, shared: bool) -> list[Alert]:
    # hotspots do not depend on the learned models: nothing learns (faster)
    detectors = [
        Detector(CFG, learn=False, share_hotspots=shared) for _ in range(partitions)
    ]
    runners = [OfflineRunner(d) for d in detectors]
    monitor, journey = HotspotMonitor(CFG), JourneyTracker(CFG)
    out: list[Alert] = []

    def collect(alerts: list[Alert], detector: Detector) -> None:
        out.extend(a for a in alerts if a.kind == "friction_hotspot")
        for visit in detector.visits:
            alert = observe_visit(CFG, journey, monitor, visit, detector.models.version)
            if alert is not None:
                out.append(alert)
        detector.visits.clear()

    for event in events:
        p = zlib.crc32(event.session_id.encode()) % partitions
        collect(runners[p].feed(event), detectors[p])
    for runner, detector in zip(runners, detectors, strict=True):
        collect(runner.finish(), detector)
    return out


def test_one_shared_monitor_raises_what_a_detector_raises_alone(events: list[Event]) -> None:
    local = run(events, 1, shared=False)
    assert local  # the simulator's checkout incident
    assert run(events, 1, shared=True) == local


def test_a_shared_monitor_sees_every_partition(events: list[Event]) -> None:
    split = run(events, 4, shared=False)
    shared = run(events, 4, shared=True)
    alone = run(events, 1, shared=False)
    # one monitor over every partition's visits finds the incident as one
    # detector does; four monitors with a quarter of the visits each do not
    # find it as early, if at all
    assert shared and {a.subject for a in shared} >= {a.subject for a in alone}
    first = min(a.event_time for a in shared)
    assert not split or first <= min(a.event_time for a in split)


def test_shared_detectors_keep_visits_out_of_their_own_monitor(events: list[Event]) -> None:
    detector = Detector(CFG, learn=False, share_hotspots=True)
    runner = OfflineRunner(detector)
    for event in events[:5000]:
        runner.feed(event)
    assert detector.visits and not detector.models.hotspots.keys
    assert all(PageVisit.from_json(v.to_json()) == v for v in detector.visits)


@pytest.mark.parametrize(
    "blob", [b"", b"{}", b'["k", 1, null, 5]', b'["k", true, null, "5"]', b'["k", true, 3, 5]']
)
def test_malformed_visits_are_refused(blob: bytes) -> None:
    with pytest.raises(ValueError, match="not a page visit"):
        PageVisit.from_json(blob)
