"""Webhook forwarder figures: backlog throughput and live delivery latency.

  python deploy/local/infra.py run -- python benchmarks/bench_forward.py [--alerts 3000]

Needs a real Kafka and Redis (``infra.py run`` starts both). Posts go to a local
HTTP server that answers 200 at once, so the figures are the forwarder's own
cost: Kafka consume, parse, filters, Redis de-duplication, one POST at a time,
commit. Printed:

* backlog: alerts/s draining ``--alerts`` real alerts (the offline detector's
  alerts over simulated traffic, repeated with fresh ids), and the same POSTs
  sent by a bare aiohttp loop in the same run (the ceiling of one-at-a-time
  posting to this server), with the ratio;
* live: p50/p99 from the alert's Kafka timestamp to its arrival at the webhook,
  for alerts produced one at a time at ``--live-rate`` per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from detectors.config import DetectorConfig
from detectors.offline.runner import replay_alerts
from detectors.simulation.simulator import SimConfig, Simulator

ROOT = Path(__file__).resolve().parents[1]


class Receiver:
    """Local webhook: 200 for every POST, arrival time per Idempotency-Key."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real webhooks
            # headers and body go out in separate writes: without TCP_NODELAY,
            # Nagle + delayed ACK add 40 ms to every answer
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key") or ""
                with receiver.lock:
                    receiver.arrivals.setdefault(key, time.time())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for k in self.arrivals if k.startswith(prefix))


def real_alerts() -> list[dict[str, Any]]:
    # no holdout: the forwarder skips control sessions' alerts, and every copy must arrive
    config = DetectorConfig(holdout_share=0.0)
    events = Simulator(SimConfig(sessions=600), keep_truth=False).events()  # default seed
    return [alert.to_cloudevent(config.source) for alert in replay_alerts(events, config)]


def copies(alerts: list[dict[str, Any]], n: int, tag: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        alert = json.loads(json.dumps(alerts[i % len(alerts)]))
        alert["id"] = f"{tag}-{i:06d}"
        out.append(alert)
    return out


async def produce(bootstrap: str, topic: str, alerts: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, json.dumps(a).encode(), key=a["subject"].encode())
            for a in alerts
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_live(
    bootstrap: str, topic: str, alerts: list[dict[str, Any]], rate: float
) -> dict[str, float]:
    """Produce one at a time at ``rate``/s; return id -> broker timestamp (s)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    try:
        for alert in alerts:
            meta = await producer.send_and_wait(
                topic, json.dumps(alert).encode(), key=alert["subject"].encode()
            )
            sent[alert["id"]] = meta.timestamp / 1000
            await asyncio.sleep(1 / rate)
    finally:
        await producer.stop()
    return sent


async def bare_posts(url: str, alerts: list[dict[str, Any]]) -> float:
    """The same payload size, posted one at a time by a bare aiohttp loop."""
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for alert in alerts:
            body = json.dumps({"text": alert["data"]["kind"], "alert": alert}).encode()
            headers = {"Content-Type": "application/json", "Idempotency-Key": "bare-" + alert["id"]}
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
    return len(alerts) / (time.perf_counter() - started)


def wait_for(receiver: Receiver, prefix: str, n: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while receiver.count(prefix) < n:
        if time.time() > deadline:
            raise SystemExit(f"only {receiver.count(prefix)}/{n} {prefix} alerts arrived")
        time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=3000, help="backlog size")
    ap.add_argument("--live", type=int, default=200, help="live alerts for the latency figure")
    ap.add_argument("--live-rate", type=float, default=20.0, help="live alerts per second")
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap or not os.environ.get("REDIS_URL"):
        raise SystemExit("run under: python deploy/local/infra.py run -- python " + sys.argv[0])
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-alerts-{tag}"
    base = real_alerts()
    backlog = copies(base, args.alerts, "backlog")
    live = copies(base, args.live, "live")
    receiver = Receiver()
    asyncio.run(produce(bootstrap, topic, backlog))

    bare_rate = asyncio.run(bare_posts(receiver.url, backlog))

    env = dict(os.environ, DISENGAGE_TOPIC_ALERTS=topic, DISENGAGE_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream",
            "alerts",
            "forward",
            "--webhook",
            receiver.url,
            "--rate-limit",
            "0",
            "--group",
            f"bench-{tag}",
            "--format",
            "slack",
        ],
        env=env,
        cwd=ROOT,
    )
    try:
        wait_for(receiver, "backlog", 1, 60)
        first = min(receiver.arrivals[k] for k in receiver.arrivals if k.startswith("backlog"))
        wait_for(receiver, "backlog", len(backlog), 600)
        last = max(receiver.arrivals[k] for k in receiver.arrivals if k.startswith("backlog"))
        rate = (len(backlog) - 1) / max(last - first, 1e-9)

        sent = asyncio.run(produce_live(bootstrap, topic, live, args.live_rate))
        wait_for(receiver, "live", len(live), 60)
        lat = sorted((receiver.arrivals[i] - t) * 1000 for i, t in sent.items())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    print(
        f"backlog: {len(backlog)} alerts, forwarder {rate:,.0f} alerts/s; bare aiohttp "
        f"loop {bare_rate:,.0f} posts/s; ratio {rate / bare_rate:.2f}"
    )
    print(
        f"live: {len(live)} alerts at {args.live_rate:g}/s, Kafka timestamp -> webhook "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )
    assert rate > 20, "the forwarder must drain a backlog far faster than any chat channel"
    return 0


if __name__ == "__main__":
    sys.exit(main())
