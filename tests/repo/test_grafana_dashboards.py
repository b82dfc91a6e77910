"""Grafana provisioning and dashboards: structure, and no drift from their source.

Whether every panel's query returns data from a real worker is checked by
tests/integration/test_prometheus_grafana.py.
"""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.monitoring import (
    ROOT,
    dashboards,
    exported_metric_names,
    grafana_expr,
    metric_names,
    panels,
)

GRAFANA = ROOT / "deploy" / "grafana"


def test_json_is_what_the_builder_writes() -> None:
    proc = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_dashboards_have_fixed_unique_uids_and_titles() -> None:
    boards = dashboards()
    assert set(boards) == {"pipeline.json", "disengagement.json"}
    uids = [b["uid"] for b in boards.values()]
    assert uids == sorted(set(uids), key=uids.index) and all(uids)
    assert {b["title"] for b in boards.values()} == {
        "disengage / Pipeline",
        "disengage / Disengagement",
    }


def test_every_panel_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in provisioned if d["type"] == "prometheus"}
    for name, board in dashboards().items():
        for panel in panels(board):
            assert panel["datasource"]["uid"] in uids, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for t in panel["targets"]:
                assert t["datasource"]["uid"] in uids, (name, panel["title"])
                assert t["expr"].strip(), (name, panel["title"])


def test_panels_do_not_overlap() -> None:
    for name, board in dashboards().items():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            area = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not area & cells, f"{name}: '{panel['title']}' overlaps another panel"
            cells |= area


def test_panels_read_only_exported_metrics_and_known_variables() -> None:
    exported = exported_metric_names()
    for name, board in dashboards().items():
        for panel in panels(board):
            for t in panel["targets"]:
                expr = grafana_expr(t["expr"])  # fails on an unknown variable
                unknown = metric_names(expr) - exported
                assert not unknown, f"{name}: '{panel['title']}' reads {unknown}"


def test_the_issue_panels_are_there() -> None:
    titles = {name: {p["title"] for p in panels(b)} for name, b in dashboards().items()}
    assert {
        "Throughput in and out",
        "Consumer lag per partition",
        "Event to alert, p50 / p99",
        "Batch processing time, p50 / p99",
        "Dead-letter rate by reason",
        "Redis latency p99 and errors",
        "Workers up / ready",
    } <= titles["pipeline.json"]
    assert {
        "Alerts by kind and severity",
        "Trust-score distribution",
        "Trust model ROC-AUC and log-loss",
        "Top friction hotspots by page type and step",
        "Sessions closed by outcome",
        "Session alerts per 1000 sessions",
    } <= titles["disengagement.json"]


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "disengage.yml").read_text()
    )["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
