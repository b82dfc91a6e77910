"""Feature vectors built from a session state.

Two views of the same state:

* :func:`trust_features`: the session so far, for P(goal | session so far).
  Counts and durations are ``log1p``-compressed because they are heavy
  tailed (the UCI shoppers benchmark in ``benchmarks/uci_trust_models.py``
  shows the log transform helps the online logistic model).
* :func:`hesitation_features`: the current moment on the current page, each
  scaled to [0, 1] with fixed, documented caps, as Half-Space Trees need
  bounded inputs.
"""

from __future__ import annotations

import math

from detectors.session import SIGNAL_INDEX, SessionState

TRUST_FEATURES: tuple[str, ...] = (
    "pages",
    "minutes",
    "furthest_stage",
    "in_decide",
    "discover_pages",
    "consider_pages",
    "evaluate_pages",
    "decide_pages",
    "support_pages",
    "evaluate_minutes",
    "decide_minutes",
    "regressions",
    "revisits",
    "skipped",
    "carts",
    "cart_removes",
    "checkout_steps",
    "searches",
    "minutes_since_progress",
    "rage_click",
    "dead_or_error_click",
    "u_turn",
    "page_loop",
    "scroll_thrash",
    "form_trouble",
    "slow_page",
    "stall",
    "trust_touchpoint",
    "errors",
)

HESITATION_FEATURES: tuple[str, ...] = (
    "dwell",
    "max_gap",
    "reversals",
    "scroll_depth",
    "since_progress",
    "revisits",
    "page_events",
)

# Caps of the hesitation scaling: 30 min dwell or gap, 1 h without progress,
# 20 reversals, 200 events on one page. Anything beyond saturates at 1.
_LOG_30_MIN = math.log1p(1800.0)
_LOG_1_H = math.log1p(3600.0)
_LOG_200 = math.log1p(200.0)


_LOG1P_TABLE: tuple[float, ...] = tuple(math.log1p(i) for i in range(1024))


def _l(x: float) -> float:
    return math.log1p(x) if x > 0 else 0.0


def _li(n: int) -> float:
    """log1p of a non-negative count, from a table for the common small ones."""
    return _LOG1P_TABLE[n] if 0 <= n < 1024 else _l(n)


def trust_features(state: SessionState, now: int) -> dict[str, float]:
    """Features of the session up to ``now`` (epoch ms).

    >>> s = SessionState("s", start_ts=0, last_progress=0)
    >>> f = trust_features(s, 60_000)
    >>> sorted(f) == sorted(TRUST_FEATURES), round(f["minutes"], 3)
    (True, 0.693)
    """
    c = state.signal_counts
    stage_ms = list(state.stage_ms)
    if state.page_enter and state.stage in ("evaluate", "decide"):
        stage_ms[2 if state.stage == "evaluate" else 3] += max(0, now - state.stage_since)
    return {
        "pages": _li(state.n_pages),
        "minutes": _l((now - state.start_ts) / 60_000.0),
        "furthest_stage": max(state.furthest, 0) / 4.0,
        "in_decide": 1.0 if state.stage == "decide" else 0.0,
        "discover_pages": _li(state.stage_pages[0]),
        "consider_pages": _li(state.stage_pages[1]),
        "evaluate_pages": _li(state.stage_pages[2]),
        "decide_pages": _li(state.stage_pages[3]),
        "support_pages": _li(state.stage_pages[5]),
        "evaluate_minutes": _l(stage_ms[2] / 60_000.0),
        "decide_minutes": _l(stage_ms[3] / 60_000.0),
        "regressions": _li(state.regressions),
        "revisits": _li(state.revisits),
        "skipped": _li(state.skipped),
        "carts": _li(state.carts),
        "cart_removes": _li(state.cart_removes),
        "checkout_steps": _li(state.checkout_steps),
        "searches": _li(state.searches),
        "minutes_since_progress": _l((now - state.last_progress) / 60_000.0),
        "rage_click": _li(c[SIGNAL_INDEX["rage_click"]]),
        "dead_or_error_click": _li(c[SIGNAL_INDEX["dead_click"]] + c[SIGNAL_INDEX["error_click"]]),
        "u_turn": _li(c[SIGNAL_INDEX["u_turn"]]),
        "page_loop": _li(c[SIGNAL_INDEX["page_loop"]]),
        "scroll_thrash": _li(c[SIGNAL_INDEX["scroll_thrash"]]),
        "form_trouble": _li(
            c[SIGNAL_INDEX["form_error"]]
            + c[SIGNAL_INDEX["form_refocus"]]
            + c[SIGNAL_INDEX["form_abandon"]]
        ),
        "slow_page": _li(c[SIGNAL_INDEX["slow_page"]]),
        "stall": _li(c[SIGNAL_INDEX["stall"]]),
        "trust_touchpoint": _li(c[SIGNAL_INDEX["trust_touchpoint"]]),
        "errors": _li(state.errors),
    }


def hesitation_features(state: SessionState, now: int) -> dict[str, float]:
    """The current moment on the current page, each in [0, 1].

    >>> s = SessionState("s", page_enter=0, last_progress=0)
    >>> f = hesitation_features(s, 1_800_000)
    >>> f["dwell"], all(0.0 <= v <= 1.0 for v in f.values())
    (1.0, True)
    """
    dwell_s = max(0, now - state.page_enter) / 1000.0
    gap_s = state.page_max_gap / 1000.0
    since_s = max(0, now - state.last_progress) / 1000.0
    page_revisits = sum(1 for k, _ in state.page_history if k == state.page_key) - 1
    return {
        "dwell": min(_l(dwell_s) / _LOG_30_MIN, 1.0),
        "max_gap": min(_l(gap_s) / _LOG_30_MIN, 1.0),
        "reversals": min(state.page_reversals, 20) / 20.0,
        "scroll_depth": state.page_max_scroll / 100.0,
        "since_progress": min(_l(since_s) / _LOG_1_H, 1.0),
        "revisits": min(max(page_revisits, 0), 5) / 5.0,
        "page_events": min(_l(state.page_events) / _LOG_200, 1.0),
    }


def snapshot_vector(features: dict[str, float]) -> list[float]:
    """Trust features as a compact list in :data:`TRUST_FEATURES` order,
    rounded to 4 decimals so snapshots stay small in the session state."""
    return [round(features[name], 4) for name in TRUST_FEATURES]


def vector_to_features(vector: list[float]) -> dict[str, float]:
    """Inverse of :func:`snapshot_vector`."""
    return dict(zip(TRUST_FEATURES, vector, strict=True))


def hesitation_raw(name: str, value: float) -> tuple[float, str]:
    """Undo the [0, 1] scaling of a hesitation feature for display: returns
    the value in its natural unit and the unit's name."""
    if name in ("dwell", "max_gap"):
        return math.expm1(value * _LOG_30_MIN), "s"
    if name == "since_progress":
        return math.expm1(value * _LOG_1_H), "s"
    if name == "reversals":
        return value * 20.0, "times"
    if name == "revisits":
        return value * 5.0, "times"
    if name == "page_events":
        return math.expm1(value * _LOG_200), "events"
    return value * 100.0, "%"
