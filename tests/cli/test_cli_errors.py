"""Messages instead of tracebacks, checks before the work, and the right exit code.

Exit codes: 2 for usage (a bad option, an input that cannot be opened, an output
that cannot be written), 1 for a failure while running (Kafka unreachable).
Every run is a subprocess (see ``conftest.disengage``) and none may print a traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.conftest import Disengage


def test_simulate_to_a_missing_folder_fails_before_simulating(
    disengage: Disengage, tmp_path: Path
) -> None:
    run = disengage("simulate", "--sessions", "100000000", "-o", "/nonexistent/e.jsonl")
    assert run.code == 2  # at once: a hundred million sessions would take hours
    assert run.err_lines == [
        "disengage simulate: cannot write /nonexistent/e.jsonl: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--arrival-rate", "0"], "argument --arrival-rate: must be a number above 0"),
        (["simulate", "--sessions", "-5"], "argument --sessions: must be a positive whole number"),
        (["simulate", "--kafka", "--rate", "nan"], "argument --rate: must be a number above 0"),
        (["demo", "--speed", "0"], "argument --speed: must be a number above 0"),
        (["alerts", "tail", "-n", "0"], "argument -n/--limit: must be a positive whole number"),
        (["simulate"], "disengage simulate: -o/--output is required (or --kafka)"),
        (
            ["simulate", "-o", "e.jsonl", "--duration", "5"],
            "disengage simulate: --rate and --duration apply to --kafka only",
        ),
    ],
)
def test_bad_options_are_usage_errors(disengage: Disengage, args: list[str], message: str) -> None:
    run = disengage(*args)
    assert run.code == 2
    assert message in run.err_lines[-1]


def test_replay_to_an_unwritable_output_is_a_usage_error(
    disengage: Disengage, golden_events: Path
) -> None:
    run = disengage("replay", str(golden_events), "-o", "/nonexistent/alerts.jsonl")
    assert run.code == 2
    assert run.err_lines[-1] == (
        "disengage replay: cannot write /nonexistent/alerts.jsonl: No such file or directory"
    )


def test_simulate_dash_writes_to_stdout(disengage: Disengage, tmp_path: Path) -> None:
    run = disengage("simulate", "--sessions", "5", "-o", "-")
    assert run.code == 0
    events = [json.loads(line) for line in run.out.splitlines()]
    assert events and all({"session_id", "ts", "type"} <= set(e) for e in events)
    assert not (tmp_path / "-").exists() and not list(tmp_path.iterdir())
    assert f"wrote {len(events)} events of 5 visitors to stdout" in run.err


def test_simulate_to_a_file_writes_events_and_truth(disengage: Disengage, tmp_path: Path) -> None:
    run = disengage("simulate", "--sessions", "5", "-o", "e.jsonl")
    assert run.code == 0
    assert (tmp_path / "e.jsonl").stat().st_size > 0
    truth = [json.loads(line) for line in (tmp_path / "e.truth.jsonl").read_text().splitlines()]
    assert truth[0]["record"] == "simulation" and truth[0]["sessions"] == 5


@pytest.mark.parametrize("command", [["alerts", "tail"], ["simulate", "--kafka"]])
def test_without_kafka_one_line_says_so(
    disengage: Disengage, closed_port: int, command: list[str]
) -> None:
    run = disengage(*command, env={"DISENGAGE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}"})
    assert run.code == 1
    assert run.err_lines == [
        f"disengage {' '.join(command[:2] if command[0] == 'alerts' else command[:1])}: "
        f"cannot reach Kafka at 127.0.0.1:{closed_port} (KafkaConnectionError); is it running? "
        "DISENGAGE_KAFKA_BOOTSTRAP_SERVERS sets the address"
    ]


def test_demo_reports_a_real_rate_and_no_auc_before_any_purchase(disengage: Disengage) -> None:
    run = disengage("demo", "--duration", "1.5", "--speed", "600", "--plain")
    assert run.code == 0
    lines = run.out.splitlines()
    first_status = next(line for line in lines if line.startswith("STATUS "))
    # never "AUC 0.000" or 0.500 before both outcomes exist
    no_auc = r"trust AUC n/a \((no sessions|no session with a purchase; need 10)\)"
    assert re.search(no_auc, first_status)
    assert "events/s n/a" in first_status  # nothing measured yet
    summary = [line for line in lines if line.startswith("SUMMARY ")]
    assert len(summary) == 1
    rate = re.search(r"events/s ([\d,]+) ", summary[0])
    assert rate and int(rate.group(1).replace(",", "")) > 0


def test_simulate_never_truncates_the_events_file_when_the_truth_file_cannot_be_written(
    disengage: Disengage, tmp_path: Path
) -> None:
    events = tmp_path / "e.jsonl"
    events.write_text("kept\n")
    (tmp_path / "e.truth.jsonl").mkdir()  # the ground truth cannot go there
    run = disengage("simulate", "--sessions", "5", "-o", str(events))
    assert run.code == 2
    assert run.err_lines == [
        f"disengage simulate: cannot write {tmp_path / 'e.truth.jsonl'}: it is a directory"
    ]
    assert events.read_text() == "kept\n"


def test_convert_diginetica_names_a_file_that_is_not_what_it_says(
    disengage: Disengage, tmp_path: Path
) -> None:
    views = tmp_path / "views.csv"
    views.write_text("session_id;user_id;item_id;timeframe;eventdate\n1;NA;5;0;2016-05-09\n")
    run = disengage("convert", "diginetica", str(views), "--purchases", str(views))
    assert run.code == 1
    assert run.err_lines == [
        f"disengage convert: {views} is not DIGINETICA CSV: ValueError purchases: header "
        "['session_id', 'user_id', 'item_id', 'timeframe', 'eventdate'] is not "
        "sessionId;userId;timeframe;eventdate;ordernumber;itemId"
    ]
    run = disengage("convert", "otto", str(views), "--purchases", str(views))
    assert run.code == 2
    assert run.err_lines == ["disengage convert: --purchases applies to diginetica only"]
