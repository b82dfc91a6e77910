"""``KafkaSink`` on the real broker: what outbox recovery reads back from the
alerts topic decides whether an alert is produced again, so it is checked
against real records, not a fake."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaProducer

from stream.kafka_io import KafkaSink
from stream.settings import Settings

from .harness import Env

pytestmark = pytest.mark.integration


async def _produce_alerts(env: Env, ids: list[str], timestamp_ms: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, acks="all")
    await producer.start()
    try:
        for aid in ids:
            body = json.dumps({"id": aid, "data": {"session_id": aid}}).encode()
            await producer.send_and_wait(
                env.alerts, body, key=aid.encode(), timestamp_ms=timestamp_ms
            )
    finally:
        await producer.stop()


async def test_alert_ids_since_reads_back_what_is_on_the_topic(env: Env) -> None:
    settings = Settings.from_env(env.worker_env(0))
    sink = KafkaSink(lambda topic, records: asyncio.sleep(0), settings)
    now = int(time.time() * 1000)
    await _produce_alerts(env, ["old-1", "old-2"], now - 60_000)
    await _produce_alerts(env, ["new-1", "new-2", "new-3"], now)
    assert await sink.alert_ids_since(0) == {"old-1", "old-2", "new-1", "new-2", "new-3"}
    assert await sink.alert_ids_since(now - 5_000) == {"new-1", "new-2", "new-3"}
    assert await sink.alert_ids_since(now + 60_000) == set()


async def test_alert_ids_since_on_a_topic_that_does_not_exist_is_empty(env: Env) -> None:
    settings = Settings.from_env(
        {**env.worker_env(0), "DISENGAGE_TOPIC_ALERTS": f"absent-{env.tag}"}
    )
    sink = KafkaSink(lambda topic, records: asyncio.sleep(0), settings)
    assert await sink.alert_ids_since(0) == set()
