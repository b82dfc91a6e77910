"""Activity metrics, prefix features and per-kind alert quality of the
evaluation, on tiny hand-built sessions with figures worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.events import Event
from detectors.offline.evaluation import evaluate
from detectors.offline.prefix_features import feature_names
from detectors.sample_size import MIN_PER_OUTCOME
from tests.builders import event

#: Four sessions as (event type, seconds from the session's start, page, page type);
#: c1 and c2 buy at the end, n1 and n2 do not.
Step = tuple[str, int, str | None, str | None]
SESSIONS: dict[str, list[Step]] = {
    # 8 views 1 s apart: prefixes of 2, 4, 6 events
    "c1": [
        *[("page_view", i, f"/products/{i}", "product") for i in range(8)],
        ("purchase", 8, None, None),
    ],
    # a view, 3 clicks 10 s apart: prefixes of 1, 2, 3 events
    "c2": [
        ("page_view", 0, "/products/1", "product"),
        *[("click", 10 * i, None, None) for i in (1, 2, 3)],
        ("purchase", 40, None, None),
    ],
    # 2 views, 2 clicks: prefixes of 1, 2, 3 events
    "n1": [
        ("page_view", 0, "/", "home"),
        ("page_view", 5, "/products/1", "product"),
        ("click", 6, None, None),
        ("click", 7, None, None),
    ],
    # 6 events 30 s apart: prefixes of 2, 3, 5 events
    "n2": [
        ("page_view", 0, "/cart", "cart"),
        ("click", 30, None, None),
        ("click", 60, None, None),
        ("page_view", 90, "/checkout", "checkout"),
        ("click", 120, None, None),
        ("click", 150, None, None),
    ],
}

#: By hand: AUC = P(converter's value > non-converter's value) + half the ties,
#: over the 4 pairs (c1, c2) x (n1, n2). Prefix values (conv | non):
#: events     25%: 2,1 | 1,2   50%: 4,2 | 2,3     75%: 6,3 | 3,5
#: page views 25%: 2,1 | 1,1   50%: 4,1 | 2,1     75%: 6,1 | 2,2
#: clicks     25%: 0,0 | 0,1   50%: 0,1 | 0,2     75%: 0,2 | 1,3
#: seconds    25%: 1,0 | 0,30  50%: 3,10 | 5,60   75%: 5,20 | 6,120
EXPECTED_AUC = {
    "events": {"0.25": 0.5, "0.5": 0.625, "0.75": 0.625},
    "page_views": {"0.25": 0.75, "0.5": 0.625, "0.75": 0.5},
    "clicks": {"0.25": 0.25, "0.5": 0.375, "0.75": 0.25},
    "seconds": {"0.25": 0.375, "0.5": 0.25, "0.75": 0.25},
}
#: The first metric wins a tie (events and page views at 50%).
EXPECTED_BEST = {
    "0.25": {"metric": "page_views", "auc": 0.75},
    "0.5": {"metric": "events", "auc": 0.625},
    "0.75": {"metric": "events", "auc": 0.625},
}


def build(copies: int = 1) -> list[Event]:
    """The four sessions, ``copies`` times (ids suffixed), one hour apart
    per copy, in event-time order."""
    out = []
    for c in range(copies):
        for n, (sid, steps) in enumerate(SESSIONS.items()):
            start = (c * 4 + n) * 3_600_000
            for etype, s, page, page_type in steps:
                out.append(
                    event(etype, start + 1000 * s, sid=f"{sid}-{c}", page=page, page_type=page_type)
                )
    return sorted(out, key=lambda e: e.ts)


def test_activity_auc_matches_the_hand_computed_figures() -> None:
    result = evaluate(build(), DetectorConfig())
    assert result.activity_auc() == EXPECTED_AUC


def test_summary_withholds_activity_auc_on_a_small_sample_and_says_why() -> None:
    summary = evaluate(build(), DetectorConfig()).summary()
    assert summary["activity_auc"] == {
        m: dict.fromkeys(EXPECTED_AUC["events"]) for m in EXPECTED_AUC
    }
    assert summary["best_activity_auc"] == dict.fromkeys(EXPECTED_AUC["events"])
    reason = f"only 2 sessions with a purchase; need {MIN_PER_OUTCOME}"
    assert summary["not_available"]["activity_auc"] == reason


def test_summary_gives_activity_auc_and_the_best_metric_with_enough_sessions() -> None:
    # copies keep every AUC: each pair of sessions is repeated equally often
    summary = evaluate(build(copies=5), DetectorConfig()).summary()
    assert summary["converters"] == MIN_PER_OUTCOME
    assert summary["activity_auc"] == EXPECTED_AUC
    assert summary["best_activity_auc"] == EXPECTED_BEST
    assert "activity_auc" not in summary["not_available"]


def test_prefix_features_count_what_happened_before_each_prefix() -> None:
    result = evaluate(build(), DetectorConfig())
    features = result.prefix_features()
    names = feature_names("purchase")
    assert set(features) == {"0.25", "0.5", "0.75"}
    rows, labels = features["0.75"]
    assert labels == [True, True, False, False]  # c1, c2, n1, n2
    assert all(len(row) == len(names) for row in rows)
    nonzero = [{k: v for k, v in zip(names, row, strict=True) if v} for row in rows]
    # n2 after 5 events: 2 views (cart, checkout) and 3 clicks over 120 s, 2 pages
    assert nonzero[3] == {
        "events_page_view": 2.0,
        "events_click": 3.0,
        "views_cart": 1.0,
        "views_checkout": 1.0,
        "seconds": 120.0,
        "distinct_pages": 2.0,
    }
    # c1 after 6 of its 8 views; the purchase itself is never a feature
    assert nonzero[0] == {
        "events_page_view": 6.0,
        "views_product": 6.0,
        "seconds": 5.0,
        "distinct_pages": 6.0,
    }
    assert "events_purchase" not in names


def test_the_goal_column_follows_the_configured_goal() -> None:
    names = feature_names("form_submit")
    assert "events_form_submit" not in names and "events_purchase" in names


def test_short_sessions_have_no_prefixes() -> None:
    # n1 cut to 2 events: fewer than 3 before the goal, like prefix_points
    events = [e for e in build() if not (e.session_id == "n1-0" and e.type == "click")]
    result = evaluate(events, DetectorConfig())
    assert len(result.prefix_features()["0.5"][0]) == 3
    assert len(result.prefix_points()["0.5"]) == 3


def dead_clicks(sid: str, start_ms: int, buys: bool) -> list[Event]:
    """A product view, four dead clicks 2 s apart (a friction pile-up), a
    page view 60 s later, then a purchase when ``buys``."""
    out = [event("page_view", start_ms, sid=sid, page="/products/1")]
    out += [
        event("click", start_ms + 1000 + 2000 * i, sid=sid, x=50, y=50, target="button#buy",
              dead=True)
        for i in range(4)
    ]  # fmt: skip
    out.append(event("page_view", start_ms + 60_000, sid=sid, page="/products/2"))
    if buys:
        out.append(event("purchase", start_ms + 70_000, sid=sid))
    return out


def test_quality_per_alert_kind() -> None:
    events = dead_clicks("lost", 0, buys=False) + dead_clicks("bought", 3_600_000, buys=True)
    result = evaluate(events, DetectorConfig())
    quality: dict[str, Any] = result.summary()["by_kind_quality"]
    assert set(quality) == {"hesitation", "trust_loss"}
    assert quality["hesitation"] == {
        "alerted_sessions": 0,
        "precision": None,
        "lead_time_s_median": None,
    }
    lost = result.tracks["lost"]
    assert "trust_loss" in lost.alert_kinds and "trust_loss" in result.tracks["bought"].alert_kinds
    first = lost.alert_times[lost.alert_kinds.index("trust_loss")]
    assert quality["trust_loss"] == {
        "alerted_sessions": 2,
        "precision": 0.5,  # one of the two alerted sessions bought
        "lead_time_s_median": (lost.end_ts - first) / 1000.0,  # the one that did not
    }
    assert lost.end_ts == events[5].ts  # its last event


@pytest.mark.parametrize("goal", ["purchase", "form_submit"])
def test_every_row_has_one_column_per_name(goal: str) -> None:
    config = DetectorConfig(goal_event=goal)
    rows, _ = evaluate(build(), config).prefix_features()["0.5"]
    assert {len(row) for row in rows} == {len(feature_names(goal))}
