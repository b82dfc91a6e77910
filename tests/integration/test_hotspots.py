"""Shared hotspot monitors on the real broker and Redis.

Two workers split four input partitions; every page visit goes to the
page-visits topic keyed by its page, and the worker that owns the page's
partition observes it in the one monitor of that page. The simulator's
checkout incident must then raise the friction hotspot a single offline
detector raises, and every visit a worker sent must be observed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from detectors.config import DetectorConfig
from detectors.detector import Detector
from detectors.events import EventParser
from detectors.offline.runner import OfflineRunner
from detectors.simulation.simulator import SimConfig, Simulator

from .conftest import RULES_ONLY
from .harness import Env, Worker, consume, event_records, metric_sum, produce

pytestmark = pytest.mark.integration

#: The session models out of reach (as in test_worker), hotspots on at their defaults.
SESSION_RULES_ONLY = {k: v for k, v in RULES_ONLY.items() if "HOTSPOT" not in k}


def incident_events() -> tuple[list[dict[str, Any]], str, int]:
    """Simulated sessions (ending six hours ago) with the checkout incident,
    cut two minutes (event time) after a lone offline detector raised its
    first friction hotspot; that alert's subject and event time."""
    start = int(time.time() * 1000) - 12 * 3600 * 1000
    events = sorted(
        Simulator(SimConfig(sessions=3000, seed=11, start_ts=start), keep_truth=False).events(),
        key=lambda e: e["ts"],
    )
    config = DetectorConfig()
    parser = EventParser(config)
    runner = OfflineRunner(Detector(config, learn=False))
    for raw in events:
        hotspots = [a for a in runner.feed(parser.parse(raw)) if a.kind == "friction_hotspot"]
        if hotspots:
            first = hotspots[0]
            cut = first.event_time + 120_000
            return [e for e in events if e["ts"] <= cut], first.subject, first.event_time
    raise AssertionError("a lone detector must find the simulator's checkout incident")


async def test_two_workers_share_the_hotspot_monitors(env: Env) -> None:
    env.extra = dict(SESSION_RULES_ONLY)
    events, subject, _ = incident_events()
    a = Worker(env, "a").start()
    b = Worker(env, "b").start()
    try:
        a.wait_ready()
        b.wait_ready()
        await produce(env.bootstrap, env.interactions, event_records(events))

        def found(messages: list[Any]) -> bool:
            return any(json.loads(m.value)["subject"] == subject for m in messages)

        messages = await consume(env.bootstrap, env.alerts, until=found, timeout=240)
        hotspots = [
            json.loads(m.value)
            for m in messages
            if json.loads(m.value)["type"].endswith("friction_hotspot")
        ]
        assert any(h["subject"] == subject for h in hotspots), (
            f"no {subject} hotspot in {len(messages)} alerts\n{a.tail(20)}\n{b.tail(20)}"
        )
        for h in hotspots:
            data = h["data"]
            assert data["session_id"] is None and data["user_hash"] is None  # aggregate
            assert data["model_version"]
        # every visit sent is observed once, by whichever worker owns its page
        deadline = time.time() + 60
        while time.time() < deadline:
            samples = [w.metrics() for w in (a, b)]
            sent = sum(metric_sum(s, "disengage_page_visits_total", side="sent") for s in samples)
            seen = sum(
                metric_sum(s, "disengage_page_visits_total", side="observed") for s in samples
            )
            if sent and sent == seen:
                break
            time.sleep(1)
        assert sent > 1000 and seen == sent, (sent, seen)
    finally:
        assert a.stop() == 0, a.tail()
        assert b.stop() == 0, b.tail()


async def test_an_upgrade_carries_the_page_visits_offsets_over(env: Env) -> None:
    """Before the worker's own input consumer, one Faust group read both
    topics; its committed page-visits offsets move to the pages group once,
    so the monitors do not read the topic's retention again."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from stream.settings import Settings
    from stream.worker.intake import carry_over_page_offsets, pages_group

    from .harness import create_topics

    await create_topics(env)
    settings = Settings.from_env(env.worker_env(0))
    await produce(env.bootstrap, env.page_visits, [(b"checkout/2", b"[]")] * 5)
    old = AIOKafkaConsumer(bootstrap_servers=env.bootstrap, group_id=settings.consumer_group)
    await old.start()
    try:  # what the previous release's group had committed
        tps = [TopicPartition(env.page_visits, p) for p in range(env.partitions)]
        old.assign(tps)
        await old.commit({tp: 2 + tp.partition for tp in tps})
    finally:
        await old.stop()

    assert await carry_over_page_offsets(settings) == {p: 2 + p for p in range(env.partitions)}
    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
    await admin.start()
    try:
        moved = await admin.list_consumer_group_offsets(pages_group(settings))
    finally:
        await admin.close()
    assert {tp.partition: m.offset for tp, m in moved.items()} == {
        p: 2 + p for p in range(env.partitions)
    }
    assert await carry_over_page_offsets(settings) == {}  # once: the pages group has its own
