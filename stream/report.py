"""The human-readable evaluation report (``disengage evaluate``)."""

from __future__ import annotations

from typing import Any


def format_report(s: dict[str, Any]) -> str:
    """The human-readable evaluation report."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value}"

    auc = s["prefix_auc"]
    lines = [
        f"sessions            {s['sessions']}  (converters {s['converters']}, "
        f"events {s['events']}, {s['events_per_s']} events/s)",
        f"trust prefix AUC    25%: {fmt(auc['0.25'])}   50%: {fmt(auc['0.5'])}   "
        f"75%: {fmt(auc['0.75'])}   (over {s['prefix_sessions']} sessions with >= 3 events)",
        f"trust model         rolling AUC {s['trust_model']['rolling_auc']}, "
        f"log-loss {s['trust_model']['rolling_log_loss']}",
        f"alerts/1000 sess.   {s['alerts_per_1000_sessions']}   (alerted sessions "
        f"{s['alerted_sessions']})",
        f"alert precision     {fmt(s['alert_precision'])}   (share of alerted sessions "
        "that did not convert)",
        f"lead time (median)  {fmt(s['lead_time_s_median'])} s, "
        f"{fmt(s['lead_time_events_median'])} events before the end",
        "alerts by kind      " + ", ".join(f"{k} {v}" for k, v in s["by_kind"].items()),
    ]
    truth = s.get("truth")
    if truth:
        lines += [
            f"friction recall     {fmt(truth['friction_recall'])} of "
            f"{truth['friction_episodes']} episodes, median delay "
            f"{fmt(truth['friction_delay_s_median'])} s",
            f"hesitation recall   {fmt(truth['hesitation_recall'])} of "
            f"{truth['hesitation_episodes']} episodes",
        ]
        for incident in truth["incidents"]:
            lines.append(
                f"hotspot incident    {incident['key']}: "
                + (
                    f"detected after {incident['delay_s']} s"
                    if incident["detected"]
                    else "NOT detected"
                )
            )
        lines.append(
            f"hotspot alerts outside incidents: {truth['hotspot_alerts_outside_incidents']} "
            f"({truth['hotspot_alerts_outside_incidents_steady_traffic']} during steady traffic)"
        )
    if s["invalid_events"]:
        lines.append(f"invalid input       {s['invalid_events']}")
    return "\n".join(lines)
