"""The shared online models: hesitation, trust, hotspots, and their checkpoint."""

from __future__ import annotations

import pickle
import random
from functools import cache
from importlib.metadata import version

import pytest

from detectors.config import DetectorConfig
from detectors.detector import MODEL_FORMAT, MODEL_NAME, Detector, DetectorModels
from detectors.events import Event, EventParser
from detectors.features import HESITATION_FEATURES, TRUST_FEATURES
from detectors.hesitation import HesitationModel
from detectors.hotspots import OVERFLOW_KEY, HotspotFinding, HotspotMonitor, _KeyState
from detectors.sample_size import MIN_PER_OUTCOME
from detectors.session import SessionState
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.trust import TrustModel
from tests.builders import T0

CFG = DetectorConfig()
RIVER = version("river")


# ------------------------------------------------------------------ hesitation
def trained_hesitation(seed: int = 0, n: int = 400) -> tuple[HesitationModel, random.Random]:
    model = HesitationModel(DetectorConfig(hesitation_warmup=200))
    rng = random.Random(seed)
    for _ in range(n):
        model.score_one("evaluate", {k: rng.uniform(0.1, 0.3) for k in HESITATION_FEATURES})
    return model, rng


def test_hesitation_threshold_is_none_before_warmup() -> None:
    model = HesitationModel(DetectorConfig(hesitation_warmup=50))
    rng = random.Random(1)
    results = [
        model.score_one("decide", {k: rng.uniform(0.1, 0.3) for k in HESITATION_FEATURES})
        for _ in range(60)
    ]
    assert all(r.threshold is None for r in results[:50])
    assert all(r.threshold is not None for r in results[50:])
    assert model.seen("decide") == 60 and model.seen("evaluate") == 0


def test_hesitation_stages_are_separate_models() -> None:
    model, _ = trained_hesitation()
    odd = {k: 0.95 for k in HESITATION_FEATURES}
    assert model.score_one("decide", odd).threshold is None  # decide has not warmed up


def test_hesitation_flags_an_outlier_in_the_hesitant_direction() -> None:
    model, rng = trained_hesitation()
    normal = {k: rng.uniform(0.1, 0.3) for k in HESITATION_FEATURES}
    usual = model.score_one("evaluate", normal)
    odd = dict(normal, dwell=0.99, since_progress=0.99, max_gap=0.95)
    r = model.score_one("evaluate", odd)
    assert r.threshold is not None
    assert r.score > r.threshold
    assert r.hesitant
    assert r.score > usual.score
    top = [name for name, *_ in model.explain("evaluate", odd)[:3]]
    assert set(top) == {"dwell", "since_progress", "max_gap"}


def test_hesitation_fast_visitor_is_unusual_but_not_hesitant() -> None:
    model, _ = trained_hesitation()
    r = model.score_one("evaluate", dict.fromkeys(HESITATION_FEATURES, 0.0))
    assert not r.hesitant


def test_hesitation_explain_sorted_by_z() -> None:
    model, _ = trained_hesitation()
    x = dict.fromkeys(HESITATION_FEATURES, 0.2) | {"revisits": 0.8, "reversals": 0.5}
    z = [item[3] for item in model.explain("evaluate", x)]
    assert z == sorted(z, reverse=True)
    assert model.explain("evaluate", x)[0][0] == "revisits"


# ----------------------------------------------------------------------- trust
def toy_sessions(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        converted = rng.random() < 0.5
        x = {k: rng.uniform(0.0, 0.2) for k in TRUST_FEATURES}
        if converted:
            x["carts"] = rng.uniform(0.7, 1.4)
            x["checkout_steps"] = rng.uniform(0.7, 1.4)
        else:
            x["rage_click"] = rng.uniform(0.7, 1.4)
            x["form_trouble"] = rng.uniform(0.7, 1.4)
        out.append((x, converted))
    return out


def test_trust_model_learns_a_separable_problem() -> None:
    model = TrustModel()
    assert model.auc is None and model.log_loss == pytest.approx(0.6931, abs=1e-3)
    for x, y in toy_sessions(600, seed=2):
        model.learn_session([x], y)
    assert model.auc is not None and model.auc > 0.9
    assert model.log_loss < 0.5
    assert model.closed == 600 and model.learned == 600
    held_out = toy_sessions(200, seed=3)
    good = [model.predict(x) for x, y in held_out if y]
    bad = [model.predict(x) for x, y in held_out if not y]
    assert min(good) > max(bad)
    assert all(0.0 <= p <= 1.0 for p in good + bad)


def test_trust_rolling_auc_waits_for_ten_sessions_of_each_outcome() -> None:
    model = TrustModel()
    assert model.auc_unavailable == "no sessions"
    sessions = toy_sessions(400, seed=5)
    buyers = [x for x, y in sessions if y]
    others = [x for x, y in sessions if not y]
    for x in others[:30]:
        model.learn_session([x], False)
    for x in buyers[:9]:
        model.learn_session([x], True)
    assert model.auc is None
    assert model.auc_unavailable == f"only 9 sessions with a purchase; need {MIN_PER_OUTCOME}"
    model.learn_session([buyers[9]], True)
    assert model.auc_unavailable is None
    assert model.auc is not None and 0.0 <= model.auc <= 1.0


def test_trust_base_rate_is_laplace_smoothed() -> None:
    model = TrustModel()
    assert model.base_rate == 0.5
    x = dict.fromkeys(TRUST_FEATURES, 0.0)
    for y in (True, True, True, False):
        model.learn_session([x], y)
    assert model.base_rate == pytest.approx(4 / 6)
    model.learn_session([], False)  # a session without snapshots still counts
    assert model.closed == 5 and model.learned == 4
    assert model.base_rate == pytest.approx(4 / 7)


def test_trust_contributions_most_negative_first() -> None:
    model = TrustModel()
    for x, y in toy_sessions(400, seed=4):
        model.learn_session([x], y)
    bad = dict.fromkeys(TRUST_FEATURES, 0.1) | {"rage_click": 1.4, "form_trouble": 1.4}
    contributions = model.contributions(bad)
    effects = [c.effect for c in contributions]
    assert effects == sorted(effects)
    assert len(contributions) == len(TRUST_FEATURES)
    assert {contributions[0].name, contributions[1].name} == {"rage_click", "form_trouble"}
    assert contributions[0].effect < 0


def test_trust_drop_threshold_needs_100_falls() -> None:
    model = TrustModel(drop_quantile=0.9)
    thresholds = []
    for i in range(101):
        thresholds.append(model.drop_threshold())
        model.observe_drop(i / 100)
    assert all(t is None for t in thresholds[:100])
    assert thresholds[100] == pytest.approx(0.9, abs=0.02)


# -------------------------------------------------------------------- hotspots
def test_stable_rate_raises_nothing() -> None:
    rng = random.Random(0)
    monitor = HotspotMonitor(CFG)
    found = [monitor.observe("checkout/2", rng.random() < 0.2, 1000 * i) for i in range(3000)]
    assert not any(found)
    assert monitor.open_incidents() == []
    rate = monitor.rate("checkout/2")
    assert rate is not None and 0.0 < rate < 0.6


def test_rate_jump_raises_exactly_one_finding_and_closes_when_it_recovers() -> None:
    rng = random.Random(0)
    monitor = HotspotMonitor(CFG)
    before = [monitor.observe("checkout/2", rng.random() < 0.1, 1000 * i) for i in range(1500)]
    during = [
        monitor.observe("checkout/2", rng.random() < 0.6, 1000 * (1500 + i)) for i in range(500)
    ]
    assert not any(before)
    hits = [f for f in during if f]
    assert len(hits) == 1
    finding = hits[0]
    assert finding.key == "checkout/2" and finding.episode == 1
    assert finding.rate_before < 0.2 and finding.rate_now > 0.4
    assert monitor.open_incidents() == ["checkout/2"]
    after = [
        monitor.observe("checkout/2", rng.random() < 0.1, 1000 * (2000 + i)) for i in range(500)
    ]
    assert not any(after)
    assert monitor.open_incidents() == []


def test_deterministic_rate_jump() -> None:
    monitor = HotspotMonitor(DetectorConfig(hotspot_min_visits=30))
    for i in range(600):
        assert monitor.observe("cart", i % 10 == 0, 1000 * i) is None
    hits = [monitor.observe("cart", i % 10 < 6, 1000 * (600 + i)) for i in range(300)]
    assert len([h for h in hits if h]) == 1


def test_unknown_key_has_no_rate() -> None:
    assert HotspotMonitor(CFG).rate("nope") is None


def test_hotspot_key_cap_folds_new_keys_into_other() -> None:
    monitor = HotspotMonitor(DetectorConfig(hotspot_max_keys=2))
    monitor.observe("cart", False, 0)
    monitor.observe("product", False, 1)
    found = []
    for i in range(600):
        found.append(monitor.observe(f"page-{i % 7}", i % 10 == 0, 1000 * (i + 2)))
    for i in range(300):
        found.append(monitor.observe(f"page-{i % 7}", i % 10 < 6, 1000 * (i + 700)))
    assert set(monitor.keys) == {"cart", "product", OVERFLOW_KEY}
    assert monitor.keys[OVERFLOW_KEY].visits == 900
    hits = [f for f in found if f]
    assert hits and all(f.key == OVERFLOW_KEY for f in hits)


def _steady_then(
    monitor: HotspotMonitor, rng: random.Random, *, rate_after: float, gap_after_ms: int
) -> list[HotspotFinding | None]:
    """An hour of steady visits (one a second, 20% problems), then visits
    every ``gap_after_ms`` with problem rate ``rate_after``; the findings
    after the change."""
    for i in range(3600):
        assert monitor.observe("product", rng.random() < 0.2, T0 + 1000 * i) is None
    start = T0 + 3600 * 1000
    return [
        monitor.observe("product", rng.random() < rate_after, start + gap_after_ms * (i + 1))
        for i in range(400)
    ]


def test_traffic_tailing_off_raises_no_hotspot() -> None:
    # The end of traffic: the leaves stop, the timeouts of earlier sessions
    # (all abandonments: problems) go on at a fifth of the usual rate.
    found = _steady_then(HotspotMonitor(CFG), random.Random(3), rate_after=1.0, gap_after_ms=5000)
    assert not any(found)


def test_traffic_holding_still_raises_the_hotspot() -> None:
    # The same rise in the problem rate with the visits still coming: a real incident.
    found = _steady_then(HotspotMonitor(CFG), random.Random(3), rate_after=1.0, gap_after_ms=1000)
    hits = [f for f in found if f]
    assert len(hits) == 1 and hits[0].rate_now > 0.9


def test_traffic_check_passes_for_an_unchanged_poisson_stream() -> None:
    # Exponential gaps at one visit a second, 20% problems: nothing to report,
    # and a later jump of the problem rate is found at the same traffic.
    rng = random.Random(11)
    monitor = HotspotMonitor(CFG)
    ts = T0
    for _ in range(3000):
        ts += int(rng.expovariate(1.0) * 1000) + 1
        assert monitor.observe("cart", rng.random() < 0.2, ts) is None
    hits = []
    for _ in range(400):
        ts += int(rng.expovariate(1.0) * 1000) + 1
        hits.append(monitor.observe("cart", rng.random() < 0.7, ts))
    assert len([h for h in hits if h]) == 1


def test_hotspot_state_from_before_the_traffic_fields_loads() -> None:
    monitor = HotspotMonitor(CFG)
    monitor.observe("cart", False, T0)
    state = monitor.keys["cart"]
    old_fields = ("first_ts", "last_ts", "recent", "peak", "armed_ts", "armed_peak")
    slots = {name: getattr(state, name) for name in _KeyState.__slots__}
    old = {k: v for k, v in slots.items() if k not in old_fields}
    restored = _KeyState.__new__(_KeyState)
    restored.__setstate__((None, old))
    assert restored.visits == 1 and restored.peak == 0.0 and restored.traffic_holds()
    monitor.keys["cart"] = restored
    assert monitor.observe("cart", True, T0 + 1000) is None


# ------------------------------------------------------------------ checkpoint
@cache
def simulated(sessions: int, seed: int) -> tuple[Event, ...]:
    parser = EventParser(CFG)
    sim = Simulator(SimConfig(sessions=sessions, seed=seed))
    return tuple(parser.parse(e) for e in sim.events())


def run(detector: Detector, events: tuple[Event, ...]) -> list[str]:
    states: dict[str, SessionState] = {}
    ids = []
    for e in events:
        result = detector.process(states.get(e.session_id), e)
        states[e.session_id] = result.state
        ids += [a.id for a in result.alerts]
        if result.closed:
            del states[e.session_id]
    for state in states.values():
        ids += [a.id for a in detector.close(state, "timeout", state.last_ts + 1)]
    return ids


def probe_vectors() -> list[dict[str, float]]:
    rng = random.Random(9)
    return [{k: rng.uniform(0.0, 2.0) for k in TRUST_FEATURES} for _ in range(20)]


def test_models_dumps_loads_roundtrip() -> None:
    events = simulated(200, 5)
    det = Detector(CFG)
    run(det, events)
    assert det.models.trust.closed > 100
    loaded = DetectorModels.loads(det.models.dumps())
    assert loaded.version == det.models.version
    assert loaded.trust.closed == det.models.trust.closed
    assert loaded.trust.auc == det.models.trust.auc
    assert [loaded.trust.predict(x) for x in probe_vectors()] == [
        det.models.trust.predict(x) for x in probe_vectors()
    ]
    assert set(loaded.hotspots.keys) == set(det.models.hotspots.keys)
    assert loaded.hesitation.seen("evaluate") == det.models.hesitation.seen("evaluate") > 0
    # a restored checkpoint carries on exactly as the original
    more = simulated(60, 6)
    assert run(Detector(CFG, loaded), more) == run(det, more)
    assert DetectorModels.loads(det.models.dumps()).version == loaded.version


def test_models_header_records_format_name_and_installed_river() -> None:
    header, models = pickle.loads(DetectorModels(CFG).dumps())
    assert header == {"format": MODEL_FORMAT, "river": RIVER, "name": MODEL_NAME}
    assert isinstance(models, DetectorModels)
    # the hand-made checkpoint with the right header loads
    assert isinstance(DetectorModels.loads(pickle.dumps((header, models))), DetectorModels)


@pytest.mark.parametrize(
    "header",
    [
        {"format": MODEL_FORMAT, "river": "0.0.1", "name": MODEL_NAME},
        {"format": MODEL_FORMAT + 1, "river": RIVER, "name": MODEL_NAME},
        {"format": MODEL_FORMAT, "river": RIVER, "name": "something-else"},
    ],
)
def test_models_loads_rejects_incompatible_header(header: dict[str, object]) -> None:
    models = DetectorModels(CFG)
    with pytest.raises(ValueError):
        DetectorModels.loads(pickle.dumps((header, models)))


def test_models_loads_rejects_other_payload() -> None:
    header = {"format": MODEL_FORMAT, "river": RIVER, "name": MODEL_NAME}
    with pytest.raises(ValueError):
        DetectorModels.loads(pickle.dumps((header, {"not": "models"})))


def test_two_detectors_are_deterministic() -> None:
    events = simulated(300, 8)
    a, b = Detector(CFG), Detector(CFG)
    ids_a, ids_b = run(a, events), run(b, events)
    assert ids_a == ids_b
    assert len(ids_a) > 0
    pa = DetectorModels.loads(a.models.dumps())
    pb = DetectorModels.loads(b.models.dumps())
    assert [pa.trust.predict(x) for x in probe_vectors()] == [
        pb.trust.predict(x) for x in probe_vectors()
    ]
    assert a.metrics() == b.metrics()
