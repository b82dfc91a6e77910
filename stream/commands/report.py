"""The human-readable evaluation report (``disengage evaluate``).

:func:`format_report` turns :meth:`detectors.offline.evaluation.Evaluation.summary`
into lines for a person: a figure a small sample cannot support reads
"n/a (only 2 sessions with a purchase; need 10)", and the report says where
the outcomes and the ground truth came from and which figures they feed.
At each prefix the trust AUC stands next to the best activity metric (events,
page views, clicks or seconds so far) and the offline reference, followed by
a verdict: does trust beat the activity metrics, and how far is it from the
offline reference.
:func:`match_warnings` are the lines for stderr when labels or ground truth
hardly match the events.
"""

from __future__ import annotations

from typing import Any

from detectors.offline.evaluation import MIN_PREFIX_EVENTS, PREFIXES

#: False hotspots listed one by one; the rest are counted.
MAX_LISTED_HOTSPOTS = 10

#: Words for the figures that outcomes feed (``summary["outcomes"]["feed"]``).
FIGURE_WORDS = {
    "converters": "converters",
    "prefix_auc": "prefix AUC",
    "alert_precision": "alert precision",
    "lead_time": "lead time",
}
TRUTH_FEEDS = "friction and hesitation recall, hotspot incidents and false hotspots"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 session``, ``2 sessions``.

    >>> plural(1, "session"), plural(0, "episode"), plural(3, "match", "matches")
    ('1 session', '0 episodes', '3 matches')
    """
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _value(value: Any, reason: str | None = None, unit: str = "") -> str:
    if value is None:
        return f"n/a ({reason})" if reason else "n/a"
    return f"{value}{unit}"


def _recall(value: float | None, episodes: int, what: str) -> str:
    """``0.9 of 12 episodes``, or ``n/a (no friction episode)`` without a count to repeat.

    >>> _recall(None, 0, "hesitation")
    'n/a (no hesitation episode)'
    >>> _recall(0.5, 2, "friction")
    '0.5 of 2 episodes'
    """
    if value is None:
        return _value(value, f"no {what} episode" if episodes == 0 else None)
    return f"{value} of {plural(episodes, 'episode')}"


def format_report(s: dict[str, Any]) -> str:
    """The report, one figure a line (labels padded to 20 columns)."""
    na: dict[str, str] = s.get("not_available", {})
    outcomes = s.get("outcomes", {})
    goal = outcomes.get("goal_event", "purchase")
    lines = [
        f"sessions            {s['sessions']}  (converters {s['converters']}, "
        f"events {s['events']}, {s['events_per_s']} events/s)",
        "outcomes            " + _outcome_source(outcomes, goal),
    ]
    lines += _prefix_lines(s, goal)
    model = s["trust_model"]
    if model["rolling_auc"] is None:
        lines.append(f"trust model         n/a ({na.get('trust_model', 'no AUC yet')})")
    else:
        lines.append(
            f"trust model         rolling AUC {model['rolling_auc']}, "
            f"log-loss {model['rolling_log_loss']}  (learned from the {goal} events in the stream)"
        )
    lines += [
        f"alerts/1000 sess.   {s['alerts_per_1000_sessions']}   (alerted sessions "
        f"{s['alerted_sessions']})",
        f"alert precision     {_value(s['alert_precision'], na.get('alert_precision'))}"
        + ("   (share of alerted sessions that did not convert)" if s["alerted_sessions"] else ""),
        "lead time (median)  "
        + (
            f"n/a ({na['lead_time']})"
            if s["lead_time_s_median"] is None
            else f"{s['lead_time_s_median']} s, {s['lead_time_events_median']} events "
            "before the end"
        ),
        "alerts by kind      " + ", ".join(f"{k} {v}" for k, v in s["by_kind"].items()),
    ]
    for kind, q in s.get("by_kind_quality", {}).items():
        lines.append(f"  {kind:<18}" + _kind_text(q))
    if s.get("uplift") is not None:
        lines += _uplift_lines(s["uplift"])
    truth = s.get("truth")
    if truth is not None:
        lines += _truth_lines(truth)
    if s["invalid_events"]:
        lines.append(
            "invalid input       "
            + ", ".join(f"{reason} {n}" for reason, n in s["invalid_events"].items())
        )
    if s.get("plot"):
        lines.append(f"plot                {s['plot']}")
    return "\n".join(lines)


def _uplift_lines(u: dict[str, Any]) -> list[str]:
    """Uplift of acting on alerts: all alerts, then each kind (actions are
    in the JSON report); n/a below the minimum group size."""
    acked = u["interventions_acknowledged"]
    head = (
        f"uplift              treated - control conversion of alerted sessions, 95% interval "
        f"(holdout {u['holdout_share']:.0%}; "
        + (
            f"{acked} interventions shown)"
            if acked
            else "no intervention shown in these events: an A/A check, should contain 0)"
        )
    )
    lines = [head]
    for row in u["slices"]:
        if row["dimension"] == "action":
            continue
        name = "all alerts" if row["dimension"] == "all" else row["value"]
        t, c = row["treated"], row["control"]
        groups = (
            f"treated {t['converted']}/{t['sessions']}, control {c['converted']}/{c['sessions']}"
        )
        if row["difference"] is None:
            figure = f"n/a (fewer than {u['min_sessions']} alerted sessions in a group)"
        else:
            figure = f"{row['difference']:+.3f} [{row['lower']:+.3f}, {row['upper']:+.3f}]"
        lines.append(f"  {name:<18}{figure}  ({groups})")
    return lines


def _prefix_lines(s: dict[str, Any], goal: str) -> list[str]:
    """The prefix table (trust, best activity metric, offline reference)
    and the verdict lines; one n/a line when the sample is too small."""
    na: dict[str, str] = s.get("not_available", {})
    if "prefix_auc" in na:
        return [f"trust prefix AUC    n/a ({na['prefix_auc']})"]
    trust = s["prefix_auc"]
    best = s.get("best_activity_auc", {})
    offline: dict[str, Any] = s.get("offline_auc") or {}
    lines = [f"prefix AUC          {'trust':<9}{'best activity metric':<24}offline reference"]
    for p in map(str, PREFIXES):
        b = best.get(p)
        activity = "n/a" if b is None else f"{b['auc']} ({b['metric'].replace('_', ' ')})"
        ref = _value(offline.get(p))
        lines.append(f"  {f'at {float(p):.0%}':<18}{_value(trust[p]):<9}{activity:<24}{ref}")
    lines += [
        f"{'':20}over {s['prefix_sessions']} sessions with >= {MIN_PREFIX_EVENTS} events "
        f"before the {goal}",
        f"{'':20}activity metrics: events, page views, clicks or seconds so far",
        f"{'':20}offline reference: 5-fold gradient boosting on plain prefix counts",
    ]
    lines.append("trust vs activity   " + _versus_activity(trust, best))
    if not offline:
        lines.append(f"offline reference   n/a ({na.get('offline_auc', 'not computed')})")
    else:
        lines.append("trust vs offline    " + _versus_offline(trust.get("0.5"), offline.get("0.5")))
    return lines + _fixed_count_lines(s.get("fixed_count_auc") or {}, goal)


def _fixed_count_lines(fixed: dict[str, dict[str, Any]], goal: str) -> list[str]:
    """AUC at the k-th event: what a live detector can know at that moment.

    >>> fixed = {"10": {"sessions": 40, "trust": 0.8, "events": 0.5, "page_views": 0.6,
    ...                 "clicks": None, "seconds": 0.7}}
    >>> for line in _fixed_count_lines(fixed, "purchase"): print(line)
    at the k-th event   trust    events   page views clicks   seconds  sessions
      k = 10            0.8      0.5      0.6        n/a      0.7      40
    <BLANKLINE>
                        over sessions with more than k events before the purchase: every one
                        is then at the same point, and "events so far" cannot rank them
    """
    if not fixed:
        return []
    lines = [f"at the k-th event   {'trust':<9}{'events':<9}{'page views':<11}{'clicks':<9}"
             f"{'seconds':<9}sessions"]  # fmt: skip
    for k, f in fixed.items():
        cells = [_value(f.get(m)) for m in ("trust", "events", "page_views", "clicks", "seconds")]
        widths = (9, 9, 11, 9, 9)
        row = "".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))
        lines.append(f"  {f'k = {k}':<18}{row}{f['sessions']}")
    return [
        *lines,
        "",
        f"{'':20}over sessions with more than k events before the {goal}: every one",
        f"{'':20}is then at the same point, and \"events so far\" cannot rank them",
    ]


def _versus_activity(trust: dict[str, Any], best: dict[str, Any]) -> str:
    """Whether trust beats the best activity metric at every prefix.

    >>> _versus_activity({"0.25": 0.7, "0.5": 0.8}, {"0.25": {"auc": 0.75, "metric": "clicks"},
    ...                  "0.5": {"auc": 0.7, "metric": "events"}})
    'not ahead at every prefix: behind at 25% (-0.05); ahead at 50% (+0.1)'
    >>> _versus_activity({"0.5": 0.8}, {"0.5": {"auc": 0.7, "metric": "events"}})
    'ahead of the best activity metric at every prefix (by at least 0.1)'
    """
    margins: dict[str, float] = {}
    for p, b in best.items():
        if b is not None and trust.get(p) is not None:
            margins[p] = round(trust[p] - b["auc"], 4)
    if not margins:
        return "n/a (no activity metric has an AUC)"
    if all(m > 0 for m in margins.values()):
        least = min(margins.values())
        return f"ahead of the best activity metric at every prefix (by at least {least})"
    parts = []
    for p, m in margins.items():
        word = "ahead" if m > 0 else ("level" if m == 0 else "behind")
        parts.append(f"{word} at {float(p):.0%} ({m:+})")
    return "not ahead at every prefix: " + "; ".join(parts)


def _versus_offline(trust: float | None, offline: float | None) -> str:
    """How far trust is from the offline reference at 50%.

    >>> _versus_offline(0.7422, 0.89), _versus_offline(0.9, 0.88)
    ('0.1478 below the offline reference at 50%', '0.02 above the offline reference at 50%')
    """
    if trust is None or offline is None:
        return "n/a at 50%"
    gap = round(offline - trust, 4)
    side = "below" if gap > 0 else "above"
    return f"{abs(gap)} {side} the offline reference at 50%"


def _kind_text(q: dict[str, Any]) -> str:
    """One alert kind's quality.

    >>> _kind_text({"alerted_sessions": 0, "precision": None, "lead_time_s_median": None})
    'no alerted session'
    >>> _kind_text({"alerted_sessions": 3, "precision": 0.6667, "lead_time_s_median": 41.5})
    '3 alerted sessions, precision 0.6667, median lead time 41.5 s'
    """
    if not q["alerted_sessions"]:
        return "no alerted session"
    lead = q["lead_time_s_median"]
    return f"{plural(q['alerted_sessions'], 'alerted session')}, precision {q['precision']}, " + (
        "no lead time (all converted)" if lead is None else f"median lead time {lead} s"
    )


def _outcome_source(outcomes: dict[str, Any], goal: str) -> str:
    feeds = ", ".join(FIGURE_WORDS.get(f, f) for f in outcomes.get("feed", []))
    given = outcomes.get("labels_given", 0)
    if not given:
        return f"the {goal} events in the stream; they feed {feeds}"
    matched = outcomes.get("labels_matched", 0)
    return (
        f"labels: {given} given, {matched} matched (the {goal} events for the other "
        f"sessions); they feed {feeds}"
    )


def _truth_lines(t: dict[str, Any]) -> list[str]:
    matched = t.get("sessions_matched", t.get("sessions", 0))
    lines = [
        f"ground truth        {plural(t.get('sessions', 0), 'session')}, {matched} matched; "
        f"it feeds {TRUTH_FEEDS}"
    ]
    if "not_available" in t:
        lines.append(f"                    n/a ({t['not_available']})")
        return lines
    delay = t["friction_delay_s_median"]
    lines += [
        "friction recall     "
        + _recall(t["friction_recall"], t["friction_episodes"], "friction")
        + ("" if delay is None else f", median delay {delay} s"),
        "hesitation recall   "
        + _recall(t["hesitation_recall"], t["hesitation_episodes"], "hesitation"),
    ]
    for incident in t["incidents"]:
        lines.append(f"hotspot incident    {incident['key']}: {_incident_text(incident)}")
    lines += _false_hotspot_lines(t)
    return lines


def _incident_text(incident: dict[str, Any]) -> str:
    if not incident["detected"]:
        return "NOT detected"
    if incident.get("late"):
        return (
            f"detected late, {incident['late_by_s']} s after the incident ended "
            f"({incident['delay_s']} s after it started)"
        )
    return f"detected after {incident['delay_s']} s"


def _false_hotspot_lines(t: dict[str, Any]) -> list[str]:
    total = t["hotspot_alerts_outside_incidents"]
    steady = t["hotspot_alerts_outside_incidents_steady_traffic"]
    head = f"false hotspots      {total} outside incidents"
    if not total:
        return [head]
    lines = [f"{head} ({steady} during steady traffic, {total - steady} after arrivals ended)"]
    listed = t.get("false_hotspots", [])
    for hotspot in listed[:MAX_LISTED_HOTSPOTS]:
        after = hotspot["after_arrivals_end_s"]
        when = "during steady traffic" if after is None else f"{after} s after arrivals ended"
        lines.append(f"                    {hotspot['key']} ({hotspot['severity']}), {when}")
    if len(listed) > MAX_LISTED_HOTSPOTS:
        lines.append(f"                    and {len(listed) - MAX_LISTED_HOTSPOTS} more")
    return lines


def match_warnings(summary: dict[str, Any], low_share: float) -> list[str]:
    """Warnings for stderr when the labels or the ground truth name (almost)
    no session of the events: below ``low_share`` of them matched."""
    out = []
    outcomes = summary.get("outcomes", {})
    given, matched = outcomes.get("labels_given", 0), outcomes.get("labels_matched", 0)
    if given and matched == 0:
        out.append(
            "warning: no label names a session of the events; check the session ids "
            "(outcomes come from the goal event alone)"
        )
    elif given and matched < low_share * given:
        out.append(f"warning: only {matched} of {given} labels name a session of the events")
    truth = summary.get("truth")
    if truth is not None:
        total, hit = truth.get("sessions", 0), truth.get("sessions_matched", 0)
        if total and hit == 0:
            out.append(
                "warning: the ground truth matches no session of the events "
                "(from another simulation?); its figures are n/a"
            )
        elif hit < low_share * total:
            out.append(
                f"warning: the ground truth matches only {hit} of its {total} sessions "
                "in the events"
            )
    return out
