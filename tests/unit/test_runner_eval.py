"""OfflineRunner (event-time timeouts, tombstones, reordering) and the
prequential evaluation."""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import Event, EventParser, InvalidEvent
from detectors.offline.evaluation import LOW_MATCH_SHARE, Evaluation, LabelMatch, evaluate
from detectors.offline.outcome_labels import read_labels
from detectors.offline.runner import BAD_LINES_KEPT, OfflineRunner, RunStats, parse_lines, reorder
from detectors.sample_size import MIN_PER_OUTCOME, roc_auc
from detectors.simulation.ground_truth import GroundTruth, Incident, TruthError
from detectors.simulation.simulator import SimConfig, Simulator
from tests.builders import T0, event

CFG = DetectorConfig()
SHORT = DetectorConfig(session_timeout_ms=60_000)
PARSER = EventParser(CFG)
_seq = itertools.count()


def ev(sid: str, t: int, etype: str = "custom", page: str | None = None) -> Event:
    return event(etype, t, sid=sid, page=page, n=next(_seq))


# ---------------------------------------------------------------------- runner
def test_sessions_close_on_timeout_by_event_time() -> None:
    runner = OfflineRunner(Detector(SHORT))
    runner.feed(ev("a", 0, "page_view", "/products/1"))
    runner.feed(ev("b", 59_000, "page_view", "/"))
    assert runner.sessions["a"].outcome is None and runner.active_sessions == 2
    runner.feed(ev("b", 61_500))
    a = runner.sessions["a"]
    assert a.outcome == "timeout"
    assert a.closed_ts == T0 + 60_000  # last event + timeout, not the time of the sweep
    assert dict(runner.stats.closed) == {"timeout": 1}
    assert runner.active_sessions == 1


def test_activity_postpones_the_timeout() -> None:
    runner = OfflineRunner(Detector(SHORT))
    runner.feed(ev("a", 0, "page_view", "/products/1"))
    runner.feed(ev("a", 50_000))
    runner.feed(ev("b", 100_000))
    assert runner.sessions["a"].outcome is None  # due at 110 s, not 60 s
    runner.feed(ev("b", 112_000))
    assert runner.sessions["a"].outcome == "timeout"
    assert runner.sessions["a"].closed_ts == T0 + 110_000


def test_nothing_closes_without_newer_events() -> None:
    runner = OfflineRunner(Detector(SHORT))
    runner.feed(ev("a", 0, "page_view", "/products/1"))
    for _ in range(3):
        assert runner.sweep(T0) == []
    assert runner.sessions["a"].outcome is None
    assert runner.sweep(T0 + 10 * 60_000) == []
    assert dict(runner.stats.closed) == {"timeout": 1}
    assert "a" not in runner.sessions  # closed at 1 min, tombstone gone at 2 min


def test_tombstone_keeps_a_converted_session_closed() -> None:
    runner = OfflineRunner(Detector(SHORT))
    runner.feed(ev("s", 0, "page_view", "/checkout/step-3"))
    runner.feed(ev("s", 5_000, "purchase"))
    statuses: list[str] = []
    runner.on_step = lambda e, r: statuses.append(r.status)
    runner.feed(ev("s", 7_000, "page_view", "/checkout/confirmation"))
    runner.feed(ev("s", 30_000, "click"))
    assert statuses == ["after_close", "after_close"]
    assert runner.sessions["s"].outcome == "converted"
    assert dict(runner.stats.closed) == {"converted": 1}
    assert runner.active_sessions == 0
    # the tombstone is dropped one timeout after the close
    runner.feed(ev("other", 64_000))
    assert "s" in runner.sessions
    runner.feed(ev("other", 66_000))
    assert "s" not in runner.sessions
    runner.feed(ev("s", 67_000, "page_view", "/"))
    assert runner.sessions["s"].outcome is None and statuses[-1] == "applied"


def test_finish_closes_every_open_session_once() -> None:
    closed: list[str] = []
    runner = OfflineRunner(Detector(SHORT), on_close=lambda s: closed.append(s.sid))
    runner.feed(ev("a", 0, "page_view", "/"))
    runner.feed(ev("b", 1_000, "page_view", "/cart"))
    runner.feed(ev("b", 2_000, "purchase"))
    runner.finish()
    assert sorted(closed) == ["a", "b"]
    assert dict(runner.stats.closed) == {"converted": 1, "timeout": 1}
    runner.finish()
    assert len(closed) == 2


def test_runner_counts_statuses() -> None:
    runner = OfflineRunner(Detector(CFG))
    first = ev("a", 0, "page_view", "/")
    runner.feed(first)
    runner.feed(first)
    runner.feed(ev("a", 100_000))
    runner.feed(ev("a", 1_000))  # older than the allowed lateness
    assert runner.stats.events == 4 and runner.stats.applied == 2
    assert dict(runner.stats.statuses) == {"applied": 2, "duplicate": 1, "late": 1}


def test_reorder_restores_order_within_the_window() -> None:
    times = [0, 300, 100, 200, 500, 400, 900, 700, 800]
    out = list(reorder([ev("a", t) for t in times], window_ms=1000))
    assert [e.ts - T0 for e in out] == sorted(times)


def test_reorder_holds_several_late_events() -> None:
    out = list(reorder([ev("a", t) for t in [1000, 900, 800, 1100]], window_ms=1000))
    assert [e.ts - T0 for e in out] == [800, 900, 1000, 1100]


def test_reorder_passes_on_events_beyond_the_window_in_arrival_position() -> None:
    times = [0, 1000, 2000, 50]
    out = list(reorder([ev("a", t) for t in times], window_ms=100))
    assert [e.ts - T0 for e in out] == [0, 1000, 50, 2000]


def test_reorder_is_stable_for_equal_times() -> None:
    events = [ev("a", 10), ev("b", 10), ev("c", 5), ev("d", 10)]
    out = list(reorder(events, window_ms=1000))
    assert [e.session_id for e in out] == ["c", "a", "b", "d"]


@settings(max_examples=100, deadline=None, database=None)
@given(st.integers(0, 2000), st.lists(st.tuples(st.integers(0, 500), st.floats(0, 1)), max_size=40))
def test_reorder_sorts_input_that_is_late_by_at_most_the_window(
    window: int, steps: list[tuple[int, float]]
) -> None:
    newest = 0
    times = []
    for advance, late in steps:
        newest += advance
        times.append(newest - int(late * window))
    out = list(reorder([ev("a", t) for t in times], window))
    assert [e.ts - T0 for e in out] == sorted(times)


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.integers(0, 5000), max_size=40), st.integers(0, 2000))
def test_reorder_property(times: list[int], window: int) -> None:
    events = [ev("a", t) for t in times]
    out = list(reorder(events, window))
    assert sorted(e.event_id for e in out) == sorted(e.event_id for e in events)
    newest = 0
    in_window = True
    for t in times:
        in_window &= t >= newest - window
        newest = max(newest, t)
    if in_window:
        assert [e.ts for e in out] == sorted(e.ts for e in events)


def test_parse_lines_counts_invalid_input_by_reason() -> None:
    stats = RunStats()
    lines: list[bytes | str] = [
        b'{"session_id":"a","ts":1700000000000,"type":"click"}',
        b"",
        "  ",
        b"{",
        b"[]",
        '{"session_id":"a","ts":1700000000,"type":"click"}',
    ]
    parsed = list(parse_lines(lines, PARSER, stats))
    assert len(parsed) == 1
    assert dict(stats.invalid) == {"not_json": 1, "not_object": 1, "bad_ts": 1}
    assert (stats.lines, stats.valid_lines) == (4, 1)  # blank lines are not counted
    # line numbers count the blank lines too, as an editor does
    assert [(b.line, b.reason) for b in stats.bad_lines] == [
        (4, "not_json"),
        (5, "not_object"),
        (6, "bad_ts"),
    ]
    assert stats.bad_lines[2].detail == "epoch ms 1700000000 outside 1990..2200 (seconds sent?)"
    with pytest.raises(StopIteration):
        next(parse_lines([b"{"], PARSER))


def test_parse_lines_keeps_only_the_first_bad_lines_but_counts_all() -> None:
    stats = RunStats()
    list(parse_lines([b"{"] * (BAD_LINES_KEPT + 5), PARSER, stats))
    assert stats.invalid["not_json"] == BAD_LINES_KEPT + 5
    assert [b.line for b in stats.bad_lines] == list(range(1, BAD_LINES_KEPT + 1))


def test_parse_lines_never_raises_invalid_event() -> None:
    try:
        list(parse_lines([b"\xff", b"null", b"{}"], PARSER))
    except InvalidEvent:
        pytest.fail("parse_lines let an InvalidEvent escape")


# --------------------------------------------------------------------- roc auc
def brute_auc(scores: list[float], labels: list[bool]) -> float | None:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]) | st.floats(0, 1), st.booleans()
        ),
        max_size=60,
    )
)
def test_roc_auc_matches_brute_force(pairs: list[tuple[float, bool]]) -> None:
    scores = [s for s, _ in pairs]
    labels = [y for _, y in pairs]
    expected = brute_auc(scores, labels)
    got = roc_auc(scores, labels)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got == pytest.approx(expected, abs=1e-9)
        assert 0.0 <= got <= 1.0


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.1, 0.2, 0.8, 0.9], [False, False, True, True], 1.0),
        ([0.9, 0.8, 0.2, 0.1], [False, False, True, True], 0.0),
        ([0.5, 0.5, 0.5], [True, False, True], 0.5),
        ([0.3], [True], None),
        ([], [], None),
    ],
)
def test_roc_auc_examples(scores: list[float], labels: list[bool], expected: float | None) -> None:
    assert roc_auc(scores, labels) == expected


# ------------------------------------------------------------------ evaluation
SUMMARY_KEYS = [
    "sessions",
    "converters",
    "prefix_auc",
    "alerts_per_1000_sessions",
    "alert_precision",
    "lead_time_s_median",
    "lead_time_events_median",
    "by_kind",
]


@pytest.fixture(scope="module")
def small_run() -> tuple[list[Event], Simulator]:
    sim = Simulator(SimConfig(sessions=400, seed=5))
    return [PARSER.parse(e) for e in sim.events()], sim


@pytest.fixture(scope="module")
def evaluation(small_run: tuple[list[Event], Simulator]) -> Evaluation:
    events, _ = small_run
    return evaluate(events, CFG)


@pytest.fixture(scope="module")
def summary(evaluation: Evaluation) -> dict[str, Any]:
    return evaluation.summary()


def test_evaluate_summary_keys_and_ranges(
    summary: dict[str, Any], small_run: tuple[list[Event], Simulator]
) -> None:
    events, _ = small_run
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["sessions"] == len({e.session_id for e in events})
    assert summary["converters"] == len({e.session_id for e in events if e.type == "purchase"})
    assert 0 < summary["converters"] < summary["sessions"]
    assert set(summary["prefix_auc"]) == {"0.25", "0.5", "0.75"}
    for auc in summary["prefix_auc"].values():
        assert auc is None or 0.0 <= auc <= 1.0
    assert summary["alerts_per_1000_sessions"] >= 0
    precision = summary["alert_precision"]
    assert precision is None or 0.0 <= precision <= 1.0
    for key in ("lead_time_s_median", "lead_time_events_median"):
        assert summary[key] is None or summary[key] >= 0
    assert set(summary["by_kind"]) == {"hesitation", "trust_loss", "friction_hotspot"}
    session_alerts = summary["by_kind"]["hesitation"] + summary["by_kind"]["trust_loss"]
    assert summary["alerts_per_1000_sessions"] == pytest.approx(
        1000 * session_alerts / summary["sessions"], abs=0.01
    )
    assert summary["events"] == len(events)
    assert sum(summary["closed_by_outcome"].values()) == summary["sessions"]


def test_evaluate_with_truth(
    small_run: tuple[list[Event], Simulator], evaluation: Evaluation
) -> None:
    _, sim = small_run
    result = replace(evaluation, truth=sim.ground_truth()).summary()["truth"]
    assert result["sessions"] == result["sessions_matched"] == len(sim.truth)
    for kind in ("friction", "hesitation"):
        recall = result[f"{kind}_recall"]
        assert recall is None or 0.0 <= recall <= 1.0
    assert [i["key"] for i in result["incidents"]] == ["checkout/2"]
    assert result["late_window_s"] == CFG.session_timeout_ms / 1000


def test_truth_of_another_simulation_gives_no_truth_figures(evaluation: Evaluation) -> None:
    other = Simulator(SimConfig(sessions=50, seed=99))
    for _ in other.events():
        pass
    result = replace(evaluation, truth=other.ground_truth()).summary()["truth"]
    assert result["sessions"] == len(other.truth) and result["sessions_matched"] == 0
    assert result["not_available"] == "the ground truth matches no session of the events"
    assert "friction_recall" not in result and "incidents" not in result


def test_summary_is_pure_and_derived_figures_need_no_summary_first(
    evaluation: Evaluation, summary: dict[str, Any]
) -> None:
    fresh = replace(evaluation)  # same run, nothing asked yet
    points = fresh.prefix_points()  # before any summary
    assert {k: len(v) for k, v in points.items()} == dict.fromkeys(
        points, summary["prefix_sessions"]
    )
    lead_s, lead_events = fresh.lead_times()
    assert len(lead_s) == len(lead_events)
    before = copy.deepcopy(vars(fresh))
    assert (
        fresh.summary()
        == fresh.summary()
        == summary
        | {
            "seconds": summary["seconds"],
            "events_per_s": summary["events_per_s"],
        }
    )
    assert vars(fresh) == before  # summary() changed nothing


def test_a_handful_of_sessions_reports_no_auc_but_says_why() -> None:
    sim = Simulator(SimConfig(sessions=4, seed=3))
    events = [PARSER.parse(e) for e in sim.events()]
    result = evaluate(events, CFG).summary()
    assert result["sessions"] <= 6
    assert all(v is None for v in result["prefix_auc"].values())
    assert result["trust_model"]["rolling_auc"] is None
    assert result["trust_model"]["rolling_log_loss"] is None
    reasons = result["not_available"]
    assert reasons["prefix_auc"].endswith(f"need {MIN_PER_OUTCOME}")
    assert reasons["trust_model"].startswith(f"learned {result['sessions']} sessions, ")


def test_enough_of_both_outcomes_gives_an_auc(summary: dict[str, Any]) -> None:
    assert summary["converters"] >= MIN_PER_OUTCOME
    assert all(v is not None for v in summary["prefix_auc"].values())
    assert summary["trust_model"]["rolling_auc"] is not None
    assert "prefix_auc" not in summary["not_available"]
    assert "trust_model" not in summary["not_available"]


def test_labels_are_counted_given_and_matched(
    small_run: tuple[list[Event], Simulator], evaluation: Evaluation
) -> None:
    events, _ = small_run
    sid = events[0].session_id
    labels = {sid: True, "not-a-session": False, "nor-this": True}
    result = replace(evaluation, labels=labels)
    assert result.label_match() == LabelMatch(given=3, matched=1)
    assert result.label_match().low  # 1 of 3 is below half
    outcomes = result.summary()["outcomes"]
    assert (outcomes["labels_given"], outcomes["labels_matched"]) == (3, 1)
    assert outcomes["feed"] == ["converters", "prefix_auc", "alert_precision", "lead_time"]
    assert LOW_MATCH_SHARE == 0.5


def test_ground_truth_round_trips_through_json(small_run: tuple[list[Event], Simulator]) -> None:
    _, sim = small_run
    truth = sim.ground_truth()
    lines = [json.dumps(record) for record in truth.records()]
    again = GroundTruth.from_jsonl(lines)
    assert again == truth
    assert again.incidents == [
        Incident("checkout/2", sim.incident_start, sim.incident_end, again.incidents[0].reason)
    ]
    kinds = {e.kind for s in again.sessions.values() for e in s.episodes}
    assert kinds == {"friction", "hesitation"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"session_id":"a","ts":1,"type":"page_view"}'], "line 1 is an event"),
        (["session_id,converted", "a,1"], "line 1 is not JSON (a CSV?)"),
        (['{"record":"incident","key":"checkout/2"}'], "line 1: malformed incident record"),
        (["", '{"record":"mystery"}'], "line 2: unknown record 'mystery'"),
        (["[1, 2]"], "line 1 is not a JSON object"),
    ],
)
def test_ground_truth_refuses_what_it_is_not(lines: list[str], message: str) -> None:
    with pytest.raises(TruthError, match=re.escape(message)):
        GroundTruth.from_jsonl(lines)


def test_labels_override_the_goal_event(
    small_run: tuple[list[Event], Simulator], evaluation: Evaluation, summary: dict[str, Any]
) -> None:
    events, _ = small_run
    buyers = sorted({e.session_id for e in events if e.type == "purchase"})
    others = sorted({e.session_id for e in events} - set(buyers))
    labels = {buyers[0]: False, buyers[1]: False, others[0]: True}
    relabelled = evaluate(events, CFG, labels=labels).summary()
    assert relabelled["converters"] == summary["converters"] - 1
    assert relabelled["sessions"] == summary["sessions"]
    result = replace(evaluation, labels=dict.fromkeys(buyers + others, True)).summary()
    assert result["converters"] == result["sessions"]
    assert all(v is None for v in result["prefix_auc"].values())  # one class only
    assert result["alert_precision"] in (None, 0.0)


def test_read_labels() -> None:
    lines = [
        "session_id,converted",
        "a,1",
        "b,0",
        "",
        "c,true",
        "d,FALSE",
        "e, yes ",
        "f,no",
        " g , T ",
    ]
    assert read_labels(lines) == {
        "a": True,
        "b": False,
        "c": True,
        "d": False,
        "e": True,
        "f": False,
        "g": True,
    }
    assert read_labels(["a,1", "b,0"]) == {"a": True, "b": False}  # no header


@pytest.mark.parametrize(
    ("lines", "line_no"),
    [
        (["a,1", "b,maybe"], 2),
        (["session_id,converted", "a"], 2),
        (["a,1", "session_id,converted"], 2),
        (["lonely"], 1),
    ],
)
def test_read_labels_rejects_garbage_naming_the_line(lines: list[str], line_no: int) -> None:
    with pytest.raises(ValueError, match=f"line {line_no}"):
        read_labels(lines)


def test_read_minimal_truth() -> None:
    lines = [
        '{"record":"incident","key":"checkout/2","start_ts":1,"end_ts":2}',
        "",
        '{"record":"session","session_id":"a","episodes":[]}',
    ]
    truth = GroundTruth.from_jsonl(lines)
    assert truth.incidents == [Incident("checkout/2", 1, 2, "")]
    assert set(truth.sessions) == {"a"}
    assert truth.simulation is None and truth.arrivals_end_ts == 0
