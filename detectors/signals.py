"""Friction signals computed from events alone, and their registry.

Each signal is a small class with the one method of the
:class:`~detectors.signal_protocol.Signal` protocol, ``observe(state, step)``,
and its registry rows (``specs``: index, weight, words, cause, trust feature,
settings). Every threshold is a :class:`~detectors.config.DetectorConfig`
field; the class docstrings say where the default comes from. Adding a signal
touches this file only: write the class and list it in :data:`SIGNAL_TYPES`.

Signals must not fire on common, harmless patterns. The tests replay
steppers, date pickers, carousels, triple-click text selection, double
clicks, a single typo in a form and ordinary reading scrolls, and assert
silence.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, ClassVar

from detectors.config import DELIBERATION_STAGES, EVENT_TYPES, STAGE_INDEX, DetectorConfig
from detectors.signal_protocol import CLOSE, LEAVE, Signal, SignalHit, SignalSpec, Step

if TYPE_CHECKING:  # annotations only: the session state sizes its counts from the registry
    from detectors.session import SessionState

FIELD_FOCUS_CAP = 8
CLICK_BURST_CAP = 8
TARGET_CAP = 64

_PAGE_VIEW = frozenset({"page_view"})
Specs = tuple[SignalSpec, ...]


def _hit(name: str, value: float, ts: int) -> SignalHit:
    return SignalHit(name, value, ts, SIGNAL_WEIGHTS[name])


class RageClick:
    """Repeated fast clicks on one spot. Hit value: clicks in the burst.

    A burst is at least ``rage_min_clicks`` clicks, each within
    ``rage_max_gap_ms`` of the one before and within ``rage_max_distance_px``
    of it, on the same ``props.target`` when both clicks name one. The
    defaults (3 clicks, 1000 ms, 30 px) are the consensus of PostHog,
    Datadog RUM and Mixpanel. Clicks on targets matching
    ``rage_ignore_targets`` (steppers, date pickers, carousels, pagination,
    text) and clicks that select text (``props.selection``) never count: those
    are the patterns users of the published rules complained about. Nor do
    clicks the client saw the page react to (``props.dead`` false: the
    browser tracker's probe saw a DOM change, navigation, request, scroll or
    selection in time, as a working stepper or date picker does however fast
    it is clicked), or that the page excludes (``props.ignore_rage``: the
    element's ``data-disengage-ignore="rage"``).
    A burst fires once, however long it goes on. Weight 2: a rage-click burst
    is the clearest sign of a broken UI.

    >>> from detectors.events import EventParser
    >>> from detectors.session import SessionState
    >>> cfg = DetectorConfig(); p = EventParser(cfg); s = SessionState("s")
    >>> rc = RageClick(cfg)
    >>> def click(t, target):
    ...     e = p.parse({"session_id": "s", "ts": 1700000000000 + t, "type": "click",
    ...                  "props": {"x": 10, "y": 10, "target": target}})
    ...     return Step("event", e.ts, e)
    >>> [len(rc.observe(s, click(t, "button#pay"))) for t in (0, 300, 600, 900)]
    [0, 0, 1, 0]
    >>> s = SessionState("s")
    >>> [len(rc.observe(s, click(t, "button.qty-plus"))) for t in (0, 300, 600, 900)]
    [0, 0, 0, 0]
    """

    specs: ClassVar[Specs] = (SignalSpec(
        "rage_click", 0, 2.0, "broken_element",
        "rage-click burst (repeated fast clicks on one spot)",
        "rage-click bursts (repeated fast clicks on one spot)", "rage_click",
        ("rage_min_clicks", "rage_max_gap_ms", "rage_max_distance_px", "rage_ignore_targets"),
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = frozenset({"click"})

    def __init__(self, config: DetectorConfig) -> None:
        self.min_clicks = config.rage_min_clicks
        self.max_gap = config.rage_max_gap_ms
        self.max_dist = config.rage_max_distance_px
        self.ignore = re.compile("|".join(f"(?:{rx})" for rx in config.rage_ignore_targets), re.I)

    def ignored(self, target: str) -> bool:
        """True when fast repeated clicks on ``target`` are normal."""
        return bool(target) and self.ignore.search(target) is not None

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        event = step.event
        if event is None:
            return []
        target = (event.prop_str("target") or "")[:TARGET_CAP]
        props = event.props
        reacted = props.get("dead") is False or props.get("ignore_rage") is True
        if reacted or self.ignored(target) or props.get("selection"):
            state.click_burst.clear()
            state.rage_fired = False
            return []
        x = event.prop_float("x")
        y = event.prop_float("y")
        fx = math.nan if x is None else x
        fy = math.nan if y is None else y
        burst = state.click_burst
        if burst and not self._continues(burst[-1], event.ts, fx, fy, target):
            burst.clear()
            state.rage_fired = False
        burst.append((event.ts, fx, fy, target))
        if len(burst) > CLICK_BURST_CAP:
            del burst[0]
        if len(burst) >= self.min_clicks and not state.rage_fired:
            state.rage_fired = True
            return [_hit("rage_click", float(len(burst)), event.ts)]
        return []

    def _continues(
        self, last: tuple[int, float, float, str], ts: int, x: float, y: float, target: str
    ) -> bool:
        last_ts, lx, ly, last_target = last
        if ts - last_ts > self.max_gap or ts < last_ts:
            return False
        if target and last_target and target != last_target:
            return False
        if not any(math.isnan(v) for v in (x, y, lx, ly)):
            return math.hypot(x - lx, y - ly) <= self.max_dist
        return True


class DeadOrErrorClick:
    """A click the client reports as dead (``props.dead``; hit value 1), or a
    click followed within ``error_click_window_ms`` (1 s) by an ``error``
    event (hit value: seconds from the click to the error). One second is the
    window session-replay tools use to tie a JS error to the interaction that
    caused it (Sentry's and LogRocket's breadcrumbs).
    """

    specs: ClassVar[Specs] = (
        SignalSpec(
            "dead_click", 1, 1.0, "broken_element",
            "click that did nothing", "clicks that did nothing", "dead_or_error_click",
        ),
        SignalSpec(
            "error_click", 2, 1.5, "broken_element",
            "click followed by an error", "clicks followed by an error", "dead_or_error_click",
            ("error_click_window_ms",),
        ),
    )  # fmt: skip
    observes: ClassVar[frozenset[str]] = frozenset({"click", "error"})

    def __init__(self, config: DetectorConfig) -> None:
        self.window = config.error_click_window_ms

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        event = step.event
        if event is None:
            return []
        if event.type == "click":
            state.last_click_ts = event.ts
            state.last_click_errored = False
            return [_hit("dead_click", 1.0, event.ts)] if event.props.get("dead") is True else []
        gap = event.ts - state.last_click_ts
        if state.last_click_ts and 0 <= gap <= self.window and not state.last_click_errored:
            state.last_click_errored = True
            return [_hit("error_click", gap / 1000.0, event.ts)]
        return []


class ScrollThrash:
    """``thrash_min_reversals`` (3) scroll-direction reversals within
    ``thrash_window_ms`` (2 s); hit value: the reversals. Reading produces an
    occasional reversal; three in two seconds is searching for something that
    is not there (the "thrashed cursor"/"scroll rage" of FullStory and
    Contentsquare). Moves under 1 percentage point are jitter and ignored.
    """

    specs: ClassVar[Specs] = (SignalSpec(
        "scroll_thrash", 5, 0.5, "navigation",
        "burst of rapid up-and-down scrolling", "bursts of rapid up-and-down scrolling",
        "scroll_thrash", ("thrash_min_reversals", "thrash_window_ms"),
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = frozenset({"scroll"})

    def __init__(self, config: DetectorConfig) -> None:
        self.min_reversals = config.thrash_min_reversals
        self.window = config.thrash_window_ms

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        pct = None if step.event is None else step.event.prop_float("scroll_pct")
        if pct is None:
            return []
        pct = min(max(pct, 0.0), 100.0)
        state.page_max_scroll = max(state.page_max_scroll, pct)
        if state.scroll_pct < 0:
            state.scroll_pct = pct
            return []
        delta = pct - state.scroll_pct
        if abs(delta) < 1.0:
            return []
        state.scroll_pct = pct
        direction = 1 if delta > 0 else -1
        reversed_ = state.scroll_dir != 0 and direction != state.scroll_dir
        state.scroll_dir = direction
        if not reversed_:
            return []
        state.page_reversals += 1
        recent = [t for t in state.reversal_ts if step.ts - t <= self.window]
        recent.append(step.ts)
        if len(recent) >= self.min_reversals:
            state.reversal_ts = []
            return [_hit("scroll_thrash", float(len(recent)), step.ts)]
        state.reversal_ts = recent[-self.min_reversals :]
        return []


class UTurn:
    """Leaving a page within ``uturn_max_dwell_ms`` (5 s) of arriving, back to
    the page visited just before it; hit value: dwell seconds. Five seconds is
    the lower end of the "short click" / pogo-sticking dwell used in
    search-quality studies; a reader needs longer than that to judge a page.
    """

    specs: ClassVar[Specs] = (SignalSpec(
        "u_turn", 3, 0.5, "navigation", "quick return to the previous page",
        "quick returns to the previous page", "u_turn", ("uturn_max_dwell_ms",),
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = frozenset({LEAVE})

    def __init__(self, config: DetectorConfig) -> None:
        self.max_dwell = config.uturn_max_dwell_ms

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        leave = step.leave
        if leave is not None and leave.back_to_previous and leave.dwell_ms <= self.max_dwell:
            return [_hit("u_turn", leave.dwell_ms / 1000.0, step.ts)]
        return []


class FormFriction:
    """Form trouble: every ``form_error``; the same field focused
    ``form_refocus_min`` (3) times on one page (hit value: the focuses); and a
    form typed into (``form_input``) but not sent (``form_submit``) when the
    visitor leaves the page or the session ends without the goal. Focus alone
    does not open a form: clicking into a search box and moving on is normal
    (Zuko and Hotjar count a form as started only on interaction).
    """

    specs: ClassVar[Specs] = (
        SignalSpec(
            "form_error", 6, 1.0, "form_trouble",
            "form validation error", "form validation errors", "form_trouble",
        ),
        SignalSpec(
            "form_refocus", 7, 0.5, "form_trouble", "form field re-entered again and again",
            "form fields re-entered again and again", "form_trouble", ("form_refocus_min",),
        ),
        SignalSpec(
            "form_abandon", 8, 1.0, "form_trouble",
            "form started and left unsent", "forms started and left unsent", "form_trouble",
        ),
    )  # fmt: skip
    observes: ClassVar[frozenset[str]] = frozenset(
        {"form_focus", "form_input", "form_error", "form_submit", LEAVE, CLOSE}
    )

    def __init__(self, config: DetectorConfig) -> None:
        self.refocus_min = config.form_refocus_min

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        event = step.event
        if step.moment == LEAVE:
            had_form = step.leave is not None and step.leave.had_form
            return [_hit("form_abandon", 1.0, step.ts)] if had_form else []
        if event is None:  # the close
            abandoned = state.form_open and not step.converted
            return [_hit("form_abandon", 1.0, step.ts)] if abandoned else []
        if event.type == "form_error":
            return [_hit("form_error", 1.0, event.ts)]
        if event.type == "form_input":
            state.form_open = True
            return []
        if event.type == "form_submit":
            state.form_open = False
            state.field_focus.clear()
            return []
        name = (event.prop_str("field") or "?")[:TARGET_CAP]
        if name not in state.field_focus and len(state.field_focus) >= FIELD_FOCUS_CAP:
            return []
        count = state.field_focus.get(name, 0) + 1
        state.field_focus[name] = count
        if count == self.refocus_min:
            return [_hit("form_refocus", float(count), event.ts)]
        return []


class PageLoop:
    """The same page visited ``loop_min_visits`` (3) times within
    ``loop_window_ms`` (10 min); hit value: the visits. Three is the smallest
    count that is a loop rather than a back-and-forth; it fires once per page
    per window.
    """

    specs: ClassVar[Specs] = (SignalSpec(
        "page_loop", 4, 0.5, "navigation", "page visited in a loop",
        "pages visited in loops", "page_loop", ("loop_min_visits", "loop_window_ms"),
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = _PAGE_VIEW

    def __init__(self, config: DetectorConfig) -> None:
        self.min_visits = config.loop_min_visits
        self.window = config.loop_window_ms

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        key, ts = state.page_key, step.ts
        visits = sum(1 for k, t in state.page_history if k == key and ts - t <= self.window)
        return [_hit("page_loop", float(visits), ts)] if visits == self.min_visits else []


class TrustTouchpoint:
    """A visit to returns, shipping, reviews or pricing after the session
    reached the decide stage (basket or checkout); hit value 1. A hypothesis,
    not an alarm: weight 0 in the friction score; the trust model learns what
    it means.
    """

    PAGES = frozenset({"returns", "shipping", "reviews", "pricing"})
    DECIDE = STAGE_INDEX["decide"]  # "after reaching the basket"
    specs: ClassVar[Specs] = (SignalSpec(
        "trust_touchpoint", 11, 0.0, "unanswered_question",
        "visit to returns, shipping, reviews or pricing after reaching the basket",
        "visits to returns, shipping, reviews or pricing after reaching the basket",
        "trust_touchpoint",
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = _PAGE_VIEW

    def __init__(self, config: DetectorConfig) -> None:
        del config  # no setting: the pages and the stage are the definition

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        event = step.event
        if event is not None and event.page_type in self.PAGES and state.furthest >= self.DECIDE:
            return [_hit("trust_touchpoint", 1.0, step.ts)]
        return []


class SlowPage:
    """``props.load_ms`` above ``slow_page_ms`` (3000 ms; Google/SOASTA: 53%
    of mobile visits are abandoned when a page takes more than 3 s); hit
    value: the load time in ms."""

    specs: ClassVar[Specs] = (SignalSpec(
        "slow_page", 10, 1.0, "slow_page",
        "slow page load", "slow page loads", "slow_page", ("slow_page_ms",),
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = _PAGE_VIEW

    def __init__(self, config: DetectorConfig) -> None:
        self.limit = config.slow_page_ms

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        load = None if step.event is None else step.event.prop_float("load_ms")
        if load is not None and load > self.limit:
            return [_hit("slow_page", load, step.ts)]
        return []


class Stall:
    """No forward progress for ``stall_ms`` (2 min) while active (previous
    event at most ``active_gap_ms`` ago) in the evaluate or decide stage; hit
    value: seconds since the last progress. Fires once per progress period.
    It observes every event, after the other signals, so progress made by the
    event itself counts. A hesitation input, not friction (weight 0).
    """

    STAGES = DELIBERATION_STAGES
    specs: ClassVar[Specs] = (SignalSpec(
        "stall", 9, 0.0, "long_deliberation", "stall without progress",
        "stalls without progress", "stall", ("stall_ms", "active_gap_ms"),
    ),)  # fmt: skip
    observes: ClassVar[frozenset[str]] = EVENT_TYPES

    def __init__(self, config: DetectorConfig) -> None:
        self.stall_ms = config.stall_ms
        self.active_gap = config.active_gap_ms

    def observe(self, state: SessionState, step: Step) -> list[SignalHit]:
        if state.stall_fired or state.stage not in self.STAGES or step.gap_ms > self.active_gap:
            return []
        idle = step.ts - state.last_progress
        if idle >= self.stall_ms:
            state.stall_fired = True
            return [_hit("stall", idle / 1000.0, step.ts)]
        return []


#: The registered signals, in the order they observe a moment (their hits are
#: reported in this order): on a click the dead-click check runs before the
#: rage-click burst, and the stall check runs last, after every other signal.
SIGNAL_TYPES: tuple[type[Signal], ...] = (
    DeadOrErrorClick,
    RageClick,
    ScrollThrash,
    UTurn,
    FormFriction,
    PageLoop,
    TrustTouchpoint,
    SlowPage,
    Stall,
)

#: The registry: one row per signal name, in the order of
#: ``SessionState.signal_counts`` (a row's ``index``).
SIGNAL_REGISTRY: tuple[SignalSpec, ...] = tuple(
    sorted((spec for cls in SIGNAL_TYPES for spec in cls.specs), key=lambda spec: spec.index)
)
SIGNALS: tuple[str, ...] = tuple(spec.name for spec in SIGNAL_REGISTRY)
SIGNAL_INDEX: dict[str, int] = {spec.name: spec.index for spec in SIGNAL_REGISTRY}
SIGNAL_BY_NAME: dict[str, SignalSpec] = {spec.name: spec for spec in SIGNAL_REGISTRY}
#: Weight of each signal in the friction pile-up score (0 = not friction).
SIGNAL_WEIGHTS: dict[str, float] = {spec.name: spec.weight for spec in SIGNAL_REGISTRY}
