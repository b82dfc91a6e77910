"""Every registered signal through the same checks, as River's
``check_estimator`` runs every estimator: it never raises on valid events,
its hits are in range, it is deterministic, it pickles, it keeps no
per-session data of its own, and the state it leaves is bounded. The
registry rows must agree with the session state and the trust features.

A new signal added to ``detectors.signals.SIGNAL_TYPES`` runs through all of
this without a line changed here.
"""

from __future__ import annotations

import inspect
import math
import pickle
from dataclasses import fields

import pytest

from detectors.config import EVENT_TYPES, DetectorConfig
from detectors.detector import Detector
from detectors.events import Event
from detectors.features import TRUST_FEATURES, trust_vector
from detectors.journey import JourneyTracker
from detectors.rules import count_hit
from detectors.session import SessionState
from detectors.signal_protocol import CLOSE, EVENT, LEAVE, MOMENTS, Signal, SignalHit, Step
from detectors.signals import SIGNAL_REGISTRY, SIGNAL_TYPES, SIGNAL_WEIGHTS, SIGNALS
from tests.builders import random_events

CONFIG = DetectorConfig()
EACH_SIGNAL = pytest.mark.parametrize("signal_type", SIGNAL_TYPES, ids=lambda c: c.__name__)
#: No container in a session state may grow with the number of events: the
#: largest cap is the de-duplication ring's (64 ids).
CONTAINER_CAP = CONFIG.dedup_capacity


class Run:
    """One session driven through one signal, as the detector drives it:
    page views leave and enter through the real journey, forward progress
    is marked, hits are counted, and the session closes at the end."""

    def __init__(self, signal: Signal, sid: str = "s") -> None:
        self.signal = signal
        self.journey = JourneyTracker(CONFIG)
        self.state = SessionState(sid)
        self.hits: list[tuple[Step, SignalHit]] = []

    def feed(self, event: Event) -> None:
        if event.type == "intervention":
            return  # as in the detector: the page's acknowledgement, no visitor activity
        state = self.state
        if not state.n_events:
            state.start_ts = state.last_ts = state.last_progress = event.ts
        gap = max(0, event.ts - state.last_ts) if state.n_events else 0
        state.last_ts = max(state.last_ts, event.ts)
        state.n_events += 1
        # the detector's own counters decide forward progress (basket, checkout steps)
        progressed = event.type != "page_view" and Detector._count(state, event)
        if event.type == "page_view":
            leave = self.journey.leave(state, event)
            if leave is not None and LEAVE in self.signal.observes:
                self._observe(Step(LEAVE, event.ts, event, gap, leave))
            progressed = self.journey.enter(state, event)
        if progressed:
            self.journey.mark_progress(state, event.ts)
        if event.type in self.signal.observes:
            self._observe(Step(EVENT, event.ts, event, gap))

    def close(self, converted: bool = False) -> None:
        if CLOSE in self.signal.observes:
            self._observe(Step(CLOSE, self.state.last_ts, converted=converted))

    def _observe(self, step: Step) -> None:
        for hit in self.signal.observe(self.state, step):
            self.hits.append((step, hit))
            count_hit(self.state, hit, CONFIG.friction_window_ms)


def run(signal: Signal, events: list[Event]) -> Run:
    driven = Run(signal, events[0].session_id)
    for event in events:
        driven.feed(event)
    driven.close()
    return driven


def fingerprint(driven: Run) -> tuple[list[tuple[str, float, int]], bytes]:
    return [(h.name, h.value, h.ts) for _, h in driven.hits], driven.state.to_bytes()


# ------------------------------------------------------------ every signal
@EACH_SIGNAL
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_raises_on_valid_events_and_hits_are_in_range(
    signal_type: type[Signal], seed: int
) -> None:
    driven = run(signal_type(CONFIG), random_events(seed))
    names = {spec.name for spec in signal_type.specs}
    for step, hit in driven.hits:
        assert hit.name in names
        assert hit.weight == SIGNAL_WEIGHTS[hit.name]
        assert math.isfinite(hit.value) and hit.value >= 0, hit
        assert hit.ts == step.ts


@EACH_SIGNAL
def test_fires_on_random_traffic(signal_type: type[Signal]) -> None:
    """A check that never sees a hit checks nothing: the random traffic
    must make every signal fire at least once."""
    runs = [run(signal_type(CONFIG), random_events(seed)) for seed in (1, 2, 3)]
    assert any(driven.hits for driven in runs), f"{signal_type.__name__} never fired"


@EACH_SIGNAL
def test_is_deterministic(signal_type: type[Signal]) -> None:
    events = random_events(5)
    assert fingerprint(run(signal_type(CONFIG), events)) == fingerprint(
        run(signal_type(CONFIG), events)
    )


@EACH_SIGNAL
def test_pickles_and_resumes_from_the_state_bytes(signal_type: type[Signal]) -> None:
    """A worker restarts from a pickled detector and the session's stored
    bytes; the rest of the session must go exactly as without the restart."""
    events = random_events(6)
    whole = run(signal_type(CONFIG), events)
    first = Run(signal_type(CONFIG))
    for event in events[:400]:
        first.feed(event)
    resumed = Run(pickle.loads(pickle.dumps(first.signal)), first.state.sid)
    resumed.journey = first.journey
    resumed.state = SessionState.from_bytes(first.state.to_bytes())
    resumed.hits = list(first.hits)
    for event in events[400:]:
        resumed.feed(event)
    resumed.close()
    assert fingerprint(resumed) == fingerprint(whole)


@EACH_SIGNAL
def test_one_instance_serves_interleaved_sessions(signal_type: type[Signal]) -> None:
    """Everything a signal remembers lives in the session state, so one
    instance shared by two interleaved sessions sees each as alone."""
    a, b = random_events(7, sid="a"), random_events(8, sid="b")
    shared = signal_type(CONFIG)
    runs = {"a": Run(shared, "a"), "b": Run(shared, "b")}
    for pair in zip(a, b, strict=True):
        for event in pair:
            runs[event.session_id].feed(event)
    for driven in runs.values():
        driven.close()
    assert fingerprint(runs["a"]) == fingerprint(run(signal_type(CONFIG), a))
    assert fingerprint(runs["b"]) == fingerprint(run(signal_type(CONFIG), b))


@EACH_SIGNAL
def test_leaves_a_bounded_state(signal_type: type[Signal]) -> None:
    driven = run(signal_type(CONFIG), random_events(9, n=3000))
    for f in fields(SessionState):
        value = getattr(driven.state, f.name)
        if isinstance(value, list | dict):
            assert len(value) <= CONTAINER_CAP, (f.name, len(value))
    assert len(driven.state.to_bytes()) < 2048


@EACH_SIGNAL
def test_docstring_names_its_settings(signal_type: type[Signal]) -> None:
    """Each threshold's source is documented where the signal is."""
    doc = inspect.getdoc(signal_type) or ""
    for spec in signal_type.specs:
        for setting in spec.settings:
            assert f"``{setting}``" in doc, (signal_type.__name__, setting)


@EACH_SIGNAL
def test_observes_only_known_moments(signal_type: type[Signal]) -> None:
    assert signal_type.observes, signal_type.__name__
    assert signal_type.observes <= EVENT_TYPES | {LEAVE, CLOSE}
    assert signal_type.specs


# ---------------------------------------------------------------- registry
def test_moments_are_not_event_types() -> None:
    assert not set(MOMENTS) & EVENT_TYPES


def test_registry_rows_are_consistent() -> None:
    names = [spec.name for spec in SIGNAL_REGISTRY]
    assert len(set(names)) == len(names)
    assert [spec.index for spec in SIGNAL_REGISTRY] == list(range(len(SIGNAL_REGISTRY)))
    assert tuple(names) == SIGNALS
    emitted = [spec for cls in SIGNAL_TYPES for spec in cls.specs]
    assert sorted(emitted, key=lambda s: s.index) == list(SIGNAL_REGISTRY)
    config_fields = {f.name for f in fields(DetectorConfig)}
    for spec in SIGNAL_REGISTRY:
        assert math.isfinite(spec.weight) and spec.weight >= 0, spec.name
        assert spec.singular and spec.plural and spec.singular != spec.plural, spec.name
        assert set(spec.settings) <= config_fields, spec.name


def test_registry_rows_match_the_state_and_the_trust_features() -> None:
    state = SessionState("s", start_ts=0, last_progress=0)
    assert len(state.signal_counts) == len(SIGNAL_REGISTRY)
    base = trust_vector(state, 60_000)
    assert len(base) == len(TRUST_FEATURES)
    fed = {spec.trust_feature for spec in SIGNAL_REGISTRY if spec.trust_feature}
    assert fed <= set(TRUST_FEATURES)
    for spec in SIGNAL_REGISTRY:
        state.signal_counts = [0] * len(SIGNAL_REGISTRY)
        state.signal_counts[spec.index] = 3
        now = trust_vector(state, 60_000)
        moved = {name for name, a, b in zip(TRUST_FEATURES, base, now, strict=True) if a != b}
        assert moved == ({spec.trust_feature} if spec.trust_feature else set()), spec.name


@EACH_SIGNAL
def test_the_check_driver_gives_the_hits_the_detector_gives(signal_type: type[Signal]) -> None:
    """The checks above drive one signal at a time; the detector drives them
    all. On the same applied events (no exit or goal, so nothing closes) the
    signal must hit the same way in both, or the checks test something else."""
    names = {spec.name for spec in signal_type.specs}
    total = 0
    for seed in (1, 2, 3):
        events = [e for e in random_events(seed) if e.type not in ("exit", CONFIG.goal_event)]
        detector, state = Detector(CONFIG), None
        in_detector: list[tuple[str, float, int]] = []
        driven = Run(signal_type(CONFIG), events[0].session_id)
        for event in events:
            result = detector.process(state, event)
            state = result.state
            assert not result.closed
            in_detector += [(h.name, h.value, h.ts) for h in result.hits if h.name in names]
            if result.status == "applied":
                driven.feed(event)
        in_driver = [(h.name, h.value, h.ts) for _, h in driven.hits]
        assert in_driver == in_detector
        total += len(in_driver)
    assert total > 0, f"{signal_type.__name__} never fired: the comparison checked nothing"


def test_the_detector_runs_every_registered_signal() -> None:
    assert [type(s) for s in Detector(CONFIG).signals] == list(SIGNAL_TYPES)


def test_a_state_stored_before_a_signal_was_added_reads_with_zero_counts() -> None:
    state = SessionState("s")
    state.signal_counts = state.signal_counts[:-1]
    restored = SessionState.from_bytes(state.to_bytes())
    assert restored.signal_counts == [0] * len(SIGNAL_REGISTRY)


def test_step_defaults() -> None:
    step = Step(CLOSE, 5)
    assert step.event is None and step.leave is None and step.gap_ms == 0
