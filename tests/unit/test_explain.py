"""What alerts say: singular and plural, whole counts, durations with
units, and no reason that shows a value equal to its baseline."""

from __future__ import annotations

import random

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.explain import duration_shown, hesitation_reasons
from detectors.features import HESITATION_FEATURES
from detectors.models import DetectorModels
from detectors.session import SessionState
from detectors.signals import SIGNAL_INDEX
from tests.builders import Driver

CFG = DetectorConfig()


def friction_alert_texts(driver: Driver) -> list[str]:
    (alert,) = driver.alerts("trust_loss")
    return [reason.text for reason in alert.reasons]


def test_one_rage_click_burst_is_singular_and_three_dead_clicks_plural() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    for t in (1000, 1300, 1600):  # one burst: 2 points
        d.send("click", t, x=10, y=10, target="button#add")
    for t in (5000, 8000):  # two dead clicks, far apart: 2 points
        d.send("click", t, x=300, y=10, target="button#size", dead=True)
    assert friction_alert_texts(d) == [
        "1 rage-click burst (repeated fast clicks on one spot) this session (typical: 0)",
        "2 clicks that did nothing this session (typical: 0)",
    ]


def test_counts_and_their_typical_values_are_whole_numbers() -> None:
    models = DetectorModels(CFG)
    for count in (0, 1, 0, 1, 1):  # mean 0.6 dead clicks per closed session
        models.signal_means[SIGNAL_INDEX["dead_click"]].update(count)
    d = Driver()
    d.detector = Detector(CFG, models)
    d.send("page_view", 0, "/products/1")
    for t in (1000, 3000, 5000, 7000):
        d.send("click", t, x=50, y=50, target="button#buy", dead=True)
    (alert,) = d.alerts("trust_loss")
    (reason,) = alert.reasons
    assert reason.text == "4 clicks that did nothing this session (typical: 1)"
    assert reason.baseline == 0.6  # the number itself stays exact


def test_a_reason_at_its_typical_count_is_left_out() -> None:
    models = DetectorModels(CFG)
    for _ in range(20):
        models.signal_means[SIGNAL_INDEX["form_error"]].update(4)
    d = Driver()
    d.detector = Detector(CFG, models)
    d.send("page_view", 0, "/checkout")
    for t in (1000, 2000):  # 2 points
        d.send("form_error", t, field="card")
    for t in (3000, 3300, 3600):  # one rage burst, 2 points
        d.send("click", t, x=10, y=10, target="button#pay")
    d.send("form_error", 4000, field="card")
    d.send("form_error", 5000, field="card")
    (alert,) = d.alerts("trust_loss")
    # 4 form errors against a typical 4 says nothing; the rage burst does
    assert [r.signal for r in alert.reasons] == ["rage_click"]


def test_hesitation_counts_have_no_unit_and_durations_have_one() -> None:
    cfg = DetectorConfig(hesitation_warmup=10)
    models = DetectorModels(cfg)
    rng = random.Random(3)
    usual = dict.fromkeys(HESITATION_FEATURES, 0.1)
    for _ in range(300):
        x = {k: v + rng.uniform(-0.01, 0.01) for k, v in usual.items()}
        models.hesitation.score_one("evaluate", x | {"revisits": 0.0, "reversals": 0.0})
    state = SessionState("s", stage="evaluate")
    # 1 revisit, 1 reversal (0 typical): whole counts without "times"
    odd = usual | {"dwell": 0.8, "revisits": 0.2, "reversals": 0.05}
    texts = [r.text for r in hesitation_reasons(state, models, odd)]
    assert "times this page was revisited: 1 (typical at the evaluate stage: 0)" in texts
    assert "scroll direction changes on this page: 1 (typical at the evaluate stage: 0)" in texts
    assert "time on this page: 7 min (typical at the evaluate stage: 1 s)" in texts


def test_a_hesitation_feature_shown_at_its_typical_value_is_left_out() -> None:
    cfg = DetectorConfig(hesitation_warmup=10)
    models = DetectorModels(cfg)
    rng = random.Random(4)
    for _ in range(300):  # about 1.2 reversals, a tight spread
        x = dict.fromkeys(HESITATION_FEATURES, 0.1) | {"reversals": rng.uniform(0.059, 0.061)}
        models.hesitation.score_one("evaluate", x)
    state = SessionState("s", stage="evaluate")
    odd = dict.fromkeys(HESITATION_FEATURES, 0.1) | {"reversals": 0.07, "dwell": 0.8}
    reasons = hesitation_reasons(state, models, odd)
    # 1.4 reversals is above the mean (z > 0) but reads "1" like the typical 1.2
    assert [r.signal for r in reasons] == ["dwell"]


def test_durations_read_in_seconds_minutes_and_hours() -> None:
    assert [duration_shown(s)[0] for s in (0.2, 44, 95, 3599, 7200, 7260)] == [
        "0 s", "44 s", "2 min", "1 h", "2 h", "2 h 1 min",
    ]  # fmt: skip
