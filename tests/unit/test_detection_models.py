"""Issue 9's model parts: the compiled forest, the trust champion/challenger,
the leave hazard, ticks between events and the per-family alert budget."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from detectors.alerts import Alert
from detectors.compiled_forest import compile_forest, make_forest
from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import Event, EventParser
from detectors.features import TRUST_FEATURES, trust_vector
from detectors.hesitation import HAZARD_FEATURES, LeaveHazard
from detectors.offline.runner import OfflineRunner
from detectors.session import STATE_VERSION, SessionState
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.trust import CHAMPION_MIN_SESSIONS, TrustModel
from tests.builders import T0, Driver


def random_vector(rng: random.Random) -> list[float]:
    return [rng.random() if rng.random() < 0.6 else 0.0 for _ in TRUST_FEATURES]


def test_the_compiled_forest_scores_exactly_as_river() -> None:
    rng = random.Random(3)
    forest = make_forest(seed=5)
    for _ in range(3000):
        v = random_vector(rng)
        x = dict(zip(TRUST_FEATURES, v, strict=True))
        forest.learn_one(x, v[0] + v[5] * v[9] + rng.random() > 1.1)
    fast = compile_forest(forest, TRUST_FEATURES)
    assert fast is not None and sum(len(t.feature) for t in fast.trees) > 6  # trees have split
    for _ in range(500):
        v = random_vector(rng)
        river = forest.predict_proba_one(dict(zip(TRUST_FEATURES, v, strict=True))).get(True, 0.0)
        assert fast.predict(v) == pytest.approx(river, abs=1e-9)


def test_an_empty_forest_scores_zero_like_river() -> None:
    forest = make_forest(seed=1)
    fast = compile_forest(forest, TRUST_FEATURES)
    assert fast is not None and fast.predict([0.0] * len(TRUST_FEATURES)) == 0.0


def test_the_forest_serves_only_after_enough_sessions_and_while_it_ranks_better() -> None:
    """On an interaction (converts when exactly one of two signs is present)
    a linear model cannot rank; the forest takes over once it may."""
    rng = random.Random(7)
    model = TrustModel(seed=1)
    serving = []
    for _ in range(1200):
        x = dict.fromkeys(TRUST_FEATURES, 0.0)
        a, b = rng.random() < 0.5, rng.random() < 0.5
        x["carts"], x["searches"] = float(a), float(b)
        x["pages"] = rng.random()
        model.learn_session([x], a != b)
        serving.append(model.serving)
    assert set(serving[: CHAMPION_MIN_SESSIONS - 1]) == {"linear"}
    assert serving[-1] == "forest"
    auc = model.learner_auc  # over every snapshot, the early ones included
    assert auc["forest"] > auc["linear"] + 0.1 and auc["linear"] < 0.6


def test_the_hazard_labels_moments_by_leaving_within_the_horizon() -> None:
    hazard = LeaveHazard(horizon_ms=60_000)
    calm, stuck = [0.2] * len(HAZARD_FEATURES), [0.8] * len(HAZARD_FEATURES)
    for _ in range(60):
        # a converter's late moment is not a departure; a leaver's early one is not either
        hazard.learn_session([(0, calm), (90_000, stuck)], True, 100_000)
        hazard.learn_session([(0, calm), (50_000, stuck)], False, 100_000)
    assert hazard.leavers == 60 and hazard.stayers == 60
    assert hazard.predict(stuck) > hazard.predict(calm)
    fresh = LeaveHazard(horizon_ms=60_000)
    fresh.learn_session([(0, calm)], False, 1_000_000)
    assert fresh.auc is None
    assert fresh.auc_unavailable == "no session with a departure within the horizon; need 10"


def test_the_hazard_does_not_learn_checks_made_after_the_visitor_had_gone() -> None:
    """A tick after the session's last event saw an empty room: learning it
    would teach "silence means leaving", which makes every alert come late."""
    hazard = LeaveHazard(horizon_ms=60_000)
    quiet = [0.5] * len(HAZARD_FEATURES)
    hazard.learn_session([(200_000, quiet), (230_000, quiet)], False, 100_000)
    assert (hazard.leavers, hazard.stayers) == (0, 0)  # nothing learned
    hazard.learn_session([(90_000, quiet), (230_000, quiet)], False, 100_000)
    assert hazard.leavers == 1


def test_a_version_1_state_still_decodes_without_its_snapshots() -> None:
    import json
    import zlib

    state = SessionState("s", start_ts=T0, last_ts=T0 + 5, n_events=3)
    values = json.loads(zlib.decompress(state.to_bytes()))
    assert values[0] == STATE_VERSION == 4
    # version 1 had no type counts, cart time, trail or moments (version 2),
    # acknowledgements or alert marks (3), trust marks or prefix marks (4)
    old = [1, *values[1:-8]]
    decoded = SessionState.from_bytes(zlib.compress(json.dumps(old).encode()))
    assert (decoded.sid, decoded.n_events, decoded.last_ts) == ("s", 3, T0 + 5)
    assert decoded.type_counts == [0] * len(decoded.type_counts) and decoded.moments == []


def test_a_version_2_state_keeps_its_counts_and_snapshots() -> None:
    import json
    import zlib

    d = Driver()
    for i, etype in enumerate(("page_view", "click", "scroll", "visibility")):
        d.send(etype, 1000 * i, "/products/1", x=1, y=1, scroll_pct=10.0)
    assert d.state is not None and d.state.snapshots
    values = json.loads(zlib.decompress(d.state.to_bytes()))
    old = [2, *values[1:-4]]  # version 2 had no acknowledgements, alert or trust marks
    old[1 + SessionState._FIELD_NAMES.index("type_counts")] = d.state.type_counts[:-1]
    decoded = SessionState.from_bytes(zlib.compress(json.dumps(old).encode()))
    assert decoded.type_counts == d.state.type_counts  # "intervention" was appended
    assert decoded.snapshots == d.state.snapshots and decoded.moments == d.state.moments
    assert (decoded.acked, decoded.alert_marks) == ([0, 0], [])
    assert (decoded.trust_marks, decoded.prefix_marks) == ({}, [])


def test_a_version_3_state_keeps_its_alert_marks_and_starts_no_trust_marks() -> None:
    import json
    import zlib

    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("click", 1000, x=1, y=1)
    assert d.state is not None and d.state.trust_marks and d.state.prefix_marks
    d.state.alert_marks = ["trust_loss/open chat"]
    values = json.loads(zlib.decompress(d.state.to_bytes()))
    old = [3, *values[1:-2]]  # version 3 had no trust marks or prefix marks
    decoded = SessionState.from_bytes(zlib.compress(json.dumps(old).encode()))
    assert decoded.alert_marks == ["trust_loss/open chat"] and decoded.n_events == 2
    assert (decoded.trust_marks, decoded.prefix_marks) == ({}, [])


def test_trust_features_v2_count_activity_and_remember_the_path() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("click", 1000, x=1, y=1, target="a#x")
    d.send("add_to_cart", 2000)
    d.send("page_view", 3000, "/compare")
    d.send("page_view", 63_000, "/cart")
    state = d.state
    assert state is not None
    x = dict(zip(TRUST_FEATURES, trust_vector(state, T0 + 123_000), strict=True))
    assert x["events"] == pytest.approx(1.7918, abs=1e-4)  # log1p(5 events)
    assert x["clicks"] == pytest.approx(0.6931, abs=1e-4)
    assert x["minutes_since_cart"] == pytest.approx(1.1042, abs=1e-4)  # log1p(121 s in min)
    assert x["dwell_minutes"] == pytest.approx(0.6931, abs=1e-4)  # log1p(1 min on /cart)
    # consider -> evaluate -> decide: the two stages left most recently
    assert (x["stage_now"], x["stage_before"], x["stage_before_that"]) == (0.6, 0.4, 0.2)


@pytest.fixture(scope="module")
def simulated() -> tuple[list[Event], Detector, list[Alert]]:
    config = DetectorConfig()
    parser = EventParser(config)
    events = [parser.parse(e) for e in Simulator(SimConfig(sessions=2500, seed=13)).events()]
    detector = Detector(config)
    runner = OfflineRunner(detector)
    alerts = [a for e in events for a in runner.feed(e)] + runner.finish()
    return events, detector, alerts


def test_quiet_sessions_are_checked_between_events_and_can_raise_hesitation(
    simulated: tuple[list[Event], Detector, list[Alert]],
) -> None:
    """A visitor who stares sends nothing: hesitation alerts without a trigger
    event come from ticks, at an event time no event of the session has."""
    events, detector, alerts = simulated
    times: dict[str, set[int]] = {}
    for e in events:
        times.setdefault(e.session_id, set()).add(e.ts)
    hesitation = [a for a in alerts if a.kind == "hesitation"]
    ticked = [a for a in hesitation if a.trigger_event_id is None]
    assert ticked, "no hesitation alert came from a tick"
    assert all(a.event_time not in times[a.subject] for a in ticked)
    assert all(a.rule == "leave_hazard" for a in hesitation)
    assert detector.models.hazard.auc is not None and detector.models.hazard.auc > 0.75


def test_the_budget_caps_all_session_alerts_and_no_family_starves(
    simulated: tuple[list[Event], Detector, list[Alert]],
) -> None:
    events, detector, alerts = simulated
    sessions = len({e.session_id for e in events})
    rules = Counter(a.rule for a in alerts if a.kind != "friction_hotspot")
    per_1000 = 1000 * sum(rules.values()) / sessions
    # at most the budget plus the tokens held at the start (a tenth of it)
    assert per_1000 <= detector.config.alert_budget_per_1000 + 6 + 1000 * 6 / sessions
    assert rules["friction_pileup"] > 0 and rules["leave_hazard"] > 0


def test_tick_does_nothing_before_it_is_due_or_outside_deliberation() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")  # consider: not a deliberation stage
    assert d.state is not None and d.detector.tick_due(d.state) is None
    d.send("page_view", 1000, "/compare")
    state = d.state
    due = d.detector.tick_due(state)
    assert due == T0 + 1000 + 30_000
    assert d.detector.tick(state, due - 1) == [] and state.hes_checked == T0 + 1000
    d.detector.tick(state, due)
    assert state.hes_checked == due and len(state.moments) == 2
    # silence beyond hesitation_quiet_max_ms: the timeout takes over
    state.hes_checked = T0 + 1000 + d.detector.config.hesitation_quiet_max_ms
    assert d.detector.tick_due(state) is None


def test_a_check_reached_after_the_quiet_maximum_is_not_run_and_ends_the_checks() -> None:
    """A watermark that jumps (a backlog, a new owner) reaches a check long
    after it was due: the session has been quiet for longer than
    hesitation_quiet_max_ms by then, so no moment is scored and no alert
    raised (the replay never checks it so late), and no check is due again."""
    d = Driver()
    d.send("page_view", 1000, "/compare")
    state = d.state
    assert state is not None
    quiet_max = d.detector.config.hesitation_quiet_max_ms
    late = T0 + 1000 + quiet_max + 1
    assert d.detector.tick(state, late) == []
    assert len(state.moments) == 1 and state.hes_checked == late
    assert d.detector.tick_due(state) is None
