"""The simulated intervention effect, and the holdout recovering it."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.offline.runner import OfflineRunner
from detectors.simulation.interventions import InterventionEffect, InterventionLoop, LoopTruth
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.uplift import CONTROL, TREATED, Uplift, UpliftTracker

# half the sessions in control, so both groups are large in a short run
CFG = DetectorConfig(holdout_share=0.5)
EVERYONE_HALF = {p: 0.5 for p in ("comparer", "confused", "frustrated", "researcher", "bouncer")}


@cache
def looped(
    respond: tuple[tuple[str, float], ...],
) -> tuple[LoopTruth, UpliftTracker, list[dict[str, Any]]]:
    tracker = UpliftTracker(min_sessions=30)
    runner = OfflineRunner(
        Detector(CFG, learn=False),
        on_close=lambda s: tracker.closed_state(s, CFG.holdout_salt, CFG.holdout_share),
    )
    loop = InterventionLoop(
        Simulator(SimConfig(sessions=3000, seed=5)), runner, InterventionEffect(dict(respond))
    )
    events = list(loop.events())
    runner.finish()
    return loop.truth, tracker, events


def test_a_simulated_effect_is_recovered_within_its_interval() -> None:
    truth, tracker, _ = looped(tuple(EVERYONE_HALF.items()))
    effect = truth.true_effect
    assert effect is not None and effect > 0.05 and truth.rescued
    overall: Uplift = tracker.uplift("all", "")
    assert overall.shown and overall.lower is not None and overall.upper is not None
    assert overall.lower <= effect <= overall.upper
    assert overall.lower > 0  # and it is told apart from no effect


def test_no_effect_is_reported_when_none_was_simulated() -> None:
    truth, tracker, events = looped(())
    assert truth.true_effect == 0.0 and not truth.rescued
    overall = tracker.uplift("all", "")
    assert overall.shown and overall.lower is not None and overall.upper is not None
    assert overall.lower <= 0.0 <= overall.upper
    # help is still shown (and acknowledged) to treated sessions only
    acks = {e["session_id"] for e in events if e["type"] == "intervention"}
    assert acks == truth.shown
    assert acks and all(truth.alerted[s] == TREATED for s in acks)
    assert any(t == CONTROL for t in truth.alerted.values())


def test_rescued_journeys_end_in_a_purchase_and_drop_the_planned_rest() -> None:
    truth, _, events = looped(tuple(EVERYONE_HALF.items()))
    by_session: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_session.setdefault(e["session_id"], []).append(e)
    for sid in truth.rescued:
        types = [e["type"] for e in by_session[sid]]
        assert types[-1] == "purchase" and "intervention" in types
        ack = types.index("intervention")
        assert types[ack + 1 :] == [
            "page_view", "add_to_cart", "page_view",
            *["page_view", "checkout_step"] * 3, "purchase",
        ]  # fmt: skip
    times = [e["ts"] for e in events]
    assert times == sorted(times)


def test_response_probabilities_are_checked() -> None:
    with pytest.raises(ValueError, match="respond"):
        InterventionEffect({"comparer": 1.5})
