"""``disengage evaluate``, tried as a new user would: one test per finding.

Each runs the command as a subprocess (``conftest.disengage``: no traceback
allowed on stderr) and checks the message and the exit code. Inputs and the
plot path are checked before the run (exit 2); labels and ground truth that
do not match the events are said, not ignored; figures a small sample
cannot support read "n/a (reason)"; a hotspot detected after its incident
ended is late, not missed; traffic tailing off raises no hotspot.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.cli import main
from tests.cli.conftest import ROOT, Disengage

GOLDEN = ROOT / "tests" / "golden"


def _stream(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m stream ARGS`` on this tree's code; fails the test on an error."""
    proc = subprocess.run(
        [sys.executable, "-m", "stream", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 simulated sessions (seed 7) with their ground truth beside them."""
    events = tmp_path_factory.mktemp("sim") / "events.jsonl"
    _stream("simulate", "--sessions", "300", "-o", str(events))
    return events


@pytest.fixture(scope="module")
def other_truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ground truth of another simulation (seed 8)."""
    events = tmp_path_factory.mktemp("other") / "other.jsonl"
    _stream("simulate", "--sessions", "50", "--seed", "8", "-o", str(events))
    return events.with_name("other.truth.jsonl")


def test_labels_that_match_no_session_are_said_not_ignored(
    disengage: Disengage, tmp_path: Path
) -> None:
    labels = tmp_path / "crm.csv"
    labels.write_text("session_id,converted\nCRM-001,1\nCRM-002,0\nCRM-003,1\n")
    run = disengage("evaluate", str(GOLDEN / "session_mix.jsonl"), "--labels", str(labels))
    assert run.code == 0
    assert "labels: 3 given, 0 matched" in run.err_lines
    assert any("warning: no label names a session of the events" in e for e in run.err_lines)
    outcomes = next(line for line in run.out.splitlines() if line.startswith("outcomes"))
    assert "labels: 3 given, 0 matched" in outcomes
    assert "they feed converters, prefix AUC, alert precision, lead time" in outcomes


def test_labels_that_match_are_counted_without_a_warning(
    disengage: Disengage, tmp_path: Path
) -> None:
    labels = tmp_path / "crm.csv"
    labels.write_text("golden-harmless,1\ngolden-buyer,0\n")
    run = disengage("evaluate", str(GOLDEN / "session_mix.jsonl"), "--labels", str(labels))
    assert run.code == 0
    assert "labels: 2 given, 2 matched" in run.err_lines
    assert not any("warning" in line for line in run.err_lines)


def test_truth_of_another_simulation_is_said_and_its_figures_are_na(
    disengage: Disengage, simulated: Path, other_truth: Path
) -> None:
    run = disengage("evaluate", str(simulated), "--truth", str(other_truth))
    assert run.code == 0
    assert any("the ground truth matches no session of the events" in e for e in run.err_lines)
    assert "friction recall" not in run.out  # no "friction recall 0.0"
    assert "n/a (the ground truth matches no session of the events)" in run.out
    assert "ground truth        " in run.out and ", 0 matched; it feeds friction" in run.out


def test_truth_next_to_the_events_is_found_and_matches(
    disengage: Disengage, simulated: Path
) -> None:
    run = disengage("evaluate", str(simulated), "--json")
    assert run.code == 0 and not any("warning" in e for e in run.err_lines)
    truth = json.loads(run.out)["truth"]
    assert truth["sessions"] == truth["sessions_matched"] > 300


PREFIX_KEYS = {"0.25", "0.5", "0.75"}


def test_json_carries_the_activity_metrics_and_the_offline_reference(
    disengage: Disengage, simulated: Path
) -> None:
    run = disengage("evaluate", str(simulated), "--json")
    assert run.code == 0
    summary = json.loads(run.out)
    activity = summary["activity_auc"]
    assert set(activity) == {"events", "page_views", "clicks", "seconds"}
    for per_prefix in activity.values():
        assert set(per_prefix) == PREFIX_KEYS
        assert all(0.0 <= auc <= 1.0 for auc in per_prefix.values())
    for key, best in summary["best_activity_auc"].items():
        assert best["auc"] == max(activity[m][key] for m in activity)
        assert activity[best["metric"]][key] == best["auc"]
    offline = summary["offline_auc"]  # scikit-learn is in the test environment
    assert set(offline) == PREFIX_KEYS and all(0.0 <= a <= 1.0 for a in offline.values())
    assert "offline_auc" not in summary["not_available"]
    assert set(summary["by_kind_quality"]) == {"hesitation", "trust_loss"}


def test_the_report_sets_trust_next_to_activity_and_the_offline_reference(
    disengage: Disengage, simulated: Path
) -> None:
    run = disengage("evaluate", str(simulated))
    assert run.code == 0
    lines = run.out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("prefix AUC")))
    assert lines[header].split() == ["prefix", "AUC", "trust", "best", "activity", "metric",
                                     "offline", "reference"]  # fmt: skip
    for row, share in zip(lines[header + 1 : header + 4], ("25%", "50%", "75%"), strict=True):
        assert re.fullmatch(
            rf"  at {share} +0\.\d+ +0\.\d+ \((events|page views|clicks|seconds)\) +0\.\d+",
            row,
        ), row
    verdict = next(line for line in lines if line.startswith("trust vs activity"))
    assert "ahead of the best activity metric at every prefix" in verdict or (
        "not ahead at every prefix: " in verdict
    )
    assert re.fullmatch(
        r"trust vs offline    \d\.\d+ (below|above) the offline reference at 50%",
        next(line for line in lines if line.startswith("trust vs offline")),
    )


def test_no_offline_leaves_the_reference_out_and_says_so(
    disengage: Disengage, simulated: Path
) -> None:
    run = disengage("evaluate", str(simulated), "--json", "--no-offline")
    assert run.code == 0
    summary = json.loads(run.out)
    assert summary["offline_auc"] is None
    assert summary["not_available"]["offline_auc"] == "skipped with --no-offline"
    text = disengage("evaluate", str(simulated), "--no-offline").out.splitlines()
    assert "offline reference   n/a (skipped with --no-offline)" in text
    assert not any(line.startswith("trust vs offline") for line in text)


def test_truth_that_is_an_events_file_stops_before_the_run(
    disengage: Disengage, simulated: Path
) -> None:
    run = disengage("evaluate", str(simulated), "--truth", str(simulated))
    assert run.code == 2
    assert run.out == ""
    assert run.err_lines == [
        f"disengage evaluate: --truth {simulated} is not simulator ground truth: line 1 is an "
        "event, not a ground-truth record: this is an events file (ground truth is the "
        "<events>.truth.jsonl that 'disengage simulate' writes)"
    ]


def test_truth_that_is_a_csv_stops_before_the_run(
    disengage: Disengage, simulated: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "truth.csv"
    csv.write_text("session_id,persona\nabc,bouncer\n")
    run = disengage("evaluate", str(simulated), "--truth", str(csv))
    assert run.code == 2
    assert run.out == ""
    assert run.err_lines == [
        f"disengage evaluate: --truth {csv} is not simulator ground truth: "
        "line 1 is not JSON (a CSV?)"
    ]


def test_missing_truth_file_is_a_usage_error(disengage: Disengage, simulated: Path) -> None:
    run = disengage("evaluate", str(simulated), "--truth", "nope.truth.jsonl")
    assert run.code == 2
    assert run.err_lines == [
        "disengage evaluate: cannot read --truth nope.truth.jsonl: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("/nonexistent/r.png", "cannot write --plot /nonexistent/r.png: No such file or directory"),
        (".", "cannot write --plot .: it is a directory"),
        ("report.txt", "cannot write --plot report.txt: matplotlib writes avif, eps"),
    ],
)
def test_a_plot_path_that_cannot_be_written_stops_before_the_run(
    disengage: Disengage, simulated: Path, plot: str, message: str
) -> None:
    run = disengage("evaluate", str(simulated), "--plot", plot)
    assert run.code == 2
    assert run.out == ""
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith(f"disengage evaluate: {message}")


def test_a_plot_that_fails_after_the_run_keeps_the_report(
    simulated: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stream.commands.plots

    def failing_plot(result: object, path: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stream.commands.plots, "plot_report", failing_plot)
    assert main(["evaluate", str(simulated), "--plot", str(tmp_path / "r.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("sessions            ")
    assert "friction recall" in captured.out  # the whole report
    assert captured.err.strip().splitlines()[-1] == (
        "disengage evaluate: the plot failed (OSError: [Errno 28] No space left on device); "
        "the report is complete"
    )


def test_a_handful_of_sessions_reports_na_with_the_reason(disengage: Disengage) -> None:
    run = disengage("evaluate", str(GOLDEN / "session_mix.jsonl"))  # 4 sessions
    assert run.code == 0
    lines = {line[:20].strip(): line[20:] for line in run.out.splitlines()}
    assert lines["trust prefix AUC"] == "n/a (only 1 session with a purchase; need 10)"
    assert (
        lines["trust model"] == "n/a (learned 4 sessions, only 1 session with a purchase; need 10)"
    )
    assert "rolling AUC 0." not in run.out


def test_an_empty_file_reports_no_auc(disengage: Disengage, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    run = disengage("evaluate", str(empty))
    assert run.code == 1
    assert "AUC" not in run.out and "0.69" not in run.out
    assert run.err_lines[-1].startswith("disengage evaluate: no events in ")


@pytest.fixture(scope="module")
def late_incident(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The report of 2000 simulated sessions (seed 7): the checkout incident
    is found 1.5 s after it ended, and traffic tails off at the end."""
    events = tmp_path_factory.mktemp("late") / "events.jsonl"
    _stream("simulate", "--sessions", "2000", "-o", str(events))
    return _stream("evaluate", str(events), "--no-offline").stdout


def test_a_detection_after_the_incident_ended_is_late_not_missed(late_incident: str) -> None:
    assert "NOT detected" not in late_incident
    assert (
        "hotspot incident    checkout/2: detected late, 1.5 s after the incident ended "
        "(151.5 s after it started)"
    ) in late_incident.splitlines()


def test_traffic_tailing_off_at_the_end_raises_no_false_hotspot(late_incident: str) -> None:
    # before the traffic check, 10 high-severity hotspots fired on every page
    # type after the arrivals ended, and the summary printed only their count
    assert "false hotspots      0 outside incidents" in late_incident.splitlines()
    assert "friction_hotspot 1" in late_incident
