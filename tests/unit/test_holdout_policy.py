"""Holdout groups and acknowledged interventions in the alert policy."""

from __future__ import annotations

from collections import Counter

from detectors.config import DetectorConfig
from detectors.policy import alert_mark
from detectors.uplift import CONTROL, TREATED, treatment_of
from tests.builders import T0, Driver

UNCAPPED = DetectorConfig(alert_budget_per_1000=0, cooldown_ms=0, max_alerts_per_session=3)


def pile_ups(config: DetectorConfig, sid: str = "s", ack_at: int | None = None) -> Driver:
    """Three friction pile-ups (4 dead clicks each) at 1, 140 and 310 s; the
    page acknowledges the first alert's intervention at ``ack_at`` ms."""
    d = Driver(config, sid=sid)
    d.send("page_view", 0, "/products/1")
    for start in (1000, 140_000, 310_000):
        for i in range(4):
            d.send("click", start + 2000 * i, x=50, y=50, target="button#buy", dead=True)
        if ack_at is not None and start == 1000:
            alert = d.alerts("trust_loss")[0]
            d.send("intervention", ack_at, kind="trust_loss", alert_id=alert.id)
        for quiet in (60_000, 125_000):
            d.send("custom", start + quiet, n=start)
    return d


def test_every_admitted_alert_carries_its_sessions_group() -> None:
    groups: Counter[str] = Counter()
    for i in range(40):
        sid = f"sess-{i}"
        d = pile_ups(UNCAPPED.with_overrides(holdout_share=0.5), sid=sid)
        alerts = d.alerts()
        assert alerts
        expected = treatment_of(sid, UNCAPPED.holdout_salt, 0.5)
        assert {a.extra["treatment"] for a in alerts} == {expected}
        assert all(a.to_cloudevent("x")["data"]["treatment"] == expected for a in alerts)
        groups[expected] += 1
    assert groups[CONTROL] > 5 and groups[TREATED] > 5  # both groups occur at 50%


def test_holdout_share_zero_and_one_put_everyone_in_one_group() -> None:
    for share, group in ((0.0, TREATED), (1.0, CONTROL)):
        d = pile_ups(UNCAPPED.with_overrides(holdout_share=share))
        assert {a.extra["treatment"] for a in d.alerts()} == {group}


def test_assignment_is_about_the_configured_share_and_depends_on_the_salt() -> None:
    sids = [f"{i:08x}" for i in range(20_000)]
    control = sum(treatment_of(s, "salt-a", 0.1) == CONTROL for s in sids)
    assert 0.09 < control / len(sids) < 0.11
    other = [treatment_of(s, "salt-b", 0.1) for s in sids]
    assert other != [treatment_of(s, "salt-a", 0.1) for s in sids]


def test_an_acknowledged_intervention_quiets_that_kind_for_the_session() -> None:
    plain = pile_ups(UNCAPPED)
    assert [a.episode for a in plain.alerts("trust_loss")] == [1, 2, 3]
    acked = pile_ups(UNCAPPED, ack_at=9_500)
    assert [a.episode for a in acked.alerts("trust_loss")] == [1]
    assert acked.state is not None and acked.state.acked == [0, T0 + 9_500]
    # the quiet period ends: the third pile-up (300 s after the acknowledgement) alerts again
    short = pile_ups(UNCAPPED.with_overrides(intervention_quiet_ms=200_000), ack_at=9_500)
    assert [a.episode for a in short.alerts("trust_loss")] == [1, 2]


def test_an_acknowledgement_is_not_visitor_activity() -> None:
    d = Driver()
    d.send("page_view", 0, "/products/1")
    assert d.state is not None
    before = (d.state.n_events, d.state.last_ts, d.state.page_events, d.state.trust)
    result = d.send("intervention", 5_000, kind="hesitation")
    assert result.status == "applied" and not result.hits and not result.alerts
    assert (d.state.n_events, d.state.last_ts, d.state.page_events, d.state.trust) == before
    assert d.state.acked[0] > 0
    # an unknown kind is applied (and de-duplicated) but quiets nothing
    assert d.send("intervention", 6_000, kind="nonsense").status == "applied"
    assert d.send("intervention", 6_000, kind="nonsense").status == "duplicate"
    assert d.state.acked[1] == 0


def test_a_session_counts_in_the_uplift_slice_of_its_first_alert() -> None:
    d = pile_ups(UNCAPPED)
    assert d.state is not None
    first, *later = d.alerts()
    assert later  # more alerts came, after help may have been shown
    assert d.state.alert_marks == [alert_mark("trust_loss", first.suggested_action)]


def test_an_acknowledgement_without_an_open_visit_opens_none() -> None:
    d = Driver()
    assert d.send("intervention", 0, kind="trust_loss").status == "ignored"
    d.state = None  # the runner keeps no state for an ignored step
    d.send("page_view", 1000, "/products/1")
    d.send("exit", 2000)
    assert d.state is not None and d.state.outcome == "exit"
    assert d.send("intervention", 3000, kind="trust_loss").status == "ignored"
    assert d.state.outcome == "exit" and d.state.n_events == 2
