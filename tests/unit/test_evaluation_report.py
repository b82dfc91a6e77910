"""The text of ``disengage evaluate``: trust next to the activity metrics and
the offline reference, the verdicts, and alert quality per kind."""

from __future__ import annotations

import copy
from typing import Any

from stream.commands.report import format_report

SUMMARY: dict[str, Any] = {
    "sessions": 1200,
    "converters": 240,
    "events": 60000,
    "events_per_s": 9000,
    "invalid_events": {},
    "outcomes": {"goal_event": "purchase", "labels_given": 0, "feed": ["prefix_auc"]},
    "prefix_auc": {"0.25": 0.62, "0.5": 0.74, "0.75": 0.9},
    "prefix_sessions": 1100,
    "best_activity_auc": {
        "0.25": {"metric": "events", "auc": 0.7652},
        "0.5": {"metric": "page_views", "auc": 0.7724},
        "0.75": {"metric": "clicks", "auc": 0.7763},
    },
    "offline_auc": {"0.25": 0.88, "0.5": 0.93, "0.75": 0.97},
    "trust_model": {"rolling_auc": 0.84, "rolling_log_loss": 0.32, "sessions_learned": 1200},
    "alerts_per_1000_sessions": 55.0,
    "alerted_sessions": 66,
    "alert_precision": 0.9,
    "lead_time_s_median": 36.0,
    "lead_time_events_median": 14.0,
    "by_kind": {"hesitation": 6, "trust_loss": 60, "friction_hotspot": 1},
    "by_kind_quality": {
        "hesitation": {"alerted_sessions": 0, "precision": None, "lead_time_s_median": None},
        "trust_loss": {"alerted_sessions": 60, "precision": 0.9, "lead_time_s_median": 32.5},
    },
    "not_available": {},
}


def block(report: str, first: str, n: int) -> list[str]:
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    return lines[start : start + n]


def test_each_prefix_shows_trust_the_best_activity_metric_and_the_offline_reference() -> None:
    assert block(format_report(SUMMARY), "prefix AUC", 9) == [
        "prefix AUC          trust    best activity metric    offline reference",
        "  at 25%            0.62     0.7652 (events)         0.88",
        "  at 50%            0.74     0.7724 (page views)     0.93",
        "  at 75%            0.9      0.7763 (clicks)         0.97",
        "                    over 1100 sessions with >= 3 events before the purchase",
        "                    activity metrics: events, page views, clicks or seconds so far",
        "                    offline reference: 5-fold gradient boosting on plain prefix counts",
        "trust vs activity   not ahead at every prefix: behind at 25% (-0.1452); "
        "behind at 50% (-0.0324); ahead at 75% (+0.1237)",
        "trust vs offline    0.19 below the offline reference at 50%",
    ]


def test_trust_ahead_everywhere_is_said_with_the_smallest_margin() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["prefix_auc"] = {"0.25": 0.82, "0.5": 0.88, "0.75": 0.95}
    verdict = block(format_report(summary), "trust vs activity", 1)[0]
    assert verdict == (
        "trust vs activity   ahead of the best activity metric at every prefix (by at least 0.0548)"
    )


def test_a_missing_offline_reference_gives_its_reason() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["offline_auc"] = None
    summary["not_available"]["offline_auc"] = "install the bench extra (scikit-learn)"
    report = format_report(summary)
    assert "  at 50%            0.74     0.7724 (page views)     n/a" in report.splitlines()
    assert "offline reference   n/a (install the bench extra (scikit-learn))" in report
    assert "trust vs offline" not in report


def test_alert_quality_per_kind() -> None:
    lines = block(format_report(SUMMARY), "alerts by kind", 3)
    assert lines == [
        "alerts by kind      hesitation 6, trust_loss 60, friction_hotspot 1",
        "  hesitation        no alerted session",
        "  trust_loss        60 alerted sessions, precision 0.9, median lead time 32.5 s",
    ]


def test_a_small_sample_keeps_one_na_line() -> None:
    summary = copy.deepcopy(SUMMARY)
    summary["not_available"]["prefix_auc"] = "only 2 sessions with a purchase; need 10"
    report = format_report(summary)
    assert "trust prefix AUC    n/a (only 2 sessions with a purchase; need 10)" in report
    assert "trust vs" not in report and "best activity" not in report
