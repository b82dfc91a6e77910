"""Alerts: CloudEvents shape, determinism, policy (cap, cooldown, close),
privacy, reasons and playbook actions."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from detectors.alerts import (
    ALERT_JSON_SCHEMA,
    ALERT_KINDS,
    SESSION_KINDS,
    Alert,
    alert_id,
    rfc3339,
    severity_for,
    suggested_action,
)
from detectors.config import ANSWER_PAGES, DEFAULT_PLAYBOOK, DetectorConfig
from detectors.detector import Detector
from detectors.events import Event, EventParser
from detectors.offline.runner import OfflineRunner
from detectors.signals import SIGNAL_BY_NAME, SIGNAL_REGISTRY
from detectors.simulation.simulator import SimConfig, Simulator
from tests.builders import Driver, event

CFG = DetectorConfig()
SINGULARS = {spec.singular.split(" (")[0] for spec in SIGNAL_REGISTRY}
VALIDATOR = Draft202012Validator(ALERT_JSON_SCHEMA)


@dataclass
class Run:
    alerts: list[Alert] = field(default_factory=list)
    # (session_id, alert) pairs where a session alert came at or after the goal
    after_goal: list[tuple[str, Alert]] = field(default_factory=list)
    goal_ts: dict[str, int] = field(default_factory=dict)
    # number of events fed when each alert came out (len(events) for finish())
    emitted_after: list[int] = field(default_factory=list)


def run_with_runner(events: list[Event], config: DetectorConfig = CFG, finish: bool = True) -> Run:
    out = Run()
    runner = OfflineRunner(Detector(config))
    for n, e in enumerate(events, 1):
        if e.type == config.goal_event and e.session_id not in out.goal_ts:
            state = runner.sessions.get(e.session_id)
            if state is None or state.outcome is None:
                out.goal_ts[e.session_id] = e.ts
        alerts = runner.feed(e)
        for alert in alerts:
            if alert.kind in SESSION_KINDS and alert.session_id in out.goal_ts:
                out.after_goal.append((alert.session_id, alert))
        out.alerts += alerts
        out.emitted_after += [n] * len(alerts)
    if finish:
        closing = runner.finish()
        out.alerts += closing
        out.emitted_after += [len(events)] * len(closing)
    return out


@pytest.fixture(scope="module")
def events() -> list[Event]:
    parser = EventParser(CFG)
    return [parser.parse(e) for e in Simulator(SimConfig(sessions=3000, seed=11)).events()]


@pytest.fixture(scope="module")
def run(events: list[Event]) -> Run:
    return run_with_runner(events)


@pytest.fixture(scope="module")
def cloudevents(run: Run) -> list[dict[str, object]]:
    return [a.to_cloudevent(CFG.source) for a in run.alerts]


def test_every_kind_is_raised(run: Run) -> None:
    kinds = Counter(a.kind for a in run.alerts)
    assert set(kinds) == set(ALERT_KINDS)
    assert all(kinds[k] >= 1 for k in ALERT_KINDS)


def test_cloudevents_validate_against_the_schema(cloudevents: list[dict[str, object]]) -> None:
    for ce in cloudevents:
        errors = sorted(VALIDATOR.iter_errors(ce), key=str)
        assert not errors, (ce, [e.message for e in errors])


def test_cloudevent_attributes(run: Run) -> None:
    for alert in run.alerts:
        ce = alert.to_cloudevent("urn:test")
        data = ce["data"]
        assert ce["source"] == "urn:test"
        assert ce["type"] == f"disengage.alert.{alert.kind}"
        assert ce["id"] == alert.id == alert_id(alert.subject, alert.kind, alert.episode)
        assert ce["time"] == data["event_time"] == rfc3339(alert.event_time)
        assert data["kind"] == alert.kind and data["episode"] == alert.episode >= 1
        if alert.kind in SESSION_KINDS:
            assert ce["subject"] == alert.session_id == data["session_id"]
        else:
            assert ce["subject"] == f"hotspot/{data['hotspot_key']}"
            assert data["session_id"] is None and data["user_hash"] is None
            assert data["rate_now"] > data["rate_before"]


def test_schema_rejects_broken_alerts(cloudevents: list[dict[str, object]]) -> None:
    good = json.loads(json.dumps(cloudevents[0]))
    mutations: list[Callable[[dict[str, Any]], object]] = [
        lambda ce: ce.update(specversion="0.3"),
        lambda ce: ce.update(id="not-hex"),
        lambda ce: ce.update(type="disengage.alert.other"),
        lambda ce: ce["data"].update(severity="apocalyptic"),
        lambda ce: ce["data"].update(user_hash="alice@example.com"),
        lambda ce: ce["data"].update(reasons=[{"text": "x"}] * 4),
        lambda ce: ce["data"].pop("suggested_action"),
    ]
    for mutate in mutations:
        bad = json.loads(json.dumps(good))
        mutate(bad)
        assert not VALIDATOR.is_valid(bad)


def test_alert_ids_are_unique_and_deterministic(run: Run, events: list[Event]) -> None:
    ids = [a.id for a in run.alerts]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    # An independent second run over the first half of the stream (the
    # detector is online: the alerts of a prefix do not depend on what follows).
    half = len(events) // 2
    again = run_with_runner(events[:half], finish=False)
    expected = [a for a, n in zip(run.alerts, run.emitted_after, strict=True) if n <= half]
    assert len(expected) > 50
    assert [a.id for a in again.alerts] == [a.id for a in expected]
    assert [a.to_cloudevent(CFG.source) for a in again.alerts] == [
        a.to_cloudevent(CFG.source) for a in expected
    ]


def test_no_session_alert_at_or_after_the_goal(run: Run) -> None:
    assert run.goal_ts, "the simulated run has converters"
    assert run.after_goal == []
    for alert in run.alerts:
        if alert.kind in SESSION_KINDS and alert.session_id in run.goal_ts:
            assert alert.event_time <= run.goal_ts[alert.session_id]


def test_per_session_cap_and_cooldown(run: Run) -> None:
    per_subject: dict[str, list[Alert]] = defaultdict(list)
    for alert in run.alerts:
        if alert.kind in SESSION_KINDS:
            per_subject[alert.subject].append(alert)
    assert per_subject
    for alerts in per_subject.values():
        assert len(alerts) <= CFG.max_alerts_per_session
        by_kind: dict[str, list[int]] = defaultdict(list)
        for a in alerts:
            by_kind[a.kind].append(a.event_time)
        for times in by_kind.values():
            assert all(b - a >= CFG.cooldown_ms for a, b in pairwise(times))


def test_hotspot_cooldown_per_key(run: Run) -> None:
    per_key: dict[str, list[Alert]] = defaultdict(list)
    for alert in run.alerts:
        if alert.kind == "friction_hotspot":
            per_key[alert.subject].append(alert)
    for alerts in per_key.values():
        assert [a.episode for a in alerts] == list(range(1, len(alerts) + 1))
        times = [a.event_time for a in alerts]
        assert all(b - a >= CFG.hotspot_cooldown_ms for a, b in pairwise(times))


def test_alerts_never_carry_a_raw_user_id(run: Run, events: list[Event]) -> None:
    assert any(e.user_hash for e in events), "the simulation has logged-in users"
    hashes = {e.user_hash for e in events if e.user_hash}
    with_user = 0
    for ce in (a.to_cloudevent(CFG.source) for a in run.alerts):
        text = json.dumps(ce)
        assert "@example.com" not in text
        assert "user-" not in text
        user_hash = ce["data"]["user_hash"]
        if user_hash is not None:
            with_user += 1
            assert user_hash in hashes
    assert with_user > 0


def test_reasons_at_most_three_each_with_text(run: Run) -> None:
    for alert in run.alerts:
        assert len(alert.reasons) <= 3
        for reason in alert.reasons:
            assert isinstance(reason.text, str) and reason.text.strip()
        if alert.rule in ("friction_pileup", "adwin_rate_increase"):
            assert alert.reasons, alert
    friction = [a for a in run.alerts if a.rule == "friction_pileup"]
    for alert in friction:
        scores = [r.value * r.weight for r in alert.reasons]
        assert scores == sorted(scores, reverse=True)


def expected_cause(alert: Alert, page_type: str | None) -> str:
    if alert.rule == "friction_pileup":
        return SIGNAL_BY_NAME[alert.reasons[0].signal].cause
    if alert.rule in ("trust_drop", "trust_floor"):
        return "falling_trust"
    if alert.rule == "leave_hazard":
        return "unanswered_question" if page_type in ANSWER_PAGES else "long_deliberation"
    return "problem_rate"


def test_suggested_action_comes_from_the_playbook_by_cause_and_stage(
    run: Run, events: list[Event]
) -> None:
    page_types = {e.page: e.page_type for e in events if e.page}
    causes: Counter[str] = Counter()
    for alert in run.alerts:
        cause = expected_cause(alert, page_types.get(alert.page or ""))
        causes[cause] += 1
        expected = suggested_action(DEFAULT_PLAYBOOK, alert.kind, cause, alert.stage)
        assert alert.suggested_action == expected, alert
        if cause == "broken_element":
            assert alert.suggested_action.startswith("page owners: fix"), alert
        if cause == "unanswered_question":
            assert "comparison guide" not in alert.suggested_action
    # the simulation exercises the cause-specific entries, not just the fallbacks
    assert set(causes) == {
        "broken_element",
        "form_trouble",
        "unanswered_question",
        "long_deliberation",
        "falling_trust",
        "problem_rate",
    }, causes


def test_reason_texts_read_as_a_marketer_reads(run: Run) -> None:
    """Whole counts, singular for one, no reason at its typical value."""
    friction = re.compile(r"^(\d+) (.+) this session \(typical: (\d+)\)$")
    compared = re.compile(r"^[^:]+: (.+?) \(typical(?: at the \w+ stage)?: (.+?)\)")
    texts = [(a.rule, r.text) for a in run.alerts for r in a.reasons]
    assert texts
    for rule, text in texts:
        assert not re.search(r"\d\.\d", text), text
        assert not re.search(r"\b1 times\b", text), text
        if rule == "friction_pileup":
            match = friction.match(text)
            assert match, text
            count, words, typical = int(match[1]), match[2], int(match[3])
            assert count > typical, text
            assert (count == 1) == (words.split(" (")[0] in SINGULARS), text
        elif rule in ("trust_drop", "trust_floor", "hst_quantile"):
            match = compared.match(text)
            assert match and match[1] != match[2], text


def test_severity_and_thresholds(run: Run) -> None:
    for alert in run.alerts:
        assert alert.severity in ("low", "medium", "high")
        if alert.rule == "friction_pileup":
            assert alert.score >= alert.threshold == CFG.friction_alert_score
        if alert.rule == "leave_hazard":
            assert alert.score > alert.threshold


# ---------------------------------------------------------- crafted policy cases
def pile_ups(config: DetectorConfig) -> Driver:
    """Three friction pile-ups (4 dead clicks each, >1 s apart so no rage)
    at 1-7 s, 140-146 s and 310-316 s, with quiet events in between so the
    friction window empties and the rule re-arms."""
    d = Driver(config)
    d.send("page_view", 0, "/products/1")
    for start in (1000, 140_000, 310_000):
        for i in range(4):
            d.send("click", start + 2000 * i, x=50, y=50, target="button#buy", dead=True)
        for quiet in (60_000, 125_000):
            d.send("custom", start + quiet, n=start)
    return d


def test_cooldown_suppresses_a_second_alert_within_five_minutes() -> None:
    d = pile_ups(DetectorConfig(max_alerts_per_session=3))
    alerts = d.alerts("trust_loss")
    assert [a.event_time - alerts[0].event_time for a in alerts] == [0, 309_000]
    assert [a.episode for a in alerts] == [1, 2]
    assert len({a.id for a in alerts}) == 2


def test_without_cooldown_every_pile_up_alerts_up_to_the_cap() -> None:
    unbudgeted = DetectorConfig(alert_budget_per_1000=0, cooldown_ms=0)
    d = pile_ups(unbudgeted.with_overrides(max_alerts_per_session=3))
    assert [a.episode for a in d.alerts("trust_loss")] == [1, 2, 3]
    d2 = pile_ups(unbudgeted.with_overrides(max_alerts_per_session=2))
    assert [a.episode for a in d2.alerts("trust_loss")] == [1, 2]


def test_default_cap_is_one_alert_per_session() -> None:
    d = pile_ups(DetectorConfig(cooldown_ms=0))
    assert len(d.alerts()) == 1
    assert d.state is not None and d.state.n_alerts == 1


def test_alert_carries_session_context() -> None:
    d = Driver(sid="sess-42")
    d.send("page_view", 0, "/products/1")
    for i in range(4):
        d.send("click", 1000 + 2000 * i, x=50, y=50, target="button#buy", dead=True)
    (alert,) = d.alerts()
    assert (alert.kind, alert.rule, alert.subject, alert.stage) == (
        "trust_loss",
        "friction_pileup",
        "sess-42",
        "consider",
    )
    assert alert.page == "/products/1"
    assert alert.reasons[0].signal == "dead_click" and alert.reasons[0].value == 4
    (raised_at,) = [t for t, r in d.results if r.alerts]
    trigger = event("click", raised_at, sid="sess-42", x=50, y=50, target="button#buy", dead=True)
    assert alert.trigger_event_id == trigger.event_id
    # a broken button on a product page is for the page owners, not an FAQ
    assert alert.suggested_action == DEFAULT_PLAYBOOK["trust_loss/broken_element/*"]
    assert VALIDATOR.is_valid(alert.to_cloudevent(CFG.source))


# --------------------------------------------------------------- helpers
@pytest.mark.parametrize(
    ("margin", "severity"),
    [(1.0, "low"), (1.19, "low"), (1.2, "medium"), (1.49, "medium"), (1.5, "high"), (9.0, "high")],
)
def test_severity_for(margin: float, severity: str) -> None:
    assert severity_for(margin) == severity


def test_suggested_action_fallbacks() -> None:
    book = {
        "trust_loss/form_trouble/decide": "A",
        "trust_loss/form_trouble/*": "B",
        "trust_loss/*/decide": "C",
        "trust_loss/*": "D",
    }
    assert suggested_action(book, "trust_loss", "form_trouble", "decide") == "A"
    assert suggested_action(book, "trust_loss", "form_trouble", "consider") == "B"
    assert suggested_action(book, "trust_loss", "slow_page", "decide") == "C"
    assert suggested_action(book, "trust_loss", "slow_page", "consider") == "D"
    assert suggested_action(book, "trust_loss", None, None) == "D"
    assert suggested_action(book, "hesitation", "form_trouble", "decide") == "review the session"


def test_alert_id_depends_on_subject_kind_and_episode() -> None:
    base = alert_id("s1", "hesitation", 1)
    assert base == alert_id("s1", "hesitation", 1)
    assert (
        len(
            {
                base,
                alert_id("s2", "hesitation", 1),
                alert_id("s1", "trust_loss", 1),
                alert_id("s1", "hesitation", 2),
            }
        )
        == 4
    )


def test_rfc3339() -> None:
    assert rfc3339(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert rfc3339(1_700_000_000_000) == "2023-11-14T22:13:20.000Z"
