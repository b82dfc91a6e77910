"""Shared by the monitoring tests: Prometheus rules and Grafana dashboards as data."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))

#: What Grafana substitutes before a query reaches Prometheus. The values are
#: what the tests use: every worker, and rate windows of a few scrapes.
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "2s",
    "$__range": "5m",
    "$instance": ".*",
}


def promtool() -> str:
    """Path of promtool (Debian's ``prometheus`` package), or a clear failure."""
    path = shutil.which("promtool")
    if path is None:
        raise AssertionError(
            "promtool not found: install Debian's `prometheus` package "
            "(`make test` does it via deploy/local/system_deps.sh)"
        )
    return path


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "record" in r]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in DASHBOARD_FILES}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows excluded, nested row panels included)."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def grafana_expr(expr: str) -> str:
    """A panel's PromQL with Grafana's variables replaced."""
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    if "$" in expr:
        raise AssertionError(f"unknown Grafana variable in {expr!r}")
    return expr


METRIC_NAME = re.compile(r"(?<![:\w])(disengage_[a-z0-9_]+|process_[a-z_]+)\b")


def metric_names(expr: str) -> set[str]:
    """Names of the disengage/process metrics an expression reads."""
    return set(METRIC_NAME.findall(expr))


def exported_metric_names() -> set[str]:
    """Every sample name a worker's or a trainer's /metrics can carry."""
    from stream.metrics import Metrics, TrainerMetrics

    names: set[str] = set()
    families = [*Metrics().registry.collect(), *TrainerMetrics().registry.collect()]
    for family in families:
        name, kind = family.name, family.type
        if kind == "counter":
            names |= {name + "_total", name + "_created"}
        elif kind == "histogram":
            names |= {name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
        elif kind == "info":
            names.add(name + "_info")
        else:
            names.add(name)
    return names
