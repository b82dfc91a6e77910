"""``benchmarks/bench_quality.py``: its recall, its targets and a small run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.offline.evaluation import evaluate
from tests.builders import T0
from tests.unit.test_prefix_features import dead_clicks

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_quality", ROOT / "benchmarks" / "bench_quality.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_recall_counts_alerts_between_the_episode_start_and_the_last_event() -> None:
    # both sessions get a trust_loss alert among their dead clicks (1-7 s in)
    events = dead_clicks("early", 0, buys=False) + dead_clicks("late", 3_600_000, buys=False)
    result = evaluate(events, DetectorConfig())
    episodes = [
        ("early", "friction", T0),  # starts before the alert: found
        ("late", "friction", T0 + 3_600_000 + 30_000),  # starts after it: missed
        ("early", "hesitation", T0),
        ("absent", "hesitation", T0),  # a session not in the events
    ]
    session_alerts = {"hesitation", "trust_loss"}
    friction = bench.episode_recall(result, episodes, "friction", session_alerts)
    assert friction == {"sessions": 2, "recall": 0.5}
    hesitation = bench.episode_recall(result, episodes, "hesitation", {"hesitation"})
    assert hesitation == {"sessions": 2, "recall": 0.0}  # a trust_loss alert does not count
    anything = bench.episode_recall(result, episodes, "hesitation", session_alerts)
    assert anything == {"sessions": 2, "recall": 0.5}


def row(**figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "converters": 150,
        "trust_auc": {"0.25": 0.8, "0.5": 0.85, "0.75": 0.9},
        "best_activity_auc": {k: {"metric": "events", "auc": 0.7} for k in ("0.25", "0.5", "0.75")},
        "offline_auc": {"0.25": 0.82, "0.5": 0.93, "0.75": 0.95},
    }
    return base | figures


def test_targets_are_checked_not_asserted() -> None:
    shop = {t["target"]: t for t in bench.targets("shop", row())}
    assert shop["within 0.05 of the offline reference at 50%"] == {
        "target": "within 0.05 of the offline reference at 50%",
        "value": -0.08,
        "met": False,
    }
    margin = shop["trust above the best activity metric by >= 0.05 at every prefix"]
    assert margin["value"] == 0.1 and margin["met"] is True
    few = bench.targets("diginetica", row(converters=40, offline_auc=None))
    assert few == [
        {"target": "at least the offline reference - 0.03 at 75%", "value": None, "met": None}
    ]


def test_a_small_run_emits_one_row_per_dataset_and_says_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--sessions", "40", "--only", "simulator", "--only", "diginetica", "--json"]
    code = bench.main([*args, "--no-offline", "--floor", "0", "--data", str(tmp_path)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["datasets"]) == ["simulator"]
    sim = out["datasets"]["simulator"]
    assert sim["sessions"] >= 40 and set(sim["recall"]) == {
        "hesitation",
        "hesitation_any_alert",
        "friction_any_alert",
    }
    assert sim["offline_auc"] is None
    assert out["skipped"] == {"diginetica": f"{tmp_path / 'diginetica_sample'} is absent "
                                            "(views and purchases CSV)"}  # fmt: skip
