"""Journey stages as they really happen, not as a funnel.

Each page type maps to a stage (``discover``, ``consider``, ``evaluate``,
``decide``, ``convert``, ``support``). The tracker records the current stage,
the furthest stage reached, regressions (moving back from a later stage, e.g.
decide -> evaluate), skipped stages (jumping forward over one), time spent per
stage, revisits of pages seen before and the time of the last forward
progress. ``support`` is outside the order: visiting it is neither progress
nor regression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detectors.config import STAGE_INDEX, STAGE_ORDER, DetectorConfig
from detectors.events import Event
from detectors.session import STAGE_TRAIL_CAP, SessionState, page_key

#: Page views remembered for loop and revisit detection.
PAGE_HISTORY_CAP = 24

_STEP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,24}$")


def step_label(event: Event) -> str | None:
    """``props.step`` as a short, bounded label: whole numbers as digits
    (2 and 2.0 are the same step), other values only when they are short
    word-like names, else ``None``. It becomes part of a metric label."""
    value = event.props.get("step")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() and 0 <= value < 1000 else None
    if isinstance(value, str) and _STEP_NAME.match(value):
        return str(int(value)) if value.isdigit() else value
    return None


@dataclass(frozen=True, slots=True)
class PageLeave:
    """The page a page view left: its type, dwell (ms) and whether the new
    page is the one visited just before it (a back navigation)."""

    page: str | None
    page_type: str | None
    dwell_ms: int
    back_to_previous: bool
    had_form: bool


class JourneyTracker:
    """Updates the journey part of a :class:`SessionState` on page views.

    >>> from detectors.config import DetectorConfig
    >>> from detectors.events import EventParser
    >>> cfg = DetectorConfig()
    >>> p, j = EventParser(cfg), JourneyTracker(cfg)
    >>> s = SessionState("s")
    >>> for t, page in [(0, "/"), (5000, "/cart"), (9000, "/reviews")]:
    ...     _ = j.enter(s, p.parse({"session_id": "s", "ts": 1700000000000 + t,
    ...                             "type": "page_view", "page": page}))
    >>> s.stage, STAGE_ORDER[s.furthest], s.regressions, s.skipped
    ('evaluate', 'decide', 1, 2)
    """

    def __init__(self, config: DetectorConfig) -> None:
        self.stage_map = config.stage_map

    def stage_of(self, page_type: str | None) -> str:
        """Stage of a page type; unknown or missing types count as ``consider``."""
        if page_type is None:
            return "consider"
        return self.stage_map.get(page_type, "consider")

    def leave(
        self, state: SessionState, event: Event, key: int | None = None
    ) -> PageLeave | None:
        """Describe the page that ``event`` (a page view) leaves, if any;
        ``key`` is the event's :func:`page_key` when the caller has it."""
        if state.page_enter == 0:
            return None
        new_key = page_key(event.page, event.page_type) if key is None else key
        return PageLeave(
            page=state.page,
            page_type=state.page_type,
            dwell_ms=max(0, event.ts - state.page_enter),
            back_to_previous=state.prev_key != 0 and new_key == state.prev_key,
            had_form=state.form_open,
        )

    def enter(self, state: SessionState, event: Event, key: int | None = None) -> bool:
        """Apply a page view; return True when it is forward progress."""
        ts = event.ts
        stage = self.stage_of(event.page_type)
        if state.page_enter:
            # time since the previous page view belongs to the stage it was in
            state.stage_ms[STAGE_INDEX[state.stage]] += max(0, ts - state.stage_since)
        if key is None:
            key = page_key(event.page, event.page_type)
        if any(k == key for k, _ in state.page_history):
            state.revisits += 1
        state.page_history.append((key, ts))
        if len(state.page_history) > PAGE_HISTORY_CAP:
            del state.page_history[0]
        state.prev_key, state.prev_enter = state.page_key, state.page_enter
        state.page, state.page_type, state.page_key, state.page_enter = (
            event.page,
            event.page_type,
            key,
            ts,
        )
        state.n_pages += 1
        state.page_events = 0
        state.page_max_gap = 0
        state.page_reversals = 0
        state.page_max_scroll = 0.0
        state.page_friction = False
        state.page_step = step_label(event)
        state.form_open = False
        state.field_focus.clear()
        state.scroll_pct, state.scroll_dir = -1.0, 0
        state.reversal_ts.clear()
        state.stage_pages[STAGE_INDEX[stage]] += 1
        if state.n_pages > 1 and stage != state.stage:
            state.stage_trail.append(STAGE_INDEX[state.stage])
            if len(state.stage_trail) > STAGE_TRAIL_CAP:
                del state.stage_trail[0]
        progressed = False
        state.stage_since = ts
        if stage in STAGE_ORDER:
            idx = STAGE_INDEX[stage]
            if idx > state.furthest:
                if state.furthest >= 0 and idx > state.furthest + 1:
                    state.skipped += idx - state.furthest - 1
                state.furthest = idx
                progressed = True
            elif state.stage in STAGE_ORDER and idx < STAGE_INDEX[state.stage]:
                state.regressions += 1
        state.stage = stage
        return progressed

    def close_stage_time(self, state: SessionState, ts: int) -> None:
        """Account the time of the current stage up to ``ts`` (at close)."""
        if state.page_enter:
            state.stage_ms[STAGE_INDEX[state.stage]] += max(0, ts - state.stage_since)
            state.stage_since = ts

    @staticmethod
    def mark_progress(state: SessionState, ts: int) -> None:
        """Record forward progress at ``ts`` (new stage, cart add, checkout step)."""
        state.last_progress = max(state.last_progress, ts)
        state.stall_fired = False
