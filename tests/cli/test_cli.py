"""The command line, run in-process: golden replay, evaluate, convert, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from stream.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _alerts(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_golden_replay_matches_expected_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(GOLDEN / "session_mix.jsonl"), "-o", str(out)]) == 0
    assert _alerts(out) == _alerts(GOLDEN / "session_mix.alerts.jsonl")
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["invalid"] == {"not_json": 1, "unknown_type": 1}
    assert summary["statuses"]["duplicate"] == 1
    assert summary["statuses"]["after_close"] == 1  # confirmation view after purchase


def test_replaying_twice_gives_identical_alert_ids(tmp_path: Path) -> None:
    doubled = tmp_path / "doubled.jsonl"
    lines = (GOLDEN / "session_mix.jsonl").read_text().splitlines()
    doubled.write_text("\n".join(line for line in lines for _ in range(2)) + "\n")
    out = tmp_path / "alerts.jsonl"
    assert main(["replay", str(doubled), "-o", str(out)]) == 0
    assert [a["id"] for a in _alerts(out)] == [
        a["id"] for a in _alerts(GOLDEN / "session_mix.alerts.jsonl")
    ]


def test_simulate_then_evaluate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    assert main(["simulate", "--sessions", "600", "--seed", "5", "-o", str(events)]) == 0
    assert (tmp_path / "events.truth.jsonl").exists()
    capsys.readouterr()
    plot = tmp_path / "report.png"
    assert main(["evaluate", str(events), "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "sessions",
        "converters",
        "prefix_auc",
        "alerts_per_1000_sessions",
        "alert_precision",
        "lead_time_s_median",
        "lead_time_events_median",
        "by_kind",
    ):
        assert key in report
    assert set(report["prefix_auc"]) == {"0.25", "0.5", "0.75"}
    assert report["sessions"] > 600  # researchers come back for more visits
    assert 0 < report["converters"] < report["sessions"]
    assert report["truth"]["friction_episodes"] > 0
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_labels_override_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("session_id,converted\ngolden-harmless,1\ngolden-buyer,0\n")
    assert (
        main(["evaluate", str(GOLDEN / "session_mix.jsonl"), "--labels", str(labels), "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    # the goal event says golden-buyer converted; the CRM labels say otherwise
    assert report["converters"] == 1
    assert report["sessions"] == 4


def test_evaluate_rejects_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("s1,1\ns2,maybe\n")
    assert main(["evaluate", str(GOLDEN / "session_mix.jsonl"), "--labels", str(labels)]) == 2
    assert "labels line 2: converted must be 1/0 or true/false" in capsys.readouterr().err


def test_otto_sample_real_data_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = SHARED / "otto_sample" / "train.jsonl"
    if not sample.parent.is_dir():
        pytest.skip(f"real-data smoke test needs {sample.parent} (shared data folder absent)")
    events = tmp_path / "otto.jsonl"
    assert main(["convert", "otto", str(sample), "-o", str(events)]) == 0
    raw = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
    n_events = sum(len(r["events"]) for r in raw)
    assert len(events.read_text().splitlines()) == n_events
    capsys.readouterr()
    assert main(["evaluate", str(events), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == n_events
    assert report["invalid_events"] == {}
    ordering_visits = {
        e["session_id"]
        for e in map(json.loads, events.read_text().splitlines())
        if e["type"] == "purchase"
    }
    assert report["converters"] == len(ordering_visits) > 0
    assert report["sessions"] >= len(raw)


def test_diginetica_sample_real_data_smoke(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every view and every order of the real sample becomes one event, sessions
    keep their ids, and the buyers are the sessions with a purchase row."""
    folder = SHARED / "diginetica_sample"
    if not folder.is_dir():
        pytest.skip(f"real-data smoke test needs {folder} (shared data folder absent)")
    views_file = folder / "train-item-views.sample.csv"
    orders_file = folder / "train-purchases.sample.csv"
    views = [line.split(";") for line in views_file.read_text().splitlines()[1:] if line]
    orders = [line.split(";") for line in orders_file.read_text().splitlines()[1:] if line]
    events = tmp_path / "diginetica.jsonl"
    argv = ["convert", "diginetica", str(views_file), "--purchases", str(orders_file)]
    assert main([*argv, "-o", str(events)]) == 0
    converted = [json.loads(line) for line in events.read_text().splitlines()]
    by_type = Counter(e["type"] for e in converted)
    assert by_type == {"page_view": len(views), "purchase": len({(o[0], o[4]) for o in orders})}
    assert {e["session_id"] for e in converted} == {f"dgn-{v[0]}" for v in views}
    assert "NA" not in {e.get("user_id") for e in converted}
    capsys.readouterr()
    assert main(["evaluate", str(events), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == len(converted)
    assert report["invalid_events"] == {}
    assert report["converters"] == len({o[0] for o in orders}) > 100


def test_demo_plain_runs_for_its_duration() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stream", "demo", "--duration", "4", "--speed", "600"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("STATUS ") for line in lines)
    summary = [line for line in lines if line.startswith("SUMMARY ")]
    assert len(summary) == 1 and "events/s" in summary[0] and "trust AUC" in summary[0]
    assert "\x1b[" not in proc.stdout  # no terminal: no escape codes


def test_bad_settings_give_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISENGAGE_STALL_MS", "two minutes")
    with pytest.raises(SystemExit, match="DISENGAGE_STALL_MS"):
        main(["replay", str(GOLDEN / "session_mix.jsonl"), "-o", "/dev/null"])


def test_settings_logged_by_the_worker_mask_every_secret() -> None:
    from stream.settings import Settings

    secrets = {
        "DISENGAGE_REDIS_URL": "redis://user:hunter2@redis:6379/0",
        "DISENGAGE_KAFKA_SASL_PASSWORD": "s3cret-sasl",
        "DISENGAGE_REDIS_PASSWORD": "s3cret-redis",
        "DISENGAGE_WEBHOOK_URL": "https://hooks.example/T0/B0/s3cret-path",
    }
    shown = str(Settings.from_env(secrets).redacted())
    for needle in ("hunter2", "s3cret-sasl", "s3cret-redis", "s3cret-path"):
        assert needle not in shown
    assert "redis://***@redis:6379/0" in shown
