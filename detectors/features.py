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
from array import array
from collections.abc import Sequence

from detectors.config import STAGE_INDEX, STAGE_ORDER
from detectors.session import TYPE_INDEX, SessionState
from detectors.signals import SIGNAL_REGISTRY

#: Trust features of the session itself (not of signal counts).
_SESSION_FEATURES: tuple[str, ...] = (
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
)
#: Trust features fed by signal counts (``SignalSpec.trust_feature``; the
#: counts of every signal that names a feature add up), in their
#: established order. A feature first named by a newly registered signal is
#: appended after ``errors``, so the positions of the existing features, and
#: the trust vectors stored in session snapshots, stay as they are.
_SIGNAL_FEATURES: tuple[str, ...] = (
    "rage_click",
    "dead_or_error_click",
    "u_turn",
    "page_loop",
    "scroll_thrash",
    "form_trouble",
    "slow_page",
    "stall",
    "trust_touchpoint",
)
_NEW_SIGNAL_FEATURES: tuple[str, ...] = tuple(
    dict.fromkeys(
        spec.trust_feature
        for spec in SIGNAL_REGISTRY
        if spec.trust_feature is not None and spec.trust_feature not in _SIGNAL_FEATURES
    )
)
#: Trust features of plain activity, recency and the recent path (state
#: version 2): what an offline model on prefix counts uses, plus the order of
#: the last stages. Counts and minutes are ``log1p``; ``minutes_since_cart``
#: is -1 before the first basket add; stages are ``STAGE_INDEX / 5`` (0 =
#: discover ... 0.8 = convert, 1 = support), -0.2 when there is none.
_ACTIVITY_FEATURES: tuple[str, ...] = (
    "events",
    "clicks",
    "scrolls",
    "form_fields",
    "tab_switches",
    "dwell_minutes",
    "mean_page_minutes",
    "minutes_since_cart",
    "events_per_minute",
    "stage_now",
    "stage_before",
    "stage_before_that",
)
#: Every trust feature, in the order of :func:`trust_vector`.
TRUST_FEATURES: tuple[str, ...] = (
    *_SESSION_FEATURES,
    *_SIGNAL_FEATURES,
    "errors",
    *_ACTIVITY_FEATURES,
    *_NEW_SIGNAL_FEATURES,
)


def signal_indices(feature: str) -> tuple[int, ...]:
    """The ``signal_counts`` positions whose counts add up to ``feature``.

    >>> signal_indices("dead_or_error_click"), signal_indices("pages")
    ((1, 2), ())
    """
    return tuple(spec.index for spec in SIGNAL_REGISTRY if spec.trust_feature == feature)


def _groups(features: tuple[str, ...]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(first index, other indices) per feature: most features have one signal."""
    groups = []
    for name in features:
        indices = signal_indices(name)
        if not indices:
            raise ValueError(f"trust feature {name!r} is fed by no registered signal")
        groups.append((indices[0], indices[1:]))
    return tuple(groups)


_SIGNAL_GROUPS = _groups(_SIGNAL_FEATURES)
_NEW_SIGNAL_GROUPS = _groups(_NEW_SIGNAL_FEATURES)

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


_CAP = len(_LOG1P_TABLE) - 1
_CLICK, _SCROLL, _FOCUS, _INPUT, _VISIBILITY = (
    TYPE_INDEX[t] for t in ("click", "scroll", "form_focus", "form_input", "visibility")
)
_STAGE_SCALE = float(len(STAGE_INDEX) - 1)
_LAST_STAGE = float(len(STAGE_ORDER) - 1)  # furthest stage, scaled to 0-1
_SUPPORT = STAGE_INDEX["support"]


def trust_vector(state: SessionState, now: int) -> list[float]:
    """Features of the session up to ``now`` (epoch ms), as a list in
    :data:`TRUST_FEATURES` order (the scoring hot path builds no dict)."""
    c = state.signal_counts
    stage_ms = state.stage_ms
    evaluate_ms, decide_ms = stage_ms[2], stage_ms[3]
    if state.page_enter:
        if state.stage == "evaluate":
            evaluate_ms += max(0, now - state.stage_since)
        elif state.stage == "decide":
            decide_ms += max(0, now - state.stage_since)
    pages = state.stage_pages
    t = _LOG1P_TABLE  # counts saturate at 1023: log1p(1023) = 6.93
    vector = [
        t[min(state.n_pages, _CAP)],
        _l((now - state.start_ts) / 60_000.0),
        max(state.furthest, 0) / _LAST_STAGE,
        1.0 if state.stage == "decide" else 0.0,
        t[min(pages[0], _CAP)],
        t[min(pages[1], _CAP)],
        t[min(pages[2], _CAP)],
        t[min(pages[3], _CAP)],
        t[min(pages[_SUPPORT], _CAP)],
        _l(evaluate_ms / 60_000.0),
        _l(decide_ms / 60_000.0),
        t[min(state.regressions, _CAP)],
        t[min(state.revisits, _CAP)],
        t[min(state.skipped, _CAP)],
        t[min(state.carts, _CAP)],
        t[min(state.cart_removes, _CAP)],
        t[min(state.checkout_steps, _CAP)],
        t[min(state.searches, _CAP)],
        _l((now - state.last_progress) / 60_000.0),
    ]
    for first, rest in _SIGNAL_GROUPS:
        n = c[first]
        for i in rest:
            n += c[i]
        vector.append(t[min(n, _CAP)])
    vector.append(t[min(state.errors, _CAP)])
    types = state.type_counts
    minutes = max(0, now - state.start_ts) / 60_000.0
    trail = state.stage_trail
    vector += (
        t[min(state.n_events, _CAP)],
        t[min(types[_CLICK], _CAP)],
        t[min(types[_SCROLL], _CAP)],
        t[min(types[_FOCUS] + types[_INPUT], _CAP)],
        t[min(types[_VISIBILITY], _CAP)],
        _l((now - state.page_enter) / 60_000.0) if state.page_enter else 0.0,
        _l(minutes / state.n_pages) if state.n_pages else 0.0,
        _l((now - state.last_cart_ts) / 60_000.0) if state.last_cart_ts else -1.0,
        _l(state.n_events / (minutes + 1.0)),
        STAGE_INDEX[state.stage] / _STAGE_SCALE if state.n_pages else -0.2,
        trail[-1] / _STAGE_SCALE if trail else -0.2,
        trail[-2] / _STAGE_SCALE if len(trail) > 1 else -0.2,
    )
    for first, rest in _NEW_SIGNAL_GROUPS:
        n = c[first]
        for i in rest:
            n += c[i]
        vector.append(t[min(n, _CAP)])
    return vector


def trust_features(state: SessionState, now: int) -> dict[str, float]:
    """:func:`trust_vector` as a dict keyed by :data:`TRUST_FEATURES`.

    >>> s = SessionState("s", start_ts=0, last_progress=0)
    >>> f = trust_features(s, 60_000)
    >>> sorted(f) == sorted(TRUST_FEATURES), round(f["minutes"], 3)
    (True, 0.693)
    """
    return dict(zip(TRUST_FEATURES, trust_vector(state, now), strict=True))


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


def snapshot_vector(vector: list[float]) -> array[float]:
    """A trust vector as float32: compact in the state (4 bytes a feature),
    exact through serialisation, and converted in C."""
    return array("f", vector)


def vector_to_features(vector: Sequence[float]) -> dict[str, float]:
    """A snapshot as the feature dict the learner takes."""
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


def moment_vector(
    state: SessionState, now: int, moment: dict[str, float], anomaly: float
) -> list[float]:
    """Inputs of the leave hazard (:data:`detectors.hesitation.HAZARD_FEATURES`
    order), each in [0, 1]: the moment's :func:`hesitation_features`, its
    anomaly score, the last trust score (0 before the first), whether the
    session is in the basket or checkout, the furthest stage, pages viewed
    (log-scaled, 200 = 1) and the time since the session's last event
    (log-scaled, 30 min = 1), which is what grows while a visitor stares.

    >>> s = SessionState("s", page_enter=0, last_progress=0, last_ts=0)
    >>> v = moment_vector(s, 60_000, hesitation_features(s, 60_000), 0.5)
    >>> len(v), all(0.0 <= x <= 1.0 for x in v)
    (13, True)
    """
    return [
        *(moment[name] for name in HESITATION_FEATURES),
        min(max(anomaly, 0.0), 1.0),
        max(state.trust, 0.0),
        1.0 if state.stage == "decide" else 0.0,
        max(state.furthest, 0) / _LAST_STAGE,
        min(_l(state.n_pages) / _LOG_200, 1.0),
        min(_l((now - state.last_ts) / 1000.0) / _LOG_30_MIN, 1.0),
    ]
