#!/usr/bin/env python3
"""Grafana dashboards as code: writes deploy/grafana/dashboards/*.json.

  python deploy/grafana/build_dashboards.py          # rewrite the JSON files
  python deploy/grafana/build_dashboards.py --check  # exit 1 if they are out of date

The JSON files are what Grafana provisions (``provisioning/dashboards/disengage.yml``);
this script is their source, so every panel is built the same way and a test
(``tests/repo/test_grafana_dashboards.py``) fails when the files drift from it. Every
PromQL expression here is evaluated against a real Prometheus scraping a real
worker by ``tests/integration/test_prometheus_grafana.py``.

Standard library only. Dashboards have fixed ``uid`` values so links and
provisioning survive re-imports; the datasource uid ``prometheus`` is fixed in
``provisioning/datasources/prometheus.yml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
#: Every query filters on the dashboard's ``instance`` variable.
SEL = 'job="disengage-worker", instance=~"$instance"'
RI = "$__rate_interval"

Panel = dict[str, Any]


class Layout:
    """Places panels left to right on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, panel: Panel, w: int, h: int) -> Panel:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def row(self, title: str) -> Panel:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {
            "type": "row",
            "title": title,
            "collapsed": False,
            "panels": [],
            "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
            "id": self.next_id,
        }
        self.next_id += 1
        self.y += 1
        return panel


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "refId": ref,
        "range": True,
    }
    out.update(extra)
    return out


def quantile(q: float, histogram: str, by: str = "le", match: str = "") -> str:
    """The ``q`` quantile of a worker histogram over the rate interval, summed
    ``by`` its labels (``match``: more label matchers)."""
    selector = f"{SEL}, {match}" if match else SEL
    return (
        f"histogram_quantile({q}, sum by ({by}) (rate("
        f"{histogram}_bucket{{{selector}}}[{RI}])))"
    )


def targets(*items: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(items)]


def timeseries(
    title: str,
    description: str,
    queries: list[dict[str, Any]],
    unit: str = "short",
    stack: bool = False,
    bars: bool = False,
    thresholds: list[tuple[float, str]] | None = None,
    minimum: float | None = 0,
    right: dict[str, str] | None = None,
) -> Panel:
    """A time series panel; ``right`` maps query refIds to a unit drawn on a
    right-hand axis (a second quantity in the same panel)."""
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": True,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "line"}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if minimum is not None:
        defaults["min"] = minimum
    if thresholds:
        defaults["thresholds"] = _thresholds(thresholds)
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        "fieldConfig": {
            "defaults": defaults,
            "overrides": [
                {
                    "matcher": {"id": "byFrameRefID", "options": ref},
                    "properties": [
                        {"id": "unit", "value": ref_unit},
                        {"id": "custom.axisPlacement", "value": "right"},
                    ],
                }
                for ref, ref_unit in (right or {}).items()
            ],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def _thresholds(steps: list[tuple[float, str]]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [
            {"color": color, "value": None if i == 0 else value}
            for i, (value, color) in enumerate(steps)
        ],
    }


def stat(
    title: str,
    description: str,
    queries: list[dict[str, Any]],
    unit: str = "short",
    thresholds: list[tuple[float, str]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
) -> Panel:
    for q in queries:
        q["instant"], q["range"] = True, False
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": _thresholds(thresholds or [(0, "green")]),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "orientation": "horizontal",
        },
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["disengage"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "links": [
            {
                "type": "dashboards",
                "tags": ["disengage"],
                "asDropdown": False,
                "title": "disengage",
            }
        ],
        "templating": {
            "list": [
                {
                    "name": "instance",
                    "label": "worker",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": 'label_values(up{job="disengage-worker"}, instance)',
                        "refId": "instance",
                    },
                    "definition": 'label_values(up{job="disengage-worker"}, instance)',
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                    "sort": 1,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


# ------------------------------------------------------------------ pipeline
def pipeline() -> dict[str, Any]:
    lay = Layout()
    panels: list[Panel] = [lay.row("Health")]
    panels.append(
        lay.place(
            stat(
                "Workers up / ready",
                "Scraped workers that answer (up); that own partitions, reach Kafka and Redis "
                "and process batches (ready); and whose probes of the Kafka brokers and Redis "
                "succeed. Alerts: DisengageWorkerDown, DisengageWorkerNotReady, "
                "DisengageKafkaUnreachable, DisengageRedisUnavailable.",
                targets(
                    ('sum(up{job="disengage-worker", instance=~"$instance"})', "up"),
                    (f"sum(disengage_worker_ready{{{SEL}}})", "ready"),
                    (f"sum(disengage_kafka_up{{{SEL}}})", "kafka"),
                    (f"sum(disengage_redis_up{{{SEL}}})", "redis"),
                ),
                thresholds=[(0, "red"), (1, "green")],
            ),
            6,
            5,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Since last batch",
                "Seconds since each worker last finished a batch. Grows when input stops or "
                "batches fail (alert DisengageNoEvents).",
                targets(
                    (
                        f"time() - disengage_last_batch_timestamp_seconds{{{SEL}}} "
                        f"and disengage_last_batch_timestamp_seconds{{{SEL}}} > 0",
                        "{{instance}}",
                    )
                ),
                unit="s",
                thresholds=[(0, "green"), (60, "orange"), (600, "red")],
            ),
            6,
            5,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Model checkpoint age",
                "Seconds since each worker checkpointed its models to Redis (default every 60 s; "
                "alert DisengageModelCheckpointStale above 600 s).",
                targets((f"disengage_model_checkpoint_age_seconds{{{SEL}}}", "{{instance}}")),
                unit="s",
                thresholds=[(0, "green"), (180, "orange"), (600, "red")],
            ),
            6,
            5,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Open sessions",
                "Sessions held in Redis for the partitions each worker owns.",
                targets((f"sum(disengage_active_sessions{{{SEL}}})", "open sessions")),
            ),
            6,
            5,
        )
    )

    panels.append(lay.row("Throughput and lag"))
    panels.append(
        lay.place(
            timeseries(
                "Throughput in and out",
                "Events in (valid, and dead-lettered) and messages out (alerts, dead letters), "
                "per second.",
                targets(
                    (f"sum(rate(disengage_events_total{{{SEL}}}[{RI}]))", "events in (valid)"),
                    (f"sum(rate(disengage_dlq_messages_total{{{SEL}}}[{RI}]))", "dead-lettered"),
                    (f"sum(rate(disengage_alerts_total{{{SEL}}}[{RI}]))", "alerts out"),
                ),
                unit="ops",
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Consumer lag per partition",
                "Messages behind the end of the interactions topic, per input partition "
                "(alert DisengageConsumerLagGrowing).",
                targets(
                    (f"max by (partition) (disengage_consumer_lag{{{SEL}}})", "p{{partition}}")
                ),
                unit="short",
                stack=True,
            ),
            12,
            8,
        )
    )

    panels.append(lay.row("Latency"))
    panels.append(
        lay.place(
            timeseries(
                "Event to alert, p50 / p99",
                "From the triggering event's time to the broker's acknowledgement of the alert.",
                targets(
                    (
                        quantile(0.5, "disengage_event_to_alert_seconds"),
                        "p50",
                    ),
                    (
                        quantile(0.99, "disengage_event_to_alert_seconds"),
                        "p99",
                    ),
                ),
                unit="s",
                thresholds=[(0, "green"), (0.25, "red")],
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Batch processing time, p50 / p99",
                "Consume to commit-ready for one batch (parse, Redis read/write, models, alert "
                "acknowledgement); and events per batch.",
                [
                    target(
                        quantile(0.5, "disengage_batch_seconds"),
                        "p50",
                        "A",
                    ),
                    target(
                        quantile(0.99, "disengage_batch_seconds"),
                        "p99",
                        "B",
                    ),
                    target(
                        f"sum(rate(disengage_batch_size_sum{{{SEL}}}[{RI}])) / "
                        f"sum(rate(disengage_batch_size_count{{{SEL}}}[{RI}]))",
                        "mean events per batch",
                        "C",
                    ),
                ],
                unit="s",
                right={"C": "short"},
            ),
            12,
            8,
        )
    )

    panels.append(
        lay.place(
            timeseries(
                "What batches wait for, p99",
                "Outside a batch, alerts wait for the batch lock's other holders (the commit's "
                "state writes, the expiry sweep, the checkpoint, a rebalance) and for an event "
                "loop that cannot run (CPU work, a thread holding the GIL, a garbage "
                "collection). A stall over 250 ms is also logged by the worker "
                "(stream/worker/stalls.py).",
                targets(
                    (
                        quantile(
                            0.99, "disengage_lock_held_seconds", "le, holder", 'holder!="batch"'
                        ),
                        "lock held: {{holder}}",
                    ),
                    (
                        quantile(0.99, "disengage_event_loop_lag_seconds"),
                        "event loop lag",
                    ),
                ),
                unit="s",
                thresholds=[(0, "green"), (0.25, "red")],
            ),
            12,
            8,
        )
    )

    panels.append(lay.row("Errors and dependencies"))
    panels.append(
        lay.place(
            timeseries(
                "Dead-letter rate by reason",
                "Messages written to the dead-letter topic per second, by reason "
                "(alert DisengageHighDLQRate above 5% of the input).",
                targets(
                    (
                        f"sum by (reason) (rate(disengage_dlq_messages_total{{{SEL}}}[{RI}]))",
                        "{{reason}}",
                    )
                ),
                unit="ops",
                stack=True,
                bars=True,
            ),
            8,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Redis latency p99 and errors",
                "Round-trip p99 per operation, and failed operations per second "
                "(alert DisengageRedisErrors).",
                targets(
                    (
                        quantile(0.99, "disengage_redis_seconds", "op, le"),
                        "p99 {{op}}",
                    ),
                    (
                        f"sum by (op) (rate(disengage_redis_errors_total{{{SEL}}}[{RI}]))",
                        "errors {{op}}",
                    ),
                ),
                unit="s",
                right={"B": "ops"},
            ),
            8,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Worker resources",
                "Resident memory and CPU (cores) per worker process.",
                [
                    target(f"process_resident_memory_bytes{{{SEL}}}", "RSS {{instance}}", "A"),
                    target(
                        f"rate(process_cpu_seconds_total{{{SEL}}}[{RI}])", "CPU {{instance}}", "B"
                    ),
                ],
                unit="bytes",
                right={"B": "short"},
            ),
            8,
            8,
        )
    )
    return dashboard(
        "disengage-pipeline",
        "disengage / Pipeline",
        "Is the streaming pipeline healthy? Throughput, lag, latency, dead letters, Redis.",
        panels,
    )


# ------------------------------------------------------------ disengagement
def disengagement() -> dict[str, Any]:
    lay = Layout()
    panels: list[Panel] = [lay.row("Alerts")]
    panels.append(
        lay.place(
            timeseries(
                "Alerts by kind and severity",
                "Alerts raised per minute (hesitation, trust_loss, friction_hotspot) by severity.",
                targets(
                    (
                        "sum by (kind, severity) "
                        f"(rate(disengage_alerts_total{{{SEL}}}[{RI}])) * 60",
                        "{{kind}} / {{severity}}",
                    )
                ),
                unit="short",
                stack=True,
                bars=True,
            ),
            16,
            8,
        )
    )
    panels.append(
        lay.place(
            timeseries(
                "Session alerts per 1000 sessions",
                "Hesitation and trust-loss alerts per 1000 closed sessions over 15 minutes "
                "(recording rule), against the alert budget DISENGAGE_ALERT_BUDGET_PER_1000 "
                "(default 50). Alert DisengageAlertStorm above 150.",
                [
                    target(
                        'sum(job:disengage_alerts_per_1000_sessions:rate15m{job="disengage-worker"})',
                        "alerts / 1000 sessions",
                        "A",
                    ),
                    target("vector(50)", "default budget", "B"),
                ],
                unit="short",
            ),
            8,
            8,
        )
    )

    panels.append(lay.row("Is the trust score right? (validated against outcomes)"))
    panels.append(
        lay.place(
            timeseries(
                "Trust model ROC-AUC and log-loss",
                "Rolling ROC-AUC (0.5 = chance, 1 = perfect) and log-loss (nats; 0.693 = coin) "
                "of the "
                "trust score against real outcomes of closed sessions, per worker. Model-based "
                "trust-loss alerts are off below DISENGAGE_TRUST_MIN_AUC (0.75).",
                targets(
                    (f"disengage_trust_auc{{{SEL}}}", "AUC {{instance}}"),
                    (f"disengage_trust_log_loss{{{SEL}}}", "log-loss {{instance}}"),
                ),
                unit="short",
                thresholds=[(0, "red"), (0.75, "green")],
            ),
            12,
            8,
        )
    )
    heat = {
        "type": "heatmap",
        "title": "Trust-score distribution",
        "description": "Trust scores (P(goal | session so far), 0-1) at scoring points over time.",
        "datasource": DATASOURCE,
        "targets": [
            target(
                f"sum by (le) (increase(disengage_trust_score_bucket{{{SEL}}}[{RI}]))",
                "{{le}}",
                "A",
                format="heatmap",
            )
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "calculate": False,
            "yAxis": {"unit": "percentunit", "axisLabel": "trust score"},
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Blues", "exponent": 0.5, "steps": 64},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True},
            "legend": {"show": True},
        },
    }
    panels.append(lay.place(heat, 12, 8))
    panels.append(
        lay.place(
            timeseries(
                "Sessions closed by outcome",
                "Closed sessions per minute: converted (goal reached), exit, timeout.",
                targets(
                    (
                        "sum by (outcome) "
                        f"(rate(disengage_sessions_closed_total{{{SEL}}}[{RI}])) * 60",
                        "{{outcome}}",
                    )
                ),
                unit="short",
                stack=True,
            ),
            12,
            8,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Sessions learned from",
                "Closed sessions the served model version has learned from (the trainer "
                "learns every partition's; the highest of the workers).",
                targets((f"max(disengage_trust_sessions_learned{{{SEL}}})", "sessions")),
            ),
            4,
            8,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Model version served",
                "The published model version the workers serve (lowest and highest over the "
                "workers; 0 = none yet). `disengage models list` shows them all.",
                targets(
                    (f"min(disengage_model_version{{{SEL}}})", "lowest"),
                    (f"max(disengage_model_version{{{SEL}}})", "highest"),
                ),
            ),
            4,
            8,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Model age",
                "Age of the oldest version a worker serves. Alert DisengageModelStale above 15 "
                "minutes while sessions close.",
                targets((f"max(disengage_model_age_seconds{{{SEL}}})", "age")),
                unit="s",
                thresholds=[(0, "green"), (900, "orange")],
            ),
            4,
            8,
        )
    )

    panels.append(lay.row("Friction hotspots"))
    table = {
        "type": "table",
        "title": "Top friction hotspots by page type and step",
        "description": "Share of recent visits (0-1) with friction or that ended an abandoned "
        "session, per page type and step (the highest of the partitions' views). "
        "A confirmed rise of 15 points opens an incident and a friction_hotspot alert.",
        "datasource": DATASOURCE,
        "targets": [
            target(
                f"topk(10, max by (page_type, step) (disengage_hotspot_problem_rate{{{SEL}}}))",
                "",
                "A",
                instant=True,
                range=False,
                format="table",
            )
        ],
        "fieldConfig": {
            "defaults": {
                "unit": "percentunit",
                "min": 0,
                "max": 1,
                "thresholds": _thresholds([(0, "green"), (0.3, "orange"), (0.5, "red")]),
            },
            "overrides": [
                {
                    "matcher": {"id": "byName", "options": "Value"},
                    "properties": [
                        {
                            "id": "custom.cellOptions",
                            "value": {"type": "gauge", "mode": "gradient"},
                        },
                        {"id": "displayName", "value": "problem rate"},
                    ],
                }
            ],
        },
        "options": {"showHeader": True, "sortBy": [{"displayName": "problem rate", "desc": True}]},
        "transformations": [
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {"page_type": "page type"},
                },
            }
        ],
    }
    panels.append(lay.place(table, 12, 9))
    panels.append(
        lay.place(
            stat(
                "Open hotspot incidents",
                "Page types/steps with an open incident, over all partitions.",
                targets((f"sum(disengage_hotspots_open{{{SEL}}})", "open incidents")),
                thresholds=[(0, "green"), (1, "red")],
            ),
            6,
            9,
        )
    )
    panels.append(
        lay.place(
            stat(
                "Hotspot alerts (last hour)",
                "friction_hotspot alerts raised in the last hour.",
                targets(
                    (
                        'sum(increase(disengage_alerts_total{kind="friction_hotspot", '
                        'job="disengage-worker", instance=~"$instance"}[1h]))',
                        "alerts",
                    )
                ),
                thresholds=[(0, "green"), (1, "orange")],
            ),
            6,
            9,
        )
    )
    return dashboard(
        "disengage-disengagement",
        "disengage / Disengagement",
        "Who is hesitating or losing trust, is the score right, and where is the friction?",
        panels,
    )


DASHBOARDS = {"pipeline.json": pipeline, "disengagement.json": disengagement}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(
            f"stale: {', '.join(stale)}; run python deploy/grafana/build_dashboards.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
