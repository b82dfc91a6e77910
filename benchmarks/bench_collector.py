"""Benchmark of ``disengage collect`` on the real broker.

Run it under the local infrastructure (or point the variables at yours):

    python deploy/local/infra.py run -- python benchmarks/bench_collector.py

It prints, all measured in the same run, on the same cores:

* **baseline**: a bare aiokafka producer loop (acks=all, idempotent, as the
  collector's) producing the same events, 20 per batch, each batch awaited,
  ``--concurrency`` batches in flight; events/s;
* **throughput**: the same events POSTed to a ``disengage collect`` process
  as JSON arrays of 20 (our contract), ``--concurrency`` requests in flight
  from an aiohttp client; events/s accepted (every answer a 202), and the
  ratio to the baseline;
* **latency**: requests offered at half the measured maximum for
  ``--latency-seconds``: p50 and p99 of the request time (send to answer,
  Kafka's acknowledgement included).

The load generator runs in this process, so the collector, the broker and
the client share the machine: the ratio is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors.simulation.simulator import SimConfig, Simulator  # noqa: E402
from stream.kafka_io import make_producer  # noqa: E402
from stream.settings import Settings  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    COLLECTOR_KEY,
    CollectorProcess,
    Env,
    create_topics,
    flush,
    reap_workers,
)

BATCH = 20


def batches(n_events: int) -> list[list[dict[str, Any]]]:
    """Simulated events (live time), in batches of :data:`BATCH` of one session's order."""
    start = int(time.time() * 1000) - 3_600_000
    config = SimConfig(sessions=n_events // 20 + 10, seed=5, start_ts=start)
    sim = Simulator(config, keep_truth=False)
    events = []
    for event in sim.events():
        events.append(event)
        if len(events) >= n_events:
            break
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


async def baseline(env: Env, work: list[list[dict[str, Any]]], concurrency: int) -> float:
    """Events/s of a bare producer loop over the same batches."""
    settings = Settings.from_env(env.worker_env(0))
    producer = make_producer(settings)
    await producer.start()
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in work:
        queue.put_nowait(batch)

    async def loop() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            futures = [
                await producer.send(
                    env.interactions, json.dumps(e).encode(), key=e["session_id"].encode()
                )
                for e in batch
            ]
            await asyncio.gather(*futures)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return sum(len(b) for b in work) / elapsed


async def post(
    session: aiohttp.ClientSession, url: str, batch: list[dict[str, Any]]
) -> tuple[int, float]:
    started = time.perf_counter()
    async with session.post(url, data=json.dumps(batch).encode()) as resp:
        await resp.read()
        return resp.status, time.perf_counter() - started


async def throughput(url: str, work: list[list[dict[str, Any]]], concurrency: int) -> float:
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in work:
        queue.put_nowait(batch)
    statuses: list[int] = []

    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:

        async def loop() -> None:
            while not queue.empty():
                status, _ = await post(session, url, queue.get_nowait())
                statuses.append(status)

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    bad = [s for s in statuses if s != 202]
    if bad:
        raise SystemExit(f"{len(bad)} requests were not accepted: {sorted(set(bad))}")
    return sum(len(b) for b in work) / elapsed


async def latency(
    url: str, work: list[list[dict[str, Any]]], events_per_s: float, seconds: float
) -> dict[str, float]:
    """Requests at a fixed rate (open loop): p50/p99 of the request time."""
    interval = BATCH / events_per_s
    times: list[float] = []
    tasks = []
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:

        async def one(batch: list[dict[str, Any]]) -> None:
            status, took = await post(session, url, batch)
            if status == 202:
                times.append(took)

        started = time.perf_counter()
        for i, batch in enumerate(work):
            due = started + i * interval
            if due - started > seconds:
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(batch)))
        await asyncio.gather(*tasks)
    times.sort()
    return {
        "offered_events_per_s": round(events_per_s),
        "requests": len(times),
        "p50_ms": round(statistics.median(times) * 1000, 1),
        "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import os

    env = Env(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["REDIS_URL"], db=3, partitions=4)
    await flush(env)
    await create_topics(env)
    work = batches(args.events)
    base = await baseline(env, work, args.concurrency)
    collector = CollectorProcess(env).start()
    try:
        collector.wait_ready()
        url = f"{collector.base_url}/e?k={COLLECTOR_KEY}"
        await throughput(url, work[:50], args.concurrency)  # warm-up
        rate = await throughput(url, work, args.concurrency)
        lat = await latency(url, work, rate / 2, args.latency_seconds)
    finally:
        collector.stop()
        reap_workers()
    return {
        "events": sum(len(b) for b in work),
        "batch": BATCH,
        "concurrency": args.concurrency,
        "baseline_events_per_s": round(base),
        "collector_events_per_s": round(rate),
        "ratio_to_baseline": round(rate / base, 3),
        "latency_at_half_load": lat,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-seconds", type=float, default=30.0)
    ap.add_argument(
        "--floor", type=float, default=0.2, help="fail below this ratio to the bare producer"
    )
    args = ap.parse_args()
    figures = asyncio.run(main_async(args))
    print(json.dumps(figures, indent=1))
    return 0 if figures["ratio_to_baseline"] >= args.floor else 1


if __name__ == "__main__":
    sys.exit(main())
