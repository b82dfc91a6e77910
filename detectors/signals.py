"""Friction signals computed from events alone.

Each signal is a small class with an ``update``-style method that reads one
event and the session state and returns the hits it produced. Every
threshold is a :class:`~detectors.config.DetectorConfig` field; the class
docstrings say where the default comes from.

Signals must not fire on common, harmless patterns. The tests replay
steppers, date pickers, carousels, triple-click text selection, double
clicks, a single typo in a form and ordinary reading scrolls, and assert
silence.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from detectors.config import DELIBERATION_STAGES, STAGE_INDEX, DetectorConfig
from detectors.events import Event
from detectors.journey import PageLeave
from detectors.session import SIGNAL_INDEX, SessionState

#: Weight of each signal in the friction pile-up score (0 = not friction).
#: A rage-click burst counts double: it is the clearest sign of a broken UI.
#: Stall and trust touchpoints are hesitation inputs, not friction; the
#: models weigh them.
SIGNAL_WEIGHTS: dict[str, float] = {
    "rage_click": 2.0,
    "dead_click": 1.0,
    "error_click": 1.5,
    "u_turn": 0.5,
    "page_loop": 0.5,
    "scroll_thrash": 0.5,
    "form_error": 1.0,
    "form_refocus": 0.5,
    "form_abandon": 1.0,
    "stall": 0.0,
    "slow_page": 1.0,
    "trust_touchpoint": 0.0,
}

#: Words a marketer reads in alert reasons.
SIGNAL_WORDS: dict[str, str] = {
    "rage_click": "rage-click bursts (repeated fast clicks on one spot)",
    "dead_click": "clicks that did nothing",
    "error_click": "clicks followed by an error",
    "u_turn": "quick returns to the previous page",
    "page_loop": "pages visited in loops",
    "scroll_thrash": "scrolling up and down rapidly",
    "form_error": "form validation errors",
    "form_refocus": "form fields re-entered again and again",
    "form_abandon": "forms started and left unsent",
    "stall": "minutes without progress",
    "slow_page": "slow page loads",
    "trust_touchpoint": "visits to returns, shipping, reviews or pricing after reaching the basket",
}

FIELD_FOCUS_CAP = 8
CLICK_BURST_CAP = 8
TARGET_CAP = 64


@dataclass(frozen=True, slots=True)
class SignalHit:
    """One firing of a signal: ``value`` is its measured size (clicks in the
    burst, dwell seconds, load ms...), ``weight`` its friction weight."""

    name: str
    value: float
    ts: int

    @property
    def weight(self) -> float:
        return SIGNAL_WEIGHTS[self.name]


class RageClick:
    """Repeated fast clicks on one spot.

    A burst is at least ``rage_min_clicks`` clicks, each within
    ``rage_max_gap_ms`` of the one before and within ``rage_max_distance_px``
    of it, on the same ``props.target`` when both clicks name one. The
    defaults (3 clicks, 1000 ms, 30 px) are the consensus of PostHog,
    Datadog RUM and Mixpanel. Clicks on targets matching
    ``rage_ignore_targets`` (steppers, date pickers, carousels, pagination,
    text) and clicks that select text (``props.selection``) never count: those
    are the patterns users of the published rules complained about.
    A burst fires once, however long it goes on.

    >>> from detectors.events import EventParser
    >>> cfg = DetectorConfig(); p = EventParser(cfg); s = SessionState("s")
    >>> rc = RageClick(cfg)
    >>> def click(t, target):
    ...     return p.parse({"session_id": "s", "ts": 1700000000000 + t, "type": "click",
    ...                     "props": {"x": 10, "y": 10, "target": target}})
    >>> [len(rc.update(s, click(t, "button#pay"))) for t in (0, 300, 600, 900)]
    [0, 0, 1, 0]
    >>> s = SessionState("s")
    >>> [len(rc.update(s, click(t, "button.qty-plus"))) for t in (0, 300, 600, 900)]
    [0, 0, 0, 0]
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.min_clicks = config.rage_min_clicks
        self.max_gap = config.rage_max_gap_ms
        self.max_dist = config.rage_max_distance_px
        self.ignore = re.compile("|".join(f"(?:{rx})" for rx in config.rage_ignore_targets), re.I)

    def ignored(self, target: str) -> bool:
        """True when fast repeated clicks on ``target`` are normal."""
        return bool(target) and self.ignore.search(target) is not None

    def update(self, state: SessionState, event: Event) -> list[SignalHit]:
        target = (event.prop_str("target") or "")[:TARGET_CAP]
        if self.ignored(target) or event.props.get("selection"):
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
            return [SignalHit("rage_click", float(len(burst)), event.ts)]
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
    """A click the client reports as dead (``props.dead``), or a click
    followed within ``error_click_window_ms`` (1 s) by an ``error`` event.
    One second is the window session-replay tools use to tie a JS error to
    the interaction that caused it (Sentry's and LogRocket's breadcrumbs).
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.window = config.error_click_window_ms

    def on_click(self, state: SessionState, event: Event) -> list[SignalHit]:
        state.last_click_ts = event.ts
        state.last_click_errored = False
        if event.props.get("dead") is True:
            return [SignalHit("dead_click", 1.0, event.ts)]
        return []

    def on_error(self, state: SessionState, event: Event) -> list[SignalHit]:
        gap = event.ts - state.last_click_ts
        if state.last_click_ts and 0 <= gap <= self.window and not state.last_click_errored:
            state.last_click_errored = True
            return [SignalHit("error_click", gap / 1000.0, event.ts)]
        return []


class UTurn:
    """Leaving a page within ``uturn_max_dwell_ms`` (5 s) of arriving, back to
    the page visited just before it. Five seconds is the lower end of the
    "short click" / pogo-sticking dwell used in search-quality studies; a
    reader needs longer than that to judge a page and leave it on purpose.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.max_dwell = config.uturn_max_dwell_ms

    def on_leave(self, leave: PageLeave, ts: int) -> list[SignalHit]:
        if leave.back_to_previous and leave.dwell_ms <= self.max_dwell:
            return [SignalHit("u_turn", leave.dwell_ms / 1000.0, ts)]
        return []


class PageLoop:
    """The same page visited ``loop_min_visits`` (3) times within
    ``loop_window_ms`` (10 min). Three is the smallest count that is a loop
    rather than a back-and-forth; it fires once per page per window.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.min_visits = config.loop_min_visits
        self.window = config.loop_window_ms

    def on_enter(self, state: SessionState, ts: int) -> list[SignalHit]:
        key = state.page_key
        visits = sum(1 for k, t in state.page_history if k == key and ts - t <= self.window)
        if visits == self.min_visits:
            return [SignalHit("page_loop", float(visits), ts)]
        return []


class ScrollThrash:
    """``thrash_min_reversals`` (3) scroll-direction reversals within
    ``thrash_window_ms`` (2 s). Reading produces an occasional reversal; three
    in two seconds is searching for something that is not there (the
    "thrashed cursor"/"scroll rage" of FullStory and Contentsquare). Moves
    under 1 percentage point are jitter and ignored.
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.min_reversals = config.thrash_min_reversals
        self.window = config.thrash_window_ms

    def update(self, state: SessionState, event: Event) -> list[SignalHit]:
        pct = event.prop_float("scroll_pct")
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
        recent = [t for t in state.reversal_ts if event.ts - t <= self.window]
        recent.append(event.ts)
        if len(recent) >= self.min_reversals:
            state.reversal_ts = []
            return [SignalHit("scroll_thrash", float(len(recent)), event.ts)]
        state.reversal_ts = recent[-self.min_reversals :]
        return []


class FormFriction:
    """Form trouble: every ``form_error``; the same field focused
    ``form_refocus_min`` (3) times on one page; and a form that was typed
    into (``form_input``) and then left without ``form_submit``. Focus alone
    does not open a form: clicking into a search box and moving on is normal
    (Zuko and Hotjar count a form as started only on interaction).
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.refocus_min = config.form_refocus_min

    def update(self, state: SessionState, event: Event) -> list[SignalHit]:
        if event.type == "form_error":
            return [SignalHit("form_error", 1.0, event.ts)]
        if event.type == "form_input":
            state.form_open = True
            return []
        if event.type == "form_submit":
            state.form_open = False
            state.field_focus.clear()
            return []
        if event.type == "form_focus":
            name = (event.prop_str("field") or "?")[:TARGET_CAP]
            if name not in state.field_focus and len(state.field_focus) >= FIELD_FOCUS_CAP:
                return []
            count = state.field_focus.get(name, 0) + 1
            state.field_focus[name] = count
            if count == self.refocus_min:
                return [SignalHit("form_refocus", float(count), event.ts)]
        return []

    @staticmethod
    def on_leave(had_form: bool, ts: int) -> list[SignalHit]:
        return [SignalHit("form_abandon", 1.0, ts)] if had_form else []


class Stall:
    """No forward progress for ``stall_ms`` (2 min) while active
    (previous event at most ``active_gap_ms`` ago) in the evaluate or decide
    stage. Fires once per progress period.
    """

    STAGES = DELIBERATION_STAGES

    def __init__(self, config: DetectorConfig) -> None:
        self.stall_ms = config.stall_ms
        self.active_gap = config.active_gap_ms

    def update(self, state: SessionState, ts: int, gap_ms: int) -> list[SignalHit]:
        if state.stall_fired or state.stage not in self.STAGES or gap_ms > self.active_gap:
            return []
        idle = ts - state.last_progress
        if idle >= self.stall_ms:
            state.stall_fired = True
            return [SignalHit("stall", idle / 1000.0, ts)]
        return []


class SlowPage:
    """``props.load_ms`` above ``slow_page_ms`` (3000 ms; Google/SOASTA: 53%
    of mobile visits are abandoned when a page takes more than 3 s)."""

    def __init__(self, config: DetectorConfig) -> None:
        self.limit = config.slow_page_ms

    def update(self, event: Event) -> list[SignalHit]:
        load = event.prop_float("load_ms")
        if load is not None and load > self.limit:
            return [SignalHit("slow_page", load, event.ts)]
        return []


class TrustTouchpoint:
    """A visit to returns, shipping, reviews or pricing after the session
    reached the decide stage (basket or checkout). A hypothesis, not an alarm:
    weight 0 in the friction score; the trust model learns what it means.
    """

    PAGES = frozenset({"returns", "shipping", "reviews", "pricing"})
    DECIDE = STAGE_INDEX["decide"]  # "after reaching the basket"

    def on_enter(self, state: SessionState, page_type: str | None, ts: int) -> list[SignalHit]:
        if page_type in self.PAGES and state.furthest >= self.DECIDE:
            return [SignalHit("trust_touchpoint", 1.0, ts)]
        return []


def count_hit(state: SessionState, hit: SignalHit, window_ms: int) -> None:
    """Add a hit to the state's counters and to the recent friction window."""
    state.signal_counts[SIGNAL_INDEX[hit.name]] += 1
    weight = hit.weight
    if weight > 0:
        state.page_friction = True
        recent = [(t, w) for t, w in state.friction_recent if hit.ts - t <= window_ms]
        recent.append((hit.ts, weight))
        state.friction_recent = recent[-16:]


def friction_score(state: SessionState, ts: int, window_ms: int) -> float:
    """Sum of friction weights within ``window_ms`` before ``ts``."""
    if not state.friction_recent:
        return 0.0
    return sum(w for t, w in state.friction_recent if 0 <= ts - t <= window_ms)
