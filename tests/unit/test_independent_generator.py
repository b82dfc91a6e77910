"""The independent journey generator (benchmarks/independent): contract, determinism, truth.

The generator is for evaluation only; these tests check that its output is valid input for
the detector and that its ground truth agrees with its events, not what the detector makes
of it.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.events import EventParser

HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "independent"
sys.path.insert(0, str(HERE))

import journeys  # noqa: E402

SITES = ("shop", "travel", "b2b")
SESSIONS = 300


@cache
def _run(site: str, seed: int = 3) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return journeys.generate(site, SESSIONS, seed)


def _by_session(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        sessions[event["session_id"]].append(event)
    return sessions


@pytest.mark.parametrize("site", SITES)
def test_every_event_parses_with_the_projects_parser(site: str) -> None:
    events, _ = _run(site)
    parser = EventParser(DetectorConfig(goal_event=journeys.goal_of(site)))
    for event in events:
        parsed = parser.parse(event)
        assert parsed.session_id == event["session_id"]
        assert parsed.page_type == event.get("page_type")
    # the same holds for the JSON text the CLI writes
    parser.parse(json.dumps(events[0]).encode())


@pytest.mark.parametrize("site", SITES)
def test_output_is_deterministic_for_a_seed_and_differs_across_seeds(site: str) -> None:
    assert journeys.generate(site, 60, 9) == journeys.generate(site, 60, 9)
    assert journeys.generate(site, 60, 9)[0] != journeys.generate(site, 60, 10)[0]


@pytest.mark.parametrize("site", SITES)
def test_events_are_sorted_unique_and_sessions_overlap(site: str) -> None:
    events, truth = _run(site)
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)
    assert all(isinstance(ts, int) for ts in stamps)
    assert len({e["event_id"] for e in events}) == len(events)
    sessions = _by_session(events)
    assert set(sessions) == {t["session_id"] for t in truth}
    spans = sorted((s[0]["ts"], s[-1]["ts"]) for s in sessions.values())
    overlapping = sum(1 for a, b in pairwise(spans) if b[0] < a[1])
    assert overlapping > SESSIONS // 4
    for session in sessions.values():  # never silent long enough for the 30 min timeout
        gaps = [b["ts"] - a["ts"] for a, b in pairwise(session)]
        assert max(gaps, default=0) < 30 * 60 * 1000


@pytest.mark.parametrize("site", SITES)
def test_converted_matches_the_goal_event_and_the_goal_ends_the_journey(site: str) -> None:
    events, truth = _run(site)
    goal = journeys.goal_of(site)
    sessions = _by_session(events)
    converters = 0
    for record in truth:
        session = sessions[record["session_id"]]
        types = [e["type"] for e in session]
        assert record["converted"] == (goal in types), record
        if record["converted"]:
            converters += 1
            assert types.count(goal) == 1
            after = session[types.index(goal) + 1 :]
            assert len(after) <= 8
            assert {e.get("page_type") for e in after[1:]} <= {"confirmation"}
    assert 0.02 * SESSIONS <= converters <= 0.2 * SESSIONS


@pytest.mark.parametrize("site", SITES)
def test_truth_episodes_agree_with_flags_and_lie_inside_the_visit(site: str) -> None:
    events, truth = _run(site)
    sessions = _by_session(events)
    for record in truth:
        kinds = {e["kind"] for e in record["episodes"]}
        assert record["hesitant"] == ("hesitation" in kinds)
        assert record["frustrated"] == ("friction" in kinds)
        first = sessions[record["session_id"]][0]["ts"]
        for episode in record["episodes"]:
            assert first <= episode["start_ts"] <= episode["end_ts"]
    assert any(t["hesitant"] for t in truth) and any(t["frustrated"] for t in truth)


@pytest.mark.parametrize("site", SITES)
def test_each_site_has_a_hesitant_and_a_frustrated_persona(site: str) -> None:
    _, personas = journeys.SITES[site]
    assert any(p.may_hesitate for p in personas)
    assert any(p.may_frustrate for p in personas)
    assert sum(p.share for p in personas) == pytest.approx(1.0)
    _, truth = _run(site)
    flagged = {t["persona"] for t in truth if t["hesitant"] or t["frustrated"]}
    assert flagged <= {p.name for p in personas if p.may_hesitate or p.may_frustrate}


def test_cli_writes_events_and_truth_as_jsonl_and_gzip(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl.gz", tmp_path / "truth.jsonl"
    argv = ["--site", "b2b", "--sessions", "25", "--seed", "4", "--out", str(out)]
    assert journeys.main([*argv, "--truth", str(truth)]) == 0
    with gzip.open(out, "rt", encoding="utf-8") as lines:
        written = [json.loads(line) for line in lines]
    expected_events, expected_truth = journeys.generate("b2b", 25, 4)
    assert written == expected_events
    assert [json.loads(line) for line in truth.read_text().splitlines()] == expected_truth
