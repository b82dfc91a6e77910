"""Alert policy: the budget's token buckets per alert family, admission,
and checkpoints of an older model format."""

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


def alert(kind: str = "hesitation", rule: str = "leave_hazard") -> Alert:
    return Alert(
        kind=kind, severity="low", score=0.9, threshold=0.8, subject="s", episode=0,
        session_id="s", user_hash=None, stage="evaluate", page="/compare", reasons=(),
        suggested_action="x", trigger_event_id="e", event_time=T, model_version="m", rule=rule,
    )  # fmt: skip


def test_each_family_starts_at_a_tenth_of_its_share_earns_per_session_and_is_capped() -> None:
    capacities = DetectorConfig(alert_budget_per_1000=60.0).alert_budget_capacities
    budget = AlertBudget.start(capacities)
    assert budget.tokens == [2.0, 2.0, 2.0]
    for _ in range(100_000):
        budget.earn(capacities)
    assert budget.tokens == [20.0, 20.0, 20.0]


def test_unequal_shares_split_the_budget_and_lenders_keep_half_their_own() -> None:
    config = DetectorConfig(
        alert_budget_per_1000=60.0, alert_share_friction=4.0, max_alerts_per_session=99,
        cooldown_ms=0,
    )  # fmt: skip
    assert config.alert_budget_capacities == (40.0, 10.0, 10.0)
    budget = AlertBudget([0.0, 10.0, 10.0])
    state = SessionState("s")
    friction = alert("trust_loss", "friction_pileup")
    admitted = [admit(config, state, budget, friction, T + i) for i in range(20)]
    assert sum(a is not None for a in admitted) == 10  # 5 from each lender, down to 5 each
    assert budget.tokens == [0.0, 5.0, 5.0]


def test_one_family_cannot_spend_another_below_half_of_its_share() -> None:
    """Friction piling up used to spend every token; now it has its share,
    borrows only from a bucket above half full, and the rest stays for the
    other families."""
    config = DetectorConfig(
        alert_budget_per_1000=60.0, max_alerts_per_session=99, cooldown_ms=0
    )
    budget = AlertBudget([2.0, 14.0, 20.0])  # friction, trust, hesitation
    state = SessionState("s")
    friction = alert("trust_loss", "friction_pileup")
    admitted = [admit(config, state, budget, friction, T + i) for i in range(30)]
    # 2 of its own, then from the fullest lender while it keeps half its
    # capacity (10): 10 from hesitation (20 -> 10) and 4 from trust (14 -> 10)
    assert sum(a is not None for a in admitted) == 16
    assert budget.tokens == [0.0, 10.0, 10.0]
    assert budget.suppressed == 14
    hesitation = admit(config, state, budget, alert(), T + 100)
    assert hesitation is not None  # its own share is still there


def test_an_empty_family_bucket_holds_back_its_alerts() -> None:
    config = DetectorConfig(alert_budget_per_1000=30.0, max_alerts_per_session=5)
    budget = AlertBudget([5.0, 5.0, 0.5])
    assert admit(config, SessionState("s"), budget, alert(), T) is None
    assert budget.suppressed == 1 and budget.tokens == [5.0, 5.0, 0.5]


def test_a_disabled_budget_admits_everything_and_counts_nothing() -> None:
    config = DetectorConfig(alert_budget_per_1000=0, max_alerts_per_session=5)
    budget = AlertBudget.start(config.alert_budget_capacities)
    assert admit(config, SessionState("s"), budget, alert(), T) is not None
    assert (budget.tokens, budget.suppressed) == ([0.0, 0.0, 0.0], 0)


def test_episodes_count_per_kind_and_the_cooldown_is_per_kind() -> None:
    config = DetectorConfig(alert_budget_per_1000=0, max_alerts_per_session=9)
    state, budget = SessionState("s"), AlertBudget.start((0.0, 0.0, 0.0))
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
    state, budget = SessionState("s"), AlertBudget.start((0.0, 0.0, 0.0))
    assert admit(config, state, budget, alert(), T) is not None
    assert admit(config, state, budget, alert("trust_loss", "friction_pileup"), T) is None
    closed = replace(SessionState("t"), outcome="exit")
    assert admit(config, closed, budget, alert(), T) is None


def test_a_checkpoint_of_the_previous_model_format_is_refused() -> None:
    """Format 1 (linear trust model, one budget bucket) cannot be read into
    format 2; the worker then starts its models fresh (and says so)."""
    models = DetectorModels(DetectorConfig())
    header = {"format": MODEL_FORMAT - 1, "river": RIVER_VERSION, "name": MODEL_NAME}
    blob = pickle.dumps((header, models), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        DetectorModels.loads(blob)
    except ValueError as exc:
        assert "incompatible model snapshot" in str(exc)
    else:
        raise AssertionError("a format-1 checkpoint was accepted")
