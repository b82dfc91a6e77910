"""Journey stages, progress, regressions, skips, revisits and stage time."""

from __future__ import annotations

import pytest

from detectors.config import (
    DEFAULT_STAGE_MAP,
    PAGE_TYPES,
    STAGE_INDEX,
    STAGE_ORDER,
    DetectorConfig,
)
from detectors.events import Event, EventParser
from detectors.journey import JourneyTracker
from detectors.session import SessionState
from tests.builders import T0, Driver

CFG = DetectorConfig()
PARSER = EventParser(CFG)


def walk(
    pages: list[tuple[int, str]], config: DetectorConfig = CFG
) -> tuple[SessionState, list[bool]]:
    """Apply page views (seconds offset, path); return the state and the
    progress flag of each page view."""
    parser = EventParser(config)
    tracker = JourneyTracker(config)
    state = SessionState("s")
    progressed = []
    for t, page in pages:
        ev = parser.parse(
            {"session_id": "s", "ts": T0 + t * 1000, "type": "page_view", "page": page}
        )
        progressed.append(tracker.enter(state, ev))
    return state, progressed


@pytest.mark.parametrize(
    ("page_type", "stage"),
    [
        ("home", "discover"),
        ("landing", "discover"),
        ("content", "discover"),
        ("category", "consider"),
        ("search", "consider"),
        ("product", "consider"),
        ("compare", "evaluate"),
        ("reviews", "evaluate"),
        ("pricing", "evaluate"),
        ("faq", "evaluate"),
        ("shipping", "evaluate"),
        ("returns", "evaluate"),
        ("cart", "decide"),
        ("checkout", "decide"),
        ("confirmation", "convert"),
        ("support", "support"),
        ("account", "support"),
    ],
)
def test_stage_of_each_page_type(page_type: str, stage: str) -> None:
    assert JourneyTracker(CFG).stage_of(page_type) == stage


def test_every_page_type_has_a_stage() -> None:
    assert set(DEFAULT_STAGE_MAP) == set(PAGE_TYPES)


def test_unknown_or_missing_page_type_counts_as_consider() -> None:
    tracker = JourneyTracker(CFG)
    assert tracker.stage_of(None) == "consider"
    assert tracker.stage_of("something-new") == "consider"
    state, _ = walk([(0, "/unheard-of")])
    assert state.stage == "consider" and state.furthest == STAGE_ORDER.index("consider")


def test_linear_journey_progresses_at_every_new_stage() -> None:
    state, progressed = walk(
        [
            (0, "/"),
            (10, "/products/1"),
            (20, "/compare?ids=1,2"),
            (30, "/cart"),
            (40, "/checkout/step-1"),
            (50, "/checkout/confirmation"),
        ]
    )
    assert progressed == [True, True, True, True, False, True]
    assert STAGE_ORDER[state.furthest] == "convert"
    assert state.regressions == 0 and state.skipped == 0 and state.revisits == 0
    assert state.n_pages == 6


def test_regression_decide_to_evaluate_counts_one() -> None:
    state, progressed = walk([(0, "/products/1"), (10, "/cart"), (20, "/returns")])
    assert progressed == [True, True, False]
    assert state.regressions == 1
    assert state.stage == "evaluate"
    assert STAGE_ORDER[state.furthest] == "decide"


def test_each_step_back_is_one_regression() -> None:
    state, _ = walk(
        [
            (0, "/products/1"),
            (10, "/cart"),
            (20, "/reviews"),
            (30, "/products/2"),
            (40, "/products/3"),
        ]
    )
    assert state.regressions == 2


def test_going_forward_again_below_the_furthest_is_neither() -> None:
    state, progressed = walk([(0, "/products/1"), (10, "/cart"), (20, "/reviews"), (30, "/faq")])
    assert progressed[2:] == [False, False]
    assert state.regressions == 1


def test_skipped_stages_discover_to_decide_skips_two() -> None:
    state, progressed = walk([(0, "/"), (10, "/cart")])
    assert progressed == [True, True]
    assert state.skipped == 2
    assert STAGE_ORDER[state.furthest] == "decide"


def test_first_page_skips_nothing() -> None:
    state, _ = walk([(0, "/cart")])
    assert state.skipped == 0 and STAGE_ORDER[state.furthest] == "decide"


def test_revisits_count_pages_seen_before() -> None:
    state, _ = walk(
        [
            (0, "/products/1"),
            (10, "/products/2"),
            (20, "/products/1"),
            (30, "/products/2?ref=x"),
            (40, "/products/3"),
        ]
    )
    assert state.revisits == 2


@pytest.mark.parametrize("support_page", ["/support", "/account"])
def test_support_pages_are_neither_progress_nor_regression(support_page: str) -> None:
    state, progressed = walk(
        [(0, "/products/1"), (5, "/reviews"), (10, "/cart"), (20, support_page), (30, "/cart")]
    )
    assert progressed == [True, True, True, False, False]
    assert state.regressions == 0 and state.skipped == 0
    assert STAGE_ORDER[state.furthest] == "decide"
    assert state.stage_pages[STAGE_INDEX["support"]] == 1


def test_support_as_first_page_reaches_no_stage() -> None:
    state, progressed = walk([(0, "/support")])
    assert progressed == [False]
    assert state.furthest == -1 and state.stage == "support"


def test_stage_pages_are_counted() -> None:
    state, _ = walk([(0, "/products/1"), (10, "/products/2"), (20, "/cart"), (30, "/reviews")])
    assert state.stage_pages == [0, 2, 1, 1, 0, 0]


def test_stage_time_with_one_page_per_stage() -> None:
    state, _ = walk([(0, "/products/1"), (20, "/compare?ids=1,2"), (50, "/cart")])
    JourneyTracker(CFG).close_stage_time(state, T0 + 90_000)
    assert state.stage_ms == [0, 20_000, 30_000, 40_000, 0, 0]


def test_stage_time_with_several_pages_in_one_stage() -> None:
    state, _ = walk(
        [
            (0, "/products/1"),
            (20, "/compare?ids=1,2"),
            (50, "/cart"),
            (60, "/checkout/step-1"),
            (70, "/checkout/step-2"),
        ]
    )
    JourneyTracker(CFG).close_stage_time(state, T0 + 90_000)
    assert state.stage_ms == [0, 20_000, 30_000, 40_000, 0, 0]


def test_stage_time_when_the_session_starts_on_a_discover_page() -> None:
    state, _ = walk([(0, "/"), (10, "/products/1")])
    assert state.stage_ms[STAGE_INDEX["discover"]] == 10_000


def test_detector_stage_time_from_a_landing_page() -> None:
    d = Driver()
    d.send("page_view", 0, "/lp/spring-sale")
    d.send("page_view", 15_000, "/products/1")
    assert d.state is not None
    assert d.state.stage_ms[STAGE_INDEX["discover"]] == 15_000


def test_close_stage_time_is_idempotent_at_the_same_time() -> None:
    state, _ = walk([(0, "/products/1"), (20, "/cart")])
    tracker = JourneyTracker(CFG)
    tracker.close_stage_time(state, T0 + 50_000)
    tracker.close_stage_time(state, T0 + 50_000)
    assert state.stage_ms[STAGE_INDEX["decide"]] == 30_000


def test_close_stage_time_before_any_page_does_nothing() -> None:
    state = SessionState("s")
    JourneyTracker(CFG).close_stage_time(state, T0)
    assert state.stage_ms == [0] * 6


def test_mark_progress_moves_forward_only_and_rearms_stall() -> None:
    state = SessionState("s", last_progress=T0 + 5000, stall_fired=True)
    JourneyTracker.mark_progress(state, T0 + 1000)
    assert state.last_progress == T0 + 5000 and not state.stall_fired
    JourneyTracker.mark_progress(state, T0 + 9000)
    assert state.last_progress == T0 + 9000


def test_leave_describes_the_page_left() -> None:
    parser, tracker, state = PARSER, JourneyTracker(CFG), SessionState("s")

    def pv(t: int, page: str) -> Event:
        return parser.parse({"session_id": "s", "ts": T0 + t, "type": "page_view", "page": page})

    assert tracker.leave(state, pv(0, "/products/1")) is None
    tracker.enter(state, pv(0, "/products/1"))
    tracker.enter(state, pv(7000, "/products/2"))
    state.form_open = True
    leave = tracker.leave(state, pv(9000, "/products/1"))
    assert leave is not None
    assert (leave.page, leave.page_type, leave.dwell_ms) == ("/products/2", "product", 2000)
    assert leave.back_to_previous and leave.had_form
    other = tracker.leave(state, pv(9000, "/products/3"))
    assert other is not None and not other.back_to_previous


def test_custom_stage_map() -> None:
    stage_map = dict(DEFAULT_STAGE_MAP, faq="decide", cart="evaluate", support="consider")
    cfg = DetectorConfig(stage_map=stage_map)
    tracker = JourneyTracker(cfg)
    assert tracker.stage_of("faq") == "decide" and tracker.stage_of("cart") == "evaluate"
    state, progressed = walk(
        [(0, "/products/1"), (10, "/faq"), (20, "/cart"), (30, "/support")], config=cfg
    )
    assert progressed == [True, True, False, False]
    assert state.skipped == 1  # consider -> decide skips evaluate
    assert state.regressions == 2  # decide -> evaluate, evaluate -> consider
    assert state.stage == "consider"


def test_custom_stage_map_is_validated() -> None:
    with pytest.raises(ValueError, match="stage_map"):
        DetectorConfig(stage_map={"cart": "basket"}).validate()
