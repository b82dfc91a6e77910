"""SessionState serialisation, de-duplication, lateness and close semantics."""

from __future__ import annotations

import json
import math
import pickle
import zlib
from collections import defaultdict
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.config import EVENT_TYPES, DetectorConfig
from detectors.detector import STATUSES, Detector
from detectors.events import Event, EventParser, InvalidEvent
from detectors.session import SessionState
from detectors.simulation.simulator import SimConfig, Simulator
from tests.builders import T0, Driver, event

CFG = DetectorConfig()
PARSER = EventParser(CFG)


@cache
def simulated(sessions: int = 30, seed: int = 3) -> tuple[Event, ...]:
    config = SimConfig(sessions=sessions, seed=seed)
    return tuple(PARSER.parse(e) for e in Simulator(config).events())


def by_session(events: tuple[Event, ...]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        out[e.session_id].append(e)
    return out


def run(
    events: list[Event] | tuple[Event, ...],
    detector: Detector | None = None,
    roundtrip: bool = False,
) -> tuple[dict[str, SessionState], list[str]]:
    """Process events; return final states and the alert ids. With
    ``roundtrip`` every state goes through bytes before each step, as a
    Redis-backed worker does."""
    det = detector or Detector(CFG)
    states: dict[str, SessionState] = {}
    alert_ids: list[str] = []
    for e in events:
        state = states.get(e.session_id)
        if roundtrip and state is not None:
            state = SessionState.from_bytes(state.to_bytes())
        result = det.process(state, e)
        states[e.session_id] = result.state
        alert_ids += [a.id for a in result.alerts]
    return states, alert_ids


def has_nan(state: SessionState) -> bool:
    return any(math.isnan(v) for c in state.click_burst for v in c[1:3])


def assert_roundtrip(state: SessionState) -> None:
    blob = state.to_bytes()
    back = SessionState.from_bytes(blob)
    assert back.to_bytes() == blob
    if not has_nan(state):
        assert back == state


# ------------------------------------------------------------------ round trip
def test_roundtrip_after_realistic_sessions() -> None:
    states, _ = run(simulated())
    assert len(states) >= 30  # 30 arrivals plus returning researchers
    assert {s.outcome for s in states.values()} >= {None, "converted", "exit"}
    for state in states.values():
        assert_roundtrip(state)


def test_roundtrip_at_every_step_and_restored_states_behave_identically() -> None:
    events = simulated(200, 5)  # enough traffic for alerts to be raised
    det = Detector(CFG)
    states: dict[str, SessionState] = {}
    for e in events:
        result = det.process(states.get(e.session_id), e)
        states[e.session_id] = result.state
        assert_roundtrip(result.state)
    plain, plain_alerts = run(events)
    restored, restored_alerts = run(events, roundtrip=True)
    assert plain_alerts
    assert restored_alerts == plain_alerts
    assert {k: s.to_bytes() for k, s in restored.items()} == {
        k: s.to_bytes() for k, s in plain.items()
    }


def test_roundtrip_with_nan_click_coordinates_is_byte_exact() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("click", 1000, target="button#pay")  # no coordinates: NaN in the burst
    assert d.state is not None and has_nan(d.state)
    blob = d.state.to_bytes()
    assert SessionState.from_bytes(blob).to_bytes() == blob


def test_default_state_roundtrip() -> None:
    s = SessionState("abc")
    assert SessionState.from_bytes(s.to_bytes()) == s


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not a state",
        b"\x78\x9c garbage",
        zlib.compress(b"{}"),
        zlib.compress(b"[]"),
        zlib.compress(b"[2]"),
        zlib.compress(b"[1, 2, 3]"),
        zlib.compress(b"\xff\xfe\xfd"),
        pickle.dumps(SessionState("x")),
        json.dumps([1, "x"]).encode(),
    ],
)
def test_foreign_bytes_raise_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        SessionState.from_bytes(blob)


def test_other_state_version_is_refused() -> None:
    values = json.loads(zlib.decompress(SessionState("x").to_bytes()))
    values[0] = 99
    with pytest.raises(ValueError, match="version"):
        SessionState.from_bytes(zlib.compress(json.dumps(values).encode()))


def test_well_framed_blob_with_bad_values_raises_value_error() -> None:
    blob = zlib.compress(json.dumps([1] + [0] * len(SessionState._FIELD_NAMES)).encode())
    with pytest.raises(ValueError):
        SessionState.from_bytes(blob)


# ------------------------------------------------------------------------ size
def test_serialised_size_of_typical_sessions() -> None:
    states, _ = run(simulated())
    counts = {sid: len(evs) for sid, evs in by_session(simulated()).items()}
    typical = [sid for sid, n in counts.items() if 45 <= n <= 75]
    assert len(typical) >= 5
    for sid in typical:
        assert len(states[sid].to_bytes()) < 2048, (sid, counts[sid])
    assert max(len(s.to_bytes()) for s in states.values()) < 4096


def test_serialised_size_of_a_synthetic_60_event_session() -> None:
    d = Driver(sid="a" * 36)
    pages = ["/", "/category/shoes", "/products/1", "/products/1/reviews", "/cart"]
    t = 0
    for i in range(60):
        t += 4000
        if i % 12 == 0:
            d.send("page_view", t, pages[(i // 12) % len(pages)], load_ms=800 + i)
        elif i % 3 == 0:
            d.send("click", t, x=10 * i, y=300, target="a.nav-link")
        elif i % 3 == 1:
            d.send("scroll", t, scroll_pct=float(i % 100))
        else:
            d.send("form_focus", t, field=f"field{i % 5}")
    assert d.state is not None and d.state.n_events == 60
    assert len(d.state.to_bytes()) < 2048


# ------------------------------------------------------------------ de-dup etc.
def test_duplicate_event_is_refused_and_changes_nothing() -> None:
    det = Detector(CFG)
    first = det.process(None, event("page_view", 0, page="/products/1"))
    second = det.process(first.state, event("click", 500, x=1, y=1, target="a"))
    before = second.state.to_bytes()
    again = det.process(second.state, event("click", 500, x=1, y=1, target="a"))
    assert (first.status, second.status, again.status) == ("applied", "applied", "duplicate")
    assert again.state.to_bytes() == before
    assert again.alerts == [] and again.hits == []


def test_same_event_id_with_other_content_is_a_duplicate() -> None:
    det = Detector(CFG)
    r = det.process(None, event("page_view", 0, page="/products/1", event_id="e-1"))
    assert det.process(r.state, event("click", 900, event_id="e-1")).status == "duplicate"


def replay_candidates() -> dict[str, list[Event]]:
    """A converted session, the longest session and the longest open one."""
    sessions = by_session(simulated())
    ended = {e.session_id for e in simulated() if e.type in ("purchase", "exit")}
    converted = [sid for sid, evs in sessions.items() if any(e.type == "purchase" for e in evs)]
    open_ = [sid for sid in sessions if sid not in ended]
    pick = {
        "converted": max(converted, key=lambda sid: len(sessions[sid])),
        "longest": max(sessions, key=lambda sid: len(sessions[sid])),
        "open": max(open_, key=lambda sid: len(sessions[sid])),
    }
    return {name: sessions[sid] for name, sid in pick.items()}


@pytest.mark.parametrize("which", ["converted", "longest", "open"])
def test_replaying_a_whole_session_changes_nothing(which: str) -> None:
    events = replay_candidates()[which]
    if which == "open":
        assert len(events) > CFG.dedup_capacity
    det = Detector(CFG)
    state = None
    for e in events:
        state = det.process(state, e).state
    assert state is not None
    before = state.to_bytes()
    statuses = set()
    for e in events:
        result = det.process(state, e)
        statuses.add(result.status)
        assert result.alerts == [] and result.hits == []
        assert result.state.to_bytes() == before
    assert "applied" not in statuses
    if len(events) > CFG.dedup_capacity and state.outcome is None:
        assert "late" in statuses  # evicted ids are refused by the floor


def test_late_event_is_refused_and_changes_nothing() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("scroll", 100_000, scroll_pct=10.0)
    assert d.state is not None
    before = d.state.to_bytes()
    late = d.send("click", 100_000 - CFG.allowed_lateness_ms - 1, x=1, y=1, target="a")
    assert late.status == "late"
    assert d.state.to_bytes() == before
    ok = d.send("click", 100_000 - CFG.allowed_lateness_ms, x=1, y=1, target="a")
    assert ok.status == "applied"
    assert d.state.last_ts == T0 + 100_000  # an older event never moves last_ts back


def test_events_after_a_purchase_are_refused() -> None:
    d = Driver()
    d.send("page_view", 0, "/checkout/step-3")
    r = d.send("purchase", 1000)
    assert r.closed and r.status == "applied"
    assert d.state is not None and d.state.outcome == "converted"
    before = d.state.to_bytes()
    after = d.send("page_view", 3000, "/checkout/confirmation")
    assert after.status == "after_close" and not after.alerts
    assert d.state.to_bytes() == before


def test_an_exited_session_id_seen_again_is_a_new_visit() -> None:
    d = Driver()
    d.send("page_view", 0, "/checkout/step-3")
    assert d.send("exit", 1000).closed
    assert d.state is not None
    d.state.episodes = [2, 1]  # alert episodes so far must survive the reopening
    # an event from before the exit, arriving late, is refused
    assert d.send("click", 900, x=1, y=1, target="a").status == "after_close"
    again = d.send("page_view", 60_000, "/products/9")
    assert again.status == "applied" and not again.closed
    assert d.state.outcome is None and d.state.n_events == 1
    assert d.state.start_ts == T0 + 60_000 and d.state.stage == "consider"
    assert d.state.episodes == [2, 1]
    # the de-duplication window survives too: a redelivered old event is a duplicate
    assert d.send("page_view", 0, "/checkout/step-3").status == "duplicate"


def test_dedup_ring_is_bounded_and_the_floor_refuses_evicted_ids() -> None:
    cfg = DetectorConfig(dedup_capacity=8)
    d = Driver(cfg)
    sent = []
    for i in range(20):
        d.send("scroll", 1000 * i, scroll_pct=float(i))
        sent.append(1000 * i)
    assert d.state is not None
    assert len(d.state.dedup) == 8
    assert d.state.dedup_floor == T0 + 11_000  # the 12th event was the last evicted
    before = d.state.to_bytes()
    for i in (0, 5, 11):  # evicted: refused by the floor
        assert d.send("scroll", 1000 * i, scroll_pct=float(i)).status == "late"
    for i in (12, 19):  # still remembered
        assert d.send("scroll", 1000 * i, scroll_pct=float(i)).status == "duplicate"
    assert d.state.to_bytes() == before
    assert d.state.n_events == 20


def test_dedup_floor_with_out_of_order_arrivals() -> None:
    cfg = DetectorConfig(dedup_capacity=3)
    d = Driver(cfg)
    order = [10_000, 2_000, 8_000, 4_000, 12_000, 6_000, 14_000]
    statuses = [d.send("custom", t, n=t).status for t in order]
    # 10 s was evicted first, so the floor is 10 s and the new 6 s event is refused
    assert statuses == ["applied"] * 5 + ["late", "applied"]
    assert d.state is not None and d.state.dedup_floor == T0 + 10_000
    before = d.state.to_bytes()
    for t in order:
        assert d.send("custom", t, n=t).status in ("late", "duplicate")
    assert d.state.to_bytes() == before


# ------------------------------------------------------------------ properties
PAGES = [
    "/",
    "/lp/sale",
    "/category/shoes",
    "/search?q=x",
    "/products/1",
    "/products/2",
    "/products/1/reviews",
    "/compare?ids=1,2",
    "/returns",
    "/cart",
    "/checkout/step-1",
    "/checkout/step-2",
    "/checkout/confirmation",
    "/support",
    "/weird",
]
TARGETS = ["button#pay", "button.qty-plus", "a.nav-link", "p.description", "div.card", ""]
NUMBER = st.one_of(st.integers(-10, 5000), st.floats(allow_nan=True, allow_infinity=True))
PROPS = st.fixed_dictionaries(
    {},
    optional={
        "x": NUMBER,
        "y": NUMBER,
        "target": st.sampled_from(TARGETS),
        "scroll_pct": NUMBER,
        "field": st.sampled_from(["email", "zip", "card", "a", "b", "c", "d", "e", "f", "g"]),
        "step": st.one_of(st.integers(-1, 5), st.sampled_from(["2", "pay"]), NUMBER),
        "load_ms": NUMBER,
        "dead": st.booleans(),
        "selection": st.booleans(),
    },
)
EVENT_DICTS = st.fixed_dictionaries(
    {
        "session_id": st.just("prop-session"),
        "ts": st.integers(T0, T0 + 900_000),
        "type": st.sampled_from(sorted(EVENT_TYPES)),
    },
    optional={
        "page": st.sampled_from(PAGES),
        "props": PROPS,
        "event_id": st.sampled_from(["e1", "e2", "e3"]),
        "user_id": st.just("someone@example.com"),
    },
)
CONFIGS = [CFG, DetectorConfig(dedup_capacity=4, allowed_lateness_ms=300_000, stall_ms=60_000)]


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(EVENT_DICTS, max_size=60), st.sampled_from([0, 1]))
def test_any_event_sequence_never_raises_and_roundtrips(
    raw: list[dict[str, Any]], which: int
) -> None:
    cfg = CONFIGS[which]
    parser = EventParser(cfg)
    det = Detector(cfg)
    events = [parser.parse(r) for r in raw]
    state: SessionState | None = None
    applied: list[Event] = []
    for e in events:
        before = state.to_bytes() if state is not None else None
        reopening = state is not None and state.outcome is not None
        result = det.process(state, e)
        assert result.status in STATUSES
        if result.status == "applied":
            if reopening:  # a new visit of the same session id
                applied.clear()
            applied.append(e)
        else:
            if before is not None:
                assert result.state.to_bytes() == before
            assert not result.alerts and not result.hits
        if result.status == "applied" or state is not None:
            state = result.state  # an ignored acknowledgement opens no session
        if state is not None:
            assert len(state.dedup) <= cfg.dedup_capacity
            assert_roundtrip(state)
    if state is None:
        return
    # an acknowledged intervention is not the visitor's doing: not counted as activity
    assert state.n_events == sum(1 for e in applied if e.type != "intervention")
    assert "someone@example.com" not in repr(state)
    # a redelivery of anything already applied is never applied again
    final = state.to_bytes()
    for e in applied:
        assert det.process(state, e).status != "applied"
    assert state.to_bytes() == final


@pytest.mark.parametrize(
    "raw",
    [
        b'{"session_id":"s","ts":1700000000000,"type":"click","event_id":"\\ud800"}',
        b'{"session_id":"s","ts":1700000000000,"type":"page_view","page":"/x\\udc00"}',
    ],
)
def test_lone_surrogates_are_rejected_at_the_parser(raw: bytes) -> None:
    # JSON can encode lone surrogates that no UTF-8 consumer (Redis keys,
    # metric labels, hashing) could handle: the parser must stop them.
    with pytest.raises(InvalidEvent) as info:
        PARSER.parse(raw)
    assert info.value.reason == "bad_field_type"
    assert "surrogate" in str(info.value)


def test_dedup_ring_keeps_arrival_order_and_clamps_offsets_beyond_32_bits() -> None:
    state = SessionState("ring", start_ts=T0, last_ts=T0)
    ring = {0xABCDEF012345: T0 + 5, 1: T0, 0xFFFFFFFFFFFF: T0 + 3}
    state.dedup = dict(ring)
    restored = SessionState.from_bytes(state.to_bytes())
    assert list(restored.dedup.items()) == list(ring.items())  # eviction order survives
    # an entry 60 days after the oldest cannot be held in 32 bits of ms: it is
    # clamped to the largest offset, still above the oldest (the floor logic
    # needs only the order), and the rest stays exact
    far = T0 + 60 * 86_400_000
    state.dedup = {7: T0, 8: far}
    restored = SessionState.from_bytes(state.to_bytes())
    assert restored.dedup == {7: T0, 8: T0 + 0xFFFFFFFF}
