"""The per-session figures behind the console (``detectors.trust_map``): what
a session marks as it runs, its prefix, and their trip through an example."""

from __future__ import annotations

from array import array

import pytest

from detectors.config import DetectorConfig
from detectors.console_stats import ConsoleStats
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.models import DetectorModels
from detectors.offline.runner import OfflineRunner
from detectors.session import SessionState
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.training import Example
from detectors.trust_map import MIN_PREFIX_EVENTS, mark_step, marks_of, prefix_of
from tests.builders import Driver

CFG = DetectorConfig()


def stepped(n: int) -> SessionState:
    """A state after ``n`` marked events, one a second, scored 0.01 * i."""
    state = SessionState("s", start_ts=0)
    for i in range(1, n + 1):
        state.n_events, state.last_ts = i, 1000 * (i - 1)
        before, state.trust = state.trust, i / 100
        mark_step(state, False, (), before, True)
    return state


@pytest.mark.parametrize(
    ("events", "converted", "expected"),
    [
        (3, False, None),  # too short to have a middle
        (4, True, None),  # the goal is not part of the prefix: 3 before it
        (4, False, (0.02, 2, 1.0)),  # middle 2
        (7, False, (0.04, 4, 3.0)),  # middle 4: exactly a checkpoint
        (9, False, (0.04, 4, 3.0)),  # middle 5: the 4th event, not the 8th
        (16, True, (0.08, 8, 7.0)),  # 15 before the goal, middle 8
        (33, False, (0.16, 16, 15.0)),  # middle 17: the 16th, not the 32nd
    ],
)
def test_the_prefix_is_the_last_checkpoint_at_or_before_the_middle(
    events: int, converted: bool, expected: tuple[float, int, float] | None
) -> None:
    state = stepped(events)
    assert len(state.prefix_marks) <= 2  # only the last two are kept
    assert prefix_of(state, converted) == expected
    if expected is not None:
        before_goal = events - converted
        assert before_goal / 4 < expected[1] <= before_goal / 2 + 0.5


def test_the_prefix_always_exists_from_the_minimum_on() -> None:
    for events in range(MIN_PREFIX_EVENTS, 300):
        for converted in (False, True):
            if events - converted < MIN_PREFIX_EVENTS:
                continue
            prefix = prefix_of(stepped(events), converted)
            assert prefix is not None, (events, converted)


def test_marks_count_page_views_signal_firings_and_trust_changes() -> None:
    d = Driver(sid="m")
    d.send("page_view", 0, "/products/1")
    for i in range(4):
        d.send("click", 1000 + 500 * i, x=5, y=5, target="button#buy", dead=True)
    d.send("page_view", 10_000, "/cart")
    state = d.state
    assert state is not None
    marks = {key: (n, dsum, steps) for key, n, dsum, steps in marks_of(state)}
    assert marks["page_type:product"][0] == 1 and marks["page_type:cart"][0] == 1
    assert sum(n for k, (n, _, _) in marks.items() if k.startswith("stage:")) == 2
    fired = {k: n for k, (n, _, _) in marks.items() if k.startswith("signal:")}
    assert fired and all(n == state.signal_counts[_signal_index(k)] for k, n in fired.items())
    for _n, dsum, steps in marks.values():
        assert steps <= 6 and (steps > 0 or dsum == 0.0)


def _signal_index(key: str) -> int:
    from detectors.signals import SIGNALS

    return SIGNALS.index(key.split(":", 1)[1])


def test_an_example_carries_the_marks_and_prefix_exactly() -> None:
    vector = array("f", [0.5])
    example = Example(
        "s", 0, 9, 9, "exit", ((1, vector),), (), (0,), None, (),
        (("signal:dead_click", 3, -0.0421, 2), ("stage:decide", 1, 0.0, 0)), (0.4123, 4, 12.5),
    )  # fmt: skip
    assert Example.from_json(example.to_json()) == example
    older = example.to_json()
    del older["trust_marks"], older["prefix"]  # an example of a worker before the marks
    assert Example.from_json(older).trust_marks == () and Example.from_json(older).prefix is None


def test_both_consoles_compute_the_same_figures_from_one_run() -> None:
    """The demo's console (fed in process) and a deployment's (fed the
    examples the workers send) agree on the trust map and the validation."""
    models = DetectorModels(CFG)
    parse = EventParser(CFG).parse
    warm = OfflineRunner(Detector(CFG, models))
    for raw in Simulator(SimConfig(sessions=800, seed=11)).events():
        warm.feed(parse(raw))
    warm.finish()
    in_process, deployment = ConsoleStats(CFG), ConsoleStats(CFG)
    detector = Detector(CFG, models, learn=False)  # a worker: examples are kept
    runner = OfflineRunner(detector, on_step=in_process.step, on_close=in_process.closed)
    for raw in Simulator(SimConfig(sessions=600, seed=12)).events():
        runner.feed(parse(raw))
    runner.finish()
    for example in detector.examples:
        deployment.closed_example(example)
        deployment.closed_example(example)  # a copy counts once
    a, b = in_process.snapshot(), deployment.snapshot()
    assert a["sessions_closed"] == b["sessions_closed"] == len(detector.examples) > 500
    assert a["trust_map"] == b["trust_map"]
    assert {r["dimension"] for r in a["trust_map"]} == {"stage", "page_type", "signal"}
    assert a["validation"]["window_sessions"] == b["validation"]["window_sessions"] > 300
    assert a["validation"]["calibration"] == b["validation"]["calibration"]
    assert a["validation"]["trust_auc"] == b["validation"]["trust_auc"] is not None
    assert b["validation"]["trust_auc"] > 0.6  # a warmed model ranks the prefixes


def test_a_mark_key_this_version_does_not_know_is_left_out() -> None:
    state = SessionState("s")
    state.trust_marks = {"s3": [1, -50, 1], "p999": [1, 0, 0], "x1": [1, 0, 0], "g": [1, 0, 0]}
    assert marks_of(state) == (("stage:decide", 1, -0.005, 1),)


def test_a_signal_fired_at_close_is_marked_like_its_count() -> None:
    """Marks agree with the signal counts, close-time signals included."""
    from detectors.signals import SIGNALS

    d = Driver(sid="f")
    d.send("page_view", 0, "/checkout")
    d.send("form_focus", 1000, field="email")
    d.send("form_focus", 2000, field="card")
    d.send("exit", 3000)
    state = d.state
    assert state is not None and state.outcome == "exit"
    fired = {k.split(":", 1)[1]: n for k, n, _, _ in marks_of(state) if k.startswith("signal:")}
    counted = {name: n for name, n in zip(SIGNALS, state.signal_counts, strict=True) if n}
    assert fired == counted
