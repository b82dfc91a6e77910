"""The stream clock (``detectors.clock``): a wrong client clock cannot move it,
a real gap in traffic does, and the worker and the replay decide alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.clock import MAX_CANDIDATES, StreamClock
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.offline.runner import OfflineRunner, reorder
from detectors.simulation.simulator import SimConfig, Simulator
from stream.metrics import Metrics
from stream.records import Message
from stream.settings import Settings
from stream.worker.pipeline import BatchProcessor
from tests.builders import T0, event
from tests.fakes import FakeClock, FakeSink, RecordingStore

SKEW = 600_000
HOUR = 3_600_000


def test_one_session_far_ahead_never_moves_the_clock() -> None:
    clock = StreamClock(SKEW)
    clock.observe("ok", T0)
    for i in range(100):  # a client whose clock is two hours fast, throughout
        assert clock.observe("fast", T0 + 2 * HOUR + i * 1000)
        assert not clock.observe("ok", T0 + i * 1000)
    assert clock.now == T0 + 99_000 and clock.ahead_total == 100


def test_a_sparse_stream_is_followed_after_a_gap() -> None:
    """Little traffic: after a quiet hour, one-event sessions 15 minutes
    apart, each further ahead than the skew. The clock follows them, two
    sessions behind (a quorum of 3 must have been seen ahead)."""
    clock = StreamClock(SKEW, quorum=3)
    clock.observe("early", T0)
    starts = [T0 + HOUR + 15 * 60_000 * k for k in range(6)]
    for k, ts in enumerate(starts):
        clock.observe(f"s{k}", ts)
    assert clock.now == starts[-3]


def test_one_session_far_ahead_does_not_set_the_time_of_a_jump() -> None:
    clock = StreamClock(SKEW, quorum=3)
    clock.observe("ok", T0)
    clock.observe("fast", T0 + 48 * HOUR)
    clock.observe("x", T0 + HOUR)
    clock.observe("y", T0 + HOUR + 60_000)
    assert clock.now == T0 + HOUR


def test_candidates_are_forgotten_after_enough_in_bound_events() -> None:
    clock = StreamClock(SKEW, quorum=3, forget_after=10)
    clock.observe("ok", T0)
    clock.observe("x", T0 + HOUR)
    clock.observe("y", T0 + HOUR + 1)
    for i in range(10):
        clock.observe("ok", T0 + i)
    assert clock.observe("z", T0 + HOUR + 2)  # x and y were forgotten
    assert clock.now == T0 + 9


def test_candidates_are_bounded() -> None:
    clock = StreamClock(SKEW, quorum=3)
    clock.observe("ok", T0)
    for i in range(MAX_CANDIDATES * 3):  # each a day apart: never a quorum
        clock.observe(f"s{i}", T0 + (i + 1) * 24 * HOUR)
    assert len(clock._candidates) <= MAX_CANDIDATES


def test_advance_follows_the_wall_clock_and_drops_candidates_in_bound() -> None:
    clock = StreamClock(SKEW, quorum=2)
    clock.observe("ok", T0)
    clock.observe("x", T0 + HOUR)
    clock.advance(T0 + HOUR - 1000)
    assert not clock.observe("y", T0 + HOUR + 1000)  # now in bound: moves the clock
    assert clock.now == T0 + HOUR + 1000


@pytest.mark.parametrize("bad", [{"max_skew_ms": 0}, {"max_skew_ms": SKEW, "quorum": 1}])
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StreamClock(**bad)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.integers(0, SKEW), min_size=1, max_size=60),
    fast=st.integers(SKEW + 1, 30 * 24 * HOUR),
    where=st.integers(0, 59),
)
def test_the_clock_never_passes_the_honest_events_by_more_than_the_skew(
    steps: list[int], fast: int, where: int
) -> None:
    """Honest events advance in steps of at most the skew; one session with a
    fast clock is mixed in anywhere. The clock follows the honest events."""
    clock = StreamClock(SKEW)
    ts, honest = T0, T0
    for i, step in enumerate(steps):
        ts += step
        clock.observe("honest", ts)
        honest = max(honest, ts)
        if i == where % len(steps):
            clock.observe("fast", ts + fast)
        assert clock.now == honest


# ------------------------------------------------------------- the replay side
def test_reorder_lets_an_event_ahead_through_in_its_arrival_position() -> None:
    cfg = DetectorConfig()
    events = [event("page_view", t, sid="a", n=t) for t in (0, 2000, 1000)]
    events.insert(2, event("page_view", 2 * HOUR, sid="b", n=9))
    out = list(reorder(events, 30_000, StreamClock.for_config(cfg)))
    assert [(e.session_id, e.ts - T0) for e in out] == [
        ("a", 0),
        ("a", 2000),
        ("b", 2 * HOUR),  # not held back until the end of the input
        ("a", 1000),
    ]


def test_the_runner_does_not_time_out_sessions_for_one_fast_event() -> None:
    cfg = DetectorConfig(session_timeout_ms=60_000)
    runner = OfflineRunner(Detector(cfg))
    for sid in "abc":
        runner.feed(event("page_view", 0, sid=sid, n=ord(sid)))
    runner.feed(event("page_view", 2 * HOUR, sid="c", n=99))
    assert runner.stats.ahead == 1 and not runner.stats.closed
    assert runner.active_sessions == 3


# ---------------------------------------- the worker and the replay agree
RULES_ONLY = DetectorConfig(
    trust_min_closed=100_000_000,
    hesitation_warmup=100_000_000,
    alert_budget_per_1000=0,
    hotspot_min_visits=100_000_000,
    session_timeout_ms=5 * 60_000,
)


def _with_bad_clocks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One mid-stream event two hours fast, and one whole session 2 h fast."""
    out = [dict(e) for e in events]
    middle = out[len(out) // 2]
    out.insert(len(out) // 2 + 1, {**middle, "ts": middle["ts"] + 2 * HOUR, "event_id": "fast-1"})
    victim = out[len(out) // 3]["session_id"]
    for e in out:
        if e["session_id"] == victim:
            e["ts"] += 2 * HOUR
    return out


async def test_the_worker_and_the_replay_agree_with_bad_clocks() -> None:
    sim = Simulator(SimConfig(sessions=120, seed=5, start_ts=T0, incident=False))
    raw = _with_bad_clocks(list(sim.events()))
    # the replay
    runner = OfflineRunner(Detector(RULES_ONLY))
    parse = EventParser(RULES_ONLY).parse
    expected = [a.id for e in raw for a in runner.feed(parse(e))]
    counts = {sid: s.n_events for sid, s in runner.sessions.items()}
    assert runner.stats.ahead >= 2 and runner.stats.closed["timeout"] > 0
    assert expected, "the simulated sessions must raise friction alerts to compare"
    # the worker: batches of 50, a sweep after each, as on its timer
    clock = FakeClock(T0 / 1000)
    store, sink = RecordingStore(3600, clock), FakeSink(clock)
    processor = BatchProcessor(
        RULES_ONLY,
        store,
        sink,
        Metrics(),
        clock=clock,
        idle_grace_s=Settings().idle_grace_s,
        cache_sessions=100,
    )
    messages = [
        Message(json.dumps(e).encode(), e["session_id"].encode(), "in", 0, i)
        for i, e in enumerate(raw)
    ]
    for start in range(0, len(messages), 50):
        await processor.process(messages[start : start + 50])
        await processor.sweep()
    loaded = await store.load(list(counts))
    assert {sid: s.n_events for sid, s in loaded.items()} == counts
    assert sorted(sink.alert_ids()) == sorted(expected)
    dead = {dict(r.headers)["dlq.reason"].decode() for r in sink.dead_letters}
    assert len(sink.dead_letters) == sum(runner.stats.dead_letters.values())
    assert dead == set(runner.stats.dead_letters)
