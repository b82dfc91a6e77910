"""Champion/challenger of the trust model (:mod:`detectors.challenger`)."""

from __future__ import annotations

import math
import random
from array import array

import pytest

from detectors.challenger import CHALLENGERS, Arena, RefitTrustModel, configure_arena, make_arena
from detectors.config import TRUST_CHALLENGERS, DetectorConfig
from detectors.detector import DetectorModels
from detectors.features import TRUST_FEATURES
from detectors.training import Example
from detectors.trust import TrustModel

BLANK = dict.fromkeys(TRUST_FEATURES, 0.0)


def session(rng: random.Random, flipped: bool) -> tuple[list[dict[str, float]], bool]:
    """One snapshot; basket adds raise the odds of buying before the flip and
    lower them after it (a drift, as when a campaign brings other visitors)."""
    carts = float(rng.randint(0, 3))
    noise = rng.gauss(0.0, 1.0)
    lean = (carts - 1.5) * (-1.0 if flipped else 1.0) + noise
    x = BLANK | {"carts": carts, "pages": float(rng.randint(1, 9))}
    return [x], lean > 0.8


def run(arena: Arena, champion: TrustModel, before: int, after: int, seed: int = 7) -> TrustModel:
    rng = random.Random(seed)
    for i in range(before + after):
        snapshots, converted = session(rng, flipped=i >= before)
        champion = arena.learn(champion, snapshots, converted)
    return champion


def test_a_challenger_that_adapts_to_a_drift_is_promoted_by_its_margin() -> None:
    champion = TrustModel()
    arena = Arena(RefitTrustModel(window=200, every=100), window_sessions=200, check_sessions=20)
    served = run(arena, champion, before=1500, after=800)
    assert served.kind == "refit-linear" and arena.challenger is champion
    assert arena.promotions and arena.promoted_total == len(arena.promotions)
    for swap in arena.promotions:
        assert swap.promoted_auc - swap.demoted_auc >= arena.margin
        assert swap.closed % arena.check_sessions == 0
    # after the drift the refit model, which forgets, took over (the online
    # learner, which remembers 1500 sessions of the old relation, lags)
    last = arena.promotions[-1]
    assert last.closed > 1500 and last.promoted == "refit-linear"
    assert last.demoted_auc < 0.5  # the old relation, ranked backwards


def test_no_promotion_without_the_margin() -> None:
    arena = Arena(
        RefitTrustModel(window=200, every=100), window_sessions=200, check_sessions=20, margin=0.9
    )
    champion = TrustModel()
    assert run(arena, champion, before=1500, after=800) is champion
    assert not arena.promotions
    assert arena.last is not None and arena.last[1] > arena.last[0]  # it did lead, by less


def test_equal_learners_never_swap() -> None:
    # the same learner and seed: equal scores, a lead of 0 is no reason to swap
    arena = Arena(TrustModel(), window_sessions=100, check_sessions=10, margin=0.0001, z=0.0)
    champion = TrustModel()
    assert run(arena, champion, before=300, after=300) is champion
    assert arena.last is not None and arena.last[0] == arena.last[1]


def test_promotion_needs_a_full_window_of_both_outcomes() -> None:
    arena = Arena(TrustModel(), window_sessions=100, check_sessions=10, margin=0.0, z=0.0)
    champion = TrustModel()
    for _ in range(99):
        champion = arena.learn(champion, [BLANK], True)
    assert arena.last is None and not arena.promotions  # window not full yet
    for _ in range(200):
        champion = arena.learn(champion, [BLANK], True)
    assert arena.window_auc() is None and not arena.promotions  # no session without a purchase


def test_refit_model_forgets_what_left_its_window() -> None:
    rng = random.Random(3)
    model = RefitTrustModel(window=200, every=100)
    for i in range(1200):
        snapshots, converted = session(rng, flipped=i >= 1000)
        model.learn_session(snapshots, converted)
    many_carts = BLANK | {"carts": 3.0, "pages": 5.0}
    model.predict(many_carts)  # the fast scoring terms are folded now
    model.refit()  # and must not outlive the model they were folded from
    assert model.predict(many_carts) == pytest.approx(model.predict_river(many_carts), abs=1e-9)
    assert model.refits == 13  # every 100 sessions from the 100th (window half full), and this one
    assert model.predict(many_carts) < 0.5  # the window holds only the flipped sessions
    copy = model.serving_copy()
    assert not copy.window if isinstance(copy, RefitTrustModel) else False
    assert copy.predict(many_carts) == model.predict(many_carts)


def test_detector_models_swap_the_served_trust_model_and_publish_no_arena() -> None:
    models = DetectorModels(DetectorConfig())
    assert models.arena is not None and models.arena.challenger.kind == "refit-linear"
    assert models.arena.margin == 0.02 and models.arena.window.maxlen == 1000
    # a bar of 0: the first comparison with a tie promotes
    models.arena = Arena(RefitTrustModel(), window_sessions=100, margin=0.0, z=0.0)
    vector = array("f", [0.0] * len(TRUST_FEATURES))
    for i in range(100):
        # before the champion's forest may serve, both score with the same
        # linear learner: a lead of 0 meets the bar of 0
        models.learn(
            Example(f"s{i}", 0, 1, 1, "converted" if i % 3 else "exit", ((0, vector),), (), ())
        )
    assert models.trust.kind == "refit-linear" and models.arena.challenger.kind == "online"
    serving = DetectorModels.loads_learned(models.dumps_serving())
    assert serving["arena"] is None
    learned = DetectorModels.loads_learned(models.dumps_learned())
    assert isinstance(learned["arena"], Arena) and learned["arena"].promoted_total == 1


def test_the_challenger_setting() -> None:
    assert tuple(CHALLENGERS) == TRUST_CHALLENGERS
    assert make_arena(DetectorConfig(trust_challenger="none")) is None
    with pytest.raises(ValueError, match="trust_challenger"):
        DetectorConfig(trust_challenger="gbm").validate()
    with pytest.raises(ValueError, match="challenger_margin"):
        DetectorConfig(challenger_margin=-0.1).validate()


def test_the_bar_grows_where_outcomes_are_few() -> None:
    arena = Arena(TrustModel(), window_sessions=1000)
    for i in range(1000):  # 175 converters, as on our simulator
        arena.window.append((i % 1000 < 175, array("f", [0.5]), array("f", [0.5])))
    many = arena.bar(0.85)
    arena.window.clear()
    for i in range(1000):  # 46, as on DIGINETICA
        arena.window.append((i < 46, array("f", [0.5]), array("f", [0.5])))
    few = arena.bar(0.45)
    assert 0.03 < many < 0.04 and 0.07 < few < 0.08
    arena.margin = 0.5
    assert arena.bar(0.45) == 0.5  # the margin is a floor
    assert Arena(TrustModel()).bar(0.85) == math.inf  # no outcomes yet


def test_a_trainer_restored_from_a_version_goes_on_exactly() -> None:
    # what the trainer's failover relies on: the champion, the challenger (its
    # refit window and random state) and the comparison window all travel in
    # the published learned models, and the settings in force are applied
    config = DetectorConfig(challenger_window_sessions=100, challenger_margin=0.0)
    rng = random.Random(5)
    examples = []
    for i in range(600):
        snapshots, converted = session(rng, flipped=i >= 250)
        vector = array("f", [snapshots[0][name] for name in TRUST_FEATURES])
        outcome = "converted" if converted else "exit"
        examples.append(Example(f"s{i}", i, i + 1, i + 1, outcome, ((i, vector),), (), ()))
    first = DetectorModels(config)
    first.arena = Arena(RefitTrustModel(window=100, every=50), 100, 0.0, check_sessions=10, z=0.0)
    for example in examples[:300]:
        first.learn(example)
    assert first.arena.promoted_total >= 1
    restored = DetectorModels(config)
    restored.adopt(DetectorModels.loads_learned(first.dumps_learned()), "v1")
    restored.tag = None
    restored.arena = configure_arena(restored.arena, config)
    for example in examples[300:]:
        first.learn(example)
        restored.learn(example)
    assert restored.arena is not None and restored.arena.promotions == first.arena.promotions
    probe = [BLANK | {"carts": float(c), "pages": float(p)} for c in range(4) for p in (1, 5, 9)]
    pairs = ((first.trust, restored.trust), (first.arena.challenger, restored.arena.challenger))
    for a, b in pairs:
        assert a.kind == b.kind and [a.predict(x) for x in probe] == [b.predict(x) for x in probe]


def test_the_settings_in_force_apply_to_a_restored_arena() -> None:
    restored = Arena(RefitTrustModel(), window_sessions=1000, margin=0.02)
    for i in range(1000):
        restored.window.append((i % 3 == 0, array("f", [0.5]), array("f", [0.5])))
    now = DetectorConfig(challenger_window_sessions=200, challenger_margin=0.1)
    changed = configure_arena(restored, now)
    assert changed is restored and changed.margin == 0.1
    assert changed.window.maxlen == 200 and len(changed.window) == 200
    assert configure_arena(restored, DetectorConfig(trust_challenger="none")) is None
