"""Every friction signal at its boundaries, through the real detector."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.rules import friction_score
from detectors.signals import SIGNAL_WEIGHTS, RageClick
from tests.builders import T0, Driver

PRODUCT = "/products/7"


def on_page(page: str = PRODUCT, config: DetectorConfig | None = None) -> Driver:
    d = Driver(config)
    d.send("page_view", 0, page)
    return d


# ------------------------------------------------------------------ rage click
def clicks(
    d: Driver,
    times: list[int],
    xs: list[float] | None = None,
    target: str = "button#pay",
    **props: Any,
) -> None:
    for i, t in enumerate(times):
        extra = dict(props)
        if xs is not None:
            extra.update(x=xs[i], y=200)
        d.send("click", t, target=target, **extra)


def test_rage_click_at_the_gap_and_distance_boundaries_fires_once() -> None:
    d = on_page()
    clicks(d, [1000, 2000, 3000], xs=[100, 130, 160])
    assert d.hit_times("rage_click") == [3000]
    assert d.count("rage_click") == 1


def test_rage_click_diagonal_distance_of_exactly_30px() -> None:
    d = on_page()
    for i, t in enumerate([1000, 1500, 2000]):
        d.send("click", t, x=100 + 18 * i, y=100 + 24 * i, target="button#pay")
    assert d.count("rage_click") == 1


def test_rage_click_gap_of_1001ms_breaks_the_burst() -> None:
    d = on_page()
    clicks(d, [1000, 2001, 3002], xs=[100, 100, 100])
    assert d.count("rage_click") == 0
    d2 = on_page()
    clicks(d2, [1000, 2000, 3001], xs=[100, 100, 100])
    assert d2.count("rage_click") == 0


def test_rage_click_distance_of_31px_breaks_the_burst() -> None:
    d = on_page()
    clicks(d, [1000, 1200, 1400], xs=[100, 131, 162])
    assert d.count("rage_click") == 0


def test_rage_click_different_target_breaks_the_burst() -> None:
    d = on_page()
    d.send("click", 1000, x=100, y=100, target="button#pay")
    d.send("click", 1200, x=100, y=100, target="button#pay")
    d.send("click", 1400, x=100, y=100, target="button#cancel")
    d.send("click", 1600, x=100, y=100, target="button#pay")
    assert d.count("rage_click") == 0


def test_two_clicks_are_not_rage() -> None:
    d = on_page()
    clicks(d, [1000, 1100], xs=[100, 100])
    assert d.count("rage_click") == 0


def test_long_burst_fires_once() -> None:
    d = on_page()
    clicks(d, [1000 + 150 * i for i in range(8)], xs=[100] * 8)
    assert d.hit_times("rage_click") == [1300]
    assert d.count("rage_click") == 1


def test_long_burst_beyond_the_buffer_cap_still_fires_once() -> None:
    d = on_page()
    clicks(d, [1000 + 150 * i for i in range(20)], xs=[100] * 20)
    assert d.count("rage_click") == 1


def test_a_second_burst_after_a_pause_fires_again() -> None:
    d = on_page()
    clicks(d, [1000, 1200, 1400], xs=[100] * 3)
    clicks(d, [5000, 5200, 5400], xs=[100] * 3)
    assert d.hit_times("rage_click") == [1400, 5400]


@pytest.mark.parametrize(
    "target", ["button.qty-plus", "td.datepicker-day", "button.carousel-next", "p.description"]
)
def test_ignored_targets_never_fire(target: str) -> None:
    d = on_page()
    clicks(d, [1000 + 200 * i for i in range(8)], xs=[300] * 8, target=target)
    assert d.count("rage_click") == 0
    assert RageClick(DetectorConfig()).ignored(target)


@pytest.mark.parametrize("target", ["button#pay", "button.add-to-cart", "a.nav-link", "div.card"])
def test_ordinary_targets_are_not_ignored(target: str) -> None:
    assert not RageClick(DetectorConfig()).ignored(target)


@pytest.mark.parametrize("target", ["button#update-cart", "button#validate-card"])
def test_rage_on_update_and_validate_buttons_is_detected(target: str) -> None:
    d = on_page("/cart")
    clicks(d, [1000, 1200, 1400], xs=[100] * 3, target=target)
    assert d.count("rage_click") == 1


def test_text_selection_clicks_never_count() -> None:
    d = on_page()
    clicks(d, [1000 + 100 * i for i in range(6)], xs=[200] * 6, target="div.card", selection=True)
    assert d.count("rage_click") == 0


def test_ignored_click_interrupts_a_burst() -> None:
    d = on_page()
    d.send("click", 1000, x=100, y=100, target="button#pay")
    d.send("click", 1200, x=100, y=100, target="button#pay")
    d.send("click", 1300, x=100, y=100, target="button.qty-plus")
    d.send("click", 1400, x=100, y=100, target="button#pay")
    assert d.count("rage_click") == 0


def test_clicks_without_coordinates_on_the_same_target_count() -> None:
    d = on_page()
    clicks(d, [1000, 1300, 1600], target="button#pay")
    assert d.count("rage_click") == 1


def test_clicks_without_coordinates_or_target_count() -> None:
    d = on_page()
    for t in (1000, 1300, 1600):
        d.send("click", t)
    assert d.count("rage_click") == 1


def test_rage_min_clicks_override_moves_the_boundary() -> None:
    cfg = DetectorConfig().with_overrides(rage_min_clicks=4)
    d = on_page(config=cfg)
    clicks(d, [1000, 1200, 1400], xs=[100] * 3)
    assert d.count("rage_click") == 0
    d.send("click", 1600, x=100, y=200, target="button#pay")
    assert d.hit_times("rage_click") == [1600]


# -------------------------------------------------------- dead and error click
@pytest.mark.parametrize(
    ("props", "fires"),
    [({"dead": True}, 1), ({"dead": False}, 0), ({}, 0), ({"dead": "true"}, 0), ({"dead": 1}, 0)],
)
def test_dead_click(props: dict[str, Any], fires: int) -> None:
    d = on_page()
    d.send("click", 1000, x=10, y=10, target="button#pay", **props)
    assert d.count("dead_click") == fires


def test_every_dead_click_counts() -> None:
    d = on_page()
    for t in (1000, 5000, 9000):
        d.send("click", t, x=10, y=10, target="button#pay", dead=True)
    assert d.count("dead_click") == 3


def test_error_within_1000ms_of_a_click_fires_once() -> None:
    d = on_page()
    d.send("click", 1000, x=10, y=10, target="button#pay")
    d.send("error", 1800, message="TypeError")
    d.send("error", 2000, message="TypeError again")
    assert d.hit_times("error_click") == [1800]
    assert d.count("error_click") == 1
    assert d.state is not None and d.state.errors == 2


def test_error_1001ms_after_a_click_is_not_an_error_click() -> None:
    d = on_page()
    d.send("click", 1000, x=10, y=10, target="button#pay")
    d.send("error", 2001, message="TypeError")
    assert d.count("error_click") == 0


def test_error_without_a_click_is_not_an_error_click() -> None:
    d = on_page()
    d.send("error", 1000, message="TypeError")
    assert d.count("error_click") == 0


def test_each_click_can_cause_one_error_click() -> None:
    d = on_page()
    for base in (1000, 10_000):
        d.send("click", base, x=10, y=10, target="button#pay")
        d.send("error", base + 300, message="TypeError")
    assert d.count("error_click") == 2


# ---------------------------------------------------------------------- u-turn
@pytest.mark.parametrize(("dwell", "fires"), [(5000, 1), (4000, 1), (5001, 0)])
def test_u_turn_boundary(dwell: int, fires: int) -> None:
    d = Driver()
    d.send("page_view", 0, "/category/shoes")
    d.send("page_view", 30_000, "/products/1")
    d.send("page_view", 30_000 + dwell, "/category/shoes")
    assert d.count("u_turn") == fires


def test_quick_leave_to_a_different_page_is_not_a_u_turn() -> None:
    d = Driver()
    d.send("page_view", 0, "/category/shoes")
    d.send("page_view", 30_000, "/products/1")
    d.send("page_view", 31_000, "/products/2")
    assert d.count("u_turn") == 0


# ------------------------------------------------------------------- page loop
def test_third_visit_within_window_is_a_loop() -> None:
    d = Driver()
    for i, page in enumerate(["/products/1", "/category/shoes"] * 2 + ["/products/1"]):
        d.send("page_view", 60_000 * i, page)
    assert d.hit_times("page_loop") == [240_000]


def test_a_loop_fires_once_per_page_within_the_window() -> None:
    d = Driver()
    for i, page in enumerate(["/products/1", "/category/shoes"] * 4):
        d.send("page_view", 30_000 * i, page)
    # /products/1 at 0, 60, 120, 180 s and /category/shoes at 30, 90, 150, 210 s
    assert d.hit_times("page_loop") == [120_000, 150_000]


def test_two_visits_are_not_a_loop() -> None:
    d = Driver()
    for i, page in enumerate(["/products/1", "/category/shoes", "/products/1", "/cart"]):
        d.send("page_view", 60_000 * i, page)
    assert d.count("page_loop") == 0


@pytest.mark.parametrize(("last", "fires"), [(600_000, 1), (600_001, 0)])
def test_loop_window_boundary(last: int, fires: int) -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("page_view", 60_000, "/category/shoes")
    d.send("page_view", 300_000, "/products/1")
    d.send("page_view", 360_000, "/category/bags")
    d.send("page_view", last, "/products/1")
    assert d.count("page_loop") == fires


def test_loop_ignores_query_string() -> None:
    d = Driver()
    for i, page in enumerate(
        ["/search?q=a", "/products/1", "/search?q=b", "/products/2", "/search?q=c"]
    ):
        d.send("page_view", 60_000 * i, page)
    assert d.count("page_loop") == 1


# --------------------------------------------------------------- scroll thrash
def scrolls(d: Driver, points: list[tuple[int, float]]) -> None:
    for t, pct in points:
        d.send("scroll", t, scroll_pct=pct)


def test_three_reversals_within_2s_fire() -> None:
    d = on_page()
    scrolls(d, [(1000, 10), (1400, 30), (1800, 10), (2200, 30), (2600, 10)])
    assert d.hit_times("scroll_thrash") == [2600]


def test_three_reversals_within_exactly_2s_fire() -> None:
    d = on_page()
    scrolls(d, [(0, 10), (500, 30), (1000, 10), (2000, 30), (3000, 10)])
    assert d.count("scroll_thrash") == 1


def test_three_reversals_over_more_than_2s_do_not_fire() -> None:
    d = on_page()
    scrolls(d, [(0, 10), (500, 30), (1000, 10), (2000, 30), (3001, 10)])
    assert d.count("scroll_thrash") == 0
    assert d.state is not None and d.state.page_reversals == 3


def test_moves_under_one_point_are_jitter() -> None:
    d = on_page()
    scrolls(d, [(1000 + 100 * i, 50.0 + (0.9 if i % 2 else 0.0)) for i in range(20)])
    assert d.count("scroll_thrash") == 0
    assert d.state is not None and d.state.page_reversals == 0


def test_reading_scroll_with_one_glance_back_does_not_fire() -> None:
    d = on_page()
    pcts = [0, 10, 20, 30, 40, 35, 45, 55, 65, 75, 85, 95, 100]
    scrolls(d, [(1000 + 300 * i, p) for i, p in enumerate(pcts)])
    assert d.count("scroll_thrash") == 0
    assert d.state is not None and d.state.page_reversals == 2


def test_scroll_reversals_reset_on_a_new_page() -> None:
    d = on_page()
    scrolls(d, [(1000, 10), (1200, 30), (1400, 10), (1600, 30)])
    d.send("page_view", 1700, "/products/8")
    scrolls(d, [(1800, 10), (1900, 30)])
    assert d.count("scroll_thrash") == 0


# --------------------------------------------------------------- form friction
def test_each_form_error_fires() -> None:
    d = on_page("/checkout/step-1")
    for t in (1000, 2000, 3000):
        d.send("form_error", t, field="card_number")
    assert d.count("form_error") == 3


def test_third_focus_of_the_same_field_fires_once() -> None:
    d = on_page("/checkout/step-1")
    for t in (1000, 2000):
        d.send("form_focus", t, field="email")
    d.send("form_focus", 2500, field="zip")
    assert d.count("form_refocus") == 0
    d.send("form_focus", 3000, field="email")
    d.send("form_focus", 4000, field="email")
    assert d.hit_times("form_refocus") == [3000]


def test_focus_then_leave_without_input_is_not_abandonment() -> None:
    d = on_page("/search?q=lamp")
    d.send("form_focus", 1000, field="q")
    d.send("page_view", 5000, "/products/1")
    assert d.count("form_abandon") == 0


def test_input_then_leave_without_submit_is_abandonment() -> None:
    d = on_page("/checkout/step-1")
    d.send("form_focus", 1000, field="email")
    d.send("form_input", 2000, field="email")
    d.send("page_view", 9000, "/cart")
    assert d.hit_times("form_abandon") == [9000]


def test_input_submit_then_leave_is_not_abandonment() -> None:
    d = on_page("/checkout/step-1")
    d.send("form_focus", 1000, field="email")
    d.send("form_input", 2000, field="email")
    d.send("form_submit", 3000, form="checkout-1")
    d.send("page_view", 9000, "/checkout/step-2")
    assert d.count("form_abandon") == 0


def test_open_form_at_exit_counts_as_abandonment() -> None:
    d = on_page("/checkout/step-1")
    d.send("form_input", 2000, field="email")
    d.send("exit", 3000)
    assert d.count("form_abandon") == 1


# ----------------------------------------------------------------------- stall
def keep_active(d: Driver, start: int, stop: int, every: int = 30_000) -> None:
    for t in range(start, stop + 1, every):
        d.send("custom", t, tick=t)


def test_stall_fires_once_when_active_without_progress_in_evaluate() -> None:
    d = on_page("/compare?ids=1,2")
    keep_active(d, 30_000, 600_000)
    assert d.hit_times("stall") == [120_000]
    assert d.count("stall") == 1


def test_stall_in_decide_stage() -> None:
    d = on_page("/cart")
    keep_active(d, 30_000, 300_000)
    assert d.hit_times("stall") == [120_000]


def test_no_stall_in_consider_stage() -> None:
    d = on_page("/products/1")
    keep_active(d, 30_000, 600_000)
    assert d.count("stall") == 0


def test_no_stall_when_inactive() -> None:
    d = on_page("/compare?ids=1,2")
    keep_active(d, 61_000, 610_000, every=61_000)
    assert d.count("stall") == 0


def test_forward_progress_resets_the_stall_clock() -> None:
    d = on_page("/compare?ids=1,2")
    keep_active(d, 30_000, 60_000)
    d.send("add_to_cart", 90_000, sku="sku-1")
    keep_active(d, 120_000, 300_000)
    assert d.hit_times("stall") == [210_000]


def test_stall_does_not_count_as_friction() -> None:
    d = on_page("/compare?ids=1,2")
    keep_active(d, 30_000, 300_000)
    assert d.count("stall") == 1
    assert SIGNAL_WEIGHTS["stall"] == 0
    assert d.state is not None and d.state.friction_recent == []


# ------------------------------------------------------------------- slow page
@pytest.mark.parametrize(("load_ms", "fires"), [(3001, 1), (3000, 0), (3000.5, 1), (200, 0)])
def test_slow_page_boundary(load_ms: float, fires: int) -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1", load_ms=load_ms)
    assert d.count("slow_page") == fires


# ------------------------------------------------------------ trust touchpoint
def test_returns_after_cart_is_a_trust_touchpoint_with_no_friction_weight() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("page_view", 30_000, "/cart")
    d.send("page_view", 60_000, "/returns")
    assert d.hit_times("trust_touchpoint") == [60_000]
    assert d.state is not None
    assert friction_score(d.state, T0 + 60_000, 120_000) == 0.0
    assert d.state.friction_recent == [] and not d.state.page_friction


def test_returns_before_any_cart_is_not_a_trust_touchpoint() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    d.send("page_view", 30_000, "/returns")
    d.send("page_view", 60_000, "/shipping")
    assert d.count("trust_touchpoint") == 0


# --------------------------------------------------------- friction pile-up
def test_friction_pile_up_raises_one_trust_loss_alert() -> None:
    d = on_page()
    for t in (1000, 3000, 5000):  # more than 1 s apart: no rage burst
        d.send("click", t, x=10, y=10, target="button#buy", dead=True)
        assert not d.alerts()
    d.send("click", 7000, x=10, y=10, target="button#buy", dead=True)
    assert d.all_hits() == ["dead_click"] * 4
    alerts = d.alerts("trust_loss")
    assert len(alerts) == 1 and alerts[0].rule == "friction_pileup"
    assert alerts[0].score == pytest.approx(4.0)


def test_friction_outside_the_window_does_not_pile_up() -> None:
    d = on_page()
    for i in range(6):
        d.send("click", 1000 + 61_000 * i, x=10, y=10, target="button#buy", dead=True)
    assert d.count("dead_click") == 6
    assert not d.alerts()


# ------------------------------------------------------------ harmless patterns
def harmless_session() -> Driver:
    d = Driver()
    d.send("page_view", 0, "/")
    d.send("page_view", 10_000, "/products/7")
    for i in range(5):  # image carousel
        d.send("click", 12_000 + 300 * i, x=500, y=300, target="button.carousel-next")
    for i in range(3):  # triple-click to select the description
        d.send("click", 20_000 + 90 * i, x=400 + i, y=500, target="p.description", selection=i == 2)
    d.send("click", 25_000, x=600, y=600, target="div.card")  # a double click
    d.send("click", 25_120, x=600, y=600, target="div.card")
    d.send("add_to_cart", 30_000, sku="sku-7")
    d.send("page_view", 35_000, "/cart")
    for i in range(5):  # quantity stepper
        d.send("click", 40_000 + 200 * i, x=700, y=400, target="button.qty-plus")
    d.send("page_view", 50_000, "/checkout/step-1")
    for i in range(5):  # delivery date picker
        d.send("click", 52_000 + 250 * i, x=300, y=600, target="td.datepicker-day")
    d.send("form_focus", 60_000, field="email")  # one typo, corrected
    d.send("form_input", 62_000, field="email")
    d.send("form_error", 63_000, field="email", error="invalid_format")
    d.send("form_focus", 66_000, field="email")
    d.send("form_input", 67_000, field="email")
    d.send("form_submit", 69_000, form="checkout-1")
    d.send("checkout_step", 69_500, step=1)
    d.send("page_view", 72_000, "/checkout/step-2")
    return d


def test_harmless_patterns_raise_no_alert_and_no_rage() -> None:
    d = harmless_session()
    assert d.all_hits() == ["form_error"]
    assert d.count("rage_click") == 0
    assert not d.alerts("trust_loss")
    assert not d.alerts()
    assert d.state is not None and d.state.outcome is None


@pytest.mark.parametrize(
    ("target", "gap", "n", "selection"),
    [
        ("button.qty-plus", 200, 5, False),
        ("button.quantity-minus", 150, 6, False),
        ("td.datepicker-day", 250, 5, False),
        ("button.datepicker-next", 250, 4, False),
        ("button.carousel-next", 300, 5, False),
        ("a.pagination", 300, 4, False),
        ("span.title", 90, 3, False),
        ("div.card", 120, 2, False),
        ("div.article-body", 90, 3, True),
    ],
)
def test_each_harmless_click_pattern_is_silent(
    target: str, gap: int, n: int, selection: bool
) -> None:
    d = on_page()
    for i in range(n):
        d.send("click", 1000 + gap * i, x=300 + i, y=300, target=target, selection=selection)
    assert d.all_hits() == []


def test_clicks_the_page_reacted_to_or_excluded_are_no_rage() -> None:
    from detectors.events import EventParser
    from detectors.session import SessionState
    from detectors.signal_protocol import Step

    cfg = DetectorConfig()
    parser = EventParser(cfg)

    def burst(props: dict[str, object]) -> int:
        state, rage = SessionState("s"), RageClick(cfg)
        hits = 0
        for t in (0, 250, 500, 750):
            event = parser.parse(
                {
                    "session_id": "s",
                    "ts": T0 + t,
                    "type": "click",
                    "props": {"x": 10, "y": 10, "target": "h:1f2e3d4c", **props},
                }
            )
            hits += len(rage.observe(state, Step("event", event.ts, event)))
        return hits

    assert burst({}) == 1  # a hashed target, nothing known: a rage click
    assert burst({"dead": True}) == 1
    assert burst({"dead": False, "reaction_ms": 40}) == 0  # a working stepper
    assert burst({"ignore_rage": True}) == 0
