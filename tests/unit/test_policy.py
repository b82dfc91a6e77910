"""Alert policy: the budget's token bucket, admission, and checkpoints that
kept the budget on the models before it moved to ``detectors.policy``."""

from __future__ import annotations

import pickle
from dataclasses import replace

from detectors.alerts import Alert
from detectors.config import DetectorConfig
from detectors.detector import DetectorModels
from detectors.models import MODEL_FORMAT, MODEL_NAME, RIVER_VERSION
from detectors.policy import AlertBudget, admit
from detectors.session import SessionState

T = 1_700_000_000_000


def alert(kind: str = "hesitation", rule: str = "hst_quantile") -> Alert:
    return Alert(
        kind=kind, severity="low", score=0.9, threshold=0.8, subject="s", episode=0,
        session_id="s", user_hash=None, stage="evaluate", page="/compare", reasons=(),
        suggested_action="x", trigger_event_id="e", event_time=T, model_version="m", rule=rule,
    )  # fmt: skip


def test_budget_starts_at_a_tenth_earns_per_session_and_is_capped() -> None:
    budget = AlertBudget.start(20.0)
    assert budget.tokens == 2.0
    for _ in range(100_000):
        budget.earn(20.0)
    assert budget.tokens == 20.0


def test_an_empty_budget_holds_back_model_alerts_but_not_friction() -> None:
    config = DetectorConfig(alert_budget_per_1000=10.0, max_alerts_per_session=5)
    budget = AlertBudget(0.5)
    state = SessionState("s")
    assert admit(config, state, budget, alert(), T) is None
    assert budget.suppressed == 1
    pileup = admit(config, state, budget, alert("trust_loss", "friction_pileup"), T)
    assert pileup is not None and pileup.episode == 1
    assert budget.tokens == -0.5  # friction spends a token it did not have


def test_a_disabled_budget_admits_everything_and_counts_nothing() -> None:
    config = DetectorConfig(alert_budget_per_1000=0, max_alerts_per_session=5)
    budget = AlertBudget.start(0)
    assert admit(config, SessionState("s"), budget, alert(), T) is not None
    assert (budget.tokens, budget.suppressed) == (0.0, 0)


def test_episodes_count_per_kind_and_the_cooldown_is_per_kind() -> None:
    config = DetectorConfig(alert_budget_per_1000=0, max_alerts_per_session=9)
    state, budget = SessionState("s"), AlertBudget(0)
    first = admit(config, state, budget, alert(), T)
    other_kind = admit(config, state, budget, alert("trust_loss", "trust_drop"), T + 1)
    too_soon = admit(config, state, budget, alert(), T + config.cooldown_ms - 1)
    later = admit(config, state, budget, alert(), T + config.cooldown_ms)
    assert first is not None and first.episode == 1
    assert other_kind is not None and other_kind.episode == 1
    assert too_soon is None
    assert later is not None and later.episode == 2
    assert state.n_alerts == 3


def test_no_alert_after_close_or_beyond_the_session_cap() -> None:
    config = DetectorConfig(alert_budget_per_1000=0)
    state, budget = SessionState("s"), AlertBudget(0)
    assert admit(config, state, budget, alert(), T) is not None
    assert admit(config, state, budget, alert("trust_loss", "friction_pileup"), T) is None
    closed = replace(SessionState("t"), outcome="exit")
    assert admit(config, closed, budget, alert(), T) is None


def test_a_checkpoint_from_before_the_policy_module_loads() -> None:
    """Checkpoints written before this layout name the class
    ``detectors.detector.DetectorModels`` and keep the bucket in
    ``budget_tokens`` and ``suppressed_by_budget``."""
    models = DetectorModels(DetectorConfig())
    legacy = object.__new__(DetectorModels)
    legacy.__dict__.update(models.__dict__)
    del legacy.__dict__["budget"]
    legacy.__dict__.update(budget_tokens=3.5, suppressed_by_budget=7)
    header = {"format": MODEL_FORMAT, "river": RIVER_VERSION, "name": MODEL_NAME}
    blob = pickle.dumps((header, legacy), protocol=2)
    old_path = blob.replace(b"cdetectors.models\n", b"cdetectors.detector\n")
    assert old_path != blob
    loaded = DetectorModels.loads(old_path)
    assert loaded.budget == AlertBudget(3.5, 7)
    assert loaded.suppressed_by_budget == 7
    assert DetectorModels.loads(loaded.dumps()).budget == AlertBudget(3.5, 7)
