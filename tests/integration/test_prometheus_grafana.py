"""The dashboards and rules against a real Prometheus scraping a real worker.

1. A real worker runs on the real Kafka and Redis; ``disengage simulate --kafka``
   sends live simulated traffic, plus a few malformed messages for the DLQ.
2. A real Prometheus server (Debian's package) scrapes it every second and
   evaluates the repository's recording and alert rules every second.
3. Through Prometheus's HTTP API, every PromQL expression of every dashboard
   panel and every recording rule is evaluated over the load period.
4. Any query error fails the test, and so does any panel query or recording
   rule that returns no finite value once the load has run.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring import (
    PROM_DIR,
    RULE_FILES,
    dashboards,
    grafana_expr,
    panels,
    recording_rules,
    rule_groups,
)

from .harness import ROOT, Env, Worker, free_port, metric_sum, produce

pytestmark = pytest.mark.integration

LOAD_S = 40.0
RATE = 300.0


class Prometheus:
    """A real ``prometheus`` server on 127.0.0.1 with the repository's rules."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise AssertionError(
                "prometheus not found: install Debian's `prometheus` package "
                "(`make test` does it via deploy/local/system_deps.sh)"
            )
        self.port = free_port()
        rules_dir = workdir / "rules"
        rules_dir.mkdir()
        for path in RULE_FILES:
            doc = yaml.safe_load(path.read_text())
            for group in doc["groups"]:
                group["interval"] = "1s"  # evaluate as often as the test scrapes
            (rules_dir / path.name).write_text(yaml.safe_dump(doc))
        config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(rules_dir / "*.yml")]
        # the repository's worker job, with its DNS discovery (compose) replaced
        # by the test's worker addresses
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "disengage-worker")
        job.pop("dns_sd_configs")
        job["static_configs"] = [{"targets": targets}]
        config["scrape_configs"] = [job]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str, **params: Any) -> str:
        query = urllib.parse.urlencode(params)
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def get(self, path: str, **params: Any) -> Any:
        with urllib.request.urlopen(self.url(path, **params), timeout=10) as resp:
            return json.loads(resp.read())

    def api(self, path: str, **params: Any) -> Any:
        try:
            body = self.get(path, **params)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: HTTP {exc.code}: {exc.read()!r}") from None
        assert body["status"] == "success", body
        return body["data"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query_range", query=expr, start=start, end=end, step="2s")
        assert data["resultType"] == "matrix"
        return list(data["result"])


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [float(v) for series in result for _, v in series["values"] if math.isfinite(float(v))]


@pytest.fixture
def prometheus_with_worker(env: Env, tmp_path: Path) -> Iterator[tuple[Prometheus, Worker, float]]:
    env.extra = {}  # the production defaults: models, budget and hotspots all live
    worker = Worker(env, "prom").start()
    worker.wait_ready(partitions=env.partitions)
    prom = Prometheus(tmp_path, [f"127.0.0.1:{worker.port}"])
    try:
        prom.wait_ready()
        started = time.time()
        yield prom, worker, started
    finally:
        prom.stop()
        worker.stop()


def test_every_panel_and_recording_rule_returns_data(
    env: Env, prometheus_with_worker: tuple[Prometheus, Worker, float]
) -> None:
    prom, worker, started = prometheus_with_worker
    # -- load: live simulated traffic (with its incident) and some bad input
    sim = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "simulate",
            "--kafka",
            "--rate",
            str(RATE),
            "--duration",
            str(LOAD_S),
        ],
        env=env.worker_env(0),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=LOAD_S + 60,
    )
    assert sim.returncode == 0, sim.stderr
    bad = [(b"bad", b"{not json"), (b"bad", b'{"session_id": "x"}'), (None, b"\xff\xfe")] * 5
    asyncio.run(produce(env.bootstrap, env.interactions, bad))

    # -- the worker has seen the load: alerts raised, sessions closed, DLQ written
    deadline = time.time() + 60
    while True:
        samples = worker.metrics()
        alerts = metric_sum(samples, "disengage_alerts_total")
        closed = metric_sum(samples, "disengage_sessions_closed_total")
        dlq = metric_sum(samples, "disengage_dlq_messages_total")
        if alerts > 0 and closed > 0 and dlq >= len(bad):
            break
        assert time.time() < deadline, f"no alerts/closes/DLQ: {alerts=} {closed=} {dlq=}"
        time.sleep(1)
    time.sleep(6)  # a few more scrapes and rule evaluations
    end = time.time()

    # -- the target is scraped under the job the dashboards select
    targets = prom.api("/api/v1/targets")["activeTargets"]
    assert [(t["labels"]["job"], t["health"]) for t in targets] == [("disengage-worker", "up")]
    instances = prom.api(
        "/api/v1/label/instance/values", **{"match[]": 'up{job="disengage-worker"}'}
    )
    assert instances == [f"127.0.0.1:{worker.port}"]  # the dashboards' $instance variable

    # -- every dashboard panel query
    empty: list[str] = []
    checked = 0
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel["targets"]:
                expr = grafana_expr(target["expr"])
                result = prom.query_range(expr, started, end)  # raises on a query error
                checked += 1
                if not finite_values(result):
                    empty.append(f"{name} / {panel['title']} / {target['refId']}: {expr}")
    assert not empty, "panels without data after the load:\n" + "\n".join(empty)
    assert checked >= 30

    # -- every recording rule: its expression, and the series Prometheus recorded
    for rule in recording_rules():
        assert finite_values(prom.query_range(rule["expr"], started, end)), rule["record"]
        recorded = prom.query_range(rule["record"], started, end)
        assert finite_values(recorded), f"{rule['record']} was never recorded"

    # -- every rule evaluates without error; on this healthy load no critical alert fires
    groups = prom.api("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in rule_groups())
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken
    firing = [
        (r["name"], a["labels"].get("severity"))
        for r in rules
        if r["type"] == "alerting"
        for a in r.get("alerts", [])
        if a["state"] == "firing"
    ]
    assert not [f for f in firing if f[1] == "critical"], firing
