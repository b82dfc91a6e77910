"""What the console shows (``detectors.console_stats``), from a detector run."""

from __future__ import annotations

from array import array
from functools import cache

from detectors.config import DetectorConfig
from detectors.console_stats import MIN_BIN, ConsoleStats
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.offline.runner import OfflineRunner
from detectors.signals import SIGNALS
from detectors.simulation.simulator import SimConfig, Simulator
from detectors.training import Example
from tests.builders import Driver

CFG = DetectorConfig()


@cache
def fed(sessions: int = 1500) -> tuple[ConsoleStats, Detector]:
    stats = ConsoleStats(CFG)
    detector = Detector(CFG)
    runner = OfflineRunner(detector, on_step=stats.step, on_close=stats.closed)
    parse = EventParser(CFG).parse
    for raw in Simulator(SimConfig(sessions=sessions, seed=3)).events():
        for alert in runner.feed(parse(raw)):
            stats.alert(alert)
    for alert in runner.finish():
        stats.alert(alert)
    return stats, detector


def test_every_panel_has_data_after_a_run() -> None:
    stats, detector = fed()
    snap = stats.snapshot(detector.models.uplift, detector.metrics()["open_hotspots"])
    assert snap["sessions_closed"] == stats.sessions > 1000
    assert snap["live"] and snap["alert_seq"] >= len(snap["live"]) > 0
    assert {r["dimension"] for r in snap["trust_map"]} == {"stage", "page_type", "signal"}
    v = snap["validation"]
    assert v["trust_auc"] is not None and 0.5 < v["trust_auc"] <= 1
    assert v["activity_auc"] is not None and v["over_time"]
    assert v["window_sessions"] == v["outcomes"]["converted"] + v["outcomes"]["not_converted"]
    shown = [b for b in v["calibration"] if b["observed"] is not None]
    assert shown and all(b["sessions"] >= MIN_BIN for b in shown)
    assert all(b["bin"][0] <= b["predicted"] <= b["bin"][1] for b in shown)
    assert snap["uplift"] and snap["uplift"][0]["min_sessions"] == 30


def test_the_trust_map_counts_what_it_says() -> None:
    stats, _ = fed()
    rows = {(r["dimension"], r["name"]): r for r in stats.trust_map()}
    checkout = rows[("page_type", "checkout")]
    # every converter passes the checkout: nobody converts without it
    assert checkout["conversion_not_hit"] == 0.0 and checkout["conversion_hit"] > 0.3
    for row in rows.values():
        assert row["sessions_hit"] <= stats.sessions
        if row["conversion_hit"] is not None:
            assert row["sessions_hit"] >= MIN_BIN  # a rate of a handful is n/a
    dead = rows[("signal", "dead_click")]
    assert dead["trust_change"] is not None and dead["trust_change"] < 0  # friction costs trust


def test_sessions_at_risk_are_alerted_and_open() -> None:
    d = Driver(sid="risky")
    stats = ConsoleStats(CFG)
    d.send("page_view", 0, "/products/1")
    for i in range(4):
        result = d.send("click", 1000 + 2000 * i, x=5, y=5, target="button#buy", dead=True)
        for alert in result.alerts:
            stats.alert(alert)
    assert list(stats.at_risk) == ["risky"]
    live = stats.live[0]
    assert live["page_type"] == "product" and live["action"] and live["reasons"]
    assert d.state is not None
    d.state.outcome = "exit"
    stats.closed(d.state)
    assert stats.at_risk == {}
    for alert in d.alerts():  # an alert read after its session closed is not "at risk"
        stats.alert(alert)
    assert stats.at_risk == {}


def test_too_few_outcomes_give_no_auc() -> None:
    stats = ConsoleStats(CFG)
    trust, activity, n, _ = stats.validation_auc()
    assert (trust, activity, n) == (None, None, 0)
    assert stats.snapshot()["validation"]["trust_auc"] is None


def test_closed_examples_feed_a_deployments_console() -> None:
    stats = ConsoleStats(CFG)
    counts = tuple(2 if s == "rage_click" else 0 for s in SIGNALS)
    vector = array("f", [0.0])
    for i in range(60):
        treatment = "control" if i % 3 == 0 else "treated"
        stats.closed_example(
            Example(f"s{i}", 0, 5, 5, "converted" if i % 4 == 0 else "exit", ((1, vector),), (),
                    counts, treatment, ("trust_loss/chat",))
        )  # fmt: skip
        stats.closed_example(  # a copy (at least once delivery) counts once
            Example(f"s{i}", 0, 5, 5, "converted" if i % 4 == 0 else "exit", ((1, vector),), (),
                    counts, treatment, ("trust_loss/chat",))
        )  # fmt: skip
    snap = stats.snapshot()
    assert (snap["sessions_closed"], snap["sessions_converted"]) == (60, 15)
    rage = next(r for r in snap["trust_map"] if r["name"] == "rage_click")
    assert (rage["occurrences"], rage["sessions_hit"]) == (120, 60)
    overall = next(r for r in snap["uplift"] if r["dimension"] == "all")
    assert overall["treated"]["sessions"] == 40 and overall["control"]["sessions"] == 20


def test_a_hotspot_incident_is_listed_with_its_page_step_and_start() -> None:
    stats = ConsoleStats(CFG)
    for minute in (1, 7):
        stats.alert_event(
            {
                "id": f"h{minute}",
                "time": f"2026-01-01T10:0{minute}:00.000Z",
                "data": {"kind": "friction_hotspot", "severity": "high", "page": "checkout/2",
                         "hotspot_key": "checkout/2", "rate_now": 0.9, "rate_before": 0.2,
                         "reasons": [{"text": "90% of visits now end in friction"}]},
            }
        )  # fmt: skip
    stats.alert_event({"not": "an alert"})
    (hotspot,) = stats.snapshot(open_hotspots=["checkout/2"])["hotspots"]
    assert (hotspot["page"], hotspot["step"], hotspot["open"]) == ("checkout", "2", True)
    assert hotspot["began"] == "2026-01-01T10:01:00.000Z"
    assert hotspot["last"] == "2026-01-01T10:07:00.000Z"
    assert stats.live[0]["page_type"] == "checkout" and stats.alert_seq == 2
    assert stats.snapshot(open_hotspots=[])["hotspots"][0]["open"] is False
